/*
 * event_repo_sqlite.c - VM events in SQLite.
 *
 * Events go through the shared table helper, paged by (at, id) and scoped
 * by the owner each event carries, so a VM's history stays readable by its
 * owner after the VM row is gone.
 */
#include "repositories/sqlite/sqlite_db.h"

#include <stdlib.h>
#include <string.h>

#include "repositories/sqlite/sqlite_internal.h"
#include "util/mem.h"

struct event_sqlite {
    struct sqlite_db *db; /* borrowed */
    struct sqlite_table *events;
    sqlite3_stmt *prune;
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

static int
event_sqlite_prune(void *self, int64_t before_ms, size_t *n, struct st_error *err)
{
    struct event_sqlite *r = self;
    struct sqlite_row_ref ref = {
        .noun = "VM events before", .id = "the cut-off", .name = NULL, .name_is = NULL};

    if (sqlite3_bind_int64(r->prune, 1, before_ms))
        return event_sqlite_bind_fail(r, r->prune, "prune VM events", err);
    return sqlite_db_delete(r->db, r->prune, &ref, n, err);
}

static void
event_sqlite_close(void *self)
{
    struct event_sqlite *r = self;

    if (!r)
        return;
    sqlite3_finalize(r->prune);
    sqlite_table_close(r->events);
    free(r);
}

static const struct event_repo_ops event_sqlite_ops = {
    .append = event_sqlite_append,
    .list = event_sqlite_list,
    .prune = event_sqlite_prune,
    .close = event_sqlite_close,
};

int
event_repo_sqlite_open(struct sqlite_db *db, struct event_repo *out, struct st_error *err)
{
    struct event_sqlite *r = st_xcalloc(1, sizeof(*r));

    r->db = db;
    r->events = sqlite_table_open(db, &event_sqlite_table, err);
    if (!r->events ||
        sqlite_db_prepare(db, "DELETE FROM vm_events WHERE at < ?1", &r->prune, err) < 0) {
        st_error_prefix(err, "cannot open the event repository");
        event_sqlite_close(r);
        return -1;
    }
    out->ops = &event_sqlite_ops;
    out->self = r;
    return 0;
}
