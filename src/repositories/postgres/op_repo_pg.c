/*
 * op_repo_pg.c - the operations table in PostgreSQL, as op_repo_sqlite.c
 * keeps it: scoped by owner, paged by (created_at, id).
 *
 * "One queued or running operation per VM" is the partial unique index
 * operations_active, as on SQLite.  Every write that depends on who holds
 * an operation (claim, renew, finish) is one statement whose WHERE clause
 * says so.  Where SQLite makes concurrent claims take turns under BEGIN
 * IMMEDIATE, here they run side by side: the claim's subquery locks the
 * row it picks with FOR UPDATE SKIP LOCKED, so each skips the rows the
 * others are taking, and a row another claim took meanwhile is checked
 * again (READ COMMITTED) and passed over once it no longer qualifies.
 */
#include "repositories/postgres/pg_db.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "repositories/postgres/pg_internal.h"
#include "util/mem.h"

struct op_pg {
    struct pg_db *db; /* borrowed */
};

/* In the order op_pg_read() reads them after the marker flag, and the insert takes them. */
#define OP_PG_COLS                                                                                 \
    "id, kind, target_id, owner_id, status, step, error, created_at, started_at, finished_at, "    \
    "worker_id, lease_expires_at, attempts, revision"

/* The list filters on parameters $@t (target) and $@s (status), each NULL for any. */
#define OP_PG_FILTER(t, s)                                                                         \
    "($" #t "::text IS NULL OR target_id = $" #t ") AND ($" #s "::text IS NULL OR status = $" #s ")"

/* The first page of the rows of @scope ("" or "<cond> AND ") that pass the filters, limit $@l. */
#define OP_PG_PAGE(scope, t, s, l)                                                                 \
    "SELECT false, " OP_PG_COLS " FROM operations WHERE " scope OP_PG_FILTER(                      \
        t, s) " ORDER BY created_at, id LIMIT $" #l

/*
 * The page after the marker $@m among the rows of @scope that pass the
 * filters, at most $@l of them, preceded by the marker row itself (flag
 * true, whether or not it passes, as on SQLite): pg_db_list() learns from
 * the same query whether the marker names a row in scope.
 */
#define OP_PG_AFTER(scope, t, s, m, l)                                                             \
    "SELECT true, " OP_PG_COLS " FROM operations WHERE " scope "id = $" #m " UNION ALL "           \
    "(SELECT false, " OP_PG_COLS " FROM operations WHERE " scope                                   \
    OP_PG_FILTER(t,                                                                                \
                 s) " AND (created_at, id) > (SELECT created_at, id FROM operations WHERE " scope  \
                    "id = $" #m ") "                                                               \
                    "ORDER BY created_at, id LIMIT $" #l ") ORDER BY 1 DESC, created_at, id"

/*
 * The native code of a unique violation (SQLSTATE 23505) as pg_db.c fills
 * it in (the server's MAKE_SQLSTATE(): six bits a character, the first
 * lowest), for the clashes this file names itself: the insert's ON
 * CONFLICT means the server never reports them.
 */
#define OP_PG_SQLSTATE_CHAR(c, i) ((((c) - '0') & 0x3f) << (6 * (i)))
#define OP_PG_UNIQUE_VIOLATION                                                                     \
    (OP_PG_SQLSTATE_CHAR('2', 0) + OP_PG_SQLSTATE_CHAR('3', 1) + OP_PG_SQLSTATE_CHAR('5', 2) +     \
     OP_PG_SQLSTATE_CHAR('0', 3) + OP_PG_SQLSTATE_CHAR('5', 4))

/* Both writes change a row only while $2 holds the operation $1. */
#define OP_PG_HELD "id = $1 AND worker_id = $2 AND status = 'running'"

/*
 * Any clash inserts nothing rather than fail, so that a clash does not
 * abort the caller's transaction on the server when there is one: the
 * rows in the way are then looked at, in it, to tell SQLite's two
 * messages apart (the transaction is doomed all the same, as on SQLite).  A clash with
 * a row another transaction is still inserting waits for it to end, so
 * that lookup sees what was committed.
 */
static const struct pg_stmt op_pg_insert_stmt = {
    "op_insert",
    "INSERT INTO operations (" OP_PG_COLS ") "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) ON CONFLICT DO NOTHING",
};

/* $1 id, $2 owner or NULL. */
static const struct pg_stmt op_pg_get_stmt = {
    "op_get",
    "SELECT false, " OP_PG_COLS " FROM operations "
    "WHERE id = $1 AND ($2::text IS NULL OR owner_id = $2)",
};

/*
 * [scoped][after a marker]: one statement each, as on SQLite.  Parameters,
 * in this order, of those present: owner, target, status, marker, limit.
 */
static const struct pg_stmt op_pg_list_stmts[2][2] = {
    {
        {"op_list", OP_PG_PAGE("", 1, 2, 3)},
        {"op_list_after", OP_PG_AFTER("", 1, 2, 3, 4)},
    },
    {
        {"op_list_owner", OP_PG_PAGE("owner_id = $1 AND ", 2, 3, 4)},
        {"op_list_owner_after", OP_PG_AFTER("owner_id = $1 AND ", 2, 3, 4, 5)},
    },
};

/*
 * The oldest claimable operation, taken in the statement that finds it:
 * the conditions and order of OP_SQLITE_CLAIM.  $1 worker, $2 lease end,
 * $3 now.  RETURNING yields the row as it is after the update.
 */
static const struct pg_stmt op_pg_claim_stmt = {
    "op_claim",
    "UPDATE operations SET status = 'running', worker_id = $1, lease_expires_at = $2::bigint, "
    "attempts = attempts + 1, revision = revision + 1, "
    "started_at = CASE WHEN started_at = 0 THEN $3::bigint ELSE started_at END "
    "WHERE id = (SELECT id FROM operations WHERE status = 'queued' OR "
    "(status = 'running' AND lease_expires_at < $3::bigint) ORDER BY created_at, id LIMIT 1 "
    "FOR UPDATE SKIP LOCKED) "
    "RETURNING false, " OP_PG_COLS,
};

/* A NULL step ($4) keeps the one recorded. */
static const struct pg_stmt op_pg_renew_stmt = {
    "op_renew",
    "UPDATE operations SET lease_expires_at = $3, step = coalesce($4::text, step), "
    "revision = revision + 1 "
    "WHERE " OP_PG_HELD,
};

static const struct pg_stmt op_pg_finish_stmt = {
    "op_finish",
    "UPDATE operations SET status = $3, error = $4, finished_at = $5, revision = revision + 1 "
    "WHERE " OP_PG_HELD,
};

static const struct pg_stmt op_pg_exists_stmt = {
    "op_exists",
    "SELECT EXISTS (SELECT 1 FROM operations WHERE id = $1)",
};

static const struct pg_stmt op_pg_active_stmt = {
    "op_active",
    "SELECT false, " OP_PG_COLS " FROM operations "
    "WHERE target_id = $1 AND status IN ('queued', 'running')",
};

static int
op_pg_read(const PGresult *res, int row, void *item, struct st_error *err)
{
    struct operation *op = item;
    char kind[32];
    char status[32];

    memset(op, 0, sizeof(*op));
    pg_get_text(res, row, 1, op->id, sizeof(op->id));
    pg_get_text(res, row, 2, kind, sizeof(kind));
    pg_get_text(res, row, 3, op->target_id, sizeof(op->target_id));
    pg_get_text(res, row, 4, op->owner_id, sizeof(op->owner_id));
    pg_get_text(res, row, 5, status, sizeof(status));
    pg_get_text(res, row, 6, op->step, sizeof(op->step));
    pg_get_text(res, row, 7, op->error, sizeof(op->error));
    op->created_at = pg_get_int(res, row, 8);
    op->started_at = pg_get_int(res, row, 9);
    op->finished_at = pg_get_int(res, row, 10);
    pg_get_text(res, row, 11, op->worker_id, sizeof(op->worker_id));
    op->lease_expires_at = pg_get_int(res, row, 12);
    op->attempts = (unsigned)pg_get_int(res, row, 13);
    op->revision = (uint64_t)pg_get_int(res, row, 14);
    if (op_kind_parse(kind, &op->kind) < 0)
        return st_error_set(err, ST_ERR_BACKEND, "operation '%s' has an unknown kind '%s' stored",
                            op->id, kind);
    if (op_status_parse(status, &op->status) < 0)
        return st_error_set(err, ST_ERR_BACKEND, "operation '%s' has an unknown status '%s' stored",
                            op->id, status);
    return 0;
}

/* The queued or running operation on @target_id into *out; see pg_db_get(). */
static int
op_pg_read_active(struct op_pg *r, const char *target_id, struct operation *out,
                  struct st_error *err)
{
    struct pg_params p;

    pg_params_init(&p);
    pg_param_text(&p, target_id);
    /* "no operation in progress on VM 'x'" */
    return pg_db_get(r->db, &op_pg_active_stmt, &p, "operation in progress on VM", target_id,
                     op_pg_read, out, err);
}

/* 1 when there is an operation @id, 0 when there is none, -1 on failure. */
static int
op_pg_exists(struct op_pg *r, const char *id, struct st_error *err)
{
    struct pg_params p;
    PGresult *res;
    int found;

    pg_params_init(&p);
    pg_param_text(&p, id);
    res = pg_db_exec(r->db, &op_pg_exists_stmt, &p, err);
    if (!res)
        return -1;
    found = PQntuples(res) == 1 && pg_get_bool(res, 0, 0);
    PQclear(res);
    return found;
}

/*
 * The insert of @op clashed with a row: name it as SQLite does.  SQLite
 * checks operations_active before the primary key, so an active @op whose
 * VM has another operation in progress is told that, even when its id is
 * taken too; an active @op inserted twice is a taken id.  Failing to look
 * leaves the vaguer of the two messages.
 */
static void
op_pg_insert_clashed(struct op_pg *r, const struct operation *op, struct st_error *err)
{
    bool active = op->status == OP_STATUS_QUEUED || op->status == OP_STATUS_RUNNING;
    struct st_error ignored = {0};
    struct operation in_progress;
    bool found = active && op_pg_read_active(r, op->target_id, &in_progress, &ignored) == 0;

    if (found && strcmp(in_progress.id, op->id) != 0)
        st_error_set_native(err, ST_ERR_CONFLICT, OP_PG_UNIQUE_VIOLATION,
                            "VM '%s' has operation '%s' in progress", op->target_id,
                            in_progress.id);
    else if (found || !active || op_pg_exists(r, op->id, &ignored) == 1)
        st_error_set_native(err, ST_ERR_CONFLICT, OP_PG_UNIQUE_VIOLATION,
                            "an operation with id '%s' already exists", op->id);
    else
        st_error_set_native(err, ST_ERR_CONFLICT, OP_PG_UNIQUE_VIOLATION,
                            "VM '%s' has an operation in progress", op->target_id);
}

static int
op_pg_insert(void *self, const struct operation *op, struct st_error *err)
{
    struct op_pg *r = self;
    struct pg_row_ref ref = {.noun = "operation", .id = op->id, .name = NULL, .name_is = NULL};
    struct pg_params p;
    int inserted;

    pg_params_init(&p);
    pg_param_text(&p, op->id);
    pg_param_text(&p, op_kind_name(op->kind));
    pg_param_text(&p, op->target_id);
    pg_param_text(&p, op->owner_id);
    pg_param_text(&p, op_status_name(op->status));
    pg_param_text(&p, op->step);
    pg_param_opt_text(&p, op->error);
    pg_param_int(&p, op->created_at);
    pg_param_int(&p, op->started_at);
    pg_param_int(&p, op->finished_at);
    pg_param_opt_text(&p, op->worker_id);
    pg_param_int(&p, op->lease_expires_at);
    pg_param_int(&p, op->attempts);
    pg_param_revision(&p, op->revision);
    inserted = pg_db_write(r->db, &op_pg_insert_stmt, &p, &ref, err);
    if (inserted < 0)
        return -1;
    if (inserted == 0) {
        pg_db_doom(r->db);
        op_pg_insert_clashed(r, op, err);
        return -1;
    }
    return 0;
}

static int
op_pg_get(void *self, const char *owner, const char *id, struct operation *out,
          struct st_error *err)
{
    struct op_pg *r = self;
    struct operation op;
    struct pg_params p;

    pg_params_init(&p);
    pg_param_text(&p, id);
    pg_param_text(&p, owner);
    if (pg_db_get(r->db, &op_pg_get_stmt, &p, "operation", id, op_pg_read, &op, err) < 0)
        return -1;
    *out = op;
    return 0;
}

static int
op_pg_list(void *self, const char *owner, const struct op_filter *f, struct op_list *out,
           struct st_error *err)
{
    struct op_pg *r = self;
    bool after = f->marker[0] != '\0';
    struct pg_page page;
    struct pg_params p;

    pg_params_init(&p);
    if (owner)
        pg_param_text(&p, owner);
    pg_param_opt_text(&p, f->target_id);
    pg_param_text(&p, f->has_status ? op_status_name(f->status) : NULL);
    if (after)
        pg_param_text(&p, f->marker);
    pg_param_int(&p, pg_list_limit(f->limit));
    if (pg_db_list(r->db, &op_pg_list_stmts[owner != NULL][after], &p, "operation", f->marker,
                   f->limit, sizeof(struct operation), op_pg_read, &page, err) < 0)
        return -1;
    out->items = page.items;
    out->count = page.count;
    out->more = page.more;
    return 0;
}

static int
op_pg_claim(void *self, const char *worker_id, int64_t now_ms, int64_t lease_ms,
            struct operation *out, bool *claimed, struct st_error *err)
{
    struct op_pg *r = self;
    struct operation op;
    struct pg_params p;
    PGresult *res;
    int ret = 0;

    if (!worker_id || !*worker_id || strlen(worker_id) >= ST_WORKER_ID_BUF)
        return st_error_set(err, ST_ERR_INVALID, "a worker id must be 1 to %d bytes long, got '%s'",
                            ST_WORKER_ID_BUF - 1, worker_id ? worker_id : "");
    if (lease_ms <= 0 || now_ms > INT64_MAX - lease_ms)
        return st_error_set(err, ST_ERR_INVALID, "a lease of %lld ms from %lld cannot be taken",
                            (long long)lease_ms, (long long)now_ms);
    pg_params_init(&p);
    pg_param_text(&p, worker_id);
    pg_param_int(&p, now_ms + lease_ms);
    pg_param_int(&p, now_ms);
    res = pg_db_exec(r->db, &op_pg_claim_stmt, &p, err);
    if (!res) {
        st_error_prefix(err, "worker '%s' cannot claim an operation", worker_id);
        return -1;
    }
    if (PQntuples(res) > 0)
        ret = op_pg_read(res, 0, &op, err) < 0 ? -1 : 1;
    PQclear(res);
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
 * ran out, or it ended).  Returns -1.
 */
static int
op_pg_lost(struct op_pg *r, const char *id, struct st_error *err)
{
    int found = op_pg_exists(r, id, err);

    if (found > 0)
        st_error_set(err, ST_ERR_CONFLICT, "lease on operation '%s' was lost", id);
    else if (found == 0)
        st_error_set(err, ST_ERR_NOT_FOUND, "no operation '%s'", id);
    else
        st_error_prefix(err, "cannot read operation '%s'", id);
    return -1;
}

/* Run the renew or finish statement @st with @p for @id. */
static int
op_pg_held_write(struct op_pg *r, const struct pg_stmt *st, const struct pg_params *p,
                 const char *id, struct st_error *err)
{
    struct pg_row_ref ref = {.noun = "operation", .id = id, .name = NULL, .name_is = NULL};
    int changed = pg_db_write(r->db, st, p, &ref, err);

    if (changed < 0)
        return -1;
    if (changed == 0) {
        pg_db_doom(r->db);
        return op_pg_lost(r, id, err);
    }
    return 0;
}

static int
op_pg_renew(void *self, const char *id, const char *worker_id, int64_t until_ms, const char *step,
            struct st_error *err)
{
    struct op_pg *r = self;
    struct pg_params p;

    if (step && strlen(step) >= ST_OP_STEP_BUF)
        return st_error_set(err, ST_ERR_INVALID, "step '%s' of operation '%s' is over %d bytes",
                            step, id, ST_OP_STEP_BUF - 1);
    pg_params_init(&p);
    pg_param_text(&p, id);
    pg_param_text(&p, worker_id);
    pg_param_int(&p, until_ms);
    pg_param_text(&p, step);
    return op_pg_held_write(r, &op_pg_renew_stmt, &p, id, err);
}

static int
op_pg_finish(void *self, const char *id, const char *worker_id, enum op_status status,
             const char *error, int64_t now_ms, struct st_error *err)
{
    struct op_pg *r = self;
    struct pg_params p;

    if (!op_status_terminal(status))
        return st_error_set(err, ST_ERR_INVALID,
                            "operation '%s' can end succeeded or failed, not '%s'", id,
                            op_status_name(status));
    pg_params_init(&p);
    pg_param_text(&p, id);
    pg_param_text(&p, worker_id);
    pg_param_text(&p, op_status_name(status));
    pg_param_opt_text(&p, error);
    pg_param_int(&p, now_ms);
    return op_pg_held_write(r, &op_pg_finish_stmt, &p, id, err);
}

static int
op_pg_active_for(void *self, const char *target_id, struct operation *out, struct st_error *err)
{
    struct op_pg *r = self;
    struct operation op;

    if (op_pg_read_active(r, target_id, &op, err) < 0)
        return -1;
    *out = op;
    return 0;
}

/* The statements belong to the connection, not to the repository: only the struct goes. */
static void
op_pg_close(void *self)
{
    free(self);
}

static const struct op_repo_ops op_pg_ops = {
    .insert = op_pg_insert,
    .get = op_pg_get,
    .list = op_pg_list,
    .claim = op_pg_claim,
    .renew = op_pg_renew,
    .finish = op_pg_finish,
    .active_for = op_pg_active_for,
    .close = op_pg_close,
};

int
op_repo_pg_open(struct pg_db *db, struct op_repo *out, struct st_error *err)
{
    struct op_pg *r;

    if (!db)
        return st_error_set(err, ST_ERR_INTERNAL,
                            "cannot open the operation repository: no database handle");
    r = st_xcalloc(1, sizeof(*r));
    r->db = db;
    out->ops = &op_pg_ops;
    out->self = r;
    return 0;
}
