/*
 * vm.h - the virtual machine as stratus stores and shows it.
 */
#ifndef STRATUS_MODELS_VM_H
#define STRATUS_MODELS_VM_H

#include <jansson.h>

#include "models/common.h"

/*
 * What was asked and last seen.  The stored status is one of creating,
 * running, stopped, paused, deleting, error.  `missing` is never stored:
 * it is shown when a row's domain has vanished from the hypervisor.
 */
enum vm_status {
    VM_STATUS_CREATING = 0,
    VM_STATUS_RUNNING,
    VM_STATUS_STOPPED,
    VM_STATUS_PAUSED,
    VM_STATUS_DELETING,
    VM_STATUS_ERROR,
    VM_STATUS_MISSING,
};

/*
 * How far the create transaction (ARCHITECTURE §6) got.  Each step is
 * recorded in the row before the next one begins, so a rollback (or a
 * later recovery) knows what to undo.
 */
enum vm_step {
    VM_STEP_ROW = 0, /* row inserted, nothing else exists */
    VM_STEP_DISK,    /* the root disk overlay exists */
    VM_STEP_DEFINED, /* the domain is defined */
    VM_STEP_STARTED, /* the domain was started */
    VM_STEP_DONE,    /* create finished */
};

struct vm {
    char id[ST_ID_BUF];
    char owner_id[ST_ID_BUF];
    char name[ST_NAME_BUF];
    enum vm_status status;
    enum vm_step step;
    unsigned vcpus;
    unsigned memory_mib;
    unsigned disk_gib;
    char image_id[ST_ID_BUF];
    char flavor_id[ST_ID_BUF]; /* "" when sized by hand */
    char fault[ST_FAULT_BUF];  /* "" when none; shown as null */
    /* Bumped by every update; a write names the revision it read (compare-and-set). */
    uint64_t revision;
    int64_t created_at; /* ms since epoch */
    int64_t updated_at;
};

/* POST /v1/vms body. flavor_id XOR (vcpus, memory_mib, disk_gib). */
struct vm_create_req {
    char name[ST_NAME_BUF];
    char image_id[ST_ID_BUF];
    char flavor_id[ST_ID_BUF]; /* "" when absent */
    unsigned vcpus;            /* 0 when absent */
    unsigned memory_mib;
    unsigned disk_gib;
};

/* PATCH /v1/vms/{id} body: every member optional, at least one present. */
struct vm_patch_req {
    bool has_name, has_vcpus, has_memory_mib;
    char name[ST_NAME_BUF];
    unsigned vcpus;
    unsigned memory_mib;
};

/* Filters and paging of GET /v1/vms. */
struct vm_filter {
    bool has_status;
    enum vm_status status;
    char name[ST_NAME_BUF]; /* "" = any; exact match */
    char marker[ST_ID_BUF]; /* "" = from the start; else the last id seen */
    unsigned limit;         /* 1..ST_LIST_LIMIT_MAX */
};

/* A page of VMs. Free items with vm_list_release(). */
struct vm_list {
    struct vm *items;
    size_t count;
    bool more; /* true when another page may follow */
    /*
     * Where the next page starts (valid when more): the id of the last row
     * the store returned, which need not be the last item kept when a filter
     * applied after the store query dropped some.
     */
    char next_marker[ST_ID_BUF];
};
void vm_list_release(struct vm_list *list);

/* "running", ... ; never NULL. */
const char *vm_status_name(enum vm_status status);
/* 0 and *out on a known name, else -1 (nothing set; no error filled). */
int vm_status_parse(const char *name, enum vm_status *out);
const char *vm_step_name(enum vm_step step);

/*
 * Decode and validate a create body.  Unknown members are refused with the
 * member named; wrong types, out-of-range numbers and bad names each get a
 * message naming the field.  Returns 0 and fills *out, or -1 with
 * ST_ERR_INVALID.
 */
int vm_create_req_decode(const json_t *body, struct vm_create_req *out, struct st_error *err);
int vm_patch_req_decode(const json_t *body, struct vm_patch_req *out, struct st_error *err);

/* The VM as the API shows it (ARCHITECTURE §3). New reference; caller json_decref()s. */
json_t *vm_to_json(const struct vm *vm);

#endif
