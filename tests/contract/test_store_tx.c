/*
 * test_store_tx.c - one transaction across repositories (store_tx.h), on
 * the store named by STRATUS_TEST_STORE (contract/support/store_fixture.h):
 * a VM row and its operation are written together or not at all; a
 * method that fails inside dooms the whole; levels nest.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "contract/support/contract.h"
#include "contract/support/rows.h"
#include "util/ids.h"
#include "util/mem.h"

#define OWNER_A "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
#define IMAGE_1 "11111111-1111-4111-8111-111111111111"

/* The create operation of @vm. */
static struct operation
make_create_op(const struct vm *vm)
{
    struct operation op;

    memset(&op, 0, sizeof(op));
    st_uuid_generate(op.id);
    op.kind = OP_KIND_VM_CREATE;
    memcpy(op.target_id, vm->id, ST_ID_BUF);
    memcpy(op.owner_id, vm->owner_id, ST_ID_BUF);
    op.status = OP_STATUS_QUEUED;
    op.created_at = vm->created_at;
    op.revision = 1;
    return op;
}

/* Whether @store holds VM @vm_id and operation @op_id: 0 neither, 1 the VM, 2 the op, 3 both. */
static int
held(struct store *store, const char *vm_id, const char *op_id)
{
    struct st_error err = {0};
    struct operation op;
    struct vm vm;
    int found = 0;

    if (vm_repo_get(&store->vms, NULL, vm_id, &vm, &err) == 0)
        found |= 1;
    else if (err.code != ST_ERR_NOT_FOUND)
        fail_msg("[%s] read VM '%s': %s", store_fixture_env_name(), vm_id, err.msg);
    if (op_repo_get(&store->ops, NULL, op_id, &op, &err) == 0)
        found |= 2;
    else if (err.code != ST_ERR_NOT_FOUND)
        fail_msg("[%s] read operation '%s': %s", store_fixture_env_name(), op_id, err.msg);
    return found;
}

static void
test_store_tx__commit_keeps_vm_and_op(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct vm vm = make_vm(OWNER_A, "web-01", IMAGE_1, st_now_ms());
    struct operation op = make_create_op(&vm);

    assert_st_ok(store_tx_begin(&fx->store.tx, &err), err);
    assert_st_ok(vm_repo_insert(&fx->store.vms, &vm, &err), err);
    assert_st_ok(op_repo_insert(&fx->store.ops, &op, &err), err);
    /* Inside, the transaction sees its own rows. */
    assert_int_equal(held(&fx->store, vm.id, op.id), 3);
    assert_st_ok(store_tx_commit(&fx->store.tx, &err), err);
    assert_int_equal(held(&fx->store, vm.id, op.id), 3);
}

static void
test_store_tx__rollback_leaves_neither(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct vm vm = make_vm(OWNER_A, "web-01", IMAGE_1, st_now_ms());
    struct operation op = make_create_op(&vm);

    assert_st_ok(store_tx_begin(&fx->store.tx, &err), err);
    assert_st_ok(vm_repo_insert(&fx->store.vms, &vm, &err), err);
    assert_st_ok(op_repo_insert(&fx->store.ops, &op, &err), err);
    store_tx_rollback(&fx->store.tx);
    assert_int_equal(held(&fx->store, vm.id, op.id), 0);
    /* A rollback with nothing open does nothing. */
    store_tx_rollback(&fx->store.tx);

    /* The store carries on. */
    assert_st_ok(vm_repo_insert(&fx->store.vms, &vm, &err), err);
    assert_int_equal(held(&fx->store, vm.id, op.id), 1);
}

/*
 * A quota of one VM: the first insert of the transaction counts (the
 * second insert sees it), so the second is refused inside the transaction.
 */
static void
refused_inside(struct store_fixture *fx, struct vm *first, struct operation *op)
{
    struct st_error err = {0};
    struct quota limits = {.max_vms = 1, .max_vcpus = -1, .max_memory_mib = -1, .max_disk_gib = -1};
    struct vm second = make_vm(OWNER_A, "web-02", IMAGE_1, st_now_ms());
    struct quota_violation v = {0};

    *first = make_vm(OWNER_A, "web-01", IMAGE_1, st_now_ms());
    *op = make_create_op(first);
    assert_st_ok(store_tx_begin(&fx->store.tx, &err), err);
    assert_st_ok(vm_repo_insert_within_quota(&fx->store.vms, first, &limits, &v, &err), err);
    assert_st_ok(op_repo_insert(&fx->store.ops, op, &err), err);
    assert_st_err(vm_repo_insert_within_quota(&fx->store.vms, &second, &limits, &v, &err), err,
                  ST_ERR_FORBIDDEN, "quota max_vms exceeded: limit 1, in use 1, requested 1");
}

static void
test_store_tx__inner_failure_then_rollback_leaves_nothing(void **state)
{
    struct store_fixture *fx = *state;
    struct operation op;
    struct vm vm;

    refused_inside(fx, &vm, &op);
    store_tx_rollback(&fx->store.tx);
    assert_int_equal(held(&fx->store, vm.id, op.id), 0);
    assert_int_equal(contract_int(fx, "SELECT count(*) FROM vms"), 0);
}

static void
test_store_tx__commit_after_inner_failure_fails_and_leaves_nothing(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct operation op;
    struct vm vm;

    refused_inside(fx, &vm, &op);
    assert_st_err(store_tx_commit(&fx->store.tx, &err), err, ST_ERR_BACKEND,
                  "the transaction was rolled back");
    assert_int_equal(held(&fx->store, vm.id, op.id), 0);
    assert_int_equal(contract_int(fx, "SELECT count(*) FROM vms"), 0);

    /* Nothing is left open: the next transaction is a new one, and commits. */
    assert_st_ok(store_tx_begin(&fx->store.tx, &err), err);
    assert_st_ok(vm_repo_insert(&fx->store.vms, &vm, &err), err);
    assert_st_ok(op_repo_insert(&fx->store.ops, &op, &err), err);
    assert_st_ok(store_tx_commit(&fx->store.tx, &err), err);
    assert_int_equal(held(&fx->store, vm.id, op.id), 3);
}

/* A compare-and-set refused inside dooms the transaction as any failed method does. */
static void
test_store_tx__stale_update_inside_dooms(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct vm vm = make_vm(OWNER_A, "web-01", IMAGE_1, st_now_ms());
    struct operation op = make_create_op(&vm);

    assert_st_ok(vm_repo_insert(&fx->store.vms, &vm, &err), err);
    vm.revision = 5;
    assert_st_ok(store_tx_begin(&fx->store.tx, &err), err);
    assert_st_ok(op_repo_insert(&fx->store.ops, &op, &err), err);
    assert_st_err(vm_repo_update(&fx->store.vms, OWNER_A, &vm, &err), err, ST_ERR_STALE,
                  "revision 5 expected, 1 stored");
    assert_st_err(store_tx_commit(&fx->store.tx, &err), err, ST_ERR_BACKEND,
                  "the transaction was rolled back");
    assert_int_equal(held(&fx->store, vm.id, op.id), 1);
}

/* Levels nest: only the outermost commit makes the rows visible to another connection. */
static void
test_store_tx__nested_levels_commit_at_the_outermost(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct vm vm = make_vm(OWNER_A, "web-01", IMAGE_1, st_now_ms());
    struct operation op = make_create_op(&vm);
    struct store other;

    assert_st_ok(store_open(&other, store_fixture_url(fx), &err), err);
    assert_st_ok(store_tx_begin(&fx->store.tx, &err), err);
    assert_st_ok(store_tx_begin(&fx->store.tx, &err), err);
    assert_st_ok(vm_repo_insert(&fx->store.vms, &vm, &err), err);
    assert_st_ok(store_tx_commit(&fx->store.tx, &err), err);
    assert_st_ok(op_repo_insert(&fx->store.ops, &op, &err), err);
    assert_int_equal(held(&other, vm.id, op.id), 0);
    assert_st_ok(store_tx_commit(&fx->store.tx, &err), err);
    assert_int_equal(held(&other, vm.id, op.id), 3);
    assert_int_equal(held(&fx->store, vm.id, op.id), 3);
    store_close(&other);
}

/* An inner level rolled back dooms the outer one, whose commit then fails. */
static void
test_store_tx__inner_rollback_dooms_the_outer(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct vm vm = make_vm(OWNER_A, "web-01", IMAGE_1, st_now_ms());
    struct operation op = make_create_op(&vm);

    assert_st_ok(store_tx_begin(&fx->store.tx, &err), err);
    assert_st_ok(vm_repo_insert(&fx->store.vms, &vm, &err), err);
    assert_st_ok(store_tx_begin(&fx->store.tx, &err), err);
    assert_st_ok(op_repo_insert(&fx->store.ops, &op, &err), err);
    store_tx_rollback(&fx->store.tx);
    assert_st_err(store_tx_commit(&fx->store.tx, &err), err, ST_ERR_BACKEND,
                  "the transaction was rolled back");
    assert_int_equal(held(&fx->store, vm.id, op.id), 0);
    /* Nothing is open any more. */
    assert_st_err(store_tx_commit(&fx->store.tx, &err), err, ST_ERR_INTERNAL, "none is open");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        CONTRACT_TEST(test_store_tx__commit_keeps_vm_and_op),
        CONTRACT_TEST(test_store_tx__rollback_leaves_neither),
        CONTRACT_TEST(test_store_tx__inner_failure_then_rollback_leaves_nothing),
        CONTRACT_TEST(test_store_tx__commit_after_inner_failure_fails_and_leaves_nothing),
        CONTRACT_TEST(test_store_tx__stale_update_inside_dooms),
        CONTRACT_TEST(test_store_tx__nested_levels_commit_at_the_outermost),
        CONTRACT_TEST(test_store_tx__inner_rollback_dooms_the_outer),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
