/*
 * test_repo_sqlite.c - what only the SQLite store has: its file, its
 * indexes and settings, and its write lock, against a real database file
 * in a temporary directory.  What every store must do is in
 * tests/contract/test_repo.c.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "repositories/sqlite/sqlite_db.h"
#include "repositories/sqlite/sqlite_internal.h"
#include "support/tmpdir.h"
#include "util/mem.h"

#define OWNER_A "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
#define IMAGE_1 "11111111-1111-4111-8111-111111111111"

struct fixture {
    char dir[64];
    char path[128];
    struct sqlite_db *db;
    struct vm_repo vms;
};

static int
setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    struct st_error err = {0};

    assert_non_null(fx);
    if (tmpdir_make(fx->dir, sizeof(fx->dir), "stratus-sqlite", &err) < 0)
        fail_msg("temp dir: %s", err.msg);
    snprintf(fx->path, sizeof(fx->path), "%s/stratus.db", fx->dir);
    fx->db = sqlite_db_open(fx->path, &err);
    if (!fx->db)
        fail_msg("open: %s", err.msg);
    assert_int_equal(vm_repo_sqlite_open(fx->db, &fx->vms, &err), 0);
    *state = fx;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *fx = *state;

    vm_repo_close(&fx->vms);
    sqlite_db_close(fx->db);
    tmpdir_remove(fx->dir);
    free(fx);
    return 0;
}

static struct vm
make_vm(const char *owner, const char *name, const char *image_id, int64_t created_at)
{
    struct vm vm;

    memset(&vm, 0, sizeof(vm));
    st_uuid_generate(vm.id);
    strcpy(vm.owner_id, owner);
    snprintf(vm.name, sizeof(vm.name), "%s", name);
    vm.status = VM_STATUS_CREATING;
    vm.step = VM_STEP_ROW;
    vm.vcpus = 2;
    vm.memory_mib = 2048;
    vm.disk_gib = 10;
    strcpy(vm.image_id, image_id);
    vm.created_at = created_at;
    vm.updated_at = created_at;
    return vm;
}

/* Raw second connection on the same file, as another process would hold it. */
static sqlite3 *
raw_open(const char *path)
{
    sqlite3 *conn = NULL;

    assert_int_equal(sqlite3_open(path, &conn), SQLITE_OK);
    return conn;
}

static int64_t
raw_int(sqlite3 *conn, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int64_t v;

    assert_int_equal(sqlite3_prepare_v2(conn, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* The file, its indexes and the settings the store depends on. */
static void
test_repo_sqlite__schema_on_file(void **state)
{
    struct fixture *fx = *state;
    sqlite3 *raw = raw_open(fx->path);
    sqlite3_stmt *st = NULL;

    assert_int_equal(raw_int(raw, "SELECT count(*) FROM schema_version"), 4);
    assert_string_equal(sqlite3_db_filename(raw, "main"), fx->path);
    assert_int_equal(raw_int(raw, "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND "
                                  "name IN ('vms_owner_name', 'vms_owner_page', 'vms_image', "
                                  "'images_owner_name', 'images_owner_page', "
                                  "'flavors_owner_name', 'flavors_owner_page', 'vms_page')"),
                     8);
    sqlite3_close(raw);

    raw = sqlite_db_handle(fx->db);
    assert_int_equal(raw_int(raw, "PRAGMA foreign_keys"), 1);
    assert_int_equal(raw_int(raw, "PRAGMA synchronous"), 1); /* NORMAL */
    assert_int_equal(sqlite3_prepare_v2(raw, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
}

struct locker {
    sqlite3 *conn;
    int hold_ms;
};

static void *
locker_release(void *arg)
{
    struct locker *l = arg;

    st_sleep_ms(l->hold_ms);
    sqlite3_exec(l->conn, "COMMIT", NULL, NULL, NULL);
    return NULL;
}

static void
test_repo_sqlite__write_waits_for_lock(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct locker l = {.conn = raw_open(fx->path), .hold_ms = 400};
    struct vm vm = make_vm(OWNER_A, "patient", IMAGE_1, 1);
    struct vm got;
    pthread_t t;
    int64_t start;

    assert_int_equal(sqlite3_exec(l.conn, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(pthread_create(&t, NULL, locker_release, &l), 0);
    start = st_monotonic_ms();
    if (vm_repo_insert(&fx->vms, &vm, &err) != 0)
        fail_msg("insert: %s", err.msg);
    assert_true(st_monotonic_ms() - start >= 300);
    pthread_join(t, NULL);
    sqlite3_close(l.conn);
    assert_int_equal(vm_repo_get(&fx->vms, OWNER_A, vm.id, &got, &err), 0);
}

static void
test_repo_sqlite__write_busy_unavailable(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    sqlite3 *other = raw_open(fx->path);
    struct vm vm = make_vm(OWNER_A, "impatient", IMAGE_1, 1);
    struct vm got;
    int64_t start;
    int64_t took;

    sqlite_db_set_busy_bound(fx->db, 300);
    assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    start = st_monotonic_ms();
    assert_int_equal(vm_repo_insert(&fx->vms, &vm, &err), -1);
    took = st_monotonic_ms() - start;
    assert_int_equal(err.code, ST_ERR_UNAVAILABLE);
    assert_int_equal(err.native & 0xff, SQLITE_BUSY);
    assert_true(took >= 200 && took < 3000);

    /* Reads still work while a writer holds the lock (WAL). */
    assert_int_equal(vm_repo_get(&fx->vms, OWNER_A, vm.id, &got, &err), -1);
    assert_int_equal(err.code, ST_ERR_NOT_FOUND);

    assert_int_equal(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(other);
    if (vm_repo_insert(&fx->vms, &vm, &err) != 0)
        fail_msg("insert after release: %s", err.msg);
}

static void
test_repo_sqlite__open_unwritable(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    char path[192];
    FILE *f;

    /* A path below a regular file cannot be created, even by root. */
    snprintf(path, sizeof(path), "%s/plain-file", fx->dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    snprintf(path, sizeof(path), "%s/plain-file/stratus.db", fx->dir);
    assert_null(sqlite_db_open(path, &err));
    assert_int_equal(err.code, ST_ERR_BACKEND);
    assert_int_equal(err.native & 0xff, SQLITE_CANTOPEN);
    assert_non_null(strstr(err.msg, "cannot open database '"));
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "Not a directory"));

    assert_null(sqlite_db_open("", &err));
    assert_int_equal(err.code, ST_ERR_INVALID);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_repo_sqlite__schema_on_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_repo_sqlite__write_waits_for_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_repo_sqlite__write_busy_unavailable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_repo_sqlite__open_unwritable, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
