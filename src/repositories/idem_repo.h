/*
 * idem_repo.h - idempotency records of POST requests: the first answer
 * given to (owner, Idempotency-Key), kept until it expires, so that a
 * retry gets that answer again instead of doing the work twice.
 *
 * All methods return 0 on success or -1 with @err filled; codes as in
 * vm_repo.h, and ST_ERR_INVALID for an owner that is missing or a key
 * idem_key_valid() refuses.  Inside a store_tx every method joins the
 * open transaction.
 */
#ifndef STRATUS_REPOSITORIES_IDEM_REPO_H
#define STRATUS_REPOSITORIES_IDEM_REPO_H

#include <stddef.h>
#include <stdint.h>

#include "models/operation.h"

enum idem_begin_result {
    IDEM_NEW = 0,     /* recorded as in progress: serve the request, then idem_repo_finish() */
    IDEM_DONE,        /* answered before: *out holds the stored answer */
    IDEM_IN_PROGRESS, /* the first request with this key is still being served */
    IDEM_MISMATCH,    /* the key was used with another request (*out holds it) */
};

struct idem_repo_ops {
    /*
     * Mandatory. Look up (@owner, @key), in one write transaction: when
     * absent or expired (before @now_ms), record it as in progress with
     * @hash and @expires_at and answer IDEM_NEW; otherwise IDEM_DONE,
     * IDEM_MISMATCH (hash differs) or IDEM_IN_PROGRESS, with *out filled
     * (release with idem_record_release()).  Of two requests racing with
     * the same key, exactly one gets IDEM_NEW.
     */
    int (*begin)(void *self, const char *owner, const char *key, const char *hash, int64_t now_ms,
                 int64_t expires_at, enum idem_begin_result *result, struct idem_record *out,
                 struct st_error *err);
    /*
     * Mandatory. Store the answer (@status > 0) of the request that began
     * (@owner, @key); ST_ERR_NOT_FOUND when there is no such record.
     */
    int (*finish)(void *self, const char *owner, const char *key, int status, const char *body,
                  const char *location, struct st_error *err);
    /*
     * Mandatory. Forget (@owner, @key), so that a retry runs again (after
     * a 5xx); forgetting a record that is not there is no error.
     */
    int (*forget)(void *self, const char *owner, const char *key, struct st_error *err);
    /* Mandatory. Drop records that expired before @now_ms; *n is how many went. */
    int (*prune)(void *self, int64_t now_ms, size_t *n, struct st_error *err);
    /* Mandatory. */
    void (*close)(void *self);
};

struct idem_repo {
    const struct idem_repo_ops *ops;
    void *self;
};

static inline int
idem_repo_begin(struct idem_repo *r, const char *owner, const char *key, const char *hash,
                int64_t now_ms, int64_t expires_at, enum idem_begin_result *result,
                struct idem_record *out, struct st_error *err)
{
    return r->ops->begin(r->self, owner, key, hash, now_ms, expires_at, result, out, err);
}

static inline int
idem_repo_finish(struct idem_repo *r, const char *owner, const char *key, int status,
                 const char *body, const char *location, struct st_error *err)
{
    return r->ops->finish(r->self, owner, key, status, body, location, err);
}

static inline int
idem_repo_forget(struct idem_repo *r, const char *owner, const char *key, struct st_error *err)
{
    return r->ops->forget(r->self, owner, key, err);
}

static inline int
idem_repo_prune(struct idem_repo *r, int64_t now_ms, size_t *n, struct st_error *err)
{
    return r->ops->prune(r->self, now_ms, n, err);
}

static inline void
idem_repo_close(struct idem_repo *r)
{
    if (r && r->ops) {
        r->ops->close(r->self);
        r->ops = NULL;
        r->self = NULL;
    }
}

#endif
