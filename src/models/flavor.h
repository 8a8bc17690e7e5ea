/*
 * flavor.h - a named VM size.
 */
#ifndef STRATUS_MODELS_FLAVOR_H
#define STRATUS_MODELS_FLAVOR_H

#include <jansson.h>

#include "models/common.h"

struct flavor {
    char id[ST_ID_BUF];
    char owner_id[ST_ID_BUF];
    char name[ST_NAME_BUF];
    unsigned vcpus;
    unsigned memory_mib;
    unsigned disk_gib;
    /* Bumped by every update; a write names the revision it read (compare-and-set). */
    uint64_t revision;
    int64_t created_at;
};

/* POST /v1/flavors body: all four members required. */
struct flavor_create_req {
    char name[ST_NAME_BUF];
    unsigned vcpus;
    unsigned memory_mib;
    unsigned disk_gib;
};

struct flavor_list {
    struct flavor *items;
    size_t count;
    bool more;
};
void flavor_list_release(struct flavor_list *list);

struct flavor_filter {
    char marker[ST_ID_BUF];
    unsigned limit;
};

int flavor_create_req_decode(const json_t *body, struct flavor_create_req *out,
                             struct st_error *err);
json_t *flavor_to_json(const struct flavor *flavor);

#endif
