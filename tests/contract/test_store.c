/*
 * test_store.c - store_copy() (stratus-admin db copy) on the store named by
 * STRATUS_TEST_STORE: a store filled through every repository is copied
 * into a fresh one, which must then answer the same through the
 * repositories; copies into a non-empty store, across schema versions and
 * of a tampered audit chain are refused and leave the target empty.  On
 * the PostgreSQL pass the copy also goes from SQLite to PostgreSQL and
 * back.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "contract/support/contract.h"
#include "contract/support/rows.h"
#include "services/audit_service.h"
#include "util/mem.h"

#define USER_A "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
#define USER_B "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
#define HASH_1 "1111111111111111111111111111111111111111111111111111111111111111"
#define HASH_2 "2222222222222222222222222222222222222222222222222222222222222222"
/* Idempotency records of the sample never expire during the test. */
#define SAMPLE_EXPIRES 4102444800000LL

/* What sample_fill() put in a store, as the source's repositories read it back. */
struct sample {
    struct user users[2];
    struct api_key keys[2];
    struct image images[2];
    struct flavor flavors[2];
    struct vm vms[2];
    struct operation ops[2];
    struct vm_event events[3];
    struct audit_entry audit[3];
};

/* How many rows sample_fill() leaves in each table; every table of store_tables[] is here. */
static const struct {
    const char *table;
    int64_t rows;
} sample_rows[] = {
    {"users", 2},      {"api_keys", 2},  {"login_failures", 3},
    {"images", 2},     {"flavors", 2},   {"vms", 2},
    {"operations", 2}, {"vm_events", 3}, {"idempotency_keys", 2},
    {"audit_log", 3},
};

static struct operation
make_op(const char *target, const char *owner, int64_t created_at)
{
    struct operation op;

    memset(&op, 0, sizeof(op));
    st_uuid_generate(op.id);
    op.kind = OP_KIND_VM_CREATE;
    snprintf(op.target_id, sizeof(op.target_id), "%s", target);
    snprintf(op.owner_id, sizeof(op.owner_id), "%s", owner);
    op.status = OP_STATUS_QUEUED;
    op.created_at = created_at;
    return op;
}

static struct vm_event
make_event(const char *vm, const char *owner, int64_t at, enum vm_event_type type,
           const char *message, const char *data)
{
    struct vm_event e;

    memset(&e, 0, sizeof(e));
    st_uuid_generate(e.id);
    snprintf(e.vm_id, sizeof(e.vm_id), "%s", vm);
    snprintf(e.owner_id, sizeof(e.owner_id), "%s", owner);
    e.at = at;
    e.type = type;
    snprintf(e.message, sizeof(e.message), "%s", message);
    snprintf(e.data, sizeof(e.data), "%s", data);
    return e;
}

static struct audit_entry
make_entry(const char *user_id, const char *target_id, int status)
{
    struct audit_entry e;

    memset(&e, 0, sizeof(e));
    snprintf(e.user_id, sizeof(e.user_id), "%s", user_id);
    strcpy(e.method, "POST");
    strcpy(e.route, "/v1/vms");
    snprintf(e.target_id, sizeof(e.target_id), "%s", target_id);
    e.status = status;
    strcpy(e.request_id, "req-0001");
    strcpy(e.client_addr, "192.0.2.7");
    return e;
}

/* Users, keys (one used), failed logins, images (one public) and flavors. */
static void
sample_fill_identity(struct store *s, struct sample *out)
{
    struct st_error err = {0};
    size_t i;

    out->users[0] = make_user(USER_A, "ada@example.org", 1000);
    out->users[0].roles |= USER_ROLE_ADMIN;
    strcpy(out->users[0].nickname, "ada");
    out->users[1] = make_user(USER_B, "bob@example.org", 1001);
    out->users[1].status = USER_STATUS_DISABLED;
    out->users[1].quota.max_vms = 3;
    out->users[1].quota.max_memory_mib = (int64_t)1 << 40;
    out->keys[0] = make_key(USER_A, "laptop", "stk_aaaaaaaa", 2000);
    out->keys[1] = make_key(USER_B, "", "stk_bbbbbbbb", 2001);
    out->images[0] = make_image(USER_A, "debian-12", 3000);
    out->images[0].format = IMAGE_FORMAT_QCOW2;
    out->images[0].visibility = IMAGE_VISIBILITY_PUBLIC;
    out->images[1] = make_image(USER_B, "alpine", 3001);
    out->flavors[0] = make_flavor(USER_A, "m1.small", 4000);
    out->flavors[1] = make_flavor(USER_B, "m1.large", 4001);

    for (i = 0; i < 2; i++) {
        assert_st_ok(user_repo_insert(&s->users, &out->users[i], &err), err);
        assert_st_ok(user_repo_key_insert(&s->users, &out->keys[i], &err), err);
        assert_st_ok(image_repo_insert(&s->images, &out->images[i], &err), err);
        assert_st_ok(flavor_repo_insert(&s->flavors, &out->flavors[i], &err), err);
    }
    assert_st_ok(user_repo_key_touch(&s->users, out->keys[0].id, 1700000000999, &err), err);
    assert_st_ok(user_repo_key_get_by_prefix(&s->users, "stk_aaaaaaaa", &out->keys[0], &err), err);
    assert_st_ok(user_repo_login_failure_add(&s->users, "ada@example.org", 5000, &err), err);
    assert_st_ok(user_repo_login_failure_add(&s->users, "ada@example.org", 5001, &err), err);
    assert_st_ok(user_repo_login_failure_add(&s->users, "nobody@example.org", 5002, &err), err);
}

/* VMs, operations (one ended by a worker), events and idempotency records. */
static void
sample_fill_compute(struct store *s, struct sample *out)
{
    struct st_error err = {0};
    struct idem_record rec = {0};
    enum idem_begin_result res;
    struct operation op;
    bool claimed = false;
    size_t i;

    out->vms[0] = make_vm(USER_A, "web-01", out->images[0].id, 6000);
    strcpy(out->vms[0].flavor_id, out->flavors[0].id);
    out->vms[1] = make_vm(USER_B, "db-01", out->images[0].id, 6001);
    out->vms[1].status = VM_STATUS_ERROR;
    strcpy(out->vms[1].fault, "define: the domain XML was refused");
    out->ops[0] = make_op(out->vms[0].id, USER_A, 7000);
    out->ops[1] = make_op(out->vms[1].id, USER_B, 7001);
    out->ops[1].kind = OP_KIND_VM_DELETE;
    out->events[0] = make_event(out->vms[0].id, USER_A, 8000, VM_EVENT_STATE_CHANGE, "started",
                                "{\"from\":\"creating\",\"to\":\"running\"}");
    out->events[1] = make_event(out->vms[0].id, USER_A, 8001, VM_EVENT_WARNING, "slow disk", "");
    out->events[2] = make_event(out->vms[1].id, USER_B, 8002, VM_EVENT_ERROR, "define failed", "");

    for (i = 0; i < 2; i++) {
        assert_st_ok(vm_repo_insert(&s->vms, &out->vms[i], &err), err);
        assert_st_ok(op_repo_insert(&s->ops, &out->ops[i], &err), err);
    }
    for (i = 0; i < ST_ARRAY_LEN(out->events); i++)
        assert_st_ok(event_repo_append(&s->events, &out->events[i], &err), err);

    /* The older operation is claimed and fails: worker, lease, times and error set. */
    assert_st_ok(op_repo_claim(&s->ops, "worker-1", 9000, 30000, &op, &claimed, &err), err);
    assert_true(claimed);
    assert_string_equal(op.id, out->ops[0].id);
    assert_st_ok(op_repo_renew(&s->ops, out->ops[0].id, "worker-1", 40000, "disk", &err), err);
    assert_st_ok(op_repo_finish(&s->ops, out->ops[0].id, "worker-1", OP_STATUS_FAILED, "disk full",
                                9500, &err),
                 err);
    for (i = 0; i < 2; i++)
        assert_st_ok(op_repo_get(&s->ops, NULL, out->ops[i].id, &out->ops[i], &err), err);

    /* One record answered, one still being served. */
    assert_st_ok(
        idem_repo_begin(&s->idem, USER_A, "key-1", HASH_1, 1000, SAMPLE_EXPIRES, &res, &rec, &err),
        err);
    assert_int_equal(res, IDEM_NEW);
    assert_st_ok(idem_repo_finish(&s->idem, USER_A, "key-1", 202, "{\"id\":\"x\"}",
                                  "/v1/operations/x", &err),
                 err);
    assert_st_ok(
        idem_repo_begin(&s->idem, USER_B, "key-2", HASH_2, 1100, SAMPLE_EXPIRES, &res, &rec, &err),
        err);
    assert_int_equal(res, IDEM_NEW);
}

/* Three audit entries, recorded as the API records them. */
static void
sample_fill_audit(struct store *s, struct sample *out)
{
    struct st_error err = {0};
    struct audit_service audit = {.log = &s->audit};
    size_t i;

    out->audit[0] = make_entry(USER_A, out->vms[0].id, 202);
    out->audit[1] = make_entry("", "", 401);
    out->audit[2] = make_entry(USER_B, out->vms[1].id, 204);
    for (i = 0; i < ST_ARRAY_LEN(out->audit); i++) {
        assert_st_ok(audit_service_record(&audit, &out->audit[i], &err), err);
        assert_int_equal(out->audit[i].seq, (int64_t)i + 1);
    }
}

/* Fill @s through its repositories with a row or more of every table. */
static void
sample_fill(struct store *s, struct sample *out)
{
    memset(out, 0, sizeof(*out));
    sample_fill_identity(s, out);
    sample_fill_compute(s, out);
    sample_fill_audit(s, out);
}

/* Each table of @s holds what sample_fill() leaves, or nothing when @empty. */
static void
check_counts(struct store *s, bool empty)
{
    struct st_error err = {0};
    const struct store_table *t;
    int64_t n;
    size_t i;

    for (t = store_tables; t->name; t++) {
        for (i = 0; i < ST_ARRAY_LEN(sample_rows); i++)
            if (strcmp(sample_rows[i].table, t->name) == 0)
                break;
        if (i == ST_ARRAY_LEN(sample_rows))
            fail_msg("table %s is not in sample_rows: fill it in sample_fill()", t->name);
        assert_st_ok(store_count(s, t->name, &n, &err), err);
        if (n != (empty ? 0 : sample_rows[i].rows))
            fail_msg("[%s] table %s holds %lld rows, not %lld", store_kind_name(s->kind), t->name,
                     (long long)n, (long long)(empty ? 0 : sample_rows[i].rows));
    }
    /* And no table of sample_rows is gone from the schema. */
    assert_int_equal(t - store_tables, ST_ARRAY_LEN(sample_rows));
}

/* Users, keys, failed logins, images and flavors of @want, read through @s's repositories. */
static void
check_identity(struct store *s, const struct sample *want)
{
    struct st_error err = {0};
    struct user user;
    struct api_key key;
    struct image image;
    struct flavor flavor;
    struct api_key_list keys = {0};
    size_t count = 0;
    int64_t newest = 0;
    size_t i;

    for (i = 0; i < 2; i++) {
        assert_st_ok(user_repo_get(&s->users, want->users[i].id, &user, &err), err);
        assert_memory_equal(&user, &want->users[i], sizeof(user));
        assert_st_ok(user_repo_get_by_email(&s->users, want->users[i].email, &user, &err), err);
        assert_string_equal(user.id, want->users[i].id);
        assert_st_ok(user_repo_key_get_by_prefix(&s->users, want->keys[i].prefix, &key, &err), err);
        assert_memory_equal(&key, &want->keys[i], sizeof(key));
        assert_st_ok(image_repo_get(&s->images, NULL, want->images[i].id, &image, &err), err);
        assert_memory_equal(&image, &want->images[i], sizeof(image));
        assert_st_ok(flavor_repo_get(&s->flavors, NULL, want->flavors[i].id, &flavor, &err), err);
        assert_memory_equal(&flavor, &want->flavors[i], sizeof(flavor));
    }
    assert_int_equal(want->keys[0].last_used_at, 1700000000999);
    assert_int_equal(want->keys[1].last_used_at, 0);
    assert_st_ok(user_repo_key_list(&s->users, USER_A, &keys, &err), err);
    assert_int_equal(keys.count, 1);
    api_key_list_release(&keys);
    assert_st_ok(user_repo_count_admins(&s->users, &count, &err), err);
    assert_int_equal(count, 1);
    assert_st_ok(user_repo_login_failures(&s->users, "ada@example.org", 0, &count, &newest, &err),
                 err);
    assert_int_equal(count, 2);
    assert_int_equal(newest, 5001);
    assert_st_ok(
        user_repo_login_failures(&s->users, "nobody@example.org", 0, &count, &newest, &err), err);
    assert_int_equal(count, 1);
    assert_int_equal(newest, 5002);
}

/* VMs, operations, events and idempotency records of @want, read through @s. */
static void
check_compute(struct store *s, const struct sample *want)
{
    struct st_error err = {0};
    struct vm vm;
    struct operation op;
    struct vm_event_filter f = {0};
    struct vm_event_list events = {0};
    struct idem_record rec = {0};
    enum idem_begin_result res;
    size_t i;

    for (i = 0; i < 2; i++) {
        assert_st_ok(vm_repo_get(&s->vms, NULL, want->vms[i].id, &vm, &err), err);
        assert_memory_equal(&vm, &want->vms[i], sizeof(vm));
        assert_st_ok(op_repo_get(&s->ops, NULL, want->ops[i].id, &op, &err), err);
        assert_memory_equal(&op, &want->ops[i], sizeof(op));
    }
    assert_int_equal(want->ops[0].status, OP_STATUS_FAILED);
    assert_string_equal(want->ops[0].worker_id, "worker-1");
    assert_st_ok(op_repo_active_for(&s->ops, want->vms[1].id, &op, &err), err);
    assert_string_equal(op.id, want->ops[1].id);

    assert_st_ok(event_repo_list(&s->events, NULL, want->vms[0].id, &f, &events, &err), err);
    assert_int_equal(events.count, 2);
    assert_memory_equal(&events.items[0], &want->events[0], sizeof(want->events[0]));
    assert_memory_equal(&events.items[1], &want->events[1], sizeof(want->events[1]));
    vm_event_list_release(&events);
    assert_st_ok(event_repo_list(&s->events, USER_B, want->vms[1].id, &f, &events, &err), err);
    assert_int_equal(events.count, 1);
    assert_memory_equal(&events.items[0], &want->events[2], sizeof(want->events[2]));
    vm_event_list_release(&events);

    assert_st_ok(
        idem_repo_begin(&s->idem, USER_A, "key-1", HASH_1, 2000, SAMPLE_EXPIRES, &res, &rec, &err),
        err);
    assert_int_equal(res, IDEM_DONE);
    assert_int_equal(rec.status, 202);
    assert_string_equal(rec.body, "{\"id\":\"x\"}");
    assert_string_equal(rec.location, "/v1/operations/x");
    assert_int_equal(rec.created_at, 1000);
    assert_int_equal(rec.expires_at, SAMPLE_EXPIRES);
    idem_record_release(&rec);
    assert_st_ok(
        idem_repo_begin(&s->idem, USER_B, "key-2", HASH_2, 2000, SAMPLE_EXPIRES, &res, &rec, &err),
        err);
    assert_int_equal(res, IDEM_IN_PROGRESS);
    assert_int_equal(rec.created_at, 1100);
    assert_null(rec.body);
    idem_record_release(&rec);
}

/* The audit log of @want, entry for entry, and a chain that verifies and goes on. */
static void
check_audit(struct store *s, const struct sample *want)
{
    struct st_error err = {0};
    struct audit_service audit = {.log = &s->audit};
    struct audit_verdict verdict = {0};
    struct audit_filter f = {.limit = 100};
    struct audit_list list = {0};
    struct audit_entry next = make_entry(USER_A, "", 200);
    size_t i;

    assert_st_ok(audit_repo_list(&s->audit, &f, &list, &err), err);
    assert_int_equal(list.count, ST_ARRAY_LEN(want->audit));
    for (i = 0; i < list.count; i++)
        assert_memory_equal(&list.items[i], &want->audit[i], sizeof(want->audit[i]));
    audit_list_release(&list);
    assert_st_ok(audit_service_verify(&audit, &verdict, &err), err);
    assert_int_equal(verdict.broken_seq, 0);
    assert_int_equal(verdict.entries, 3);

    /* The copied chain is the one later entries hang from. */
    assert_st_ok(audit_service_record(&audit, &next, &err), err);
    assert_int_equal(next.seq, 4);
    assert_string_equal(next.prev_hash, want->audit[2].hash);
    assert_st_ok(audit_service_verify(&audit, &verdict, &err), err);
    assert_int_equal(verdict.broken_seq, 0);
    assert_int_equal(verdict.entries, 4);
}

/* A store of @kind beside @fx, fresh and open. */
static struct store_fixture *
add_store(struct store_fixture *fx, enum store_kind kind)
{
    struct st_error err = {0};
    struct store_fixture *added = store_fixture_add(fx, kind, 0, &err);

    if (!added)
        fail_msg("[%s] a %s store beside it: %s", store_fixture_name(fx), store_kind_name(kind),
                 err.msg);
    return added;
}

/* Fill @from, copy it to the empty @to, and read everything back on @to. */
static void
check_copy(struct store_fixture *from, struct store_fixture *to)
{
    struct st_error err = {0};
    struct sample sample;

    sample_fill(&from->store, &sample);
    check_counts(&from->store, false);
    check_counts(&to->store, true);
    if (store_copy(&from->store, &to->store, NULL, &err) < 0)
        fail_msg("copy %s -> %s: %s: %s", store_fixture_name(from), store_fixture_name(to),
                 st_err_code_name(err.code), err.msg);
    check_counts(&to->store, false);
    check_identity(&to->store, &sample);
    check_compute(&to->store, &sample);
    check_audit(&to->store, &sample);
    /* The source is read, never written. */
    check_counts(&from->store, false);
}

static void
test_store__copy_fills_an_empty_store(void **state)
{
    struct store_fixture *fx = *state;

    check_copy(fx, add_store(fx, fx->kind));
}

static void
test_store__copy_into_a_non_empty_store_is_a_conflict(void **state)
{
    struct store_fixture *fx = *state;
    struct store_fixture *to = add_store(fx, fx->kind);
    struct st_error err = {0};
    struct sample sample;
    struct user mine = make_user(USER_B, "mine@example.org", 1);
    struct user got;
    int64_t n = 0;

    sample_fill(&fx->store, &sample);
    assert_st_ok(user_repo_insert(&to->store.users, &mine, &err), err);
    assert_st_err(store_copy(&fx->store, &to->store, NULL, &err), err, ST_ERR_CONFLICT,
                  "the target database is not empty: table users holds 1 rows");

    /* Nothing merged: the target keeps its one row, the source all of its. */
    assert_st_ok(store_count(&to->store, "users", &n, &err), err);
    assert_int_equal(n, 1);
    assert_st_ok(store_count(&to->store, "audit_log", &n, &err), err);
    assert_int_equal(n, 0);
    assert_st_ok(user_repo_get(&to->store.users, USER_B, &got, &err), err);
    assert_string_equal(got.email, "mine@example.org");
    check_counts(&fx->store, false);
}

static void
test_store__copy_across_schema_versions_is_invalid(void **state)
{
    struct store_fixture *fx = *state;
    struct store_fixture *to = add_store(fx, fx->kind);
    struct st_error err = {0};
    struct sample sample;

    sample_fill(&fx->store, &sample);
    contract_exec(to, "INSERT INTO schema_version (version, applied_at) VALUES (99, 1)");
    assert_st_err(store_copy(&fx->store, &to->store, NULL, &err), err, ST_ERR_INVALID,
                  "the source schema is at version 4, the target at 99");
    check_counts(&to->store, true);
}

/* A chain edited in the source is caught on the target, and the copy leaves nothing. */
static void
test_store__copy_of_a_tampered_audit_chain_is_refused(void **state)
{
    struct store_fixture *fx = *state;
    struct store_fixture *to = add_store(fx, fx->kind);
    struct st_error err = {0};
    struct audit_service audit = {.log = &fx->store.audit};
    struct audit_verdict verdict = {0};
    struct sample sample;

    sample_fill(&fx->store, &sample);
    contract_exec(fx, "UPDATE audit_log SET status = 200 WHERE seq = 2");
    assert_st_ok(audit_service_verify(&audit, &verdict, &err), err);
    assert_int_equal(verdict.broken_seq, 2);
    assert_int_equal(verdict.entries, 2);

    assert_st_err(store_copy(&fx->store, &to->store, NULL, &err), err, ST_ERR_INTERNAL,
                  "the audit chain in the target breaks at entry 2");
    check_counts(&to->store, true);
    check_counts(&fx->store, false);
}

/* PostgreSQL pass only: the fixture's store is PostgreSQL, the other one SQLite. */
static void
test_store__copy_sqlite_to_postgresql(void **state)
{
    struct store_fixture *fx = *state;

    assert_int_equal(fx->kind, STORE_POSTGRES);
    check_copy(add_store(fx, STORE_SQLITE), fx);
}

static void
test_store__copy_postgresql_to_sqlite(void **state)
{
    struct store_fixture *fx = *state;

    assert_int_equal(fx->kind, STORE_POSTGRES);
    check_copy(fx, add_store(fx, STORE_SQLITE));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        CONTRACT_TEST(test_store__copy_fills_an_empty_store),
        CONTRACT_TEST(test_store__copy_into_a_non_empty_store_is_a_conflict),
        CONTRACT_TEST(test_store__copy_across_schema_versions_is_invalid),
        CONTRACT_TEST(test_store__copy_of_a_tampered_audit_chain_is_refused),
    };
    const struct CMUnitTest across[] = {
        CONTRACT_TEST(test_store__copy_sqlite_to_postgresql),
        CONTRACT_TEST(test_store__copy_postgresql_to_sqlite),
    };
    struct st_error err = {0};
    enum store_kind kind = STORE_SQLITE;
    int failed;

    if (sodium_init() < 0)
        return 1;
    /* A bad STRATUS_TEST_STORE fails every case in set-up; the copy across needs PostgreSQL. */
    (void)store_fixture_env_kind(&kind, &err);
    failed = cmocka_run_group_tests(tests, NULL, NULL);
    if (kind == STORE_POSTGRES)
        failed += cmocka_run_group_tests(across, NULL, NULL);
    return failed;
}
