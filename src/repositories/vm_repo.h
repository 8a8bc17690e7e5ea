/*
 * vm_repo.h - where VM rows live.
 *
 * Scope: every method takes @owner.  A non-NULL owner limits the method to
 * that owner's rows: another owner's row behaves exactly as one that does
 * not exist.  NULL means unscoped (system or admin use).
 *
 * All methods return 0 on success or -1 with @err filled.  Out-parameters
 * are written only on success.  Codes: ST_ERR_NOT_FOUND (no such row in
 * scope), ST_ERR_CONFLICT (owner+name taken), ST_ERR_STALE (the row's
 * revision is no longer the one the caller read), ST_ERR_UNAVAILABLE (store
 * busy or down: retry later), ST_ERR_BACKEND (anything else the store said).
 *
 * Revisions: a row is inserted with the revision the caller set (1 for a
 * new row).  Every update is compare-and-set: it writes only while the
 * stored revision equals vm->revision, and the stored revision becomes
 * vm->revision + 1 (the caller bumps its own copy on success).  Inside a
 * store_tx every method joins the open transaction.
 */
#ifndef STRATUS_REPOSITORIES_VM_REPO_H
#define STRATUS_REPOSITORIES_VM_REPO_H

#include <stddef.h>

#include "models/user.h"
#include "models/vm.h"

struct vm_repo_ops {
    /* Mandatory. Insert @vm as given (id, owner, times set by the caller). */
    int (*insert)(void *self, const struct vm *vm, struct st_error *err);
    /* Mandatory. Fetch one row by id within scope. */
    int (*get)(void *self, const char *owner, const char *id, struct vm *out, struct st_error *err);
    /*
     * Mandatory. One page, ordered by (created_at, id), after f->marker when
     * set (a marker that names no row in scope is ST_ERR_INVALID), matching
     * f->name and f->status when set, at most f->limit items (0 means
     * ST_LIST_LIMIT_DEFAULT; the API caps it, the store does not).  One query.
     * Caller frees out with vm_list_release().
     */
    int (*list)(void *self, const char *owner, const struct vm_filter *f, struct vm_list *out,
                struct st_error *err);
    /*
     * Mandatory. Write every mutable member of @vm (name, status, step,
     * vcpus, memory_mib, disk_gib, flavor_id, fault, updated_at) to the row with
     * vm->id within scope, if its revision is still vm->revision
     * (ST_ERR_STALE "VM 'x' changed meanwhile" otherwise); the stored
     * revision becomes vm->revision + 1.
     */
    int (*update)(void *self, const char *owner, const struct vm *vm, struct st_error *err);
    /* Mandatory. Remove the row. */
    int (*remove)(void *self, const char *owner, const char *id, struct st_error *err);
    /* Mandatory. How many rows (in scope) are built on @image_id. */
    int (*count_by_image)(void *self, const char *owner, const char *image_id, size_t *out,
                          struct st_error *err);
    /* Mandatory. Release everything; @self is gone afterwards. */
    void (*close)(void *self);
    /*
     * Mandatory. Insert @vm only if the rows of vm->owner_id, with @vm
     * added, stay within @limits (a limit < 0 is unlimited), in one write
     * transaction so that concurrent inserts cannot overshoot.  When a
     * limit would be broken nothing is inserted and the result is
     * ST_ERR_FORBIDDEN with *v filled (the first broken limit, in the order
     * of quota_allows()); otherwise v->quota is NULL.
     */
    int (*insert_within_quota)(void *self, const struct vm *vm, const struct quota *limits,
                               struct quota_violation *v, struct st_error *err);
    /* Mandatory. What @owner's rows add up to (every row counts). */
    int (*usage)(void *self, const char *owner, struct quota_usage *out, struct st_error *err);
    /*
     * Mandatory. update() (compare-and-set, as above) only if the rows of
     * the VM's owner, with this row's new sizes instead of its old ones,
     * stay within @limits; one write transaction, and the same
     * ST_ERR_FORBIDDEN and *v as insert_within_quota().
     */
    int (*update_within_quota)(void *self, const char *owner, const struct vm *vm,
                               const struct quota *limits, struct quota_violation *v,
                               struct st_error *err);
};

struct vm_repo {
    const struct vm_repo_ops *ops;
    void *self;
};

static inline int
vm_repo_insert(struct vm_repo *r, const struct vm *vm, struct st_error *err)
{
    return r->ops->insert(r->self, vm, err);
}

static inline int
vm_repo_get(struct vm_repo *r, const char *owner, const char *id, struct vm *out,
            struct st_error *err)
{
    return r->ops->get(r->self, owner, id, out, err);
}

static inline int
vm_repo_list(struct vm_repo *r, const char *owner, const struct vm_filter *f, struct vm_list *out,
             struct st_error *err)
{
    return r->ops->list(r->self, owner, f, out, err);
}

static inline int
vm_repo_update(struct vm_repo *r, const char *owner, const struct vm *vm, struct st_error *err)
{
    return r->ops->update(r->self, owner, vm, err);
}

static inline int
vm_repo_remove(struct vm_repo *r, const char *owner, const char *id, struct st_error *err)
{
    return r->ops->remove(r->self, owner, id, err);
}

static inline int
vm_repo_count_by_image(struct vm_repo *r, const char *owner, const char *image_id, size_t *out,
                       struct st_error *err)
{
    return r->ops->count_by_image(r->self, owner, image_id, out, err);
}

static inline int
vm_repo_insert_within_quota(struct vm_repo *r, const struct vm *vm, const struct quota *limits,
                            struct quota_violation *v, struct st_error *err)
{
    return r->ops->insert_within_quota(r->self, vm, limits, v, err);
}

static inline int
vm_repo_usage(struct vm_repo *r, const char *owner, struct quota_usage *out, struct st_error *err)
{
    return r->ops->usage(r->self, owner, out, err);
}

static inline int
vm_repo_update_within_quota(struct vm_repo *r, const char *owner, const struct vm *vm,
                            const struct quota *limits, struct quota_violation *v,
                            struct st_error *err)
{
    return r->ops->update_within_quota(r->self, owner, vm, limits, v, err);
}

/* Close and forget; NULL-safe. */
static inline void
vm_repo_close(struct vm_repo *r)
{
    if (r && r->ops) {
        r->ops->close(r->self);
        r->ops = NULL;
        r->self = NULL;
    }
}

#endif
