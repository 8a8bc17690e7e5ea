/*
 * storage.h - what stratus asks of a storage backend.
 *
 * Volumes live in named pools and are addressed by (pool, volume name).
 * Paths handed out are absolute and reachable by the hypervisor.
 *
 * Every method returns 0 or -1 with @err filled:
 *   ST_ERR_NOT_FOUND    no such pool or volume
 *   ST_ERR_CONFLICT     the volume exists already
 *   ST_ERR_INVALID      the input file is unacceptable (format, backing chain,
 *                       outside the import directory)
 *   ST_ERR_UNAVAILABLE  the backend cannot be reached now
 *   ST_ERR_BACKEND      anything else the backend said
 */
#ifndef STRATUS_REPOSITORIES_STORAGE_H
#define STRATUS_REPOSITORIES_STORAGE_H

#include <stdbool.h>
#include <stdint.h>

#include "models/common.h"

struct storage_vol_info {
    char path[ST_PATH_BUF];
    char format[16];     /* as probed: "qcow2", "raw", ... */
    uint64_t capacity;   /* virtual size, bytes */
    uint64_t allocation; /* bytes on disk */
    bool has_backing;    /* true when the volume has a backing file, or when refusal is set */
    /*
     * Empty, or why the image must not be used as a standalone disk (qcow2
     * external data file, encryption, unknown incompatible features): a
     * sentence for the user.  has_backing is then true as well, so a caller
     * that only checks has_backing refuses it too.
     */
    char refusal[128];
};

struct storage_ops {
    /*
     * Mandatory. Make sure pool @pool exists as a directory pool at @dir,
     * is built, active and autostarted.  Idempotent.
     */
    int (*ensure_pool)(void *self, const char *pool, const char *dir, struct st_error *err);
    /*
     * Mandatory. Create qcow2 volume @vol in @pool whose backing file is
     * @backing_path (format @backing_format) and whose virtual size is
     * @capacity bytes (at least the backing file's).  Fills *out on success.
     */
    int (*clone_overlay)(void *self, const char *pool, const char *vol, const char *backing_path,
                         const char *backing_format, uint64_t capacity,
                         struct storage_vol_info *out, struct st_error *err);
    /*
     * Mandatory. Copy the server-side file @source_path into @pool as @vol
     * and probe it.  The source must lie in the backend's configured import
     * directory (ST_ERR_INVALID otherwise).  Fills *out with what was probed;
     * the caller decides whether it is acceptable and deletes it if not.
     */
    int (*import)(void *self, const char *pool, const char *vol, const char *source_path,
                  struct storage_vol_info *out, struct st_error *err);
    /* Mandatory. Delete a volume; ST_ERR_NOT_FOUND when it is not there. */
    int (*remove)(void *self, const char *pool, const char *vol, struct st_error *err);
    /* Mandatory. */
    int (*info)(void *self, const char *pool, const char *vol, struct storage_vol_info *out,
                struct st_error *err);
    /* Mandatory. */
    void (*close)(void *self);
    /*
     * Optional. The names of every volume in @pool, in one call (for
     * reconciliation).  *names is a malloc'ed array of malloc'ed strings;
     * free with storage_names_free().
     */
    int (*list_volumes)(void *self, const char *pool, char ***names, size_t *n,
                        struct st_error *err);
};

struct storage {
    const struct storage_ops *ops;
    void *self;
};

static inline int
storage_ensure_pool(struct storage *s, const char *pool, const char *dir, struct st_error *err)
{
    return s->ops->ensure_pool(s->self, pool, dir, err);
}

static inline int
storage_clone_overlay(struct storage *s, const char *pool, const char *vol,
                      const char *backing_path, const char *backing_format, uint64_t capacity,
                      struct storage_vol_info *out, struct st_error *err)
{
    return s->ops->clone_overlay(s->self, pool, vol, backing_path, backing_format, capacity, out,
                                 err);
}

static inline int
storage_import(struct storage *s, const char *pool, const char *vol, const char *source_path,
               struct storage_vol_info *out, struct st_error *err)
{
    return s->ops->import(s->self, pool, vol, source_path, out, err);
}

static inline int
storage_remove(struct storage *s, const char *pool, const char *vol, struct st_error *err)
{
    return s->ops->remove(s->self, pool, vol, err);
}

static inline int
storage_info(struct storage *s, const char *pool, const char *vol, struct storage_vol_info *out,
             struct st_error *err)
{
    return s->ops->info(s->self, pool, vol, out, err);
}

static inline int
storage_list_volumes(struct storage *s, const char *pool, char ***names, size_t *n,
                     struct st_error *err)
{
    if (!s->ops->list_volumes)
        return st_error_set(err, ST_ERR_UNSUPPORTED, "storage backend cannot list volumes");
    return s->ops->list_volumes(s->self, pool, names, n, err);
}

/* Free what list_volumes() returned; NULL-safe. */
void storage_names_free(char **names, size_t n);

static inline void
storage_close(struct storage *s)
{
    if (s && s->ops) {
        s->ops->close(s->self);
        s->ops = NULL;
        s->self = NULL;
    }
}

#endif
