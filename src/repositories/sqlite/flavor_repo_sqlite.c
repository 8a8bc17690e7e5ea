#include "repositories/sqlite/sqlite_db.h"

#include <string.h>

#include "repositories/sqlite/sqlite_internal.h"

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
    flavor->revision = (uint64_t)sqlite3_column_int64(st, 8);
    return 0;
}

static const struct sqlite_table_spec flavor_sqlite_table = {
    .table = "flavors",
    .noun = "flavor",
    .cols = "id, owner_id, name, vcpus, memory_mib, disk_gib, created_at, revision",
    .size = sizeof(struct flavor),
    .read = flavor_sqlite_read,
    .list_where = NULL,
    .remove_where = NULL,
};

static int
flavor_sqlite_insert(void *self, const struct flavor *flavor, struct st_error *err)
{
    struct sqlite_table *t = self;
    struct sqlite_row_ref ref = {.noun = "flavor", .id = flavor->id, .name = flavor->name};
    sqlite3_stmt *st = t->insert;
    bool bind_failed =
        sqlite_bind_text(st, 1, flavor->id) || sqlite_bind_text(st, 2, flavor->owner_id) ||
        sqlite_bind_text(st, 3, flavor->name) || sqlite3_bind_int64(st, 4, flavor->vcpus) ||
        sqlite3_bind_int64(st, 5, flavor->memory_mib) ||
        sqlite3_bind_int64(st, 6, flavor->disk_gib) ||
        sqlite3_bind_int64(st, 7, flavor->created_at) ||
        sqlite_bind_revision(st, 8, flavor->revision);

    return sqlite_table_write(t, st, bind_failed, "insert", &ref, err);
}

static int
flavor_sqlite_get(void *self, const char *owner, const char *id, struct flavor *out,
                  struct st_error *err)
{
    return sqlite_table_get(self, owner, id, out, err);
}

static int
flavor_sqlite_list(void *self, const char *owner, const struct flavor_filter *f,
                   struct flavor_list *out, struct st_error *err)
{
    struct sqlite_page page;

    if (sqlite_table_list(self, owner, f->marker, f->limit, NULL, NULL, &page, err) < 0)
        return -1;
    out->items = page.items;
    out->count = page.count;
    out->more = page.more;
    return 0;
}

static int
flavor_sqlite_remove(void *self, const char *owner, const char *id, struct st_error *err)
{
    return sqlite_table_remove(self, owner, id, err);
}

static void
flavor_sqlite_close(void *self)
{
    sqlite_table_close(self);
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
    struct sqlite_table *t = sqlite_table_open(db, &flavor_sqlite_table, err);

    if (!t) {
        st_error_prefix(err, "cannot open the flavor repository");
        return -1;
    }
    out->ops = &flavor_sqlite_ops;
    out->self = t;
    return 0;
}
