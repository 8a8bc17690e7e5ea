#include "models/vm.h"

#include <stdlib.h>
#include <string.h>

#include "util/mem.h"

static const char *const vm_status_names[] = {
    [VM_STATUS_CREATING] = "creating", [VM_STATUS_RUNNING] = "running",
    [VM_STATUS_STOPPED] = "stopped",   [VM_STATUS_PAUSED] = "paused",
    [VM_STATUS_DELETING] = "deleting", [VM_STATUS_ERROR] = "error",
    [VM_STATUS_MISSING] = "missing",
};

static const char *const vm_step_names[] = {
    [VM_STEP_ROW] = "row",         [VM_STEP_DISK] = "disk", [VM_STEP_DEFINED] = "defined",
    [VM_STEP_STARTED] = "started", [VM_STEP_DONE] = "done",
};

static const char *const vm_create_fields[] = {
    "name", "image_id", "flavor_id", "vcpus", "memory_mib", "disk_gib",
};

static const char *const vm_patch_fields[] = {"name", "vcpus", "memory_mib"};

/* Members a client may think it can PATCH, but which are fixed at create. */
static const char *const vm_fixed_fields[] = {"disk_gib", "image_id", "flavor_id"};

void
vm_list_release(struct vm_list *list)
{
    if (!list)
        return;
    free(list->items);
    memset(list, 0, sizeof(*list));
}

const char *
vm_status_name(enum vm_status status)
{
    if ((size_t)status >= ST_ARRAY_LEN(vm_status_names))
        return "unknown";
    return vm_status_names[status];
}

int
vm_status_parse(const char *name, enum vm_status *out)
{
    size_t i;

    if (!name)
        return -1;
    for (i = 0; i < ST_ARRAY_LEN(vm_status_names); i++) {
        if (strcmp(name, vm_status_names[i]) == 0) {
            *out = (enum vm_status)i;
            return 0;
        }
    }
    return -1;
}

const char *
vm_step_name(enum vm_step step)
{
    if ((size_t)step >= ST_ARRAY_LEN(vm_step_names))
        return "unknown";
    return vm_step_names[step];
}

/* The sizing half of a create body: flavor_id XOR all three numbers. */
static int
vm_create_sizing_check(bool has_flavor, bool has_vcpus, bool has_memory, bool has_disk,
                       struct st_error *err)
{
    if (has_flavor && (has_vcpus || has_memory || has_disk))
        return st_error_set(
            err, ST_ERR_INVALID,
            "give either field 'flavor_id' or fields 'vcpus', 'memory_mib' and 'disk_gib', not both");
    if (has_flavor || (has_vcpus && has_memory && has_disk))
        return 0;
    if (!has_vcpus && !has_memory && !has_disk)
        return st_error_set(
            err, ST_ERR_INVALID,
            "field 'flavor_id' is required, or else fields 'vcpus', 'memory_mib' and 'disk_gib'");
    return st_error_set(err, ST_ERR_INVALID,
                        "field '%s' is required when sizing by hand (without 'flavor_id')",
                        !has_vcpus ? "vcpus" : (!has_memory ? "memory_mib" : "disk_gib"));
}

int
vm_create_req_decode(const json_t *body, struct vm_create_req *out, struct st_error *err)
{
    struct vm_create_req req;
    int has_name, has_image, has_flavor, has_vcpus, has_memory, has_disk;

    memset(&req, 0, sizeof(req));
    if (st_json_check_object(body, vm_create_fields, ST_ARRAY_LEN(vm_create_fields), err) < 0)
        return -1;
    if ((has_name = st_json_get_name(body, "name", req.name, err)) < 0)
        return -1;
    if (!has_name)
        return st_error_set(err, ST_ERR_INVALID, "field 'name' is required");
    if ((has_image = st_json_get_uuid(body, "image_id", req.image_id, err)) < 0)
        return -1;
    if (!has_image)
        return st_error_set(err, ST_ERR_INVALID, "field 'image_id' is required");
    if ((has_flavor = st_json_get_uuid(body, "flavor_id", req.flavor_id, err)) < 0)
        return -1;
    if ((has_vcpus = st_json_get_uint(body, "vcpus", ST_VCPUS_MIN, ST_VCPUS_MAX, &req.vcpus, err)) <
        0)
        return -1;
    if ((has_memory = st_json_get_uint(body, "memory_mib", ST_MEMORY_MIB_MIN, ST_MEMORY_MIB_MAX,
                                       &req.memory_mib, err)) < 0)
        return -1;
    if ((has_disk = st_json_get_uint(body, "disk_gib", ST_DISK_GIB_MIN, ST_DISK_GIB_MAX,
                                     &req.disk_gib, err)) < 0)
        return -1;
    if (vm_create_sizing_check(has_flavor, has_vcpus, has_memory, has_disk, err) < 0)
        return -1;
    *out = req;
    return 0;
}

int
vm_patch_req_decode(const json_t *body, struct vm_patch_req *out, struct st_error *err)
{
    struct vm_patch_req req;
    int rc;
    size_t i;

    memset(&req, 0, sizeof(req));
    /* Say why a create-time member is refused rather than calling it unknown. */
    for (i = 0; i < ST_ARRAY_LEN(vm_fixed_fields); i++) {
        if (json_object_get(body, vm_fixed_fields[i]))
            return st_error_set(err, ST_ERR_INVALID,
                                "field '%s' cannot be changed after the VM is created",
                                vm_fixed_fields[i]);
    }
    if (st_json_check_object(body, vm_patch_fields, ST_ARRAY_LEN(vm_patch_fields), err) < 0)
        return -1;
    if ((rc = st_json_get_name(body, "name", req.name, err)) < 0)
        return -1;
    req.has_name = rc > 0;
    if ((rc = st_json_get_uint(body, "vcpus", ST_VCPUS_MIN, ST_VCPUS_MAX, &req.vcpus, err)) < 0)
        return -1;
    req.has_vcpus = rc > 0;
    if ((rc = st_json_get_uint(body, "memory_mib", ST_MEMORY_MIB_MIN, ST_MEMORY_MIB_MAX,
                               &req.memory_mib, err)) < 0)
        return -1;
    req.has_memory_mib = rc > 0;
    if (!req.has_name && !req.has_vcpus && !req.has_memory_mib)
        return st_error_set(err, ST_ERR_INVALID,
                            "nothing to change: give name, vcpus or memory_mib");
    *out = req;
    return 0;
}

/*
 * The fault comes from a backend and may have been cut in the middle of a
 * UTF-8 sequence when it was stored; jansson refuses such strings, so fall
 * back to its ASCII part rather than lose the whole VM from a listing.
 */
static json_t *
vm_fault_to_json(const char *fault)
{
    char ascii[ST_FAULT_BUF];
    json_t *s;
    size_t i;

    if (!fault[0])
        return json_null();
    s = json_string(fault);
    if (s)
        return s;
    for (i = 0; fault[i] && i + 1 < sizeof(ascii); i++)
        ascii[i] = ((unsigned char)fault[i] < 0x80) ? fault[i] : '?';
    ascii[i] = '\0';
    return json_string(ascii);
}

json_t *
vm_to_json(const struct vm *vm)
{
    json_t *doc;
    char created[ST_TIME_BUF], updated[ST_TIME_BUF];

    st_time_format(vm->created_at, created);
    st_time_format(vm->updated_at, updated);
    doc = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:o, s:s, s:s, s:s, s:o}", "id", vm->id,
                    "name", vm->name, "status", vm_status_name(vm->status), "vcpus",
                    (json_int_t)vm->vcpus, "memory_mib", (json_int_t)vm->memory_mib, "disk_gib",
                    (json_int_t)vm->disk_gib, "image_id", vm->image_id, "flavor_id",
                    vm->flavor_id[0] ? json_string(vm->flavor_id) : json_null(), "owner_id",
                    vm->owner_id, "created_at", created, "updated_at", updated, "fault",
                    vm_fault_to_json(vm->fault));
    json_object_set_new(doc, "revision", json_integer((json_int_t)vm->revision));
    return doc;
}
