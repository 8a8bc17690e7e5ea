#include "repositories/sqlite/sqlite_db.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "repositories/sqlite/sqlite_internal.h"
#include "util/mem.h"

struct vm_sqlite {
    struct sqlite_table *t;
    sqlite3_stmt *update;
    sqlite3_stmt *count;
    sqlite3_stmt *usage;
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
    vm->revision = (uint64_t)sqlite3_column_int64(st, 14);
    if (vm_status_parse(status, &vm->status) < 0)
        return st_error_set(err, ST_ERR_BACKEND, "VM '%s' has an unknown status '%s' stored",
                            vm->id, status);
    if (vm_sqlite_step_parse(step, &vm->step) < 0)
        return st_error_set(err, ST_ERR_BACKEND, "VM '%s' has an unknown step '%s' stored", vm->id,
                            step);
    return 0;
}

static const struct sqlite_table_spec vm_sqlite_table = {
    .table = "vms",
    .noun = "VM",
    .cols = "id, owner_id, name, status, step, vcpus, memory_mib, disk_gib, image_id, flavor_id, "
            "fault, created_at, updated_at, revision",
    .size = sizeof(struct vm),
    .read = vm_sqlite_read,
    /* ?2 name, ?3 status: bound by vm_sqlite_bind_filter(). */
    .list_where = "(?2 IS NULL OR name = ?2) AND (?3 IS NULL OR status = ?3)",
    .remove_where = NULL,
    .owner_col = "owner_id",
    .unowned = false,
    .shared_where = NULL,
};

/* @vm as the parameters of the table's insert; true when a bind failed. */
static bool
vm_sqlite_bind_insert(sqlite3_stmt *st, const struct vm *vm)
{
    return sqlite_bind_text(st, 1, vm->id) || sqlite_bind_text(st, 2, vm->owner_id) ||
           sqlite_bind_text(st, 3, vm->name) ||
           sqlite_bind_text(st, 4, vm_status_name(vm->status)) ||
           sqlite_bind_text(st, 5, vm_step_name(vm->step)) ||
           sqlite3_bind_int64(st, 6, vm->vcpus) || sqlite3_bind_int64(st, 7, vm->memory_mib) ||
           sqlite3_bind_int64(st, 8, vm->disk_gib) || sqlite_bind_text(st, 9, vm->image_id) ||
           sqlite_bind_opt_text(st, 10, vm->flavor_id) || sqlite_bind_opt_text(st, 11, vm->fault) ||
           sqlite3_bind_int64(st, 12, vm->created_at) ||
           sqlite3_bind_int64(st, 13, vm->updated_at) || sqlite_bind_revision(st, 14, vm->revision);
}

static int
vm_sqlite_insert(void *self, const struct vm *vm, struct st_error *err)
{
    struct vm_sqlite *r = self;
    struct sqlite_row_ref ref = {.noun = "VM", .id = vm->id, .name = vm->name, .name_is = NULL};
    sqlite3_stmt *st = r->t->insert;

    return sqlite_table_write(r->t, st, vm_sqlite_bind_insert(st, vm), "insert", &ref, err);
}

static int
vm_sqlite_get(void *self, const char *owner, const char *id, struct vm *out, struct st_error *err)
{
    struct vm_sqlite *r = self;

    return sqlite_table_get(r->t, owner, id, out, err);
}

/* The list_where parameters of vm_sqlite_table, from a struct vm_filter. */
static int
vm_sqlite_bind_filter(sqlite3_stmt *st, const void *filter)
{
    const struct vm_filter *f = filter;

    return sqlite_bind_opt_text(st, 2, f->name) ||
           sqlite_bind_text(st, 3, f->has_status ? vm_status_name(f->status) : NULL);
}

static int
vm_sqlite_list(void *self, const char *owner, const struct vm_filter *f, struct vm_list *out,
               struct st_error *err)
{
    struct vm_sqlite *r = self;
    struct sqlite_page page;

    if (sqlite_table_list(r->t, owner, f->marker, f->limit, vm_sqlite_bind_filter, f, &page, err) <
        0)
        return -1;
    out->items = page.items;
    out->count = page.count;
    out->more = page.more;
    out->next_marker[0] = '\0';
    if (page.more)
        st_strlcpy(out->next_marker, out->items[out->count - 1].id, sizeof(out->next_marker));
    return 0;
}

/*
 * Bind the compare-and-set update statement for @vm within @owner's scope
 * (?12 is the revision it read); non-zero when a bind failed.
 */
static bool
vm_sqlite_bind_update(sqlite3_stmt *st, const char *owner, const struct vm *vm)
{
    return sqlite_bind_text(st, 1, vm->id) || sqlite_bind_text(st, 2, owner) ||
           sqlite_bind_text(st, 3, vm->name) ||
           sqlite_bind_text(st, 4, vm_status_name(vm->status)) ||
           sqlite_bind_text(st, 5, vm_step_name(vm->step)) ||
           sqlite3_bind_int64(st, 6, vm->vcpus) || sqlite3_bind_int64(st, 7, vm->memory_mib) ||
           sqlite3_bind_int64(st, 8, vm->disk_gib) || sqlite_bind_opt_text(st, 9, vm->fault) ||
           sqlite3_bind_int64(st, 10, vm->updated_at) ||
           sqlite_bind_opt_text(st, 11, vm->flavor_id) ||
           sqlite3_bind_int64(st, 12, (sqlite3_int64)vm->revision);
}

static int
vm_sqlite_update(void *self, const char *owner, const struct vm *vm, struct st_error *err)
{
    struct vm_sqlite *r = self;
    struct sqlite_row_ref ref = {.noun = "VM", .id = vm->id, .name = vm->name, .name_is = NULL};

    return sqlite_table_write_cas(r->t, r->update, vm_sqlite_bind_update(r->update, owner, vm),
                                  "update", owner, vm->revision, &ref, err);
}

static int
vm_sqlite_remove(void *self, const char *owner, const char *id, struct st_error *err)
{
    struct vm_sqlite *r = self;

    return sqlite_table_remove(r->t, owner, id, err);
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
        sqlite_db_fail(r->t->db, rc, err, "cannot count the VMs built on image '%s'", image_id);
        sqlite_stmt_done(st);
        return -1;
    }
    *out = (size_t)sqlite3_column_int64(st, 0);
    sqlite_stmt_done(st);
    return 0;
}

/* What the rows of @owner add up to; inside the caller's transaction, if any. */
static int
vm_sqlite_read_usage(struct vm_sqlite *r, const char *owner, struct quota_usage *out,
                     struct st_error *err)
{
    sqlite3_stmt *st = r->usage;
    int rc = sqlite_bind_text(st, 1, owner);

    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite_db_fail(r->t->db, rc, err, "cannot add up the VMs of owner '%s'", owner);
        sqlite_stmt_done(st);
        return -1;
    }
    out->vms = (uint64_t)sqlite3_column_int64(st, 0);
    out->vcpus = (uint64_t)sqlite3_column_int64(st, 1);
    out->memory_mib = (uint64_t)sqlite3_column_int64(st, 2);
    out->disk_gib = (uint64_t)sqlite3_column_int64(st, 3);
    sqlite_stmt_done(st);
    return 0;
}

static int
vm_sqlite_usage(void *self, const char *owner, struct quota_usage *out, struct st_error *err)
{
    if (!owner)
        return st_error_set(err, ST_ERR_INVALID, "quota usage is counted per owner: none given");
    return vm_sqlite_read_usage(self, owner, out, err);
}

/*
 * The usage is read and the row inserted under one write lock (BEGIN
 * IMMEDIATE): no other connection can insert between the check and the
 * insert, so concurrent creates queue up and the last ones are refused.
 * The rule itself is quota_allows()'s alone.
 */
static int
vm_sqlite_insert_within_quota(void *self, const struct vm *vm, const struct quota *limits,
                              struct quota_violation *v, struct st_error *err)
{
    struct vm_sqlite *r = self;
    struct sqlite_row_ref ref = {.noun = "VM", .id = vm->id, .name = vm->name, .name_is = NULL};
    sqlite3_stmt *st = r->t->insert;
    struct quota_violation broken;
    struct quota_usage usage;

    if (sqlite_db_begin(r->t->db, err) < 0)
        return -1;
    if (vm_sqlite_read_usage(r, vm->owner_id, &usage, err) < 0)
        goto fail;
    if (!quota_allows(limits, &usage, vm->vcpus, vm->memory_mib, vm->disk_gib, &broken)) {
        st_error_set(err, ST_ERR_FORBIDDEN,
                     "quota %s exceeded: limit %" PRId64 ", in use %" PRIu64 ", requested %" PRIu64,
                     broken.quota, broken.limit, broken.in_use, broken.requested);
        *v = broken;
        goto fail;
    }
    if (vm_sqlite_bind_insert(st, vm)) {
        sqlite_db_fail(r->t->db, sqlite3_errcode(sqlite_db_handle(r->t->db)), err,
                       "cannot insert VM '%s'", vm->id);
        sqlite_stmt_done(st);
        goto fail;
    }
    if (sqlite_db_write_step(r->t->db, st, &ref, err) < 0)
        goto fail;
    if (sqlite_db_commit(r->t->db, err) < 0)
        return -1;
    *v = broken;
    return 0;

fail:
    sqlite_db_rollback(r->t->db);
    return -1;
}

/*
 * As the insert: under one write lock, the row must still be at the
 * revision the caller read, and the owner's use without this row's old
 * sizes plus its new ones must stay within @limits.
 */
static int
vm_sqlite_update_within_quota(void *self, const char *owner, const struct vm *vm,
                              const struct quota *limits, struct quota_violation *v,
                              struct st_error *err)
{
    struct vm_sqlite *r = self;
    struct sqlite_row_ref ref = {.noun = "VM", .id = vm->id, .name = vm->name, .name_is = NULL};
    struct quota_violation broken;
    struct quota_usage usage;
    struct vm old;
    int changed;

    if (sqlite_db_begin(r->t->db, err) < 0)
        return -1;
    if (sqlite_table_get(r->t, owner, vm->id, &old, err) < 0)
        goto fail;
    if (old.revision != vm->revision) {
        sqlite_table_stale(r->t, vm->id, vm->revision, old.revision, err);
        goto fail;
    }
    if (vm_sqlite_read_usage(r, old.owner_id, &usage, err) < 0)
        goto fail;
    /* The row is counted once: take its old sizes out, quota_allows() adds the new ones. */
    usage.vms -= 1;
    usage.vcpus -= old.vcpus;
    usage.memory_mib -= old.memory_mib;
    usage.disk_gib -= old.disk_gib;
    if (!quota_allows(limits, &usage, vm->vcpus, vm->memory_mib, vm->disk_gib, &broken)) {
        st_error_set(err, ST_ERR_FORBIDDEN,
                     "quota %s exceeded: limit %" PRId64 ", in use %" PRIu64 ", requested %" PRIu64,
                     broken.quota, broken.limit, broken.in_use, broken.requested);
        *v = broken;
        goto fail;
    }
    if (vm_sqlite_bind_update(r->update, owner, vm)) {
        sqlite_db_fail(r->t->db, sqlite3_errcode(sqlite_db_handle(r->t->db)), err,
                       "cannot update VM '%s'", vm->id);
        sqlite_stmt_done(r->update);
        goto fail;
    }
    changed = sqlite_db_write_step(r->t->db, r->update, &ref, err);
    if (changed < 0)
        goto fail;
    if (changed == 0) {
        st_error_set(err, ST_ERR_NOT_FOUND, "no VM '%s'", vm->id);
        goto fail;
    }
    if (sqlite_db_commit(r->t->db, err) < 0)
        return -1;
    *v = broken;
    return 0;

fail:
    sqlite_db_rollback(r->t->db);
    return -1;
}

static void
vm_sqlite_close(void *self)
{
    struct vm_sqlite *r = self;

    if (!r)
        return;
    sqlite3_finalize(r->update);
    sqlite3_finalize(r->count);
    sqlite3_finalize(r->usage);
    sqlite_table_close(r->t);
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
    .insert_within_quota = vm_sqlite_insert_within_quota,
    .usage = vm_sqlite_usage,
    .update_within_quota = vm_sqlite_update_within_quota,
};

int
vm_repo_sqlite_open(struct sqlite_db *db, struct vm_repo *out, struct st_error *err)
{
    struct vm_sqlite *r = st_xcalloc(1, sizeof(*r));

    r->t = sqlite_table_open(db, &vm_sqlite_table, err);
    if (!r->t ||
        sqlite_db_prepare(
            db,
            "UPDATE vms SET name = ?3, status = ?4, step = ?5, vcpus = ?6, memory_mib = ?7, disk_gib = ?8, fault = ?9, updated_at = ?10, flavor_id = ?11, revision = revision + 1 WHERE id = ?1 AND revision = ?12 AND " SQLITE_TABLE_SCOPE,
            &r->update, err) < 0 ||
        sqlite_db_prepare(db,
                          "SELECT count(*) FROM vms WHERE image_id = ?1 AND " SQLITE_TABLE_SCOPE,
                          &r->count, err) < 0 ||
        /* owner_id = ?1, not the NULL-tolerant scope: that keeps vms_owner_page in use. */
        sqlite_db_prepare(db,
                          "SELECT count(*), coalesce(sum(vcpus), 0), coalesce(sum(memory_mib), 0), "
                          "coalesce(sum(disk_gib), 0) FROM vms WHERE owner_id = ?1",
                          &r->usage, err) < 0)
        goto fail;
    out->ops = &vm_sqlite_ops;
    out->self = r;
    return 0;

fail:
    st_error_prefix(err, "cannot open the VM repository");
    vm_sqlite_close(r);
    return -1;
}
