#include "services/op_service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/mem.h"

int
op_service_event(struct op_service *svc, const struct vm *vm, enum vm_event_type type,
                 const char *message, json_t *data, struct st_error *err)
{
    struct vm_event e;
    char *text = data ? json_dumps(data, JSON_COMPACT) : NULL;

    memset(&e, 0, sizeof(e));
    st_uuid_generate(e.id);
    memcpy(e.vm_id, vm->id, ST_ID_BUF);
    memcpy(e.owner_id, vm->owner_id, ST_ID_BUF);
    e.at = st_now_ms();
    e.type = type;
    st_strlcpy(e.message, message, sizeof(e.message));
    if (text && st_strlcpy(e.data, text, sizeof(e.data)) < 0)
        e.data[0] = '\0'; /* cut JSON is no JSON */
    free(text);
    json_decref(data);
    return event_repo_append(svc->events, &e, err);
}

/* An event whose failure must not fail what it describes. */
static void
note(struct op_service *svc, const struct vm *vm, enum vm_event_type type, const char *message,
     json_t *data)
{
    struct st_error ignored = {0};

    op_service_event(svc, vm, type, message, data, &ignored);
}

static void
op_new(struct operation *op, enum op_kind kind, const struct vm *vm)
{
    memset(op, 0, sizeof(*op));
    st_uuid_generate(op->id);
    op->kind = kind;
    memcpy(op->target_id, vm->id, ST_ID_BUF);
    memcpy(op->owner_id, vm->owner_id, ST_ID_BUF);
    op->status = OP_STATUS_QUEUED;
    op->revision = 1;
    op->created_at = st_now_ms();
}

/* The operation kind of @action; and back (-1 for create and delete). */
static const enum op_kind action_kinds[] = {
    [VM_ACTION_START] = OP_KIND_VM_START,           [VM_ACTION_STOP] = OP_KIND_VM_STOP,
    [VM_ACTION_FORCE_STOP] = OP_KIND_VM_FORCE_STOP, [VM_ACTION_REBOOT] = OP_KIND_VM_REBOOT,
    [VM_ACTION_PAUSE] = OP_KIND_VM_PAUSE,           [VM_ACTION_RESUME] = OP_KIND_VM_RESUME,
    [VM_ACTION_RESIZE] = OP_KIND_VM_RESIZE,
};

static int
action_of_kind(enum op_kind kind, enum vm_action *out)
{
    size_t i;

    for (i = 0; i < ST_ARRAY_LEN(action_kinds); i++) {
        if (action_kinds[i] == kind) {
            *out = (enum vm_action)i;
            return 0;
        }
    }
    return -1;
}

/* What an operation does, as its events say it: its kind without the "vm." ("start"). */
static const char *
kind_verb(enum op_kind kind)
{
    const char *name = op_kind_name(kind);
    const char *dot = strchr(name, '.');

    return dot ? dot + 1 : name;
}

/* "create accepted", "start accepted", ... */
static void
note_accepted(struct op_service *svc, const struct vm *vm, const struct operation *op)
{
    char message[64];

    snprintf(message, sizeof(message), "%s accepted", kind_verb(op->kind));
    note(svc, vm, VM_EVENT_INFO, message, json_pack("{s:s}", "operation_id", op->id));
}

/* How often an accept is decided afresh on a row that moved meanwhile. */
#define ACCEPT_TRIES 8

/* The limits of @owner; *limited false for an owner that is no user (rows from before identity). */
static int
owner_limits(struct op_service *svc, const char *owner, struct quota *limits, bool *limited,
             struct st_error *err)
{
    struct st_error local = {0};

    *limited = false;
    if (!svc->users)
        return 0;
    if (user_service_limits(svc->users, owner, limits, &local) == 0) {
        *limited = true;
        return 0;
    }
    if (local.code == ST_ERR_NOT_FOUND)
        return 0;
    if (err)
        *err = local;
    return -1;
}

int
op_service_create_vm(struct op_service *svc, const char *owner, const struct vm_create_req *req,
                     struct vm *vm, struct operation *op, struct quota_violation *v,
                     struct st_error *err)
{
    struct operation queued;
    struct quota limits;
    bool limited;
    struct vm row;

    if (owner_limits(svc, owner, &limits, &limited, err) < 0 || store_tx_begin(svc->tx, err) < 0)
        return -1;
    if (vm_service_create_row(svc->vm_svc, owner, limited ? &limits : NULL, req, &row, v, err) <
        0) {
        store_tx_rollback(svc->tx);
        return -1;
    }
    op_new(&queued, OP_KIND_VM_CREATE, &row);
    if (op_repo_insert(svc->ops, &queued, err) < 0) {
        store_tx_rollback(svc->tx);
        return -1;
    }
    if (store_tx_commit(svc->tx, err) < 0)
        return -1;
    note_accepted(svc, &row, &queued);
    *vm = row;
    *op = queued;
    return 0;
}

/* What an accept writes, decided on the row as read. */
struct accept_plan {
    bool queue; /* queue an operation of @kind with the write */
    enum op_kind kind;
    bool limited; /* write within @limits (a resize) */
    struct quota limits;
};

/*
 * Decide on @row (as read; @shown is its status as the hypervisor shows
 * it): change @row as the request asks and fill @plan, or refuse.
 */
typedef int (*accept_decide)(struct op_service *svc, struct vm *row, enum vm_status shown,
                             const void *ctx, struct accept_plan *plan, struct st_error *err);

struct accept_rule {
    accept_decide decide;
    /* Whether the decision needs the state the hypervisor shows (a delete is taken in any). */
    bool needs_state;
};

/* Write @row (compare-and-set) and queue @plan's operation: one transaction. */
static int
accept_write(struct op_service *svc, const char *owner, struct vm *row,
             const struct accept_plan *plan, struct operation *op, struct quota_violation *v,
             struct st_error *err)
{
    struct quota_violation unused;
    int rc;

    row->updated_at = st_now_ms();
    if (plan->queue)
        op_new(op, plan->kind, row);
    if (store_tx_begin(svc->tx, err) < 0)
        return -1;
    rc = plan->limited ? vm_repo_update_within_quota(svc->vms, owner, row, &plan->limits,
                                                     v ? v : &unused, err)
                       : vm_repo_update(svc->vms, owner, row, err);
    if (rc < 0 || (plan->queue && op_repo_insert(svc->ops, op, err) < 0)) {
        store_tx_rollback(svc->tx);
        return -1;
    }
    if (store_tx_commit(svc->tx, err) < 0)
        return -1;
    row->revision++;
    return 0;
}

static int
decide_delete(struct op_service *svc, struct vm *row, enum vm_status shown, const void *ctx,
              struct accept_plan *plan, struct st_error *err)
{
    (void)svc, (void)shown, (void)ctx, (void)err;
    row->status = VM_STATUS_DELETING;
    plan->queue = true;
    plan->kind = OP_KIND_VM_DELETE;
    return 0;
}

/*
 * Read, decide, write; again on a row that moved meanwhile, unless the
 * caller named the revision it expects.  *vm is the VM as written, its
 * live status as the hypervisor shows it.
 */
static int
accept_vm(struct op_service *svc, const char *owner, const char *id, uint64_t expect,
          const struct accept_rule *rule, const void *ctx, struct vm *vm, struct operation *op,
          bool *queued, struct quota_violation *v, struct st_error *err)
{
    struct accept_plan plan;
    struct vm row, shown;
    int tries;

    for (tries = 0; tries < ACCEPT_TRIES; tries++) {
        if (vm_repo_get(svc->vms, owner, id, &row, err) < 0)
            return -1;
        if (st_revision_check("VM", row.id, row.revision, expect, err) < 0)
            return -1;
        shown = row;
        memset(&plan, 0, sizeof(plan));
        if ((rule->needs_state && vm_service_merge(svc->vm_svc, &shown, err) < 0) ||
            rule->decide(svc, &row, shown.status, ctx, &plan, err) < 0)
            return -1;
        if (accept_write(svc, owner, &row, &plan, op, v, err) == 0) {
            if (row.status != VM_STATUS_DELETING)
                row.status = shown.status;
            *vm = row;
            *queued = plan.queue;
            if (plan.queue)
                note_accepted(svc, &row, op);
            return 0;
        }
        if (err->code != ST_ERR_STALE)
            return -1;
        if (expect)
            return st_error_set(err, ST_ERR_PRECONDITION,
                                "VM '%s' changed meanwhile, so it is no longer at revision %llu "
                                "(If-Match)",
                                id, (unsigned long long)expect);
    }
    return -1;
}

int
op_service_delete_vm(struct op_service *svc, const char *owner, const char *id, uint64_t expect,
                     struct vm *vm, struct operation *op, struct st_error *err)
{
    bool queued;

    static const struct accept_rule rule = {.decide = decide_delete, .needs_state = false};

    return accept_vm(svc, owner, id, expect, &rule, NULL, vm, op, &queued, NULL, err);
}

static int
decide_action(struct op_service *svc, struct vm *row, enum vm_status shown, const void *ctx,
              struct accept_plan *plan, struct st_error *err)
{
    const enum vm_action *action = ctx;

    (void)svc;
    if (!vm_action_allowed(*action, shown))
        return st_error_set(err, ST_ERR_CONFLICT, "VM '%s' is %s; cannot %s", row->id,
                            vm_status_name(shown), vm_action_name(*action));
    plan->queue = true;
    plan->kind = action_kinds[*action];
    return 0;
}

int
op_service_action_vm(struct op_service *svc, const char *owner, const char *id,
                     enum vm_action action, uint64_t expect, struct vm *vm, struct operation *op,
                     struct st_error *err)
{
    static const struct accept_rule rule = {.decide = decide_action, .needs_state = true};
    bool queued;

    if ((size_t)action >= ST_ARRAY_LEN(action_kinds) || action == VM_ACTION_RESIZE)
        return st_error_set(err, ST_ERR_INTERNAL, "action %d is not queued this way", (int)action);
    return accept_vm(svc, owner, id, expect, &rule, &action, vm, op, &queued, NULL, err);
}

static int
decide_patch(struct op_service *svc, struct vm *row, enum vm_status shown, const void *ctx,
             struct accept_plan *plan, struct st_error *err)
{
    bool resize;

    if (vm_service_patch_apply(ctx, shown, row, &resize, err) < 0)
        return -1;
    if (!resize)
        return 0;
    plan->queue = true;
    plan->kind = OP_KIND_VM_RESIZE;
    /* A resize counts against the quota of the VM's owner, whoever asks. */
    return owner_limits(svc, row->owner_id, &plan->limits, &plan->limited, err);
}

int
op_service_patch_vm(struct op_service *svc, const char *owner, const char *id,
                    const struct vm_patch_req *req, uint64_t expect, struct vm *vm,
                    struct operation *op, bool *queued, struct quota_violation *v,
                    struct st_error *err)
{
    static const struct accept_rule rule = {.decide = decide_patch, .needs_state = true};

    return accept_vm(svc, owner, id, expect, &rule, req, vm, op, queued, v, err);
}

int
op_service_get(struct op_service *svc, const char *owner, const char *id, int64_t wait_ms,
               struct operation *out, struct st_error *err)
{
    int64_t deadline;
    struct operation op;

    if (wait_ms > svc->cfg.wait_max_ms)
        wait_ms = svc->cfg.wait_max_ms;
    deadline = st_monotonic_ms() + (wait_ms > 0 ? wait_ms : 0);
    for (;;) {
        if (op_repo_get(svc->ops, owner, id, &op, err) < 0)
            return -1;
        if (op_status_terminal(op.status) || st_monotonic_ms() >= deadline)
            break;
        st_sleep_ms(svc->cfg.wait_poll_ms);
    }
    *out = op;
    return 0;
}

int
op_service_list(struct op_service *svc, const char *owner, const struct op_filter *f,
                struct op_list *out, struct st_error *err)
{
    return op_repo_list(svc->ops, owner, f, out, err);
}

int
op_service_events(struct op_service *svc, const char *owner, const char *vm_id,
                  const struct vm_event_filter *f, struct vm_event_list *out, struct st_error *err)
{
    struct vm_event_list list;
    struct vm row;

    if (event_repo_list(svc->events, owner, vm_id, f, &list, err) < 0)
        return -1;
    /* Nothing in scope: a VM of someone else's looks like no VM at all. */
    if (list.count == 0 && !f->marker[0] && vm_repo_get(svc->vms, owner, vm_id, &row, err) < 0) {
        vm_event_list_release(&list);
        return -1;
    }
    *out = list;
    return 0;
}

/* What the worker's step hook needs: whose lease to renew. */
struct op_run {
    struct op_service *svc;
    struct operation *op;
    const char *worker_id;
    bool stopped; /* the lease could not be renewed: leave everything as it is */
};

static int
op_step_hook(void *ctx, const char *vm_id, const char *step, struct st_error *err)
{
    struct op_run *run = ctx;

    (void)vm_id;
    if (op_repo_renew(run->svc->ops, run->op->id, run->worker_id,
                      st_now_ms() + run->svc->cfg.lease_ms, step, err) < 0) {
        run->stopped = true;
        return -1;
    }
    st_strlcpy(run->op->step, step, sizeof(run->op->step));
    if (run->svc->probe)
        run->svc->probe(run->op, step);
    return 0;
}

/* Do @op's work; 1 when the lease was lost (someone else has it now). */
static int
op_execute(struct op_service *svc, struct operation *op, const char *worker_id, struct vm *vm,
           struct st_error *err)
{
    struct op_run run = {.svc = svc, .op = op, .worker_id = worker_id, .stopped = false};
    const struct vm_step_hook hook = {.fn = op_step_hook, .ctx = &run};
    enum vm_action action;
    int rc;

    switch (op->kind) {
    case OP_KIND_VM_CREATE:
        rc = vm_service_create_resume(svc->vm_svc, op->target_id, &hook, vm, err);
        break;
    case OP_KIND_VM_DELETE:
        rc = vm_service_delete(svc->vm_svc, NULL, op->target_id, &hook, err);
        /* Gone already (an earlier attempt removed the row): the delete is done. */
        if (rc < 0 && !run.stopped && err->code == ST_ERR_NOT_FOUND)
            rc = 0;
        break;
    default:
        if (action_of_kind(op->kind, &action) < 0)
            return st_error_set(err, ST_ERR_INTERNAL,
                                "operation '%s' has kind %d, which no "
                                "worker knows",
                                op->id, (int)op->kind);
        /* The step recorded by the attempt that claimed it before, if any. */
        rc = vm_service_action_run(svc->vm_svc, op->target_id, action, op->step, &hook, vm, err);
        break;
    }
    return run.stopped ? 1 : (rc < 0 ? -1 : 0);
}

/* What a VM's history says when @op succeeded. */
static void
note_done(struct op_service *svc, const struct operation *op, const struct vm *vm,
          const char *worker_id)
{
    char message[96];

    if (op->kind == OP_KIND_VM_CREATE)
        snprintf(message, sizeof(message), "created: running");
    else if (op->kind == OP_KIND_VM_DELETE)
        snprintf(message, sizeof(message), "deleted");
    else if (op->kind == OP_KIND_VM_RESIZE)
        snprintf(message, sizeof(message), "resized: %u vCPUs, %u MiB", vm->vcpus, vm->memory_mib);
    else
        snprintf(message, sizeof(message), "%s: now %s", kind_verb(op->kind),
                 vm_status_name(vm->status));
    note(svc, vm, VM_EVENT_STATE_CHANGE, message,
         json_pack("{s:s, s:i, s:s}", "operation_id", op->id, "attempts", (int)op->attempts,
                   "worker_id", worker_id));
}

/* The VM as the event log should name it, even when its row is gone. */
static void
op_subject(struct op_service *svc, const struct operation *op, struct vm *vm)
{
    struct st_error ignored = {0};

    if (vm_repo_get(svc->vms, NULL, op->target_id, vm, &ignored) == 0)
        return;
    memset(vm, 0, sizeof(*vm));
    memcpy(vm->id, op->target_id, ST_ID_BUF);
    memcpy(vm->owner_id, op->owner_id, ST_ID_BUF);
}

/* Fail an operation that no attempt could finish; a create is undone. */
static int
op_give_up(struct op_service *svc, const struct operation *op, const char *worker_id,
           struct st_error *err)
{
    struct st_error ignored = {0};
    char why[ST_FAULT_BUF];
    struct vm vm;

    snprintf(why, sizeof(why), "%s given up after %u attempts, the last at step '%s'",
             op_kind_name(op->kind), op->attempts - 1, op->step[0] ? op->step : "none");
    if (op->kind == OP_KIND_VM_CREATE)
        vm_service_create_abandon(svc->vm_svc, op->target_id, why, &ignored);
    op_subject(svc, op, &vm);
    note(svc, &vm, VM_EVENT_ERROR, why, json_pack("{s:s}", "operation_id", op->id));
    return op_repo_finish(svc->ops, op->id, worker_id, OP_STATUS_FAILED, why, st_now_ms(), err);
}

int
op_service_work_one(struct op_service *svc, const char *worker_id, bool *worked,
                    struct st_error *err)
{
    struct st_error cause = {0};
    struct operation op;
    struct vm vm;
    bool claimed = false;
    int rc;

    *worked = false;
    if (op_repo_claim(svc->ops, worker_id, st_now_ms(), svc->cfg.lease_ms, &op, &claimed, err) < 0)
        return -1;
    if (!claimed)
        return 0;
    *worked = true;
    if (op.attempts > OP_MAX_ATTEMPTS)
        return op_give_up(svc, &op, worker_id, err);
    if (svc->hold.fn)
        svc->hold.fn(svc->hold.ctx, &op);
    memset(&vm, 0, sizeof(vm));
    rc = op_execute(svc, &op, worker_id, &vm, &cause);
    if (svc->hold.fn)
        svc->hold.fn(svc->hold.ctx, NULL);
    if (rc > 0)
        return 0;
    /* A delete leaves no row behind: its events name the VM by the operation. */
    if (rc < 0 || op.kind == OP_KIND_VM_DELETE || !vm.id[0])
        op_subject(svc, &op, &vm);
    if (rc == 0) {
        note_done(svc, &op, &vm, worker_id);
        return op_repo_finish(svc->ops, op.id, worker_id, OP_STATUS_SUCCEEDED, NULL, st_now_ms(),
                              err);
    }
    note(svc, &vm, VM_EVENT_ERROR, cause.msg, json_pack("{s:s}", "operation_id", op.id));
    return op_repo_finish(svc->ops, op.id, worker_id, OP_STATUS_FAILED, cause.msg, st_now_ms(),
                          err);
}
