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
    op->created_at = st_now_ms();
    op->revision = 1;
}

int
op_service_create_vm(struct op_service *svc, const char *owner, const struct quota *limits,
                     const struct vm_create_req *req, struct vm *vm, struct operation *op,
                     struct quota_violation *v, struct st_error *err)
{
    struct st_error ignored = {0};
    struct operation queued;
    struct vm row;

    if (vm_service_create_row(svc->vm_svc, owner, limits, req, &row, v, err) < 0)
        return -1;
    op_new(&queued, OP_KIND_VM_CREATE, &row);
    if (op_repo_insert(svc->ops, &queued, err) < 0) {
        /* Nobody would ever build it: take the row back. */
        vm_repo_remove(svc->vms, NULL, row.id, &ignored);
        return -1;
    }
    note(svc, &row, VM_EVENT_INFO, "create accepted",
         json_pack("{s:s}", "operation_id", queued.id));
    *vm = row;
    *op = queued;
    return 0;
}

int
op_service_delete_vm(struct op_service *svc, const char *owner, const char *id, struct vm *vm,
                     struct operation *op, struct st_error *err)
{
    struct operation queued;
    struct vm row;

    if (vm_repo_get(svc->vms, owner, id, &row, err) < 0)
        return -1;
    /* The operation first: its uniqueness per VM is what refuses a second one. */
    op_new(&queued, OP_KIND_VM_DELETE, &row);
    if (op_repo_insert(svc->ops, &queued, err) < 0)
        return -1;
    if (row.status != VM_STATUS_DELETING) {
        row.status = VM_STATUS_DELETING;
        row.updated_at = st_now_ms();
        /*
         * The worker marks it too; this is what the client sees meanwhile.
         * A row changed since it was read (the worker may be at it already)
         * keeps what it says.
         */
        if (vm_repo_update(svc->vms, owner, &row, err) == 0)
            row.revision++;
        else if (err->code != ST_ERR_NOT_FOUND && err->code != ST_ERR_STALE)
            return -1;
    }
    note(svc, &row, VM_EVENT_INFO, "delete accepted",
         json_pack("{s:s}", "operation_id", queued.id));
    *vm = row;
    *op = queued;
    return 0;
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
op_execute(struct op_service *svc, struct operation *op, const char *worker_id,
           struct st_error *err)
{
    struct op_run run = {.svc = svc, .op = op, .worker_id = worker_id, .stopped = false};
    struct vm_step_hook saved = svc->vm_svc->hook;
    struct vm vm;
    int rc;

    svc->vm_svc->hook = (struct vm_step_hook){.fn = op_step_hook, .ctx = &run};
    if (op->kind == OP_KIND_VM_CREATE) {
        rc = vm_service_create_resume(svc->vm_svc, op->target_id, &vm, err);
    } else {
        rc = vm_service_delete(svc->vm_svc, NULL, op->target_id, err);
        /* Gone already (an earlier attempt removed the row): the delete is done. */
        if (rc < 0 && !run.stopped && err->code == ST_ERR_NOT_FOUND)
            rc = 0;
    }
    svc->vm_svc->hook = saved;
    return run.stopped ? 1 : rc;
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
    rc = op_execute(svc, &op, worker_id, &cause);
    if (svc->hold.fn)
        svc->hold.fn(svc->hold.ctx, NULL);
    if (rc > 0)
        return 0;
    op_subject(svc, &op, &vm);
    if (rc == 0) {
        note(svc, &vm, VM_EVENT_STATE_CHANGE,
             op.kind == OP_KIND_VM_CREATE ? "created: running" : "deleted",
             json_pack("{s:s, s:i, s:s}", "operation_id", op.id, "attempts", (int)op.attempts,
                       "worker_id", worker_id));
        return op_repo_finish(svc->ops, op.id, worker_id, OP_STATUS_SUCCEEDED, NULL, st_now_ms(),
                              err);
    }
    note(svc, &vm, VM_EVENT_ERROR, cause.msg, json_pack("{s:s}", "operation_id", op.id));
    return op_repo_finish(svc->ops, op.id, worker_id, OP_STATUS_FAILED, cause.msg, st_now_ms(),
                          err);
}
