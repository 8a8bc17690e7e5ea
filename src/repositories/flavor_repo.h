/*
 * flavor_repo.h - where flavor rows live.  Same scope and error rules as
 * vm_repo.h.
 */
#ifndef STRATUS_REPOSITORIES_FLAVOR_REPO_H
#define STRATUS_REPOSITORIES_FLAVOR_REPO_H

#include "models/flavor.h"

struct flavor_repo_ops {
    /* Mandatory. ST_ERR_CONFLICT when owner+name is taken. */
    int (*insert)(void *self, const struct flavor *flavor, struct st_error *err);
    /* Mandatory. */
    int (*get)(void *self, const char *owner, const char *id, struct flavor *out,
               struct st_error *err);
    /* Mandatory. Ordered by (created_at, id). Free with flavor_list_release(). */
    int (*list)(void *self, const char *owner, const struct flavor_filter *f,
                struct flavor_list *out, struct st_error *err);
    /* Mandatory. */
    int (*remove)(void *self, const char *owner, const char *id, struct st_error *err);
    /* Mandatory. */
    void (*close)(void *self);
};

struct flavor_repo {
    const struct flavor_repo_ops *ops;
    void *self;
};

static inline int
flavor_repo_insert(struct flavor_repo *r, const struct flavor *flavor, struct st_error *err)
{
    return r->ops->insert(r->self, flavor, err);
}

static inline int
flavor_repo_get(struct flavor_repo *r, const char *owner, const char *id, struct flavor *out,
                struct st_error *err)
{
    return r->ops->get(r->self, owner, id, out, err);
}

static inline int
flavor_repo_list(struct flavor_repo *r, const char *owner, const struct flavor_filter *f,
                 struct flavor_list *out, struct st_error *err)
{
    return r->ops->list(r->self, owner, f, out, err);
}

static inline int
flavor_repo_remove(struct flavor_repo *r, const char *owner, const char *id, struct st_error *err)
{
    return r->ops->remove(r->self, owner, id, err);
}

static inline void
flavor_repo_close(struct flavor_repo *r)
{
    if (r && r->ops) {
        r->ops->close(r->self);
        r->ops = NULL;
        r->self = NULL;
    }
}

#endif
