/*
 * event_repo_sqlite.c - VM events and idempotency records in SQLite.
 *
 * Events go through the shared table helper, paged by (at, id) and scoped
 * by the owner each event carries, so a VM's history stays readable by its
 * owner after the VM row is gone.  An idempotency record is read and,
 * when absent or expired, replaced inside one BEGIN IMMEDIATE transaction:
 * of two requests racing with the same key, exactly one begins it.
 */
#include "repositories/sqlite/sqlite_db.h"

#include <stdlib.h>
#include <string.h>

#include "repositories/sqlite/sqlite_internal.h"
#include "util/mem.h"

#define IDEM_SQLITE_COLS                                                                           \
    "owner_id, key, request_hash, status, body, location, created_at, expires_at"

struct event_sqlite {
    struct sqlite_db *db; /* borrowed */
    struct sqlite_table *events;
    sqlite3_stmt *prune;
    sqlite3_stmt *idem_get;
    sqlite3_stmt *idem_put;
    sqlite3_stmt *idem_finish;
    sqlite3_stmt *idem_forget;
    sqlite3_stmt *idem_prune;
};

static int
event_sqlite_read(sqlite3_stmt *st, void *item, struct st_error *err)
{
    struct vm_event *e = item;
    char type[32];

    memset(e, 0, sizeof(*e));
    sqlite_column_text(st, 1, e->id, sizeof(e->id));
    sqlite_column_text(st, 2, e->vm_id, sizeof(e->vm_id));
    sqlite_column_text(st, 3, e->owner_id, sizeof(e->owner_id));
    e->at = sqlite3_column_int64(st, 4);
    sqlite_column_text(st, 5, type, sizeof(type));
    sqlite_column_text(st, 6, e->message, sizeof(e->message));
    sqlite_column_text(st, 7, e->data, sizeof(e->data));
    if (vm_event_type_parse(type, &e->type) < 0)
        return st_error_set(err, ST_ERR_BACKEND, "VM event '%s' has an unknown type '%s' stored",
                            e->id, type);
    return 0;
}

static const struct sqlite_table_spec event_sqlite_table = {
    .table = "vm_events",
    .noun = "VM event",
    .cols = "id, vm_id, owner_id, at, type, message, data",
    .size = sizeof(struct vm_event),
    .read = event_sqlite_read,
    /* ?2 the VM: bound by event_sqlite_bind_vm(). */
    .list_where = "vm_id = ?2",
    .remove_where = NULL,
    .owner_col = "owner_id",
    .unowned = false,
    .shared_where = NULL,
    .order_col = "at",
};

/* Fail with the connection's message for a bind that went wrong on @st. */
static int
event_sqlite_bind_fail(struct event_sqlite *r, sqlite3_stmt *st, const char *what,
                       struct st_error *err)
{
    sqlite_db_fail(r->db, sqlite3_errcode(sqlite_db_handle(r->db)), err, "cannot %s", what);
    sqlite_stmt_done(st);
    return -1;
}

static int
event_sqlite_append(void *self, const struct vm_event *e, struct st_error *err)
{
    struct event_sqlite *r = self;
    struct sqlite_row_ref ref = {.noun = "VM event", .id = e->id, .name = NULL, .name_is = NULL};
    sqlite3_stmt *st = r->events->insert;
    bool bind_failed = sqlite_bind_text(st, 1, e->id) || sqlite_bind_text(st, 2, e->vm_id) ||
                       sqlite_bind_text(st, 3, e->owner_id) || sqlite3_bind_int64(st, 4, e->at) ||
                       sqlite_bind_text(st, 5, vm_event_type_name(e->type)) ||
                       sqlite_bind_text(st, 6, e->message) || sqlite_bind_opt_text(st, 7, e->data);

    return sqlite_table_write(r->events, st, bind_failed, "append", &ref, err);
}

/* The list_where parameter of event_sqlite_table: the VM id itself. */
static int
event_sqlite_bind_vm(sqlite3_stmt *st, const void *vm_id)
{
    return sqlite_bind_text(st, 2, vm_id);
}

static int
event_sqlite_list(void *self, const char *owner, const char *vm_id, const struct vm_event_filter *f,
                  struct vm_event_list *out, struct st_error *err)
{
    struct event_sqlite *r = self;
    struct sqlite_page page;

    if (sqlite_table_list(r->events, owner, f->marker, f->limit, event_sqlite_bind_vm, vm_id, &page,
                          err) < 0)
        return -1;
    out->items = page.items;
    out->count = page.count;
    out->more = page.more;
    return 0;
}

/* Run the bound delete @st as one write transaction; *n is how many rows went. */
static int
event_sqlite_delete(struct event_sqlite *r, sqlite3_stmt *st, const struct sqlite_row_ref *ref,
                    size_t *n, struct st_error *err)
{
    int changed;

    if (sqlite_db_begin(r->db, err) < 0) {
        sqlite_stmt_done(st);
        return -1;
    }
    changed = sqlite_db_write_step(r->db, st, ref, err);
    if (changed < 0) {
        sqlite_db_rollback(r->db);
        return -1;
    }
    if (sqlite_db_commit(r->db, err) < 0)
        return -1;
    *n = (size_t)changed;
    return 0;
}

static int
event_sqlite_prune(void *self, int64_t before_ms, size_t *n, struct st_error *err)
{
    struct event_sqlite *r = self;
    struct sqlite_row_ref ref = {
        .noun = "VM events before", .id = "the cut-off", .name = NULL, .name_is = NULL};

    if (sqlite3_bind_int64(r->prune, 1, before_ms))
        return event_sqlite_bind_fail(r, r->prune, "prune VM events", err);
    return event_sqlite_delete(r, r->prune, &ref, n, err);
}

/* The arguments every idempotency method takes: (@owner, @key) names a record. */
static int
event_sqlite_idem_check(const char *owner, const char *key, struct st_error *err)
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
event_sqlite_column_dup(sqlite3_stmt *st, int col)
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
event_sqlite_idem_read(struct event_sqlite *r, const char *owner, const char *key,
                       struct idem_record *out, struct st_error *err)
{
    sqlite3_stmt *st = r->idem_get;
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
        out->body = event_sqlite_column_dup(st, 4);
        out->location = event_sqlite_column_dup(st, 5);
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
event_sqlite_idem_put(struct event_sqlite *r, const char *owner, const char *key, const char *hash,
                      int64_t now_ms, int64_t expires_at, struct st_error *err)
{
    struct sqlite_row_ref ref = {
        .noun = "idempotency key", .id = key, .name = NULL, .name_is = NULL};
    sqlite3_stmt *st = r->idem_put;

    if (sqlite_bind_text(st, 1, owner) || sqlite_bind_text(st, 2, key) ||
        sqlite_bind_text(st, 3, hash) || sqlite3_bind_int64(st, 4, now_ms) ||
        sqlite3_bind_int64(st, 5, expires_at))
        return event_sqlite_bind_fail(r, st, "record an idempotency key", err);
    return sqlite_db_write_step(r->db, st, &ref, err) < 0 ? -1 : 0;
}

/* What a live record found by idem_begin answers. */
static enum idem_begin_result
event_sqlite_idem_answer(const struct idem_record *found, const char *hash)
{
    if (strcmp(found->request_hash, hash) != 0)
        return IDEM_MISMATCH;
    return found->status == 0 ? IDEM_IN_PROGRESS : IDEM_DONE;
}

static int
event_sqlite_idem_begin(void *self, const char *owner, const char *key, const char *hash,
                        int64_t now_ms, int64_t expires_at, enum idem_begin_result *result,
                        struct idem_record *out, struct st_error *err)
{
    struct event_sqlite *r = self;
    struct idem_record found = {0};
    enum idem_begin_result answer = IDEM_NEW;
    int have;

    if (event_sqlite_idem_check(owner, key, err) < 0)
        return -1;
    if (!hash || !*hash || strlen(hash) >= sizeof(found.request_hash))
        return st_error_set(err, ST_ERR_INVALID,
                            "the request hash of idempotency key '%s' must be 1 to %zu characters",
                            key, sizeof(found.request_hash) - 1);
    if (sqlite_db_begin(r->db, err) < 0)
        return -1;
    have = event_sqlite_idem_read(r, owner, key, &found, err);
    if (have < 0)
        goto fail;
    if (have && found.expires_at < now_ms) {
        idem_record_release(&found);
        have = 0;
    }
    if (have)
        answer = event_sqlite_idem_answer(&found, hash);
    else if (event_sqlite_idem_put(r, owner, key, hash, now_ms, expires_at, err) < 0)
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
event_sqlite_idem_finish(void *self, const char *owner, const char *key, int status,
                         const char *body, const char *location, struct st_error *err)
{
    struct event_sqlite *r = self;
    struct sqlite_row_ref ref = {
        .noun = "idempotency key", .id = key, .name = NULL, .name_is = NULL};
    sqlite3_stmt *st = r->idem_finish;

    if (event_sqlite_idem_check(owner, key, err) < 0)
        return -1;
    /* 0 would leave the record in progress for good: its retries would wait until it expires. */
    if (status <= 0)
        return st_error_set(err, ST_ERR_INVALID,
                            "idempotency key '%s' must be finished with a status > 0, got %d", key,
                            status);
    if (sqlite_bind_text(st, 1, owner) || sqlite_bind_text(st, 2, key) ||
        sqlite3_bind_int(st, 3, status) || sqlite_bind_text(st, 4, body) ||
        sqlite_bind_text(st, 5, location))
        return event_sqlite_bind_fail(r, st, "finish an idempotency key", err);
    return sqlite_db_write(r->db, st, &ref, err);
}

/* Forgetting a record that is not there (it expired and was pruned) is no error. */
static int
event_sqlite_idem_forget(void *self, const char *owner, const char *key, struct st_error *err)
{
    struct event_sqlite *r = self;
    struct sqlite_row_ref ref = {
        .noun = "idempotency key", .id = key, .name = NULL, .name_is = NULL};
    sqlite3_stmt *st = r->idem_forget;
    size_t n;

    if (event_sqlite_idem_check(owner, key, err) < 0)
        return -1;
    if (sqlite_bind_text(st, 1, owner) || sqlite_bind_text(st, 2, key))
        return event_sqlite_bind_fail(r, st, "forget an idempotency key", err);
    return event_sqlite_delete(r, st, &ref, &n, err);
}

static int
event_sqlite_idem_prune(void *self, int64_t now_ms, size_t *n, struct st_error *err)
{
    struct event_sqlite *r = self;
    struct sqlite_row_ref ref = {
        .noun = "idempotency keys expired before", .id = "now", .name = NULL, .name_is = NULL};

    if (sqlite3_bind_int64(r->idem_prune, 1, now_ms))
        return event_sqlite_bind_fail(r, r->idem_prune, "prune idempotency keys", err);
    return event_sqlite_delete(r, r->idem_prune, &ref, n, err);
}

static void
event_sqlite_close(void *self)
{
    struct event_sqlite *r = self;

    if (!r)
        return;
    sqlite3_finalize(r->prune);
    sqlite3_finalize(r->idem_get);
    sqlite3_finalize(r->idem_put);
    sqlite3_finalize(r->idem_finish);
    sqlite3_finalize(r->idem_forget);
    sqlite3_finalize(r->idem_prune);
    sqlite_table_close(r->events);
    free(r);
}

static const struct event_repo_ops event_sqlite_ops = {
    .append = event_sqlite_append,
    .list = event_sqlite_list,
    .prune = event_sqlite_prune,
    .idem_begin = event_sqlite_idem_begin,
    .idem_finish = event_sqlite_idem_finish,
    .idem_forget = event_sqlite_idem_forget,
    .idem_prune = event_sqlite_idem_prune,
    .close = event_sqlite_close,
};

static int
event_sqlite_prepare(struct event_sqlite *r, struct st_error *err)
{
    if (sqlite_db_prepare(r->db, "DELETE FROM vm_events WHERE at < ?1", &r->prune, err) < 0 ||
        sqlite_db_prepare(r->db,
                          "SELECT " IDEM_SQLITE_COLS " FROM idempotency_keys "
                          "WHERE owner_id = ?1 AND key = ?2",
                          &r->idem_get, err) < 0 ||
        sqlite_db_prepare(r->db,
                          "INSERT OR REPLACE INTO idempotency_keys (" IDEM_SQLITE_COLS
                          ") VALUES (?1, ?2, ?3, 0, NULL, NULL, ?4, ?5)",
                          &r->idem_put, err) < 0 ||
        sqlite_db_prepare(r->db,
                          "UPDATE idempotency_keys SET status = ?3, body = ?4, location = ?5 "
                          "WHERE owner_id = ?1 AND key = ?2",
                          &r->idem_finish, err) < 0 ||
        sqlite_db_prepare(r->db, "DELETE FROM idempotency_keys WHERE owner_id = ?1 AND key = ?2",
                          &r->idem_forget, err) < 0 ||
        sqlite_db_prepare(r->db, "DELETE FROM idempotency_keys WHERE expires_at < ?1",
                          &r->idem_prune, err) < 0)
        return -1;
    return 0;
}

int
event_repo_sqlite_open(struct sqlite_db *db, struct event_repo *out, struct st_error *err)
{
    struct event_sqlite *r = st_xcalloc(1, sizeof(*r));

    r->db = db;
    r->events = sqlite_table_open(db, &event_sqlite_table, err);
    if (!r->events || event_sqlite_prepare(r, err) < 0) {
        st_error_prefix(err, "cannot open the event repository");
        event_sqlite_close(r);
        return -1;
    }
    out->ops = &event_sqlite_ops;
    out->self = r;
    return 0;
}
