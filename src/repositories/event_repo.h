/*
 * event_repo.h - VM events: what happened to a VM, kept after the VM is
 * gone for its owner to read, until they expire.
 *
 * An append-mostly table with an expiry; same errors as vm_repo.h.
 * (Idempotency records have their own interface: idem_repo.h.)
 */
#ifndef STRATUS_REPOSITORIES_EVENT_REPO_H
#define STRATUS_REPOSITORIES_EVENT_REPO_H

#include "models/operation.h"

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
