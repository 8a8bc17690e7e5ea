/*
 * pg_internal.h - what the PostgreSQL repositories share with pg_db.c.
 *
 * Not part of any public contract: only the .c files of this directory and
 * the tests of this store include it.
 *
 * Statements are described once, statically (struct pg_stmt), and prepared
 * on a connection the first time they run there: after a reconnect every
 * statement is prepared again on first use, so repositories never hold
 * anything that a lost connection invalidates.  Parameters and results
 * travel as text; NULL parameters are SQL NULL.
 *
 * Failures map as on SQLite: a unique violation is ST_ERR_CONFLICT (named
 * after the row being written), a lost connection, a serialization failure,
 * a deadlock or a server shutting down is ST_ERR_UNAVAILABLE, anything else
 * ST_ERR_BACKEND.  Outside a transaction a lost connection is re-established
 * once and the statement run again; inside one the transaction is gone, and
 * the caller gets ST_ERR_UNAVAILABLE.
 */
#ifndef STRATUS_REPOSITORIES_POSTGRES_INTERNAL_H
#define STRATUS_REPOSITORIES_POSTGRES_INTERNAL_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "repositories/postgres/pg_db.h"

/* At most this many parameters per statement. */
#define PG_PARAMS_MAX 24

/*
 * A statement, described in static storage.  @name is unique among all
 * statements of all repositories ("vm_get", "op_claim"): it names the
 * prepared statement on the server.  Parameters are $1..$n.
 */
struct pg_stmt {
    const char *name;
    const char *sql;
};

/*
 * The parameters of one run, as text.  Numbers are formatted into the
 * struct's own buffers, so a pg_params lives on the caller's stack for the
 * duration of the call and needs no freeing.
 */
struct pg_params {
    const char *values[PG_PARAMS_MAX];
    char nums[PG_PARAMS_MAX][24];
    int n;
};

/* Start an empty parameter list. */
void pg_params_init(struct pg_params *p);
/* Append @s as text ($n+1); NULL appends SQL NULL.  @s must outlive the run. */
void pg_param_text(struct pg_params *p, const char *s);
/* As pg_param_text(), but "" also appends NULL: optional members and filters. */
void pg_param_opt_text(struct pg_params *p, const char *s);
/* Append a number. */
void pg_param_int(struct pg_params *p, int64_t v);
/* Append a boolean ("true"/"false"). */
void pg_param_bool(struct pg_params *p, bool v);
/*
 * Append the revision a row is inserted with: the caller's, or 1 when it
 * left it 0 (a new row starts at 1).
 */
void pg_param_revision(struct pg_params *p, uint64_t revision);

/*
 * Run @st with @p (NULL: no parameters).  Returns the result (PQclear() it)
 * when the server answered PGRES_TUPLES_OK or PGRES_COMMAND_OK, else NULL
 * with @err filled as the header comment says, the message
 * "cannot <what>: <server's message>" where @what is "run <st->name>".
 * A unique violation is ST_ERR_CONFLICT with the server's message; callers
 * that can name the row use pg_db_write() instead.
 */
PGresult *pg_db_exec(struct pg_db *db, const struct pg_stmt *st, const struct pg_params *p,
                     struct st_error *err);

/* Run plain SQL without parameters (not prepared): DDL, LOCK, SET. */
int pg_db_exec_sql(struct pg_db *db, const char *sql, struct st_error *err);

/* Names the row a write is about, for the messages pg_db_write() makes. */
struct pg_row_ref {
    const char *noun; /* "VM", "image", "flavor" */
    const char *id;
    const char *name; /* NULL when the write cannot clash on a name */
    /* How the name is introduced: NULL for "named" ("a VM named 'x'"), or "with e-mail". */
    const char *name_is;
};

/*
 * Run the write @st with @p (in the caller's transaction, if one is open,
 * else on its own).  Returns how many rows it changed (0 is no error here;
 * pass @ref->id to get "no VM 'id'" use pg_db_write_one()), or -1 with:
 * ST_ERR_CONFLICT "a VM named 'x' already exists" when it broke a unique
 * constraint and ref->name is set, "a VM with id 'x' already exists" when
 * ref->name is NULL; ST_ERR_UNAVAILABLE / ST_ERR_BACKEND as pg_db_exec().
 */
int pg_db_write(struct pg_db *db, const struct pg_stmt *st, const struct pg_params *p,
                const struct pg_row_ref *ref, struct st_error *err);

/* As pg_db_write(), but changing no row is ST_ERR_NOT_FOUND "no <noun> '<id>'". */
int pg_db_write_one(struct pg_db *db, const struct pg_stmt *st, const struct pg_params *p,
                    const struct pg_row_ref *ref, struct st_error *err);

/*
 * Run the compare-and-set write @st with @p, whose WHERE clause holds only
 * while row ref->id is at revision @expected, and which bumps it (in the
 * caller's transaction, if one is open).  When it changed nothing, @probe
 * with @probe_p (the row's revision, within the write's scope) tells
 * ST_ERR_NOT_FOUND "no VM 'x'" from ST_ERR_STALE (see pg_db_stale()).
 * Otherwise as pg_db_write().  Returns 0 or -1.
 */
int pg_db_write_cas(struct pg_db *db, const struct pg_stmt *st, const struct pg_params *p,
                    const struct pg_stmt *probe, const struct pg_params *probe_p,
                    const struct pg_row_ref *ref, uint64_t expected, struct st_error *err);

/*
 * Fill @err with ST_ERR_STALE "<noun> '<id>' changed meanwhile: revision
 * <expected> expected, <stored> stored", as SQLite does.  Returns -1.
 */
int pg_db_stale(const char *noun, const char *id, uint64_t expected, uint64_t stored,
                struct st_error *err);

/*
 * Reads row @row of @res into *item; returns 0 or -1 with @err filled.
 * Columns are read with pg_get_*() below.
 */
typedef int (*pg_read_fn)(const PGresult *res, int row, void *item, struct st_error *err);

/*
 * Run the single-row query @st.  Returns 0 with the first row read into
 * *item by @read, or -1: ST_ERR_NOT_FOUND "no <noun> '<id>'" when it
 * returned no row, else as pg_db_exec().
 */
int pg_db_get(struct pg_db *db, const struct pg_stmt *st, const struct pg_params *p,
              const char *noun, const char *id, pg_read_fn read, void *item, struct st_error *err);

/* One page of rows, allocated with realloc(): free(items) releases it. */
struct pg_page {
    void *items;
    size_t count;
    bool more;
};

/*
 * The limit a list query is given for @limit (0 is ST_LIST_LIMIT_DEFAULT):
 * one more than the page, the extra row telling whether more follow.
 * Append it as the query's limit parameter with pg_param_int().
 */
int64_t pg_list_limit(unsigned limit);

/*
 * Run the list query @st and collect one page of items of @size bytes.
 * As on SQLite, every list query yields a flag as column 0: true ('t' or 1)
 * marks the marker row itself (present when the marker names a row in
 * scope, skipped), false a row of the page; @read then reads a row whose
 * columns start at 1.  When @marker is non-empty and no flagged row came,
 * that is ST_ERR_INVALID "marker 'x' names no <noun>".  *out is written
 * only on success.
 */
int pg_db_list(struct pg_db *db, const struct pg_stmt *st, const struct pg_params *p,
               const char *noun, const char *marker, unsigned limit, size_t size, pg_read_fn read,
               struct pg_page *out, struct st_error *err);

/*
 * Transactions (READ COMMITTED):
 *
 *   if (pg_db_begin(db, err) < 0) return -1;
 *   ... pg_db_lock(), reads, pg_db_write() ...; on failure pg_db_rollback()
 *   return pg_db_commit(db, err);
 *
 * pg_db_begin() may reconnect once (nothing is lost before BEGIN).
 * pg_db_commit() commits and reports a failed commit (the transaction is
 * then rolled back).  pg_db_rollback() ends a transaction still open and is
 * a no-op otherwise.  pg_db_in_transaction() tells which.  (The three are
 * declared in pg_db.h, for stratus-admin db copy.)
 *
 * They nest, as store_tx.h says: inside an open transaction (a store_tx,
 * or a method calling another) begin joins it and counts a level, an
 * inner commit only counts down, and an inner rollback counts down and
 * dooms the whole.  The outermost commit of a doomed transaction rolls it
 * back and answers ST_ERR_BACKEND "... the transaction was rolled back".
 * Advisory locks taken at any level are held to the outermost end.
 */
bool pg_db_in_transaction(const struct pg_db *db);

/*
 * A method failed inside the caller's transaction without opening one of
 * its own (a single write that changed nothing it should have, or failed):
 * doom the transaction, as the inner rollback of a method that opened one
 * does, so that both stores end such a transaction alike.  No-op outside
 * a transaction.  pg_db_write(), pg_db_write_one() and pg_db_write_cas()
 * call it on their failures.
 */
void pg_db_doom(struct pg_db *db);

/*
 * Inside a transaction: take the transaction-scoped advisory lock named
 * @key ("quota:<owner>", "audit", "image:<id>"), waiting for it.  This is
 * how a read-decide-write is made as serial as SQLite's BEGIN IMMEDIATE
 * for exactly the rows it concerns.
 */
int pg_db_lock(struct pg_db *db, const char *key, struct st_error *err);

/* Copy text column @col of @row into buf (size n); NULL reads as "". */
void pg_get_text(const PGresult *res, int row, int col, char *buf, size_t n);
/* Column @col of @row as a number; NULL reads as 0. */
int64_t pg_get_int(const PGresult *res, int row, int col);
/* Column @col of @row as a boolean ('t', 'true' or non-zero); NULL reads as false. */
bool pg_get_bool(const PGresult *res, int row, int col);
/* Whether column @col of @row is NULL. */
bool pg_get_null(const PGresult *res, int row, int col);

/* The raw connection, borrowed (tests). */
PGconn *pg_db_conn(struct pg_db *db);

#endif
