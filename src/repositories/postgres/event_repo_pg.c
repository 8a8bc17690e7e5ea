/*
 * event_repo_pg.c - VM events and idempotency records in PostgreSQL, as
 * event_repo_sqlite.c keeps them.
 *
 * Events are paged by (at, id) and scoped by the owner each event carries.
 * An idempotency record is read and, when absent or expired, replaced
 * inside one transaction that first takes the advisory lock
 * "idem:<owner>:<key>": of two requests racing with the same key, the
 * second reads only after the first committed, so exactly one begins it,
 * as under SQLite's BEGIN IMMEDIATE.
 */
#include "repositories/postgres/pg_db.h"

#include <stdlib.h>
#include <string.h>

#include "repositories/postgres/pg_internal.h"
#include "util/mem.h"

struct event_pg {
    struct pg_db *db; /* borrowed */
};

/* In the order event_pg_read() reads them after the marker flag, and the insert takes them. */
#define EVENT_PG_COLS "id, vm_id, owner_id, at, type, message, data"

#define IDEM_PG_COLS "owner_id, key, request_hash, status, body, location, created_at, expires_at"

/* The first page of the events of VM $@v among the rows of @scope ("" or "<cond> AND "), limit $@l.
 */
#define EVENT_PG_PAGE(scope, v, l)                                                                 \
    "SELECT false, " EVENT_PG_COLS " FROM vm_events WHERE " scope "vm_id = $" #v                   \
    " ORDER BY at, id LIMIT $" #l

/*
 * The page after the marker $@m among the events of VM $@v in @scope, at
 * most $@l of them, preceded by the marker row itself (flag true, whatever
 * its VM, as on SQLite): pg_db_list() learns from the same query whether
 * the marker names a row in scope.
 */
#define EVENT_PG_AFTER(scope, v, m, l)                                                             \
    "SELECT true, " EVENT_PG_COLS " FROM vm_events WHERE " scope "id = $" #m " UNION ALL "         \
    "(SELECT false, " EVENT_PG_COLS " FROM vm_events WHERE " scope "vm_id = $" #v " AND "          \
    "(at, id) > (SELECT at, id FROM vm_events WHERE " scope "id = $" #m ") "                       \
    "ORDER BY at, id LIMIT $" #l ") ORDER BY 1 DESC, at, id"

static const struct pg_stmt event_pg_insert_stmt = {
    "event_insert",
    "INSERT INTO vm_events (" EVENT_PG_COLS ") VALUES ($1, $2, $3, $4, $5, $6, $7)",
};

/*
 * [scoped][after a marker]: one statement each, as on SQLite.  Parameters,
 * in this order, of those present: owner, VM, marker, limit.
 */
static const struct pg_stmt event_pg_list_stmts[2][2] = {
    {
        {"event_list", EVENT_PG_PAGE("", 1, 2)},
        {"event_list_after", EVENT_PG_AFTER("", 1, 2, 3)},
    },
    {
        {"event_list_owner", EVENT_PG_PAGE("owner_id = $1 AND ", 2, 3)},
        {"event_list_owner_after", EVENT_PG_AFTER("owner_id = $1 AND ", 2, 3, 4)},
    },
};

static const struct pg_stmt event_pg_prune_stmt = {
    "event_prune",
    "DELETE FROM vm_events WHERE at < $1",
};

static const struct pg_stmt idem_pg_get_stmt = {
    "idem_get",
    "SELECT " IDEM_PG_COLS " FROM idempotency_keys WHERE owner_id = $1 AND key = $2",
};

/* In progress (status 0, no answer yet), over an expired record if there is one. */
static const struct pg_stmt idem_pg_put_stmt = {
    "idem_put",
    "INSERT INTO idempotency_keys (" IDEM_PG_COLS ") VALUES ($1, $2, $3, 0, NULL, NULL, $4, $5) "
    "ON CONFLICT (owner_id, key) DO UPDATE SET request_hash = EXCLUDED.request_hash, status = 0, "
    "body = NULL, location = NULL, created_at = EXCLUDED.created_at, "
    "expires_at = EXCLUDED.expires_at",
};

static const struct pg_stmt idem_pg_finish_stmt = {
    "idem_finish",
    "UPDATE idempotency_keys SET status = $3, body = $4, location = $5 "
    "WHERE owner_id = $1 AND key = $2",
};

static const struct pg_stmt idem_pg_forget_stmt = {
    "idem_forget",
    "DELETE FROM idempotency_keys WHERE owner_id = $1 AND key = $2",
};

static const struct pg_stmt idem_pg_prune_stmt = {
    "idem_prune",
    "DELETE FROM idempotency_keys WHERE expires_at < $1",
};

static int
event_pg_read(const PGresult *res, int row, void *item, struct st_error *err)
{
    struct vm_event *e = item;
    char type[32];

    memset(e, 0, sizeof(*e));
    pg_get_text(res, row, 1, e->id, sizeof(e->id));
    pg_get_text(res, row, 2, e->vm_id, sizeof(e->vm_id));
    pg_get_text(res, row, 3, e->owner_id, sizeof(e->owner_id));
    e->at = pg_get_int(res, row, 4);
    pg_get_text(res, row, 5, type, sizeof(type));
    pg_get_text(res, row, 6, e->message, sizeof(e->message));
    pg_get_text(res, row, 7, e->data, sizeof(e->data));
    if (vm_event_type_parse(type, &e->type) < 0)
        return st_error_set(err, ST_ERR_BACKEND, "VM event '%s' has an unknown type '%s' stored",
                            e->id, type);
    return 0;
}

static int
event_pg_append(void *self, const struct vm_event *e, struct st_error *err)
{
    struct event_pg *r = self;
    struct pg_row_ref ref = {.noun = "VM event", .id = e->id, .name = NULL, .name_is = NULL};
    struct pg_params p;

    pg_params_init(&p);
    pg_param_text(&p, e->id);
    pg_param_text(&p, e->vm_id);
    pg_param_text(&p, e->owner_id);
    pg_param_int(&p, e->at);
    pg_param_text(&p, vm_event_type_name(e->type));
    pg_param_text(&p, e->message);
    pg_param_opt_text(&p, e->data);
    return pg_db_write_one(r->db, &event_pg_insert_stmt, &p, &ref, err) < 0 ? -1 : 0;
}

static int
event_pg_list(void *self, const char *owner, const char *vm_id, const struct vm_event_filter *f,
              struct vm_event_list *out, struct st_error *err)
{
    struct event_pg *r = self;
    bool after = f->marker[0] != '\0';
    struct pg_page page;
    struct pg_params p;

    pg_params_init(&p);
    if (owner)
        pg_param_text(&p, owner);
    pg_param_text(&p, vm_id);
    if (after)
        pg_param_text(&p, f->marker);
    pg_param_int(&p, pg_list_limit(f->limit));
    if (pg_db_list(r->db, &event_pg_list_stmts[owner != NULL][after], &p, "VM event", f->marker,
                   f->limit, sizeof(struct vm_event), event_pg_read, &page, err) < 0)
        return -1;
    out->items = page.items;
    out->count = page.count;
    out->more = page.more;
    return 0;
}

/* Run the delete @st with the one number @v; *n is how many rows went. */
static int
event_pg_delete(struct event_pg *r, const struct pg_stmt *st, int64_t v,
                const struct pg_row_ref *ref, size_t *n, struct st_error *err)
{
    struct pg_params p;
    int changed;

    pg_params_init(&p);
    pg_param_int(&p, v);
    changed = pg_db_write(r->db, st, &p, ref, err);
    if (changed < 0)
        return -1;
    *n = (size_t)changed;
    return 0;
}

static int
event_pg_prune(void *self, int64_t before_ms, size_t *n, struct st_error *err)
{
    struct event_pg *r = self;
    struct pg_row_ref ref = {
        .noun = "VM events before", .id = "the cut-off", .name = NULL, .name_is = NULL};

    return event_pg_delete(r, &event_pg_prune_stmt, before_ms, &ref, n, err);
}

/* The arguments every idempotency method takes: (@owner, @key) names a record. */
static int
event_pg_idem_check(const char *owner, const char *key, struct st_error *err)
{
    if (!owner || !*owner)
        return st_error_set(err, ST_ERR_INVALID,
                            "an idempotency key belongs to an owner: none given");
    if (!idem_key_valid(key))
        return st_error_set(err, ST_ERR_INVALID,
                            "idempotency key '%s' must be 1 to %d printable ASCII characters",
                            key ? key : "", ST_IDEM_KEY_MAX);
    return 0;
}

/* Text column @col of row 0 as a malloc'ed string, NULL when the column is NULL. */
static char *
event_pg_column_dup(const PGresult *res, int col)
{
    return pg_get_null(res, 0, col) ? NULL : st_xstrdup(PQgetvalue(res, 0, col));
}

/*
 * Read (@owner, @key) into *out, inside the caller's transaction: 1 when
 * there is one (release *out with idem_record_release()), 0 when there is
 * none (*out untouched), -1 on failure.
 */
static int
event_pg_idem_read(struct event_pg *r, const char *owner, const char *key, struct idem_record *out,
                   struct st_error *err)
{
    struct pg_params p;
    PGresult *res;
    int ret = 0;

    pg_params_init(&p);
    pg_param_text(&p, owner);
    pg_param_text(&p, key);
    res = pg_db_exec(r->db, &idem_pg_get_stmt, &p, err);
    if (!res) {
        st_error_prefix(err, "cannot read idempotency key '%s'", key);
        return -1;
    }
    if (PQntuples(res) > 0) {
        memset(out, 0, sizeof(*out));
        pg_get_text(res, 0, 0, out->owner_id, sizeof(out->owner_id));
        pg_get_text(res, 0, 1, out->key, sizeof(out->key));
        pg_get_text(res, 0, 2, out->request_hash, sizeof(out->request_hash));
        out->status = (int)pg_get_int(res, 0, 3);
        out->body = event_pg_column_dup(res, 4);
        out->location = event_pg_column_dup(res, 5);
        out->created_at = pg_get_int(res, 0, 6);
        out->expires_at = pg_get_int(res, 0, 7);
        ret = 1;
    }
    PQclear(res);
    return ret;
}

/* Record (@owner, @key) as in progress, over an expired record if there is one. */
static int
event_pg_idem_put(struct event_pg *r, const char *owner, const char *key, const char *hash,
                  int64_t now_ms, int64_t expires_at, struct st_error *err)
{
    struct pg_row_ref ref = {.noun = "idempotency key", .id = key, .name = NULL, .name_is = NULL};
    struct pg_params p;

    pg_params_init(&p);
    pg_param_text(&p, owner);
    pg_param_text(&p, key);
    pg_param_text(&p, hash);
    pg_param_int(&p, now_ms);
    pg_param_int(&p, expires_at);
    return pg_db_write(r->db, &idem_pg_put_stmt, &p, &ref, err) < 0 ? -1 : 0;
}

/* What a live record found by idem_begin answers. */
static enum idem_begin_result
event_pg_idem_answer(const struct idem_record *found, const char *hash)
{
    if (strcmp(found->request_hash, hash) != 0)
        return IDEM_MISMATCH;
    return found->status == 0 ? IDEM_IN_PROGRESS : IDEM_DONE;
}

static int
event_pg_idem_begin(void *self, const char *owner, const char *key, const char *hash,
                    int64_t now_ms, int64_t expires_at, enum idem_begin_result *result,
                    struct idem_record *out, struct st_error *err)
{
    struct event_pg *r = self;
    struct idem_record found = {0};
    enum idem_begin_result answer = IDEM_NEW;
    ST_AUTOFREE char *lock = NULL;
    int have;

    if (event_pg_idem_check(owner, key, err) < 0)
        return -1;
    if (!hash || !*hash || strlen(hash) >= sizeof(found.request_hash))
        return st_error_set(err, ST_ERR_INVALID,
                            "the request hash of idempotency key '%s' must be 1 to %zu characters",
                            key, sizeof(found.request_hash) - 1);
    lock = st_xasprintf("idem:%s:%s", owner, key);
    if (pg_db_begin(r->db, err) < 0)
        return -1;
    if (pg_db_lock(r->db, lock, err) < 0)
        goto fail;
    have = event_pg_idem_read(r, owner, key, &found, err);
    if (have < 0)
        goto fail;
    if (have && found.expires_at < now_ms) {
        idem_record_release(&found);
        have = 0;
    }
    if (have)
        answer = event_pg_idem_answer(&found, hash);
    else if (event_pg_idem_put(r, owner, key, hash, now_ms, expires_at, err) < 0)
        goto fail;
    if (pg_db_commit(r->db, err) < 0)
        goto fail;
    *result = answer;
    if (answer != IDEM_NEW)
        *out = found; /* the strings go with it */
    else
        idem_record_release(&found);
    return 0;

fail:
    pg_db_rollback(r->db);
    idem_record_release(&found);
    return -1;
}

static int
event_pg_idem_finish(void *self, const char *owner, const char *key, int status, const char *body,
                     const char *location, struct st_error *err)
{
    struct event_pg *r = self;
    struct pg_row_ref ref = {.noun = "idempotency key", .id = key, .name = NULL, .name_is = NULL};
    struct pg_params p;

    if (event_pg_idem_check(owner, key, err) < 0)
        return -1;
    /* 0 would leave the record in progress for good: its retries would wait until it expires. */
    if (status <= 0)
        return st_error_set(err, ST_ERR_INVALID,
                            "idempotency key '%s' must be finished with a status > 0, got %d", key,
                            status);
    pg_params_init(&p);
    pg_param_text(&p, owner);
    pg_param_text(&p, key);
    pg_param_int(&p, status);
    pg_param_text(&p, body);
    pg_param_text(&p, location);
    return pg_db_write_one(r->db, &idem_pg_finish_stmt, &p, &ref, err) < 0 ? -1 : 0;
}

/* Forgetting a record that is not there (it expired and was pruned) is no error. */
static int
event_pg_idem_forget(void *self, const char *owner, const char *key, struct st_error *err)
{
    struct event_pg *r = self;
    struct pg_row_ref ref = {.noun = "idempotency key", .id = key, .name = NULL, .name_is = NULL};
    struct pg_params p;

    if (event_pg_idem_check(owner, key, err) < 0)
        return -1;
    pg_params_init(&p);
    pg_param_text(&p, owner);
    pg_param_text(&p, key);
    return pg_db_write(r->db, &idem_pg_forget_stmt, &p, &ref, err) < 0 ? -1 : 0;
}

static int
event_pg_idem_prune(void *self, int64_t now_ms, size_t *n, struct st_error *err)
{
    struct event_pg *r = self;
    struct pg_row_ref ref = {
        .noun = "idempotency keys expired before", .id = "now", .name = NULL, .name_is = NULL};

    return event_pg_delete(r, &idem_pg_prune_stmt, now_ms, &ref, n, err);
}

/* The statements belong to the connection, not to the repository: only the struct goes. */
static void
event_pg_close(void *self)
{
    free(self);
}

static const struct event_repo_ops event_pg_ops = {
    .append = event_pg_append,
    .list = event_pg_list,
    .prune = event_pg_prune,
    .idem_begin = event_pg_idem_begin,
    .idem_finish = event_pg_idem_finish,
    .idem_forget = event_pg_idem_forget,
    .idem_prune = event_pg_idem_prune,
    .close = event_pg_close,
};

int
event_repo_pg_open(struct pg_db *db, struct event_repo *out, struct st_error *err)
{
    struct event_pg *r;

    if (!db)
        return st_error_set(err, ST_ERR_INTERNAL,
                            "cannot open the event repository: no database handle");
    r = st_xcalloc(1, sizeof(*r));
    r->db = db;
    out->ops = &event_pg_ops;
    out->self = r;
    return 0;
}
