#include "repositories/sqlite/sqlite_db.h"

#include <stdlib.h>
#include <string.h>

#include "repositories/sqlite/sqlite_internal.h"
#include "util/mem.h"

/* Column 0 of every SELECT is the marker flag sqlite_db_list() expects. */
#define IMAGE_COLS                                                                                 \
    "id, owner_id, name, format, status, size_bytes, virtual_size_bytes, created_at, updated_at"
#define IMAGE_SCOPE "(?2 IS NULL OR owner_id = ?2)"
/* List parameters: ?1 owner, ?4 marker, ?5 limit + 1 (as for VMs, which also filter). */
#define IMAGE_PAGE "ORDER BY created_at, id LIMIT ?5"
/*
 * After a marker: the marker row itself (flag 1), then the page, ordered
 * again outside since a compound's row order is otherwise unspecified; in
 * the outer ORDER BY, 9 is created_at and 2 is id.
 */
#define IMAGE_AFTER(scope_and)                                                                     \
    "SELECT 1, " IMAGE_COLS " FROM images WHERE " scope_and "id = ?4 "                             \
    "UNION ALL SELECT * FROM (SELECT 0, " IMAGE_COLS " FROM images WHERE " scope_and               \
    "(created_at, id) > (SELECT created_at, id FROM images WHERE " scope_and                       \
    "id = ?4) " IMAGE_PAGE ") ORDER BY 1 DESC, 9, 2"

static const char *const image_sql_list[2][2] = {
    /* [scoped][after a marker] */
    {"SELECT 0, " IMAGE_COLS " FROM images " IMAGE_PAGE, IMAGE_AFTER("")},
    {"SELECT 0, " IMAGE_COLS " FROM images WHERE owner_id = ?1 " IMAGE_PAGE,
     IMAGE_AFTER("owner_id = ?1 AND ")},
};

struct image_sqlite {
    struct sqlite_db *db;
    sqlite3_stmt *insert;
    sqlite3_stmt *get;
    sqlite3_stmt *remove;
    sqlite3_stmt *list[2][2];
};

static int
image_sqlite_read(sqlite3_stmt *st, void *item, struct st_error *err)
{
    struct image *image = item;
    char format[32];
    char status[32];

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
    if (image_format_parse(format, &image->format) < 0)
        return st_error_set(err, ST_ERR_BACKEND, "image '%s' has an unknown format '%s' stored",
                            image->id, format);
    if (image_status_parse(status, &image->status) < 0)
        return st_error_set(err, ST_ERR_BACKEND, "image '%s' has an unknown status '%s' stored",
                            image->id, status);
    return 0;
}

static int
image_sqlite_insert(void *self, const struct image *image, struct st_error *err)
{
    struct image_sqlite *r = self;
    struct sqlite_row_ref ref = {.noun = "image", .id = image->id, .name = image->name};
    sqlite3_stmt *st = r->insert;

    /* SQLite integers are signed 64-bit; sizes above 8 EiB do not occur. */
    if (sqlite_bind_text(st, 1, image->id) || sqlite_bind_text(st, 2, image->owner_id) ||
        sqlite_bind_text(st, 3, image->name) ||
        sqlite_bind_text(st, 4, image_format_name(image->format)) ||
        sqlite_bind_text(st, 5, image_status_name(image->status)) ||
        sqlite3_bind_int64(st, 6, (sqlite3_int64)image->size_bytes) ||
        sqlite3_bind_int64(st, 7, (sqlite3_int64)image->virtual_size_bytes) ||
        sqlite3_bind_int64(st, 8, image->created_at) ||
        sqlite3_bind_int64(st, 9, image->updated_at)) {
        sqlite_db_fail(r->db, sqlite3_errcode(sqlite_db_handle(r->db)), err,
                       "cannot insert image '%s'", image->id);
        sqlite_stmt_done(st);
        return -1;
    }
    return sqlite_db_write(r->db, st, &ref, err);
}

static int
image_sqlite_get(void *self, const char *owner, const char *id, struct image *out,
                 struct st_error *err)
{
    struct image_sqlite *r = self;
    struct image image;

    if (sqlite_bind_text(r->get, 1, id) || sqlite_bind_text(r->get, 2, owner)) {
        sqlite_db_fail(r->db, sqlite3_errcode(sqlite_db_handle(r->db)), err,
                       "cannot read image '%s'", id);
        sqlite_stmt_done(r->get);
        return -1;
    }
    if (sqlite_db_get(r->db, r->get, "image", id, image_sqlite_read, &image, err) < 0)
        return -1;
    *out = image;
    return 0;
}

static int
image_sqlite_list(void *self, const char *owner, const struct image_filter *f,
                  struct image_list *out, struct st_error *err)
{
    struct image_sqlite *r = self;
    sqlite3_stmt *st = r->list[owner != NULL][f->marker[0] != '\0'];
    struct sqlite_page page;

    if (sqlite_bind_text(st, 1, owner) || sqlite_bind_opt_text(st, 4, f->marker)) {
        sqlite_db_fail(r->db, sqlite3_errcode(sqlite_db_handle(r->db)), err, "cannot list images");
        sqlite_stmt_done(st);
        return -1;
    }
    if (sqlite_db_list(r->db, st, "image", f->marker, f->limit, sizeof(struct image),
                       image_sqlite_read, &page, err) < 0)
        return -1;
    out->items = page.items;
    out->count = page.count;
    out->more = page.more;
    return 0;
}

static int
image_sqlite_remove(void *self, const char *owner, const char *id, struct st_error *err)
{
    struct image_sqlite *r = self;
    struct sqlite_row_ref ref = {.noun = "image", .id = id, .name = NULL};

    if (sqlite_bind_text(r->remove, 1, id) || sqlite_bind_text(r->remove, 2, owner)) {
        sqlite_db_fail(r->db, sqlite3_errcode(sqlite_db_handle(r->db)), err,
                       "cannot remove image '%s'", id);
        sqlite_stmt_done(r->remove);
        return -1;
    }
    if (sqlite_db_write(r->db, r->remove, &ref, err) == 0)
        return 0;
    /* Nothing deleted: either no such image, or a VM row holds on to it. */
    if (err && err->code == ST_ERR_NOT_FOUND) {
        struct image image;
        struct st_error ignored = {0};

        if (image_sqlite_get(self, owner, id, &image, &ignored) == 0)
            st_error_set(err, ST_ERR_CONFLICT, "image '%s' is used by a VM", id);
    }
    return -1;
}

static void
image_sqlite_close(void *self)
{
    struct image_sqlite *r = self;
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
    struct image_sqlite *r = st_xcalloc(1, sizeof(*r));
    size_t i;

    r->db = db;
    if (sqlite_db_prepare(
            db, "INSERT INTO images (" IMAGE_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            &r->insert, err) < 0 ||
        sqlite_db_prepare(db, "SELECT 0, " IMAGE_COLS " FROM images WHERE id = ?1 AND " IMAGE_SCOPE,
                          &r->get, err) < 0 ||
        sqlite_db_prepare(db,
                          "DELETE FROM images WHERE id = ?1 AND " IMAGE_SCOPE
                          " AND NOT EXISTS (SELECT 1 FROM vms WHERE vms.image_id = images.id)",
                          &r->remove, err) < 0)
        goto fail;
    for (i = 0; i < 4; i++)
        if (sqlite_db_prepare(db, image_sql_list[i / 2][i % 2], &r->list[i / 2][i % 2], err) < 0)
            goto fail;
    out->ops = &image_sqlite_ops;
    out->self = r;
    return 0;

fail:
    st_error_prefix(err, "cannot open the image repository");
    image_sqlite_close(r);
    return -1;
}
