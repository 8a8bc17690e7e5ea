/*
 * test_ops_sqlite.c - what only the SQLite store has for operations,
 * events and idempotency records: the indexes of migration 3.  What every
 * store must do is in tests/contract/test_ops.c.
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

struct ops {
    char dir[64];
    char path[128];
    struct sqlite_db *db;
};

static int
setup(void **state)
{
    struct ops *fx = calloc(1, sizeof(*fx));
    struct st_error err = {0};

    assert_non_null(fx);
    if (tmpdir_make(fx->dir, sizeof(fx->dir), "stratus-ops", &err) < 0)
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
    struct ops *fx = *state;

    sqlite_db_close(fx->db);
    tmpdir_remove(fx->dir);
    free(fx);
    return 0;
}

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
test_ops_sqlite__schema_holds_operations(void **state)
{
    struct ops *fx = *state;
    struct st_error err = {0};
    int version = -1;

    assert_st_ok(sqlite_db_schema_version(fx->db, &version, &err), err);
    assert_int_equal(version, 4);
    assert_int_equal(raw_int(fx->path, "SELECT count(*) FROM sqlite_master WHERE type = 'index' "
                                       "AND name IN ('operations_claim', 'operations_target', "
                                       "'operations_owner_page', 'operations_page', "
                                       "'operations_active', 'vm_events_vm', 'vm_events_at', "
                                       "'idempotency_keys_expires')"),
                     8);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ops_sqlite__schema_holds_operations, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
