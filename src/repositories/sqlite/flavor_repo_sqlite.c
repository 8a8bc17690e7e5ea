#include "repositories/sqlite/sqlite_db.h"

#include <stdlib.h>
#include <string.h>

#include "repositories/sqlite/sqlite_internal.h"
#include "util/mem.h"

/* Column 0 of every SELECT is the marker flag sqlite_db_list() expects. */
#define FLAVOR_COLS "id, owner_id, name, vcpus, memory_mib, disk_gib, created_at"
#define FLAVOR_SCOPE "(?2 IS NULL OR owner_id = ?2)"
/* List parameters: ?1 owner, ?4 marker, ?5 limit + 1 (as for VMs, which also filter). */
#define FLAVOR_PAGE "ORDER BY created_at, id LIMIT ?5"
/*
 * After a marker: the marker row itself (flag 1), then the page, ordered
 * again outside since a compound's row order is otherwise unspecified; in
 * the outer ORDER BY, 8 is created_at and 2 is id.
 */
#define FLAVOR_AFTER(scope_and)                                                                    \
    "SELECT 1, " FLAVOR_COLS " FROM flavors WHERE " scope_and "id = ?4 "                           \
    "UNION ALL SELECT * FROM (SELECT 0, " FLAVOR_COLS " FROM flavors WHERE " scope_and             \
    "(created_at, id) > (SELECT created_at, id FROM flavors WHERE " scope_and                      \
    "id = ?4) " FLAVOR_PAGE ") ORDER BY 1 DESC, 8, 2"

static const char *const flavor_sql_list[2][2] = {
    /* [scoped][after a marker] */
    {"SELECT 0, " FLAVOR_COLS " FROM flavors " FLAVOR_PAGE, FLAVOR_AFTER("")},
    {"SELECT 0, " FLAVOR_COLS " FROM flavors WHERE owner_id = ?1 " FLAVOR_PAGE,
     FLAVOR_AFTER("owner_id = ?1 AND ")},
};

struct flavor_sqlite {
    struct sqlite_db *db;
    sqlite3_stmt *insert;
    sqlite3_stmt *get;
    sqlite3_stmt *remove;
    sqlite3_stmt *list[2][2];
};

static int
flavor_sqlite_read(sqlite3_stmt *st, void *item, struct st_error *err)
{
    struct flavor *flavor = item;

    (void)err;
    memset(flavor, 0, sizeof(*flavor));
    sqlite_column_text(st, 1, flavor->id, sizeof(flavor->id));
    sqlite_column_text(st, 2, flavor->owner_id, sizeof(flavor->owner_id));
    sqlite_column_text(st, 3, flavor->name, sizeof(flavor->name));
    flavor->vcpus = (unsigned)sqlite3_column_int64(st, 4);
    flavor->memory_mib = (unsigned)sqlite3_column_int64(st, 5);
    flavor->disk_gib = (unsigned)sqlite3_column_int64(st, 6);
    flavor->created_at = sqlite3_column_int64(st, 7);
    return 0;
}

static int
flavor_sqlite_insert(void *self, const struct flavor *flavor, struct st_error *err)
{
    struct flavor_sqlite *r = self;
    struct sqlite_row_ref ref = {.noun = "flavor", .id = flavor->id, .name = flavor->name};
    sqlite3_stmt *st = r->insert;

    if (sqlite_bind_text(st, 1, flavor->id) || sqlite_bind_text(st, 2, flavor->owner_id) ||
        sqlite_bind_text(st, 3, flavor->name) || sqlite3_bind_int64(st, 4, flavor->vcpus) ||
        sqlite3_bind_int64(st, 5, flavor->memory_mib) ||
        sqlite3_bind_int64(st, 6, flavor->disk_gib) ||
        sqlite3_bind_int64(st, 7, flavor->created_at)) {
        sqlite_db_fail(r->db, sqlite3_errcode(sqlite_db_handle(r->db)), err,
                       "cannot insert flavor '%s'", flavor->id);
        sqlite_stmt_done(st);
        return -1;
    }
    return sqlite_db_write(r->db, st, &ref, err);
}

static int
flavor_sqlite_get(void *self, const char *owner, const char *id, struct flavor *out,
                  struct st_error *err)
{
    struct flavor_sqlite *r = self;
    struct flavor flavor;

    if (sqlite_bind_text(r->get, 1, id) || sqlite_bind_text(r->get, 2, owner)) {
        sqlite_db_fail(r->db, sqlite3_errcode(sqlite_db_handle(r->db)), err,
                       "cannot read flavor '%s'", id);
        sqlite_stmt_done(r->get);
        return -1;
    }
    if (sqlite_db_get(r->db, r->get, "flavor", id, flavor_sqlite_read, &flavor, err) < 0)
        return -1;
    *out = flavor;
    return 0;
}

static int
flavor_sqlite_list(void *self, const char *owner, const struct flavor_filter *f,
                   struct flavor_list *out, struct st_error *err)
{
    struct flavor_sqlite *r = self;
    sqlite3_stmt *st = r->list[owner != NULL][f->marker[0] != '\0'];
    struct sqlite_page page;

    if (sqlite_bind_text(st, 1, owner) || sqlite_bind_opt_text(st, 4, f->marker)) {
        sqlite_db_fail(r->db, sqlite3_errcode(sqlite_db_handle(r->db)), err, "cannot list flavors");
        sqlite_stmt_done(st);
        return -1;
    }
    if (sqlite_db_list(r->db, st, "flavor", f->marker, f->limit, sizeof(struct flavor),
                       flavor_sqlite_read, &page, err) < 0)
        return -1;
    out->items = page.items;
    out->count = page.count;
    out->more = page.more;
    return 0;
}

static int
flavor_sqlite_remove(void *self, const char *owner, const char *id, struct st_error *err)
{
    struct flavor_sqlite *r = self;
    struct sqlite_row_ref ref = {.noun = "flavor", .id = id, .name = NULL};

    if (sqlite_bind_text(r->remove, 1, id) || sqlite_bind_text(r->remove, 2, owner)) {
        sqlite_db_fail(r->db, sqlite3_errcode(sqlite_db_handle(r->db)), err,
                       "cannot remove flavor '%s'", id);
        sqlite_stmt_done(r->remove);
        return -1;
    }
    return sqlite_db_write(r->db, r->remove, &ref, err);
}

static void
flavor_sqlite_close(void *self)
{
    struct flavor_sqlite *r = self;
    size_t i;

    if (!r)
        return;
    sqlite3_finalize(r->insert);
    sqlite3_finalize(r->get);
    sqlite3_finalize(r->remove);
    for (i = 0; i < 4; i++)
        sqlite3_finalize(r->list[i / 2][i % 2]);
    free(r);
}

static const struct flavor_repo_ops flavor_sqlite_ops = {
    .insert = flavor_sqlite_insert,
    .get = flavor_sqlite_get,
    .list = flavor_sqlite_list,
    .remove = flavor_sqlite_remove,
    .close = flavor_sqlite_close,
};

int
flavor_repo_sqlite_open(struct sqlite_db *db, struct flavor_repo *out, struct st_error *err)
{
    struct flavor_sqlite *r = st_xcalloc(1, sizeof(*r));
    size_t i;

    r->db = db;
    if (sqlite_db_prepare(
            db, "INSERT INTO flavors (" FLAVOR_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            &r->insert, err) < 0 ||
        sqlite_db_prepare(db,
                          "SELECT 0, " FLAVOR_COLS " FROM flavors WHERE id = ?1 AND " FLAVOR_SCOPE,
                          &r->get, err) < 0 ||
        sqlite_db_prepare(db, "DELETE FROM flavors WHERE id = ?1 AND " FLAVOR_SCOPE, &r->remove,
                          err) < 0)
        goto fail;
    for (i = 0; i < 4; i++)
        if (sqlite_db_prepare(db, flavor_sql_list[i / 2][i % 2], &r->list[i / 2][i % 2], err) < 0)
            goto fail;
    out->ops = &flavor_sqlite_ops;
    out->self = r;
    return 0;

fail:
    st_error_prefix(err, "cannot open the flavor repository");
    flavor_sqlite_close(r);
    return -1;
}
