/*
 * event_repo_pg.c - VM events in PostgreSQL, as event_repo_sqlite.c keeps
 * them: paged by (at, id) and scoped by the owner each event carries.
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

static int
event_pg_prune(void *self, int64_t before_ms, size_t *n, struct st_error *err)
{
    struct event_pg *r = self;
    struct pg_row_ref ref = {
        .noun = "VM events before", .id = "the cut-off", .name = NULL, .name_is = NULL};
    struct pg_params p;
    int changed;

    pg_params_init(&p);
    pg_param_int(&p, before_ms);
    changed = pg_db_write(r->db, &event_pg_prune_stmt, &p, &ref, err);
    if (changed < 0)
        return -1;
    *n = (size_t)changed;
    return 0;
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
