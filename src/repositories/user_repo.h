/*
 * user_repo.h - where users, their API keys and failed logins live.
 *
 * Users are not owner-scoped: the services decide who may see whom.  All
 * methods return 0 on success or -1 with @err filled; out-parameters are
 * written only on success.  Codes: ST_ERR_NOT_FOUND (no such row),
 * ST_ERR_CONFLICT (e-mail taken), ST_ERR_UNAVAILABLE (store busy or down),
 * ST_ERR_BACKEND (anything else the store said).
 */
#ifndef STRATUS_REPOSITORIES_USER_REPO_H
#define STRATUS_REPOSITORIES_USER_REPO_H

#include <stddef.h>

#include "models/user.h"

struct user_repo_ops {
    /* Mandatory. Insert as given; ST_ERR_CONFLICT "a user with e-mail 'x' already exists". */
    int (*insert)(void *self, const struct user *user, struct st_error *err);
    /* Mandatory. */
    int (*get)(void *self, const char *id, struct user *out, struct st_error *err);
    /* Mandatory. @email is already lower case. */
    int (*get_by_email)(void *self, const char *email, struct user *out, struct st_error *err);
    /* Mandatory. Ordered by (created_at, id); free with user_list_release(). */
    int (*list)(void *self, const struct user_filter *f, struct user_list *out,
                struct st_error *err);
    /*
     * Mandatory. Write every mutable member (email, password_hash, nickname,
     * status, roles, quota, updated_at) of the row user->id, if its revision
     * is still user->revision (compare-and-set: ST_ERR_STALE otherwise); the
     * stored revision becomes user->revision + 1.
     */
    int (*update)(void *self, const struct user *user, struct st_error *err);
    /* Mandatory. How many active users hold USER_ROLE_ADMIN. */
    int (*count_admins)(void *self, size_t *out, struct st_error *err);

    /*
     * Mandatory. Failed logins, for throttling.  Record one failure of
     * @email at @at (ms); count those at or after @since and give the time
     * of the newest (0 when none); forget all of @email's (after a success).
     */
    int (*login_failure_add)(void *self, const char *email, int64_t at, struct st_error *err);
    int (*login_failures)(void *self, const char *email, int64_t since, size_t *count,
                          int64_t *newest, struct st_error *err);
    int (*login_failures_clear)(void *self, const char *email, struct st_error *err);

    /* Mandatory. API keys: ST_ERR_CONFLICT when the user has a key of that name. */
    int (*key_insert)(void *self, const struct api_key *key, struct st_error *err);
    /* Mandatory. The key whose prefix is @prefix (prefixes are unique). */
    int (*key_get_by_prefix)(void *self, const char *prefix, struct api_key *out,
                             struct st_error *err);
    /* Mandatory. Every key of @user_id, oldest first, at most 1000. */
    int (*key_list)(void *self, const char *user_id, struct api_key_list *out,
                    struct st_error *err);
    /* Mandatory. Set last_used_at. */
    int (*key_touch)(void *self, const char *id, int64_t at, struct st_error *err);
    /* Mandatory. Remove @user_id's key @id (another user's key is ST_ERR_NOT_FOUND). */
    int (*key_remove)(void *self, const char *user_id, const char *id, struct st_error *err);

    /* Mandatory. Release everything; @self is gone afterwards. */
    void (*close)(void *self);
};

struct user_repo {
    const struct user_repo_ops *ops;
    void *self;
};

static inline int
user_repo_insert(struct user_repo *r, const struct user *user, struct st_error *err)
{
    return r->ops->insert(r->self, user, err);
}

static inline int
user_repo_get(struct user_repo *r, const char *id, struct user *out, struct st_error *err)
{
    return r->ops->get(r->self, id, out, err);
}

static inline int
user_repo_get_by_email(struct user_repo *r, const char *email, struct user *out,
                       struct st_error *err)
{
    return r->ops->get_by_email(r->self, email, out, err);
}

static inline int
user_repo_list(struct user_repo *r, const struct user_filter *f, struct user_list *out,
               struct st_error *err)
{
    return r->ops->list(r->self, f, out, err);
}

static inline int
user_repo_update(struct user_repo *r, const struct user *user, struct st_error *err)
{
    return r->ops->update(r->self, user, err);
}

static inline int
user_repo_count_admins(struct user_repo *r, size_t *out, struct st_error *err)
{
    return r->ops->count_admins(r->self, out, err);
}

static inline int
user_repo_login_failure_add(struct user_repo *r, const char *email, int64_t at,
                            struct st_error *err)
{
    return r->ops->login_failure_add(r->self, email, at, err);
}

static inline int
user_repo_login_failures(struct user_repo *r, const char *email, int64_t since, size_t *count,
                         int64_t *newest, struct st_error *err)
{
    return r->ops->login_failures(r->self, email, since, count, newest, err);
}

static inline int
user_repo_login_failures_clear(struct user_repo *r, const char *email, struct st_error *err)
{
    return r->ops->login_failures_clear(r->self, email, err);
}

static inline int
user_repo_key_insert(struct user_repo *r, const struct api_key *key, struct st_error *err)
{
    return r->ops->key_insert(r->self, key, err);
}

static inline int
user_repo_key_get_by_prefix(struct user_repo *r, const char *prefix, struct api_key *out,
                            struct st_error *err)
{
    return r->ops->key_get_by_prefix(r->self, prefix, out, err);
}

static inline int
user_repo_key_list(struct user_repo *r, const char *user_id, struct api_key_list *out,
                   struct st_error *err)
{
    return r->ops->key_list(r->self, user_id, out, err);
}

static inline int
user_repo_key_touch(struct user_repo *r, const char *id, int64_t at, struct st_error *err)
{
    return r->ops->key_touch(r->self, id, at, err);
}

static inline int
user_repo_key_remove(struct user_repo *r, const char *user_id, const char *id, struct st_error *err)
{
    return r->ops->key_remove(r->self, user_id, id, err);
}

/* Close and forget; NULL-safe. */
static inline void
user_repo_close(struct user_repo *r)
{
    if (r && r->ops) {
        r->ops->close(r->self);
        r->ops = NULL;
        r->self = NULL;
    }
}

#endif
