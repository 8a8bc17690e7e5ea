#include "contract/support/store_fixture.h"

#include <errno.h>
#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "repositories/postgres/pg_internal.h"
#include "support/tmpdir.h"

#define STORE_FIXTURE_ENV_STORE "STRATUS_TEST_STORE"
#define STORE_FIXTURE_ENV_PG_URL "STRATUS_TEST_PG_URL"

/* How long a raw SQLite connection waits for the store's writers. */
#define STORE_FIXTURE_BUSY_MS 5000

int
store_fixture_env_kind(enum store_kind *out, struct st_error *err)
{
    const char *v = getenv(STORE_FIXTURE_ENV_STORE);

    if (!v || !*v || strcmp(v, "sqlite") == 0) {
        *out = STORE_SQLITE;
        return 0;
    }
    if (strcmp(v, "postgresql") == 0) {
        *out = STORE_POSTGRES;
        return 0;
    }
    return st_error_set(err, ST_ERR_INVALID,
                        STORE_FIXTURE_ENV_STORE " is '%s': use sqlite or postgresql", v);
}

const char *
store_fixture_env_name(void)
{
    const char *v = getenv(STORE_FIXTURE_ENV_STORE);

    return v && *v ? v : "sqlite";
}

/* PostgreSQL's MAKE_SQLSTATE(): six bits a character, the first lowest. */
static int
fixture_sqlstate(const char *s)
{
    int code = 0;
    int i;

    for (i = 0; i < 5 && s[i]; i++)
        code += ((s[i] - '0') & 0x3f) << (6 * i);
    return code;
}

int
store_fixture_native_unique(enum store_kind kind)
{
    return kind == STORE_POSTGRES ? fixture_sqlstate("23505") : SQLITE_CONSTRAINT_UNIQUE;
}

enum store_kind
store_fixture_other_kind(enum store_kind kind)
{
    return kind == STORE_SQLITE ? STORE_POSTGRES : STORE_SQLITE;
}

static int
fixture_sqlite_make(struct store_fixture *fx, struct st_error *err)
{
    if (tmpdir_make(fx->dir, sizeof(fx->dir), "stratus-contract", err) < 0)
        return -1;
    if ((size_t)snprintf(fx->path, sizeof(fx->path), "%s/stratus.db", fx->dir) >=
            sizeof(fx->path) ||
        (size_t)snprintf(fx->url, sizeof(fx->url), "sqlite://%s", fx->path) >= sizeof(fx->url))
        return st_error_set(err, ST_ERR_INTERNAL, "database path in '%s' is too long", fx->dir);
    return 0;
}

/* Run @sql on the admin connection; results, if any, are thrown away. */
static int
fixture_pg_admin_exec(struct store_fixture *fx, const char *sql, struct st_error *err)
{
    PGresult *res = PQexec(fx->admin, sql);
    ExecStatusType st = PQresultStatus(res);
    int rc = 0;

    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        rc = st_error_set(err, ST_ERR_BACKEND, "PostgreSQL refused '%.200s': %s", sql,
                          PQerrorMessage(fx->admin));
    PQclear(res);
    return rc;
}

/*
 * Check that libpq reads @url's options as "-csearch_path=<schema>": the
 * percent-encoded '=' must come out decoded, or every connection of the
 * test would land in the base URL's schema instead of its own.
 */
static int
fixture_pg_check_url(const struct store_fixture *fx, struct st_error *err)
{
    char want[96];
    char got[96] = "";
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(fx->url, &msg);
    const PQconninfoOption *o;

    if (!opts) {
        st_error_set(err, ST_ERR_INVALID, "libpq cannot parse the test URL '%s': %s", fx->url,
                     msg ? msg : "out of memory");
        PQfreemem(msg);
        return -1;
    }
    for (o = opts; o->keyword; o++)
        if (strcmp(o->keyword, "options") == 0 && o->val)
            snprintf(got, sizeof(got), "%s", o->val);
    PQconninfoFree(opts);
    snprintf(want, sizeof(want), "-csearch_path=%s", fx->schema);
    if (strcmp(got, want) != 0)
        return st_error_set(err, ST_ERR_INVALID,
                            "libpq reads the options of '%s' as '%s', not '%s'", fx->url, got,
                            want);
    return 0;
}

static int
fixture_pg_make(struct store_fixture *fx, struct st_error *err)
{
    static unsigned counter;
    const char *base = getenv(STORE_FIXTURE_ENV_PG_URL);
    char sql[512];

    if (!base || !*base)
        return st_error_set(err, ST_ERR_INVALID,
                            "the PostgreSQL store is under test, but " STORE_FIXTURE_ENV_PG_URL
                            " is not set: give it the libpq URI of a database to make schemas in");
    if (strncmp(base, "postgresql://", 13) != 0 && strncmp(base, "postgres://", 11) != 0)
        return st_error_set(err, ST_ERR_INVALID,
                            STORE_FIXTURE_ENV_PG_URL " '%s' is not a postgresql:// URI", base);
    if (strstr(base, "options="))
        return st_error_set(err, ST_ERR_INVALID,
                            STORE_FIXTURE_ENV_PG_URL " '%s' sets options, which the fixture sets",
                            base);
    snprintf(fx->schema, sizeof(fx->schema), "t_%ld_%u", (long)getpid(),
             __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED));
    if ((size_t)snprintf(fx->url, sizeof(fx->url), "%s%soptions=-csearch_path%%3D%s", base,
                         strchr(base, '?') ? "&" : "?", fx->schema) >= sizeof(fx->url))
        return st_error_set(err, ST_ERR_INVALID, STORE_FIXTURE_ENV_PG_URL " '%s' is too long",
                            base);
    if (fixture_pg_check_url(fx, err) < 0)
        return -1;

    fx->admin = PQconnectdb(base);
    if (PQstatus(fx->admin) != CONNECTION_OK)
        return st_error_set(err, ST_ERR_UNAVAILABLE,
                            "cannot connect to " STORE_FIXTURE_ENV_PG_URL " '%s': %s", base,
                            PQerrorMessage(fx->admin));
    /* A schema of this name can only be left over from a dead process of the same pid. */
    snprintf(sql, sizeof(sql),
             "SET client_min_messages = warning; DROP SCHEMA IF EXISTS %s CASCADE; "
             "CREATE SCHEMA %s; SET search_path TO %s",
             fx->schema, fx->schema, fx->schema);
    return fixture_pg_admin_exec(fx, sql, err);
}

/* The store's own connection must see the test's schema first, and only it. */
static int
fixture_pg_check_schema(struct store_fixture *fx, struct st_error *err)
{
    PGresult *res = PQexec(pg_db_conn(fx->store.pg), "SELECT current_schema()");
    int rc = 0;

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 || PQgetisnull(res, 0, 0) ||
        strcmp(PQgetvalue(res, 0, 0), fx->schema) != 0)
        rc = st_error_set(err, ST_ERR_INTERNAL,
                          "the store opened on '%s' works in schema '%s', not '%s'", fx->url,
                          PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1
                              ? PQgetvalue(res, 0, 0)
                              : "?",
                          fx->schema);
    PQclear(res);
    return rc;
}

struct store_fixture *
store_fixture_new(enum store_kind kind, unsigned flags, struct st_error *err)
{
    struct store_fixture *fx = calloc(1, sizeof(*fx));
    int rc;

    if (!fx) {
        st_error_set(err, ST_ERR_INTERNAL, "out of memory");
        return NULL;
    }
    fx->kind = kind;
    rc = kind == STORE_POSTGRES ? fixture_pg_make(fx, err) : fixture_sqlite_make(fx, err);
    if (rc == 0 && !(flags & STORE_FIXTURE_UNOPENED)) {
        rc = store_open(&fx->store, fx->url, err);
        fx->opened = rc == 0;
        if (rc < 0)
            st_error_prefix(err, "open the %s store '%s'", store_kind_name(kind), fx->url);
        else if (kind == STORE_POSTGRES)
            rc = fixture_pg_check_schema(fx, err);
    }
    if (rc < 0) {
        store_fixture_free(fx);
        return NULL;
    }
    return fx;
}

struct store_fixture *
store_fixture_add(struct store_fixture *fx, enum store_kind kind, unsigned flags,
                  struct st_error *err)
{
    struct store_fixture *added = store_fixture_new(kind, flags, err);

    if (added) {
        added->next = fx->next;
        fx->next = added;
    }
    return added;
}

void
store_fixture_free(struct store_fixture *fx)
{
    struct st_error err = {0};
    char sql[256];

    if (!fx)
        return;
    store_fixture_free(fx->next);
    if (fx->opened)
        store_close(&fx->store);
    if (fx->admin && PQstatus(fx->admin) == CONNECTION_OK && fx->schema[0]) {
        snprintf(sql, sizeof(sql),
                 "SET client_min_messages = warning; DROP SCHEMA IF EXISTS %s CASCADE", fx->schema);
        if (fixture_pg_admin_exec(fx, sql, &err) < 0)
            fprintf(stderr, "store fixture: %s\n", err.msg);
    }
    if (fx->admin)
        PQfinish(fx->admin);
    tmpdir_remove(fx->dir);
    free(fx);
}

int
store_fixture_setup(void **state)
{
    struct st_error err = {0};
    enum store_kind kind;
    struct store_fixture *fx = NULL;

    if (store_fixture_env_kind(&kind, &err) == 0)
        fx = store_fixture_new(kind, 0, &err);
    if (!fx) {
        fprintf(stderr, "store fixture (%s): %s\n", store_fixture_env_name(), err.msg);
        return -1;
    }
    *state = fx;
    return 0;
}

int
store_fixture_teardown(void **state)
{
    store_fixture_free(*state);
    *state = NULL;
    return 0;
}

const char *
store_fixture_url(const struct store_fixture *fx)
{
    return fx->url;
}

const char *
store_fixture_name(const struct store_fixture *fx)
{
    return store_kind_name(fx->kind);
}

/* A connection of the test's own to the SQLite file, as another program would hold it. */
static sqlite3 *
fixture_sqlite_raw(const struct store_fixture *fx, struct st_error *err)
{
    sqlite3 *conn = NULL;
    int rc = sqlite3_open_v2(fx->path, &conn, SQLITE_OPEN_READWRITE, NULL);

    if (rc != SQLITE_OK) {
        st_error_set_native(err, ST_ERR_BACKEND, rc, "cannot open '%s': %s", fx->path,
                            conn ? sqlite3_errmsg(conn) : sqlite3_errstr(rc));
        sqlite3_close(conn);
        return NULL;
    }
    sqlite3_busy_timeout(conn, STORE_FIXTURE_BUSY_MS);
    return conn;
}

int
store_fixture_exec_sql(struct store_fixture *fx, const char *sql, struct st_error *err)
{
    sqlite3 *conn;
    char *msg = NULL;
    int rc;

    if (fx->kind == STORE_POSTGRES)
        return fixture_pg_admin_exec(fx, sql, err);
    conn = fixture_sqlite_raw(fx, err);
    if (!conn)
        return -1;
    rc = sqlite3_exec(conn, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        st_error_set_native(err, ST_ERR_BACKEND, rc, "SQLite refused '%.200s': %s", sql,
                            msg ? msg : sqlite3_errstr(rc));
    sqlite3_free(msg);
    sqlite3_close(conn);
    return rc == SQLITE_OK ? 0 : -1;
}

static int
fixture_pg_query_int(struct store_fixture *fx, const char *sql, int64_t *out, struct st_error *err)
{
    PGresult *res = PQexec(fx->admin, sql);
    char *end = NULL;
    long long v = 0;
    int rc = 0;

    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        rc = st_error_set(err, ST_ERR_BACKEND, "PostgreSQL refused '%.200s': %s", sql,
                          PQerrorMessage(fx->admin));
    else if (PQntuples(res) != 1 || PQnfields(res) != 1 || PQgetisnull(res, 0, 0))
        rc = st_error_set(err, ST_ERR_INVALID,
                          "'%.200s' answered %d rows of %d columns, not one "
                          "integer",
                          sql, PQntuples(res), PQnfields(res));
    if (rc == 0) {
        errno = 0;
        v = strtoll(PQgetvalue(res, 0, 0), &end, 10);
        if (errno || !end || *end)
            rc = st_error_set(err, ST_ERR_INVALID, "'%.200s' answered '%s', not an integer", sql,
                              PQgetvalue(res, 0, 0));
    }
    PQclear(res);
    if (rc == 0)
        *out = v;
    return rc;
}

static int
fixture_sqlite_query_int(struct store_fixture *fx, const char *sql, int64_t *out,
                         struct st_error *err)
{
    sqlite3 *conn = fixture_sqlite_raw(fx, err);
    sqlite3_stmt *st = NULL;
    int64_t v = 0;
    int rc;

    if (!conn)
        return -1;
    rc = sqlite3_prepare_v2(conn, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) {
        st_error_set_native(err, ST_ERR_BACKEND, rc, "SQLite refused '%.200s': %s", sql,
                            sqlite3_errmsg(conn));
    } else if ((rc = sqlite3_step(st)) != SQLITE_ROW || sqlite3_column_count(st) != 1 ||
               sqlite3_column_type(st, 0) != SQLITE_INTEGER) {
        st_error_set_native(err, ST_ERR_INVALID, rc, "'%.200s' answered no integer: %s", sql,
                            rc == SQLITE_ROW ? "not one integer column" : sqlite3_errmsg(conn));
        rc = SQLITE_ERROR;
    } else {
        v = sqlite3_column_int64(st, 0);
        rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
        if (rc != SQLITE_OK)
            st_error_set(err, ST_ERR_INVALID, "'%.200s' answered more than one row", sql);
    }
    sqlite3_finalize(st);
    sqlite3_close(conn);
    if (rc != SQLITE_OK)
        return -1;
    *out = v;
    return 0;
}

int
store_fixture_query_int(struct store_fixture *fx, const char *sql, int64_t *out,
                        struct st_error *err)
{
    return fx->kind == STORE_POSTGRES ? fixture_pg_query_int(fx, sql, out, err)
                                      : fixture_sqlite_query_int(fx, sql, out, err);
}
