/*
 * op_service.h - long work as durable operations: VM create, delete,
 * actions and resize are accepted by the API (the row and its operation
 * written in one transaction) and done by stratus-worker, step by step,
 * under a lease; VM events record what happened.
 *
 * Accepting takes @expect, the revision the caller last saw (If-Match; 0
 * for none): when the VM is at another revision the answer is
 * ST_ERR_PRECONDITION and nothing is written.  Without it, a row that
 * moves while the request is decided is read again and the decision made
 * afresh, a few times, before ST_ERR_STALE: no update is ever lost.
 *
 * Returns 0, or -1 with @err filled (codes as in util/err.h).
 */
#ifndef STRATUS_SERVICES_OP_SERVICE_H
#define STRATUS_SERVICES_OP_SERVICE_H

#include "models/operation.h"
#include "repositories/event_repo.h"
#include "repositories/op_repo.h"
#include "repositories/store_tx.h"
#include "services/user_service.h"
#include "services/vm_service.h"

/*
 * An operation claimed this often has killed its worker each time (or lost
 * every lease): it is given up, a create undone, rather than taken again.
 */
#define OP_MAX_ATTEMPTS 5

struct op_service_config {
    int64_t lease_ms;     /* a claim lasts this long unless renewed */
    int64_t wait_max_ms;  /* ?wait= is cut to this */
    int64_t wait_poll_ms; /* how often a wait looks again */
};

/*
 * For tests only: called after each step of an operation is recorded and
 * its lease renewed (the crash-after-step knob of stratus-worker).
 */
typedef void (*op_step_probe)(const struct operation *op, const char *step);

/*
 * Told when this service starts holding an operation (@op) and when it
 * stops (@op NULL), so that its caller can keep the lease alive from
 * another thread while a long step runs.
 */
struct op_holding {
    void (*fn)(void *ctx, const struct operation *op);
    void *ctx;
};

/* Borrowed dependencies. */
struct op_service {
    struct op_repo *ops;
    struct event_repo *events;
    struct vm_repo *vms;
    struct store_tx *tx; /* the rows' store: a row and its operation commit together */
    struct vm_service *vm_svc;
    struct user_service *users; /* the quota of a VM's owner */
    struct op_service_config cfg;
    op_step_probe probe;    /* NULL outside tests */
    struct op_holding hold; /* optional: fn NULL for none */
};

/*
 * Accept a create for @owner: the row (creating, within @owner's quota,
 * looked up here once) and a queued vm.create operation, in one
 * transaction.  *vm and *op are what was stored.  Quota (ST_ERR_FORBIDDEN
 * with *v filled) and validation failures are answered here, at once;
 * everything after the row is the worker's.
 */
int op_service_create_vm(struct op_service *svc, const char *owner, const struct vm_create_req *req,
                         struct vm *vm, struct operation *op, struct quota_violation *v,
                         struct st_error *err);

/*
 * Accept a delete of @id within @owner's scope: the row marked deleting
 * and a queued vm.delete operation, in one transaction.  ST_ERR_CONFLICT
 * naming the operation while another one on the VM is queued or running.
 */
int op_service_delete_vm(struct op_service *svc, const char *owner, const char *id, uint64_t expect,
                         struct vm *vm, struct operation *op, struct st_error *err);

/*
 * Accept @action on @id: refused at once with ST_ERR_CONFLICT naming the
 * state when it cannot apply to the VM as the hypervisor shows it, or
 * naming the operation in progress; else the row's revision moves on and
 * the operation is queued, in one transaction.  *vm is the VM as shown.
 */
int op_service_action_vm(struct op_service *svc, const char *owner, const char *id,
                         enum vm_action action, uint64_t expect, struct vm *vm,
                         struct operation *op, struct st_error *err);

/*
 * PATCH @id.  A rename alone is written at once (*queued false).  A change
 * of vcpus or memory_mib needs the VM stopped; the new sizes are stored
 * within the quota of the VM's owner (ST_ERR_FORBIDDEN with *v filled)
 * together with a queued vm.resize operation that redefines the domain
 * (*queued true, *op filled): no domain holds sizes its row does not.
 */
int op_service_patch_vm(struct op_service *svc, const char *owner, const char *id,
                        const struct vm_patch_req *req, uint64_t expect, struct vm *vm,
                        struct operation *op, bool *queued, struct quota_violation *v,
                        struct st_error *err);

/*
 * One operation within @owner's scope; with @wait_ms > 0 (cut to
 * wait_max_ms), wait until it has ended or the time is up, and answer it
 * as it then is.
 */
int op_service_get(struct op_service *svc, const char *owner, const char *id, int64_t wait_ms,
                   struct operation *out, struct st_error *err);

int op_service_list(struct op_service *svc, const char *owner, const struct op_filter *f,
                    struct op_list *out, struct st_error *err);

/*
 * @vm_id's events within @owner's scope.  Events outlive their VM; a VM
 * with neither a row nor events in scope is ST_ERR_NOT_FOUND.
 */
int op_service_events(struct op_service *svc, const char *owner, const char *vm_id,
                      const struct vm_event_filter *f, struct vm_event_list *out,
                      struct st_error *err);

/* Append an event for @vm (best effort: a failure is only logged by the caller's log). */
int op_service_event(struct op_service *svc, const struct vm *vm, enum vm_event_type type,
                     const char *message, json_t *data, struct st_error *err);

/*
 * Claim one operation for @worker_id and do it to the end (the worker's
 * loop body).  *worked is false when nothing was queued.  The operation
 * ends succeeded or failed, except when its lease was lost on the way:
 * then another worker has it and this one stops where it is.  One claimed
 * for more than OP_MAX_ATTEMPTS times fails without being run again.
 */
int op_service_work_one(struct op_service *svc, const char *worker_id, bool *worked,
                        struct st_error *err);

#endif
