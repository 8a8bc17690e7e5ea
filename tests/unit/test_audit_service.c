/*
 * test_audit_service.c - the audit chain and its verifier, on the real
 * SQLite store; the tampering is done with plain SQL behind the service.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "repositories/sqlite/sqlite_internal.h"
#include "services/audit_service.h"
#include "support/tmpdir.h"

#define ENTRIES 12

struct audit_fx {
    char dir[64];
    struct sqlite_db *db;
    struct audit_repo log;
    struct audit_service svc;
};

static int
setup(void **state)
{
    struct audit_fx *fx = calloc(1, sizeof(*fx));
    struct st_error err = {0};
    char path[128];
    int i;

    if (!fx || tmpdir_make(fx->dir, sizeof(fx->dir), "stratus-test-audit", &err) < 0)
        goto fail;
    snprintf(path, sizeof(path), "%s/stratus.db", fx->dir);
    fx->db = sqlite_db_open(path, &err);
    if (!fx->db || audit_repo_sqlite_open(fx->db, &fx->log, &err) < 0)
        goto fail;
    fx->svc.log = &fx->log;
    for (i = 0; i < ENTRIES; i++) {
        struct audit_entry e;

        memset(&e, 0, sizeof(e));
        snprintf(e.method, sizeof(e.method), "%s", i % 2 ? "DELETE" : "POST");
        snprintf(e.route, sizeof(e.route), "/v1/vms");
        st_uuid_generate(e.user_id);
        st_uuid_generate(e.target_id);
        e.status = 201;
        snprintf(e.request_id, sizeof(e.request_id), "req-%d", i);
        snprintf(e.client_addr, sizeof(e.client_addr), "127.0.0.1");
        if (audit_service_record(&fx->svc, &e, &err) < 0)
            goto fail;
    }
    *state = fx;
    return 0;

fail:
    fprintf(stderr, "setup: %s\n", err.msg);
    return -1;
}

static int
teardown(void **state)
{
    struct audit_fx *fx = *state;

    audit_repo_close(&fx->log);
    sqlite_db_close(fx->db);
    tmpdir_remove(fx->dir);
    free(fx);
    return 0;
}

static void
exec_sql(struct audit_fx *fx, const char *sql)
{
    char *msg = NULL;

    if (sqlite3_exec(sqlite_db_handle(fx->db), sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg);
}

static struct audit_verdict
verify(struct audit_fx *fx)
{
    struct st_error err = {0};
    struct audit_verdict v;

    if (audit_service_verify(&fx->svc, &v, &err) < 0)
        fail_msg("verify: %s", err.msg);
    return v;
}

static void
test_audit_service__chain_is_intact(void **state)
{
    struct audit_fx *fx = *state;
    struct audit_verdict v = verify(fx);
    struct audit_filter f;
    struct audit_list list;
    struct st_error err = {0};
    char hash[ST_HASH_HEX_BUF];
    size_t i;

    assert_int_equal(v.broken_seq, 0);
    assert_int_equal(v.entries, ENTRIES);
    memset(&f, 0, sizeof(f));
    f.limit = 100;
    assert_int_equal(audit_service_list(&fx->svc, &f, &list, &err), 0);
    assert_int_equal(list.count, ENTRIES);
    assert_string_equal(list.items[0].prev_hash, "");
    for (i = 0; i < list.count; i++) {
        audit_entry_hash(&list.items[i], hash);
        assert_string_equal(hash, list.items[i].hash);
        if (i > 0)
            assert_string_equal(list.items[i].prev_hash, list.items[i - 1].hash);
    }
    audit_list_release(&list);
}

static void
test_audit_service__edited_entry_is_named(void **state)
{
    struct audit_fx *fx = *state;
    struct audit_verdict v;

    exec_sql(fx, "UPDATE audit_log SET status = 200 WHERE seq = 5");
    v = verify(fx);
    assert_int_equal(v.broken_seq, 5);
    assert_non_null(strstr(v.why, "contents"));
}

static void
test_audit_service__rehashed_entry_breaks_the_next_link(void **state)
{
    struct audit_fx *fx = *state;
    struct audit_verdict v;

    /* Whoever edits a row and fixes its hash still leaves the next entry pointing elsewhere. */
    exec_sql(fx, "UPDATE audit_log SET hash = 'f00d' WHERE seq = 7");
    v = verify(fx);
    assert_int_equal(v.broken_seq, 7);
    exec_sql(fx, "UPDATE audit_log SET hash = (SELECT prev_hash FROM audit_log WHERE seq = 8) "
                 "WHERE seq = 7");
    v = verify(fx);
    assert_int_equal(v.broken_seq, 0);
    exec_sql(fx, "UPDATE audit_log SET route = '/v1/other' WHERE seq = 7");
    v = verify(fx);
    assert_int_equal(v.broken_seq, 7);
}

static void
test_audit_service__removed_entry_is_named(void **state)
{
    struct audit_fx *fx = *state;
    struct audit_verdict v;

    exec_sql(fx, "DELETE FROM audit_log WHERE seq = 3");
    v = verify(fx);
    assert_int_equal(v.broken_seq, 4);
    assert_non_null(strstr(v.why, "missing"));
}

static void
test_audit_service__empty_log_is_intact(void **state)
{
    struct audit_fx *fx = *state;
    struct audit_verdict v;

    exec_sql(fx, "DELETE FROM audit_log");
    v = verify(fx);
    assert_int_equal(v.broken_seq, 0);
    assert_int_equal(v.entries, 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
        T(test_audit_service__chain_is_intact),
        T(test_audit_service__edited_entry_is_named),
        T(test_audit_service__rehashed_entry_breaks_the_next_link),
        T(test_audit_service__removed_entry_is_named),
        T(test_audit_service__empty_log_is_intact),
#undef T
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
