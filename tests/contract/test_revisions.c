/*
 * test_revisions.c - revisions and compare-and-set, on the store named by
 * STRATUS_TEST_STORE (contract/support/store_fixture.h), through the
 * repository interfaces only: every row starts at revision 1; an update
 * of a VM or a user writes only over the revision it read and bumps it;
 * operations bump theirs with every claim, renewal and finish.  The races
 * run between processes, each with a store of its own on the same database.
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
#include "contract/support/rows.h"
#include "util/ids.h"
#include "util/mem.h"

#define OWNER_A "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
#define OWNER_B "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
#define IMAGE_1 "11111111-1111-4111-8111-111111111111"
#define NOBODY "99999999-9999-4999-8999-999999999999"

/* The race: processes, and how many times each adds one vCPU. */
#define RACERS 4
#define RACE_ADDS 50

static const struct quota unlimited = {
    .max_vms = -1, .max_vcpus = -1, .max_memory_mib = -1, .max_disk_gib = -1};

static struct vm
insert_vm(struct store_fixture *fx, const char *owner, const char *name)
{
    struct st_error err = {0};
    struct vm vm = make_vm(owner, name, IMAGE_1, st_now_ms());

    assert_st_ok(vm_repo_insert(&fx->store.vms, &vm, &err), err);
    return vm;
}

static struct vm
stored_vm(struct store_fixture *fx, const char *id)
{
    struct st_error err = {0};
    struct vm vm;

    assert_st_ok(vm_repo_get(&fx->store.vms, NULL, id, &vm, &err), err);
    return vm;
}

/* A queued operation on a fresh target, at revision @revision. */
static struct operation
make_op(const char *owner, uint64_t revision)
{
    struct operation op;

    memset(&op, 0, sizeof(op));
    st_uuid_generate(op.id);
    op.kind = OP_KIND_VM_START;
    st_uuid_generate(op.target_id);
    snprintf(op.owner_id, sizeof(op.owner_id), "%s", owner);
    op.status = OP_STATUS_QUEUED;
    op.created_at = st_now_ms();
    op.revision = revision;
    return op;
}

static uint64_t
op_revision(struct store_fixture *fx, const char *id)
{
    struct st_error err = {0};
    struct operation op;

    assert_st_ok(op_repo_get(&fx->store.ops, NULL, id, &op, &err), err);
    return op.revision;
}

/* Every kind of row starts at revision 1, also when the caller left it 0. */
static void
test_revisions__inserted_rows_read_back_at_revision_1(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct vm vm = make_vm(OWNER_A, "web-01", IMAGE_1, 1000);
    struct vm vm0 = make_vm(OWNER_A, "web-02", IMAGE_1, 2000);
    struct image image = make_image(OWNER_A, "debian", 1000);
    struct flavor flavor = make_flavor(OWNER_A, "small", 1000);
    struct user user = make_user(NULL, "ada@example.org", 1000);
    struct operation op = make_op(OWNER_A, 1);
    struct operation op0 = make_op(OWNER_A, 0);
    struct vm_filter vf = {0};
    struct vm_list vms = {0};
    struct vm got;
    struct image got_image;
    struct flavor got_flavor;
    struct user got_user;

    vm0.revision = 0;
    image.revision = 0;
    flavor.revision = 0;
    user.revision = 0;
    assert_st_ok(vm_repo_insert(&fx->store.vms, &vm, &err), err);
    assert_st_ok(vm_repo_insert(&fx->store.vms, &vm0, &err), err);
    assert_st_ok(image_repo_insert(&fx->store.images, &image, &err), err);
    assert_st_ok(flavor_repo_insert(&fx->store.flavors, &flavor, &err), err);
    assert_st_ok(user_repo_insert(&fx->store.users, &user, &err), err);
    assert_st_ok(op_repo_insert(&fx->store.ops, &op, &err), err);
    assert_st_ok(op_repo_insert(&fx->store.ops, &op0, &err), err);

    assert_st_ok(vm_repo_get(&fx->store.vms, OWNER_A, vm.id, &got, &err), err);
    assert_int_equal(got.revision, 1);
    assert_st_ok(vm_repo_get(&fx->store.vms, OWNER_A, vm0.id, &got, &err), err);
    assert_int_equal(got.revision, 1);
    assert_st_ok(vm_repo_list(&fx->store.vms, OWNER_A, &vf, &vms, &err), err);
    assert_int_equal(vms.count, 2);
    assert_int_equal(vms.items[0].revision, 1);
    assert_int_equal(vms.items[1].revision, 1);
    vm_list_release(&vms);
    assert_st_ok(image_repo_get(&fx->store.images, OWNER_A, image.id, &got_image, &err), err);
    assert_int_equal(got_image.revision, 1);
    assert_st_ok(flavor_repo_get(&fx->store.flavors, OWNER_A, flavor.id, &got_flavor, &err), err);
    assert_int_equal(got_flavor.revision, 1);
    assert_st_ok(user_repo_get(&fx->store.users, user.id, &got_user, &err), err);
    assert_int_equal(got_user.revision, 1);
    assert_st_ok(user_repo_get_by_email(&fx->store.users, user.email, &got_user, &err), err);
    assert_int_equal(got_user.revision, 1);
    assert_int_equal(op_revision(fx, op.id), 1);
    assert_int_equal(op_revision(fx, op0.id), 1);
}

/* A fresh revision writes and bumps the stored one; the caller's struct is left as it was. */
static void
test_revisions__vm_update_fresh_bumps_revision(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct vm vm = insert_vm(fx, OWNER_A, "web-01");
    struct vm got;
    int i;

    for (i = 0; i < 3; i++) {
        vm = stored_vm(fx, vm.id);
        assert_int_equal(vm.revision, 1 + i);
        vm.vcpus++;
        assert_st_ok(vm_repo_update(&fx->store.vms, OWNER_A, &vm, &err), err);
        assert_int_equal(vm.revision, 1 + i);
        got = stored_vm(fx, vm.id);
        assert_int_equal(got.revision, 2 + i);
        assert_int_equal(got.vcpus, vm.vcpus);
    }
    /* The unscoped (admin) update is compare-and-set too. */
    vm.revision = got.revision;
    vm.status = VM_STATUS_STOPPED;
    assert_st_ok(vm_repo_update(&fx->store.vms, NULL, &vm, &err), err);
    got = stored_vm(fx, vm.id);
    assert_int_equal(got.revision, 5);
    assert_int_equal(got.status, VM_STATUS_STOPPED);
}

/* A copy read before another write is refused, and changes nothing. */
static void
test_revisions__vm_update_stale_changes_nothing(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct vm vm = insert_vm(fx, OWNER_A, "web-01");
    struct vm first = stored_vm(fx, vm.id);
    struct vm second = first;
    struct vm got;
    char want[160];

    strcpy(first.name, "web-first");
    assert_st_ok(vm_repo_update(&fx->store.vms, OWNER_A, &first, &err), err);
    first.revision++;

    strcpy(second.name, "web-second");
    second.vcpus = 16;
    snprintf(want, sizeof(want), "VM '%s' changed meanwhile: revision 1 expected, 2 stored", vm.id);
    assert_st_err(vm_repo_update(&fx->store.vms, OWNER_A, &second, &err), err, ST_ERR_STALE, want);
    assert_st_err(vm_repo_update(&fx->store.vms, NULL, &second, &err), err, ST_ERR_STALE, want);
    got = stored_vm(fx, vm.id);
    assert_memory_equal(&got, &first, sizeof(got));

    /* A revision from the future is no better. */
    second.revision = 7;
    snprintf(want, sizeof(want), "VM '%s' changed meanwhile: revision 7 expected, 2 stored", vm.id);
    assert_st_err(vm_repo_update(&fx->store.vms, OWNER_A, &second, &err), err, ST_ERR_STALE, want);

    /* Read again, the same change goes through. */
    second = stored_vm(fx, vm.id);
    strcpy(second.name, "web-second");
    assert_st_ok(vm_repo_update(&fx->store.vms, OWNER_A, &second, &err), err);
    got = stored_vm(fx, vm.id);
    assert_string_equal(got.name, "web-second");
    assert_int_equal(got.revision, 3);
}

/* Out of scope is not found, whatever the revision: a stale answer would tell the row exists. */
static void
test_revisions__vm_update_other_owner_not_found(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct vm vm = insert_vm(fx, OWNER_A, "web-01");
    struct quota_violation v;
    struct vm got;
    char want[96];

    snprintf(want, sizeof(want), "no VM '%s'", vm.id);
    vm.vcpus = 9;
    assert_st_err(vm_repo_update(&fx->store.vms, OWNER_B, &vm, &err), err, ST_ERR_NOT_FOUND, want);
    vm.revision = 5;
    assert_st_err(vm_repo_update(&fx->store.vms, OWNER_B, &vm, &err), err, ST_ERR_NOT_FOUND, want);
    assert_st_err(vm_repo_update_within_quota(&fx->store.vms, OWNER_B, &vm, &unlimited, &v, &err),
                  err, ST_ERR_NOT_FOUND, want);
    got = stored_vm(fx, vm.id);
    assert_int_equal(got.revision, 1);
    assert_int_equal(got.vcpus, 2);

    strcpy(vm.id, NOBODY);
    vm.revision = 1;
    assert_st_err(vm_repo_update(&fx->store.vms, NULL, &vm, &err), err, ST_ERR_NOT_FOUND,
                  "no VM '" NOBODY "'");
    assert_st_err(vm_repo_update_within_quota(&fx->store.vms, NULL, &vm, &unlimited, &v, &err), err,
                  ST_ERR_NOT_FOUND, "no VM '" NOBODY "'");
}

/* update_within_quota: compare-and-set first, then the quota; either refusal changes nothing. */
static void
test_revisions__vm_update_within_quota_is_compare_and_set(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct quota limits = unlimited;
    struct quota_violation v = {0};
    struct vm vm = insert_vm(fx, OWNER_A, "web-01");
    struct vm stale = stored_vm(fx, vm.id);
    struct vm fresh = stale;
    struct vm got;
    char want[160];

    /* make_vm() VMs have 2 vcpus: 4 of 6 leaves room for 2 more. */
    limits.max_vcpus = 6;
    fresh.vcpus = 4;
    assert_st_ok(vm_repo_update_within_quota(&fx->store.vms, OWNER_A, &fresh, &limits, &v, &err),
                 err);
    assert_null(v.quota);
    assert_int_equal(fresh.revision, 1);
    got = stored_vm(fx, vm.id);
    assert_int_equal(got.revision, 2);
    assert_int_equal(got.vcpus, 4);

    /* A stale copy is refused even when it asks for less. */
    stale.vcpus = 1;
    snprintf(want, sizeof(want), "VM '%s' changed meanwhile: revision 1 expected, 2 stored", vm.id);
    assert_st_err(vm_repo_update_within_quota(&fx->store.vms, OWNER_A, &stale, &limits, &v, &err),
                  err, ST_ERR_STALE, want);
    assert_int_equal(stored_vm(fx, vm.id).vcpus, 4);
    assert_int_equal(stored_vm(fx, vm.id).revision, 2);

    /* A fresh copy over the quota is refused, and the revision stays. */
    fresh = stored_vm(fx, vm.id);
    fresh.vcpus = 7;
    assert_st_err(vm_repo_update_within_quota(&fx->store.vms, OWNER_A, &fresh, &limits, &v, &err),
                  err, ST_ERR_FORBIDDEN,
                  "quota max_vcpus exceeded: limit 6, in use 0, requested 7");
    assert_string_equal(v.quota, "max_vcpus");
    assert_int_equal(stored_vm(fx, vm.id).revision, 2);

    /* Within it, unscoped, it goes through and bumps. */
    fresh.vcpus = 6;
    assert_st_ok(vm_repo_update_within_quota(&fx->store.vms, NULL, &fresh, &limits, &v, &err), err);
    got = stored_vm(fx, vm.id);
    assert_int_equal(got.vcpus, 6);
    assert_int_equal(got.revision, 3);
}

static void
test_revisions__user_update_is_compare_and_set(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct user user = make_user(NULL, "ada@example.org", 1000);
    struct user first;
    struct user second;
    struct user got;
    char want[160];

    assert_st_ok(user_repo_insert(&fx->store.users, &user, &err), err);
    assert_st_ok(user_repo_get(&fx->store.users, user.id, &first, &err), err);
    second = first;

    strcpy(first.nickname, "countess");
    assert_st_ok(user_repo_update(&fx->store.users, &first, &err), err);
    assert_int_equal(first.revision, 1);
    assert_st_ok(user_repo_get(&fx->store.users, user.id, &got, &err), err);
    assert_int_equal(got.revision, 2);
    assert_string_equal(got.nickname, "countess");

    second.roles |= USER_ROLE_ADMIN;
    snprintf(want, sizeof(want), "user '%s' changed meanwhile: revision 1 expected, 2 stored",
             user.id);
    assert_st_err(user_repo_update(&fx->store.users, &second, &err), err, ST_ERR_STALE, want);
    assert_st_ok(user_repo_get(&fx->store.users, user.id, &got, &err), err);
    assert_int_equal(got.revision, 2);
    assert_int_equal(got.roles, USER_ROLE_USER);

    got.roles |= USER_ROLE_ADMIN;
    assert_st_ok(user_repo_update(&fx->store.users, &got, &err), err);
    assert_st_ok(user_repo_get(&fx->store.users, user.id, &got, &err), err);
    assert_int_equal(got.revision, 3);
    assert_int_equal(got.roles, USER_ROLE_USER | USER_ROLE_ADMIN);

    strcpy(got.id, NOBODY);
    assert_st_err(user_repo_update(&fx->store.users, &got, &err), err, ST_ERR_NOT_FOUND,
                  "no user '" NOBODY "'");
}

/* Claim, renewal and finish each bump the operation's revision; a refused one does not. */
static void
test_revisions__op_claim_renew_finish_bump_revision(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct operation op = make_op(OWNER_A, 1);
    struct op_filter f = {0};
    struct op_list list = {0};
    struct operation claimed;
    bool found = false;
    int64_t now = st_now_ms();

    assert_st_ok(op_repo_insert(&fx->store.ops, &op, &err), err);
    assert_st_ok(op_repo_claim(&fx->store.ops, "worker-1", now, 60000, &claimed, &found, &err),
                 err);
    assert_true(found);
    assert_string_equal(claimed.id, op.id);
    assert_int_equal(claimed.revision, 2);
    assert_int_equal(op_revision(fx, op.id), 2);

    assert_st_ok(op_repo_renew(&fx->store.ops, op.id, "worker-1", now + 90000, "disk", &err), err);
    assert_int_equal(op_revision(fx, op.id), 3);
    assert_st_err(op_repo_renew(&fx->store.ops, op.id, "worker-2", now + 90000, NULL, &err), err,
                  ST_ERR_CONFLICT, "was lost");
    assert_int_equal(op_revision(fx, op.id), 3);

    assert_st_ok(op_repo_finish(&fx->store.ops, op.id, "worker-1", OP_STATUS_SUCCEEDED, NULL,
                                now + 1000, &err),
                 err);
    assert_int_equal(op_revision(fx, op.id), 4);
    assert_st_err(op_repo_finish(&fx->store.ops, op.id, "worker-1", OP_STATUS_FAILED, "late",
                                 now + 2000, &err),
                  err, ST_ERR_CONFLICT, "was lost");

    assert_st_ok(op_repo_list(&fx->store.ops, OWNER_A, &f, &list, &err), err);
    assert_int_equal(list.count, 1);
    assert_int_equal(list.items[0].revision, 4);
    op_list_release(&list);
}

/*
 * One racer: a store of its own, then RACE_ADDS times: read the VM, add a
 * vCPU, write it compare-and-set (within @quota when set), and on
 * ST_ERR_STALE read again.  Exit status 0, or non-zero after saying why.
 */
static int
racer(const char *url, const char *id, const struct quota *quota, int gate)
{
    struct st_error err = {0};
    struct quota_violation v;
    struct store store;
    struct vm vm;
    int added = 0;
    int rc;
    char c;

    if (read(gate, &c, 1) < 0)
        return 3;
    if (store_open(&store, url, &err) < 0) {
        fprintf(stderr, "racer: open: %s\n", err.msg);
        return 1;
    }
    while (added < RACE_ADDS) {
        if (vm_repo_get(&store.vms, NULL, id, &vm, &err) < 0)
            break;
        vm.vcpus++;
        vm.updated_at = st_now_ms();
        rc = quota ? vm_repo_update_within_quota(&store.vms, NULL, &vm, quota, &v, &err)
                   : vm_repo_update(&store.vms, NULL, &vm, &err);
        if (rc == 0)
            added++;
        else if (err.code != ST_ERR_STALE)
            break;
    }
    store_close(&store);
    if (added == RACE_ADDS)
        return 0;
    fprintf(stderr, "racer: %s: %s\n", st_err_code_name(err.code), err.msg);
    return 2;
}

/* RACERS processes add to one VM at once: no addition is lost. */
static void
race(struct store_fixture *fx, const struct quota *quota)
{
    struct vm vm = insert_vm(fx, OWNER_A, "web-01");
    pid_t pids[RACERS];
    int gate[2];
    int status;
    int i;

    assert_int_equal(pipe(gate), 0);
    for (i = 0; i < RACERS; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            close(gate[1]);
            _exit(racer(store_fixture_url(fx), vm.id, quota, gate[0]));
        }
    }
    close(gate[0]);
    close(gate[1]); /* opens the gate: every read returns 0 at once */
    for (i = 0; i < RACERS; i++) {
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    vm = stored_vm(fx, vm.id);
    assert_int_equal(vm.vcpus, 2 + RACERS * RACE_ADDS);
    assert_int_equal(vm.revision, 1 + RACERS * RACE_ADDS);
}

static void
test_revisions__concurrent_updates_lose_nothing(void **state)
{
    race(*state, NULL);
}

static void
test_revisions__concurrent_quota_updates_lose_nothing(void **state)
{
    struct quota limits = unlimited;

    limits.max_vcpus = 2 + RACERS * RACE_ADDS;
    race(*state, &limits);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        CONTRACT_TEST(test_revisions__inserted_rows_read_back_at_revision_1),
        CONTRACT_TEST(test_revisions__vm_update_fresh_bumps_revision),
        CONTRACT_TEST(test_revisions__vm_update_stale_changes_nothing),
        CONTRACT_TEST(test_revisions__vm_update_other_owner_not_found),
        CONTRACT_TEST(test_revisions__vm_update_within_quota_is_compare_and_set),
        CONTRACT_TEST(test_revisions__user_update_is_compare_and_set),
        CONTRACT_TEST(test_revisions__op_claim_renew_finish_bump_revision),
        CONTRACT_TEST(test_revisions__concurrent_updates_lose_nothing),
        CONTRACT_TEST(test_revisions__concurrent_quota_updates_lose_nothing),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
