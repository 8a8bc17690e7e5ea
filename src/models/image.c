#include "models/image.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "util/mem.h"

#define GIB ((uint64_t)1 << 30)

static const char *const image_format_names[] = {
    [IMAGE_FORMAT_QCOW2] = "qcow2",
    [IMAGE_FORMAT_RAW] = "raw",
};

static const char *const image_visibility_names[] = {
    [IMAGE_VISIBILITY_PRIVATE] = "private",
    [IMAGE_VISIBILITY_PUBLIC] = "public",
};

static const char *const image_status_names[] = {
    [IMAGE_STATUS_ACTIVE] = "active",
};

static const char *const image_create_fields[] = {"name", "source_path", "format", "visibility"};

void
image_list_release(struct image_list *list)
{
    if (!list)
        return;
    free(list->items);
    memset(list, 0, sizeof(*list));
}

/* Index of name in names[0..n), or -1. */
static int
name_index(const char *const *names, size_t n, const char *name)
{
    size_t i;

    for (i = 0; name && i < n; i++) {
        if (strcmp(name, names[i]) == 0)
            return (int)i;
    }
    return -1;
}

const char *
image_format_name(enum image_format format)
{
    if ((size_t)format >= ST_ARRAY_LEN(image_format_names))
        return "unknown";
    return image_format_names[format];
}

int
image_format_parse(const char *name, enum image_format *out)
{
    int i = name_index(image_format_names, ST_ARRAY_LEN(image_format_names), name);

    if (i < 0)
        return -1;
    *out = (enum image_format)i;
    return 0;
}

const char *
image_visibility_name(enum image_visibility v)
{
    if ((size_t)v >= ST_ARRAY_LEN(image_visibility_names))
        return "unknown";
    return image_visibility_names[v];
}

int
image_visibility_parse(const char *name, enum image_visibility *out)
{
    int i = name_index(image_visibility_names, ST_ARRAY_LEN(image_visibility_names), name);

    if (i < 0)
        return -1;
    *out = (enum image_visibility)i;
    return 0;
}

const char *
image_status_name(enum image_status status)
{
    if ((size_t)status >= ST_ARRAY_LEN(image_status_names))
        return "unknown";
    return image_status_names[status];
}

int
image_status_parse(const char *name, enum image_status *out)
{
    int i = name_index(image_status_names, ST_ARRAY_LEN(image_status_names), name);

    if (i < 0)
        return -1;
    *out = (enum image_status)i;
    return 0;
}

unsigned
image_min_disk_gib(const struct image *image)
{
    uint64_t gib = image->virtual_size_bytes / GIB + (image->virtual_size_bytes % GIB != 0);

    if (gib == 0)
        return 1;
    return gib > UINT_MAX ? UINT_MAX : (unsigned)gib;
}

/* Quote the path back only when that is safe and short enough to help. */
static int
image_relative_path_error(const char *path, struct st_error *err)
{
    size_t i, len = strlen(path);

    for (i = 0; i < len && len <= 64; i++) {
        if ((unsigned char)path[i] < 0x20 || (unsigned char)path[i] >= 0x7f || path[i] == '\'')
            break;
    }
    if (len <= 64 && i == len)
        return st_error_set(
            err, ST_ERR_INVALID,
            "field 'source_path' must be an absolute path starting with '/', got '%s'", path);
    return st_error_set(err, ST_ERR_INVALID,
                        "field 'source_path' must be an absolute path starting with '/'");
}

int
image_create_req_decode(const json_t *body, struct image_create_req *out, struct st_error *err)
{
    struct image_create_req req;
    int rc, format = 0, visibility = 0;

    memset(&req, 0, sizeof(req));
    if (st_json_check_object(body, image_create_fields, ST_ARRAY_LEN(image_create_fields), err) < 0)
        return -1;
    if ((rc = st_json_get_name(body, "name", req.name, err)) < 0)
        return -1;
    if (!rc)
        return st_error_set(err, ST_ERR_INVALID, "field 'name' is required");
    if ((rc = st_json_get_string(body, "source_path", ST_PATH_BUF - 1, req.source_path,
                                 sizeof(req.source_path), err)) < 0)
        return -1;
    if (!rc)
        return st_error_set(err, ST_ERR_INVALID, "field 'source_path' is required");
    if (req.source_path[0] != '/')
        return image_relative_path_error(req.source_path, err);
    if ((rc = st_json_get_enum(body, "format", image_format_names, ST_ARRAY_LEN(image_format_names),
                               &format, err)) < 0)
        return -1;
    if (!rc)
        return st_error_set(err, ST_ERR_INVALID, "field 'format' is required");
    req.format = (enum image_format)format;
    if ((rc = st_json_get_enum(body, "visibility", image_visibility_names,
                               ST_ARRAY_LEN(image_visibility_names), &visibility, err)) < 0)
        return -1;
    req.has_visibility = rc == 1;
    req.visibility = rc == 1 ? (enum image_visibility)visibility : IMAGE_VISIBILITY_PRIVATE;
    *out = req;
    return 0;
}

/* Sizes beyond what a JSON integer holds cannot occur on real disks; clamp anyway. */
static json_int_t
bytes_to_json_int(uint64_t n)
{
    return n > (uint64_t)LLONG_MAX ? LLONG_MAX : (json_int_t)n;
}

json_t *
image_to_json(const struct image *image)
{
    json_t *doc;
    char created[ST_TIME_BUF], updated[ST_TIME_BUF];

    st_time_format(image->created_at, created);
    st_time_format(image->updated_at, updated);
    doc = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:s}", "id", image->id,
                    "name", image->name, "owner_id", image->owner_id, "format",
                    image_format_name(image->format), "status", image_status_name(image->status),
                    "visibility", image_visibility_name(image->visibility), "size_bytes",
                    bytes_to_json_int(image->size_bytes), "virtual_size_bytes",
                    bytes_to_json_int(image->virtual_size_bytes), "min_disk_gib",
                    (json_int_t)image_min_disk_gib(image), "created_at", created, "updated_at",
                    updated);
    json_object_set_new(doc, "revision", json_integer((json_int_t)image->revision));
    return doc;
}
