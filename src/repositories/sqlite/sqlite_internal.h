/*
 * sqlite_internal.h - what the SQLite repositories share with sqlite_db.c.
 *
 * Not part of any public contract: only the .c files of this directory and the
 * unit tests of this store include it.
 */
#ifndef STRATUS_REPOSITORIES_SQLITE_INTERNAL_H
#define STRATUS_REPOSITORIES_SQLITE_INTERNAL_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "repositories/sqlite/sqlite_db.h"

/*
 * How long a write keeps retrying BEGIN IMMEDIATE while another connection
 * holds the write lock, before it gives up with ST_ERR_UNAVAILABLE.
 */
#define SQLITE_DB_BUSY_BOUND_MS 10000
/* SQLite's own busy handler waits at most this long per attempt. */
#define SQLITE_DB_BUSY_TIMEOUT_MS 5000

/* The raw connection, borrowed. */
sqlite3 *sqlite_db_handle(struct sqlite_db *db);

/*
 * Change the busy bound of @db (milliseconds, > 0); the per-attempt busy
 * timeout shrinks with it.  For tests, which cannot wait ten seconds.
 */
void sqlite_db_set_busy_bound(struct sqlite_db *db, int ms);

/* Prepare @sql once for the life of a repository; finalize with sqlite3_finalize(). */
int sqlite_db_prepare(struct sqlite_db *db, const char *sql, sqlite3_stmt **out,
                      struct st_error *err);

/*
 * Fill @err from result code @rc and the connection's message:
 * SQLITE_BUSY/SQLITE_LOCKED become ST_ERR_UNAVAILABLE, anything else
 * ST_ERR_BACKEND, both with @rc as the native code.  The message is
 * "<fmt...>: <sqlite's message>".  Call it right after the failing call,
 * before anything else touches the connection.  Returns -1.
 */
int sqlite_db_fail_at(struct sqlite_db *db, int rc, struct st_error *err, const char *file,
                      int line, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
#define sqlite_db_fail(db, rc, err, ...)                                                           \
    sqlite_db_fail_at((db), (rc), (err), __FILE__, __LINE__, __VA_ARGS__)

/* Names the row a write is about, for the messages sqlite_db_write() makes. */
struct sqlite_row_ref {
    const char *noun; /* "VM", "image", "flavor" */
    const char *id;
    const char *name; /* NULL when the write cannot clash on a name */
    /* How the name is introduced: NULL for "named" ("a VM named 'x'"), or "with e-mail". */
    const char *name_is;
};

/*
 * Run the already bound write statement @st as one BEGIN IMMEDIATE
 * transaction, retrying the BEGIN with a short backoff while the database
 * is busy, up to the busy bound.  Returns 0 when the statement changed at
 * least one row.  Otherwise -1 with: ST_ERR_NOT_FOUND ("no VM 'id'") when
 * it changed nothing, ST_ERR_CONFLICT when it broke the (owner, name) or
 * id uniqueness, ST_ERR_UNAVAILABLE when busy, ST_ERR_BACKEND else.
 * @st is reset and its bindings cleared in every case.
 */
int sqlite_db_write(struct sqlite_db *db, sqlite3_stmt *st, const struct sqlite_row_ref *ref,
                    struct st_error *err);

/*
 * Run the bound delete @st as one write transaction (joining the
 * caller's), whatever it removes: *n is how many rows went, 0 included.
 * Otherwise as sqlite_db_write().  @st is reset and cleared in every case.
 */
int sqlite_db_delete(struct sqlite_db *db, sqlite3_stmt *st, const struct sqlite_row_ref *ref,
                     size_t *n, struct st_error *err);

/*
 * Writes of more than one statement (read, decide, write) hold the write
 * lock throughout, so that no other connection writes in between:
 *
 *   if (sqlite_db_begin(db, err) < 0) return -1;
 *   ... reads; sqlite_db_write_step() ...; on failure sqlite_db_rollback()
 *   return sqlite_db_commit(db, err);
 *
 * sqlite_db_begin() runs BEGIN IMMEDIATE, retrying while busy up to the
 * busy bound as sqlite_db_write() does: ST_ERR_UNAVAILABLE when it stays
 * busy.  sqlite_db_commit() commits, and rolls back when that fails.
 * sqlite_db_rollback() ends a transaction still open and is a no-op
 * otherwise.
 *
 * They nest, as store_tx.h says: inside an open transaction (a store_tx,
 * or a method calling another) begin joins it and counts a level, an
 * inner commit only counts down, and an inner rollback counts down and
 * dooms the whole.  The outermost commit of a doomed transaction rolls it
 * back and answers ST_ERR_BACKEND "... the transaction was rolled back";
 * a commit with none open is ST_ERR_INTERNAL.  sqlite_db_write() is one
 * such level, so every write joins the caller's transaction.
 */
int sqlite_db_begin(struct sqlite_db *db, struct st_error *err);
int sqlite_db_commit(struct sqlite_db *db, struct st_error *err);
void sqlite_db_rollback(struct sqlite_db *db);

/*
 * Step the bound write statement @st inside the caller's transaction.
 * Returns how many rows it changed (0 is no error here), or -1 with @err
 * filled as sqlite_db_write() fills it (conflicts named after @ref, busy,
 * backend).  The transaction stays open either way.  @st is reset and its
 * bindings cleared in every case.
 */
int sqlite_db_write_step(struct sqlite_db *db, sqlite3_stmt *st, const struct sqlite_row_ref *ref,
                         struct st_error *err);

/* Reset @st and clear its bindings, ready for the next call. NULL-safe. */
void sqlite_stmt_done(sqlite3_stmt *st);

/* Bind @s as text (SQLITE_STATIC: it must outlive the step); NULL binds NULL. */
int sqlite_bind_text(sqlite3_stmt *st, int idx, const char *s);
/* As sqlite_bind_text(), but "" also binds NULL: optional members and filters. */
int sqlite_bind_opt_text(sqlite3_stmt *st, int idx, const char *s);

/*
 * Bind the revision a row is inserted with: the caller's, or 1 when it
 * left it 0 (a new row starts at 1).
 */
int sqlite_bind_revision(sqlite3_stmt *st, int idx, uint64_t revision);

/* Copy text column @col into buf (size n); NULL reads as "". */
void sqlite_column_text(sqlite3_stmt *st, int col, char *buf, size_t n);

/*
 * Step the bound single-row query @st.  Returns 0 with the row read into
 * *item by @read (which reads the current row of a statement into a struct
 * vm, image, ... and returns 0 or -1 with @err filled), or -1: ST_ERR_NOT_FOUND ("no VM 'id'") when
 * it returned no row.  @st is reset and cleared in every case.
 */
int sqlite_db_get(struct sqlite_db *db, sqlite3_stmt *st, const char *noun, const char *id,
                  int (*read)(sqlite3_stmt *st, void *item, struct st_error *err), void *item,
                  struct st_error *err);

/* One page of rows, allocated with realloc(): free(items) releases it. */
struct sqlite_page {
    void *items;
    size_t count;
    bool more;
};

/*
 * Run the list query @st, whose parameters other than ?5 are bound, and
 * collect one page of items of @size bytes.  ?5 is bound here to the
 * clamped limit + 1, the extra row telling whether more follow.  Every
 * list query yields a flag as column 0: 1 marks the marker row itself
 * (present when the marker names a row in scope, skipped), 0 a row of the
 * page.  When @marker is non-empty and no flagged row came, that is
 * ST_ERR_INVALID ("marker 'x' names no VM").  @st is reset and cleared in
 * every case; *out is written only on success.
 */
int sqlite_db_list(struct sqlite_db *db, sqlite3_stmt *st, const char *noun, const char *marker,
                   unsigned limit, size_t size,
                   int (*read)(sqlite3_stmt *st, void *item, struct st_error *err),
                   struct sqlite_page *out, struct st_error *err);

/*
 * The scope test of a repository's own statements on owner_id: ?2 is the
 * owner or NULL.
 */
#define SQLITE_TABLE_SCOPE "(?2 IS NULL OR owner_id = ?2)"

/*
 * What a repository tells sqlite_table_open() about its table.  Point to
 * static storage: the table keeps the strings.
 */
struct sqlite_table_spec {
    const char *table; /* "vms" */
    const char *noun;  /* "VM": used in every message */
    /*
     * Every column, ", "-separated, in the order the row reader expects
     * them after the marker flag (so column 1 is the first one here) and
     * the insert binder binds them (?1 is the first one here).  "id" comes
     * first and the order column (below) is among them: pages are ordered
     * by both.
     */
    const char *cols;
    size_t size; /* of one item, as sqlite_db_list() fills them */
    /* Reads the current row into an item; see sqlite_db_get(). */
    int (*read)(sqlite3_stmt *st, void *item, struct st_error *err);
    /*
     * NULL, or a condition the list queries add, on parameters ?2 and ?3
     * (the owner is ?1, the marker ?4, the limit ?5), bound by the @bind
     * callback of sqlite_table_list().
     */
    const char *list_where;
    /* NULL, or a condition the delete adds, which must also hold for a row to go. */
    const char *remove_where;
    /* The column the owner arguments compare with; NULL is "owner_id". */
    const char *owner_col;
    /*
     * True for a table of rows nobody owns (users): its callers pass owner
     * NULL, and a non-NULL owner sees no row.
     */
    bool unowned;
    /*
     * NULL, or a condition under which a row is visible to every owner in
     * get and list, though not in remove: "visibility = 'public'".
     */
    const char *shared_where;
    /* The time column pages are ordered by, before id; NULL is "created_at". */
    const char *order_col;
};

/*
 * One table with its statements, prepared once at open.  An owner's scope
 * is its own rows, and in get and list also the rows of shared_where; a
 * NULL owner sees every row.
 *   insert   INSERT INTO <table> (<cols>) VALUES (?1, ..., ?n), bound by the repository
 *   get      by id ?1 within the scope of owner ?2
 *   remove   by id ?1 among the rows of owner ?2 [AND <remove_where>]
 *   list     [scoped by ?1][after the marker ?4]: the queries sqlite_db_list() runs,
 *            ordered by (<order_col>, id)
 */
struct sqlite_table {
    struct sqlite_db *db; /* borrowed */
    const char *noun;
    size_t size;
    int (*read)(sqlite3_stmt *st, void *item, struct st_error *err);
    sqlite3_stmt *insert;
    sqlite3_stmt *get;
    sqlite3_stmt *remove;
    sqlite3_stmt *list[2][2];
    sqlite3_stmt *revision; /* NULL unless the table has a revision column */
    void *scratch;          /* one item, where get reads a row before it is known good */
};

/*
 * Build the statements @spec describes and prepare them on @db.  Returns
 * a new table (free with sqlite_table_close()) or NULL with @err filled.
 */
struct sqlite_table *sqlite_table_open(struct sqlite_db *db, const struct sqlite_table_spec *spec,
                                       struct st_error *err);
/* Finalize the statements and free @t. NULL-safe. */
void sqlite_table_close(struct sqlite_table *t);

/*
 * Run the write statement @st of @t (insert, or one of the repository's
 * own), whose parameters the caller just bound: @bind_failed is true when
 * one of those binds failed, and then the write fails with
 * "cannot <verb> <noun> '<id>'" and the connection's message.  Otherwise
 * as sqlite_db_write().  @st is reset and cleared in every case.
 */
int sqlite_table_write(struct sqlite_table *t, sqlite3_stmt *st, bool bind_failed, const char *verb,
                       const struct sqlite_row_ref *ref, struct st_error *err);

/*
 * Run the compare-and-set write @st of @t, bound as sqlite_table_write()
 * says, whose WHERE clause holds only while row ref->id of @owner (any
 * owner when NULL) is at revision @expected, and which bumps it.  One
 * write transaction (joining the caller's, if one is open).  When it
 * changed nothing, the row is looked up in the same transaction: not
 * there (in scope) is ST_ERR_NOT_FOUND "no VM 'x'", there at another
 * revision ST_ERR_STALE (see sqlite_table_stale()).  Otherwise as
 * sqlite_db_write().  @st is reset and cleared in every case.
 */
int sqlite_table_write_cas(struct sqlite_table *t, sqlite3_stmt *st, bool bind_failed,
                           const char *verb, const char *owner, uint64_t expected,
                           const struct sqlite_row_ref *ref, struct st_error *err);

/*
 * Fill @err with ST_ERR_STALE "<noun> '<id>' changed meanwhile: revision
 * <expected> expected, <stored> stored".  Returns -1.
 */
int sqlite_table_stale(const struct sqlite_table *t, const char *id, uint64_t expected,
                       uint64_t stored, struct st_error *err);

/*
 * Read the row @id within @owner's scope into *item (t->size bytes), as
 * sqlite_db_get(); *item is written only on success.
 */
int sqlite_table_get(struct sqlite_table *t, const char *owner, const char *id, void *item,
                     struct st_error *err);

/*
 * One page of the rows in @owner's scope (every row when NULL), after
 * @marker when it is not empty, as sqlite_db_list().  @bind, when not NULL, binds the
 * parameters of the spec's list_where from @filter and returns non-zero
 * when a bind failed.
 */
int sqlite_table_list(struct sqlite_table *t, const char *owner, const char *marker, unsigned limit,
                      int (*bind)(sqlite3_stmt *st, const void *filter), const void *filter,
                      struct sqlite_page *out, struct st_error *err);

/* Delete @owner's row @id (any row when NULL), as sqlite_db_write(). */
int sqlite_table_remove(struct sqlite_table *t, const char *owner, const char *id,
                        struct st_error *err);

#endif
