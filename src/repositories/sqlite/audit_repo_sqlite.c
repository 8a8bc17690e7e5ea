/*
 * audit_repo_sqlite.c - the audit hash chain in SQLite.
 *
 * seq is the table's INTEGER PRIMARY KEY, assigned as the newest seq + 1
 * by append itself inside its BEGIN IMMEDIATE transaction: the write lock
 * is held from reading the newest entry to inserting the next one, so two
 * connections appending at once queue up and never link to the same entry.
 */
#include "repositories/sqlite/sqlite_db.h"

#include <stdlib.h>
#include <string.h>

#include "repositories/sqlite/sqlite_internal.h"
#include "util/mem.h"

#define AUDIT_SQLITE_COLS                                                                          \
    "seq, id, at, user_id, method, route, target_id, status, request_id, client_addr, "            \
    "prev_hash, hash"

struct audit_sqlite {
    struct sqlite_db *db; /* borrowed */
    sqlite3_stmt *newest;
    sqlite3_stmt *insert;
    sqlite3_stmt *list[2][2][2]; /* [by user][by target][after a marker] */
    sqlite3_stmt *scan;
};

static int
audit_sqlite_read(sqlite3_stmt *st, void *item, struct st_error *err)
{
    struct audit_entry *e = item;

    (void)err;
    memset(e, 0, sizeof(*e));
    e->seq = sqlite3_column_int64(st, 1);
    sqlite_column_text(st, 2, e->id, sizeof(e->id));
    e->at = sqlite3_column_int64(st, 3);
    sqlite_column_text(st, 4, e->user_id, sizeof(e->user_id));
    sqlite_column_text(st, 5, e->method, sizeof(e->method));
    sqlite_column_text(st, 6, e->route, sizeof(e->route));
    sqlite_column_text(st, 7, e->target_id, sizeof(e->target_id));
    e->status = sqlite3_column_int(st, 8);
    sqlite_column_text(st, 9, e->request_id, sizeof(e->request_id));
    sqlite_column_text(st, 10, e->client_addr, sizeof(e->client_addr));
    sqlite_column_text(st, 11, e->prev_hash, sizeof(e->prev_hash));
    sqlite_column_text(st, 12, e->hash, sizeof(e->hash));
    return 0;
}

/* Set e->seq and e->prev_hash from the newest entry, inside the append's transaction. */
static int
audit_sqlite_link(struct audit_sqlite *r, struct audit_entry *e, struct st_error *err)
{
    int rc = sqlite3_step(r->newest);

    if (rc == SQLITE_ROW) {
        e->seq = sqlite3_column_int64(r->newest, 0) + 1;
        sqlite_column_text(r->newest, 1, e->prev_hash, sizeof(e->prev_hash));
    } else if (rc == SQLITE_DONE) {
        e->seq = 1;
        e->prev_hash[0] = '\0';
    } else {
        sqlite_db_fail(r->db, rc, err, "cannot read the newest audit entry");
    }
    sqlite_stmt_done(r->newest);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : -1;
}

/* @e as ?1..?12 in the order of AUDIT_SQLITE_COLS; true when a bind failed. */
static bool
audit_sqlite_bind(sqlite3_stmt *st, const struct audit_entry *e)
{
    return sqlite3_bind_int64(st, 1, e->seq) || sqlite_bind_text(st, 2, e->id) ||
           sqlite3_bind_int64(st, 3, e->at) || sqlite_bind_opt_text(st, 4, e->user_id) ||
           sqlite_bind_opt_text(st, 5, e->method) || sqlite_bind_opt_text(st, 6, e->route) ||
           sqlite_bind_opt_text(st, 7, e->target_id) || sqlite3_bind_int(st, 8, e->status) ||
           sqlite_bind_opt_text(st, 9, e->request_id) ||
           sqlite_bind_opt_text(st, 10, e->client_addr) ||
           sqlite_bind_opt_text(st, 11, e->prev_hash) || sqlite_bind_text(st, 12, e->hash);
}

static int
audit_sqlite_append(void *self, struct audit_entry *e, audit_hash_fn hash, struct st_error *err)
{
    struct audit_sqlite *r = self;
    struct sqlite_row_ref ref = {.noun = "audit entry", .id = e->id, .name = NULL, .name_is = NULL};
    struct audit_entry next = *e;

    if (sqlite_db_begin(r->db, err) < 0)
        return -1;
    if (audit_sqlite_link(r, &next, err) < 0)
        goto fail;
    hash(&next, next.hash);
    if (audit_sqlite_bind(r->insert, &next)) {
        sqlite_db_fail(r->db, sqlite3_errcode(sqlite_db_handle(r->db)), err,
                       "cannot append audit entry '%s'", e->id);
        sqlite_stmt_done(r->insert);
        goto fail;
    }
    if (sqlite_db_write_step(r->db, r->insert, &ref, err) < 0)
        goto fail;
    if (sqlite_db_commit(r->db, err) < 0)
        return -1;
    *e = next;
    return 0;

fail:
    sqlite_db_rollback(r->db);
    return -1;
}

static void
audit_sqlite_page(const struct sqlite_page *page, struct audit_list *out)
{
    out->items = page->items;
    out->count = page->count;
    out->more = page->more;
}

static int
audit_sqlite_list(void *self, const struct audit_filter *f, struct audit_list *out,
                  struct st_error *err)
{
    struct audit_sqlite *r = self;
    sqlite3_stmt *st =
        r->list[f->user_id[0] != '\0'][f->target_id[0] != '\0'][f->marker[0] != '\0'];
    struct sqlite_page page;
    int rc = sqlite_bind_opt_text(st, 2, f->user_id);

    if (rc == SQLITE_OK)
        rc = sqlite_bind_opt_text(st, 3, f->target_id);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_opt_text(st, 4, f->marker);
    if (rc != SQLITE_OK) {
        sqlite_db_fail(r->db, rc, err, "cannot list audit entries");
        sqlite_stmt_done(st);
        return -1;
    }
    if (sqlite_db_list(r->db, st, "audit entry", f->marker, f->limit, sizeof(struct audit_entry),
                       audit_sqlite_read, &page, err) < 0)
        return -1;
    audit_sqlite_page(&page, out);
    return 0;
}

static int
audit_sqlite_scan(void *self, int64_t after_seq, unsigned limit, struct audit_list *out,
                  struct st_error *err)
{
    struct audit_sqlite *r = self;
    struct sqlite_page page;
    int rc = sqlite3_bind_int64(r->scan, 1, after_seq);

    if (rc != SQLITE_OK) {
        sqlite_db_fail(r->db, rc, err, "cannot read the audit entries after seq %lld",
                       (long long)after_seq);
        sqlite_stmt_done(r->scan);
        return -1;
    }
    if (sqlite_db_list(r->db, r->scan, "audit entry", NULL, limit, sizeof(struct audit_entry),
                       audit_sqlite_read, &page, err) < 0)
        return -1;
    audit_sqlite_page(&page, out);
    return 0;
}

/*
 * The list query [by user ?2][by target ?3][after the entry ?4], limit ?5,
 * in the shape sqlite_db_list() expects: after a marker, the marker row
 * itself (flag 1) comes first, then the page; seq is column 2.  Separate
 * statements per filter, so that each can walk its index.  free() it.
 */
static char *
audit_sqlite_list_sql(bool by_user, bool by_target, bool after)
{
    const char *conds[3] = {
        by_user ? "user_id = ?2" : NULL,
        by_target ? "target_id = ?3" : NULL,
        after ? "seq > (SELECT seq FROM audit_log WHERE id = ?4)" : NULL,
    };
    ST_AUTOFREE char *where = st_xstrdup("");
    ST_AUTOFREE char *page = NULL;
    char *next;
    size_t i;

    for (i = 0; i < ST_ARRAY_LEN(conds); i++) {
        if (!conds[i])
            continue;
        next = st_xasprintf("%s%s%s", where, *where ? " AND " : " WHERE ", conds[i]);
        free(where);
        where = next;
    }
    page = st_xasprintf("SELECT 0, " AUDIT_SQLITE_COLS " FROM audit_log%s ORDER BY seq LIMIT ?5",
                        where);
    if (!after)
        return st_steal_ptr(&page);
    return st_xasprintf("SELECT 1, " AUDIT_SQLITE_COLS " FROM audit_log WHERE id = ?4 "
                        "UNION ALL SELECT * FROM (%s) ORDER BY 1 DESC, 2",
                        page);
}

static int
audit_sqlite_prepare(struct audit_sqlite *r, struct st_error *err)
{
    char *sql;
    int rc;
    int i;

    if (sqlite_db_prepare(r->db, "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
                          &r->newest, err) < 0 ||
        sqlite_db_prepare(r->db,
                          "INSERT INTO audit_log (" AUDIT_SQLITE_COLS ") VALUES (?1, ?2, ?3, ?4, "
                          "?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                          &r->insert, err) < 0 ||
        sqlite_db_prepare(r->db,
                          "SELECT 0, " AUDIT_SQLITE_COLS
                          " FROM audit_log WHERE seq > ?1 ORDER BY seq LIMIT ?5",
                          &r->scan, err) < 0)
        return -1;
    for (i = 0; i < 8; i++) {
        sql = audit_sqlite_list_sql(i >> 2 & 1, i >> 1 & 1, i & 1);
        rc = sqlite_db_prepare(r->db, sql, &r->list[i >> 2 & 1][i >> 1 & 1][i & 1], err);
        free(sql);
        if (rc < 0)
            return -1;
    }
    return 0;
}

static void
audit_sqlite_close(void *self)
{
    struct audit_sqlite *r = self;
    int i;

    if (!r)
        return;
    sqlite3_finalize(r->newest);
    sqlite3_finalize(r->insert);
    sqlite3_finalize(r->scan);
    for (i = 0; i < 8; i++)
        sqlite3_finalize(r->list[i >> 2 & 1][i >> 1 & 1][i & 1]);
    free(r);
}

static const struct audit_repo_ops audit_sqlite_ops = {
    .append = audit_sqlite_append,
    .list = audit_sqlite_list,
    .scan = audit_sqlite_scan,
    .close = audit_sqlite_close,
};

int
audit_repo_sqlite_open(struct sqlite_db *db, struct audit_repo *out, struct st_error *err)
{
    struct audit_sqlite *r = st_xcalloc(1, sizeof(*r));

    r->db = db;
    if (audit_sqlite_prepare(r, err) < 0) {
        st_error_prefix(err, "cannot open the audit repository");
        audit_sqlite_close(r);
        return -1;
    }
    out->ops = &audit_sqlite_ops;
    out->self = r;
    return 0;
}
