/*
 * test_identity_sqlite.c - users, API keys, failed logins and the audit
 * chain in the SQLite store, against a real database file in a temporary
 * directory; and migration 2 on a database made at version 1.
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

#include "repositories/sqlite/sqlite_db.h"
#include "repositories/sqlite/sqlite_internal.h"
#include "support/fixture.h"
#include "support/tmpdir.h"
#include "util/mem.h"

#define USER_A "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
#define USER_B "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
#define NOBODY "99999999-9999-4999-8999-999999999999"

/* Appends per process in the concurrent audit test. */
#define AUDIT_APPENDS 200

struct identity {
    char dir[64];
    char path[128];
    struct sqlite_db *db;
    struct user_repo users;
    struct audit_repo audit;
};

static int
setup(void **state)
{
    struct identity *fx = calloc(1, sizeof(*fx));
    struct st_error err = {0};

    assert_non_null(fx);
    if (tmpdir_make(fx->dir, sizeof(fx->dir), "stratus-identity", &err) < 0)
        fail_msg("temp dir: %s", err.msg);
    snprintf(fx->path, sizeof(fx->path), "%s/stratus.db", fx->dir);
    fx->db = sqlite_db_open(fx->path, &err);
    if (!fx->db)
        fail_msg("open: %s", err.msg);
    assert_st_ok(user_repo_sqlite_open(fx->db, &fx->users, &err), err);
    assert_st_ok(audit_repo_sqlite_open(fx->db, &fx->audit, &err), err);
    *state = fx;
    return 0;
}

static int
teardown(void **state)
{
    struct identity *fx = *state;

    user_repo_close(&fx->users);
    audit_repo_close(&fx->audit);
    sqlite_db_close(fx->db);
    tmpdir_remove(fx->dir);
    free(fx);
    return 0;
}

static struct user
make_user(const char *id, const char *email, int64_t created_at)
{
    struct user user;

    memset(&user, 0, sizeof(user));
    snprintf(user.id, sizeof(user.id), "%s", id ? id : "");
    if (!id)
        st_uuid_generate(user.id);
    snprintf(user.email, sizeof(user.email), "%s", email);
    strcpy(user.password_hash, "$argon2id$v=19$m=65536,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g");
    strcpy(user.nickname, "ada");
    user.status = USER_STATUS_ACTIVE;
    user.roles = USER_ROLE_USER;
    user.quota.max_vms = -1;
    user.quota.max_vcpus = -1;
    user.quota.max_memory_mib = -1;
    user.quota.max_disk_gib = -1;
    user.created_at = created_at;
    user.updated_at = created_at;
    return user;
}

static void
insert_user(struct identity *fx, const struct user *user)
{
    struct st_error err = {0};

    assert_st_ok(user_repo_insert(&fx->users, user, &err), err);
}

static struct api_key
make_key(const char *user_id, const char *name, const char *prefix, int64_t created_at)
{
    struct api_key key;

    memset(&key, 0, sizeof(key));
    st_uuid_generate(key.id);
    strcpy(key.user_id, user_id);
    snprintf(key.name, sizeof(key.name), "%s", name);
    snprintf(key.prefix, sizeof(key.prefix), "%s", prefix);
    memset(key.hash, 'f', ST_HASH_HEX_BUF - 1);
    key.created_at = created_at;
    return key;
}

/* Replace the string in @buf (@n bytes) and zero the rest, as the store reads it back. */
static void
set_text(char *buf, size_t n, const char *s)
{
    memset(buf, 0, n);
    snprintf(buf, n, "%s", s);
}

/* Raw connection of the test's own, as another program would hold it. */
static int64_t
raw_int(const char *path, const char *sql)
{
    sqlite3 *conn = NULL;
    sqlite3_stmt *st = NULL;
    int64_t v;

    assert_int_equal(sqlite3_open(path, &conn), SQLITE_OK);
    if (sqlite3_prepare_v2(conn, sql, -1, &st, NULL) != SQLITE_OK)
        fail_msg("'%s': %s", sql, sqlite3_errmsg(conn));
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(conn);
    return v;
}

static void
test_identity_sqlite__user_crud(void **state)
{
    struct identity *fx = *state;
    struct st_error err = {0};
    struct user user = make_user(USER_A, "ada@example.org", 1700000000123);
    struct user got;

    insert_user(fx, &user);
    assert_st_ok(user_repo_get(&fx->users, USER_A, &got, &err), err);
    assert_memory_equal(&got, &user, sizeof(user));
    assert_st_ok(user_repo_get_by_email(&fx->users, "ada@example.org", &got, &err), err);
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
    assert_st_ok(user_repo_update(&fx->users, &user, &err), err);
    assert_st_ok(user_repo_get(&fx->users, USER_A, &got, &err), err);
    assert_memory_equal(&got, &user, sizeof(user));
    assert_int_equal(raw_int(fx->path, "SELECT quota_max_vms FROM users"), 0);

    /* Back to the defaults: stored NULL, read as -1 (whatever negative was written). */
    user.quota.max_vms = -2;
    user.quota.max_vcpus = -1;
    user.quota.max_memory_mib = -1;
    user.quota.max_disk_gib = -1;
    assert_st_ok(user_repo_update(&fx->users, &user, &err), err);
    assert_int_equal(raw_int(fx->path, "SELECT count(*) FROM users WHERE quota_max_vms IS NULL AND "
                                       "quota_max_vcpus IS NULL AND quota_max_memory_mib IS NULL "
                                       "AND quota_max_disk_gib IS NULL"),
                     1);
    assert_st_ok(user_repo_get(&fx->users, USER_A, &got, &err), err);
    assert_int_equal(got.quota.max_vms, -1);
    assert_int_equal(got.quota.max_vcpus, -1);
    assert_int_equal(got.quota.max_memory_mib, -1);
    assert_int_equal(got.quota.max_disk_gib, -1);
    assert_int_equal(got.created_at, 1700000000123);

    /* The old address is gone with the update. */
    assert_st_err(user_repo_get_by_email(&fx->users, "ada@example.org", &got, &err), err,
                  ST_ERR_NOT_FOUND, "no user with e-mail 'ada@example.org'");
    assert_st_err(user_repo_get(&fx->users, NOBODY, &got, &err), err, ST_ERR_NOT_FOUND,
                  "no user '" NOBODY "'");
    strcpy(user.id, NOBODY);
    assert_st_err(user_repo_update(&fx->users, &user, &err), err, ST_ERR_NOT_FOUND,
                  "no user '" NOBODY "'");
}

static void
test_identity_sqlite__user_email_unique(void **state)
{
    struct identity *fx = *state;
    struct st_error err = {0};
    struct user a = make_user(USER_A, "ada@example.org", 1000);
    struct user b = make_user(USER_B, "ada@example.org", 2000);
    struct user got;

    insert_user(fx, &a);
    assert_st_err(user_repo_insert(&fx->users, &b, &err), err, ST_ERR_CONFLICT,
                  "a user with e-mail 'ada@example.org' already exists");
    assert_string_equal(err.msg, "a user with e-mail 'ada@example.org' already exists");
    /* Lower-casing is the caller's job, but the store does not rely on it. */
    strcpy(b.email, "ADA@example.org");
    assert_st_err(user_repo_insert(&fx->users, &b, &err), err, ST_ERR_CONFLICT, "already exists");

    strcpy(b.email, "grace@example.org");
    insert_user(fx, &b);
    strcpy(b.email, "ada@example.org");
    assert_st_err(user_repo_update(&fx->users, &b, &err), err, ST_ERR_CONFLICT,
                  "a user with e-mail 'ada@example.org' already exists");
    assert_st_ok(user_repo_get(&fx->users, USER_B, &got, &err), err);
    assert_string_equal(got.email, "grace@example.org");

    a = make_user(USER_A, "other@example.org", 3000);
    assert_st_err(user_repo_insert(&fx->users, &a, &err), err, ST_ERR_CONFLICT,
                  "a user with id '" USER_A "' already exists");
}

static void
test_identity_sqlite__user_list_paging(void **state)
{
    struct identity *fx = *state;
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
        assert_st_ok(user_repo_list(&fx->users, &f, &list, &err), err);
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
    assert_st_err(user_repo_list(&fx->users, &f, &list, &err), err, ST_ERR_INVALID,
                  "marker '" NOBODY "' names no user");
    assert_null(list.items);
}

static void
test_identity_sqlite__user_count_admins(void **state)
{
    struct identity *fx = *state;
    struct st_error err = {0};
    struct user admin = make_user(NULL, "admin@example.org", 1);
    struct user disabled = make_user(NULL, "former@example.org", 2);
    struct user plain = make_user(NULL, "plain@example.org", 3);
    size_t n = 99;

    assert_st_ok(user_repo_count_admins(&fx->users, &n, &err), err);
    assert_int_equal(n, 0);
    admin.roles = USER_ROLE_USER | USER_ROLE_ADMIN;
    disabled.roles = USER_ROLE_USER | USER_ROLE_ADMIN;
    disabled.status = USER_STATUS_DISABLED;
    insert_user(fx, &admin);
    insert_user(fx, &disabled);
    insert_user(fx, &plain);
    assert_st_ok(user_repo_count_admins(&fx->users, &n, &err), err);
    assert_int_equal(n, 1);

    plain.roles |= USER_ROLE_ADMIN;
    assert_st_ok(user_repo_update(&fx->users, &plain, &err), err);
    admin.status = USER_STATUS_DISABLED;
    assert_st_ok(user_repo_update(&fx->users, &admin, &err), err);
    assert_st_ok(user_repo_count_admins(&fx->users, &n, &err), err);
    assert_int_equal(n, 1);
}

static void
test_identity_sqlite__login_failures(void **state)
{
    struct identity *fx = *state;
    struct st_error err = {0};
    size_t count = 99;
    int64_t newest = 99;

    assert_st_ok(user_repo_login_failures(&fx->users, "ada@example.org", 0, &count, &newest, &err),
                 err);
    assert_int_equal(count, 0);
    assert_int_equal(newest, 0);

    /* Failures of addresses nobody has are recorded too: they are what is throttled. */
    assert_st_ok(user_repo_login_failure_add(&fx->users, "ada@example.org", 1000, &err), err);
    assert_st_ok(user_repo_login_failure_add(&fx->users, "ada@example.org", 3000, &err), err);
    assert_st_ok(user_repo_login_failure_add(&fx->users, "ada@example.org", 2000, &err), err);
    assert_st_ok(user_repo_login_failure_add(&fx->users, "ada@example.org", 2000, &err), err);
    assert_st_ok(user_repo_login_failure_add(&fx->users, "bob@example.org", 5000, &err), err);

    assert_st_ok(
        user_repo_login_failures(&fx->users, "ada@example.org", 1500, &count, &newest, &err), err);
    assert_int_equal(count, 3);
    assert_int_equal(newest, 3000);
    /* "at or after": the bound itself counts. */
    assert_st_ok(
        user_repo_login_failures(&fx->users, "ada@example.org", 3000, &count, &newest, &err), err);
    assert_int_equal(count, 1);
    assert_int_equal(newest, 3000);
    assert_st_ok(
        user_repo_login_failures(&fx->users, "ada@example.org", 3001, &count, &newest, &err), err);
    assert_int_equal(count, 0);
    assert_int_equal(newest, 0);
    assert_st_ok(user_repo_login_failures(&fx->users, "ada@example.org", 0, &count, &newest, &err),
                 err);
    assert_int_equal(count, 4);

    assert_st_ok(user_repo_login_failures_clear(&fx->users, "ada@example.org", &err), err);
    assert_st_ok(user_repo_login_failures(&fx->users, "ada@example.org", 0, &count, &newest, &err),
                 err);
    assert_int_equal(count, 0);
    assert_int_equal(newest, 0);
    /* Nothing left to forget is no error; other addresses keep theirs. */
    assert_st_ok(user_repo_login_failures_clear(&fx->users, "ada@example.org", &err), err);
    assert_st_ok(user_repo_login_failures(&fx->users, "bob@example.org", 0, &count, &newest, &err),
                 err);
    assert_int_equal(count, 1);
    assert_int_equal(newest, 5000);
}

static void
test_identity_sqlite__api_keys(void **state)
{
    struct identity *fx = *state;
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
    assert_st_ok(user_repo_key_insert(&fx->users, &k1, &err), err);
    assert_st_ok(user_repo_key_insert(&fx->users, &k2, &err), err);
    assert_st_ok(user_repo_key_insert(&fx->users, &k3, &err), err);
    /* Names are unique per user only. */
    assert_st_ok(user_repo_key_insert(&fx->users, &kb, &err), err);

    bad = make_key(USER_A, "laptop", "stk_eeeeeeee", 4000);
    assert_st_err(user_repo_key_insert(&fx->users, &bad, &err), err, ST_ERR_CONFLICT,
                  "an API key named 'laptop' already exists");
    bad = make_key(USER_B, "phone", "stk_aaaaaaaa", 4000);
    assert_st_err(user_repo_key_insert(&fx->users, &bad, &err), err, ST_ERR_CONFLICT,
                  "an API key with prefix 'stk_aaaaaaaa' already exists");
    bad = make_key(NOBODY, "phone", "stk_ffffffff", 4000);
    assert_st_err(user_repo_key_insert(&fx->users, &bad, &err), err, ST_ERR_NOT_FOUND,
                  "no user '" NOBODY "'");

    assert_st_ok(user_repo_key_get_by_prefix(&fx->users, "stk_aaaaaaaa", &got, &err), err);
    assert_memory_equal(&got, &k1, sizeof(k1));
    assert_int_equal(got.last_used_at, 0);
    assert_st_err(user_repo_key_get_by_prefix(&fx->users, "stk_zzzzzzzz", &got, &err), err,
                  ST_ERR_NOT_FOUND, "no API key with prefix 'stk_zzzzzzzz'");

    /* Oldest first; the unnamed key reads back with an empty name. */
    assert_st_ok(user_repo_key_list(&fx->users, USER_A, &list, &err), err);
    assert_int_equal(list.count, 3);
    assert_false(list.more);
    assert_string_equal(list.items[0].id, k2.id);
    assert_string_equal(list.items[1].id, k3.id);
    assert_string_equal(list.items[1].name, "");
    assert_string_equal(list.items[2].id, k1.id);
    api_key_list_release(&list);

    assert_st_ok(user_repo_key_touch(&fx->users, k1.id, 1700000000999, &err), err);
    assert_st_ok(user_repo_key_get_by_prefix(&fx->users, "stk_aaaaaaaa", &got, &err), err);
    assert_int_equal(got.last_used_at, 1700000000999);
    assert_st_err(user_repo_key_touch(&fx->users, NOBODY, 1, &err), err, ST_ERR_NOT_FOUND,
                  "no API key '" NOBODY "'");

    /* Another user's key behaves as one that does not exist, and stays. */
    assert_st_err(user_repo_key_remove(&fx->users, USER_B, k1.id, &err), err, ST_ERR_NOT_FOUND,
                  "no API key '");
    assert_st_ok(user_repo_key_get_by_prefix(&fx->users, "stk_aaaaaaaa", &got, &err), err);
    assert_st_ok(user_repo_key_remove(&fx->users, USER_A, k1.id, &err), err);
    assert_st_err(user_repo_key_get_by_prefix(&fx->users, "stk_aaaaaaaa", &got, &err), err,
                  ST_ERR_NOT_FOUND, "no API key");
    assert_st_ok(user_repo_key_list(&fx->users, USER_B, &list, &err), err);
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
test_identity_sqlite__audit_chain(void **state)
{
    struct identity *fx = *state;
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
        assert_st_ok(audit_repo_append(&fx->audit, &e[i], audit_test_hash, &err), err);
        assert_int_equal(e[i].seq, (int64_t)i + 1);
        assert_string_equal(e[i].prev_hash, i ? e[i - 1].hash : "");
        assert_int_equal(strlen(e[i].hash), ST_HASH_HEX_BUF - 1);
    }
    assert_int_equal(check_chain(&fx->audit, 2), 5);

    /* A second entry with a taken id goes nowhere and leaves the chain as it was. */
    dup = e[0];
    assert_st_err(audit_repo_append(&fx->audit, &dup, audit_test_hash, &err), err, ST_ERR_CONFLICT,
                  "an audit entry with id '");
    assert_int_equal(dup.seq, 1);
    assert_int_equal(check_chain(&fx->audit, 100), 5);

    assert_st_ok(audit_repo_list(&fx->audit, &f, &list, &err), err);
    assert_int_equal(list.count, 5);
    for (i = 0; i < list.count; i++)
        assert_memory_equal(&list.items[i], &e[i], sizeof(e[i]));
    audit_list_release(&list);

    strcpy(f.user_id, USER_A);
    assert_st_ok(audit_repo_list(&fx->audit, &f, &list, &err), err);
    assert_int_equal(list.count, 3);
    assert_int_equal(list.items[0].seq, 1);
    assert_int_equal(list.items[1].seq, 4);
    assert_int_equal(list.items[2].seq, 5);
    audit_list_release(&list);

    strcpy(f.target_id, NOBODY);
    assert_st_ok(audit_repo_list(&fx->audit, &f, &list, &err), err);
    assert_int_equal(list.count, 2);
    assert_int_equal(list.items[1].seq, 5);
    audit_list_release(&list);

    /* Paging by entry id; the marker need not match the filters. */
    f.user_id[0] = '\0';
    f.limit = 1;
    strcpy(f.marker, e[0].id);
    assert_st_ok(audit_repo_list(&fx->audit, &f, &list, &err), err);
    assert_int_equal(list.count, 1);
    assert_true(list.more);
    assert_int_equal(list.items[0].seq, 2);
    strcpy(f.marker, list.items[0].id);
    audit_list_release(&list);
    assert_st_ok(audit_repo_list(&fx->audit, &f, &list, &err), err);
    assert_int_equal(list.count, 1);
    assert_false(list.more);
    assert_int_equal(list.items[0].seq, 5);
    audit_list_release(&list);
    strcpy(f.marker, e[2].id); /* no target: outside the filter, still a marker */
    assert_st_ok(audit_repo_list(&fx->audit, &f, &list, &err), err);
    assert_int_equal(list.count, 1);
    assert_int_equal(list.items[0].seq, 5);
    audit_list_release(&list);
    f.target_id[0] = '\0';
    f.limit = 0;
    strcpy(f.marker, e[2].id);
    assert_st_ok(audit_repo_list(&fx->audit, &f, &list, &err), err);
    assert_int_equal(list.count, 2);
    assert_false(list.more);
    assert_int_equal(list.items[0].seq, 4);
    audit_list_release(&list);

    strcpy(f.marker, NOBODY);
    assert_st_err(audit_repo_list(&fx->audit, &f, &list, &err), err, ST_ERR_INVALID,
                  "marker '" NOBODY "' names no audit entry");

    assert_st_ok(audit_repo_scan(&fx->audit, 3, 1, &list, &err), err);
    assert_int_equal(list.count, 1);
    assert_true(list.more);
    assert_int_equal(list.items[0].seq, 4);
    audit_list_release(&list);
    assert_st_ok(audit_repo_scan(&fx->audit, 5, 10, &list, &err), err);
    assert_int_equal(list.count, 0);
    assert_false(list.more);
    audit_list_release(&list);
}

/* One process of the concurrent test: its own connection, AUDIT_APPENDS appends. */
static int
audit_appender(const char *path, const char *user_id, int gate)
{
    struct st_error err = {0};
    struct sqlite_db *db;
    struct audit_repo audit;
    struct audit_entry e;
    char c;
    int i;

    if (read(gate, &c, 1) < 0)
        return 3;
    db = sqlite_db_open(path, &err);
    if (!db || audit_repo_sqlite_open(db, &audit, &err) < 0) {
        fprintf(stderr, "appender open: %s\n", err.msg);
        return 1;
    }
    for (i = 0; i < AUDIT_APPENDS; i++) {
        e = make_entry(user_id, "", 200);
        if (audit_repo_append(&audit, &e, audit_test_hash, &err) < 0) {
            fprintf(stderr, "append %d: %s\n", i, err.msg);
            return 1;
        }
        /* Give the other process its turn, so that appends alternate. */
        st_sleep_ms(1);
    }
    audit_repo_close(&audit);
    sqlite_db_close(db);
    return 0;
}

/* Two processes append at once: one chain, seq 1..400, nothing forked or lost. */
static void
test_identity_sqlite__audit_concurrent_appends(void **state)
{
    struct identity *fx = *state;
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
            _exit(audit_appender(fx->path, users[i], gate[0]));
        }
    }
    close(gate[0]);
    close(gate[1]);
    for (i = 0; i < 2; i++) {
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    assert_int_equal(check_chain(&fx->audit, 64), 2 * AUDIT_APPENDS);
    for (i = 0; i < 2; i++) {
        strcpy(f.user_id, users[i]);
        assert_st_ok(audit_repo_list(&fx->audit, &f, &list, &err), err);
        assert_int_equal(list.count, AUDIT_APPENDS);
        audit_list_release(&list);
    }
}

static void
test_identity_sqlite__schema_is_current(void **state)
{
    struct identity *fx = *state;
    struct st_error err = {0};
    struct sqlite_db *again;
    int version = -1;

    assert_st_ok(sqlite_db_schema_version(fx->db, &version, &err), err);
    assert_int_equal(version, 3);
    assert_int_equal(raw_int(fx->path, "SELECT count(*) FROM sqlite_master WHERE type = 'index' "
                                       "AND name IN ('users_page', 'api_keys_user_page', "
                                       "'login_failures_email_at', 'audit_log_user', "
                                       "'audit_log_target')"),
                     5);

    /* Re-opening applies nothing again. */
    again = sqlite_db_open(fx->path, &err);
    assert_non_null(again);
    assert_st_ok(sqlite_db_schema_version(again, &version, &err), err);
    assert_int_equal(version, 3);
    sqlite_db_close(again);
    assert_int_equal(raw_int(fx->path, "SELECT count(*) FROM schema_version"), 3);
}

/* Migration 1 exactly as released: what a database made by the first version holds. */
static const char migration_1[] =
    "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL);"
    "CREATE TABLE vms (id TEXT PRIMARY KEY NOT NULL, owner_id TEXT NOT NULL, name TEXT NOT NULL,"
    "  status TEXT NOT NULL, step TEXT NOT NULL, vcpus INTEGER NOT NULL,"
    "  memory_mib INTEGER NOT NULL, disk_gib INTEGER NOT NULL, image_id TEXT NOT NULL,"
    "  flavor_id TEXT, fault TEXT, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);"
    "CREATE UNIQUE INDEX vms_owner_name ON vms (owner_id, name);"
    "CREATE INDEX vms_owner_page ON vms (owner_id, created_at, id);"
    "CREATE INDEX vms_image ON vms (image_id);"
    "CREATE INDEX vms_page ON vms (created_at, id);"
    "CREATE TABLE images (id TEXT PRIMARY KEY NOT NULL, owner_id TEXT NOT NULL,"
    "  name TEXT NOT NULL, format TEXT NOT NULL, status TEXT NOT NULL,"
    "  size_bytes INTEGER NOT NULL, virtual_size_bytes INTEGER NOT NULL,"
    "  created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);"
    "CREATE UNIQUE INDEX images_owner_name ON images (owner_id, name);"
    "CREATE INDEX images_owner_page ON images (owner_id, created_at, id);"
    "CREATE TABLE flavors (id TEXT PRIMARY KEY NOT NULL, owner_id TEXT NOT NULL,"
    "  name TEXT NOT NULL, vcpus INTEGER NOT NULL, memory_mib INTEGER NOT NULL,"
    "  disk_gib INTEGER NOT NULL, created_at INTEGER NOT NULL);"
    "CREATE UNIQUE INDEX flavors_owner_name ON flavors (owner_id, name);"
    "CREATE INDEX flavors_owner_page ON flavors (owner_id, created_at, id);"
    "INSERT INTO schema_version VALUES (1, 1700000000000);"
    "INSERT INTO images VALUES ('11111111-1111-4111-8111-111111111111',"
    "  '" USER_A "', 'debian-12', 'qcow2', 'active', 1024, 4096, 1000, 1000);";

static void
test_identity_sqlite__migration_from_version_1(void **state)
{
    struct identity *fx = *state;
    struct st_error err = {0};
    struct sqlite_db *db;
    struct image_repo images;
    struct user_repo users;
    struct image got;
    struct user user = make_user(USER_A, "ada@example.org", 1);
    sqlite3 *raw = NULL;
    char path[160];
    int version = -1;

    snprintf(path, sizeof(path), "%s/v1.db", fx->dir);
    assert_int_equal(sqlite3_open(path, &raw), SQLITE_OK);
    assert_int_equal(sqlite3_exec(raw, migration_1, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(raw);

    db = sqlite_db_open(path, &err);
    if (!db)
        fail_msg("open a version 1 database: %s", err.msg);
    assert_st_ok(sqlite_db_schema_version(db, &version, &err), err);
    assert_int_equal(version, 3);
    assert_int_equal(raw_int(path, "SELECT applied_at FROM schema_version WHERE version = 1"),
                     1700000000000);

    /* The image made before visibility existed is private. */
    assert_st_ok(image_repo_sqlite_open(db, &images, &err), err);
    assert_st_ok(image_repo_get(&images, NULL, "11111111-1111-4111-8111-111111111111", &got, &err),
                 err);
    assert_int_equal(got.visibility, IMAGE_VISIBILITY_PRIVATE);
    assert_string_equal(got.name, "debian-12");
    assert_st_err(image_repo_get(&images, USER_B, got.id, &got, &err), err, ST_ERR_NOT_FOUND,
                  "no image");
    image_repo_close(&images);

    assert_st_ok(user_repo_sqlite_open(db, &users, &err), err);
    assert_st_ok(user_repo_insert(&users, &user, &err), err);
    user_repo_close(&users);
    sqlite_db_close(db);

    db = sqlite_db_open(path, &err);
    assert_non_null(db);
    sqlite_db_close(db);
    assert_int_equal(raw_int(path, "SELECT count(*) FROM schema_version"), 3);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_identity_sqlite__user_crud, setup, teardown),
        cmocka_unit_test_setup_teardown(test_identity_sqlite__user_email_unique, setup, teardown),
        cmocka_unit_test_setup_teardown(test_identity_sqlite__user_list_paging, setup, teardown),
        cmocka_unit_test_setup_teardown(test_identity_sqlite__user_count_admins, setup, teardown),
        cmocka_unit_test_setup_teardown(test_identity_sqlite__login_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_identity_sqlite__api_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_identity_sqlite__audit_chain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_identity_sqlite__audit_concurrent_appends, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_identity_sqlite__schema_is_current, setup, teardown),
        cmocka_unit_test_setup_teardown(test_identity_sqlite__migration_from_version_1, setup,
                                        teardown),
    };

    if (sodium_init() < 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
