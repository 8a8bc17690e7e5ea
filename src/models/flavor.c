#include "models/flavor.h"

#include <stdlib.h>
#include <string.h>

#include "util/mem.h"

static const char *const flavor_create_fields[] = {"name", "vcpus", "memory_mib", "disk_gib"};

void
flavor_list_release(struct flavor_list *list)
{
    if (!list)
        return;
    free(list->items);
    memset(list, 0, sizeof(*list));
}

/* A required size member: present, an integer, within [min, max]. */
static int
flavor_get_size(const json_t *body, const char *field, unsigned min, unsigned max, unsigned *out,
                struct st_error *err)
{
    int rc = st_json_get_uint(body, field, min, max, out, err);

    if (rc < 0)
        return -1;
    if (!rc)
        return st_error_set(err, ST_ERR_INVALID, "field '%s' is required", field);
    return 0;
}

int
flavor_create_req_decode(const json_t *body, struct flavor_create_req *out, struct st_error *err)
{
    struct flavor_create_req req;
    int rc;

    memset(&req, 0, sizeof(req));
    if (st_json_check_object(body, flavor_create_fields, ST_ARRAY_LEN(flavor_create_fields), err) <
        0)
        return -1;
    if ((rc = st_json_get_name(body, "name", req.name, err)) < 0)
        return -1;
    if (!rc)
        return st_error_set(err, ST_ERR_INVALID, "field 'name' is required");
    if (flavor_get_size(body, "vcpus", ST_VCPUS_MIN, ST_VCPUS_MAX, &req.vcpus, err) < 0 ||
        flavor_get_size(body, "memory_mib", ST_MEMORY_MIB_MIN, ST_MEMORY_MIB_MAX, &req.memory_mib,
                        err) < 0 ||
        flavor_get_size(body, "disk_gib", ST_DISK_GIB_MIN, ST_DISK_GIB_MAX, &req.disk_gib, err) < 0)
        return -1;
    *out = req;
    return 0;
}

json_t *
flavor_to_json(const struct flavor *flavor)
{
    json_t *doc;
    char created[ST_TIME_BUF];

    st_time_format(flavor->created_at, created);
    doc = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:s}", "id", flavor->id, "name", flavor->name,
                    "owner_id", flavor->owner_id, "vcpus", (json_int_t)flavor->vcpus, "memory_mib",
                    (json_int_t)flavor->memory_mib, "disk_gib", (json_int_t)flavor->disk_gib,
                    "created_at", created);
    json_object_set_new(doc, "revision", json_integer((json_int_t)flavor->revision));
    return doc;
}
