#include "services/image_service.h"

#include <string.h>

#include "services/vm_service.h"
#include "util/mem.h"

/* Why the probed volume cannot become an image, or 0 when it can. */
static int
check_probed(const struct image_create_req *req, const struct storage_vol_info *info,
             struct st_error *err)
{
    enum image_format probed;

    if (image_format_parse(info->format, &probed) < 0)
        return st_error_set(err, ST_ERR_INVALID,
                            "file is %s; only qcow2 and raw images are accepted",
                            info->format[0] ? info->format : "of an unknown format");
    if (probed != req->format)
        return st_error_set(err, ST_ERR_INVALID, "file is %s but format says %s", info->format,
                            image_format_name(req->format));
    if (info->refusal[0])
        return st_error_set(err, ST_ERR_INVALID, "image refused: %s", info->refusal);
    if (info->has_backing)
        return st_error_set(err, ST_ERR_INVALID,
                            "image has a backing file; only standalone images are accepted");
    if (info->capacity == 0)
        return st_error_set(err, ST_ERR_INVALID, "image has a virtual size of 0 bytes");
    /* No VM could use it: the largest disk a VM may have is smaller. */
    if (info->capacity > (uint64_t)ST_DISK_GIB_MAX << 30)
        return st_error_set(err, ST_ERR_INVALID,
                            "image has a virtual size of %llu bytes, more than the largest disk "
                            "(%u GiB)",
                            (unsigned long long)info->capacity, ST_DISK_GIB_MAX);
    return 0;
}

int
image_service_register(struct image_service *svc, const char *owner,
                       const struct image_create_req *req, struct image *out, struct st_error *err)
{
    return image_service_register_as(svc, owner, false, req, out, err);
}

int
image_service_register_as(struct image_service *svc, const char *owner, bool may_publish,
                          const struct image_create_req *req, struct image *out,
                          struct st_error *err)
{
    struct st_error ignored = {0};
    struct storage_vol_info info;
    struct image image;
    char vol[ST_NAME_BUF];
    bool public = req->has_visibility && req->visibility == IMAGE_VISIBILITY_PUBLIC;

    if (st_name_check("name", req->name, err) < 0)
        return -1;
    if (public && !may_publish)
        return st_error_set(err, ST_ERR_FORBIDDEN, "only an admin may register a public image");
    memset(&image, 0, sizeof(image));
    st_uuid_generate(image.id);
    st_strlcpy(image.owner_id, owner ? owner : "", sizeof(image.owner_id));
    st_strlcpy(image.name, req->name, sizeof(image.name));
    image.format = req->format;
    image.status = IMAGE_STATUS_ACTIVE;
    image.visibility = public ? IMAGE_VISIBILITY_PUBLIC : IMAGE_VISIBILITY_PRIVATE;
    vm_service_image_vol_name(image.id, vol);
    if (storage_import(svc->storage, svc->image_pool, vol, req->source_path, &info, err) < 0)
        return -1;
    if (check_probed(req, &info, err) < 0)
        goto fail;
    image.size_bytes = info.allocation;
    image.virtual_size_bytes = info.capacity;
    image.revision = 1;
    image.created_at = image.updated_at = st_now_ms();
    if (image_repo_insert(svc->images, &image, err) < 0)
        goto fail;
    *out = image;
    return 0;

fail:
    /* The volume is ours alone until the row exists: take it away again. */
    storage_remove(svc->storage, svc->image_pool, vol, &ignored);
    return -1;
}

int
image_service_get(struct image_service *svc, const char *owner, const char *id, struct image *out,
                  struct st_error *err)
{
    return image_repo_get(svc->images, owner, id, out, err);
}

int
image_service_list(struct image_service *svc, const char *owner, const struct image_filter *f,
                   struct image_list *out, struct st_error *err)
{
    return image_repo_list(svc->images, owner, f, out, err);
}

int
image_service_delete(struct image_service *svc, const char *owner, const char *id, uint64_t expect,
                     struct st_error *err)
{
    struct st_error local = {0};
    struct image image;
    char vol[ST_NAME_BUF];
    size_t users = 0;

    if (image_repo_get(svc->images, owner, id, &image, err) < 0)
        return -1;
    /* Images never change once registered: the revision read is the one removed. */
    if (st_revision_check("image", id, image.revision, expect, err) < 0)
        return -1;
    /* A public image is visible to all, but only its owner (or an admin) may remove it. */
    if (owner && strcmp(image.owner_id, owner) != 0)
        return st_error_set(err, ST_ERR_FORBIDDEN,
                            "image '%s' is public and belongs to another user: only its owner or "
                            "an admin may delete it",
                            id);
    /* Any owner's VM counts: its disk is an overlay on this image's volume. */
    if (vm_repo_count_by_image(svc->vms, NULL, id, &users, err) < 0)
        return -1;
    if (users > 0)
        return st_error_set(err, ST_ERR_CONFLICT, "image '%s' is used by %zu %s", id, users,
                            users == 1 ? "VM" : "VMs");
    /*
     * The row goes first, and only while no VM row names the image (checked
     * atomically by the store), so a VM created at the same moment either
     * holds the image or finds it gone; only then is the file safe to drop.
     */
    if (image_repo_remove(svc->images, owner, id, err) < 0)
        return -1;
    vm_service_image_vol_name(id, vol);
    if (storage_remove(svc->storage, svc->image_pool, vol, &local) < 0 &&
        local.code != ST_ERR_NOT_FOUND) {
        struct st_error ignored = {0};

        /* Put the row back so the image stays visible and the delete can be retried. */
        image_repo_insert(svc->images, &image, &ignored);
        if (err)
            *err = local;
        return -1;
    }
    return 0;
}
