/*
 * test_identity_sqlite.c - what only the SQLite store has for identity:
 * the indexes of migration 2, and migration 2 on a database file made at
 * version 1.  Users, keys, failed logins and the audit chain on every
 * store are in tests/contract/test_identity.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "repositories/sqlite/sqlite_db.h"
#include "repositories/sqlite/sqlite_internal.h"
#include "support/fixture.h"
#include "support/tmpdir.h"
#include "util/mem.h"

#define USER_A "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
#define USER_B "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"

struct identity {
    char dir[64];
    char path[128];
    struct sqlite_db *db;
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
    *state = fx;
    return 0;
}

static int
teardown(void **state)
{
    struct identity *fx = *state;

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
test_identity_sqlite__schema_indexes(void **state)
{
    struct identity *fx = *state;
    struct st_error err = {0};
    int version = -1;

    assert_st_ok(sqlite_db_schema_version(fx->db, &version, &err), err);
    assert_int_equal(version, 4);
    assert_int_equal(raw_int(fx->path, "SELECT count(*) FROM sqlite_master WHERE type = 'index' "
                                       "AND name IN ('users_page', 'api_keys_user_page', "
                                       "'login_failures_email_at', 'audit_log_user', "
                                       "'audit_log_target')"),
                     5);
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
    assert_int_equal(version, 4);
    assert_int_equal(raw_int(path, "SELECT applied_at FROM schema_version WHERE version = 1"),
                     1700000000000);

    /* The image made before visibility existed is private. */
    assert_st_ok(image_repo_sqlite_open(db, &images, &err), err);
    assert_st_ok(image_repo_get(&images, NULL, "11111111-1111-4111-8111-111111111111", &got, &err),
                 err);
    assert_int_equal(got.visibility, IMAGE_VISIBILITY_PRIVATE);
    /* ... and, made before revisions existed, at revision 1. */
    assert_int_equal(got.revision, 1);
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
    assert_int_equal(raw_int(path, "SELECT count(*) FROM schema_version"), 4);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_identity_sqlite__schema_indexes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_identity_sqlite__migration_from_version_1, setup,
                                        teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
