#include "repositories/sqlite/sqlite_db.h"

#include <string.h>

#include "repositories/sqlite/sqlite_internal.h"

static int
image_sqlite_read(sqlite3_stmt *st, void *item, struct st_error *err)
{
    struct image *image = item;
    char format[32];
    char status[32];
    char visibility[32];

    memset(image, 0, sizeof(*image));
    sqlite_column_text(st, 1, image->id, sizeof(image->id));
    sqlite_column_text(st, 2, image->owner_id, sizeof(image->owner_id));
    sqlite_column_text(st, 3, image->name, sizeof(image->name));
    sqlite_column_text(st, 4, format, sizeof(format));
    sqlite_column_text(st, 5, status, sizeof(status));
    image->size_bytes = (uint64_t)sqlite3_column_int64(st, 6);
    image->virtual_size_bytes = (uint64_t)sqlite3_column_int64(st, 7);
    image->created_at = sqlite3_column_int64(st, 8);
    image->updated_at = sqlite3_column_int64(st, 9);
    sqlite_column_text(st, 10, visibility, sizeof(visibility));
    image->revision = (uint64_t)sqlite3_column_int64(st, 11);
    if (image_format_parse(format, &image->format) < 0)
        return st_error_set(err, ST_ERR_BACKEND, "image '%s' has an unknown format '%s' stored",
                            image->id, format);
    if (image_status_parse(status, &image->status) < 0)
        return st_error_set(err, ST_ERR_BACKEND, "image '%s' has an unknown status '%s' stored",
                            image->id, status);
    if (image_visibility_parse(visibility, &image->visibility) < 0)
        return st_error_set(err, ST_ERR_BACKEND, "image '%s' has an unknown visibility '%s' stored",
                            image->id, visibility);
    return 0;
}

static const struct sqlite_table_spec image_sqlite_table = {
    .table = "images",
    .noun = "image",
    .cols = "id, owner_id, name, format, status, size_bytes, virtual_size_bytes, created_at, "
            "updated_at, visibility, revision",
    .size = sizeof(struct image),
    .read = image_sqlite_read,
    .list_where = NULL,
    /* In the same statement, so that a VM row committed first keeps the image. */
    .remove_where = "NOT EXISTS (SELECT 1 FROM vms WHERE vms.image_id = images.id)",
    .owner_col = "owner_id",
    .unowned = false,
    /* Every owner may read and list (so build on) public images; only theirs go. */
    .shared_where = "visibility = 'public'",
};

static int
image_sqlite_insert(void *self, const struct image *image, struct st_error *err)
{
    struct sqlite_table *t = self;
    struct sqlite_row_ref ref = {
        .noun = "image", .id = image->id, .name = image->name, .name_is = NULL};
    sqlite3_stmt *st = t->insert;
    /* SQLite integers are signed 64-bit; sizes above 8 EiB do not occur. */
    bool bind_failed = sqlite_bind_text(st, 1, image->id) ||
                       sqlite_bind_text(st, 2, image->owner_id) ||
                       sqlite_bind_text(st, 3, image->name) ||
                       sqlite_bind_text(st, 4, image_format_name(image->format)) ||
                       sqlite_bind_text(st, 5, image_status_name(image->status)) ||
                       sqlite3_bind_int64(st, 6, (sqlite3_int64)image->size_bytes) ||
                       sqlite3_bind_int64(st, 7, (sqlite3_int64)image->virtual_size_bytes) ||
                       sqlite3_bind_int64(st, 8, image->created_at) ||
                       sqlite3_bind_int64(st, 9, image->updated_at) ||
                       sqlite_bind_text(st, 10, image_visibility_name(image->visibility)) ||
                       sqlite_bind_revision(st, 11, image->revision);

    return sqlite_table_write(t, st, bind_failed, "insert", &ref, err);
}

static int
image_sqlite_get(void *self, const char *owner, const char *id, struct image *out,
                 struct st_error *err)
{
    return sqlite_table_get(self, owner, id, out, err);
}

static int
image_sqlite_list(void *self, const char *owner, const struct image_filter *f,
                  struct image_list *out, struct st_error *err)
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
image_sqlite_remove(void *self, const char *owner, const char *id, struct st_error *err)
{
    if (sqlite_table_remove(self, owner, id, err) == 0)
        return 0;
    /*
     * Nothing deleted: no such image of @owner's (get also sees other
     * owners' public ones, which stay not found), or a VM row holds on to it.
     */
    if (err && err->code == ST_ERR_NOT_FOUND) {
        struct image image;
        struct st_error ignored = {0};

        if (image_sqlite_get(self, owner, id, &image, &ignored) == 0 &&
            (!owner || strcmp(image.owner_id, owner) == 0))
            st_error_set(err, ST_ERR_CONFLICT, "image '%s' is used by a VM", id);
    }
    return -1;
}

static void
image_sqlite_close(void *self)
{
    sqlite_table_close(self);
}

static const struct image_repo_ops image_sqlite_ops = {
    .insert = image_sqlite_insert,
    .get = image_sqlite_get,
    .list = image_sqlite_list,
    .remove = image_sqlite_remove,
    .close = image_sqlite_close,
};

int
image_repo_sqlite_open(struct sqlite_db *db, struct image_repo *out, struct st_error *err)
{
    struct sqlite_table *t = sqlite_table_open(db, &image_sqlite_table, err);

    if (!t) {
        st_error_prefix(err, "cannot open the image repository");
        return -1;
    }
    out->ops = &image_sqlite_ops;
    out->self = t;
    return 0;
}
