/*
 * test_pg_conn.c - the core of the PostgreSQL store (pg_db.c) against a
 * real server: migrations, lost connections, error mapping, pages, raw rows.
 *
 * STRATUS_TEST_PG_URL is a libpq URI of database "stratus" on a throwaway
 * server, as a superuser (scripts/pg.sh start prints one).  Each test makes
 * a database of its own there and drops it at the end.  Without the
 * variable every test fails: a PostgreSQL test that skips would pass
 * unnoticed.
 */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "models/common.h"
#include "repositories/postgres/pg_db.h"
#include "repositories/postgres/pg_internal.h"
#include "util/mem.h"

#define MIGRATIONS 4
#define OPENERS 4

struct fixture {
    PGconn *admin; /* superuser, on the database STRATUS_TEST_PG_URL names */
    char names[2][64];
    char *urls[2]; /* conninfo of databases names[i]; NULL until made */
    struct pg_db *db;
};

#define expect_ok(call, e)                                                                         \
    do {                                                                                           \
        if ((call) < 0)                                                                            \
            fail_msg("%s failed: %s: %s", #call, st_err_code_name((e).code), (e).msg);             \
    } while (0)

#define expect_err(call, e, want_code, needle)                                                     \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != -1 || (e).code != (want_code) || !strstr((e).msg, (needle)))                    \
            fail_msg("%s: want -1 %s containing \"%s\", got %d %s: %s", #call,                     \
                     st_err_code_name(want_code), (needle), rc_, st_err_code_name((e).code),       \
                     (e).msg);                                                                     \
    } while (0)

/* ---- the server, as the superuser sees it ---- */

static PGresult *raw_query(PGconn *conn, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Run @fmt on @conn; any failure fails the test.  PQclear() the result. */
static PGresult *
raw_query(PGconn *conn, const char *fmt, ...)
{
    char sql[1024];
    PGresult *res;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(conn));
    return res;
}

/* The first column of the first row of @sql, as a number. */
static int64_t
raw_int(PGconn *conn, const char *sql)
{
    PGresult *res = raw_query(conn, "%s", sql);
    int64_t v;

    assert_int_equal(PQntuples(res), 1);
    v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return v;
}

static void
raw_exec(PGconn *conn, const char *sql)
{
    PQclear(raw_query(conn, "%s", sql));
}

/* Append @s to @buf (size @n) as a quoted conninfo value. */
static void
conninfo_quote(char *buf, size_t n, const char *s)
{
    size_t len = strlen(buf);

    if (len + 1 < n)
        buf[len++] = '\'';
    for (; *s && len + 3 < n; s++) {
        if (*s == '\'' || *s == '\\')
            buf[len++] = '\\';
        buf[len++] = *s;
    }
    buf[len++] = '\'';
    buf[len] = '\0';
}

/* The conninfo of STRATUS_TEST_PG_URL with the database @dbname instead; free() it. */
static char *
conninfo_for(const char *dbname)
{
    const char *url = getenv("STRATUS_TEST_PG_URL");
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &perr);
    PQconninfoOption *o;
    char buf[2048] = "";

    if (!opts)
        fail_msg("STRATUS_TEST_PG_URL: %s", perr ? perr : "out of memory");
    for (o = opts; o->keyword; o++) {
        if (!o->val || !*o->val || strcmp(o->keyword, "dbname") == 0)
            continue;
        snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), "%s=", o->keyword);
        conninfo_quote(buf, sizeof(buf), o->val);
        strncat(buf, " ", sizeof(buf) - strlen(buf) - 1);
    }
    PQconninfoFree(opts);
    strncat(buf, "dbname=", sizeof(buf) - strlen(buf) - 1);
    conninfo_quote(buf, sizeof(buf), dbname);
    return st_xstrdup(buf);
}

/* Make fresh database @i of the test; returns its conninfo. */
static const char *
make_db(struct fixture *fx, int i)
{
    static int seq;

    snprintf(fx->names[i], sizeof(fx->names[i]), "t_%d_%d", (int)getpid(), ++seq);
    PQclear(raw_query(fx->admin, "CREATE DATABASE %s", fx->names[i]));
    fx->urls[i] = conninfo_for(fx->names[i]);
    return fx->urls[i];
}

/* End the server process behind @conn, and wait until it is gone. */
static void
kill_backend(struct fixture *fx, PGconn *conn)
{
    PGresult *res =
        raw_query(fx->admin, "SELECT pg_terminate_backend(%d, 5000)", PQbackendPID(conn));

    assert_string_equal(PQgetvalue(res, 0, 0), "t");
    PQclear(res);
}

/* Without a server every test fails, in its own body so that each counts. */
static int
setup(void **state)
{
    const char *url = getenv("STRATUS_TEST_PG_URL");
    struct fixture *fx = calloc(1, sizeof(*fx));

    assert_non_null(fx);
    *state = fx;
    if (!url || !*url)
        return 0;
    fx->admin = PQconnectdb(url);
    if (PQstatus(fx->admin) != CONNECTION_OK)
        fail_msg("cannot connect to STRATUS_TEST_PG_URL: %s", PQerrorMessage(fx->admin));
    PQsetNoticeProcessor(fx->admin, NULL, NULL);
    make_db(fx, 0);
    return 0;
}

static struct fixture *
fixture_of(void **state)
{
    struct fixture *fx = *state;

    if (!fx->admin)
        fail_msg("STRATUS_TEST_PG_URL is not set: give the URL of database \"stratus\" on a "
                 "throwaway PostgreSQL server as a superuser (scripts/pg.sh start DIR PORT "
                 "prints one)");
    return fx;
}

static int
teardown(void **state)
{
    struct fixture *fx = *state;
    int i;

    pg_db_close(fx->db);
    for (i = 0; i < 2; i++) {
        if (!fx->urls[i])
            continue;
        PQclear(raw_query(fx->admin, "DROP DATABASE %s WITH (FORCE)", fx->names[i]));
        free(fx->urls[i]);
    }
    if (fx->admin)
        PQfinish(fx->admin);
    free(fx);
    return 0;
}

/* ---- a scratch table ---- */

struct widget {
    char id[40];
    char name[40];
    int64_t n;
};

static const struct pg_stmt widget_insert = {
    "t_widget_insert", "INSERT INTO widgets (id, name, n, note) VALUES ($1, $2, $3, $4)"};
static const struct pg_stmt widget_get = {"t_widget_get",
                                          "SELECT id, name, n FROM widgets WHERE id = $1"};
static const struct pg_stmt widget_rename = {"t_widget_rename",
                                             "UPDATE widgets SET name = $2 WHERE id = $1"};
/* The list query shape of the stores: the marker row flagged, then one page after it. */
static const struct pg_stmt widget_list = {
    "t_widget_list",
    "SELECT true, id, name, n FROM widgets WHERE id = $1 "
    "UNION ALL SELECT * FROM (SELECT false, id, name, n FROM widgets"
    " WHERE $1::text IS NULL OR (n, id) > (SELECT n, id FROM widgets WHERE id = $1)"
    " ORDER BY n, id LIMIT $2) page "
    "ORDER BY 1 DESC, 4, 2"};
static const struct pg_stmt fail_with = {"t_fail_with", "SELECT t_fail_with($1)"};
static const struct pg_stmt echo = {"t_echo",
                                    "SELECT $1::text, $2::bigint, $3::boolean, $4::text IS NULL"};
static const struct pg_stmt nulls = {"t_nulls", "SELECT NULL::text, NULL::bigint, NULL::boolean"};

static const struct pg_row_ref widget_ref = {.noun = "widget", .id = "w1", .name = "alpha"};

static void
make_scratch(struct pg_db *db)
{
    struct st_error err = {0};

    expect_ok(pg_db_exec_sql(db,
                             "CREATE TABLE widgets (id TEXT PRIMARY KEY, name TEXT UNIQUE,"
                             " n BIGINT NOT NULL, note TEXT)",
                             &err),
              err);
    expect_ok(pg_db_exec_sql(db,
                             "CREATE FUNCTION t_fail_with(code text) RETURNS void LANGUAGE plpgsql"
                             " AS $$ BEGIN RAISE EXCEPTION 'forced %', code USING ERRCODE = code;"
                             " END $$",
                             &err),
              err);
}

/* Open database @i of the test with the scratch table made. */
static struct pg_db *
open_scratch(struct fixture *fx, int i)
{
    struct st_error err = {0};
    struct pg_db *db = pg_db_open(fx->urls[i], &err);

    if (!db)
        fail_msg("open: %s", err.msg);
    make_scratch(db);
    return db;
}

static int
insert_widget(struct pg_db *db, const char *id, const char *name, int64_t n, struct st_error *err)
{
    struct pg_row_ref ref = {.noun = "widget", .id = id, .name = name};
    struct pg_params p;

    pg_params_init(&p);
    pg_param_text(&p, id);
    pg_param_text(&p, name);
    pg_param_int(&p, n);
    pg_param_text(&p, NULL);
    return pg_db_write(db, &widget_insert, &p, &ref, err);
}

static int
read_widget_at(const PGresult *res, int row, int col, void *item)
{
    struct widget *w = item;

    pg_get_text(res, row, col, w->id, sizeof(w->id));
    pg_get_text(res, row, col + 1, w->name, sizeof(w->name));
    w->n = pg_get_int(res, row, col + 2);
    return 0;
}

static int
read_widget(const PGresult *res, int row, void *item, struct st_error *err)
{
    (void)err;
    return read_widget_at(res, row, 0, item);
}

static int
read_listed_widget(const PGresult *res, int row, void *item, struct st_error *err)
{
    (void)err;
    return read_widget_at(res, row, 1, item);
}

static int
get_widget(struct pg_db *db, const char *id, struct widget *w, struct st_error *err)
{
    struct pg_params p;

    pg_params_init(&p);
    pg_param_text(&p, id);
    return pg_db_get(db, &widget_get, &p, "widget", id, read_widget, w, err);
}

/* ---- migrations ---- */

static void
test_pg_conn__migrations_apply_once(void **state)
{
    struct fixture *fx = fixture_of(state);
    struct st_error err = {0};
    int64_t applied_at;
    int64_t rows;
    int version = -1;

    fx->db = pg_db_open(fx->urls[0], &err);
    if (!fx->db)
        fail_msg("open: %s", err.msg);
    expect_ok(pg_db_schema_version(fx->db, &version, &err), err);
    assert_int_equal(version, MIGRATIONS);
    expect_ok(pg_db_ping(fx->db, &err), err);
    assert_int_equal(raw_int(pg_db_conn(fx->db), "SELECT count(*) FROM schema_version"),
                     MIGRATIONS);
    applied_at = raw_int(pg_db_conn(fx->db), "SELECT sum(applied_at) FROM schema_version");
    /* Every table of the schema is there, the later columns too. */
    expect_ok(pg_db_count(fx->db, "vms", &rows, &err), err);
    assert_int_equal(rows, 0);
    expect_ok(pg_db_count(fx->db, "idempotency_keys", &rows, &err), err);
    raw_exec(pg_db_conn(fx->db), "SELECT visibility FROM images");
    pg_db_close(fx->db);

    fx->db = pg_db_open(fx->urls[0], &err);
    if (!fx->db)
        fail_msg("second open: %s", err.msg);
    expect_ok(pg_db_schema_version(fx->db, &version, &err), err);
    assert_int_equal(version, MIGRATIONS);
    assert_int_equal(raw_int(pg_db_conn(fx->db), "SELECT count(*) FROM schema_version"),
                     MIGRATIONS);
    assert_int_equal(raw_int(pg_db_conn(fx->db), "SELECT sum(applied_at) FROM schema_version"),
                     applied_at);
    pg_db_close(NULL);
}

static void
test_pg_conn__newer_schema_refused(void **state)
{
    struct fixture *fx = fixture_of(state);
    struct st_error err = {0};

    fx->db = pg_db_open(fx->urls[0], &err);
    if (!fx->db)
        fail_msg("open: %s", err.msg);
    raw_exec(pg_db_conn(fx->db), "INSERT INTO schema_version VALUES (99, 0)");
    pg_db_close(fx->db);
    fx->db = pg_db_open(fx->urls[0], &err);
    assert_null(fx->db);
    assert_int_equal(err.code, ST_ERR_BACKEND);
    assert_non_null(strstr(err.msg, "at version 99, newer than the 4 this program knows"));
}

/* Several processes opening one fresh database at once each find the schema applied once. */
static void
test_pg_conn__concurrent_open(void **state)
{
    struct fixture *fx = fixture_of(state);
    struct st_error err = {0};
    pid_t pids[OPENERS];
    int gate[2];
    char c;
    int status;
    int version;
    int i;

    assert_int_equal(pipe(gate), 0);
    fflush(NULL);
    for (i = 0; i < OPENERS; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            struct pg_db *db;

            close(gate[1]);
            /* Wait for the gate to open (EOF), so that all start together. */
            if (read(gate[0], &c, 1) != 0)
                _exit(2);
            db = pg_db_open(fx->urls[0], &err);
            if (!db || pg_db_schema_version(db, &version, &err) < 0 || version != MIGRATIONS) {
                fprintf(stderr, "opener %d: %s\n", i, err.msg);
                _exit(1);
            }
            pg_db_close(db);
            _exit(0);
        }
    }
    close(gate[0]);
    close(gate[1]);
    for (i = 0; i < OPENERS; i++) {
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    fx->db = pg_db_open(fx->urls[0], &err);
    if (!fx->db)
        fail_msg("open: %s", err.msg);
    assert_int_equal(raw_int(pg_db_conn(fx->db), "SELECT count(*) FROM schema_version"),
                     MIGRATIONS);
}

/* ---- lost connections ---- */

static void
test_pg_conn__reconnect_outside_transaction(void **state)
{
    struct fixture *fx = fixture_of(state);
    struct st_error err = {0};
    struct widget w;
    int pid;
    int i;

    fx->db = open_scratch(fx, 0);
    assert_int_equal(insert_widget(fx->db, "w1", "alpha", 1, &err), 1);
    for (i = 0; i < 3; i++)
        expect_ok(get_widget(fx->db, "w1", &w, &err), err);
    /* Prepared once per connection, however often it runs. */
    assert_int_equal(raw_int(pg_db_conn(fx->db), "SELECT count(*) FROM pg_prepared_statements"
                                                 " WHERE name = 't_widget_get'"),
                     1);

    pid = PQbackendPID(pg_db_conn(fx->db));
    kill_backend(fx, pg_db_conn(fx->db));
    expect_ok(get_widget(fx->db, "w1", &w, &err), err);
    assert_string_equal(w.name, "alpha");
    assert_int_not_equal(PQbackendPID(pg_db_conn(fx->db)), pid);
    assert_int_equal(raw_int(pg_db_conn(fx->db), "SELECT count(*) FROM pg_prepared_statements"
                                                 " WHERE name = 't_widget_get'"),
                     1);

    /* A write, the health check and BEGIN reconnect too. */
    kill_backend(fx, pg_db_conn(fx->db));
    assert_int_equal(insert_widget(fx->db, "w2", "beta", 2, &err), 1);
    kill_backend(fx, pg_db_conn(fx->db));
    expect_ok(pg_db_ping(fx->db, &err), err);
    kill_backend(fx, pg_db_conn(fx->db));
    expect_ok(pg_db_begin(fx->db, &err), err);
    expect_ok(get_widget(fx->db, "w2", &w, &err), err);
    expect_ok(pg_db_commit(fx->db, &err), err);
}

static void
test_pg_conn__lost_inside_transaction(void **state)
{
    struct fixture *fx = fixture_of(state);
    struct st_error err = {0};
    struct widget w;

    fx->db = open_scratch(fx, 0);
    expect_ok(pg_db_begin(fx->db, &err), err);
    assert_int_equal(insert_widget(fx->db, "w1", "alpha", 1, &err), 1);
    kill_backend(fx, pg_db_conn(fx->db));
    expect_err(insert_widget(fx->db, "w2", "beta", 2, &err), err, ST_ERR_UNAVAILABLE,
               "try again later");
    /* The transaction is gone, and nothing runs outside it by surprise. */
    assert_true(pg_db_in_transaction(fx->db));
    expect_err(get_widget(fx->db, "w1", &w, &err), err, ST_ERR_UNAVAILABLE, "roll it back");
    pg_db_rollback(fx->db);
    assert_false(pg_db_in_transaction(fx->db));
    expect_err(get_widget(fx->db, "w1", &w, &err), err, ST_ERR_NOT_FOUND, "no widget 'w1'");
    assert_int_equal(insert_widget(fx->db, "w3", "gamma", 3, &err), 1);

    /* A commit after the loss reports it and ends the transaction. */
    expect_ok(pg_db_begin(fx->db, &err), err);
    assert_int_equal(insert_widget(fx->db, "w4", "delta", 4, &err), 1);
    kill_backend(fx, pg_db_conn(fx->db));
    expect_err(pg_db_commit(fx->db, &err), err, ST_ERR_UNAVAILABLE, "try again later");
    assert_false(pg_db_in_transaction(fx->db));
    expect_err(get_widget(fx->db, "w4", &w, &err), err, ST_ERR_NOT_FOUND, "no widget 'w4'");
}

static void
test_pg_conn__reconnect_impossible(void **state)
{
    struct fixture *fx = fixture_of(state);
    struct st_error err = {0};
    struct widget w;

    fx->db = open_scratch(fx, 0);
    assert_int_equal(insert_widget(fx->db, "w1", "alpha", 1, &err), 1);
    PQclear(raw_query(fx->admin, "ALTER DATABASE %s ALLOW_CONNECTIONS false", fx->names[0]));
    kill_backend(fx, pg_db_conn(fx->db));
    expect_err(get_widget(fx->db, "w1", &w, &err), err, ST_ERR_UNAVAILABLE,
               "the database is unavailable, try again later");
    expect_err(get_widget(fx->db, "w1", &w, &err), err, ST_ERR_UNAVAILABLE, "try again later");
    expect_err(pg_db_begin(fx->db, &err), err, ST_ERR_UNAVAILABLE, "try again later");
    assert_false(pg_db_in_transaction(fx->db));
    expect_err(pg_db_ping(fx->db, &err), err, ST_ERR_UNAVAILABLE, "try again later");
    /* Back as soon as the database is. */
    PQclear(raw_query(fx->admin, "ALTER DATABASE %s ALLOW_CONNECTIONS true", fx->names[0]));
    expect_ok(get_widget(fx->db, "w1", &w, &err), err);
}

static void
test_pg_conn__no_server(void **state)
{
    char dir[] = "/tmp/stratus-nopg-XXXXXX";
    char conninfo[256];
    struct st_error err = {0};
    struct pg_db *db;

    fixture_of(state);
    assert_non_null(mkdtemp(dir));
    snprintf(conninfo, sizeof(conninfo),
             "host=%s port=55439 dbname=stratus user=postgres password=sekrit-pw-1", dir);
    db = pg_db_open(conninfo, &err);
    assert_null(db);
    assert_int_equal(err.code, ST_ERR_UNAVAILABLE);
    assert_non_null(strstr(err.msg, "cannot connect to the database: "));
    assert_null(strstr(err.msg, "sekrit"));
    assert_null(strchr(err.msg, '\n'));

    snprintf(conninfo, sizeof(conninfo), "postgresql://postgres:sekrit-pw-1@/stratus?host=%s", dir);
    db = pg_db_open(conninfo, &err);
    assert_null(db);
    assert_int_equal(err.code, ST_ERR_UNAVAILABLE);
    assert_null(strstr(err.msg, "sekrit"));
    rmdir(dir);
}

/* libpq quotes what it cannot parse; the message must not pass a password on. */
static void
test_pg_conn__bad_conninfo_hides_password(void **state)
{
    struct st_error err = {0};

    fixture_of(state);
    assert_null(pg_db_open("postgresql://postgres:sek%zzrit@/stratus", &err));
    assert_int_equal(err.code, ST_ERR_INVALID);
    assert_non_null(strstr(err.msg, "the connection string is not valid"));
    assert_null(strstr(err.msg, "sek"));
    assert_null(pg_db_open("host=/nowhere password=my sekrit", &err));
    assert_int_equal(err.code, ST_ERR_INVALID);
    assert_null(strstr(err.msg, "sekrit"));
    assert_null(pg_db_open(NULL, &err));
    assert_int_equal(err.code, ST_ERR_INVALID);
}

/* ---- error mapping ---- */

static void
test_pg_conn__unique_violation_conflict(void **state)
{
    struct fixture *fx = fixture_of(state);
    struct st_error err = {0};
    struct pg_row_ref ref = widget_ref;
    struct pg_params p;

    fx->db = open_scratch(fx, 0);
    assert_int_equal(insert_widget(fx->db, "w1", "alpha", 1, &err), 1);
    expect_err(insert_widget(fx->db, "w1", "other", 2, &err), err, ST_ERR_CONFLICT,
               "a widget with id 'w1' already exists");
    expect_err(insert_widget(fx->db, "w2", "alpha", 2, &err), err, ST_ERR_CONFLICT,
               "a widget named 'alpha' already exists");
    assert_int_not_equal(err.native, 0);

    pg_params_init(&p);
    pg_param_text(&p, "w2");
    pg_param_text(&p, "alpha");
    pg_param_int(&p, 2);
    pg_param_text(&p, NULL);
    ref.noun = "image";
    ref.id = "w2";
    expect_err(pg_db_write(fx->db, &widget_insert, &p, &ref, &err), err, ST_ERR_CONFLICT,
               "an image named 'alpha' already exists");
    ref.noun = "user";
    ref.name_is = "with e-mail";
    expect_err(pg_db_write(fx->db, &widget_insert, &p, &ref, &err), err, ST_ERR_CONFLICT,
               "a user with e-mail 'alpha' already exists");
    assert_null(pg_db_exec(fx->db, &widget_insert, &p, &err));
    assert_int_equal(err.code, ST_ERR_CONFLICT);
    assert_non_null(strstr(err.msg, "cannot run t_widget_insert: duplicate key value"));

    /* Writes that change nothing. */
    pg_params_init(&p);
    pg_param_text(&p, "nope");
    pg_param_text(&p, "x");
    ref = (struct pg_row_ref){.noun = "widget", .id = "nope"};
    assert_int_equal(pg_db_write(fx->db, &widget_rename, &p, &ref, &err), 0);
    expect_err(pg_db_write_one(fx->db, &widget_rename, &p, &ref, &err), err, ST_ERR_NOT_FOUND,
               "no widget 'nope'");
    pg_params_init(&p);
    pg_param_text(&p, "w1");
    pg_param_text(&p, "renamed");
    ref.id = "w1";
    assert_int_equal(pg_db_write_one(fx->db, &widget_rename, &p, &ref, &err), 1);
}

static void
test_pg_conn__sqlstate_mapping(void **state)
{
    static const struct {
        const char *state;
        enum st_err_code code;
    } cases[] = {
        {"40001", ST_ERR_UNAVAILABLE}, {"40P01", ST_ERR_UNAVAILABLE}, {"55P03", ST_ERR_UNAVAILABLE},
        {"53300", ST_ERR_UNAVAILABLE}, {"57P01", ST_ERR_UNAVAILABLE}, {"57P03", ST_ERR_UNAVAILABLE},
        {"08006", ST_ERR_UNAVAILABLE}, {"08P01", ST_ERR_BACKEND},     {"23505", ST_ERR_CONFLICT},
        {"22P02", ST_ERR_BACKEND},     {"42501", ST_ERR_BACKEND},     {"57014", ST_ERR_BACKEND},
    };
    struct fixture *fx = fixture_of(state);
    struct st_error err;
    struct pg_params p;
    size_t i;

    fx->db = open_scratch(fx, 0);
    for (i = 0; i < ST_ARRAY_LEN(cases); i++) {
        memset(&err, 0, sizeof(err));
        pg_params_init(&p);
        pg_param_text(&p, cases[i].state);
        assert_null(pg_db_exec(fx->db, &fail_with, &p, &err));
        if (err.code != cases[i].code || !strstr(err.msg, "cannot run t_fail_with: ") ||
            !strstr(err.msg, "forced") || err.native == 0)
            fail_msg("SQLSTATE %s: want %s, got %s (%d): %s", cases[i].state,
                     st_err_code_name(cases[i].code), st_err_code_name(err.code), err.native,
                     err.msg);
        if (cases[i].code == ST_ERR_UNAVAILABLE)
            assert_non_null(strstr(err.msg, "the database is unavailable, try again later ("));
    }
    expect_err(pg_db_exec_sql(fx->db, "SELECT * FROM no_such_table", &err), err, ST_ERR_BACKEND,
               "cannot run 'SELECT * FROM no_such_table': relation \"no_such_table\"");
}

/*
 * After a failure inside a transaction the server has aborted it; the store
 * says so.  A second begin joins the open transaction (store_tx.h's
 * nesting), so only the outermost commit commits, or here fails.
 */
static void
test_pg_conn__failed_statement_aborts_transaction(void **state)
{
    struct fixture *fx = fixture_of(state);
    struct st_error err = {0};
    struct pg_params p;
    struct widget w;
    int64_t rows;

    fx->db = open_scratch(fx, 0);
    expect_ok(pg_db_begin(fx->db, &err), err);
    expect_ok(pg_db_begin(fx->db, &err), err);
    assert_int_equal(insert_widget(fx->db, "w1", "alpha", 1, &err), 1);
    pg_params_init(&p);
    pg_param_text(&p, "22P02");
    assert_null(pg_db_exec(fx->db, &fail_with, &p, &err));
    assert_int_equal(err.code, ST_ERR_BACKEND);
    assert_true(pg_db_in_transaction(fx->db));
    expect_ok(pg_db_commit(fx->db, &err), err);
    assert_true(pg_db_in_transaction(fx->db));
    expect_err(pg_db_commit(fx->db, &err), err, ST_ERR_BACKEND, "the transaction was rolled back");
    assert_false(pg_db_in_transaction(fx->db));
    expect_ok(pg_db_count(fx->db, "widgets", &rows, &err), err);
    assert_int_equal(rows, 0);
    expect_err(pg_db_commit(fx->db, &err), err, ST_ERR_INTERNAL, "none is open");

    /* A conflict, a rollback, and the connection carries on. */
    assert_int_equal(insert_widget(fx->db, "w1", "alpha", 1, &err), 1);
    expect_ok(pg_db_begin(fx->db, &err), err);
    expect_err(insert_widget(fx->db, "w1", "alpha", 1, &err), err, ST_ERR_CONFLICT,
               "already exists");
    pg_db_rollback(fx->db);
    pg_db_rollback(fx->db);
    assert_false(pg_db_in_transaction(fx->db));
    expect_ok(get_widget(fx->db, "w1", &w, &err), err);
    expect_ok(pg_db_begin(fx->db, &err), err);
    assert_int_equal(insert_widget(fx->db, "w2", "beta", 2, &err), 1);
    expect_ok(pg_db_commit(fx->db, &err), err);
    expect_ok(get_widget(fx->db, "w2", &w, &err), err);
}

/* ---- reads ---- */

static int
list_widgets(struct pg_db *db, const char *marker, unsigned limit, struct pg_page *page,
             struct st_error *err)
{
    struct pg_params p;

    pg_params_init(&p);
    pg_param_opt_text(&p, marker);
    pg_param_int(&p, pg_list_limit(limit));
    return pg_db_list(db, &widget_list, &p, "widget", marker, limit, sizeof(struct widget),
                      read_listed_widget, page, err);
}

static void
expect_page(struct pg_db *db, const char *marker, unsigned limit, const char *want, bool more)
{
    struct st_error err = {0};
    struct pg_page page = {0};
    char got[256] = "";
    const struct widget *items;
    size_t i;

    expect_ok(list_widgets(db, marker, limit, &page, &err), err);
    items = page.items;
    for (i = 0; i < page.count; i++)
        snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%s", i ? " " : "", items[i].id);
    free(page.items);
    assert_string_equal(got, want);
    assert_int_equal(page.more, more);
}

static void
test_pg_conn__list_marker(void **state)
{
    static const struct {
        const char *id;
        int64_t n;
    } rows[] = {{"w1", 10}, {"w2", 20}, {"w6", 30}, {"w3", 30}, {"w4", 40}, {"w5", 50}};
    struct fixture *fx = fixture_of(state);
    struct st_error err = {0};
    struct pg_page page = {.count = 99};
    char name[16];
    size_t i;

    fx->db = open_scratch(fx, 0);
    for (i = 0; i < ST_ARRAY_LEN(rows); i++) {
        snprintf(name, sizeof(name), "name-%s", rows[i].id);
        assert_int_equal(insert_widget(fx->db, rows[i].id, name, rows[i].n, &err), 1);
    }
    assert_int_equal(pg_list_limit(0), ST_LIST_LIMIT_DEFAULT + 1);
    assert_int_equal(pg_list_limit(7), 8);

    expect_page(fx->db, NULL, 2, "w1 w2", true);
    expect_page(fx->db, "w2", 2, "w3 w6", true);
    expect_page(fx->db, "w6", 2, "w4 w5", false);
    expect_page(fx->db, "w5", 2, "", false);
    expect_page(fx->db, "", 0, "w1 w2 w3 w6 w4 w5", false);
    expect_page(fx->db, "w1", 5, "w2 w3 w6 w4 w5", false);
    expect_page(fx->db, "w1", 4, "w2 w3 w6 w4", true);
    expect_err(list_widgets(fx->db, "nope", 2, &page, &err), err, ST_ERR_INVALID,
               "marker 'nope' names no widget");
    assert_int_equal(page.count, 99);

    {
        struct widget w;

        expect_ok(get_widget(fx->db, "w3", &w, &err), err);
        assert_string_equal(w.name, "name-w3");
        assert_int_equal(w.n, 30);
        expect_err(get_widget(fx->db, "w9", &w, &err), err, ST_ERR_NOT_FOUND, "no widget 'w9'");
    }
}

static void
test_pg_conn__params_and_columns(void **state)
{
    struct fixture *fx = fixture_of(state);
    struct st_error err = {0};
    struct pg_params p;
    PGresult *res;
    char small[4];
    char buf[32];

    fx->db = open_scratch(fx, 0);
    pg_params_init(&p);
    pg_param_text(&p, "it's \"quoted\" - ünïcode");
    pg_param_int(&p, INT64_MIN);
    pg_param_bool(&p, true);
    pg_param_opt_text(&p, "");
    res = pg_db_exec(fx->db, &echo, &p, &err);
    if (!res)
        fail_msg("echo: %s", err.msg);
    pg_get_text(res, 0, 0, buf, sizeof(buf));
    assert_string_equal(buf, "it's \"quoted\" - ünïcode");
    pg_get_text(res, 0, 0, small, sizeof(small));
    assert_string_equal(small, "it'");
    assert_true(pg_get_int(res, 0, 1) == INT64_MIN);
    assert_true(pg_get_bool(res, 0, 2));
    assert_true(pg_get_bool(res, 0, 3));
    assert_false(pg_get_null(res, 0, 0));
    PQclear(res);

    pg_params_init(&p);
    pg_param_opt_text(&p, "x");
    pg_param_int(&p, INT64_MAX);
    pg_param_bool(&p, false);
    pg_param_text(&p, NULL);
    res = pg_db_exec(fx->db, &echo, &p, &err);
    if (!res)
        fail_msg("echo: %s", err.msg);
    assert_true(pg_get_int(res, 0, 1) == INT64_MAX);
    assert_false(pg_get_bool(res, 0, 2));
    assert_true(pg_get_bool(res, 0, 3));
    PQclear(res);

    res = pg_db_exec(fx->db, &nulls, NULL, &err);
    if (!res)
        fail_msg("nulls: %s", err.msg);
    pg_get_text(res, 0, 0, buf, sizeof(buf));
    assert_string_equal(buf, "");
    assert_int_equal(pg_get_int(res, 0, 1), 0);
    assert_false(pg_get_bool(res, 0, 2));
    assert_true(pg_get_null(res, 0, 0));
    PQclear(res);
}

/* ---- locks ---- */

static bool
try_lock(PGconn *conn, const char *key)
{
    PGresult *res =
        raw_query(conn, "SELECT pg_try_advisory_xact_lock(hashtextextended('%s', 0))", key);
    bool got = strcmp(PQgetvalue(res, 0, 0), "t") == 0;

    PQclear(res);
    return got;
}

static void
test_pg_conn__lock(void **state)
{
    struct fixture *fx = fixture_of(state);
    struct st_error err = {0};
    PGconn *other;

    fx->db = open_scratch(fx, 0);
    other = PQconnectdb(fx->urls[0]);
    assert_int_equal(PQstatus(other), CONNECTION_OK);
    expect_err(pg_db_lock(fx->db, "quota:x", &err), err, ST_ERR_INTERNAL, "no transaction is open");
    expect_ok(pg_db_begin(fx->db, &err), err);
    expect_ok(pg_db_lock(fx->db, "quota:x", &err), err);
    expect_ok(pg_db_lock(fx->db, "quota:x", &err), err);
    assert_false(try_lock(other, "quota:x"));
    assert_true(try_lock(other, "quota:y"));
    expect_ok(pg_db_commit(fx->db, &err), err);
    assert_true(try_lock(other, "quota:x"));
    PQfinish(other);
}

/* ---- notices ---- */

static void
test_pg_conn__notices_discarded(void **state)
{
    struct fixture *fx = fixture_of(state);
    struct st_error err = {0};
    FILE *out = tmpfile();
    int saved;
    long written;
    int rc;

    assert_non_null(out);
    fx->db = open_scratch(fx, 0);
    pg_db_close(fx->db);
    fflush(stderr);
    saved = dup(2);
    assert_true(saved >= 0);
    assert_true(dup2(fileno(out), 2) >= 0);
    /* Both say "already exists, skipping" as a NOTICE. */
    fx->db = pg_db_open(fx->urls[0], &err);
    rc = fx->db ? pg_db_exec_sql(fx->db, "CREATE TABLE IF NOT EXISTS widgets (id TEXT)", &err) : -1;
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    expect_ok(rc, err);
    fseek(out, 0, SEEK_END);
    written = ftell(out);
    fclose(out);
    assert_int_equal(written, 0);
}

/* ---- raw rows ---- */

struct copy {
    struct pg_db *to;
    const char *table;
    const char *cols;
    int rows;
    int stop_after; /* 0: never */
    int stop_with;
};

static int
copy_row(void *ctx, int n, const char *const *values, struct st_error *err)
{
    struct copy *c = ctx;

    if (c->stop_after && c->rows == c->stop_after) {
        if (c->stop_with < 0)
            return st_error_set(err, ST_ERR_BACKEND, "stopped by the callback");
        return c->stop_with;
    }
    c->rows++;
    if (!c->to)
        return 0;
    return pg_db_load(c->to, c->table, c->cols, n, values, err);
}

/* What @table holds on @db, in one string to compare. */
static char *
digest(struct pg_db *db, const char *table, const char *expr)
{
    PGresult *res = raw_query(pg_db_conn(db),
                              "SELECT count(*) || ':' || md5(string_agg(%s, '|' ORDER BY id))"
                              " FROM %s",
                              expr, table);
    char *s = st_xstrdup(PQgetvalue(res, 0, 0));

    PQclear(res);
    return s;
}

static void
copy_table(struct pg_db *from, struct pg_db *to, const char *table, const char *cols,
           const char *order)
{
    struct st_error err = {0};
    struct copy c = {.to = to, .table = table, .cols = cols};

    expect_ok(pg_db_begin(to, &err), err);
    expect_ok(pg_db_dump(from, table, cols, order, copy_row, &c, &err), err);
    expect_ok(pg_db_commit(to, &err), err);
}

static void
test_pg_conn__dump_load_count(void **state)
{
    static const char *const flavor_cols =
        "id, owner_id, name, vcpus, memory_mib, disk_gib, created_at";
    static const char *const flavor[][7] = {
        {"f1", "o1", "small", "1", "512", "10", "1700000000000"},
        {"f2", "o1", "it's big", "64", "262144", "2000", "1700000000001"},
        {"f3", "o2", "small", "2", "1024", "20", "1600000000000"},
    };
    struct fixture *fx = fixture_of(state);
    struct st_error err = {0};
    struct pg_db *to;
    int64_t rows;
    ST_AUTOFREE char *a = NULL;
    ST_AUTOFREE char *b = NULL;
    ST_AUTOFREE char *fa = NULL;
    ST_AUTOFREE char *fb = NULL;
    size_t i;

    fx->db = open_scratch(fx, 0);
    make_db(fx, 1);
    to = open_scratch(fx, 1);

    /* Real schema rows through load, in one transaction. */
    expect_ok(pg_db_begin(fx->db, &err), err);
    for (i = 0; i < ST_ARRAY_LEN(flavor); i++)
        expect_ok(pg_db_load(fx->db, "flavors", flavor_cols, 7, flavor[i], &err), err);
    expect_ok(pg_db_commit(fx->db, &err), err);
    copy_table(fx->db, to, "flavors", flavor_cols, "created_at, id");
    expect_ok(pg_db_count(to, "flavors", &rows, &err), err);
    assert_int_equal(rows, 3);
    fa = digest(fx->db, "flavors", "id || name || vcpus || memory_mib || disk_gib || created_at");
    fb = digest(to, "flavors", "id || name || vcpus || memory_mib || disk_gib || created_at");
    assert_string_equal(fa, fb);

    /* More rows than one fetch brings, NULLs and quotes among them. */
    expect_ok(pg_db_exec_sql(fx->db,
                             "INSERT INTO widgets SELECT 'g' || i, 'name ' || i, i,"
                             " CASE WHEN i % 3 = 0 THEN NULL ELSE 'it''s \"' || i || '\"' END"
                             " FROM generate_series(1, 1203) i",
                             &err),
              err);
    copy_table(fx->db, to, "widgets", "id, name, n, note", "n");
    expect_ok(pg_db_count(to, "widgets", &rows, &err), err);
    assert_int_equal(rows, 1203);
    a = digest(fx->db, "widgets", "id || name || n || coalesce(note, '<null>')");
    b = digest(to, "widgets", "id || name || n || coalesce(note, '<null>')");
    assert_string_equal(a, b);
    assert_int_equal(raw_int(pg_db_conn(to), "SELECT count(*) FROM widgets WHERE note IS NULL"),
                     401);

    /* Loading a row that is there already. */
    expect_err(pg_db_load(to, "flavors", flavor_cols, 7, flavor[0], &err), err, ST_ERR_CONFLICT,
               "cannot load a row into table 'flavors'");
    pg_db_close(to);
}

static void
test_pg_conn__dump_stops_early(void **state)
{
    struct fixture *fx = fixture_of(state);
    struct st_error err = {0};
    struct copy c = {.stop_after = 3, .stop_with = 7};
    int64_t rows;

    fx->db = open_scratch(fx, 0);
    expect_ok(pg_db_exec_sql(fx->db,
                             "INSERT INTO widgets SELECT 'g' || i, 'n' || i, i, NULL"
                             " FROM generate_series(1, 700) i",
                             &err),
              err);
    assert_int_equal(pg_db_dump(fx->db, "widgets", "id, n", "n", copy_row, &c, &err), 7);
    assert_int_equal(c.rows, 3);
    assert_false(pg_db_in_transaction(fx->db));
    expect_ok(pg_db_ping(fx->db, &err), err);

    c = (struct copy){.stop_after = 600, .stop_with = -1};
    expect_err(pg_db_dump(fx->db, "widgets", "id, n", "n", copy_row, &c, &err), err, ST_ERR_BACKEND,
               "stopped by the callback");
    assert_int_equal(c.rows, 600);
    assert_false(pg_db_in_transaction(fx->db));

    /* Inside the caller's transaction, which stays open. */
    c = (struct copy){0};
    expect_ok(pg_db_begin(fx->db, &err), err);
    expect_ok(pg_db_dump(fx->db, "widgets", "id", NULL, copy_row, &c, &err), err);
    assert_int_equal(c.rows, 700);
    assert_true(pg_db_in_transaction(fx->db));
    expect_ok(pg_db_commit(fx->db, &err), err);

    /* Names come from code; anything else is refused before it reaches SQL. */
    expect_err(pg_db_dump(fx->db, "widgets; DROP TABLE widgets", "id", NULL, copy_row, &c, &err),
               err, ST_ERR_INVALID, "not a plain table name");
    expect_err(pg_db_dump(fx->db, "widgets", "id FROM widgets; --", NULL, copy_row, &c, &err), err,
               ST_ERR_INVALID, "not a list of column names");
    expect_err(pg_db_count(fx->db, "Widgets", &rows, &err), err, ST_ERR_INVALID,
               "not a plain table name");
    expect_err(pg_db_count(fx->db, "no_such_table", &rows, &err), err, ST_ERR_BACKEND,
               "cannot count the rows of table 'no_such_table'");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pg_conn__migrations_apply_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pg_conn__newer_schema_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pg_conn__concurrent_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pg_conn__reconnect_outside_transaction, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_pg_conn__lost_inside_transaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pg_conn__reconnect_impossible, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pg_conn__no_server, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pg_conn__bad_conninfo_hides_password, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pg_conn__unique_violation_conflict, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pg_conn__sqlstate_mapping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pg_conn__failed_statement_aborts_transaction, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_pg_conn__list_marker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pg_conn__params_and_columns, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pg_conn__lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pg_conn__notices_discarded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pg_conn__dump_load_count, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pg_conn__dump_stops_early, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
