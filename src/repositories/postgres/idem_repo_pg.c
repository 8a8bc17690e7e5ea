/*
 * idem_repo_pg.c - idempotency records in PostgreSQL, as
 * idem_repo_sqlite.c keeps them.
 *
 * A record is read and, when absent or expired, replaced inside one
 * transaction that first takes the advisory lock "idem:<owner>:<key>": of
 * two requests racing with the same key, the second reads only after the
 * first committed, so exactly one begins it, as under SQLite's BEGIN
 * IMMEDIATE.
 */
#include "repositories/postgres/pg_db.h"

#include <stdlib.h>
#include <string.h>

#include "repositories/postgres/pg_internal.h"
#include "util/mem.h"

struct idem_pg {
    struct pg_db *db; /* borrowed */
};

#define IDEM_PG_COLS "owner_id, key, request_hash, status, body, location, created_at, expires_at"

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

/* The arguments every idempotency method takes: (@owner, @key) names a record. */
static int
idem_pg_check(const char *owner, const char *key, struct st_error *err)
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
idem_pg_column_dup(const PGresult *res, int col)
{
    return pg_get_null(res, 0, col) ? NULL : st_xstrdup(PQgetvalue(res, 0, col));
}

/*
 * Read (@owner, @key) into *out, inside the caller's transaction: 1 when
 * there is one (release *out with idem_record_release()), 0 when there is
 * none (*out untouched), -1 on failure.
 */
static int
idem_pg_read(struct idem_pg *r, const char *owner, const char *key, struct idem_record *out,
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
        out->body = idem_pg_column_dup(res, 4);
        out->location = idem_pg_column_dup(res, 5);
        out->created_at = pg_get_int(res, 0, 6);
        out->expires_at = pg_get_int(res, 0, 7);
        ret = 1;
    }
    PQclear(res);
    return ret;
}

/* Record (@owner, @key) as in progress, over an expired record if there is one. */
static int
idem_pg_put(struct idem_pg *r, const char *owner, const char *key, const char *hash, int64_t now_ms,
            int64_t expires_at, struct st_error *err)
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

/* What a live record found by begin answers. */
static enum idem_begin_result
idem_pg_answer(const struct idem_record *found, const char *hash)
{
    if (strcmp(found->request_hash, hash) != 0)
        return IDEM_MISMATCH;
    return found->status == 0 ? IDEM_IN_PROGRESS : IDEM_DONE;
}

static int
idem_pg_begin(void *self, const char *owner, const char *key, const char *hash, int64_t now_ms,
              int64_t expires_at, enum idem_begin_result *result, struct idem_record *out,
              struct st_error *err)
{
    struct idem_pg *r = self;
    struct idem_record found = {0};
    enum idem_begin_result answer = IDEM_NEW;
    ST_AUTOFREE char *lock = NULL;
    int have;

    if (idem_pg_check(owner, key, err) < 0)
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
    have = idem_pg_read(r, owner, key, &found, err);
    if (have < 0)
        goto fail;
    if (have && found.expires_at < now_ms) {
        idem_record_release(&found);
        have = 0;
    }
    if (have)
        answer = idem_pg_answer(&found, hash);
    else if (idem_pg_put(r, owner, key, hash, now_ms, expires_at, err) < 0)
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
idem_pg_finish(void *self, const char *owner, const char *key, int status, const char *body,
               const char *location, struct st_error *err)
{
    struct idem_pg *r = self;
    struct pg_row_ref ref = {.noun = "idempotency key", .id = key, .name = NULL, .name_is = NULL};
    struct pg_params p;

    if (idem_pg_check(owner, key, err) < 0)
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
idem_pg_forget(void *self, const char *owner, const char *key, struct st_error *err)
{
    struct idem_pg *r = self;
    struct pg_row_ref ref = {.noun = "idempotency key", .id = key, .name = NULL, .name_is = NULL};
    struct pg_params p;

    if (idem_pg_check(owner, key, err) < 0)
        return -1;
    pg_params_init(&p);
    pg_param_text(&p, owner);
    pg_param_text(&p, key);
    return pg_db_write(r->db, &idem_pg_forget_stmt, &p, &ref, err) < 0 ? -1 : 0;
}

static int
idem_pg_prune(void *self, int64_t now_ms, size_t *n, struct st_error *err)
{
    struct idem_pg *r = self;
    struct pg_row_ref ref = {
        .noun = "idempotency keys expired before", .id = "now", .name = NULL, .name_is = NULL};

    struct pg_params p;
    int changed;

    pg_params_init(&p);
    pg_param_int(&p, now_ms);
    changed = pg_db_write(r->db, &idem_pg_prune_stmt, &p, &ref, err);
    if (changed < 0)
        return -1;
    *n = (size_t)changed;
    return 0;
}

/* The statements belong to the connection, not to the repository: only the struct goes. */
static void
idem_pg_close(void *self)
{
    free(self);
}

static const struct idem_repo_ops idem_pg_ops = {
    .begin = idem_pg_begin,
    .finish = idem_pg_finish,
    .forget = idem_pg_forget,
    .prune = idem_pg_prune,
    .close = idem_pg_close,
};

int
idem_repo_pg_open(struct pg_db *db, struct idem_repo *out, struct st_error *err)
{
    struct idem_pg *r;

    if (!db)
        return st_error_set(err, ST_ERR_INTERNAL,
                            "cannot open the idempotency repository: no database handle");
    r = st_xcalloc(1, sizeof(*r));
    r->db = db;
    out->ops = &idem_pg_ops;
    out->self = r;
    return 0;
}
