/*
 * image.h - a base image in the `images` pool.
 */
#ifndef STRATUS_MODELS_IMAGE_H
#define STRATUS_MODELS_IMAGE_H

#include <jansson.h>

#include "models/common.h"

enum image_format {
    IMAGE_FORMAT_QCOW2 = 0,
    IMAGE_FORMAT_RAW,
};

/* private: the owner's alone; public: usable by everyone (admins make them). */
enum image_visibility {
    IMAGE_VISIBILITY_PRIVATE = 0,
    IMAGE_VISIBILITY_PUBLIC,
};

enum image_status {
    IMAGE_STATUS_ACTIVE = 0,
};

struct image {
    char id[ST_ID_BUF];
    char owner_id[ST_ID_BUF];
    char name[ST_NAME_BUF];
    enum image_format format;
    enum image_status status;
    enum image_visibility visibility;
    uint64_t size_bytes;         /* bytes on disk */
    uint64_t virtual_size_bytes; /* guest-visible size */
    /* Bumped by every update; a write names the revision it read (compare-and-set). */
    uint64_t revision;
    int64_t created_at;
    int64_t updated_at;
};

/* POST /v1/images body. */
struct image_create_req {
    char name[ST_NAME_BUF];
    char source_path[ST_PATH_BUF];
    enum image_format format;
    bool has_visibility; /* absent: private */
    enum image_visibility visibility;
};

struct image_list {
    struct image *items;
    size_t count;
    bool more;
};
void image_list_release(struct image_list *list);

/* Paging of GET /v1/images. */
struct image_filter {
    char marker[ST_ID_BUF];
    unsigned limit;
};

const char *image_format_name(enum image_format format);
int image_format_parse(const char *name, enum image_format *out);
const char *image_visibility_name(enum image_visibility v);
int image_visibility_parse(const char *name, enum image_visibility *out);
const char *image_status_name(enum image_status status);
int image_status_parse(const char *name, enum image_status *out);

/* Smallest disk_gib a VM built on this image may ask for (>= 1). */
unsigned image_min_disk_gib(const struct image *image);

int image_create_req_decode(const json_t *body, struct image_create_req *out, struct st_error *err);
json_t *image_to_json(const struct image *image);

#endif
