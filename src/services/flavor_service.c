#include "services/flavor_service.h"

#include <string.h>

#include "util/mem.h"

static int
check_range(const char *field, unsigned value, unsigned min, unsigned max, struct st_error *err)
{
    if (value < min || value > max)
        return st_error_set(err, ST_ERR_INVALID, "%s %u is out of range (%u..%u)", field, value,
                            min, max);
    return 0;
}

int
flavor_service_create(struct flavor_service *svc, const char *owner,
                      const struct flavor_create_req *req, struct flavor *out, struct st_error *err)
{
    struct flavor flavor;

    if (st_name_check("name", req->name, err) < 0 ||
        check_range("vcpus", req->vcpus, ST_VCPUS_MIN, ST_VCPUS_MAX, err) < 0 ||
        check_range("memory_mib", req->memory_mib, ST_MEMORY_MIB_MIN, ST_MEMORY_MIB_MAX, err) < 0 ||
        check_range("disk_gib", req->disk_gib, ST_DISK_GIB_MIN, ST_DISK_GIB_MAX, err) < 0)
        return -1;
    memset(&flavor, 0, sizeof(flavor));
    st_uuid_generate(flavor.id);
    st_strlcpy(flavor.owner_id, owner ? owner : "", sizeof(flavor.owner_id));
    st_strlcpy(flavor.name, req->name, sizeof(flavor.name));
    flavor.vcpus = req->vcpus;
    flavor.memory_mib = req->memory_mib;
    flavor.disk_gib = req->disk_gib;
    flavor.revision = 1;
    flavor.created_at = st_now_ms();
    if (flavor_repo_insert(svc->flavors, &flavor, err) < 0)
        return -1;
    *out = flavor;
    return 0;
}

int
flavor_service_get(struct flavor_service *svc, const char *owner, const char *id,
                   struct flavor *out, struct st_error *err)
{
    return flavor_repo_get(svc->flavors, owner, id, out, err);
}

int
flavor_service_list(struct flavor_service *svc, const char *owner, const struct flavor_filter *f,
                    struct flavor_list *out, struct st_error *err)
{
    return flavor_repo_list(svc->flavors, owner, f, out, err);
}

/* VMs copied the sizes when they were made, so a flavor in use may go. */
int
flavor_service_delete(struct flavor_service *svc, const char *owner, const char *id,
                      uint64_t expect, struct st_error *err)
{
    struct flavor flavor;

    /* Flavors never change once made: the revision read is the one removed. */
    if (expect && (flavor_repo_get(svc->flavors, owner, id, &flavor, err) < 0 ||
                   st_revision_check("flavor", id, flavor.revision, expect, err) < 0))
        return -1;
    return flavor_repo_remove(svc->flavors, owner, id, err);
}
