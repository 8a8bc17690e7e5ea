/*
 * vm_service.h - the business rules of virtual machines.
 *
 * The service knows only the repository and backend interfaces.  Every call
 * takes the caller's @owner as the scope (NULL: every owner, for admins);
 * a create makes the VM @owner's.  Returns 0, or -1 with @err filled (codes as in
 * util/err.h; ST_ERR_CONFLICT messages name the VM's current state).
 */
#ifndef STRATUS_SERVICES_VM_SERVICE_H
#define STRATUS_SERVICES_VM_SERVICE_H

#include "models/vm.h"
#include "repositories/flavor_repo.h"
#include "repositories/hypervisor.h"
#include "repositories/image_repo.h"
#include "repositories/storage.h"
#include "repositories/vm_repo.h"

struct vm_service_config {
    const char *instance;     /* recorded in every domain's metadata; may be NULL */
    const char *disk_pool;    /* pool of root disks ("default") */
    const char *image_pool;   /* pool of base images ("images") */
    unsigned stop_timeout_ms; /* graceful stop: wait this long, then destroy */
    unsigned poll_interval_ms;
};

/*
 * Called after each step of a create ("disk", "define", "start", "finish")
 * is recorded, after each step of a delete ("destroy", "undefine", "disk")
 * and after each step of an action (vm_service_action_steps()) is done.
 * Returning -1 (with @err filled) stops the work right there, with nothing
 * undone: the worker uses it to record the step in the operation, renew
 * its lease, and stop when the lease was lost.  Passed to each call that
 * runs steps; NULL (or fn NULL) for none.
 */
struct vm_step_hook {
    int (*fn)(void *ctx, const char *vm_id, const char *step, struct st_error *err);
    void *ctx;
};

/* Borrowed dependencies; the service owns nothing. */
struct vm_service {
    struct vm_repo *vms;
    struct image_repo *images;
    struct flavor_repo *flavors;
    struct hypervisor *hv;
    struct storage *storage;
    struct vm_service_config cfg;
};

/* What an operation other than create and delete does to a VM. */
enum vm_action {
    VM_ACTION_START = 0,
    VM_ACTION_STOP,
    VM_ACTION_FORCE_STOP,
    VM_ACTION_REBOOT,
    VM_ACTION_PAUSE,
    VM_ACTION_RESUME,
    VM_ACTION_RESIZE, /* redefine the stopped domain with the sizes its row holds */
};

/* "start", "force-stop", ..., "resize" and back; parse returns -1 on an unknown name. */
const char *vm_action_name(enum vm_action action);
int vm_action_parse(const char *name, enum vm_action *out);

/*
 * The steps of @action in order, NULL-terminated: start is "define" (the
 * domain from the row, so it never runs with sizes the row does not
 * hold), "start", "record"; stop is "shutdown", "wait", "destroy",
 * "record"; force-stop "destroy", "record"; reboot "reboot", "record";
 * pause "suspend", "record"; resume "resume", "record"; resize "define",
 * "record".  "record" writes the outcome to the row.
 */
const char *const *vm_action_steps(enum vm_action action);

/* Whether @action applies to a VM shown as @status (else the request is refused at once). */
bool vm_action_allowed(enum vm_action action, enum vm_status status);

/* The root disk's volume name in cfg.disk_pool: "vm-<id>.qcow2". */
void vm_service_disk_vol_name(const char *vm_id, char out[ST_NAME_BUF]);
/* An image's volume name in cfg.image_pool: "img-<id>". */
void vm_service_image_vol_name(const char *image_id, char out[ST_NAME_BUF]);

/*
 * Create a VM (ARCHITECTURE §6): insert the row (creating), clone the root
 * disk, define, start, record running.  Each step is recorded in the row
 * before the next begins.  On a failure the finished steps are undone in
 * reverse, the row is left in `error` with a fault naming the step and the
 * cause, -1 is returned, and out->id alone is set to the VM's id so the
 * caller can point at the row (it is "" when no row was made).
 * On success *out is the running VM.
 */
int vm_service_create(struct vm_service *svc, const char *owner, const struct vm_create_req *req,
                      struct vm *out, struct st_error *err);

/*
 * The same, with the row inserted only while @owner's rows plus this VM
 * stay within @limits (NULL: no limits), checked in the insert's own
 * transaction: ST_ERR_FORBIDDEN with *v naming the limit otherwise (@v may
 * be NULL when the caller does not need it).
 */
int vm_service_create_within(struct vm_service *svc, const char *owner, const struct quota *limits,
                             const struct vm_create_req *req, struct vm *out,
                             struct quota_violation *v, struct st_error *err);

/*
 * The two halves of a create: the row alone (status creating, step row),
 * within @limits as vm_service_create_within(), which joins a store_tx the
 * caller holds (the operation service queues the create in the same one);
 * then, in the worker,
 * the steps, resumed from the step the row records (a create interrupted
 * by a crash continues where it was).  A resume that fails undoes
 * everything the create may have made and leaves the row in `error`; one
 * stopped by the hook leaves everything for the next attempt.  out->id is
 * set in every case once the row is found.
 */
int vm_service_create_row(struct vm_service *svc, const char *owner, const struct quota *limits,
                          const struct vm_create_req *req, struct vm *out,
                          struct quota_violation *v, struct st_error *err);
int vm_service_create_resume(struct vm_service *svc, const char *id,
                             const struct vm_step_hook *hook, struct vm *out, struct st_error *err);

/* Give a create up: undo whatever it made and leave the row in `error` saying @why. */
int vm_service_create_abandon(struct vm_service *svc, const char *id, const char *why,
                              struct st_error *err);

/* One VM, its status merged with what the hypervisor sees. */
int vm_service_get(struct vm_service *svc, const char *owner, const char *id, struct vm *out,
                   struct st_error *err);

/* Replace a live stored status of @vm by what the hypervisor sees (one call). */
int vm_service_merge(struct vm_service *svc, struct vm *vm, struct st_error *err);

/*
 * Write @vm to its row (compare-and-set on vm->revision).  When the row
 * moved meanwhile, the members a step owns (status, step, fault) are laid
 * over the fresh row and the write is tried again, a few times: a step
 * never loses what another writer changed, and never fails for it.  On
 * success *vm is the row as stored.
 */
int vm_service_save_state(struct vm_service *svc, struct vm *vm, struct st_error *err);

/*
 * One page: one repository list plus one hypervisor list_all, merged by id
 * in memory.  A row whose domain is gone shows `missing`.  Free with
 * vm_list_release().
 */
int vm_service_list(struct vm_service *svc, const char *owner, const struct vm_filter *f,
                    struct vm_list *out, struct st_error *err);

/*
 * Apply a PATCH to @vm (the row as read): *resize tells whether vcpus or
 * memory_mib change, which needs the VM stopped (ST_ERR_CONFLICT naming the
 * shown state otherwise, @shown being the merged status).  Validates the
 * name.  Nothing is written.
 */
int vm_service_patch_apply(const struct vm_patch_req *req, enum vm_status shown, struct vm *vm,
                           bool *resize, struct st_error *err);

/*
 * A PATCH done at once, without an operation or a quota (for tests and
 * tools): the row first (compare-and-set on the revision read), then, for
 * a resize, the resize steps.  *out is the VM as it then is.
 */
int vm_service_update(struct vm_service *svc, const char *owner, const char *id,
                      const struct vm_patch_req *req, struct vm *out, struct st_error *err);

/*
 * Delete: mark deleting, stop, undefine, delete the disk, delete the row.
 * Each step tolerates what is already gone, so re-running a delete that
 * failed midway finishes it.  A VM that does not exist is ST_ERR_NOT_FOUND.
 */
int vm_service_delete(struct vm_service *svc, const char *owner, const char *id,
                      const struct vm_step_hook *hook, struct st_error *err);

/*
 * Run @action's steps on VM @id (unscoped: the worker's), from the one
 * after @done ("" or NULL: from the first; a name the action does not have
 * also starts from the first).  Each step tolerates what an interrupted
 * earlier attempt left: a start of a running domain, a stop of a stopped
 * one.  Returns 0 with *out the row as recorded, 1 when the hook stopped
 * the work (@err filled), or -1.
 */
int vm_service_action_run(struct vm_service *svc, const char *id, enum vm_action action,
                          const char *done, const struct vm_step_hook *hook, struct vm *out,
                          struct st_error *err);

/*
 * An action checked and done at once, without an operation (for tests and
 * tools): refused with ST_ERR_CONFLICT naming the state when it does not
 * apply, else every step, and *out is the VM as it then is.
 */
int vm_service_action(struct vm_service *svc, const char *owner, const char *id,
                      enum vm_action action, struct vm *out, struct st_error *err);

#endif
