/*
 * test_ops.c - operations and VM events, on the store named by
 * STRATUS_TEST_STORE (contract/support/store_fixture.h), through the
 * repository interfaces only; the claim also against other processes with
 * stores of their own on the same database.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "contract/support/contract.h"
#include "util/mem.h"

#define OWNER_A "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
#define OWNER_B "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
#define VM_1 "11111111-1111-4111-8111-111111111111"
#define VM_2 "22222222-2222-4222-8222-222222222222"
#define VM_3 "33333333-3333-4333-8333-333333333333"
#define NOBODY "99999999-9999-4999-8999-999999999999"

/* The concurrent claim: processes, and operations they share out. */
#define CLAIMERS 4
#define CLAIM_OPS 200

/* A queued operation; a NULL id is a fresh one. */
static struct operation
make_op(const char *id, const char *target, const char *owner, int64_t created_at)
{
    struct operation op;

    memset(&op, 0, sizeof(op));
    if (id)
        snprintf(op.id, sizeof(op.id), "%s", id);
    else
        st_uuid_generate(op.id);
    op.kind = OP_KIND_VM_CREATE;
    snprintf(op.target_id, sizeof(op.target_id), "%s", target);
    snprintf(op.owner_id, sizeof(op.owner_id), "%s", owner);
    op.status = OP_STATUS_QUEUED;
    op.created_at = created_at;
    op.revision = 1;
    return op;
}

static void
insert_op(struct store_fixture *fx, const struct operation *op)
{
    struct st_error err = {0};

    assert_st_ok(op_repo_insert(&fx->store.ops, op, &err), err);
}

/* Claim one operation, which must be there. */
static struct operation
claim_one(struct op_repo *repo, const char *worker, int64_t now, int64_t lease)
{
    struct st_error err = {0};
    struct operation op;
    bool claimed = false;

    assert_st_ok(op_repo_claim(repo, worker, now, lease, &op, &claimed, &err), err);
    assert_true(claimed);
    return op;
}

static void
test_ops__insert_get_list_scoped(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct operation a1 = make_op(NULL, VM_1, OWNER_A, 1000);
    struct operation a2 = make_op(NULL, VM_2, OWNER_A, 2000);
    struct operation a3 = make_op(NULL, VM_3, OWNER_A, 3000);
    struct operation b1 = make_op(NULL, NOBODY, OWNER_B, 1500);
    struct op_filter f = {0};
    struct op_list list = {0};
    struct operation got;

    a2.kind = OP_KIND_VM_DELETE;
    insert_op(fx, &a3);
    insert_op(fx, &a1);
    insert_op(fx, &a2);
    insert_op(fx, &b1);

    assert_st_ok(op_repo_get(&fx->store.ops, OWNER_A, a2.id, &got, &err), err);
    assert_memory_equal(&got, &a2, sizeof(got));
    assert_st_ok(op_repo_get(&fx->store.ops, NULL, b1.id, &got, &err), err);
    assert_memory_equal(&got, &b1, sizeof(got));
    /* Another owner's operation is one that does not exist. */
    assert_st_err(op_repo_get(&fx->store.ops, OWNER_B, a1.id, &got, &err), err, ST_ERR_NOT_FOUND,
                  "no operation '");

    /* Oldest first, within the owner's scope; everything unscoped. */
    assert_st_ok(op_repo_list(&fx->store.ops, OWNER_A, &f, &list, &err), err);
    assert_int_equal(list.count, 3);
    assert_false(list.more);
    assert_string_equal(list.items[0].id, a1.id);
    assert_string_equal(list.items[1].id, a2.id);
    assert_string_equal(list.items[2].id, a3.id);
    assert_int_equal(list.items[1].kind, OP_KIND_VM_DELETE);
    op_list_release(&list);
    assert_st_ok(op_repo_list(&fx->store.ops, NULL, &f, &list, &err), err);
    assert_int_equal(list.count, 4);
    assert_string_equal(list.items[1].id, b1.id);
    op_list_release(&list);
    assert_null(list.items);

    /* By target: another owner's target shows nothing. */
    strcpy(f.target_id, VM_2);
    assert_st_ok(op_repo_list(&fx->store.ops, OWNER_A, &f, &list, &err), err);
    assert_int_equal(list.count, 1);
    assert_string_equal(list.items[0].id, a2.id);
    op_list_release(&list);
    strcpy(f.target_id, NOBODY);
    assert_st_ok(op_repo_list(&fx->store.ops, OWNER_A, &f, &list, &err), err);
    assert_int_equal(list.count, 0);
    op_list_release(&list);

    /* By status. */
    f.target_id[0] = '\0';
    f.has_status = true;
    f.status = OP_STATUS_RUNNING;
    assert_st_ok(op_repo_list(&fx->store.ops, OWNER_A, &f, &list, &err), err);
    assert_int_equal(list.count, 0);
    op_list_release(&list);
    f.status = OP_STATUS_QUEUED;
    assert_st_ok(op_repo_list(&fx->store.ops, OWNER_A, &f, &list, &err), err);
    assert_int_equal(list.count, 3);
    op_list_release(&list);

    /* Pages after a marker. */
    f.has_status = false;
    f.limit = 2;
    assert_st_ok(op_repo_list(&fx->store.ops, OWNER_A, &f, &list, &err), err);
    assert_int_equal(list.count, 2);
    assert_true(list.more);
    strcpy(f.marker, list.items[1].id);
    op_list_release(&list);
    assert_st_ok(op_repo_list(&fx->store.ops, OWNER_A, &f, &list, &err), err);
    assert_int_equal(list.count, 1);
    assert_false(list.more);
    assert_string_equal(list.items[0].id, a3.id);
    op_list_release(&list);
    strcpy(f.marker, b1.id);
    assert_st_err(op_repo_list(&fx->store.ops, OWNER_A, &f, &list, &err), err, ST_ERR_INVALID,
                  "names no operation");

    /* The same id twice, active or not. */
    assert_st_err(op_repo_insert(&fx->store.ops, &a1, &err), err, ST_ERR_CONFLICT,
                  "an operation with id '");
    a1.status = OP_STATUS_SUCCEEDED;
    assert_st_err(op_repo_insert(&fx->store.ops, &a1, &err), err, ST_ERR_CONFLICT,
                  "an operation with id '");
}

static void
test_ops__one_active_operation_per_target(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct operation first = make_op(NULL, VM_1, OWNER_A, 1000);
    struct operation second = make_op(NULL, VM_1, OWNER_A, 2000);
    struct operation other = make_op(NULL, VM_2, OWNER_A, 2000);
    struct operation got;
    char want[160];

    insert_op(fx, &first);
    snprintf(want, sizeof(want), "VM '%s' has operation '%s' in progress", VM_1, first.id);
    assert_st_err(op_repo_insert(&fx->store.ops, &second, &err), err, ST_ERR_CONFLICT, want);
    assert_int_equal(err.native, store_fixture_native_unique(fx->kind));
    insert_op(fx, &other);
    assert_st_ok(op_repo_active_for(&fx->store.ops, VM_1, &got, &err), err);
    assert_memory_equal(&got, &first, sizeof(got));

    /* Running counts as active too. */
    got = claim_one(&fx->store.ops, "w1", 5000, 1000);
    assert_string_equal(got.id, first.id);
    assert_st_err(op_repo_insert(&fx->store.ops, &second, &err), err, ST_ERR_CONFLICT, want);
    assert_st_ok(op_repo_active_for(&fx->store.ops, VM_1, &got, &err), err);
    assert_int_equal(got.status, OP_STATUS_RUNNING);

    /* Once it ended, the VM takes a new one. */
    assert_st_ok(
        op_repo_finish(&fx->store.ops, first.id, "w1", OP_STATUS_SUCCEEDED, NULL, 6000, &err), err);
    assert_st_err(op_repo_active_for(&fx->store.ops, VM_1, &got, &err), err, ST_ERR_NOT_FOUND,
                  "no operation in progress on VM '" VM_1 "'");
    insert_op(fx, &second);
    assert_st_ok(op_repo_active_for(&fx->store.ops, VM_1, &got, &err), err);
    assert_string_equal(got.id, second.id);
    assert_int_equal(
        contract_int(fx, "SELECT count(*) FROM operations WHERE target_id = '" VM_1 "'"), 2);
}

static void
test_ops__claim_takes_the_oldest_first(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct operation late = make_op(NULL, VM_1, OWNER_A, 3000);
    struct operation early = make_op(NULL, VM_2, OWNER_B, 1000);
    /* Equal times go by id. */
    struct operation mid_b = make_op("bbbbbbbb-0000-4000-8000-000000000000", VM_3, OWNER_A, 2000);
    struct operation mid_a = make_op("aaaaaaaa-0000-4000-8000-000000000000", NOBODY, OWNER_A, 2000);
    struct operation untouched;
    struct operation got;
    bool claimed = true;

    insert_op(fx, &late);
    insert_op(fx, &early);
    insert_op(fx, &mid_b);
    insert_op(fx, &mid_a);

    got = claim_one(&fx->store.ops, "worker-1", 10000, 30000);
    assert_string_equal(got.id, early.id);
    assert_int_equal(got.status, OP_STATUS_RUNNING);
    assert_string_equal(got.worker_id, "worker-1");
    assert_int_equal(got.lease_expires_at, 40000);
    assert_int_equal(got.started_at, 10000);
    assert_int_equal(got.attempts, 1);
    assert_int_equal(got.created_at, 1000);
    assert_string_equal(got.owner_id, OWNER_B);
    /* What claim answered is what is stored. */
    assert_st_ok(op_repo_get(&fx->store.ops, NULL, early.id, &untouched, &err), err);
    assert_memory_equal(&untouched, &got, sizeof(got));

    assert_string_equal(claim_one(&fx->store.ops, "worker-2", 10001, 30000).id, mid_a.id);
    assert_string_equal(claim_one(&fx->store.ops, "worker-1", 10002, 30000).id, mid_b.id);
    assert_string_equal(claim_one(&fx->store.ops, "worker-2", 10003, 30000).id, late.id);

    /* Nothing left: claimed is false and *out untouched. */
    memset(&got, 0x5a, sizeof(got));
    memset(&untouched, 0x5a, sizeof(untouched));
    assert_st_ok(op_repo_claim(&fx->store.ops, "worker-1", 10004, 30000, &got, &claimed, &err),
                 err);
    assert_false(claimed);
    assert_memory_equal(&got, &untouched, sizeof(got));

    /* Arguments that cannot make a lease. */
    assert_st_err(op_repo_claim(&fx->store.ops, "", 1, 1, &got, &claimed, &err), err,
                  ST_ERR_INVALID, "worker id");
    assert_st_err(op_repo_claim(&fx->store.ops, "w", 1, 0, &got, &claimed, &err), err,
                  ST_ERR_INVALID, "lease of 0 ms");
    assert_st_err(op_repo_claim(&fx->store.ops, "w", INT64_MAX, 1, &got, &claimed, &err), err,
                  ST_ERR_INVALID, "cannot be taken");
}

static void
test_ops__expired_lease_is_claimed_again(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct operation op = make_op(NULL, VM_1, OWNER_A, 1000);
    struct operation got;
    bool claimed = true;

    insert_op(fx, &op);
    got = claim_one(&fx->store.ops, "w1", 10000, 500);
    assert_int_equal(got.started_at, 10000);
    assert_st_ok(op_repo_renew(&fx->store.ops, op.id, "w1", 10500, "disk", &err), err);

    /* Still held: up to and at the end of the lease. */
    assert_st_ok(op_repo_claim(&fx->store.ops, "w2", 10400, 500, &got, &claimed, &err), err);
    assert_false(claimed);
    assert_st_ok(op_repo_claim(&fx->store.ops, "w2", 10500, 500, &got, &claimed, &err), err);
    assert_false(claimed);

    got = claim_one(&fx->store.ops, "w2", 10501, 500);
    assert_string_equal(got.id, op.id);
    assert_string_equal(got.worker_id, "w2");
    assert_int_equal(got.attempts, 2);
    assert_int_equal(got.started_at, 10000);
    assert_int_equal(got.lease_expires_at, 11001);
    assert_string_equal(got.step, "disk"); /* where w2 goes on from */
    assert_int_equal(got.status, OP_STATUS_RUNNING);

    /* The first worker lost it: neither its renew nor its finish lands. */
    assert_st_err(op_repo_renew(&fx->store.ops, op.id, "w1", 20000, "defined", &err), err,
                  ST_ERR_CONFLICT, "lease on operation '");
    assert_st_err(
        op_repo_finish(&fx->store.ops, op.id, "w1", OP_STATUS_SUCCEEDED, NULL, 20000, &err), err,
        ST_ERR_CONFLICT, "was lost");
    assert_st_ok(op_repo_get(&fx->store.ops, NULL, op.id, &got, &err), err);
    assert_string_equal(got.worker_id, "w2");
    assert_string_equal(got.step, "disk");
    assert_int_equal(got.lease_expires_at, 11001);
}

static void
test_ops__renew_and_finish_by_the_holder_only(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct operation op = make_op(NULL, VM_1, OWNER_A, 1000);
    struct operation queued = make_op(NULL, VM_2, OWNER_A, 9000);
    struct operation got;
    char want[160];

    insert_op(fx, &op);
    insert_op(fx, &queued);
    claim_one(&fx->store.ops, "w1", 10000, 1000);

    assert_st_ok(op_repo_renew(&fx->store.ops, op.id, "w1", 12000, "disk", &err), err);
    assert_st_ok(op_repo_get(&fx->store.ops, OWNER_A, op.id, &got, &err), err);
    assert_string_equal(got.step, "disk");
    assert_int_equal(got.lease_expires_at, 12000);
    /* NULL keeps the step. */
    assert_st_ok(op_repo_renew(&fx->store.ops, op.id, "w1", 13000, NULL, &err), err);
    assert_st_ok(op_repo_get(&fx->store.ops, OWNER_A, op.id, &got, &err), err);
    assert_string_equal(got.step, "disk");
    assert_int_equal(got.lease_expires_at, 13000);
    assert_st_err(
        op_repo_renew(&fx->store.ops, op.id, "w1", 13000, "a-step-name-longer-than-31-bytes", &err),
        err, ST_ERR_INVALID, "over 31 bytes");

    snprintf(want, sizeof(want), "lease on operation '%s' was lost", op.id);
    assert_st_err(op_repo_renew(&fx->store.ops, op.id, "w2", 14000, NULL, &err), err,
                  ST_ERR_CONFLICT, want);
    assert_st_err(op_repo_finish(&fx->store.ops, op.id, "w2", OP_STATUS_FAILED, "x", 14000, &err),
                  err, ST_ERR_CONFLICT, want);
    assert_st_err(op_repo_renew(&fx->store.ops, NOBODY, "w1", 14000, NULL, &err), err,
                  ST_ERR_NOT_FOUND, "no operation '" NOBODY "'");
    assert_st_err(op_repo_finish(&fx->store.ops, NOBODY, "w1", OP_STATUS_FAILED, "x", 14000, &err),
                  err, ST_ERR_NOT_FOUND, "no operation '" NOBODY "'");
    /* Queued is held by nobody. */
    assert_st_err(op_repo_renew(&fx->store.ops, queued.id, "w1", 14000, NULL, &err), err,
                  ST_ERR_CONFLICT, "was lost");
    assert_st_err(op_repo_finish(&fx->store.ops, op.id, "w1", OP_STATUS_RUNNING, NULL, 14000, &err),
                  err, ST_ERR_INVALID, "succeeded or failed, not 'running'");

    assert_st_ok(
        op_repo_finish(&fx->store.ops, op.id, "w1", OP_STATUS_FAILED, "disk full", 15000, &err),
        err);
    assert_st_ok(op_repo_get(&fx->store.ops, OWNER_A, op.id, &got, &err), err);
    assert_int_equal(got.status, OP_STATUS_FAILED);
    assert_string_equal(got.error, "disk full");
    assert_int_equal(got.finished_at, 15000);
    assert_int_equal(got.started_at, 10000);
    assert_string_equal(got.worker_id, "w1");
    assert_string_equal(got.step, "disk");

    /* Ended: held by nobody any more, and never claimed again. */
    assert_st_err(
        op_repo_finish(&fx->store.ops, op.id, "w1", OP_STATUS_SUCCEEDED, NULL, 16000, &err), err,
        ST_ERR_CONFLICT, want);
    assert_st_err(op_repo_renew(&fx->store.ops, op.id, "w1", 16000, NULL, &err), err,
                  ST_ERR_CONFLICT, want);
    got = claim_one(&fx->store.ops, "w3", 1000000, 1000);
    assert_string_equal(got.id, queued.id);

    /* Succeeded with "" or NULL leaves no error. */
    assert_st_ok(
        op_repo_finish(&fx->store.ops, queued.id, "w3", OP_STATUS_SUCCEEDED, "", 1000001, &err),
        err);
    assert_st_ok(op_repo_get(&fx->store.ops, OWNER_A, queued.id, &got, &err), err);
    assert_int_equal(got.status, OP_STATUS_SUCCEEDED);
    assert_string_equal(got.error, "");
    assert_int_equal(contract_int(fx, "SELECT count(*) FROM operations WHERE error IS NULL"), 1);
}

/* One process of the concurrent claim: claim and finish until nothing is left. */
static int
claimer(const char *url, int index, int gate)
{
    struct st_error err = {0};
    struct store store;
    struct operation op;
    char worker[ST_WORKER_ID_BUF];
    bool claimed = true;
    char c;
    int rc = 0;

    snprintf(worker, sizeof(worker), "claimer-%d", index);
    if (read(gate, &c, 1) < 0)
        return 3;
    if (store_open_ops(&store, url, &err) < 0) {
        fprintf(stderr, "%s: open: %s\n", worker, err.msg);
        return 1;
    }
    while (claimed && rc == 0) {
        if (op_repo_claim(&store.ops, worker, st_now_ms(), 60000, &op, &claimed, &err) < 0 ||
            (claimed && op_repo_finish(&store.ops, op.id, worker, OP_STATUS_SUCCEEDED, NULL,
                                       st_now_ms(), &err) < 0)) {
            fprintf(stderr, "%s: %s: %s\n", worker, st_err_code_name(err.code), err.msg);
            rc = 2;
        }
    }
    store_close(&store);
    return rc;
}

/* Several processes claim from one queue: each operation goes to exactly one of them. */
static void
test_ops__concurrent_claims_take_each_operation_once(void **state)
{
    struct store_fixture *fx = *state;
    struct operation op;
    pid_t pids[CLAIMERS];
    char target[ST_ID_BUF];
    int gate[2];
    int status;
    int i;

    for (i = 0; i < CLAIM_OPS; i++) {
        st_uuid_generate(target);
        op = make_op(NULL, target, i % 2 ? OWNER_A : OWNER_B, 1000 + i);
        insert_op(fx, &op);
    }
    assert_int_equal(pipe(gate), 0);
    for (i = 0; i < CLAIMERS; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            close(gate[1]);
            _exit(claimer(store_fixture_url(fx), i, gate[0]));
        }
    }
    close(gate[0]);
    close(gate[1]); /* opens the gate: every read returns 0 at once */
    for (i = 0; i < CLAIMERS; i++) {
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    /* Claimed once each (attempts 1), and ended by the worker that claimed it. */
    assert_int_equal(contract_int(fx, "SELECT count(*) FROM operations WHERE status = 'succeeded' "
                                      "AND attempts = 1 AND worker_id LIKE 'claimer-_' "
                                      "AND started_at > 0 AND finished_at >= started_at"),
                     CLAIM_OPS);
    assert_int_equal(contract_int(fx, "SELECT count(DISTINCT id) FROM operations"), CLAIM_OPS);
}

/* An event of @vm owned by @owner at @at; a NULL id is a fresh one. */
static struct vm_event
make_event(const char *id, const char *vm, const char *owner, int64_t at, const char *message)
{
    struct vm_event e;

    memset(&e, 0, sizeof(e));
    if (id)
        snprintf(e.id, sizeof(e.id), "%s", id);
    else
        st_uuid_generate(e.id);
    snprintf(e.vm_id, sizeof(e.vm_id), "%s", vm);
    snprintf(e.owner_id, sizeof(e.owner_id), "%s", owner);
    e.at = at;
    e.type = VM_EVENT_INFO;
    snprintf(e.message, sizeof(e.message), "%s", message);
    return e;
}

static void
test_ops__events_append_list_prune(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct vm_event e[5] = {
        make_event(NULL, VM_1, OWNER_A, 1000, "created"),
        make_event("bbbbbbbb-0000-4000-8000-000000000000", VM_1, OWNER_A, 2000, "disk made"),
        make_event("aaaaaaaa-0000-4000-8000-000000000000", VM_1, OWNER_A, 2000, "disk grown"),
        make_event(NULL, VM_1, OWNER_A, 3000, "started"),
        make_event(NULL, VM_1, OWNER_A, 4000, "stopped"),
    };
    struct vm_event other = make_event(NULL, VM_2, OWNER_A, 500, "elsewhere");
    struct vm_event_filter f = {0};
    struct vm_event_list list = {0};
    size_t n = 0;
    size_t i;

    e[0].type = VM_EVENT_STATE_CHANGE;
    strcpy(e[0].data, "{\"from\":\"creating\",\"to\":\"running\"}");
    e[3].type = VM_EVENT_WARNING;
    e[4].type = VM_EVENT_ERROR;
    for (i = ST_ARRAY_LEN(e); i-- > 0;)
        assert_st_ok(event_repo_append(&fx->store.events, &e[i], &err), err);
    assert_st_ok(event_repo_append(&fx->store.events, &other, &err), err);
    assert_st_err(event_repo_append(&fx->store.events, &other, &err), err, ST_ERR_CONFLICT,
                  "a VM event with id '");

    /* Oldest first by (at, id), whole rows; unscoped the same. */
    assert_st_ok(event_repo_list(&fx->store.events, OWNER_A, VM_1, &f, &list, &err), err);
    assert_int_equal(list.count, 5);
    assert_false(list.more);
    assert_memory_equal(&list.items[0], &e[0], sizeof(e[0]));
    assert_memory_equal(&list.items[1], &e[2], sizeof(e[0]));
    assert_memory_equal(&list.items[2], &e[1], sizeof(e[0]));
    assert_memory_equal(&list.items[3], &e[3], sizeof(e[0]));
    assert_memory_equal(&list.items[4], &e[4], sizeof(e[0]));
    vm_event_list_release(&list);
    assert_st_ok(event_repo_list(&fx->store.events, NULL, VM_1, &f, &list, &err), err);
    assert_int_equal(list.count, 5);
    vm_event_list_release(&list);

    /* Another owner sees none; an unknown VM has none. */
    assert_st_ok(event_repo_list(&fx->store.events, OWNER_B, VM_1, &f, &list, &err), err);
    assert_int_equal(list.count, 0);
    vm_event_list_release(&list);
    assert_st_ok(event_repo_list(&fx->store.events, OWNER_A, VM_3, &f, &list, &err), err);
    assert_int_equal(list.count, 0);
    vm_event_list_release(&list);

    /* Pages after a marker, which must be an event in scope. */
    f.limit = 2;
    assert_st_ok(event_repo_list(&fx->store.events, OWNER_A, VM_1, &f, &list, &err), err);
    assert_int_equal(list.count, 2);
    assert_true(list.more);
    assert_string_equal(list.items[1].id, e[2].id);
    vm_event_list_release(&list);
    strcpy(f.marker, e[2].id);
    assert_st_ok(event_repo_list(&fx->store.events, OWNER_A, VM_1, &f, &list, &err), err);
    assert_int_equal(list.count, 2);
    assert_true(list.more);
    assert_string_equal(list.items[0].id, e[1].id);
    assert_string_equal(list.items[1].id, e[3].id);
    vm_event_list_release(&list);
    assert_st_err(event_repo_list(&fx->store.events, OWNER_B, VM_1, &f, &list, &err), err,
                  ST_ERR_INVALID, "marker '");
    strcpy(f.marker, NOBODY);
    assert_st_err(event_repo_list(&fx->store.events, OWNER_A, VM_1, &f, &list, &err), err,
                  ST_ERR_INVALID, "marker '" NOBODY "' names no VM event");

    /* Older than 2000 goes (the other VM's too), 2000 itself stays. */
    assert_st_ok(event_repo_prune(&fx->store.events, 2000, &n, &err), err);
    assert_int_equal(n, 2);
    memset(&f, 0, sizeof(f));
    assert_st_ok(event_repo_list(&fx->store.events, OWNER_A, VM_1, &f, &list, &err), err);
    assert_int_equal(list.count, 4);
    assert_string_equal(list.items[0].id, e[2].id);
    vm_event_list_release(&list);
    assert_st_ok(event_repo_prune(&fx->store.events, 2000, &n, &err), err);
    assert_int_equal(n, 0);
    assert_int_equal(contract_int(fx, "SELECT count(*) FROM vm_events WHERE data IS NULL"), 4);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        CONTRACT_TEST(test_ops__insert_get_list_scoped),
        CONTRACT_TEST(test_ops__one_active_operation_per_target),
        CONTRACT_TEST(test_ops__claim_takes_the_oldest_first),
        CONTRACT_TEST(test_ops__expired_lease_is_claimed_again),
        CONTRACT_TEST(test_ops__renew_and_finish_by_the_holder_only),
        CONTRACT_TEST(test_ops__concurrent_claims_take_each_operation_once),
        CONTRACT_TEST(test_ops__events_append_list_prune),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
