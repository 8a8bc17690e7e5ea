/*
 * vm_repo_pg.c - VM rows in PostgreSQL, as vm_repo_sqlite.c keeps them.
 *
 * SQLite makes a read-decide-write safe by BEGIN IMMEDIATE, which lets one
 * writer in at a time.  Here each such transaction (READ COMMITTED) takes
 * the advisory locks naming what it decides on, and reads only after it
 * holds them, so that it sees every row the previous holder committed:
 *   "quota:<owner>"  the quota checks of one owner's inserts and updates;
 *   "image:<id>"     every insert of a VM built on the image, against the
 *                    image's remove (image_repo_pg.c).
 * Locks are always taken in that order, and the image remove takes only
 * its own, so no two of these transactions wait for each other in a circle.
 */
#include "repositories/postgres/pg_db.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "repositories/postgres/pg_internal.h"
#include "util/mem.h"

struct vm_pg {
    struct pg_db *db; /* borrowed */
};

/* In the order vm_pg_read() reads them after the marker flag, and the insert takes them. */
#define VM_PG_COLS                                                                                 \
    "id, owner_id, name, status, step, vcpus, memory_mib, disk_gib, image_id, flavor_id, fault, "  \
    "created_at, updated_at, revision"

/* The list filters on parameters $@n (name) and $@s (status), each NULL for any. */
#define VM_PG_FILTER(n, s)                                                                         \
    "($" #n "::text IS NULL OR name = $" #n ") AND ($" #s "::text IS NULL OR status = $" #s ")"

/* The first page of the rows that meet @cond, at most $@l of them. */
#define VM_PG_PAGE(cond, l)                                                                        \
    "SELECT false, " VM_PG_COLS " FROM vms WHERE " cond " ORDER BY created_at, id LIMIT $" #l

/*
 * The page after the marker $@m among the rows of @scope ("" or
 * "<cond> AND ") that meet @cond (the scope and the filters), at most $@l
 * of them, preceded by the marker row itself (flag true, whether or not it
 * passes the filters): pg_db_list() learns from the same query whether the
 * marker names a row in scope.
 */
#define VM_PG_AFTER(scope, cond, m, l)                                                             \
    "SELECT true, " VM_PG_COLS " FROM vms WHERE " scope "id = $" #m " UNION ALL "                  \
    "(SELECT false, " VM_PG_COLS " FROM vms WHERE " cond " AND (created_at, id) > "                \
    "(SELECT created_at, id FROM vms WHERE " scope "id = $" #m ") "                                \
    "ORDER BY created_at, id LIMIT $" #l ") ORDER BY 1 DESC, created_at, id"

static const struct pg_stmt vm_pg_insert_stmt = {
    "vm_insert",
    "INSERT INTO vms (" VM_PG_COLS ") "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
};

/* $1 id, $2 owner or NULL. */
static const struct pg_stmt vm_pg_get_stmt = {
    "vm_get",
    "SELECT false, " VM_PG_COLS " FROM vms WHERE id = $1 AND ($2::text IS NULL OR owner_id = $2)",
};

/* As vm_get, locking the row against other writers until the transaction ends. */
static const struct pg_stmt vm_pg_get_for_update_stmt = {
    "vm_get_for_update",
    "SELECT false, " VM_PG_COLS " FROM vms WHERE id = $1 AND ($2::text IS NULL OR owner_id = $2) "
    "FOR UPDATE",
};

static const struct pg_stmt vm_pg_update_stmt = {
    "vm_update",
    "UPDATE vms SET name = $3, status = $4, step = $5, vcpus = $6, memory_mib = $7, "
    "disk_gib = $8, fault = $9, updated_at = $10, flavor_id = $11, revision = revision + 1 "
    "WHERE id = $1 AND revision = $12 AND ($2::text IS NULL OR owner_id = $2)",
};

/* Why vm_update changed nothing: $1 id, $2 owner or NULL, as there. */
static const struct pg_stmt vm_pg_revision_stmt = {
    "vm_revision",
    "SELECT revision FROM vms WHERE id = $1 AND ($2::text IS NULL OR owner_id = $2)",
};

static const struct pg_stmt vm_pg_remove_stmt = {
    "vm_remove",
    "DELETE FROM vms WHERE id = $1 AND ($2::text IS NULL OR owner_id = $2)",
};

static const struct pg_stmt vm_pg_count_stmt = {
    "vm_count_by_image",
    "SELECT count(*) FROM vms WHERE image_id = $1 AND ($2::text IS NULL OR owner_id = $2)",
};

/* owner_id = $1, not the NULL-tolerant scope: that keeps vms_owner_page in use. */
static const struct pg_stmt vm_pg_usage_stmt = {
    "vm_usage",
    "SELECT count(*), coalesce(sum(vcpus), 0), coalesce(sum(memory_mib), 0), "
    "coalesce(sum(disk_gib), 0) FROM vms WHERE owner_id = $1",
};

/*
 * [scoped][after a marker]: one statement each, as on SQLite, so that each
 * pages along its own index.  Parameters, in this order, of those present:
 * owner, name, status, marker, limit.
 */
static const struct pg_stmt vm_pg_list_stmts[2][2] = {
    {
        {"vm_list", VM_PG_PAGE(VM_PG_FILTER(1, 2), 3)},
        {"vm_list_after", VM_PG_AFTER("", VM_PG_FILTER(1, 2), 3, 4)},
    },
    {
        {"vm_list_owner", VM_PG_PAGE("owner_id = $1 AND " VM_PG_FILTER(2, 3), 4)},
        {"vm_list_owner_after",
         VM_PG_AFTER("owner_id = $1 AND ", "owner_id = $1 AND " VM_PG_FILTER(2, 3), 4, 5)},
    },
};

/* vm.h has no vm_step_parse(); the names come from vm_step_name() alone. */
static int
vm_pg_step_parse(const char *name, enum vm_step *out)
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
vm_pg_read(const PGresult *res, int row, void *item, struct st_error *err)
{
    struct vm *vm = item;
    char status[32];
    char step[32];

    memset(vm, 0, sizeof(*vm));
    pg_get_text(res, row, 1, vm->id, sizeof(vm->id));
    pg_get_text(res, row, 2, vm->owner_id, sizeof(vm->owner_id));
    pg_get_text(res, row, 3, vm->name, sizeof(vm->name));
    pg_get_text(res, row, 4, status, sizeof(status));
    pg_get_text(res, row, 5, step, sizeof(step));
    vm->vcpus = (unsigned)pg_get_int(res, row, 6);
    vm->memory_mib = (unsigned)pg_get_int(res, row, 7);
    vm->disk_gib = (unsigned)pg_get_int(res, row, 8);
    pg_get_text(res, row, 9, vm->image_id, sizeof(vm->image_id));
    pg_get_text(res, row, 10, vm->flavor_id, sizeof(vm->flavor_id));
    pg_get_text(res, row, 11, vm->fault, sizeof(vm->fault));
    vm->created_at = pg_get_int(res, row, 12);
    vm->updated_at = pg_get_int(res, row, 13);
    vm->revision = (uint64_t)pg_get_int(res, row, 14);
    if (vm_status_parse(status, &vm->status) < 0)
        return st_error_set(err, ST_ERR_BACKEND, "VM '%s' has an unknown status '%s' stored",
                            vm->id, status);
    if (vm_pg_step_parse(step, &vm->step) < 0)
        return st_error_set(err, ST_ERR_BACKEND, "VM '%s' has an unknown step '%s' stored", vm->id,
                            step);
    return 0;
}

/* Take the transaction's advisory lock "<what>:<id>". */
static int
vm_pg_lock(struct vm_pg *r, const char *what, const char *id, struct st_error *err)
{
    char key[32 + ST_ID_BUF];

    snprintf(key, sizeof(key), "%s:%s", what, id);
    return pg_db_lock(r->db, key, err);
}

/*
 * Insert @vm in the caller's transaction, after taking the lock of the
 * image it is built on (see image_repo_pg.c).  Like SQLite's insert, it
 * does not look whether the image exists: that is the service's to ask.
 */
static int
vm_pg_insert_row(struct vm_pg *r, const struct vm *vm, struct st_error *err)
{
    struct pg_row_ref ref = {.noun = "VM", .id = vm->id, .name = vm->name, .name_is = NULL};
    struct pg_params p;

    if (vm_pg_lock(r, "image", vm->image_id, err) < 0)
        return -1;
    pg_params_init(&p);
    pg_param_text(&p, vm->id);
    pg_param_text(&p, vm->owner_id);
    pg_param_text(&p, vm->name);
    pg_param_text(&p, vm_status_name(vm->status));
    pg_param_text(&p, vm_step_name(vm->step));
    pg_param_int(&p, vm->vcpus);
    pg_param_int(&p, vm->memory_mib);
    pg_param_int(&p, vm->disk_gib);
    pg_param_text(&p, vm->image_id);
    pg_param_opt_text(&p, vm->flavor_id);
    pg_param_opt_text(&p, vm->fault);
    pg_param_int(&p, vm->created_at);
    pg_param_int(&p, vm->updated_at);
    pg_param_revision(&p, vm->revision);
    return pg_db_write_one(r->db, &vm_pg_insert_stmt, &p, &ref, err) < 0 ? -1 : 0;
}

static int
vm_pg_insert(void *self, const struct vm *vm, struct st_error *err)
{
    struct vm_pg *r = self;

    if (pg_db_begin(r->db, err) < 0)
        return -1;
    if (vm_pg_insert_row(r, vm, err) < 0) {
        pg_db_rollback(r->db);
        return -1;
    }
    return pg_db_commit(r->db, err);
}

/* Read the row @id within @owner's scope with @st into *out, written only on success. */
static int
vm_pg_get_with(struct vm_pg *r, const struct pg_stmt *st, const char *owner, const char *id,
               struct vm *out, struct st_error *err)
{
    struct pg_params p;
    struct vm vm;

    pg_params_init(&p);
    pg_param_text(&p, id);
    pg_param_text(&p, owner);
    if (pg_db_get(r->db, st, &p, "VM", id, vm_pg_read, &vm, err) < 0)
        return -1;
    *out = vm;
    return 0;
}

static int
vm_pg_get(void *self, const char *owner, const char *id, struct vm *out, struct st_error *err)
{
    return vm_pg_get_with(self, &vm_pg_get_stmt, owner, id, out, err);
}

static int
vm_pg_list(void *self, const char *owner, const struct vm_filter *f, struct vm_list *out,
           struct st_error *err)
{
    struct vm_pg *r = self;
    bool after = f->marker[0] != '\0';
    struct pg_page page;
    struct pg_params p;

    pg_params_init(&p);
    if (owner)
        pg_param_text(&p, owner);
    pg_param_opt_text(&p, f->name);
    pg_param_text(&p, f->has_status ? vm_status_name(f->status) : NULL);
    if (after)
        pg_param_text(&p, f->marker);
    pg_param_int(&p, pg_list_limit(f->limit));
    if (pg_db_list(r->db, &vm_pg_list_stmts[owner != NULL][after], &p, "VM", f->marker, f->limit,
                   sizeof(struct vm), vm_pg_read, &page, err) < 0)
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
 * Write the mutable members of @vm to its row in @owner's scope if the row
 * is still at vm->revision; "no VM 'id'" when there is none, ST_ERR_STALE
 * when it is at another revision.
 */
static int
vm_pg_update_row(struct vm_pg *r, const char *owner, const struct vm *vm, struct st_error *err)
{
    struct pg_row_ref ref = {.noun = "VM", .id = vm->id, .name = vm->name, .name_is = NULL};
    struct pg_params probe;
    struct pg_params p;

    pg_params_init(&p);
    pg_param_text(&p, vm->id);
    pg_param_text(&p, owner);
    pg_param_text(&p, vm->name);
    pg_param_text(&p, vm_status_name(vm->status));
    pg_param_text(&p, vm_step_name(vm->step));
    pg_param_int(&p, vm->vcpus);
    pg_param_int(&p, vm->memory_mib);
    pg_param_int(&p, vm->disk_gib);
    pg_param_opt_text(&p, vm->fault);
    pg_param_int(&p, vm->updated_at);
    pg_param_opt_text(&p, vm->flavor_id);
    pg_param_int(&p, (int64_t)vm->revision);
    pg_params_init(&probe);
    pg_param_text(&probe, vm->id);
    pg_param_text(&probe, owner);
    return pg_db_write_cas(r->db, &vm_pg_update_stmt, &p, &vm_pg_revision_stmt, &probe, &ref,
                           vm->revision, err);
}

static int
vm_pg_update(void *self, const char *owner, const struct vm *vm, struct st_error *err)
{
    return vm_pg_update_row(self, owner, vm, err);
}

static int
vm_pg_remove(void *self, const char *owner, const char *id, struct st_error *err)
{
    struct vm_pg *r = self;
    struct pg_row_ref ref = {.noun = "VM", .id = id, .name = NULL, .name_is = NULL};
    struct pg_params p;

    pg_params_init(&p);
    pg_param_text(&p, id);
    pg_param_text(&p, owner);
    return pg_db_write_one(r->db, &vm_pg_remove_stmt, &p, &ref, err) < 0 ? -1 : 0;
}

/* The one row of a count query @res, or -1 with @err filled as "<what>: ..." when it has none. */
static int
vm_pg_one_row(const PGresult *res, int cols, struct st_error *err, const char *what)
{
    if (PQntuples(res) != 1 || PQnfields(res) < cols)
        return st_error_set(err, ST_ERR_BACKEND, "%s: the server returned %d rows of %d columns",
                            what, PQntuples(res), PQnfields(res));
    return 0;
}

static int
vm_pg_count_by_image(void *self, const char *owner, const char *image_id, size_t *out,
                     struct st_error *err)
{
    struct vm_pg *r = self;
    char what[64 + ST_ID_BUF];
    struct pg_params p;
    PGresult *res;
    int rc;

    snprintf(what, sizeof(what), "cannot count the VMs built on image '%s'", image_id);
    pg_params_init(&p);
    pg_param_text(&p, image_id);
    pg_param_text(&p, owner);
    res = pg_db_exec(r->db, &vm_pg_count_stmt, &p, err);
    if (!res) {
        st_error_prefix(err, "%s", what);
        return -1;
    }
    rc = vm_pg_one_row(res, 1, err, what);
    if (rc == 0)
        *out = (size_t)pg_get_int(res, 0, 0);
    PQclear(res);
    return rc;
}

/* What the rows of @owner add up to; inside the caller's transaction, if any. */
static int
vm_pg_read_usage(struct vm_pg *r, const char *owner, struct quota_usage *out, struct st_error *err)
{
    char what[64 + ST_ID_BUF];
    struct pg_params p;
    PGresult *res;
    int rc;

    snprintf(what, sizeof(what), "cannot add up the VMs of owner '%s'", owner);
    pg_params_init(&p);
    pg_param_text(&p, owner);
    res = pg_db_exec(r->db, &vm_pg_usage_stmt, &p, err);
    if (!res) {
        st_error_prefix(err, "%s", what);
        return -1;
    }
    rc = vm_pg_one_row(res, 4, err, what);
    if (rc == 0) {
        out->vms = (uint64_t)pg_get_int(res, 0, 0);
        out->vcpus = (uint64_t)pg_get_int(res, 0, 1);
        out->memory_mib = (uint64_t)pg_get_int(res, 0, 2);
        out->disk_gib = (uint64_t)pg_get_int(res, 0, 3);
    }
    PQclear(res);
    return rc;
}

static int
vm_pg_usage(void *self, const char *owner, struct quota_usage *out, struct st_error *err)
{
    if (!owner)
        return st_error_set(err, ST_ERR_INVALID, "quota usage is counted per owner: none given");
    return vm_pg_read_usage(self, owner, out, err);
}

/* quota_allows() with SQLite's message when it refuses; *broken is filled either way. */
static int
vm_pg_check_quota(const struct quota *limits, const struct quota_usage *usage, const struct vm *vm,
                  struct quota_violation *broken, struct st_error *err)
{
    if (quota_allows(limits, usage, vm->vcpus, vm->memory_mib, vm->disk_gib, broken))
        return 0;
    return st_error_set(err, ST_ERR_FORBIDDEN,
                        "quota %s exceeded: limit %" PRId64 ", in use %" PRIu64
                        ", requested %" PRIu64,
                        broken->quota, broken->limit, broken->in_use, broken->requested);
}

/*
 * Under the owner's quota lock, the usage is read, judged and the row
 * inserted: concurrent creates of one owner queue up on the lock, each
 * counting the rows of those before it, and the last ones are refused.
 * The rule itself is quota_allows()'s alone.
 */
static int
vm_pg_insert_within_quota(void *self, const struct vm *vm, const struct quota *limits,
                          struct quota_violation *v, struct st_error *err)
{
    struct vm_pg *r = self;
    struct quota_violation broken;
    struct quota_usage usage;

    if (pg_db_begin(r->db, err) < 0)
        return -1;
    if (vm_pg_lock(r, "quota", vm->owner_id, err) < 0 ||
        vm_pg_read_usage(r, vm->owner_id, &usage, err) < 0)
        goto fail;
    if (vm_pg_check_quota(limits, &usage, vm, &broken, err) < 0) {
        *v = broken;
        goto fail;
    }
    if (vm_pg_insert_row(r, vm, err) < 0)
        goto fail;
    if (pg_db_commit(r->db, err) < 0)
        return -1;
    *v = broken;
    return 0;

fail:
    pg_db_rollback(r->db);
    return -1;
}

/*
 * As the insert: under the owner's quota lock, the owner's use without
 * this row's old sizes plus its new ones must stay within @limits.  The
 * row is read once to learn its owner (which never changes), and again
 * under the lock, locking the row itself: a plain update or remove may
 * have changed it in between, and must not change it before the commit.
 * That second read must still find the revision the caller read.
 */
static int
vm_pg_update_within_quota(void *self, const char *owner, const struct vm *vm,
                          const struct quota *limits, struct quota_violation *v,
                          struct st_error *err)
{
    struct vm_pg *r = self;
    struct quota_violation broken;
    struct quota_usage usage;
    struct vm old;

    if (pg_db_begin(r->db, err) < 0)
        return -1;
    if (vm_pg_get(r, owner, vm->id, &old, err) < 0 ||
        vm_pg_lock(r, "quota", old.owner_id, err) < 0 ||
        vm_pg_get_with(r, &vm_pg_get_for_update_stmt, owner, vm->id, &old, err) < 0)
        goto fail;
    if (old.revision != vm->revision) {
        pg_db_stale("VM", vm->id, vm->revision, old.revision, err);
        goto fail;
    }
    if (vm_pg_read_usage(r, old.owner_id, &usage, err) < 0)
        goto fail;
    /* The row is counted once: take its old sizes out, quota_allows() adds the new ones. */
    usage.vms -= 1;
    usage.vcpus -= old.vcpus;
    usage.memory_mib -= old.memory_mib;
    usage.disk_gib -= old.disk_gib;
    if (vm_pg_check_quota(limits, &usage, vm, &broken, err) < 0) {
        *v = broken;
        goto fail;
    }
    if (vm_pg_update_row(r, owner, vm, err) < 0)
        goto fail;
    if (pg_db_commit(r->db, err) < 0)
        return -1;
    *v = broken;
    return 0;

fail:
    pg_db_rollback(r->db);
    return -1;
}

/* The statements belong to the connection, not to the repository: only the struct goes. */
static void
vm_pg_close(void *self)
{
    free(self);
}

static const struct vm_repo_ops vm_pg_ops = {
    .insert = vm_pg_insert,
    .get = vm_pg_get,
    .list = vm_pg_list,
    .update = vm_pg_update,
    .remove = vm_pg_remove,
    .count_by_image = vm_pg_count_by_image,
    .close = vm_pg_close,
    .insert_within_quota = vm_pg_insert_within_quota,
    .usage = vm_pg_usage,
    .update_within_quota = vm_pg_update_within_quota,
};

int
vm_repo_pg_open(struct pg_db *db, struct vm_repo *out, struct st_error *err)
{
    struct vm_pg *r;

    if (!db)
        return st_error_set(err, ST_ERR_INTERNAL,
                            "cannot open the VM repository: no database handle");
    r = st_xcalloc(1, sizeof(*r));
    r->db = db;
    out->ops = &vm_pg_ops;
    out->self = r;
    return 0;
}
