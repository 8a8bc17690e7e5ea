/*
 * flavor_service.h - named VM sizes.
 */
#ifndef STRATUS_SERVICES_FLAVOR_SERVICE_H
#define STRATUS_SERVICES_FLAVOR_SERVICE_H

#include "models/flavor.h"
#include "repositories/flavor_repo.h"

struct flavor_service {
    struct flavor_repo *flavors;
};

int flavor_service_create(struct flavor_service *svc, const char *owner,
                          const struct flavor_create_req *req, struct flavor *out,
                          struct st_error *err);
int flavor_service_get(struct flavor_service *svc, const char *owner, const char *id,
                       struct flavor *out, struct st_error *err);
int flavor_service_list(struct flavor_service *svc, const char *owner,
                        const struct flavor_filter *f, struct flavor_list *out,
                        struct st_error *err);
/* Remove a flavor; ST_ERR_PRECONDITION when @expect (If-Match; 0 for any) is not its revision. */
int flavor_service_delete(struct flavor_service *svc, const char *owner, const char *id,
                          uint64_t expect, struct st_error *err);

#endif
