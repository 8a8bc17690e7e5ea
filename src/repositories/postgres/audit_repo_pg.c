/*
 * audit_repo_pg.c - the audit hash chain in PostgreSQL.
 *
 * seq is assigned as the newest seq + 1 by append itself.  Where SQLite's
 * BEGIN IMMEDIATE holds the one write lock from reading the newest entry
 * to inserting the next, here the append's transaction takes the advisory
 * lock "audit" first: appends from every connection queue up on it, and
 * since each statement of a READ COMMITTED transaction sees what was
 * committed before it began, the newest entry read after the lock is the
 * one the previous holder inserted.  The chain never forks.
 */
#include "repositories/postgres/pg_db.h"

#include <stdlib.h>
#include <string.h>

#include "repositories/postgres/pg_internal.h"
#include "util/mem.h"

#define AUDIT_PG_COLS                                                                              \
    "seq, id, at, user_id, method, route, target_id, status, request_id, client_addr, "            \
    "prev_hash, hash"

struct audit_pg {
    struct pg_db *db; /* borrowed */
};

static const struct pg_stmt audit_pg_newest_stmt = {
    "audit_newest", "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1"};
static const struct pg_stmt audit_pg_insert_stmt = {
    "audit_insert", "INSERT INTO audit_log (" AUDIT_PG_COLS ") VALUES ($1, $2, $3, $4, $5, $6, $7, "
                    "$8, $9, $10, $11, $12)"};
static const struct pg_stmt audit_pg_scan_stmt = {
    "audit_scan",
    "SELECT false, " AUDIT_PG_COLS " FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"};

/*
 * The list queries, in the shape pg_db_list() expects: a page ordered by
 * seq and, after a marker, the marker row itself (flagged true) first.
 * The marker row is looked up without the filters: a marker need only
 * name an entry.  One statement per filter, so that each can walk its
 * index; their parameters are the filters present (user, target, marker,
 * in that order), then the limit.
 */
#define AUDIT_PG_PAGE(where, limit)                                                                \
    "SELECT false, " AUDIT_PG_COLS " FROM audit_log" where " ORDER BY seq LIMIT " limit
#define AUDIT_PG_AFTER(marker, page)                                                               \
    "SELECT true, " AUDIT_PG_COLS " FROM audit_log WHERE id = " marker " UNION ALL (" page         \
    ") ORDER BY 1 DESC, seq"
#define AUDIT_PG_SINCE(marker) "seq > (SELECT seq FROM audit_log WHERE id = " marker ")"

/* [by user][by target][after a marker] */
static const struct pg_stmt audit_pg_list_stmts[2][2][2] = {
    {
        {
            {"audit_list", AUDIT_PG_PAGE("", "$1")},
            {"audit_list_after",
             AUDIT_PG_AFTER("$1", AUDIT_PG_PAGE(" WHERE " AUDIT_PG_SINCE("$1"), "$2"))},
        },
        {
            {"audit_list_target", AUDIT_PG_PAGE(" WHERE target_id = $1", "$2")},
            {"audit_list_target_after",
             AUDIT_PG_AFTER(
                 "$2", AUDIT_PG_PAGE(" WHERE target_id = $1 AND " AUDIT_PG_SINCE("$2"), "$3"))},
        },
    },
    {
        {
            {"audit_list_user", AUDIT_PG_PAGE(" WHERE user_id = $1", "$2")},
            {"audit_list_user_after",
             AUDIT_PG_AFTER("$2",
                            AUDIT_PG_PAGE(" WHERE user_id = $1 AND " AUDIT_PG_SINCE("$2"), "$3"))},
        },
        {
            {"audit_list_user_target",
             AUDIT_PG_PAGE(" WHERE user_id = $1 AND target_id = $2", "$3")},
            {"audit_list_user_target_after",
             AUDIT_PG_AFTER(
                 "$3",
                 AUDIT_PG_PAGE(" WHERE user_id = $1 AND target_id = $2 AND " AUDIT_PG_SINCE("$3"),
                               "$4"))},
        },
    },
};

static int
audit_pg_read(const PGresult *res, int row, void *item, struct st_error *err)
{
    struct audit_entry *e = item;

    (void)err;
    memset(e, 0, sizeof(*e));
    e->seq = pg_get_int(res, row, 1);
    pg_get_text(res, row, 2, e->id, sizeof(e->id));
    e->at = pg_get_int(res, row, 3);
    pg_get_text(res, row, 4, e->user_id, sizeof(e->user_id));
    pg_get_text(res, row, 5, e->method, sizeof(e->method));
    pg_get_text(res, row, 6, e->route, sizeof(e->route));
    pg_get_text(res, row, 7, e->target_id, sizeof(e->target_id));
    e->status = (int)pg_get_int(res, row, 8);
    pg_get_text(res, row, 9, e->request_id, sizeof(e->request_id));
    pg_get_text(res, row, 10, e->client_addr, sizeof(e->client_addr));
    pg_get_text(res, row, 11, e->prev_hash, sizeof(e->prev_hash));
    pg_get_text(res, row, 12, e->hash, sizeof(e->hash));
    return 0;
}

/* Set e->seq and e->prev_hash from the newest entry, inside the append's transaction. */
static int
audit_pg_link(struct audit_pg *r, struct audit_entry *e, struct st_error *err)
{
    PGresult *res = pg_db_exec(r->db, &audit_pg_newest_stmt, NULL, err);

    if (!res)
        return -1;
    if (PQntuples(res) > 0) {
        e->seq = pg_get_int(res, 0, 0) + 1;
        pg_get_text(res, 0, 1, e->prev_hash, sizeof(e->prev_hash));
    } else {
        e->seq = 1;
        e->prev_hash[0] = '\0';
    }
    PQclear(res);
    return 0;
}

static int
audit_pg_insert(struct audit_pg *r, const struct audit_entry *e, struct st_error *err)
{
    struct pg_row_ref ref = {.noun = "audit entry", .id = e->id, .name = NULL, .name_is = NULL};
    struct pg_params p;

    pg_params_init(&p);
    pg_param_int(&p, e->seq);
    pg_param_text(&p, e->id);
    pg_param_int(&p, e->at);
    pg_param_opt_text(&p, e->user_id);
    pg_param_opt_text(&p, e->method);
    pg_param_opt_text(&p, e->route);
    pg_param_opt_text(&p, e->target_id);
    pg_param_int(&p, e->status);
    pg_param_opt_text(&p, e->request_id);
    pg_param_opt_text(&p, e->client_addr);
    pg_param_opt_text(&p, e->prev_hash);
    pg_param_text(&p, e->hash);
    return pg_db_write_one(r->db, &audit_pg_insert_stmt, &p, &ref, err) < 0 ? -1 : 0;
}

static int
audit_pg_append(void *self, struct audit_entry *e, audit_hash_fn hash, struct st_error *err)
{
    struct audit_pg *r = self;
    struct audit_entry next = *e;

    if (pg_db_begin(r->db, err) < 0)
        return -1;
    if (pg_db_lock(r->db, "audit", err) < 0 || audit_pg_link(r, &next, err) < 0)
        goto fail;
    hash(&next, next.hash);
    if (audit_pg_insert(r, &next, err) < 0)
        goto fail;
    if (pg_db_commit(r->db, err) < 0)
        return -1;
    *e = next;
    return 0;

fail:
    pg_db_rollback(r->db);
    return -1;
}

static void
audit_pg_page(const struct pg_page *page, struct audit_list *out)
{
    out->items = page->items;
    out->count = page->count;
    out->more = page->more;
}

static int
audit_pg_list(void *self, const struct audit_filter *f, struct audit_list *out,
              struct st_error *err)
{
    struct audit_pg *r = self;
    bool by_user = f->user_id[0] != '\0';
    bool by_target = f->target_id[0] != '\0';
    bool after = f->marker[0] != '\0';
    struct pg_params p;
    struct pg_page page;

    pg_params_init(&p);
    if (by_user)
        pg_param_text(&p, f->user_id);
    if (by_target)
        pg_param_text(&p, f->target_id);
    if (after)
        pg_param_text(&p, f->marker);
    pg_param_int(&p, pg_list_limit(f->limit));
    if (pg_db_list(r->db, &audit_pg_list_stmts[by_user][by_target][after], &p, "audit entry",
                   f->marker, f->limit, sizeof(struct audit_entry), audit_pg_read, &page, err) < 0)
        return -1;
    audit_pg_page(&page, out);
    return 0;
}

static int
audit_pg_scan(void *self, int64_t after_seq, unsigned limit, struct audit_list *out,
              struct st_error *err)
{
    struct audit_pg *r = self;
    struct pg_params p;
    struct pg_page page;

    pg_params_init(&p);
    pg_param_int(&p, after_seq);
    pg_param_int(&p, pg_list_limit(limit));
    if (pg_db_list(r->db, &audit_pg_scan_stmt, &p, "audit entry", NULL, limit,
                   sizeof(struct audit_entry), audit_pg_read, &page, err) < 0)
        return -1;
    audit_pg_page(&page, out);
    return 0;
}

static void
audit_pg_close(void *self)
{
    free(self);
}

static const struct audit_repo_ops audit_pg_ops = {
    .append = audit_pg_append,
    .list = audit_pg_list,
    .scan = audit_pg_scan,
    .close = audit_pg_close,
};

/* Statements are prepared on first use (pg_internal.h): opening cannot fail. */
int
audit_repo_pg_open(struct pg_db *db, struct audit_repo *out, struct st_error *err)
{
    struct audit_pg *r = st_xcalloc(1, sizeof(*r));

    (void)err;
    r->db = db;
    out->ops = &audit_pg_ops;
    out->self = r;
    return 0;
}
