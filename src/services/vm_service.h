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
 * is recorded, and after each step of a delete ("destroy", "undefine",
 * "disk") is done.  Returning -1 (with @err filled) stops the work right
 * there, with nothing undone: the worker uses it to renew its lease and
 * to stop when the lease was lost.
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
    struct vm_step_hook hook; /* optional: fn NULL for none */
};

enum vm_action {
    VM_ACTION_START = 0,
    VM_ACTION_STOP,
    VM_ACTION_FORCE_STOP,
    VM_ACTION_REBOOT,
    VM_ACTION_PAUSE,
    VM_ACTION_RESUME,
};

/* "start", "force-stop", ... and back; parse returns -1 on an unknown name. */
const char *vm_action_name(enum vm_action action);
int vm_action_parse(const char *name, enum vm_action *out);

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
 * The two halves of a create, for the worker: the row alone (status
 * creating, step row), within @limits as vm_service_create_within(); then
 * the steps, resumed from the step the row records (a create interrupted
 * by a crash continues where it was).  A resume that fails undoes
 * everything the create may have made and leaves the row in `error`; one
 * stopped by the hook leaves everything for the next attempt.  out->id is
 * set in every case once the row is found.
 */
int vm_service_create_row(struct vm_service *svc, const char *owner, const struct quota *limits,
                          const struct vm_create_req *req, struct vm *out,
                          struct quota_violation *v, struct st_error *err);
int vm_service_create_resume(struct vm_service *svc, const char *id, struct vm *out,
                             struct st_error *err);
/* Give a create up: undo whatever it made and leave the row in `error` saying @why. */
int vm_service_create_abandon(struct vm_service *svc, const char *id, const char *why,
                              struct st_error *err);

/* One VM, its status merged with what the hypervisor sees. */
int vm_service_get(struct vm_service *svc, const char *owner, const char *id, struct vm *out,
                   struct st_error *err);

/*
 * One page: one repository list plus one hypervisor list_all, merged by id
 * in memory.  A row whose domain is gone shows `missing`.  Free with
 * vm_list_release().
 */
int vm_service_list(struct vm_service *svc, const char *owner, const struct vm_filter *f,
                    struct vm_list *out, struct st_error *err);

/* PATCH: rename always; vcpus/memory only while stopped (else ST_ERR_CONFLICT). */
int vm_service_update(struct vm_service *svc, const char *owner, const char *id,
                      const struct vm_patch_req *req, struct vm *out, struct st_error *err);

/*
 * The same, with a resize saved only while the VM owner's rows stay within
 * @limits (NULL: none) in the save's own transaction; ST_ERR_FORBIDDEN with
 * *v filled otherwise (the domain is put back as it was).
 */
int vm_service_update_within(struct vm_service *svc, const char *owner, const struct quota *limits,
                             const char *id, const struct vm_patch_req *req, struct vm *out,
                             struct quota_violation *v, struct st_error *err);

/*
 * Delete: mark deleting, stop, undefine, delete the disk, delete the row.
 * Each step tolerates what is already gone, so re-running a delete that
 * failed midway finishes it.  A VM that does not exist is ST_ERR_NOT_FOUND.
 */
int vm_service_delete(struct vm_service *svc, const char *owner, const char *id,
                      struct st_error *err);

/* start/stop/force-stop/reboot/pause/resume with state checks. */
int vm_service_action(struct vm_service *svc, const char *owner, const char *id,
                      enum vm_action action, struct vm *out, struct st_error *err);

#endif
