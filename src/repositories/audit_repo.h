/*
 * audit_repo.h - the append-only audit log, a hash chain.
 *
 * Same return and error rules as user_repo.h.
 */
#ifndef STRATUS_REPOSITORIES_AUDIT_REPO_H
#define STRATUS_REPOSITORIES_AUDIT_REPO_H

#include "models/user.h"

/*
 * Computes e->hash from e->prev_hash and every other field (the service's
 * function: the store does not know how entries are hashed).
 */
typedef void (*audit_hash_fn)(const struct audit_entry *e, char out[ST_HASH_HEX_BUF]);

struct audit_repo_ops {
    /*
     * Mandatory. Append @e (id, at and the request fields set by the caller)
     * in one write transaction: read the newest entry, set e->seq to its
     * seq + 1 and e->prev_hash to its hash ("" when the log is empty), call
     * @hash to set e->hash, insert.  Concurrent appends from other
     * connections are serialised, so the chain never forks.
     */
    int (*append)(void *self, struct audit_entry *e, audit_hash_fn hash, struct st_error *err);
    /*
     * Mandatory. One page ordered by seq, after the entry f->marker when set
     * (a marker naming no entry is ST_ERR_INVALID), matching f->user_id and
     * f->target_id when set.  Free with audit_list_release().
     */
    int (*list)(void *self, const struct audit_filter *f, struct audit_list *out,
                struct st_error *err);
    /* Mandatory. Up to @limit entries with seq > @after_seq, by seq (for the verifier). */
    int (*scan)(void *self, int64_t after_seq, unsigned limit, struct audit_list *out,
                struct st_error *err);
    /* Mandatory. */
    void (*close)(void *self);
};

struct audit_repo {
    const struct audit_repo_ops *ops;
    void *self;
};

static inline int
audit_repo_append(struct audit_repo *r, struct audit_entry *e, audit_hash_fn hash,
                  struct st_error *err)
{
    return r->ops->append(r->self, e, hash, err);
}

static inline int
audit_repo_list(struct audit_repo *r, const struct audit_filter *f, struct audit_list *out,
                struct st_error *err)
{
    return r->ops->list(r->self, f, out, err);
}

static inline int
audit_repo_scan(struct audit_repo *r, int64_t after_seq, unsigned limit, struct audit_list *out,
                struct st_error *err)
{
    return r->ops->scan(r->self, after_seq, limit, out, err);
}

static inline void
audit_repo_close(struct audit_repo *r)
{
    if (r && r->ops) {
        r->ops->close(r->self);
        r->ops = NULL;
        r->self = NULL;
    }
}

#endif
