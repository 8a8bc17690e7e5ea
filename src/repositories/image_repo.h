/*
 * image_repo.h - where image rows live.  Same scope and error rules as
 * vm_repo.h, except that get and list also see public images of every
 * owner; remove sees only the owner's own.
 */
#ifndef STRATUS_REPOSITORIES_IMAGE_REPO_H
#define STRATUS_REPOSITORIES_IMAGE_REPO_H

#include "models/image.h"

struct image_repo_ops {
    /* Mandatory. ST_ERR_CONFLICT when owner+name is taken. */
    int (*insert)(void *self, const struct image *image, struct st_error *err);
    /* Mandatory. */
    int (*get)(void *self, const char *owner, const char *id, struct image *out,
               struct st_error *err);
    /* Mandatory. Ordered by (created_at, id). Free with image_list_release(). */
    int (*list)(void *self, const char *owner, const struct image_filter *f, struct image_list *out,
                struct st_error *err);
    /*
     * Mandatory. Remove the row, atomically refusing (ST_ERR_CONFLICT) while
     * any VM row, of any owner, is built on it: a VM created concurrently
     * either commits its row first (and the image stays) or finds the image
     * gone.
     */
    int (*remove)(void *self, const char *owner, const char *id, struct st_error *err);
    /* Mandatory. */
    void (*close)(void *self);
};

struct image_repo {
    const struct image_repo_ops *ops;
    void *self;
};

static inline int
image_repo_insert(struct image_repo *r, const struct image *image, struct st_error *err)
{
    return r->ops->insert(r->self, image, err);
}

static inline int
image_repo_get(struct image_repo *r, const char *owner, const char *id, struct image *out,
               struct st_error *err)
{
    return r->ops->get(r->self, owner, id, out, err);
}

static inline int
image_repo_list(struct image_repo *r, const char *owner, const struct image_filter *f,
                struct image_list *out, struct st_error *err)
{
    return r->ops->list(r->self, owner, f, out, err);
}

static inline int
image_repo_remove(struct image_repo *r, const char *owner, const char *id, struct st_error *err)
{
    return r->ops->remove(r->self, owner, id, err);
}

static inline void
image_repo_close(struct image_repo *r)
{
    if (r && r->ops) {
        r->ops->close(r->self);
        r->ops = NULL;
        r->self = NULL;
    }
}

#endif
