/*
 * idem_repo_sqlite.c - idempotency records in SQLite.
 *
 * A record is read and, when absent or expired, replaced inside one
 * BEGIN IMMEDIATE transaction: of two requests racing with the same key,
 * exactly one begins it.
 */
#include "repositories/sqlite/sqlite_db.h"

#include <stdlib.h>
#include <string.h>

#include "repositories/sqlite/sqlite_internal.h"
#include "util/mem.h"

#define IDEM_SQLITE_COLS                                                                           \
    "owner_id, key, request_hash, status, body, location, created_at, expires_at"

struct idem_sqlite {
    struct sqlite_db *db; /* borrowed */
    sqlite3_stmt *get;
    sqlite3_stmt *put;
    sqlite3_stmt *finish;
    sqlite3_stmt *forget;
    sqlite3_stmt *prune;
};

/* Fail with the connection's message for a bind that went wrong on @st. */
static int
idem_sqlite_bind_fail(struct idem_sqlite *r, sqlite3_stmt *st, const char *what,
                      struct st_error *err)
{
    sqlite_db_fail(r->db, sqlite3_errcode(sqlite_db_handle(r->db)), err, "cannot %s", what);
    sqlite_stmt_done(st);
    return -1;
}

/* The arguments every idempotency method takes: (@owner, @key) names a record. */
static int
idem_sqlite_check(const char *owner, const char *key, struct st_error *err)
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

/* Text column @col as a malloc'ed string, NULL when the column is NULL. */
static char *
idem_sqlite_column_dup(sqlite3_stmt *st, int col)
{
    const unsigned char *s = sqlite3_column_text(st, col);

    return s ? st_xstrdup((const char *)s) : NULL;
}

/*
 * Read (@owner, @key) into *out, inside the caller's transaction: 1 when
 * there is one (release *out with idem_record_release()), 0 when there is
 * none (*out untouched), -1 on failure.
 */
static int
idem_sqlite_read(struct idem_sqlite *r, const char *owner, const char *key, struct idem_record *out,
                 struct st_error *err)
{
    sqlite3_stmt *st = r->get;
    int rc = sqlite_bind_text(st, 1, owner);
    int ret = 0;

    if (rc == SQLITE_OK)
        rc = sqlite_bind_text(st, 2, key);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        memset(out, 0, sizeof(*out));
        sqlite_column_text(st, 0, out->owner_id, sizeof(out->owner_id));
        sqlite_column_text(st, 1, out->key, sizeof(out->key));
        sqlite_column_text(st, 2, out->request_hash, sizeof(out->request_hash));
        out->status = sqlite3_column_int(st, 3);
        out->body = idem_sqlite_column_dup(st, 4);
        out->location = idem_sqlite_column_dup(st, 5);
        out->created_at = sqlite3_column_int64(st, 6);
        out->expires_at = sqlite3_column_int64(st, 7);
        ret = 1;
    } else if (rc != SQLITE_DONE) {
        ret = sqlite_db_fail(r->db, rc, err, "cannot read idempotency key '%s'", key);
    }
    sqlite_stmt_done(st);
    return ret;
}

/* Record (@owner, @key) as in progress, over an expired record if there is one. */
static int
idem_sqlite_put(struct idem_sqlite *r, const char *owner, const char *key, const char *hash,
                int64_t now_ms, int64_t expires_at, struct st_error *err)
{
    struct sqlite_row_ref ref = {
        .noun = "idempotency key", .id = key, .name = NULL, .name_is = NULL};
    sqlite3_stmt *st = r->put;

    if (sqlite_bind_text(st, 1, owner) || sqlite_bind_text(st, 2, key) ||
        sqlite_bind_text(st, 3, hash) || sqlite3_bind_int64(st, 4, now_ms) ||
        sqlite3_bind_int64(st, 5, expires_at))
        return idem_sqlite_bind_fail(r, st, "record an idempotency key", err);
    return sqlite_db_write_step(r->db, st, &ref, err) < 0 ? -1 : 0;
}

/* What a live record found by begin answers. */
static enum idem_begin_result
idem_sqlite_answer(const struct idem_record *found, const char *hash)
{
    if (strcmp(found->request_hash, hash) != 0)
        return IDEM_MISMATCH;
    return found->status == 0 ? IDEM_IN_PROGRESS : IDEM_DONE;
}

static int
idem_sqlite_begin(void *self, const char *owner, const char *key, const char *hash, int64_t now_ms,
                  int64_t expires_at, enum idem_begin_result *result, struct idem_record *out,
                  struct st_error *err)
{
    struct idem_sqlite *r = self;
    struct idem_record found = {0};
    enum idem_begin_result answer = IDEM_NEW;
    int have;

    if (idem_sqlite_check(owner, key, err) < 0)
        return -1;
    if (!hash || !*hash || strlen(hash) >= sizeof(found.request_hash))
        return st_error_set(err, ST_ERR_INVALID,
                            "the request hash of idempotency key '%s' must be 1 to %zu characters",
                            key, sizeof(found.request_hash) - 1);
    if (sqlite_db_begin(r->db, err) < 0)
        return -1;
    have = idem_sqlite_read(r, owner, key, &found, err);
    if (have < 0)
        goto fail;
    if (have && found.expires_at < now_ms) {
        idem_record_release(&found);
        have = 0;
    }
    if (have)
        answer = idem_sqlite_answer(&found, hash);
    else if (idem_sqlite_put(r, owner, key, hash, now_ms, expires_at, err) < 0)
        goto fail;
    if (sqlite_db_commit(r->db, err) < 0)
        goto fail;
    *result = answer;
    if (answer != IDEM_NEW)
        *out = found; /* the strings go with it */
    else
        idem_record_release(&found);
    return 0;

fail:
    sqlite_db_rollback(r->db);
    idem_record_release(&found);
    return -1;
}

static int
idem_sqlite_finish(void *self, const char *owner, const char *key, int status, const char *body,
                   const char *location, struct st_error *err)
{
    struct idem_sqlite *r = self;
    struct sqlite_row_ref ref = {
        .noun = "idempotency key", .id = key, .name = NULL, .name_is = NULL};
    sqlite3_stmt *st = r->finish;

    if (idem_sqlite_check(owner, key, err) < 0)
        return -1;
    /* 0 would leave the record in progress for good: its retries would wait until it expires. */
    if (status <= 0)
        return st_error_set(err, ST_ERR_INVALID,
                            "idempotency key '%s' must be finished with a status > 0, got %d", key,
                            status);
    if (sqlite_bind_text(st, 1, owner) || sqlite_bind_text(st, 2, key) ||
        sqlite3_bind_int(st, 3, status) || sqlite_bind_text(st, 4, body) ||
        sqlite_bind_text(st, 5, location))
        return idem_sqlite_bind_fail(r, st, "finish an idempotency key", err);
    return sqlite_db_write(r->db, st, &ref, err);
}

/* Forgetting a record that is not there (it expired and was pruned) is no error. */
static int
idem_sqlite_forget(void *self, const char *owner, const char *key, struct st_error *err)
{
    struct idem_sqlite *r = self;
    struct sqlite_row_ref ref = {
        .noun = "idempotency key", .id = key, .name = NULL, .name_is = NULL};
    sqlite3_stmt *st = r->forget;
    size_t n;

    if (idem_sqlite_check(owner, key, err) < 0)
        return -1;
    if (sqlite_bind_text(st, 1, owner) || sqlite_bind_text(st, 2, key))
        return idem_sqlite_bind_fail(r, st, "forget an idempotency key", err);
    return sqlite_db_delete(r->db, st, &ref, &n, err);
}

static int
idem_sqlite_prune(void *self, int64_t now_ms, size_t *n, struct st_error *err)
{
    struct idem_sqlite *r = self;
    struct sqlite_row_ref ref = {
        .noun = "idempotency keys expired before", .id = "now", .name = NULL, .name_is = NULL};

    if (sqlite3_bind_int64(r->prune, 1, now_ms))
        return idem_sqlite_bind_fail(r, r->prune, "prune idempotency keys", err);
    return sqlite_db_delete(r->db, r->prune, &ref, n, err);
}

static void
idem_sqlite_close(void *self)
{
    struct idem_sqlite *r = self;

    if (!r)
        return;
    sqlite3_finalize(r->get);
    sqlite3_finalize(r->put);
    sqlite3_finalize(r->finish);
    sqlite3_finalize(r->forget);
    sqlite3_finalize(r->prune);
    free(r);
}

static const struct idem_repo_ops idem_sqlite_ops = {
    .begin = idem_sqlite_begin,
    .finish = idem_sqlite_finish,
    .forget = idem_sqlite_forget,
    .prune = idem_sqlite_prune,
    .close = idem_sqlite_close,
};

static int
idem_sqlite_prepare(struct idem_sqlite *r, struct st_error *err)
{
    if (sqlite_db_prepare(r->db,
                          "SELECT " IDEM_SQLITE_COLS " FROM idempotency_keys "
                          "WHERE owner_id = ?1 AND key = ?2",
                          &r->get, err) < 0 ||
        sqlite_db_prepare(r->db,
                          "INSERT OR REPLACE INTO idempotency_keys (" IDEM_SQLITE_COLS
                          ") VALUES (?1, ?2, ?3, 0, NULL, NULL, ?4, ?5)",
                          &r->put, err) < 0 ||
        sqlite_db_prepare(r->db,
                          "UPDATE idempotency_keys SET status = ?3, body = ?4, location = ?5 "
                          "WHERE owner_id = ?1 AND key = ?2",
                          &r->finish, err) < 0 ||
        sqlite_db_prepare(r->db, "DELETE FROM idempotency_keys WHERE owner_id = ?1 AND key = ?2",
                          &r->forget, err) < 0 ||
        sqlite_db_prepare(r->db, "DELETE FROM idempotency_keys WHERE expires_at < ?1", &r->prune,
                          err) < 0)
        return -1;
    return 0;
}

int
idem_repo_sqlite_open(struct sqlite_db *db, struct idem_repo *out, struct st_error *err)
{
    struct idem_sqlite *r = st_xcalloc(1, sizeof(*r));

    r->db = db;
    if (idem_sqlite_prepare(r, err) < 0) {
        st_error_prefix(err, "cannot open the idempotency repository");
        idem_sqlite_close(r);
        return -1;
    }
    out->ops = &idem_sqlite_ops;
    out->self = r;
    return 0;
}
