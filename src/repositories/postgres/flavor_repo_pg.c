/*
 * flavor_repo_pg.c - flavor rows in PostgreSQL, as flavor_repo_sqlite.c
 * keeps them: scoped by owner, paged by (created_at, id).
 */
#include "repositories/postgres/pg_db.h"

#include <stdlib.h>
#include <string.h>

#include "repositories/postgres/pg_internal.h"
#include "util/mem.h"

struct flavor_pg {
    struct pg_db *db; /* borrowed */
};

/* In the order flavor_pg_read() reads them after the marker flag, and the insert takes them. */
#define FLAVOR_PG_COLS "id, owner_id, name, vcpus, memory_mib, disk_gib, created_at, revision"

/* The first page of the rows @where selects ("" or " WHERE <cond>"), at most $@l of them. */
#define FLAVOR_PG_PAGE(where, l)                                                                   \
    "SELECT false, " FLAVOR_PG_COLS " FROM flavors" where " ORDER BY created_at, id LIMIT $" #l

/*
 * The page after the marker $@m among the rows of @scope ("" or
 * "<cond> AND "), at most $@l of them, preceded by the marker row itself
 * (flag true): pg_db_list() learns from the same query whether the marker
 * names a row in scope.
 */
#define FLAVOR_PG_AFTER(scope, m, l)                                                               \
    "SELECT true, " FLAVOR_PG_COLS " FROM flavors WHERE " scope "id = $" #m " UNION ALL "          \
    "(SELECT false, " FLAVOR_PG_COLS " FROM flavors WHERE " scope "(created_at, id) > "            \
    "(SELECT created_at, id FROM flavors WHERE " scope "id = $" #m ") "                            \
    "ORDER BY created_at, id LIMIT $" #l ") ORDER BY 1 DESC, created_at, id"

static const struct pg_stmt flavor_pg_insert_stmt = {
    "flavor_insert",
    "INSERT INTO flavors (" FLAVOR_PG_COLS ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
};

/* $1 id, $2 owner or NULL. */
static const struct pg_stmt flavor_pg_get_stmt = {
    "flavor_get",
    "SELECT false, " FLAVOR_PG_COLS " FROM flavors "
    "WHERE id = $1 AND ($2::text IS NULL OR owner_id = $2)",
};

static const struct pg_stmt flavor_pg_remove_stmt = {
    "flavor_remove",
    "DELETE FROM flavors WHERE id = $1 AND ($2::text IS NULL OR owner_id = $2)",
};

/*
 * [scoped][after a marker]: one statement each, as on SQLite, so that each
 * pages along its own index.  Parameters, in this order, of those present:
 * owner, marker, limit.
 */
static const struct pg_stmt flavor_pg_list_stmts[2][2] = {
    {
        {"flavor_list", FLAVOR_PG_PAGE("", 1)},
        {"flavor_list_after", FLAVOR_PG_AFTER("", 1, 2)},
    },
    {
        {"flavor_list_owner", FLAVOR_PG_PAGE(" WHERE owner_id = $1", 2)},
        {"flavor_list_owner_after", FLAVOR_PG_AFTER("owner_id = $1 AND ", 2, 3)},
    },
};

static int
flavor_pg_read(const PGresult *res, int row, void *item, struct st_error *err)
{
    struct flavor *flavor = item;

    (void)err;
    memset(flavor, 0, sizeof(*flavor));
    pg_get_text(res, row, 1, flavor->id, sizeof(flavor->id));
    pg_get_text(res, row, 2, flavor->owner_id, sizeof(flavor->owner_id));
    pg_get_text(res, row, 3, flavor->name, sizeof(flavor->name));
    flavor->vcpus = (unsigned)pg_get_int(res, row, 4);
    flavor->memory_mib = (unsigned)pg_get_int(res, row, 5);
    flavor->disk_gib = (unsigned)pg_get_int(res, row, 6);
    flavor->created_at = pg_get_int(res, row, 7);
    flavor->revision = (uint64_t)pg_get_int(res, row, 8);
    return 0;
}

static int
flavor_pg_insert(void *self, const struct flavor *flavor, struct st_error *err)
{
    struct flavor_pg *r = self;
    struct pg_row_ref ref = {
        .noun = "flavor", .id = flavor->id, .name = flavor->name, .name_is = NULL};
    struct pg_params p;

    pg_params_init(&p);
    pg_param_text(&p, flavor->id);
    pg_param_text(&p, flavor->owner_id);
    pg_param_text(&p, flavor->name);
    pg_param_int(&p, flavor->vcpus);
    pg_param_int(&p, flavor->memory_mib);
    pg_param_int(&p, flavor->disk_gib);
    pg_param_int(&p, flavor->created_at);
    pg_param_revision(&p, flavor->revision);
    return pg_db_write_one(r->db, &flavor_pg_insert_stmt, &p, &ref, err) < 0 ? -1 : 0;
}

static int
flavor_pg_get(void *self, const char *owner, const char *id, struct flavor *out,
              struct st_error *err)
{
    struct flavor_pg *r = self;
    struct flavor flavor;
    struct pg_params p;

    pg_params_init(&p);
    pg_param_text(&p, id);
    pg_param_text(&p, owner);
    if (pg_db_get(r->db, &flavor_pg_get_stmt, &p, "flavor", id, flavor_pg_read, &flavor, err) < 0)
        return -1;
    *out = flavor;
    return 0;
}

static int
flavor_pg_list(void *self, const char *owner, const struct flavor_filter *f,
               struct flavor_list *out, struct st_error *err)
{
    struct flavor_pg *r = self;
    bool after = f->marker[0] != '\0';
    struct pg_page page;
    struct pg_params p;

    pg_params_init(&p);
    if (owner)
        pg_param_text(&p, owner);
    if (after)
        pg_param_text(&p, f->marker);
    pg_param_int(&p, pg_list_limit(f->limit));
    if (pg_db_list(r->db, &flavor_pg_list_stmts[owner != NULL][after], &p, "flavor", f->marker,
                   f->limit, sizeof(struct flavor), flavor_pg_read, &page, err) < 0)
        return -1;
    out->items = page.items;
    out->count = page.count;
    out->more = page.more;
    return 0;
}

static int
flavor_pg_remove(void *self, const char *owner, const char *id, struct st_error *err)
{
    struct flavor_pg *r = self;
    struct pg_row_ref ref = {.noun = "flavor", .id = id, .name = NULL, .name_is = NULL};
    struct pg_params p;

    pg_params_init(&p);
    pg_param_text(&p, id);
    pg_param_text(&p, owner);
    return pg_db_write_one(r->db, &flavor_pg_remove_stmt, &p, &ref, err) < 0 ? -1 : 0;
}

/* The statements belong to the connection, not to the repository: only the struct goes. */
static void
flavor_pg_close(void *self)
{
    free(self);
}

static const struct flavor_repo_ops flavor_pg_ops = {
    .insert = flavor_pg_insert,
    .get = flavor_pg_get,
    .list = flavor_pg_list,
    .remove = flavor_pg_remove,
    .close = flavor_pg_close,
};

int
flavor_repo_pg_open(struct pg_db *db, struct flavor_repo *out, struct st_error *err)
{
    struct flavor_pg *r;

    if (!db)
        return st_error_set(err, ST_ERR_INTERNAL,
                            "cannot open the flavor repository: no database handle");
    r = st_xcalloc(1, sizeof(*r));
    r->db = db;
    out->ops = &flavor_pg_ops;
    out->self = r;
    return 0;
}
