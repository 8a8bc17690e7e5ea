/*
 * test_op_service - durable VM operations against real SQLite and libvirt's
 * test:///default driver: accepting creates and deletes, the worker's
 * loop body, waiting on an operation, and a worker that stops after any
 * step (its lease taken) with a second one finishing the work.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "support/checks.h"
#include "support/fixture.h"
#include "util/mem.h"

/*
 * The fixture's operations with renew refused from its fail_from-th call
 * on, as another worker that took the lease would make it: the worker
 * stops right after the step whose renewal was refused.
 */
struct lossy_ops {
    struct op_repo iface; /* give this to the operation service */
    struct op_repo *real; /* borrowed */
    unsigned renews;
    unsigned fail_from; /* 0: never */
    bool fail_finish;   /* refuse finish as well */
    bool fail_insert;   /* the store refuses new operations */
};

static int
lossy_insert(void *self, const struct operation *op, struct st_error *err)
{
    struct lossy_ops *w = self;

    if (w->fail_insert)
        return st_error_set(err, ST_ERR_UNAVAILABLE, "cannot insert operation '%s' (injected)",
                            op->id);
    return op_repo_insert(w->real, op, err);
}

static int
lossy_get(void *self, const char *owner, const char *id, struct operation *out,
          struct st_error *err)
{
    return op_repo_get(((struct lossy_ops *)self)->real, owner, id, out, err);
}

static int
lossy_list(void *self, const char *owner, const struct op_filter *f, struct op_list *out,
           struct st_error *err)
{
    return op_repo_list(((struct lossy_ops *)self)->real, owner, f, out, err);
}

static int
lossy_claim(void *self, const char *worker_id, int64_t now_ms, int64_t lease_ms,
            struct operation *out, bool *claimed, struct st_error *err)
{
    return op_repo_claim(((struct lossy_ops *)self)->real, worker_id, now_ms, lease_ms, out,
                         claimed, err);
}

static int
lossy_renew(void *self, const char *id, const char *worker_id, int64_t until_ms, const char *step,
            struct st_error *err)
{
    struct lossy_ops *w = self;

    if (w->fail_from && ++w->renews >= w->fail_from)
        return st_error_set(err, ST_ERR_CONFLICT, "lease on operation '%s' was lost (injected)",
                            id);
    return op_repo_renew(w->real, id, worker_id, until_ms, step, err);
}

static int
lossy_finish(void *self, const char *id, const char *worker_id, enum op_status status,
             const char *error, int64_t now_ms, struct st_error *err)
{
    struct lossy_ops *w = self;

    if (w->fail_finish)
        return st_error_set(err, ST_ERR_CONFLICT, "lease on operation '%s' was lost (injected)",
                            id);
    return op_repo_finish(w->real, id, worker_id, status, error, now_ms, err);
}

static int
lossy_active_for(void *self, const char *target_id, struct operation *out, struct st_error *err)
{
    return op_repo_active_for(((struct lossy_ops *)self)->real, target_id, out, err);
}

/* The real repository belongs to the fixture. */
static void
lossy_close(void *self)
{
    (void)self;
}

static const struct op_repo_ops lossy_ops_table = {
    .insert = lossy_insert,
    .get = lossy_get,
    .list = lossy_list,
    .claim = lossy_claim,
    .renew = lossy_renew,
    .finish = lossy_finish,
    .active_for = lossy_active_for,
    .close = lossy_close,
};

static void
lossy_init(struct lossy_ops *w, struct op_repo *real, unsigned fail_from)
{
    memset(w, 0, sizeof(*w));
    w->iface.ops = &lossy_ops_table;
    w->iface.self = w;
    w->real = real;
    w->fail_from = fail_from;
}

static void
assert_no_row(struct fixture *fx, const char *id)
{
    struct st_error err = {0};
    struct vm vm;

    assert_st_err(vm_repo_get(&fx->vms_real, NULL, id, &vm, &err), err, ST_ERR_NOT_FOUND, "");
}

static struct operation
op_stored(struct fixture *fx, const char *id)
{
    struct st_error err = {0};
    struct operation op;

    assert_st_ok(op_repo_get(&fx->ops, NULL, id, &op, &err), err);
    return op;
}

static void
assert_domain_state(struct fixture *fx, const char *id, enum hv_state want)
{
    struct st_error err = {0};
    enum hv_state st;

    assert_st_ok(hypervisor_state(&fx->hv_real, id, &st, &err), err);
    assert_int_equal(st, want);
}

static void
assert_no_orphans(struct fixture *fx)
{
    struct st_error err = {0};
    struct orphan_list list = {NULL, 0};

    assert_st_ok(reconcile_find_orphans(&fx->reconcile_svc, &list, &err), err);
    if (list.count > 0)
        fail_msg("%zu orphans, the first %s '%s'", list.count,
                 list.items[0].kind == ORPHAN_DOMAIN ? "domain" : "disk", list.items[0].name);
    orphan_list_release(&list);
}

/* Accept a create of FIXTURE_OWNER's VM @name. */
static void
accept_create(struct fixture *fx, const char *name, struct vm *vm, struct operation *op)
{
    struct st_error err = {0};
    struct vm_create_req req;

    fixture_create_req(fx, name, &req);
    assert_st_ok(op_service_create_vm(&fx->op_svc, FIXTURE_OWNER, &req, vm, op, NULL, &err), err);
}

/* One turn of @worker that must find an operation. */
static void
work(struct fixture *fx, const char *worker)
{
    struct st_error err = {0};
    bool worked = false;

    assert_st_ok(op_service_work_one(&fx->op_svc, worker, &worked, &err), err);
    assert_true(worked);
}

static void
assert_idle(struct fixture *fx)
{
    struct st_error err = {0};
    bool worked = true;

    assert_st_ok(op_service_work_one(&fx->op_svc, "idle", &worked, &err), err);
    assert_false(worked);
}

/* A running VM made through an accepted create and one worker turn. */
static void
create_running(struct fixture *fx, const char *name, struct vm *vm)
{
    struct operation op;

    accept_create(fx, name, vm, &op);
    work(fx, "w0");
    assert_int_equal(op_stored(fx, op.id).status, OP_STATUS_SUCCEEDED);
}

/*
 * After a delete: the other VM of the test is untouched, and nothing of
 * the deleted one is left to be an orphan.
 */
static void
assert_only_left(struct fixture *fx, const struct vm *bystander)
{
    assert_int_equal(fx_stored(fx, bystander->id).status, VM_STATUS_RUNNING);
    assert_domain_state(fx, bystander->id, HV_STATE_RUNNING);
    fx_assert_disk(fx, bystander->id);
    assert_int_equal(fixture_pool_volume_count(fx, fx->disk_pool), 1);
    assert_no_orphans(fx);
}

static void
events(struct fixture *fx, const char *owner, const char *vm_id, struct vm_event_list *out)
{
    struct st_error err = {0};
    struct vm_event_filter f = {.marker = "", .limit = ST_LIST_LIMIT_MAX};

    assert_st_ok(op_service_events(&fx->op_svc, owner, vm_id, &f, out, &err), err);
}

/* How many of @list's events are of @type with a message containing @needle. */
static size_t
count_events(const struct vm_event_list *list, enum vm_event_type type, const char *needle)
{
    size_t i, n = 0;

    for (i = 0; i < list->count; i++)
        if (list->items[i].type == type && strstr(list->items[i].message, needle))
            n++;
    return n;
}

static void
test_op_service__create_is_accepted_then_worked_to_running(void **state)
{
    struct fixture *fx = *state;
    struct vm_event_list list = {0};
    struct operation op, done;
    struct vm vm, row;

    accept_create(fx, "web-01", &vm, &op);
    assert_true(st_uuid_valid(vm.id));
    assert_int_equal(vm.status, VM_STATUS_CREATING);
    assert_int_equal(vm.step, VM_STEP_ROW);
    assert_true(st_uuid_valid(op.id));
    assert_int_equal(op.kind, OP_KIND_VM_CREATE);
    assert_int_equal(op.status, OP_STATUS_QUEUED);
    assert_string_equal(op.target_id, vm.id);
    assert_string_equal(op.owner_id, FIXTURE_OWNER);
    /* Accepting made nothing in libvirt. */
    assert_int_equal(fx_stored(fx, vm.id).status, VM_STATUS_CREATING);
    assert_int_equal(op_stored(fx, op.id).status, OP_STATUS_QUEUED);
    fx_assert_no_domain(fx, vm.id);
    fx_assert_no_disk(fx, vm.id);

    work(fx, "w1");
    done = op_stored(fx, op.id);
    assert_int_equal(done.status, OP_STATUS_SUCCEEDED);
    assert_int_equal(done.attempts, 1);
    assert_string_equal(done.worker_id, "w1");
    assert_string_equal(done.error, "");
    assert_true(done.finished_at >= done.started_at && done.started_at > 0);
    row = fx_stored(fx, vm.id);
    assert_int_equal(row.status, VM_STATUS_RUNNING);
    assert_int_equal(row.step, VM_STEP_DONE);
    assert_domain_state(fx, vm.id, HV_STATE_RUNNING);
    fx_assert_disk(fx, vm.id);
    assert_idle(fx);

    events(fx, FIXTURE_OWNER, vm.id, &list);
    assert_int_equal(list.count, 2);
    assert_int_equal(count_events(&list, VM_EVENT_INFO, "create accepted"), 1);
    assert_int_equal(count_events(&list, VM_EVENT_STATE_CHANGE, "created: running"), 1);
    assert_non_null(strstr(list.items[0].data, op.id));
    assert_non_null(strstr(list.items[1].data, op.id));
    vm_event_list_release(&list);
    assert_no_orphans(fx);
}

static void
test_op_service__delete_is_queued_once_and_worked_away(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct vm_event_list list = {0};
    struct operation op, again;
    struct vm vm, marked, bystander;

    create_running(fx, "bystander", &bystander);
    create_running(fx, "web-01", &vm);
    assert_st_ok(op_service_delete_vm(&fx->op_svc, FIXTURE_OWNER, vm.id, 0, &marked, &op, &err),
                 err);
    assert_int_equal(op.kind, OP_KIND_VM_DELETE);
    assert_int_equal(op.status, OP_STATUS_QUEUED);
    assert_string_equal(op.target_id, vm.id);
    assert_int_equal(marked.status, VM_STATUS_DELETING);
    assert_int_equal(fx_stored(fx, vm.id).status, VM_STATUS_DELETING);
    /* Queued is not yet done: the domain is still there. */
    assert_domain_state(fx, vm.id, HV_STATE_RUNNING);

    assert_st_err(op_service_delete_vm(&fx->op_svc, FIXTURE_OWNER, vm.id, 0, &marked, &again, &err),
                  err, ST_ERR_CONFLICT, op.id);
    /* Another owner's VM is not there to delete. */
    assert_st_err(
        op_service_delete_vm(&fx->op_svc, FIXTURE_OTHER_OWNER, vm.id, 0, &marked, &again, &err),
        err, ST_ERR_NOT_FOUND, "");

    work(fx, "w1");
    assert_int_equal(op_stored(fx, op.id).status, OP_STATUS_SUCCEEDED);
    assert_no_row(fx, vm.id);
    fx_assert_no_domain(fx, vm.id);
    fx_assert_no_disk(fx, vm.id);
    assert_idle(fx);

    /* The history outlives the VM, for its owner only. */
    events(fx, FIXTURE_OWNER, vm.id, &list);
    assert_int_equal(list.count, 4);
    assert_int_equal(count_events(&list, VM_EVENT_INFO, "create accepted"), 1);
    assert_int_equal(count_events(&list, VM_EVENT_STATE_CHANGE, "created: running"), 1);
    assert_int_equal(count_events(&list, VM_EVENT_INFO, "delete accepted"), 1);
    assert_int_equal(count_events(&list, VM_EVENT_STATE_CHANGE, "deleted"), 1);
    vm_event_list_release(&list);
    {
        struct vm_event_filter f = {.marker = "", .limit = 10};

        assert_st_err(op_service_events(&fx->op_svc, FIXTURE_OTHER_OWNER, vm.id, &f, &list, &err),
                      err, ST_ERR_NOT_FOUND, "");
    }
    /* A second delete of the VM now gone. */
    assert_st_err(op_service_delete_vm(&fx->op_svc, FIXTURE_OWNER, vm.id, 0, &marked, &again, &err),
                  err, ST_ERR_NOT_FOUND, "");
    assert_only_left(fx, &bystander);
}

static void
test_op_service__create_failing_at_define_ends_failed(void **state)
{
    struct fixture *fx = *state;
    struct vm_event_list list = {0};
    struct operation op, done;
    struct vm vm, row;

    accept_create(fx, "web-01", &vm, &op);
    fault_hypervisor_fail(&fx->hv, FAULT_HV_DEFINE, 1, ST_ERR_BACKEND);
    work(fx, "w1");
    done = op_stored(fx, op.id);
    assert_int_equal(done.status, OP_STATUS_FAILED);
    if (!strstr(done.error, "create failed at step define") ||
        !strstr(done.error, "injected fault"))
        fail_msg("operation error \"%s\" does not name the step and the cause", done.error);
    row = fx_stored(fx, vm.id);
    assert_int_equal(row.status, VM_STATUS_ERROR);
    assert_non_null(strstr(row.fault, "create failed at step define"));
    fx_assert_no_domain(fx, vm.id);
    fx_assert_no_disk(fx, vm.id);
    assert_int_equal(fixture_pool_volume_count(fx, fx->disk_pool), 0);
    assert_idle(fx);

    events(fx, FIXTURE_OWNER, vm.id, &list);
    assert_int_equal(list.count, 2);
    assert_int_equal(count_events(&list, VM_EVENT_INFO, "create accepted"), 1);
    assert_int_equal(count_events(&list, VM_EVENT_ERROR, "create failed at step define"), 1);
    vm_event_list_release(&list);
}

static void
test_op_service__get_waits_for_the_end(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct operation op, got;
    struct vm vm;
    int64_t t0, took;

    accept_create(fx, "web-01", &vm, &op);

    /* Nobody works: the wait runs out and the operation is answered as it is. */
    t0 = st_monotonic_ms();
    assert_st_ok(op_service_get(&fx->op_svc, FIXTURE_OWNER, op.id, 200, &got, &err), err);
    took = st_monotonic_ms() - t0;
    assert_int_equal(got.status, OP_STATUS_QUEUED);
    if (took < 200 || took > 1200)
        fail_msg("a 200 ms wait took %lld ms", (long long)took);

    /* A wait beyond wait_max_ms is cut to it. */
    fx->op_svc.cfg.wait_max_ms = 100;
    t0 = st_monotonic_ms();
    assert_st_ok(op_service_get(&fx->op_svc, FIXTURE_OWNER, op.id, 60000, &got, &err), err);
    took = st_monotonic_ms() - t0;
    if (took < 100 || took > 1100)
        fail_msg("a wait cut to 100 ms took %lld ms", (long long)took);
    fx->op_svc.cfg.wait_max_ms = FIXTURE_WAIT_MAX_MS;

    /* Without a wait, at once. */
    t0 = st_monotonic_ms();
    assert_st_ok(op_service_get(&fx->op_svc, FIXTURE_OWNER, op.id, 0, &got, &err), err);
    assert_true(st_monotonic_ms() - t0 < 100);

    /* A finished operation is answered at once, however long the wait asked for. */
    work(fx, "w1");
    t0 = st_monotonic_ms();
    assert_st_ok(op_service_get(&fx->op_svc, FIXTURE_OWNER, op.id, 1500, &got, &err), err);
    took = st_monotonic_ms() - t0;
    assert_int_equal(got.status, OP_STATUS_SUCCEEDED);
    if (took > 500)
        fail_msg("a finished operation took %lld ms to answer", (long long)took);

    /* Another owner's operation is not there, wait or not. */
    assert_st_err(op_service_get(&fx->op_svc, FIXTURE_OTHER_OWNER, op.id, 0, &got, &err), err,
                  ST_ERR_NOT_FOUND, "");
}

static void
test_op_service__list_is_scoped_and_filtered(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct op_filter f;
    struct op_list list = {0};
    struct operation a_op, b_op;
    struct vm a, b;

    accept_create(fx, "a", &a, &a_op);
    /* Listed by (created_at, id): a later millisecond keeps the order certain. */
    st_sleep_ms(2);
    accept_create(fx, "b", &b, &b_op);

    memset(&f, 0, sizeof(f));
    assert_st_ok(op_service_list(&fx->op_svc, FIXTURE_OWNER, &f, &list, &err), err);
    assert_int_equal(list.count, 2);
    assert_string_equal(list.items[0].id, a_op.id);
    assert_string_equal(list.items[1].id, b_op.id);
    op_list_release(&list);

    st_strlcpy(f.target_id, b.id, sizeof(f.target_id));
    assert_st_ok(op_service_list(&fx->op_svc, FIXTURE_OWNER, &f, &list, &err), err);
    assert_int_equal(list.count, 1);
    assert_string_equal(list.items[0].id, b_op.id);
    op_list_release(&list);

    work(fx, "w1");
    memset(&f, 0, sizeof(f));
    f.has_status = true;
    f.status = OP_STATUS_QUEUED;
    assert_st_ok(op_service_list(&fx->op_svc, FIXTURE_OWNER, &f, &list, &err), err);
    assert_int_equal(list.count, 1);
    assert_string_equal(list.items[0].id, b_op.id);
    op_list_release(&list);

    memset(&f, 0, sizeof(f));
    assert_st_ok(op_service_list(&fx->op_svc, FIXTURE_OTHER_OWNER, &f, &list, &err), err);
    assert_int_equal(list.count, 0);
    op_list_release(&list);
}

/* FIXTURE_OWNER as a user with @limits, whose quota the operation service looks up itself. */
struct owner_quota {
    struct user_repo users;
    struct user_service svc;
};

static void
owner_quota_set(struct fixture *fx, struct owner_quota *q, const struct quota *limits)
{
    struct st_error err = {0};
    struct user owner;

    assert_st_ok(user_repo_sqlite_open(fx->db, &q->users, &err), err);
    memset(&owner, 0, sizeof(owner));
    st_strlcpy(owner.id, FIXTURE_OWNER, sizeof(owner.id));
    st_strlcpy(owner.email, "owner@example.test", sizeof(owner.email));
    st_strlcpy(owner.password_hash, "unused", sizeof(owner.password_hash));
    owner.status = USER_STATUS_ACTIVE;
    owner.roles = USER_ROLE_USER;
    owner.quota = *limits;
    owner.revision = 1;
    owner.created_at = owner.updated_at = st_now_ms();
    assert_st_ok(user_repo_insert(&q->users, &owner, &err), err);
    memset(&q->svc, 0, sizeof(q->svc));
    q->svc.users = &q->users;
    q->svc.cfg.default_quota = (struct quota){-1, -1, -1, -1};
    fx->op_svc.users = &q->svc;
}

static void
owner_quota_drop(struct fixture *fx, struct owner_quota *q)
{
    fx->op_svc.users = NULL;
    user_repo_close(&q->users);
}

static void
test_op_service__create_over_quota_leaves_nothing(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct quota limits = {.max_vms = 1, .max_vcpus = -1, .max_memory_mib = -1, .max_disk_gib = -1};
    struct quota_violation v;
    struct vm_create_req req;
    struct vm_filter vf = {.limit = 10};
    struct vm_list vms = {0};
    struct op_filter of;
    struct op_list ops = {0};
    struct operation op;
    struct vm vm;

    struct owner_quota owner;

    owner_quota_set(fx, &owner, &limits);
    fixture_create_req(fx, "one", &req);
    assert_st_ok(op_service_create_vm(&fx->op_svc, FIXTURE_OWNER, &req, &vm, &op, &v, &err), err);
    fixture_create_req(fx, "two", &req);
    memset(&v, 0, sizeof(v));
    assert_st_err(op_service_create_vm(&fx->op_svc, FIXTURE_OWNER, &req, &vm, &op, &v, &err), err,
                  ST_ERR_FORBIDDEN, "");
    assert_non_null(v.quota);
    assert_string_equal(v.quota, "max_vms");
    assert_int_equal(v.limit, 1);
    assert_int_equal(v.in_use, 1);

    assert_st_ok(vm_repo_list(&fx->vms_real, NULL, &vf, &vms, &err), err);
    assert_int_equal(vms.count, 1);
    assert_string_equal(vms.items[0].name, "one");
    vm_list_release(&vms);
    memset(&of, 0, sizeof(of));
    assert_st_ok(op_repo_list(&fx->ops, NULL, &of, &ops, &err), err);
    assert_int_equal(ops.count, 1);
    op_list_release(&ops);
    owner_quota_drop(fx, &owner);
}

static void
test_op_service__create_that_cannot_be_queued_takes_its_row_back(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct vm_filter vf = {.limit = 10};
    struct vm_list vms = {0};
    struct vm_create_req req;
    struct lossy_ops lossy;
    struct operation op;
    struct vm vm;

    lossy_init(&lossy, &fx->ops, 0);
    lossy.fail_insert = true;
    fx->op_svc.ops = &lossy.iface;
    fixture_create_req(fx, "unqueued", &req);
    assert_st_err(op_service_create_vm(&fx->op_svc, FIXTURE_OWNER, &req, &vm, &op, NULL, &err), err,
                  ST_ERR_UNAVAILABLE, "injected");
    fx->op_svc.ops = &fx->ops;
    assert_st_ok(vm_repo_list(&fx->vms_real, NULL, &vf, &vms, &err), err);
    assert_int_equal(vms.count, 0);
    vm_list_release(&vms);
    assert_idle(fx);
    /* The name is free again. */
    accept_create(fx, "unqueued", &vm, &op);
}

/* Worker "w1" stops right after @step of what is queued: its lease was taken. */
static void
work_until_lease_lost(struct fixture *fx, unsigned step)
{
    struct lossy_ops lossy;

    lossy_init(&lossy, &fx->ops, step);
    fx->op_svc.ops = &lossy.iface;
    work(fx, "w1");
    fx->op_svc.ops = &fx->ops;
    assert_int_equal(lossy.renews, step);
}

/* "w2" takes @op_id over once w1's lease has ended and finishes it. */
static void
take_over(struct fixture *fx, const char *op_id)
{
    struct operation op = op_stored(fx, op_id), unused;
    struct st_error err = {0};
    bool claimed = true;

    assert_int_equal(op.status, OP_STATUS_RUNNING);
    assert_string_equal(op.worker_id, "w1");
    assert_int_equal(op.attempts, 1);
    /* Nobody may take it while w1's lease lasts. */
    assert_st_ok(op_repo_claim(&fx->ops, "w2", op.lease_expires_at - 1, FIXTURE_LEASE_MS, &unused,
                               &claimed, &err),
                 err);
    assert_false(claimed);
    st_sleep_ms(FIXTURE_LEASE_MS + 20);
    work(fx, "w2");
    op = op_stored(fx, op_id);
    if (op.status != OP_STATUS_SUCCEEDED)
        fail_msg("the operation taken over ended %s: %s", op_status_name(op.status), op.error);
    assert_int_equal(op.attempts, 2);
    assert_string_equal(op.worker_id, "w2");
    assert_idle(fx);
}

static const char *const create_steps[] = {"disk", "define", "start", "finish"};

/* The row as a worker that stopped after create step @k (1-based) leaves it. */
static void
assert_create_stopped_at(struct fixture *fx, const char *id, unsigned k)
{
    static const enum vm_step steps[] = {VM_STEP_DISK, VM_STEP_DEFINED, VM_STEP_STARTED,
                                         VM_STEP_DONE};
    struct vm row = fx_stored(fx, id);

    assert_int_equal(row.step, steps[k - 1]);
    assert_int_equal(row.status, k == 4 ? VM_STATUS_RUNNING : VM_STATUS_CREATING);
    fx_assert_disk(fx, id);
    if (k == 1)
        fx_assert_no_domain(fx, id);
    else
        assert_domain_state(fx, id, k == 2 ? HV_STATE_SHUTOFF : HV_STATE_RUNNING);
}

static void
create_resumes_after(struct fixture *fx, unsigned k)
{
    struct operation op;
    struct vm vm, row;

    accept_create(fx, create_steps[k - 1], &vm, &op);
    work_until_lease_lost(fx, k);
    assert_create_stopped_at(fx, vm.id, k);
    take_over(fx, op.id);
    row = fx_stored(fx, vm.id);
    assert_int_equal(row.status, VM_STATUS_RUNNING);
    assert_int_equal(row.step, VM_STEP_DONE);
    assert_string_equal(row.fault, "");
    assert_domain_state(fx, vm.id, HV_STATE_RUNNING);
    fx_assert_disk(fx, vm.id);
    assert_int_equal(fixture_pool_volume_count(fx, fx->disk_pool), 1);
    assert_no_orphans(fx);
}

static void
test_op_service__create_resumes_after_stop_at_finish(void **state)
{
    create_resumes_after(*state, 4);
}

/* w1 made the VM but could not record the end: w2 finds it done, not failed. */
static void
test_op_service__create_taken_over_after_a_lost_finish_succeeds(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct lossy_ops lossy;
    bool worked = false;
    struct operation op;
    struct vm vm, row;

    accept_create(fx, "lost-create-finish", &vm, &op);
    lossy_init(&lossy, &fx->ops, 0);
    lossy.fail_finish = true;
    fx->op_svc.ops = &lossy.iface;
    assert_st_err(op_service_work_one(&fx->op_svc, "w1", &worked, &err), err, ST_ERR_CONFLICT,
                  "was lost");
    fx->op_svc.ops = &fx->ops;
    assert_true(worked);
    take_over(fx, op.id);
    row = fx_stored(fx, vm.id);
    assert_int_equal(row.status, VM_STATUS_RUNNING);
    assert_domain_state(fx, vm.id, HV_STATE_RUNNING);
    assert_no_orphans(fx);
}

static void
test_op_service__create_resumes_after_stop_at_disk(void **state)
{
    create_resumes_after(*state, 1);
}

static void
test_op_service__create_resumes_after_stop_at_define(void **state)
{
    create_resumes_after(*state, 2);
}

static void
test_op_service__create_resumes_after_stop_at_start(void **state)
{
    create_resumes_after(*state, 3);
}

static void
delete_resumes_after(struct fixture *fx, unsigned k)
{
    struct st_error err = {0};
    struct operation op;
    struct vm vm, marked, bystander;

    create_running(fx, "bystander", &bystander);
    create_running(fx, "doomed", &vm);
    assert_st_ok(op_service_delete_vm(&fx->op_svc, FIXTURE_OWNER, vm.id, 0, &marked, &op, &err),
                 err);
    work_until_lease_lost(fx, k);
    /* Stopped after destroy, undefine or disk: the row waits in deleting. */
    assert_int_equal(fx_stored(fx, vm.id).status, VM_STATUS_DELETING);
    if (k == 1)
        assert_domain_state(fx, vm.id, HV_STATE_SHUTOFF);
    else
        fx_assert_no_domain(fx, vm.id);
    if (k < 3)
        fx_assert_disk(fx, vm.id);
    else
        fx_assert_no_disk(fx, vm.id);
    take_over(fx, op.id);
    assert_no_row(fx, vm.id);
    fx_assert_no_domain(fx, vm.id);
    fx_assert_no_disk(fx, vm.id);
    assert_only_left(fx, &bystander);
}

/* w1 removed everything, row included, but could not record the end: w2 finds it done. */
static void
test_op_service__delete_taken_over_after_a_lost_finish_succeeds(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct lossy_ops lossy;
    bool worked = false;
    struct operation op;
    struct vm vm, marked, bystander;

    create_running(fx, "bystander", &bystander);
    create_running(fx, "lost-finish", &vm);
    assert_st_ok(op_service_delete_vm(&fx->op_svc, FIXTURE_OWNER, vm.id, 0, &marked, &op, &err),
                 err);
    lossy_init(&lossy, &fx->ops, 0);
    lossy.fail_finish = true;
    fx->op_svc.ops = &lossy.iface;
    assert_st_err(op_service_work_one(&fx->op_svc, "w1", &worked, &err), err, ST_ERR_CONFLICT,
                  "was lost");
    fx->op_svc.ops = &fx->ops;
    assert_true(worked);
    assert_no_row(fx, vm.id);
    take_over(fx, op.id);
    assert_no_row(fx, vm.id);
    fx_assert_no_domain(fx, vm.id);
    fx_assert_no_disk(fx, vm.id);
    assert_only_left(fx, &bystander);
}

static void
test_op_service__delete_resumes_after_stop_at_destroy(void **state)
{
    delete_resumes_after(*state, 1);
}

static void
test_op_service__delete_resumes_after_stop_at_undefine(void **state)
{
    delete_resumes_after(*state, 2);
}

static void
test_op_service__delete_resumes_after_stop_at_disk(void **state)
{
    delete_resumes_after(*state, 3);
}

/* Put VM @id in @want at once, by actions without operations. */
static void
bring_to(struct fixture *fx, const char *id, enum vm_status want)
{
    struct st_error err = {0};
    struct vm got;

    assert_st_ok(vm_service_get(&fx->vm_svc, NULL, id, &got, &err), err);
    if (got.status == want)
        return;
    if (want == VM_STATUS_STOPPED) {
        assert_st_ok(vm_service_action(&fx->vm_svc, NULL, id, VM_ACTION_FORCE_STOP, &got, &err),
                     err);
        return;
    }
    if (got.status == VM_STATUS_STOPPED)
        assert_st_ok(vm_service_action(&fx->vm_svc, NULL, id, VM_ACTION_START, &got, &err), err);
    if (want == VM_STATUS_PAUSED && got.status != VM_STATUS_PAUSED)
        assert_st_ok(vm_service_action(&fx->vm_svc, NULL, id, VM_ACTION_PAUSE, &got, &err), err);
    if (want == VM_STATUS_RUNNING && got.status == VM_STATUS_PAUSED)
        assert_st_ok(vm_service_action(&fx->vm_svc, NULL, id, VM_ACTION_RESUME, &got, &err), err);
    assert_int_equal(got.status, want);
}

/* Accept @action on @vm_id (a resize toggles vcpus between 1 and 2). */
static void
accept_action(struct fixture *fx, const char *vm_id, enum vm_action action, struct operation *op)
{
    struct quota_violation v = {0};
    struct st_error err = {0};
    struct vm_patch_req patch;
    bool queued = false;
    struct vm vm;

    if (action != VM_ACTION_RESIZE) {
        assert_st_ok(
            op_service_action_vm(&fx->op_svc, FIXTURE_OWNER, vm_id, action, 0, &vm, op, &err), err);
        return;
    }
    memset(&patch, 0, sizeof(patch));
    patch.has_vcpus = true;
    patch.vcpus = fx_stored(fx, vm_id).vcpus == 1 ? 2 : 1;
    assert_st_ok(op_service_patch_vm(&fx->op_svc, FIXTURE_OWNER, vm_id, &patch, 0, &vm, op, &queued,
                                     &v, &err),
                 err);
    assert_true(queued);
    /* The sizes are the row's before any domain holds them. */
    assert_int_equal(fx_stored(fx, vm_id).vcpus, patch.vcpus);
}

static const struct {
    enum vm_action action;
    enum vm_status from, to;
    enum hv_state domain;
} action_cases[] = {
    {VM_ACTION_START, VM_STATUS_STOPPED, VM_STATUS_RUNNING, HV_STATE_RUNNING},
    {VM_ACTION_STOP, VM_STATUS_RUNNING, VM_STATUS_STOPPED, HV_STATE_SHUTOFF},
    {VM_ACTION_FORCE_STOP, VM_STATUS_RUNNING, VM_STATUS_STOPPED, HV_STATE_SHUTOFF},
    {VM_ACTION_REBOOT, VM_STATUS_RUNNING, VM_STATUS_RUNNING, HV_STATE_RUNNING},
    {VM_ACTION_PAUSE, VM_STATUS_RUNNING, VM_STATUS_PAUSED, HV_STATE_PAUSED},
    {VM_ACTION_RESUME, VM_STATUS_PAUSED, VM_STATUS_RUNNING, HV_STATE_RUNNING},
    {VM_ACTION_RESIZE, VM_STATUS_STOPPED, VM_STATUS_STOPPED, HV_STATE_SHUTOFF},
};

static void
test_op_service__actions_are_accepted_then_worked(void **state)
{
    struct fixture *fx = *state;
    struct vm_event_list list = {0};
    struct operation op, done;
    struct vm vm, row;
    size_t i;

    create_running(fx, "acted-on", &vm);
    for (i = 0; i < ST_ARRAY_LEN(action_cases); i++) {
        bring_to(fx, vm.id, action_cases[i].from);
        row = fx_stored(fx, vm.id);
        accept_action(fx, vm.id, action_cases[i].action, &op);
        assert_int_equal(op.status, OP_STATUS_QUEUED);
        assert_string_equal(op_kind_name(op.kind) + 3, vm_action_name(action_cases[i].action));
        /* Accepting moved the row on, and did nothing to the domain yet. */
        assert_true(fx_stored(fx, vm.id).revision > row.revision);
        work(fx, "w1");
        done = op_stored(fx, op.id);
        if (done.status != OP_STATUS_SUCCEEDED)
            fail_msg("%s ended %s: %s", vm_action_name(action_cases[i].action),
                     op_status_name(done.status), done.error);
        assert_int_equal(fx_stored(fx, vm.id).status, action_cases[i].to);
        assert_domain_state(fx, vm.id, action_cases[i].domain);
        assert_idle(fx);
    }
    events(fx, FIXTURE_OWNER, vm.id, &list);
    /* stop and force-stop, each once */
    assert_int_equal(count_events(&list, VM_EVENT_INFO, "stop accepted"), 2);
    assert_int_equal(count_events(&list, VM_EVENT_INFO, "force-stop accepted"), 1);
    assert_int_equal(count_events(&list, VM_EVENT_STATE_CHANGE, "stop: now stopped"), 2);
    assert_int_equal(count_events(&list, VM_EVENT_STATE_CHANGE, "pause: now paused"), 1);
    assert_int_equal(count_events(&list, VM_EVENT_STATE_CHANGE, "resized: "), 1);
    vm_event_list_release(&list);
    assert_no_orphans(fx);
}

static void
test_op_service__actions_resume_after_a_stop_at_each_step(void **state)
{
    struct fixture *fx = *state;
    const char *const *steps;
    struct operation op;
    unsigned k;
    struct vm vm;
    size_t i;

    create_running(fx, "resumed", &vm);
    for (i = 0; i < ST_ARRAY_LEN(action_cases); i++) {
        steps = vm_action_steps(action_cases[i].action);
        for (k = 1; steps[k - 1]; k++) {
            bring_to(fx, vm.id, action_cases[i].from);
            accept_action(fx, vm.id, action_cases[i].action, &op);
            work_until_lease_lost(fx, k);
            take_over(fx, op.id);
            if (fx_stored(fx, vm.id).status != action_cases[i].to)
                fail_msg("%s stopped after step %s ended with the VM %s",
                         vm_action_name(action_cases[i].action), steps[k - 1],
                         vm_status_name(fx_stored(fx, vm.id).status));
            assert_domain_state(fx, vm.id, action_cases[i].domain);
        }
    }
    assert_no_orphans(fx);
}

static void
test_op_service__action_that_cannot_apply_is_refused_at_once(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct operation op, second;
    struct vm vm, got;
    struct vm_patch_req patch;
    struct quota_violation v = {0};
    bool queued = true;

    create_running(fx, "refused", &vm);
    assert_st_err(op_service_action_vm(&fx->op_svc, FIXTURE_OWNER, vm.id, VM_ACTION_START, 0, &got,
                                       &op, &err),
                  err, ST_ERR_CONFLICT, "is running; cannot start");
    assert_st_err(op_service_action_vm(&fx->op_svc, FIXTURE_OWNER, vm.id, VM_ACTION_RESUME, 0, &got,
                                       &op, &err),
                  err, ST_ERR_CONFLICT, "is running; cannot resume");
    assert_idle(fx);

    /* One operation per VM: a second is refused naming the first; a rename is no operation. */
    assert_st_ok(
        op_service_action_vm(&fx->op_svc, FIXTURE_OWNER, vm.id, VM_ACTION_STOP, 0, &got, &op, &err),
        err);
    assert_st_err(op_service_action_vm(&fx->op_svc, FIXTURE_OWNER, vm.id, VM_ACTION_FORCE_STOP, 0,
                                       &got, &second, &err),
                  err, ST_ERR_CONFLICT, op.id);
    assert_st_err(op_service_delete_vm(&fx->op_svc, FIXTURE_OWNER, vm.id, 0, &got, &second, &err),
                  err, ST_ERR_CONFLICT, op.id);
    memset(&patch, 0, sizeof(patch));
    patch.has_name = true;
    st_strlcpy(patch.name, "renamed-meanwhile", sizeof(patch.name));
    assert_st_ok(op_service_patch_vm(&fx->op_svc, FIXTURE_OWNER, vm.id, &patch, 0, &got, &second,
                                     &queued, &v, &err),
                 err);
    assert_false(queued);
    /* Another owner sees no VM at all. */
    assert_st_err(op_service_action_vm(&fx->op_svc, FIXTURE_OTHER_OWNER, vm.id, VM_ACTION_STOP, 0,
                                       &got, &second, &err),
                  err, ST_ERR_NOT_FOUND, "");
    work(fx, "w1");
    /* The worker's outcome did not undo the rename made while it ran. */
    assert_string_equal(fx_stored(fx, vm.id).name, "renamed-meanwhile");
    assert_int_equal(fx_stored(fx, vm.id).status, VM_STATUS_STOPPED);
}

static void
test_op_service__if_match_guards_every_accept(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct quota_violation v = {0};
    struct vm_patch_req patch;
    struct operation op;
    bool queued = true;
    struct vm vm, got;
    uint64_t rev;

    create_running(fx, "guarded", &vm);
    rev = fx_stored(fx, vm.id).revision;
    memset(&patch, 0, sizeof(patch));
    patch.has_name = true;
    st_strlcpy(patch.name, "guarded-2", sizeof(patch.name));
    assert_st_err(op_service_patch_vm(&fx->op_svc, FIXTURE_OWNER, vm.id, &patch, rev + 1, &got, &op,
                                      &queued, &v, &err),
                  err, ST_ERR_PRECONDITION, "If-Match");
    assert_st_err(op_service_action_vm(&fx->op_svc, FIXTURE_OWNER, vm.id, VM_ACTION_STOP, rev - 1,
                                       &got, &op, &err),
                  err, ST_ERR_PRECONDITION, "If-Match");
    assert_st_err(op_service_delete_vm(&fx->op_svc, FIXTURE_OWNER, vm.id, rev + 7, &got, &op, &err),
                  err, ST_ERR_PRECONDITION, "If-Match");
    assert_int_equal(fx_stored(fx, vm.id).revision, rev);
    assert_string_equal(fx_stored(fx, vm.id).name, "guarded");
    assert_idle(fx);

    assert_st_ok(op_service_patch_vm(&fx->op_svc, FIXTURE_OWNER, vm.id, &patch, rev, &got, &op,
                                     &queued, &v, &err),
                 err);
    assert_false(queued);
    assert_int_equal(got.revision, rev + 1);
    assert_int_equal(fx_stored(fx, vm.id).revision, rev + 1);
    /* The revision it had is stale now. */
    assert_st_err(op_service_action_vm(&fx->op_svc, FIXTURE_OWNER, vm.id, VM_ACTION_STOP, rev, &got,
                                       &op, &err),
                  err, ST_ERR_PRECONDITION, "If-Match");
    assert_st_ok(op_service_action_vm(&fx->op_svc, FIXTURE_OWNER, vm.id, VM_ACTION_STOP, rev + 1,
                                      &got, &op, &err),
                 err);
    work(fx, "w1");
}

static void
test_op_service__resize_over_quota_writes_nothing(void **state)
{
    struct fixture *fx = *state;
    struct quota limits = {.max_vms = -1, .max_vcpus = 2, .max_memory_mib = -1, .max_disk_gib = -1};
    struct st_error err = {0};
    struct quota_violation v = {0};
    struct owner_quota owner;
    struct vm_patch_req patch;
    struct operation op;
    bool queued = false;
    struct vm vm, got, row;

    create_running(fx, "grows", &vm);
    bring_to(fx, vm.id, VM_STATUS_STOPPED);
    owner_quota_set(fx, &owner, &limits);
    row = fx_stored(fx, vm.id);
    memset(&patch, 0, sizeof(patch));
    patch.has_vcpus = true;
    patch.vcpus = 3;
    assert_st_err(op_service_patch_vm(&fx->op_svc, FIXTURE_OWNER, vm.id, &patch, 0, &got, &op,
                                      &queued, &v, &err),
                  err, ST_ERR_FORBIDDEN, "max_vcpus");
    assert_non_null(v.quota);
    assert_int_equal(fx_stored(fx, vm.id).vcpus, row.vcpus);
    assert_int_equal(fx_stored(fx, vm.id).revision, row.revision);
    assert_idle(fx);
    patch.vcpus = 2;
    assert_st_ok(op_service_patch_vm(&fx->op_svc, FIXTURE_OWNER, vm.id, &patch, 0, &got, &op,
                                     &queued, &v, &err),
                 err);
    assert_true(queued);
    work(fx, "w1");
    assert_int_equal(op_stored(fx, op.id).status, OP_STATUS_SUCCEEDED);
    assert_int_equal(fx_stored(fx, vm.id).vcpus, 2);
    owner_quota_drop(fx, &owner);
}

static void
test_op_service__delete_is_accepted_while_the_hypervisor_is_down(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct operation op;
    struct vm vm, got;

    create_running(fx, "unreachable", &vm);
    fault_hypervisor_fail(&fx->hv, FAULT_HV_STATE, 1, ST_ERR_UNAVAILABLE);
    assert_st_err(
        op_service_action_vm(&fx->op_svc, FIXTURE_OWNER, vm.id, VM_ACTION_STOP, 0, &got, &op, &err),
        err, ST_ERR_UNAVAILABLE, "");
    fault_hypervisor_fail(&fx->hv, FAULT_HV_STATE, 1, ST_ERR_UNAVAILABLE);
    assert_st_ok(op_service_delete_vm(&fx->op_svc, FIXTURE_OWNER, vm.id, 0, &got, &op, &err), err);
    assert_int_equal(got.status, VM_STATUS_DELETING);
    fault_hypervisor_reset(&fx->hv);
    work(fx, "w1");
    assert_no_row(fx, vm.id);
}

static void
test_op_service__resize_of_a_running_vm_is_refused(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct quota_violation v = {0};
    struct vm_patch_req patch;
    struct operation op;
    bool queued = false;
    struct vm vm, got;

    create_running(fx, "too-big", &vm);
    memset(&patch, 0, sizeof(patch));
    patch.has_vcpus = true;
    patch.vcpus = 4;
    assert_st_err(op_service_patch_vm(&fx->op_svc, FIXTURE_OWNER, vm.id, &patch, 0, &got, &op,
                                      &queued, &v, &err),
                  err, ST_ERR_CONFLICT, "is running; stop it");
    assert_int_equal(fx_stored(fx, vm.id).vcpus, vm.vcpus);
    assert_idle(fx);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, fixture_setup, fixture_teardown)
        T(test_op_service__create_is_accepted_then_worked_to_running),
        T(test_op_service__delete_is_queued_once_and_worked_away),
        T(test_op_service__create_failing_at_define_ends_failed),
        T(test_op_service__get_waits_for_the_end),
        T(test_op_service__list_is_scoped_and_filtered),
        T(test_op_service__create_over_quota_leaves_nothing),
        T(test_op_service__create_that_cannot_be_queued_takes_its_row_back),
        T(test_op_service__create_resumes_after_stop_at_disk),
        T(test_op_service__create_resumes_after_stop_at_define),
        T(test_op_service__create_resumes_after_stop_at_start),
        T(test_op_service__create_resumes_after_stop_at_finish),
        T(test_op_service__create_taken_over_after_a_lost_finish_succeeds),
        T(test_op_service__delete_resumes_after_stop_at_destroy),
        T(test_op_service__delete_resumes_after_stop_at_undefine),
        T(test_op_service__delete_resumes_after_stop_at_disk),
        T(test_op_service__delete_taken_over_after_a_lost_finish_succeeds),
        T(test_op_service__actions_are_accepted_then_worked),
        T(test_op_service__actions_resume_after_a_stop_at_each_step),
        T(test_op_service__action_that_cannot_apply_is_refused_at_once),
        T(test_op_service__if_match_guards_every_accept),
        T(test_op_service__resize_of_a_running_vm_is_refused),
        T(test_op_service__delete_is_accepted_while_the_hypervisor_is_down),
        T(test_op_service__resize_over_quota_writes_nothing),
#undef T
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
