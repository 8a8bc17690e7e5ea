/*
 * store_fixture.h - a fresh store for one contract test, of the kind the
 * environment names, so that one suite runs against every store.
 *
 *   STRATUS_TEST_STORE   "sqlite" (also when unset or empty) or "postgresql"
 *   STRATUS_TEST_PG_URL  libpq URI of a database the tests may make schemas
 *                        in, e.g. postgresql:///stratus?host=/run/pg&port=5432
 *
 * SQLite: a file in a fresh mkdtemp() directory, opened as "sqlite://PATH".
 * PostgreSQL: a schema of the test's own, "t_<pid>_<n>", made on a separate
 * connection to the base URL; the store's URL is the base URL with
 * "options=-csearch_path%3D<schema>" appended, so every connection opened
 * from it (by a forked process or a thread of the test) sees that schema
 * alone.  The schema and everything in it is dropped at the end.  Asking
 * for PostgreSQL without STRATUS_TEST_PG_URL is an error, never a skip.
 *
 * Reports failures through struct st_error, like the unit tests' support
 * code; contract/support/contract.h has the cmocka side.
 */
#ifndef STRATUS_TESTS_STORE_FIXTURE_H
#define STRATUS_TESTS_STORE_FIXTURE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/store.h"

struct pg_conn; /* libpq's PGconn */

/* store_fixture_new() flags. */
enum store_fixture_flags {
    /* Make the place (file path, schema) but leave the store closed. */
    STORE_FIXTURE_UNOPENED = 1 << 0,
};

struct store_fixture {
    enum store_kind kind;
    char url[1024];             /* what store_open() is given; other connections open it too */
    struct store store;         /* open, unless made with STORE_FIXTURE_UNOPENED */
    bool opened;                /* whether store is open: store_fixture_free() closes it */
    char dir[64];               /* SQLite: the temp dir; "" on PostgreSQL */
    char path[128];             /* SQLite: the database file in it */
    char schema[64];            /* PostgreSQL: the test's schema; "" on SQLite */
    struct pg_conn *admin;      /* PostgreSQL: made the schema; runs the SQL helpers below */
    struct store_fixture *next; /* stores added with store_fixture_add(), freed with this one */
};

/*
 * The kind STRATUS_TEST_STORE names; 0, or -1 with @err filled when it
 * names neither store.
 */
int store_fixture_env_kind(enum store_kind *out, struct st_error *err);

/*
 * The name of the store under test ("sqlite", "postgresql"), or the bad
 * value of STRATUS_TEST_STORE as given: for messages.  Static storage.
 */
const char *store_fixture_env_name(void);

/*
 * The native code (struct st_error.native) a unique violation carries on
 * @kind: SQLITE_CONSTRAINT_UNIQUE, or SQLSTATE 23505 in the server's own
 * encoding (MAKE_SQLSTATE).
 */
int store_fixture_native_unique(enum store_kind kind);

/* The other kind: the target of a copy across stores. */
enum store_kind store_fixture_other_kind(enum store_kind kind);

/*
 * A fresh store of @kind (open unless @flags says otherwise), or NULL with
 * @err filled and everything made so far undone.  Free with
 * store_fixture_free().
 */
struct store_fixture *store_fixture_new(enum store_kind kind, unsigned flags, struct st_error *err);

/*
 * A second fresh store of @kind beside @fx (made as store_fixture_new()
 * does), freed with @fx, so that a failing test leaves nothing behind: the
 * target of a copy, a store that several processes open first.  Borrowed;
 * NULL with @err filled.
 */
struct store_fixture *store_fixture_add(struct store_fixture *fx, enum store_kind kind,
                                        unsigned flags, struct st_error *err);

/*
 * Close the store, drop the schema or remove the directory, free, and the
 * same for every store added to it; NULL-safe.
 */
void store_fixture_free(struct store_fixture *fx);

/*
 * cmocka-shaped per-test set-up and teardown (they call nothing of
 * cmocka's): store_fixture_setup() puts a new, open fixture of the kind
 * under test in *@state, or prints why it could not and returns -1, which
 * cmocka counts as a failed test; store_fixture_teardown() frees *@state.
 */
int store_fixture_setup(void **state);
int store_fixture_teardown(void **state);

/* The URL of @fx's store, for store_open() in another process or thread. */
const char *store_fixture_url(const struct store_fixture *fx);

/* "sqlite" or "postgresql": which store @fx is, for failure messages. */
const char *store_fixture_name(const struct store_fixture *fx);

/*
 * Run @sql (one or more statements, no results wanted) on @fx's database,
 * outside the repositories: how a test tampers with rows.  SQLite runs it
 * on a connection of its own, PostgreSQL on the fixture's admin connection
 * (its search_path is the test's schema).  0, or -1 with @err filled.
 */
int store_fixture_exec_sql(struct store_fixture *fx, const char *sql, struct st_error *err);

/*
 * Run @sql, a query answering one row of one integer column, the same way;
 * *out is the value.  A NULL, no row or more than one is an error.
 */
int store_fixture_query_int(struct store_fixture *fx, const char *sql, int64_t *out,
                            struct st_error *err);

#endif
