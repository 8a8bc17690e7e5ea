/*
 * image_service.h - base images.
 */
#ifndef STRATUS_SERVICES_IMAGE_SERVICE_H
#define STRATUS_SERVICES_IMAGE_SERVICE_H

#include "models/image.h"
#include "repositories/image_repo.h"
#include "repositories/storage.h"
#include "repositories/vm_repo.h"

struct image_service {
    struct image_repo *images;
    struct vm_repo *vms;
    struct storage *storage;
    const char *image_pool;
};

/*
 * Register a file already on the server: copy it into the image pool, check
 * that the probed format is the declared one, that it has no backing file
 * and a non-zero virtual size, then insert the row.  Nothing is left behind
 * on failure (ST_ERR_INVALID for an unacceptable file, ST_ERR_CONFLICT for a
 * taken name).
 */
int image_service_register(struct image_service *svc, const char *owner,
                           const struct image_create_req *req, struct image *out,
                           struct st_error *err);
int image_service_get(struct image_service *svc, const char *owner, const char *id,
                      struct image *out, struct st_error *err);
int image_service_list(struct image_service *svc, const char *owner, const struct image_filter *f,
                       struct image_list *out, struct st_error *err);
/* ST_ERR_CONFLICT while any VM is built on it. */
int image_service_delete(struct image_service *svc, const char *owner, const char *id,
                         struct st_error *err);

#endif
