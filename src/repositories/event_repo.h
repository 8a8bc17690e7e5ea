/*
 * event_repo.h - VM events and idempotency records.
 *
 * Both are append-mostly tables with an expiry; same errors as vm_repo.h.
 */
#ifndef STRATUS_REPOSITORIES_EVENT_REPO_H
#define STRATUS_REPOSITORIES_EVENT_REPO_H

#include "models/operation.h"

enum idem_begin_result {
    IDEM_NEW = 0,     /* recorded as in progress: serve the request, then idem_finish */
    IDEM_DONE,        /* answered before: *out holds the stored answer */
    IDEM_IN_PROGRESS, /* the first request with this key is still being served */
    IDEM_MISMATCH,    /* the key was used with another request (*out holds it) */
};

struct event_repo_ops {
    /* Mandatory. Append @e (id and time set by the caller). */
    int (*append)(void *self, const struct vm_event *e, struct st_error *err);
    /*
     * Mandatory. @vm_id's events within @owner's scope (NULL: any), oldest
     * first by (at, id), after f->marker.  Free with vm_event_list_release().
     */
    int (*list)(void *self, const char *owner, const char *vm_id, const struct vm_event_filter *f,
                struct vm_event_list *out, struct st_error *err);
    /* Mandatory. Drop events older than @before_ms; *n is how many went. */
    int (*prune)(void *self, int64_t before_ms, size_t *n, struct st_error *err);

    /*
     * Mandatory. Look up (@owner, @key), in one write transaction: when
     * absent or expired (before @now_ms), record it as in progress with
     * @hash and @expires_at and answer IDEM_NEW; otherwise IDEM_DONE,
     * IDEM_MISMATCH (hash differs) or IDEM_IN_PROGRESS, with *out filled
     * (release with idem_record_release()).
     */
    int (*idem_begin)(void *self, const char *owner, const char *key, const char *hash,
                      int64_t now_ms, int64_t expires_at, enum idem_begin_result *result,
                      struct idem_record *out, struct st_error *err);
    /* Mandatory. Store the answer of the request that began (@owner, @key). */
    int (*idem_finish)(void *self, const char *owner, const char *key, int status, const char *body,
                       const char *location, struct st_error *err);
    /* Mandatory. Forget (@owner, @key), so that a retry runs again (after a 5xx). */
    int (*idem_forget)(void *self, const char *owner, const char *key, struct st_error *err);
    /* Mandatory. Drop records that expired before @now_ms. */
    int (*idem_prune)(void *self, int64_t now_ms, size_t *n, struct st_error *err);
    /* Mandatory. */
    void (*close)(void *self);
};

struct event_repo {
    const struct event_repo_ops *ops;
    void *self;
};

static inline int
event_repo_append(struct event_repo *r, const struct vm_event *e, struct st_error *err)
{
    return r->ops->append(r->self, e, err);
}

static inline int
event_repo_list(struct event_repo *r, const char *owner, const char *vm_id,
                const struct vm_event_filter *f, struct vm_event_list *out, struct st_error *err)
{
    return r->ops->list(r->self, owner, vm_id, f, out, err);
}

static inline int
event_repo_prune(struct event_repo *r, int64_t before_ms, size_t *n, struct st_error *err)
{
    return r->ops->prune(r->self, before_ms, n, err);
}

static inline int
event_repo_idem_begin(struct event_repo *r, const char *owner, const char *key, const char *hash,
                      int64_t now_ms, int64_t expires_at, enum idem_begin_result *result,
                      struct idem_record *out, struct st_error *err)
{
    return r->ops->idem_begin(r->self, owner, key, hash, now_ms, expires_at, result, out, err);
}

static inline int
event_repo_idem_finish(struct event_repo *r, const char *owner, const char *key, int status,
                       const char *body, const char *location, struct st_error *err)
{
    return r->ops->idem_finish(r->self, owner, key, status, body, location, err);
}

static inline int
event_repo_idem_forget(struct event_repo *r, const char *owner, const char *key,
                       struct st_error *err)
{
    return r->ops->idem_forget(r->self, owner, key, err);
}

static inline int
event_repo_idem_prune(struct event_repo *r, int64_t now_ms, size_t *n, struct st_error *err)
{
    return r->ops->idem_prune(r->self, now_ms, n, err);
}

static inline void
event_repo_close(struct event_repo *r)
{
    if (r && r->ops) {
        r->ops->close(r->self);
        r->ops = NULL;
        r->self = NULL;
    }
}

#endif
