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
/*
 * The same; a public image (req->visibility) only when @may_publish (the
 * caller is an admin), else ST_ERR_FORBIDDEN.  image_service_register()
 * never publishes.
 */
int image_service_register_as(struct image_service *svc, const char *owner, bool may_publish,
                              const struct image_create_req *req, struct image *out,
                              struct st_error *err);

/* Within @owner's scope, which includes every public image. */
int image_service_get(struct image_service *svc, const char *owner, const char *id,
                      struct image *out, struct st_error *err);
int image_service_list(struct image_service *svc, const char *owner, const struct image_filter *f,
                       struct image_list *out, struct st_error *err);
/*
 * ST_ERR_CONFLICT while any VM is built on it; ST_ERR_FORBIDDEN for
 * another owner's public image (admins pass a NULL @owner); ST_ERR_PRECONDITION
 * when @expect (If-Match; 0 for any) is not its revision.
 */
int image_service_delete(struct image_service *svc, const char *owner, const char *id,
                         uint64_t expect, struct st_error *err);

#endif
