/*
 * test_identity.c - users, API keys, failed logins and the audit chain, on
 * the store named by STRATUS_TEST_STORE (contract/support/store_fixture.h),
 * through the repository interfaces only.
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
#include <sodium.h>

#include "contract/support/contract.h"
#include "contract/support/rows.h"
#include "util/mem.h"

#define USER_A "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
#define USER_B "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
#define NOBODY "99999999-9999-4999-8999-999999999999"

/* Appends per process in the concurrent audit test. */
#define AUDIT_APPENDS 200

static void
insert_user(struct store_fixture *fx, const struct user *user)
{
    struct st_error err = {0};

    assert_st_ok(user_repo_insert(&fx->store.users, user, &err), err);
}

/* Replace the string in @buf (@n bytes) and zero the rest, as the store reads it back. */
static void
set_text(char *buf, size_t n, const char *s)
{
    memset(buf, 0, n);
    snprintf(buf, n, "%s", s);
}

static void
test_identity__user_crud(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct user user = make_user(USER_A, "ada@example.org", 1700000000123);
    struct user got;

    insert_user(fx, &user);
    assert_st_ok(user_repo_get(&fx->store.users, USER_A, &got, &err), err);
    assert_memory_equal(&got, &user, sizeof(user));
    assert_st_ok(user_repo_get_by_email(&fx->store.users, "ada@example.org", &got, &err), err);
    assert_memory_equal(&got, &user, sizeof(user));

    /* Every mutable member, quotas set; an empty nickname reads back empty. */
    set_text(user.email, sizeof(user.email), "lovelace@example.org");
    set_text(user.password_hash, sizeof(user.password_hash), "$argon2id$v=19$other");
    set_text(user.nickname, sizeof(user.nickname), "");
    user.status = USER_STATUS_DISABLED;
    user.roles = USER_ROLE_USER | USER_ROLE_ADMIN;
    user.quota.max_vms = 0;
    user.quota.max_vcpus = 64;
    user.quota.max_memory_mib = (int64_t)1 << 40;
    user.quota.max_disk_gib = 7;
    user.updated_at += 5000;
    assert_st_ok(user_repo_update(&fx->store.users, &user, &err), err);
    /* Compare-and-set: the stored revision is the one read + 1, and the caller bumps its copy. */
    user.revision++;
    assert_st_ok(user_repo_get(&fx->store.users, USER_A, &got, &err), err);
    assert_memory_equal(&got, &user, sizeof(user));
    assert_int_equal(contract_int(fx, "SELECT quota_max_vms FROM users"), 0);

    /* Back to the defaults: stored NULL, read as -1 (whatever negative was written). */
    user.quota.max_vms = -2;
    user.quota.max_vcpus = -1;
    user.quota.max_memory_mib = -1;
    user.quota.max_disk_gib = -1;
    assert_st_ok(user_repo_update(&fx->store.users, &user, &err), err);
    user.revision++;
    assert_int_equal(contract_int(fx, "SELECT count(*) FROM users WHERE quota_max_vms IS NULL AND "
                                      "quota_max_vcpus IS NULL AND quota_max_memory_mib IS NULL "
                                      "AND quota_max_disk_gib IS NULL"),
                     1);
    assert_st_ok(user_repo_get(&fx->store.users, USER_A, &got, &err), err);
    assert_int_equal(got.quota.max_vms, -1);
    assert_int_equal(got.quota.max_vcpus, -1);
    assert_int_equal(got.quota.max_memory_mib, -1);
    assert_int_equal(got.quota.max_disk_gib, -1);
    assert_int_equal(got.created_at, 1700000000123);

    /* The old address is gone with the update. */
    assert_st_err(user_repo_get_by_email(&fx->store.users, "ada@example.org", &got, &err), err,
                  ST_ERR_NOT_FOUND, "no user with e-mail 'ada@example.org'");
    assert_st_err(user_repo_get(&fx->store.users, NOBODY, &got, &err), err, ST_ERR_NOT_FOUND,
                  "no user '" NOBODY "'");
    strcpy(user.id, NOBODY);
    assert_st_err(user_repo_update(&fx->store.users, &user, &err), err, ST_ERR_NOT_FOUND,
                  "no user '" NOBODY "'");
}

static void
test_identity__user_email_unique(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct user a = make_user(USER_A, "ada@example.org", 1000);
    struct user b = make_user(USER_B, "ada@example.org", 2000);
    struct user got;

    insert_user(fx, &a);
    assert_st_err(user_repo_insert(&fx->store.users, &b, &err), err, ST_ERR_CONFLICT,
                  "a user with e-mail 'ada@example.org' already exists");
    assert_string_equal(err.msg, "a user with e-mail 'ada@example.org' already exists");
    /* Lower-casing is the caller's job, but the store does not rely on it. */
    strcpy(b.email, "ADA@example.org");
    assert_st_err(user_repo_insert(&fx->store.users, &b, &err), err, ST_ERR_CONFLICT,
                  "already exists");

    strcpy(b.email, "grace@example.org");
    insert_user(fx, &b);
    strcpy(b.email, "ada@example.org");
    assert_st_err(user_repo_update(&fx->store.users, &b, &err), err, ST_ERR_CONFLICT,
                  "a user with e-mail 'ada@example.org' already exists");
    assert_st_ok(user_repo_get(&fx->store.users, USER_B, &got, &err), err);
    assert_string_equal(got.email, "grace@example.org");

    a = make_user(USER_A, "other@example.org", 3000);
    assert_st_err(user_repo_insert(&fx->store.users, &a, &err), err, ST_ERR_CONFLICT,
                  "a user with id '" USER_A "' already exists");
}

static void
test_identity__user_list_paging(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct user_filter f = {.limit = 10};
    struct user_list list = {0};
    struct user user;
    char email[64];
    char last_id[ST_ID_BUF] = "";
    int64_t last_at = 0;
    size_t seen = 0, pages = 0, i;
    bool more = true;

    /* Two users share each created_at, so the id decides their order. */
    for (i = 0; i < 25; i++) {
        snprintf(email, sizeof(email), "user%02zu@example.org", i);
        user = make_user(NULL, email, 1000 + (int64_t)i / 2);
        insert_user(fx, &user);
    }
    while (more) {
        assert_st_ok(user_repo_list(&fx->store.users, &f, &list, &err), err);
        pages++;
        for (i = 0; i < list.count; i++) {
            const struct user *u = &list.items[i];

            if (seen > 0)
                assert_true(u->created_at > last_at ||
                            (u->created_at == last_at && strcmp(u->id, last_id) > 0));
            last_at = u->created_at;
            strcpy(last_id, u->id);
            seen++;
        }
        more = list.more;
        if (list.count)
            strcpy(f.marker, list.items[list.count - 1].id);
        user_list_release(&list);
    }
    assert_int_equal(seen, 25);
    assert_int_equal(pages, 3);

    strcpy(f.marker, NOBODY);
    assert_st_err(user_repo_list(&fx->store.users, &f, &list, &err), err, ST_ERR_INVALID,
                  "marker '" NOBODY "' names no user");
    assert_null(list.items);
}

static void
test_identity__user_count_admins(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct user admin = make_user(NULL, "admin@example.org", 1);
    struct user disabled = make_user(NULL, "former@example.org", 2);
    struct user plain = make_user(NULL, "plain@example.org", 3);
    size_t n = 99;

    assert_st_ok(user_repo_count_admins(&fx->store.users, &n, &err), err);
    assert_int_equal(n, 0);
    admin.roles = USER_ROLE_USER | USER_ROLE_ADMIN;
    disabled.roles = USER_ROLE_USER | USER_ROLE_ADMIN;
    disabled.status = USER_STATUS_DISABLED;
    insert_user(fx, &admin);
    insert_user(fx, &disabled);
    insert_user(fx, &plain);
    assert_st_ok(user_repo_count_admins(&fx->store.users, &n, &err), err);
    assert_int_equal(n, 1);

    plain.roles |= USER_ROLE_ADMIN;
    assert_st_ok(user_repo_update(&fx->store.users, &plain, &err), err);
    admin.status = USER_STATUS_DISABLED;
    assert_st_ok(user_repo_update(&fx->store.users, &admin, &err), err);
    assert_st_ok(user_repo_count_admins(&fx->store.users, &n, &err), err);
    assert_int_equal(n, 1);
}

static void
test_identity__login_failures(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    size_t count = 99;
    int64_t newest = 99;

    assert_st_ok(
        user_repo_login_failures(&fx->store.users, "ada@example.org", 0, &count, &newest, &err),
        err);
    assert_int_equal(count, 0);
    assert_int_equal(newest, 0);

    /* Failures of addresses nobody has are recorded too: they are what is throttled. */
    assert_st_ok(user_repo_login_failure_add(&fx->store.users, "ada@example.org", 1000, &err), err);
    assert_st_ok(user_repo_login_failure_add(&fx->store.users, "ada@example.org", 3000, &err), err);
    assert_st_ok(user_repo_login_failure_add(&fx->store.users, "ada@example.org", 2000, &err), err);
    assert_st_ok(user_repo_login_failure_add(&fx->store.users, "ada@example.org", 2000, &err), err);
    assert_st_ok(user_repo_login_failure_add(&fx->store.users, "bob@example.org", 5000, &err), err);

    assert_st_ok(
        user_repo_login_failures(&fx->store.users, "ada@example.org", 1500, &count, &newest, &err),
        err);
    assert_int_equal(count, 3);
    assert_int_equal(newest, 3000);
    /* "at or after": the bound itself counts. */
    assert_st_ok(
        user_repo_login_failures(&fx->store.users, "ada@example.org", 3000, &count, &newest, &err),
        err);
    assert_int_equal(count, 1);
    assert_int_equal(newest, 3000);
    assert_st_ok(
        user_repo_login_failures(&fx->store.users, "ada@example.org", 3001, &count, &newest, &err),
        err);
    assert_int_equal(count, 0);
    assert_int_equal(newest, 0);
    assert_st_ok(
        user_repo_login_failures(&fx->store.users, "ada@example.org", 0, &count, &newest, &err),
        err);
    assert_int_equal(count, 4);

    assert_st_ok(user_repo_login_failures_clear(&fx->store.users, "ada@example.org", &err), err);
    assert_st_ok(
        user_repo_login_failures(&fx->store.users, "ada@example.org", 0, &count, &newest, &err),
        err);
    assert_int_equal(count, 0);
    assert_int_equal(newest, 0);
    /* Nothing left to forget is no error; other addresses keep theirs. */
    assert_st_ok(user_repo_login_failures_clear(&fx->store.users, "ada@example.org", &err), err);
    assert_st_ok(
        user_repo_login_failures(&fx->store.users, "bob@example.org", 0, &count, &newest, &err),
        err);
    assert_int_equal(count, 1);
    assert_int_equal(newest, 5000);
}

static void
test_identity__api_keys(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct user a = make_user(USER_A, "ada@example.org", 1);
    struct user b = make_user(USER_B, "bob@example.org", 2);
    struct api_key k1 = make_key(USER_A, "laptop", "stk_aaaaaaaa", 3000);
    struct api_key k2 = make_key(USER_A, "ci", "stk_bbbbbbbb", 1000);
    struct api_key k3 = make_key(USER_A, "", "stk_cccccccc", 2000);
    struct api_key kb = make_key(USER_B, "laptop", "stk_dddddddd", 500);
    struct api_key bad;
    struct api_key got;
    struct api_key_list list = {0};

    insert_user(fx, &a);
    insert_user(fx, &b);
    assert_st_ok(user_repo_key_insert(&fx->store.users, &k1, &err), err);
    assert_st_ok(user_repo_key_insert(&fx->store.users, &k2, &err), err);
    assert_st_ok(user_repo_key_insert(&fx->store.users, &k3, &err), err);
    /* Names are unique per user only. */
    assert_st_ok(user_repo_key_insert(&fx->store.users, &kb, &err), err);

    bad = make_key(USER_A, "laptop", "stk_eeeeeeee", 4000);
    assert_st_err(user_repo_key_insert(&fx->store.users, &bad, &err), err, ST_ERR_CONFLICT,
                  "an API key named 'laptop' already exists");
    bad = make_key(USER_B, "phone", "stk_aaaaaaaa", 4000);
    assert_st_err(user_repo_key_insert(&fx->store.users, &bad, &err), err, ST_ERR_CONFLICT,
                  "an API key with prefix 'stk_aaaaaaaa' already exists");
    bad = make_key(NOBODY, "phone", "stk_ffffffff", 4000);
    assert_st_err(user_repo_key_insert(&fx->store.users, &bad, &err), err, ST_ERR_NOT_FOUND,
                  "no user '" NOBODY "'");

    assert_st_ok(user_repo_key_get_by_prefix(&fx->store.users, "stk_aaaaaaaa", &got, &err), err);
    assert_memory_equal(&got, &k1, sizeof(k1));
    assert_int_equal(got.last_used_at, 0);
    assert_st_err(user_repo_key_get_by_prefix(&fx->store.users, "stk_zzzzzzzz", &got, &err), err,
                  ST_ERR_NOT_FOUND, "no API key with prefix 'stk_zzzzzzzz'");

    /* Oldest first; the unnamed key reads back with an empty name. */
    assert_st_ok(user_repo_key_list(&fx->store.users, USER_A, &list, &err), err);
    assert_int_equal(list.count, 3);
    assert_false(list.more);
    assert_string_equal(list.items[0].id, k2.id);
    assert_string_equal(list.items[1].id, k3.id);
    assert_string_equal(list.items[1].name, "");
    assert_string_equal(list.items[2].id, k1.id);
    api_key_list_release(&list);

    assert_st_ok(user_repo_key_touch(&fx->store.users, k1.id, 1700000000999, &err), err);
    assert_st_ok(user_repo_key_get_by_prefix(&fx->store.users, "stk_aaaaaaaa", &got, &err), err);
    assert_int_equal(got.last_used_at, 1700000000999);
    assert_st_err(user_repo_key_touch(&fx->store.users, NOBODY, 1, &err), err, ST_ERR_NOT_FOUND,
                  "no API key '" NOBODY "'");

    /* Another user's key behaves as one that does not exist, and stays. */
    assert_st_err(user_repo_key_remove(&fx->store.users, USER_B, k1.id, &err), err,
                  ST_ERR_NOT_FOUND, "no API key '");
    assert_st_ok(user_repo_key_get_by_prefix(&fx->store.users, "stk_aaaaaaaa", &got, &err), err);
    assert_st_ok(user_repo_key_remove(&fx->store.users, USER_A, k1.id, &err), err);
    assert_st_err(user_repo_key_get_by_prefix(&fx->store.users, "stk_aaaaaaaa", &got, &err), err,
                  ST_ERR_NOT_FOUND, "no API key");
    assert_st_ok(user_repo_key_list(&fx->store.users, USER_B, &list, &err), err);
    assert_int_equal(list.count, 1);
    assert_string_equal(list.items[0].id, kb.id);
    api_key_list_release(&list);
}

/* A stand-in for the service's hash: SHA-256 over prev_hash and every field. */
static void
audit_test_hash(const struct audit_entry *e, char out[ST_HASH_HEX_BUF])
{
    unsigned char digest[crypto_hash_sha256_BYTES];
    char *text = st_xasprintf("%lld|%s|%lld|%s|%s|%s|%s|%d|%s|%s|%s", (long long)e->seq, e->id,
                              (long long)e->at, e->user_id, e->method, e->route, e->target_id,
                              e->status, e->request_id, e->client_addr, e->prev_hash);

    crypto_hash_sha256(digest, (const unsigned char *)text, strlen(text));
    sodium_bin2hex(out, ST_HASH_HEX_BUF, digest, sizeof(digest));
    free(text);
}

static struct audit_entry
make_entry(const char *user_id, const char *target_id, int status)
{
    struct audit_entry e;

    memset(&e, 0, sizeof(e));
    st_uuid_generate(e.id);
    e.at = st_now_ms();
    snprintf(e.user_id, sizeof(e.user_id), "%s", user_id);
    strcpy(e.method, "POST");
    strcpy(e.route, "/v1/vms");
    snprintf(e.target_id, sizeof(e.target_id), "%s", target_id);
    e.status = status;
    strcpy(e.request_id, "req-0001");
    strcpy(e.client_addr, "192.0.2.7");
    strcpy(e.hash, "to be replaced");
    return e;
}

/*
 * Read the whole log through scan(), @page entries at a time, and check
 * that it is one unbroken chain: seq 1..n, each linked to the one before
 * and hashed over its fields.  Returns n.
 */
static size_t
check_chain(struct audit_repo *audit, unsigned page)
{
    struct st_error err = {0};
    struct audit_list list = {0};
    char prev[ST_HASH_HEX_BUF] = "";
    char want[ST_HASH_HEX_BUF];
    int64_t seq = 0;
    size_t i;
    bool more = true;

    while (more) {
        assert_st_ok(audit_repo_scan(audit, seq, page, &list, &err), err);
        for (i = 0; i < list.count; i++) {
            const struct audit_entry *e = &list.items[i];

            assert_int_equal(e->seq, seq + 1);
            assert_string_equal(e->prev_hash, prev);
            audit_test_hash(e, want);
            assert_string_equal(e->hash, want);
            strcpy(prev, e->hash);
            seq = e->seq;
        }
        more = list.more;
        audit_list_release(&list);
    }
    return (size_t)seq;
}

static void
test_identity__audit_chain(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct audit_entry e[5];
    struct audit_entry dup;
    struct audit_filter f = {.limit = 100};
    struct audit_list list = {0};
    size_t i;

    e[0] = make_entry(USER_A, NOBODY, 201);
    e[1] = make_entry(USER_B, NOBODY, 204);
    e[2] = make_entry("", "", 401); /* nobody authenticated, no target */
    e[3] = make_entry(USER_A, "", 200);
    e[4] = make_entry(USER_A, NOBODY, 403);
    for (i = 0; i < ST_ARRAY_LEN(e); i++) {
        assert_st_ok(audit_repo_append(&fx->store.audit, &e[i], audit_test_hash, &err), err);
        assert_int_equal(e[i].seq, (int64_t)i + 1);
        assert_string_equal(e[i].prev_hash, i ? e[i - 1].hash : "");
        assert_int_equal(strlen(e[i].hash), ST_HASH_HEX_BUF - 1);
    }
    assert_int_equal(check_chain(&fx->store.audit, 2), 5);

    /* A second entry with a taken id goes nowhere and leaves the chain as it was. */
    dup = e[0];
    assert_st_err(audit_repo_append(&fx->store.audit, &dup, audit_test_hash, &err), err,
                  ST_ERR_CONFLICT, "an audit entry with id '");
    assert_int_equal(dup.seq, 1);
    assert_int_equal(check_chain(&fx->store.audit, 100), 5);

    assert_st_ok(audit_repo_list(&fx->store.audit, &f, &list, &err), err);
    assert_int_equal(list.count, 5);
    for (i = 0; i < list.count; i++)
        assert_memory_equal(&list.items[i], &e[i], sizeof(e[i]));
    audit_list_release(&list);

    strcpy(f.user_id, USER_A);
    assert_st_ok(audit_repo_list(&fx->store.audit, &f, &list, &err), err);
    assert_int_equal(list.count, 3);
    assert_int_equal(list.items[0].seq, 1);
    assert_int_equal(list.items[1].seq, 4);
    assert_int_equal(list.items[2].seq, 5);
    audit_list_release(&list);

    strcpy(f.target_id, NOBODY);
    assert_st_ok(audit_repo_list(&fx->store.audit, &f, &list, &err), err);
    assert_int_equal(list.count, 2);
    assert_int_equal(list.items[1].seq, 5);
    audit_list_release(&list);

    /* Paging by entry id; the marker need not match the filters. */
    f.user_id[0] = '\0';
    f.limit = 1;
    strcpy(f.marker, e[0].id);
    assert_st_ok(audit_repo_list(&fx->store.audit, &f, &list, &err), err);
    assert_int_equal(list.count, 1);
    assert_true(list.more);
    assert_int_equal(list.items[0].seq, 2);
    strcpy(f.marker, list.items[0].id);
    audit_list_release(&list);
    assert_st_ok(audit_repo_list(&fx->store.audit, &f, &list, &err), err);
    assert_int_equal(list.count, 1);
    assert_false(list.more);
    assert_int_equal(list.items[0].seq, 5);
    audit_list_release(&list);
    strcpy(f.marker, e[2].id); /* no target: outside the filter, still a marker */
    assert_st_ok(audit_repo_list(&fx->store.audit, &f, &list, &err), err);
    assert_int_equal(list.count, 1);
    assert_int_equal(list.items[0].seq, 5);
    audit_list_release(&list);
    f.target_id[0] = '\0';
    f.limit = 0;
    strcpy(f.marker, e[2].id);
    assert_st_ok(audit_repo_list(&fx->store.audit, &f, &list, &err), err);
    assert_int_equal(list.count, 2);
    assert_false(list.more);
    assert_int_equal(list.items[0].seq, 4);
    audit_list_release(&list);

    strcpy(f.marker, NOBODY);
    assert_st_err(audit_repo_list(&fx->store.audit, &f, &list, &err), err, ST_ERR_INVALID,
                  "marker '" NOBODY "' names no audit entry");

    assert_st_ok(audit_repo_scan(&fx->store.audit, 3, 1, &list, &err), err);
    assert_int_equal(list.count, 1);
    assert_true(list.more);
    assert_int_equal(list.items[0].seq, 4);
    audit_list_release(&list);
    assert_st_ok(audit_repo_scan(&fx->store.audit, 5, 10, &list, &err), err);
    assert_int_equal(list.count, 0);
    assert_false(list.more);
    audit_list_release(&list);
}

/* One process of the concurrent test: a store of its own, AUDIT_APPENDS appends. */
static int
audit_appender(const char *url, const char *user_id, int gate)
{
    struct st_error err = {0};
    struct store store;
    struct audit_entry e;
    char c;
    int i;

    if (read(gate, &c, 1) < 0)
        return 3;
    if (store_open(&store, url, &err) < 0) {
        fprintf(stderr, "appender open: %s\n", err.msg);
        return 1;
    }
    for (i = 0; i < AUDIT_APPENDS; i++) {
        e = make_entry(user_id, "", 200);
        if (audit_repo_append(&store.audit, &e, audit_test_hash, &err) < 0) {
            fprintf(stderr, "append %d: %s\n", i, err.msg);
            return 1;
        }
        /* Give the other process its turn, so that appends alternate. */
        st_sleep_ms(1);
    }
    store_close(&store);
    return 0;
}

/* Two processes append at once: one chain, seq 1..400, nothing forked or lost. */
static void
test_identity__audit_concurrent_appends(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    const char *users[2] = {USER_A, USER_B};
    struct audit_filter f = {.limit = 1000};
    struct audit_list list = {0};
    pid_t pids[2];
    int gate[2];
    int status;
    size_t i;

    assert_int_equal(pipe(gate), 0);
    for (i = 0; i < 2; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            close(gate[1]);
            _exit(audit_appender(store_fixture_url(fx), users[i], gate[0]));
        }
    }
    close(gate[0]);
    close(gate[1]);
    for (i = 0; i < 2; i++) {
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    assert_int_equal(check_chain(&fx->store.audit, 64), 2 * AUDIT_APPENDS);
    for (i = 0; i < 2; i++) {
        strcpy(f.user_id, users[i]);
        assert_st_ok(audit_repo_list(&fx->store.audit, &f, &list, &err), err);
        assert_int_equal(list.count, AUDIT_APPENDS);
        audit_list_release(&list);
    }
}

static void
test_identity__schema_is_current(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct store again;
    int version = -1;

    assert_st_ok(store_schema_version(&fx->store, &version, &err), err);
    assert_int_equal(version, 4);

    /* Re-opening applies nothing again. */
    assert_st_ok(store_open(&again, store_fixture_url(fx), &err), err);
    version = -1;
    assert_st_ok(store_schema_version(&again, &version, &err), err);
    assert_int_equal(version, 4);
    store_close(&again);
    assert_int_equal(contract_int(fx, "SELECT count(*) FROM schema_version"), 4);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        CONTRACT_TEST(test_identity__user_crud),
        CONTRACT_TEST(test_identity__user_email_unique),
        CONTRACT_TEST(test_identity__user_list_paging),
        CONTRACT_TEST(test_identity__user_count_admins),
        CONTRACT_TEST(test_identity__login_failures),
        CONTRACT_TEST(test_identity__api_keys),
        CONTRACT_TEST(test_identity__audit_chain),
        CONTRACT_TEST(test_identity__audit_concurrent_appends),
        CONTRACT_TEST(test_identity__schema_is_current),
    };

    if (sodium_init() < 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
