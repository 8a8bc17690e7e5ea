/*
 * image_repo_pg.c - image rows in PostgreSQL, as image_repo_sqlite.c keeps
 * them: an owner sees its own rows and every public one in get and list,
 * and removes only its own.
 *
 * SQLite refuses to remove an image in use within one statement, which is
 * enough there because BEGIN IMMEDIATE lets no VM insert run alongside.
 * Here the remove and every VM insert (vm_repo_pg.c) take the advisory lock
 * "image:<id>" in their transactions: a VM insert that got it first has
 * committed its row before the remove looks, and one that comes later runs
 * after the image is gone.
 */
#include "repositories/postgres/pg_db.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "repositories/postgres/pg_internal.h"
#include "util/mem.h"

struct image_pg {
    struct pg_db *db; /* borrowed */
};

/* In the order image_pg_read() reads them after the marker flag, and the insert takes them. */
#define IMAGE_PG_COLS                                                                              \
    "id, owner_id, name, format, status, size_bytes, virtual_size_bytes, created_at, updated_at, " \
    "visibility, revision"

/* What the owner $1 sees in get and list: its own rows and every public one. */
#define IMAGE_PG_SCOPE "(owner_id = $1 OR visibility = 'public') AND "

/* The first page of the rows @where selects ("" or " WHERE <cond>"), at most $@l of them. */
#define IMAGE_PG_PAGE(where, l)                                                                    \
    "SELECT false, " IMAGE_PG_COLS " FROM images" where " ORDER BY created_at, id LIMIT $" #l

/*
 * The page after the marker $@m among the rows of @scope ("" or
 * "<cond> AND "), at most $@l of them, preceded by the marker row itself
 * (flag true): pg_db_list() learns from the same query whether the marker
 * names a row in scope.
 */
#define IMAGE_PG_AFTER(scope, m, l)                                                                \
    "SELECT true, " IMAGE_PG_COLS " FROM images WHERE " scope "id = $" #m " UNION ALL "            \
    "(SELECT false, " IMAGE_PG_COLS " FROM images WHERE " scope "(created_at, id) > "              \
    "(SELECT created_at, id FROM images WHERE " scope "id = $" #m ") "                             \
    "ORDER BY created_at, id LIMIT $" #l ") ORDER BY 1 DESC, created_at, id"

static const struct pg_stmt image_pg_insert_stmt = {
    "image_insert",
    "INSERT INTO images (" IMAGE_PG_COLS ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
};

/* $1 id, $2 owner or NULL. */
static const struct pg_stmt image_pg_get_stmt = {
    "image_get",
    "SELECT false, " IMAGE_PG_COLS " FROM images "
    "WHERE id = $1 AND ($2::text IS NULL OR owner_id = $2 OR visibility = 'public')",
};

/* Only the owner's own rows go, and none a VM row of any owner is built on. */
static const struct pg_stmt image_pg_remove_stmt = {
    "image_remove",
    "DELETE FROM images WHERE id = $1 AND ($2::text IS NULL OR owner_id = $2) "
    "AND NOT EXISTS (SELECT 1 FROM vms WHERE vms.image_id = $1)",
};

/*
 * [scoped][after a marker]: one statement each, as on SQLite.  Parameters,
 * in this order, of those present: owner, marker, limit.
 */
static const struct pg_stmt image_pg_list_stmts[2][2] = {
    {
        {"image_list", IMAGE_PG_PAGE("", 1)},
        {"image_list_after", IMAGE_PG_AFTER("", 1, 2)},
    },
    {
        {"image_list_owner", IMAGE_PG_PAGE(" WHERE owner_id = $1 OR visibility = 'public'", 2)},
        {"image_list_owner_after", IMAGE_PG_AFTER(IMAGE_PG_SCOPE, 2, 3)},
    },
};

static int
image_pg_read(const PGresult *res, int row, void *item, struct st_error *err)
{
    struct image *image = item;
    char format[32];
    char status[32];
    char visibility[32];

    memset(image, 0, sizeof(*image));
    pg_get_text(res, row, 1, image->id, sizeof(image->id));
    pg_get_text(res, row, 2, image->owner_id, sizeof(image->owner_id));
    pg_get_text(res, row, 3, image->name, sizeof(image->name));
    pg_get_text(res, row, 4, format, sizeof(format));
    pg_get_text(res, row, 5, status, sizeof(status));
    image->size_bytes = (uint64_t)pg_get_int(res, row, 6);
    image->virtual_size_bytes = (uint64_t)pg_get_int(res, row, 7);
    image->created_at = pg_get_int(res, row, 8);
    image->updated_at = pg_get_int(res, row, 9);
    pg_get_text(res, row, 10, visibility, sizeof(visibility));
    image->revision = (uint64_t)pg_get_int(res, row, 11);
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

static int
image_pg_insert(void *self, const struct image *image, struct st_error *err)
{
    struct image_pg *r = self;
    struct pg_row_ref ref = {
        .noun = "image", .id = image->id, .name = image->name, .name_is = NULL};
    struct pg_params p;

    pg_params_init(&p);
    pg_param_text(&p, image->id);
    pg_param_text(&p, image->owner_id);
    pg_param_text(&p, image->name);
    pg_param_text(&p, image_format_name(image->format));
    pg_param_text(&p, image_status_name(image->status));
    /* BIGINT is signed 64-bit, as SQLite's integers; sizes above 8 EiB do not occur. */
    pg_param_int(&p, (int64_t)image->size_bytes);
    pg_param_int(&p, (int64_t)image->virtual_size_bytes);
    pg_param_int(&p, image->created_at);
    pg_param_int(&p, image->updated_at);
    pg_param_text(&p, image_visibility_name(image->visibility));
    pg_param_revision(&p, image->revision);
    return pg_db_write_one(r->db, &image_pg_insert_stmt, &p, &ref, err) < 0 ? -1 : 0;
}

static int
image_pg_get(void *self, const char *owner, const char *id, struct image *out, struct st_error *err)
{
    struct image_pg *r = self;
    struct image image;
    struct pg_params p;

    pg_params_init(&p);
    pg_param_text(&p, id);
    pg_param_text(&p, owner);
    if (pg_db_get(r->db, &image_pg_get_stmt, &p, "image", id, image_pg_read, &image, err) < 0)
        return -1;
    *out = image;
    return 0;
}

static int
image_pg_list(void *self, const char *owner, const struct image_filter *f, struct image_list *out,
              struct st_error *err)
{
    struct image_pg *r = self;
    bool after = f->marker[0] != '\0';
    struct pg_page page;
    struct pg_params p;

    pg_params_init(&p);
    if (owner)
        pg_param_text(&p, owner);
    if (after)
        pg_param_text(&p, f->marker);
    pg_param_int(&p, pg_list_limit(f->limit));
    if (pg_db_list(r->db, &image_pg_list_stmts[owner != NULL][after], &p, "image", f->marker,
                   f->limit, sizeof(struct image), image_pg_read, &page, err) < 0)
        return -1;
    out->items = page.items;
    out->count = page.count;
    out->more = page.more;
    return 0;
}

/*
 * The delete found nothing to remove, inside the remove's transaction:
 * when @owner has the image (get also sees other owners' public ones,
 * which stay not found), a VM row holds on to it.  @err holds the not
 * found the delete reported.
 */
static void
image_pg_explain_remove(struct image_pg *r, const char *owner, const char *id, struct st_error *err)
{
    struct st_error ignored = {0};
    struct image image;

    if (image_pg_get(r, owner, id, &image, &ignored) == 0 &&
        (!owner || strcmp(image.owner_id, owner) == 0))
        st_error_set(err, ST_ERR_CONFLICT, "image '%s' is used by a VM", id);
}

static int
image_pg_remove(void *self, const char *owner, const char *id, struct st_error *err)
{
    struct image_pg *r = self;
    struct pg_row_ref ref = {.noun = "image", .id = id, .name = NULL, .name_is = NULL};
    char key[sizeof("image:") + ST_ID_BUF];
    struct pg_params p;

    snprintf(key, sizeof(key), "image:%s", id);
    pg_params_init(&p);
    pg_param_text(&p, id);
    pg_param_text(&p, owner);
    if (pg_db_begin(r->db, err) < 0)
        return -1;
    if (pg_db_lock(r->db, key, err) < 0)
        goto fail;
    if (pg_db_write_one(r->db, &image_pg_remove_stmt, &p, &ref, err) < 0) {
        if (err && err->code == ST_ERR_NOT_FOUND)
            image_pg_explain_remove(r, owner, id, err);
        goto fail;
    }
    return pg_db_commit(r->db, err);

fail:
    pg_db_rollback(r->db);
    return -1;
}

/* The statements belong to the connection, not to the repository: only the struct goes. */
static void
image_pg_close(void *self)
{
    free(self);
}

static const struct image_repo_ops image_pg_ops = {
    .insert = image_pg_insert,
    .get = image_pg_get,
    .list = image_pg_list,
    .remove = image_pg_remove,
    .close = image_pg_close,
};

int
image_repo_pg_open(struct pg_db *db, struct image_repo *out, struct st_error *err)
{
    struct image_pg *r;

    if (!db)
        return st_error_set(err, ST_ERR_INTERNAL,
                            "cannot open the image repository: no database handle");
    r = st_xcalloc(1, sizeof(*r));
    r->db = db;
    out->ops = &image_pg_ops;
    out->self = r;
    return 0;
}
