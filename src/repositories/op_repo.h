/*
 * op_repo.h - the operations table: queued work, claimed by workers under a
 * lease.
 *
 * Scope and errors as in vm_repo.h.  The claim is the one place several
 * workers compete: it must hand each operation to exactly one of them
 * (SQLite: inside BEGIN IMMEDIATE; PostgreSQL: FOR UPDATE SKIP LOCKED).
 * An operation is inserted at the revision the caller set (1), and claim,
 * renew and finish each bump it; get, list and claim read it.
 */
#ifndef STRATUS_REPOSITORIES_OP_REPO_H
#define STRATUS_REPOSITORIES_OP_REPO_H

#include <stdbool.h>

#include "models/operation.h"

struct op_repo_ops {
    /*
     * Mandatory. Insert @op (queued).  ST_ERR_CONFLICT "VM 'x' has operation
     * 'y' in progress" when another queued or running operation targets the
     * same VM: one operation per VM at a time.
     */
    int (*insert)(void *self, const struct operation *op, struct st_error *err);
    /* Mandatory. */
    int (*get)(void *self, const char *owner, const char *id, struct operation *out,
               struct st_error *err);
    /* Mandatory. Ordered by (created_at, id); free with op_list_release(). */
    int (*list)(void *self, const char *owner, const struct op_filter *f, struct op_list *out,
                struct st_error *err);
    /*
     * Mandatory. Take the oldest operation that is queued, or running with
     * a lease that ended before @now_ms: it becomes running, held by
     * @worker_id until @now_ms + @lease_ms, attempts + 1, started_at set if
     * it was 0.  *claimed is false (and *out untouched) when there is none.
     */
    int (*claim)(void *self, const char *worker_id, int64_t now_ms, int64_t lease_ms,
                 struct operation *out, bool *claimed, struct st_error *err);
    /*
     * Mandatory. Extend @worker_id's lease on @id to @until_ms and record
     * @step (NULL: keep it).  ST_ERR_CONFLICT "lease on operation 'x' was
     * lost" when the operation is no longer running under @worker_id.
     */
    int (*renew)(void *self, const char *id, const char *worker_id, int64_t until_ms,
                 const char *step, struct st_error *err);
    /*
     * Mandatory. End @id with @status (succeeded or failed) and @error ("" or
     * NULL for none) at @now_ms, if @worker_id still holds it (else
     * ST_ERR_CONFLICT as renew).
     */
    int (*finish)(void *self, const char *id, const char *worker_id, enum op_status status,
                  const char *error, int64_t now_ms, struct st_error *err);
    /* Mandatory. The queued or running operation on @target_id; ST_ERR_NOT_FOUND if none. */
    int (*active_for)(void *self, const char *target_id, struct operation *out,
                      struct st_error *err);
    /* Mandatory. */
    void (*close)(void *self);
};

struct op_repo {
    const struct op_repo_ops *ops;
    void *self;
};

static inline int
op_repo_insert(struct op_repo *r, const struct operation *op, struct st_error *err)
{
    return r->ops->insert(r->self, op, err);
}

static inline int
op_repo_get(struct op_repo *r, const char *owner, const char *id, struct operation *out,
            struct st_error *err)
{
    return r->ops->get(r->self, owner, id, out, err);
}

static inline int
op_repo_list(struct op_repo *r, const char *owner, const struct op_filter *f, struct op_list *out,
             struct st_error *err)
{
    return r->ops->list(r->self, owner, f, out, err);
}

static inline int
op_repo_claim(struct op_repo *r, const char *worker_id, int64_t now_ms, int64_t lease_ms,
              struct operation *out, bool *claimed, struct st_error *err)
{
    return r->ops->claim(r->self, worker_id, now_ms, lease_ms, out, claimed, err);
}

static inline int
op_repo_renew(struct op_repo *r, const char *id, const char *worker_id, int64_t until_ms,
              const char *step, struct st_error *err)
{
    return r->ops->renew(r->self, id, worker_id, until_ms, step, err);
}

static inline int
op_repo_finish(struct op_repo *r, const char *id, const char *worker_id, enum op_status status,
               const char *error, int64_t now_ms, struct st_error *err)
{
    return r->ops->finish(r->self, id, worker_id, status, error, now_ms, err);
}

static inline int
op_repo_active_for(struct op_repo *r, const char *target_id, struct operation *out,
                   struct st_error *err)
{
    return r->ops->active_for(r->self, target_id, out, err);
}

static inline void
op_repo_close(struct op_repo *r)
{
    if (r && r->ops) {
        r->ops->close(r->self);
        r->ops = NULL;
        r->self = NULL;
    }
}

#endif
