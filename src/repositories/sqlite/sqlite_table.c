/*
 * sqlite_table.c - what the SQLite repositories do alike: the statements
 * of one table of rows scoped by owner and paged by (created_at, id).
 */
#include "repositories/sqlite/sqlite_internal.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "util/mem.h"

/* Where @name stands in the ", "-separated @cols (0 first), or -1. */
static int
sqlite_table_col_index(const char *cols, const char *name)
{
    size_t len = strlen(name);
    const char *p = cols;
    int i;

    for (i = 0; p; i++) {
        if (strncmp(p, name, len) == 0 && (p[len] == ',' || p[len] == '\0'))
            return i;
        p = strchr(p, ',');
        if (p)
            p += strspn(p, ", ");
    }
    return -1;
}

static const char *
sqlite_table_order_col(const struct sqlite_table_spec *spec)
{
    return spec->order_col ? spec->order_col : "created_at";
}

/* "?1, ?2, ..., ?n" for the @cols of an insert; free() it. */
static char *
sqlite_table_placeholders(const char *cols)
{
    char *out = st_xstrdup("?1");
    char *next;
    int n = 1;
    const char *p;

    for (p = strchr(cols, ','); p; p = strchr(p + 1, ',')) {
        next = st_xasprintf("%s, ?%d", out, ++n);
        free(out);
        out = next;
    }
    return out;
}

/*
 * The condition under which the owner in parameter ?@param sees a row: the
 * row is its own or, when @shared, one the spec shares with every owner.
 * With @nullable, a NULL owner sees every row.  A table nobody owns shows
 * its rows to the NULL owner alone.  free() it.
 */
static char *
sqlite_table_scope(const struct sqlite_table_spec *spec, int param, bool nullable, bool shared)
{
    const char *col = spec->owner_col ? spec->owner_col : "owner_id";
    bool share = shared && spec->shared_where;
    ST_AUTOFREE char *null_or = nullable ? st_xasprintf("?%d IS NULL OR ", param) : st_xstrdup("");

    if (spec->unowned)
        return st_xasprintf("?%d IS NULL", param);
    return st_xasprintf("(%s%s = ?%d%s%s%s)", null_or, col, param, share ? " OR (" : "",
                        share ? spec->shared_where : "", share ? ")" : "");
}

/*
 * The list query [scoped][after a marker]; free() it.  Every one yields the
 * marker flag sqlite_db_list() expects as column 0.  After a marker: the
 * marker row itself (flag 1, so a marker naming no row in scope is noticed
 * in the same query), then the page.  The page is ordered again outside
 * because a compound's row order is otherwise unspecified; in the outer
 * ORDER BY, @order_pos is the position of the order column and 2 that of id.
 */
static char *
sqlite_table_list_sql(const struct sqlite_table_spec *spec, bool scoped, bool after, int order_pos)
{
    const char *order = sqlite_table_order_col(spec);
    ST_AUTOFREE char *scope = scoped ? sqlite_table_scope(spec, 1, false, true) : NULL;
    ST_AUTOFREE char *scope_and = scoped ? st_xasprintf("%s AND ", scope) : st_xstrdup("");
    ST_AUTOFREE char *after_cond = NULL;
    ST_AUTOFREE char *where = st_xstrdup("");
    ST_AUTOFREE char *page = NULL;
    const char *conds[3];
    char *next;
    size_t i;

    if (after)
        after_cond = st_xasprintf("(%s, id) > (SELECT %s, id FROM %s WHERE %sid = ?4)", order,
                                  order, spec->table, scope_and);
    conds[0] = scope;
    conds[1] = spec->list_where;
    conds[2] = after_cond;
    for (i = 0; i < ST_ARRAY_LEN(conds); i++) {
        if (!conds[i])
            continue;
        next = st_xasprintf("%s%s%s", where, *where ? " AND " : " WHERE ", conds[i]);
        free(where);
        where = next;
    }
    page = st_xasprintf("SELECT 0, %s FROM %s%s ORDER BY %s, id LIMIT ?5", spec->cols, spec->table,
                        where, order);
    if (!after)
        return st_steal_ptr(&page);
    return st_xasprintf("SELECT 1, %s FROM %s WHERE %sid = ?4 UNION ALL SELECT * FROM (%s) "
                        "ORDER BY 1 DESC, %d, 2",
                        spec->cols, spec->table, scope_and, page, order_pos);
}

static int
sqlite_table_prepare_lists(struct sqlite_table *t, const struct sqlite_table_spec *spec,
                           struct st_error *err)
{
    /* Column 0 is the marker flag, so a column's position is its index + 2. */
    int order_pos = sqlite_table_col_index(spec->cols, sqlite_table_order_col(spec)) + 2;
    char *sql;
    size_t i;
    int rc;

    if (sqlite_table_col_index(spec->cols, "id") != 0 || order_pos < 2)
        BUG("a table's columns must start with id and include its order column");
    for (i = 0; i < 4; i++) {
        sql = sqlite_table_list_sql(spec, i / 2, i % 2, order_pos);
        rc = sqlite_db_prepare(t->db, sql, &t->list[i / 2][i % 2], err);
        free(sql);
        if (rc < 0)
            return -1;
    }
    return 0;
}

struct sqlite_table *
sqlite_table_open(struct sqlite_db *db, const struct sqlite_table_spec *spec, struct st_error *err)
{
    struct sqlite_table *t = st_xcalloc(1, sizeof(*t));
    ST_AUTOFREE char *values = sqlite_table_placeholders(spec->cols);
    ST_AUTOFREE char *insert_sql =
        st_xasprintf("INSERT INTO %s (%s) VALUES (%s)", spec->table, spec->cols, values);
    ST_AUTOFREE char *get_scope = sqlite_table_scope(spec, 2, true, true);
    ST_AUTOFREE char *remove_scope = sqlite_table_scope(spec, 2, true, false);
    ST_AUTOFREE char *get_sql = st_xasprintf("SELECT 0, %s FROM %s WHERE id = ?1 AND %s",
                                             spec->cols, spec->table, get_scope);
    ST_AUTOFREE char *remove_sql = st_xasprintf(
        "DELETE FROM %s WHERE id = ?1 AND %s%s%s", spec->table, remove_scope,
        spec->remove_where ? " AND " : "", spec->remove_where ? spec->remove_where : "");
    /* A compare-and-set update reaches the rows a remove reaches: the owner's own. */
    ST_AUTOFREE char *revision_sql =
        st_xasprintf("SELECT revision FROM %s WHERE id = ?1 AND %s", spec->table, remove_scope);
    bool revised = sqlite_table_col_index(spec->cols, "revision") >= 0;

    t->db = db;
    t->noun = spec->noun;
    t->size = spec->size;
    t->read = spec->read;
    t->scratch = st_xcalloc(1, spec->size);
    if (sqlite_db_prepare(db, insert_sql, &t->insert, err) < 0 ||
        sqlite_db_prepare(db, get_sql, &t->get, err) < 0 ||
        sqlite_db_prepare(db, remove_sql, &t->remove, err) < 0 ||
        (revised && sqlite_db_prepare(db, revision_sql, &t->revision, err) < 0) ||
        sqlite_table_prepare_lists(t, spec, err) < 0) {
        sqlite_table_close(t);
        return NULL;
    }
    return t;
}

void
sqlite_table_close(struct sqlite_table *t)
{
    size_t i;

    if (!t)
        return;
    sqlite3_finalize(t->insert);
    sqlite3_finalize(t->get);
    sqlite3_finalize(t->remove);
    sqlite3_finalize(t->revision);
    for (i = 0; i < 4; i++)
        sqlite3_finalize(t->list[i / 2][i % 2]);
    free(t->scratch);
    free(t);
}

/* Fail with the connection's message for a bind that went wrong on @st. */
static int
sqlite_table_bind_fail(struct sqlite_table *t, sqlite3_stmt *st, const char *verb, const char *id,
                       struct st_error *err)
{
    sqlite_db_fail(t->db, sqlite3_errcode(sqlite_db_handle(t->db)), err, "cannot %s %s '%s'", verb,
                   t->noun, id);
    sqlite_stmt_done(st);
    return -1;
}

int
sqlite_table_write(struct sqlite_table *t, sqlite3_stmt *st, bool bind_failed, const char *verb,
                   const struct sqlite_row_ref *ref, struct st_error *err)
{
    if (bind_failed)
        return sqlite_table_bind_fail(t, st, verb, ref->id, err);
    return sqlite_db_write(t->db, st, ref, err);
}

int
sqlite_table_stale(const struct sqlite_table *t, const char *id, uint64_t expected, uint64_t stored,
                   struct st_error *err)
{
    return st_error_set(err, ST_ERR_STALE,
                        "%s '%s' changed meanwhile: revision %" PRIu64 " expected, %" PRIu64
                        " stored",
                        t->noun, id, expected, stored);
}

/* A compare-and-set write changed nothing: say why (see sqlite_table_write_cas()). */
static int
sqlite_table_cas_missed(struct sqlite_table *t, const char *owner, const char *id,
                        uint64_t expected, struct st_error *err)
{
    sqlite3_stmt *st = t->revision;
    int rc;

    if (!st)
        BUG("a compare-and-set write on a table without revisions");
    rc = sqlite_bind_text(st, 1, id);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_text(st, 2, owner);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        sqlite_table_stale(t, id, expected, (uint64_t)sqlite3_column_int64(st, 0), err);
    else if (rc == SQLITE_DONE)
        st_error_set(err, ST_ERR_NOT_FOUND, "no %s '%s'", t->noun, id);
    else
        sqlite_db_fail(t->db, rc, err, "cannot read the revision of %s '%s'", t->noun, id);
    sqlite_stmt_done(st);
    return -1;
}

int
sqlite_table_write_cas(struct sqlite_table *t, sqlite3_stmt *st, bool bind_failed, const char *verb,
                       const char *owner, uint64_t expected, const struct sqlite_row_ref *ref,
                       struct st_error *err)
{
    int changed;

    if (bind_failed)
        return sqlite_table_bind_fail(t, st, verb, ref->id, err);
    if (sqlite_db_begin(t->db, err) < 0) {
        sqlite_stmt_done(st);
        return -1;
    }
    changed = sqlite_db_write_step(t->db, st, ref, err);
    if (changed == 0)
        sqlite_table_cas_missed(t, owner, ref->id, expected, err);
    if (changed <= 0) {
        sqlite_db_rollback(t->db);
        return -1;
    }
    return sqlite_db_commit(t->db, err);
}

int
sqlite_table_get(struct sqlite_table *t, const char *owner, const char *id, void *item,
                 struct st_error *err)
{
    if (sqlite_bind_text(t->get, 1, id) || sqlite_bind_text(t->get, 2, owner))
        return sqlite_table_bind_fail(t, t->get, "read", id, err);
    if (sqlite_db_get(t->db, t->get, t->noun, id, t->read, t->scratch, err) < 0)
        return -1;
    memcpy(item, t->scratch, t->size);
    return 0;
}

int
sqlite_table_list(struct sqlite_table *t, const char *owner, const char *marker, unsigned limit,
                  int (*bind)(sqlite3_stmt *st, const void *filter), const void *filter,
                  struct sqlite_page *out, struct st_error *err)
{
    sqlite3_stmt *st = t->list[owner != NULL][marker && *marker];

    if (sqlite_bind_text(st, 1, owner) || (bind && bind(st, filter)) ||
        sqlite_bind_opt_text(st, 4, marker)) {
        sqlite_db_fail(t->db, sqlite3_errcode(sqlite_db_handle(t->db)), err, "cannot list %ss",
                       t->noun);
        sqlite_stmt_done(st);
        return -1;
    }
    return sqlite_db_list(t->db, st, t->noun, marker, limit, t->size, t->read, out, err);
}

int
sqlite_table_remove(struct sqlite_table *t, const char *owner, const char *id, struct st_error *err)
{
    struct sqlite_row_ref ref = {.noun = t->noun, .id = id, .name = NULL, .name_is = NULL};

    if (sqlite_bind_text(t->remove, 1, id) || sqlite_bind_text(t->remove, 2, owner))
        return sqlite_table_bind_fail(t, t->remove, "remove", id, err);
    return sqlite_db_write(t->db, t->remove, &ref, err);
}
