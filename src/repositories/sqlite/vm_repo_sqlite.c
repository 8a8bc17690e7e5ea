#include "repositories/sqlite/sqlite_db.h"

#include <stdlib.h>
#include <string.h>

#include "repositories/sqlite/sqlite_internal.h"
#include "util/mem.h"

/* Column 0 of every SELECT is the marker flag sqlite_db_list() expects. */
#define VM_COLS                                                                                    \
    "id, owner_id, name, status, step, vcpus, memory_mib, disk_gib, image_id, flavor_id, "         \
    "fault, created_at, updated_at"
#define VM_SCOPE "(?2 IS NULL OR owner_id = ?2)"
/* List parameters: ?1 owner, ?2 name, ?3 status, ?4 marker, ?5 limit + 1. */
#define VM_FILTER "(?2 IS NULL OR name = ?2) AND (?3 IS NULL OR status = ?3)"
#define VM_PAGE "ORDER BY created_at, id LIMIT ?5"
/*
 * After a marker: the marker row itself (flag 1, so a marker naming no row
 * in scope is noticed in the same query), then the page.  Ordered again
 * outside because a compound's row order is otherwise unspecified; in the
 * outer ORDER BY, 13 is created_at and 2 is id.
 */
#define VM_AFTER(scope_and)                                                                        \
    "SELECT 1, " VM_COLS " FROM vms WHERE " scope_and "id = ?4 "                                   \
    "UNION ALL SELECT * FROM (SELECT 0, " VM_COLS " FROM vms WHERE " scope_and VM_FILTER           \
    " AND (created_at, id) > (SELECT created_at, id FROM vms WHERE " scope_and "id = ?4) " VM_PAGE \
    ") ORDER BY 1 DESC, 13, 2"

static const char *const vm_sql_list[2][2] = {
    /* [scoped][after a marker] */
    {"SELECT 0, " VM_COLS " FROM vms WHERE " VM_FILTER " " VM_PAGE, VM_AFTER("")},
    {"SELECT 0, " VM_COLS " FROM vms WHERE owner_id = ?1 AND " VM_FILTER " " VM_PAGE,
     VM_AFTER("owner_id = ?1 AND ")},
};

struct vm_sqlite {
    struct sqlite_db *db;
    sqlite3_stmt *insert;
    sqlite3_stmt *get;
    sqlite3_stmt *update;
    sqlite3_stmt *remove;
    sqlite3_stmt *count;
    sqlite3_stmt *list[2][2];
};

/* vm.h has no vm_step_parse(); the names come from vm_step_name() alone. */
static int
vm_sqlite_step_parse(const char *name, enum vm_step *out)
{
    int step;

    for (step = VM_STEP_ROW; step <= VM_STEP_DONE; step++) {
        if (strcmp(vm_step_name((enum vm_step)step), name) == 0) {
            *out = (enum vm_step)step;
            return 0;
        }
    }
    return -1;
}

static int
vm_sqlite_read(sqlite3_stmt *st, void *item, struct st_error *err)
{
    struct vm *vm = item;
    char status[32];
    char step[32];

    memset(vm, 0, sizeof(*vm));
    sqlite_column_text(st, 1, vm->id, sizeof(vm->id));
    sqlite_column_text(st, 2, vm->owner_id, sizeof(vm->owner_id));
    sqlite_column_text(st, 3, vm->name, sizeof(vm->name));
    sqlite_column_text(st, 4, status, sizeof(status));
    sqlite_column_text(st, 5, step, sizeof(step));
    vm->vcpus = (unsigned)sqlite3_column_int64(st, 6);
    vm->memory_mib = (unsigned)sqlite3_column_int64(st, 7);
    vm->disk_gib = (unsigned)sqlite3_column_int64(st, 8);
    sqlite_column_text(st, 9, vm->image_id, sizeof(vm->image_id));
    sqlite_column_text(st, 10, vm->flavor_id, sizeof(vm->flavor_id));
    sqlite_column_text(st, 11, vm->fault, sizeof(vm->fault));
    vm->created_at = sqlite3_column_int64(st, 12);
    vm->updated_at = sqlite3_column_int64(st, 13);
    if (vm_status_parse(status, &vm->status) < 0)
        return st_error_set(err, ST_ERR_BACKEND, "VM '%s' has an unknown status '%s' stored",
                            vm->id, status);
    if (vm_sqlite_step_parse(step, &vm->step) < 0)
        return st_error_set(err, ST_ERR_BACKEND, "VM '%s' has an unknown step '%s' stored", vm->id,
                            step);
    return 0;
}

static int
vm_sqlite_insert(void *self, const struct vm *vm, struct st_error *err)
{
    struct vm_sqlite *r = self;
    struct sqlite_row_ref ref = {.noun = "VM", .id = vm->id, .name = vm->name};
    sqlite3_stmt *st = r->insert;

    if (sqlite_bind_text(st, 1, vm->id) || sqlite_bind_text(st, 2, vm->owner_id) ||
        sqlite_bind_text(st, 3, vm->name) || sqlite_bind_text(st, 4, vm_status_name(vm->status)) ||
        sqlite_bind_text(st, 5, vm_step_name(vm->step)) || sqlite3_bind_int64(st, 6, vm->vcpus) ||
        sqlite3_bind_int64(st, 7, vm->memory_mib) || sqlite3_bind_int64(st, 8, vm->disk_gib) ||
        sqlite_bind_text(st, 9, vm->image_id) || sqlite_bind_opt_text(st, 10, vm->flavor_id) ||
        sqlite_bind_opt_text(st, 11, vm->fault) || sqlite3_bind_int64(st, 12, vm->created_at) ||
        sqlite3_bind_int64(st, 13, vm->updated_at)) {
        sqlite_db_fail(r->db, sqlite3_errcode(sqlite_db_handle(r->db)), err,
                       "cannot insert VM '%s'", vm->id);
        sqlite_stmt_done(st);
        return -1;
    }
    return sqlite_db_write(r->db, st, &ref, err);
}

static int
vm_sqlite_get(void *self, const char *owner, const char *id, struct vm *out, struct st_error *err)
{
    struct vm_sqlite *r = self;
    struct vm vm;

    if (sqlite_bind_text(r->get, 1, id) || sqlite_bind_text(r->get, 2, owner)) {
        sqlite_db_fail(r->db, sqlite3_errcode(sqlite_db_handle(r->db)), err, "cannot read VM '%s'",
                       id);
        sqlite_stmt_done(r->get);
        return -1;
    }
    if (sqlite_db_get(r->db, r->get, "VM", id, vm_sqlite_read, &vm, err) < 0)
        return -1;
    *out = vm;
    return 0;
}

static int
vm_sqlite_list(void *self, const char *owner, const struct vm_filter *f, struct vm_list *out,
               struct st_error *err)
{
    struct vm_sqlite *r = self;
    sqlite3_stmt *st = r->list[owner != NULL][f->marker[0] != '\0'];
    struct sqlite_page page;

    if (sqlite_bind_text(st, 1, owner) || sqlite_bind_opt_text(st, 2, f->name) ||
        sqlite_bind_text(st, 3, f->has_status ? vm_status_name(f->status) : NULL) ||
        sqlite_bind_opt_text(st, 4, f->marker)) {
        sqlite_db_fail(r->db, sqlite3_errcode(sqlite_db_handle(r->db)), err, "cannot list VMs");
        sqlite_stmt_done(st);
        return -1;
    }
    if (sqlite_db_list(r->db, st, "VM", f->marker, f->limit, sizeof(struct vm), vm_sqlite_read,
                       &page, err) < 0)
        return -1;
    out->items = page.items;
    out->count = page.count;
    out->more = page.more;
    out->next_marker[0] = '\0';
    if (page.more)
        st_strlcpy(out->next_marker, out->items[out->count - 1].id, sizeof(out->next_marker));
    return 0;
}

static int
vm_sqlite_update(void *self, const char *owner, const struct vm *vm, struct st_error *err)
{
    struct vm_sqlite *r = self;
    struct sqlite_row_ref ref = {.noun = "VM", .id = vm->id, .name = vm->name};
    sqlite3_stmt *st = r->update;

    if (sqlite_bind_text(st, 1, vm->id) || sqlite_bind_text(st, 2, owner) ||
        sqlite_bind_text(st, 3, vm->name) || sqlite_bind_text(st, 4, vm_status_name(vm->status)) ||
        sqlite_bind_text(st, 5, vm_step_name(vm->step)) || sqlite3_bind_int64(st, 6, vm->vcpus) ||
        sqlite3_bind_int64(st, 7, vm->memory_mib) || sqlite3_bind_int64(st, 8, vm->disk_gib) ||
        sqlite_bind_opt_text(st, 9, vm->fault) || sqlite3_bind_int64(st, 10, vm->updated_at) ||
        sqlite_bind_opt_text(st, 11, vm->flavor_id)) {
        sqlite_db_fail(r->db, sqlite3_errcode(sqlite_db_handle(r->db)), err,
                       "cannot update VM '%s'", vm->id);
        sqlite_stmt_done(st);
        return -1;
    }
    return sqlite_db_write(r->db, st, &ref, err);
}

static int
vm_sqlite_remove(void *self, const char *owner, const char *id, struct st_error *err)
{
    struct vm_sqlite *r = self;
    struct sqlite_row_ref ref = {.noun = "VM", .id = id, .name = NULL};

    if (sqlite_bind_text(r->remove, 1, id) || sqlite_bind_text(r->remove, 2, owner)) {
        sqlite_db_fail(r->db, sqlite3_errcode(sqlite_db_handle(r->db)), err,
                       "cannot remove VM '%s'", id);
        sqlite_stmt_done(r->remove);
        return -1;
    }
    return sqlite_db_write(r->db, r->remove, &ref, err);
}

static int
vm_sqlite_count_by_image(void *self, const char *owner, const char *image_id, size_t *out,
                         struct st_error *err)
{
    struct vm_sqlite *r = self;
    sqlite3_stmt *st = r->count;
    int rc = sqlite_bind_text(st, 1, image_id);

    if (rc == SQLITE_OK)
        rc = sqlite_bind_text(st, 2, owner);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite_db_fail(r->db, rc, err, "cannot count the VMs built on image '%s'", image_id);
        sqlite_stmt_done(st);
        return -1;
    }
    *out = (size_t)sqlite3_column_int64(st, 0);
    sqlite_stmt_done(st);
    return 0;
}

static void
vm_sqlite_close(void *self)
{
    struct vm_sqlite *r = self;
    size_t i;

    if (!r)
        return;
    sqlite3_finalize(r->insert);
    sqlite3_finalize(r->get);
    sqlite3_finalize(r->update);
    sqlite3_finalize(r->remove);
    sqlite3_finalize(r->count);
    for (i = 0; i < 4; i++)
        sqlite3_finalize(r->list[i / 2][i % 2]);
    free(r);
}

static const struct vm_repo_ops vm_sqlite_ops = {
    .insert = vm_sqlite_insert,
    .get = vm_sqlite_get,
    .list = vm_sqlite_list,
    .update = vm_sqlite_update,
    .remove = vm_sqlite_remove,
    .count_by_image = vm_sqlite_count_by_image,
    .close = vm_sqlite_close,
};

int
vm_repo_sqlite_open(struct sqlite_db *db, struct vm_repo *out, struct st_error *err)
{
    struct vm_sqlite *r = st_xcalloc(1, sizeof(*r));
    size_t i;

    r->db = db;
    if (sqlite_db_prepare(db,
                          "INSERT INTO vms (" VM_COLS
                          ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                          &r->insert, err) < 0 ||
        sqlite_db_prepare(db, "SELECT 0, " VM_COLS " FROM vms WHERE id = ?1 AND " VM_SCOPE, &r->get,
                          err) < 0 ||
        sqlite_db_prepare(
            db,
            "UPDATE vms SET name = ?3, status = ?4, step = ?5, vcpus = ?6, memory_mib = ?7, disk_gib = ?8, fault = ?9, updated_at = ?10, flavor_id = ?11 WHERE id = ?1 AND " VM_SCOPE,
            &r->update, err) < 0 ||
        sqlite_db_prepare(db, "DELETE FROM vms WHERE id = ?1 AND " VM_SCOPE, &r->remove, err) < 0 ||
        sqlite_db_prepare(db, "SELECT count(*) FROM vms WHERE image_id = ?1 AND " VM_SCOPE,
                          &r->count, err) < 0)
        goto fail;
    for (i = 0; i < 4; i++)
        if (sqlite_db_prepare(db, vm_sql_list[i / 2][i % 2], &r->list[i / 2][i % 2], err) < 0)
            goto fail;
    out->ops = &vm_sqlite_ops;
    out->self = r;
    return 0;

fail:
    st_error_prefix(err, "cannot open the VM repository");
    vm_sqlite_close(r);
    return -1;
}
