/*
 * op_repo_sqlite.c - the operations table in SQLite.
 *
 * get and list go through the shared table helper.  "One queued or
 * running operation per VM" is the partial unique index operations_active
 * of migration 3, so concurrent inserts cannot both pass a check.  Every
 * write that depends on who holds an operation (claim, renew, finish) is
 * one statement whose WHERE clause says so, run inside BEGIN IMMEDIATE.
 */
#include "repositories/sqlite/sqlite_db.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "repositories/sqlite/sqlite_internal.h"
#include "util/mem.h"

#define OP_SQLITE_COLS                                                                             \
    "id, kind, target_id, owner_id, status, step, error, created_at, started_at, finished_at, "    \
    "worker_id, lease_expires_at, attempts, revision"

/*
 * The oldest claimable operation, taken in the statement that finds it.
 * ?1 worker, ?2 lease end, ?3 now.  The status names are op_status_name()'s.
 * RETURNING yields the row as it is after the update, with the marker flag
 * first so that op_sqlite_read() reads it like any other.
 *
 * The same statement suits PostgreSQL, with "FOR UPDATE SKIP LOCKED" at the
 * end of the subquery: there concurrent claims run side by side and each
 * skips the rows the others have locked, where SQLite's BEGIN IMMEDIATE
 * makes them take turns.
 */
#define OP_SQLITE_CLAIM                                                                            \
    "UPDATE operations SET status = 'running', worker_id = ?1, lease_expires_at = ?2, "            \
    "attempts = attempts + 1, revision = revision + 1, "                                           \
    "started_at = CASE WHEN started_at = 0 THEN ?3 ELSE started_at END "                           \
    "WHERE id = (SELECT id FROM operations WHERE status = 'queued' OR "                            \
    "(status = 'running' AND lease_expires_at < ?3) ORDER BY created_at, id LIMIT 1) "             \
    "RETURNING 0, " OP_SQLITE_COLS

/* Both writes change a row only while ?2 holds the operation ?1. */
#define OP_SQLITE_HELD "id = ?1 AND worker_id = ?2 AND status = 'running'"

struct op_sqlite {
    struct sqlite_db *db; /* borrowed */
    struct sqlite_table *t;
    sqlite3_stmt *claim;
    sqlite3_stmt *renew;
    sqlite3_stmt *finish;
    sqlite3_stmt *exists;
    sqlite3_stmt *active;
};

static int
op_sqlite_read(sqlite3_stmt *st, void *item, struct st_error *err)
{
    struct operation *op = item;
    char kind[32];
    char status[32];

    memset(op, 0, sizeof(*op));
    sqlite_column_text(st, 1, op->id, sizeof(op->id));
    sqlite_column_text(st, 2, kind, sizeof(kind));
    sqlite_column_text(st, 3, op->target_id, sizeof(op->target_id));
    sqlite_column_text(st, 4, op->owner_id, sizeof(op->owner_id));
    sqlite_column_text(st, 5, status, sizeof(status));
    sqlite_column_text(st, 6, op->step, sizeof(op->step));
    sqlite_column_text(st, 7, op->error, sizeof(op->error));
    op->created_at = sqlite3_column_int64(st, 8);
    op->started_at = sqlite3_column_int64(st, 9);
    op->finished_at = sqlite3_column_int64(st, 10);
    sqlite_column_text(st, 11, op->worker_id, sizeof(op->worker_id));
    op->lease_expires_at = sqlite3_column_int64(st, 12);
    op->attempts = (unsigned)sqlite3_column_int64(st, 13);
    op->revision = (uint64_t)sqlite3_column_int64(st, 14);
    if (op_kind_parse(kind, &op->kind) < 0)
        return st_error_set(err, ST_ERR_BACKEND, "operation '%s' has an unknown kind '%s' stored",
                            op->id, kind);
    if (op_status_parse(status, &op->status) < 0)
        return st_error_set(err, ST_ERR_BACKEND, "operation '%s' has an unknown status '%s' stored",
                            op->id, status);
    return 0;
}

static const struct sqlite_table_spec op_sqlite_table = {
    .table = "operations",
    .noun = "operation",
    .cols = OP_SQLITE_COLS,
    .size = sizeof(struct operation),
    .read = op_sqlite_read,
    /* ?2 target, ?3 status: bound by op_sqlite_bind_filter(). */
    .list_where = "(?2 IS NULL OR target_id = ?2) AND (?3 IS NULL OR status = ?3)",
    .remove_where = NULL,
    .owner_col = "owner_id",
    .unowned = false,
    .shared_where = NULL,
    .order_col = "created_at",
};

/* @op as ?1..?14 in the order of OP_SQLITE_COLS; true when a bind failed. */
static bool
op_sqlite_bind_insert(sqlite3_stmt *st, const struct operation *op)
{
    return sqlite_bind_text(st, 1, op->id) || sqlite_bind_text(st, 2, op_kind_name(op->kind)) ||
           sqlite_bind_text(st, 3, op->target_id) || sqlite_bind_text(st, 4, op->owner_id) ||
           sqlite_bind_text(st, 5, op_status_name(op->status)) ||
           sqlite_bind_text(st, 6, op->step) || sqlite_bind_opt_text(st, 7, op->error) ||
           sqlite3_bind_int64(st, 8, op->created_at) || sqlite3_bind_int64(st, 9, op->started_at) ||
           sqlite3_bind_int64(st, 10, op->finished_at) ||
           sqlite_bind_opt_text(st, 11, op->worker_id) ||
           sqlite3_bind_int64(st, 12, op->lease_expires_at) ||
           sqlite3_bind_int64(st, 13, op->attempts) || sqlite_bind_revision(st, 14, op->revision);
}

/* Fail with the connection's message for a bind that went wrong on @st. */
static int
op_sqlite_bind_fail(struct op_sqlite *r, sqlite3_stmt *st, const char *verb, const char *id,
                    struct st_error *err)
{
    sqlite_db_fail(r->db, sqlite3_errcode(sqlite_db_handle(r->db)), err, "cannot %s operation '%s'",
                   verb, id);
    sqlite_stmt_done(st);
    return -1;
}

/* The queued or running operation on @target_id into *out; see sqlite_db_get(). */
static int
op_sqlite_read_active(struct op_sqlite *r, const char *target_id, struct operation *out,
                      struct st_error *err)
{
    if (sqlite_bind_text(r->active, 1, target_id)) {
        sqlite_db_fail(r->db, sqlite3_errcode(sqlite_db_handle(r->db)), err,
                       "cannot read the operation in progress on VM '%s'", target_id);
        sqlite_stmt_done(r->active);
        return -1;
    }
    /* "no operation in progress on VM 'x'" */
    return sqlite_db_get(r->db, r->active, "operation in progress on VM", target_id, op_sqlite_read,
                         out, err);
}

/*
 * operations_active refused a second active operation on @target_id:
 * name the one in the way, read under the same write lock.  SQLite checks
 * that index before the primary key, so an active @id inserted twice
 * lands here too.
 */
static void
op_sqlite_in_progress(struct op_sqlite *r, const char *id, const char *target_id,
                      struct st_error *err)
{
    struct operation active;
    bool found = op_sqlite_read_active(r, target_id, &active, err) == 0;

    if (found && strcmp(active.id, id) == 0)
        st_error_set_native(err, ST_ERR_CONFLICT, SQLITE_CONSTRAINT_UNIQUE,
                            "an operation with id '%s' already exists", id);
    else if (found)
        st_error_set_native(err, ST_ERR_CONFLICT, SQLITE_CONSTRAINT_UNIQUE,
                            "VM '%s' has operation '%s' in progress", target_id, active.id);
    else
        st_error_set_native(err, ST_ERR_CONFLICT, SQLITE_CONSTRAINT_UNIQUE,
                            "VM '%s' has an operation in progress", target_id);
}

static int
op_sqlite_insert(void *self, const struct operation *op, struct st_error *err)
{
    struct op_sqlite *r = self;
    struct sqlite_row_ref ref = {.noun = "operation", .id = op->id, .name = NULL, .name_is = NULL};
    sqlite3_stmt *st = r->t->insert;

    if (op_sqlite_bind_insert(st, op))
        return op_sqlite_bind_fail(r, st, "insert", op->id, err);
    if (sqlite_db_begin(r->db, err) < 0) {
        sqlite_stmt_done(st);
        return -1;
    }
    if (sqlite_db_write_step(r->db, st, &ref, err) < 0) {
        /* The primary key reports SQLITE_CONSTRAINT_PRIMARYKEY: this is operations_active. */
        if (err && err->native == SQLITE_CONSTRAINT_UNIQUE)
            op_sqlite_in_progress(r, op->id, op->target_id, err);
        sqlite_db_rollback(r->db);
        return -1;
    }
    return sqlite_db_commit(r->db, err);
}

static int
op_sqlite_get(void *self, const char *owner, const char *id, struct operation *out,
              struct st_error *err)
{
    struct op_sqlite *r = self;

    return sqlite_table_get(r->t, owner, id, out, err);
}

/* The list_where parameters of op_sqlite_table, from a struct op_filter. */
static int
op_sqlite_bind_filter(sqlite3_stmt *st, const void *filter)
{
    const struct op_filter *f = filter;

    return sqlite_bind_opt_text(st, 2, f->target_id) ||
           sqlite_bind_text(st, 3, f->has_status ? op_status_name(f->status) : NULL);
}

static int
op_sqlite_list(void *self, const char *owner, const struct op_filter *f, struct op_list *out,
               struct st_error *err)
{
    struct op_sqlite *r = self;
    struct sqlite_page page;

    if (sqlite_table_list(r->t, owner, f->marker, f->limit, op_sqlite_bind_filter, f, &page, err) <
        0)
        return -1;
    out->items = page.items;
    out->count = page.count;
    out->more = page.more;
    return 0;
}

/*
 * Run the bound claim statement in its own write transaction.  1 with the
 * claimed row in *out, 0 when nothing was claimable, -1 on failure.
 */
static int
op_sqlite_run_claim(struct op_sqlite *r, const char *worker_id, struct operation *out,
                    struct st_error *err)
{
    int rc;
    int ret;

    if (sqlite_db_begin(r->db, err) < 0) {
        sqlite_stmt_done(r->claim);
        return -1;
    }
    rc = sqlite3_step(r->claim);
    if (rc == SQLITE_ROW)
        ret = op_sqlite_read(r->claim, out, err) < 0 ? -1 : 1;
    else if (rc == SQLITE_DONE)
        ret = 0;
    else
        ret = sqlite_db_fail(r->db, rc, err, "worker '%s' cannot claim an operation", worker_id);
    /* The update was done by the first step; the reset only ends the statement. */
    sqlite_stmt_done(r->claim);
    if (ret < 0) {
        sqlite_db_rollback(r->db);
        return -1;
    }
    if (sqlite_db_commit(r->db, err) < 0)
        return -1;
    return ret;
}

static int
op_sqlite_claim(void *self, const char *worker_id, int64_t now_ms, int64_t lease_ms,
                struct operation *out, bool *claimed, struct st_error *err)
{
    struct op_sqlite *r = self;
    struct operation op;
    int ret;

    if (!worker_id || !*worker_id || strlen(worker_id) >= ST_WORKER_ID_BUF)
        return st_error_set(err, ST_ERR_INVALID, "a worker id must be 1 to %d bytes long, got '%s'",
                            ST_WORKER_ID_BUF - 1, worker_id ? worker_id : "");
    if (lease_ms <= 0 || now_ms > INT64_MAX - lease_ms)
        return st_error_set(err, ST_ERR_INVALID, "a lease of %lld ms from %lld cannot be taken",
                            (long long)lease_ms, (long long)now_ms);
    if (sqlite_bind_text(r->claim, 1, worker_id) ||
        sqlite3_bind_int64(r->claim, 2, now_ms + lease_ms) ||
        sqlite3_bind_int64(r->claim, 3, now_ms)) {
        sqlite_db_fail(r->db, sqlite3_errcode(sqlite_db_handle(r->db)), err,
                       "worker '%s' cannot claim an operation", worker_id);
        sqlite_stmt_done(r->claim);
        return -1;
    }
    ret = op_sqlite_run_claim(r, worker_id, &op, err);
    if (ret < 0)
        return -1;
    if (ret > 0)
        *out = op;
    *claimed = ret > 0;
    return 0;
}

/*
 * A held write changed no row: either there is no operation @id, or
 * @worker_id no longer holds it (another worker took it after the lease
 * ran out, or it ended).  Inside the write's transaction.
 */
static int
op_sqlite_lost(struct op_sqlite *r, const char *id, struct st_error *err)
{
    int rc = sqlite_bind_text(r->exists, 1, id);

    if (rc == SQLITE_OK)
        rc = sqlite3_step(r->exists);
    if (rc == SQLITE_ROW)
        st_error_set(err, ST_ERR_CONFLICT, "lease on operation '%s' was lost", id);
    else if (rc == SQLITE_DONE)
        st_error_set(err, ST_ERR_NOT_FOUND, "no operation '%s'", id);
    else
        sqlite_db_fail(r->db, rc, err, "cannot read operation '%s'", id);
    sqlite_stmt_done(r->exists);
    return -1;
}

/* Run the bound renew or finish statement @st for @id as one write transaction. */
static int
op_sqlite_held_write(struct op_sqlite *r, sqlite3_stmt *st, bool bind_failed, const char *verb,
                     const char *id, struct st_error *err)
{
    struct sqlite_row_ref ref = {.noun = "operation", .id = id, .name = NULL, .name_is = NULL};
    int changed;

    if (bind_failed)
        return op_sqlite_bind_fail(r, st, verb, id, err);
    if (sqlite_db_begin(r->db, err) < 0) {
        sqlite_stmt_done(st);
        return -1;
    }
    changed = sqlite_db_write_step(r->db, st, &ref, err);
    if (changed == 0)
        op_sqlite_lost(r, id, err);
    if (changed <= 0) {
        sqlite_db_rollback(r->db);
        return -1;
    }
    return sqlite_db_commit(r->db, err);
}

static int
op_sqlite_renew(void *self, const char *id, const char *worker_id, int64_t until_ms,
                const char *step, struct st_error *err)
{
    struct op_sqlite *r = self;
    sqlite3_stmt *st = r->renew;

    if (step && strlen(step) >= ST_OP_STEP_BUF)
        return st_error_set(err, ST_ERR_INVALID, "step '%s' of operation '%s' is over %d bytes",
                            step, id, ST_OP_STEP_BUF - 1);
    return op_sqlite_held_write(r, st,
                                sqlite_bind_text(st, 1, id) || sqlite_bind_text(st, 2, worker_id) ||
                                    sqlite3_bind_int64(st, 3, until_ms) ||
                                    sqlite_bind_text(st, 4, step),
                                "renew the lease on", id, err);
}

static int
op_sqlite_finish(void *self, const char *id, const char *worker_id, enum op_status status,
                 const char *error, int64_t now_ms, struct st_error *err)
{
    struct op_sqlite *r = self;
    sqlite3_stmt *st = r->finish;

    if (!op_status_terminal(status))
        return st_error_set(err, ST_ERR_INVALID,
                            "operation '%s' can end succeeded or failed, not '%s'", id,
                            op_status_name(status));
    return op_sqlite_held_write(r, st,
                                sqlite_bind_text(st, 1, id) || sqlite_bind_text(st, 2, worker_id) ||
                                    sqlite_bind_text(st, 3, op_status_name(status)) ||
                                    sqlite_bind_opt_text(st, 4, error) ||
                                    sqlite3_bind_int64(st, 5, now_ms),
                                "finish", id, err);
}

static int
op_sqlite_active_for(void *self, const char *target_id, struct operation *out, struct st_error *err)
{
    struct op_sqlite *r = self;
    struct operation op;

    if (op_sqlite_read_active(r, target_id, &op, err) < 0)
        return -1;
    *out = op;
    return 0;
}

static void
op_sqlite_close(void *self)
{
    struct op_sqlite *r = self;

    if (!r)
        return;
    sqlite3_finalize(r->claim);
    sqlite3_finalize(r->renew);
    sqlite3_finalize(r->finish);
    sqlite3_finalize(r->exists);
    sqlite3_finalize(r->active);
    sqlite_table_close(r->t);
    free(r);
}

static const struct op_repo_ops op_sqlite_ops = {
    .insert = op_sqlite_insert,
    .get = op_sqlite_get,
    .list = op_sqlite_list,
    .claim = op_sqlite_claim,
    .renew = op_sqlite_renew,
    .finish = op_sqlite_finish,
    .active_for = op_sqlite_active_for,
    .close = op_sqlite_close,
};

int
op_repo_sqlite_open(struct sqlite_db *db, struct op_repo *out, struct st_error *err)
{
    struct op_sqlite *r = st_xcalloc(1, sizeof(*r));

    r->db = db;
    r->t = sqlite_table_open(db, &op_sqlite_table, err);
    if (!r->t || sqlite_db_prepare(db, OP_SQLITE_CLAIM, &r->claim, err) < 0 ||
        /* A NULL step (?4) keeps the one recorded. */
        sqlite_db_prepare(db,
                          "UPDATE operations SET lease_expires_at = ?3, step = coalesce(?4, step), "
                          "revision = revision + 1 "
                          "WHERE " OP_SQLITE_HELD,
                          &r->renew, err) < 0 ||
        sqlite_db_prepare(db,
                          "UPDATE operations SET status = ?3, error = ?4, finished_at = ?5, "
                          "revision = revision + 1 "
                          "WHERE " OP_SQLITE_HELD,
                          &r->finish, err) < 0 ||
        sqlite_db_prepare(db, "SELECT 1 FROM operations WHERE id = ?1", &r->exists, err) < 0 ||
        sqlite_db_prepare(db,
                          "SELECT 0, " OP_SQLITE_COLS " FROM operations WHERE target_id = ?1 "
                          "AND status IN ('queued', 'running')",
                          &r->active, err) < 0)
        goto fail;
    out->ops = &op_sqlite_ops;
    out->self = r;
    return 0;

fail:
    st_error_prefix(err, "cannot open the operation repository");
    op_sqlite_close(r);
    return -1;
}
