#include "services/vm_service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/flavor.h"
#include "models/image.h"
#include "util/mem.h"

#define GIB ((uint64_t)1 << 30)

/* Used when the configuration leaves the poll interval unset. */
#define POLL_INTERVAL_DEFAULT_MS 100

/* How often a write that met a moved row is tried on the fresh one. */
#define SAVE_TRIES 8

static const char *const action_names[] = {
    [VM_ACTION_START] = "start",           [VM_ACTION_STOP] = "stop",
    [VM_ACTION_FORCE_STOP] = "force-stop", [VM_ACTION_REBOOT] = "reboot",
    [VM_ACTION_PAUSE] = "pause",           [VM_ACTION_RESUME] = "resume",
    [VM_ACTION_RESIZE] = "resize",
};

static const char *const action_steps[][5] = {
    [VM_ACTION_START] = {"define", "start", "record", NULL},
    [VM_ACTION_STOP] = {"shutdown", "wait", "destroy", "record", NULL},
    [VM_ACTION_FORCE_STOP] = {"destroy", "record", NULL},
    [VM_ACTION_REBOOT] = {"reboot", "record", NULL},
    [VM_ACTION_PAUSE] = {"suspend", "record", NULL},
    [VM_ACTION_RESUME] = {"resume", "record", NULL},
    [VM_ACTION_RESIZE] = {"define", "record", NULL},
};

const char *const *
vm_action_steps(enum vm_action action)
{
    if ((size_t)action >= ST_ARRAY_LEN(action_steps))
        BUG("an action without steps");
    return action_steps[action];
}

const char *
vm_action_name(enum vm_action action)
{
    if ((size_t)action >= ST_ARRAY_LEN(action_names))
        return "unknown";
    return action_names[action];
}

int
vm_action_parse(const char *name, enum vm_action *out)
{
    size_t i;

    if (!name)
        return -1;
    for (i = 0; i < ST_ARRAY_LEN(action_names); i++) {
        if (strcmp(name, action_names[i]) == 0) {
            *out = (enum vm_action)i;
            return 0;
        }
    }
    return -1;
}

void
vm_service_disk_vol_name(const char *vm_id, char out[ST_NAME_BUF])
{
    snprintf(out, ST_NAME_BUF, "vm-%s.qcow2", vm_id);
}

void
vm_service_image_vol_name(const char *image_id, char out[ST_NAME_BUF])
{
    snprintf(out, ST_NAME_BUF, "img-%s", image_id);
}

/* Hand a locally collected error to the caller's (possibly NULL) one. */
static void
error_pass(struct st_error *err, const struct st_error *local)
{
    if (err)
        *err = *local;
}

/* Stored states that say what stratus is doing, not what the guest does. */
static bool
status_is_live(enum vm_status status)
{
    return status == VM_STATUS_RUNNING || status == VM_STATUS_STOPPED || status == VM_STATUS_PAUSED;
}

static enum vm_status
status_from_hv(enum hv_state state)
{
    switch (state) {
    case HV_STATE_RUNNING:
    case HV_STATE_BLOCKED:
    case HV_STATE_SHUTDOWN:
        return VM_STATUS_RUNNING;
    case HV_STATE_PAUSED:
    case HV_STATE_PMSUSPENDED:
        return VM_STATUS_PAUSED;
    case HV_STATE_NOSTATE:
    case HV_STATE_SHUTOFF:
    case HV_STATE_CRASHED:
        return VM_STATUS_STOPPED;
    }
    return VM_STATUS_STOPPED;
}

int
vm_service_merge(struct vm_service *svc, struct vm *vm, struct st_error *err)
{
    struct st_error local = {0};
    enum hv_state state;

    if (!status_is_live(vm->status))
        return 0;
    if (hypervisor_state(svc->hv, vm->id, &state, &local) < 0) {
        if (local.code != ST_ERR_NOT_FOUND) {
            error_pass(err, &local);
            return -1;
        }
        vm->status = VM_STATUS_MISSING;
        return 0;
    }
    vm->status = status_from_hv(state);
    return 0;
}

int
vm_service_get(struct vm_service *svc, const char *owner, const char *id, struct vm *out,
               struct st_error *err)
{
    struct vm vm;

    if (vm_repo_get(svc->vms, owner, id, &vm, err) < 0)
        return -1;
    if (vm_service_merge(svc, &vm, err) < 0)
        return -1;
    *out = vm;
    return 0;
}

/*
 * An open-addressing index of the domains by id, so the list merge is O(n)
 * with no per-VM round trip.  Slots borrow the domain array.
 */
struct domain_index {
    const struct hv_domain_info **slots;
    size_t mask;
};

static size_t
id_hash(const char *id)
{
    size_t h = 1469598103934665603ull;

    for (; *id; id++)
        h = (h ^ (unsigned char)*id) * 1099511628211ull;
    return h;
}

static void
domain_index_build(struct domain_index *ix, const struct hv_domain_info *doms, size_t n)
{
    size_t cap = 16, i;

    while (cap < 2 * n)
        cap *= 2;
    ix->slots = st_xcalloc(cap, sizeof(*ix->slots));
    ix->mask = cap - 1;
    for (i = 0; i < n; i++) {
        size_t at = id_hash(doms[i].id) & ix->mask;

        while (ix->slots[at])
            at = (at + 1) & ix->mask;
        ix->slots[at] = &doms[i];
    }
}

static const struct hv_domain_info *
domain_index_find(const struct domain_index *ix, const char *id)
{
    size_t at = id_hash(id) & ix->mask;

    for (; ix->slots[at]; at = (at + 1) & ix->mask)
        if (strcmp(ix->slots[at]->id, id) == 0)
            return ix->slots[at];
    return NULL;
}

/* Shown status of @vm given the index of what the hypervisor runs. */
static enum vm_status
merged_status(const struct vm *vm, const struct domain_index *ix)
{
    const struct hv_domain_info *hit;

    if (!status_is_live(vm->status))
        return vm->status;
    hit = domain_index_find(ix, vm->id);
    return hit ? status_from_hv(hit->state) : VM_STATUS_MISSING;
}

int
vm_service_list(struct vm_service *svc, const char *owner, const struct vm_filter *f,
                struct vm_list *out, struct st_error *err)
{
    struct vm_filter repo_filter = *f;
    struct vm_list page = {0};
    struct hv_domain_info *doms = NULL;
    struct domain_index ix;
    size_t ndoms = 0, i, kept = 0;

    /*
     * Live statuses (and `missing`) are what the hypervisor says, not what
     * the row says: ask for every row and filter after the merge.  The
     * page may then be shorter than the limit; next_marker still moves on.
     */
    if (f->has_status && (status_is_live(f->status) || f->status == VM_STATUS_MISSING))
        repo_filter.has_status = false;
    if (vm_repo_list(svc->vms, owner, &repo_filter, &page, err) < 0)
        return -1;
    if (hypervisor_list_all(svc->hv, &doms, &ndoms, err) < 0) {
        vm_list_release(&page);
        return -1;
    }
    domain_index_build(&ix, doms, ndoms);
    if (page.more && page.count > 0)
        st_strlcpy(page.next_marker, page.items[page.count - 1].id, sizeof(page.next_marker));
    for (i = 0; i < page.count; i++) {
        struct vm *vm = &page.items[i];

        vm->status = merged_status(vm, &ix);
        if (f->has_status && vm->status != f->status)
            continue;
        if (kept != i)
            page.items[kept] = *vm;
        kept++;
    }
    page.count = kept;
    free(ix.slots);
    free(doms);
    *out = page;
    return 0;
}

int
vm_service_save_state(struct vm_service *svc, struct vm *vm, struct st_error *err)
{
    struct st_error local = {0};
    struct vm fresh;
    int tries;

    for (tries = 0; tries < SAVE_TRIES; tries++) {
        vm->updated_at = st_now_ms();
        if (vm_repo_update(svc->vms, NULL, vm, &local) == 0) {
            vm->revision++;
            return 0;
        }
        if (local.code != ST_ERR_STALE || vm_repo_get(svc->vms, NULL, vm->id, &fresh, &local) < 0)
            break;
        fresh.status = vm->status;
        fresh.step = vm->step;
        memcpy(fresh.fault, vm->fault, sizeof(fresh.fault));
        *vm = fresh;
    }
    error_pass(err, &local);
    return -1;
}

static int
record_step(struct vm_service *svc, struct vm *vm, enum vm_step step, struct st_error *err)
{
    vm->step = step;
    if (vm_service_save_state(svc, vm, err) < 0) {
        st_error_prefix(err, "recording step %s", vm_step_name(step));
        return -1;
    }
    return 0;
}

/* Resolve the sizes of a create request: by flavor or as given. */
static int
create_sizes(struct vm_service *svc, const char *owner, const struct vm_create_req *req,
             struct vm *vm, struct st_error *err)
{
    struct flavor flavor;
    struct st_error local = {0};

    if (req->flavor_id[0] == '\0') {
        if (req->vcpus == 0 || req->memory_mib == 0 || req->disk_gib == 0)
            return st_error_set(err, ST_ERR_INVALID,
                                "either flavor_id or vcpus, memory_mib and disk_gib are required");
        vm->vcpus = req->vcpus;
        vm->memory_mib = req->memory_mib;
        vm->disk_gib = req->disk_gib;
        return 0;
    }
    /* Flavors are shared: every user may build on any of them. */
    (void)owner;
    if (flavor_repo_get(svc->flavors, NULL, req->flavor_id, &flavor, &local) < 0) {
        if (local.code == ST_ERR_NOT_FOUND)
            return st_error_set(err, ST_ERR_INVALID, "flavor '%s' does not exist", req->flavor_id);
        error_pass(err, &local);
        return -1;
    }
    st_strlcpy(vm->flavor_id, flavor.id, sizeof(vm->flavor_id));
    vm->vcpus = flavor.vcpus;
    vm->memory_mib = flavor.memory_mib;
    vm->disk_gib = flavor.disk_gib;
    return 0;
}

/* Check the request and fill the new row (not yet inserted). */
static int
create_prepare(struct vm_service *svc, const char *owner, const struct vm_create_req *req,
               struct vm *vm, struct image *image, struct st_error *err)
{
    struct st_error local = {0};
    unsigned min_gib;

    if (st_name_check("name", req->name, err) < 0)
        return -1;
    if (image_repo_get(svc->images, owner, req->image_id, image, &local) < 0) {
        if (local.code == ST_ERR_NOT_FOUND)
            return st_error_set(err, ST_ERR_INVALID, "image '%s' does not exist", req->image_id);
        error_pass(err, &local);
        return -1;
    }
    memset(vm, 0, sizeof(*vm));
    if (create_sizes(svc, owner, req, vm, err) < 0)
        return -1;
    min_gib = image_min_disk_gib(image);
    if (vm->disk_gib < min_gib)
        return st_error_set(err, ST_ERR_INVALID,
                            "disk_gib %u is smaller than image '%s' needs (%u GiB)", vm->disk_gib,
                            image->id, min_gib);
    st_uuid_generate(vm->id);
    st_strlcpy(vm->owner_id, owner ? owner : "", sizeof(vm->owner_id));
    st_strlcpy(vm->name, req->name, sizeof(vm->name));
    st_strlcpy(vm->image_id, image->id, sizeof(vm->image_id));
    vm->status = VM_STATUS_CREATING;
    vm->step = VM_STEP_ROW;
    vm->revision = 1;
    vm->created_at = vm->updated_at = st_now_ms();
    return 0;
}

/* Clone the root disk over the image's volume; fills @disk. */
static int
create_disk(struct vm_service *svc, const struct vm *vm, const struct image *image,
            struct storage_vol_info *disk, struct st_error *err)
{
    struct storage_vol_info base;
    char base_vol[ST_NAME_BUF], disk_vol[ST_NAME_BUF];
    const char *base_format;

    vm_service_image_vol_name(image->id, base_vol);
    if (storage_info(svc->storage, svc->cfg.image_pool, base_vol, &base, err) < 0) {
        st_error_prefix(err, "volume of image '%s'", image->id);
        return -1;
    }
    /* Trust the probed format; fall back on the registered one. */
    base_format = base.format[0] ? base.format : image_format_name(image->format);
    vm_service_disk_vol_name(vm->id, disk_vol);
    return storage_clone_overlay(svc->storage, svc->cfg.disk_pool, disk_vol, base.path, base_format,
                                 (uint64_t)vm->disk_gib * GIB, disk, err);
}

static void
spec_from_vm(const struct vm_service *svc, const struct vm *vm, const char *disk_path,
             struct hv_domain_spec *spec)
{
    memset(spec, 0, sizeof(*spec));
    spec->instance = svc->cfg.instance;
    spec->id = vm->id;
    spec->owner_id = vm->owner_id;
    spec->name = vm->name;
    spec->vcpus = vm->vcpus;
    spec->memory_mib = vm->memory_mib;
    spec->disk_path = disk_path;
    spec->disk_format = "qcow2";
}

/*
 * Undo what create finished, newest first.  Returns the furthest step that
 * could not be undone (VM_STEP_ROW when everything is gone), so the row
 * tells a later recovery what is left.
 */
static enum vm_step
create_undo(struct vm_service *svc, const struct vm *vm, enum vm_step done)
{
    struct st_error ignored = {0};
    char disk_vol[ST_NAME_BUF];
    enum vm_step left = VM_STEP_ROW;

    if (done >= VM_STEP_STARTED && hypervisor_destroy(svc->hv, vm->id, &ignored) < 0 &&
        ignored.code != ST_ERR_NOT_FOUND && ignored.code != ST_ERR_CONFLICT)
        left = VM_STEP_STARTED;
    if (done >= VM_STEP_DEFINED && left == VM_STEP_ROW &&
        hypervisor_undefine(svc->hv, vm->id, &ignored) < 0 && ignored.code != ST_ERR_NOT_FOUND)
        left = VM_STEP_DEFINED;
    vm_service_disk_vol_name(vm->id, disk_vol);
    if (done >= VM_STEP_DISK && left == VM_STEP_ROW &&
        storage_remove(svc->storage, svc->cfg.disk_pool, disk_vol, &ignored) < 0 &&
        ignored.code != ST_ERR_NOT_FOUND)
        left = VM_STEP_DISK;
    return left;
}

/* Tell the hook a step is done; its refusal stops the work where it is. */
static int
step_done(const struct vm_step_hook *hook, const struct vm *vm, const char *step,
          struct st_error *err)
{
    if (!hook || !hook->fn)
        return 0;
    return hook->fn(hook->ctx, vm->id, step, err);
}

/*
 * Run the hypervisor call that brings the domain to @state, accepting one
 * that is in it already (an interrupted earlier attempt got that far).
 */
static int
change_unless(struct vm_service *svc, const char *id, enum hv_state state,
              int (*call)(struct hypervisor *, const char *, struct st_error *),
              struct st_error *err)
{
    struct st_error local = {0};
    enum hv_state now;

    if (call(svc->hv, id, &local) == 0)
        return 0;
    if (local.code == ST_ERR_CONFLICT && hypervisor_state(svc->hv, id, &now, err) == 0 &&
        now == state)
        return 0;
    error_pass(err, &local);
    return -1;
}

/* Start, accepting a domain that an interrupted earlier attempt already started. */
static int
start_once(struct vm_service *svc, const char *id, struct st_error *err)
{
    return change_unless(svc, id, HV_STATE_RUNNING, hypervisor_start, err);
}

/*
 * Run the steps after the row exists, from the one after vm->step: a
 * create resumed after a crash skips what is recorded and redoes the step
 * that was under way, whose half-made result each step tolerates.
 * *attempted is the furthest step that may have left something behind.
 * Returns 1 when the hook stopped the work (nothing to undo: another worker
 * owns it now), else 0 or -1.
 */
static int
create_steps(struct vm_service *svc, struct vm *vm, const struct image *image,
             const struct vm_step_hook *hook, enum vm_step *attempted, const char **failed,
             struct st_error *err)
{
    struct storage_vol_info disk;
    struct hv_domain_spec spec;
    char disk_vol[ST_NAME_BUF];
    struct st_error stale = {0};

    *attempted = vm->step;
    vm_service_disk_vol_name(vm->id, disk_vol);
    if (vm->step < VM_STEP_DISK) {
        *failed = "disk";
        *attempted = VM_STEP_DISK;
        /* A volume left by an interrupted attempt goes first; none is the usual case. */
        if (storage_remove(svc->storage, svc->cfg.disk_pool, disk_vol, &stale) < 0 &&
            stale.code != ST_ERR_NOT_FOUND)
            return st_error_set(err, stale.code, "cannot remove the half-made root disk: %s",
                                stale.msg);
        if (create_disk(svc, vm, image, &disk, err) < 0 ||
            record_step(svc, vm, VM_STEP_DISK, err) < 0)
            return -1;
        if (step_done(hook, vm, "disk", err) < 0)
            return 1;
    } else if (storage_info(svc->storage, svc->cfg.disk_pool, disk_vol, &disk, err) < 0) {
        *failed = "define";
        return -1;
    }
    if (vm->step < VM_STEP_DEFINED) {
        *failed = "define";
        *attempted = VM_STEP_DEFINED;
        spec_from_vm(svc, vm, disk.path, &spec);
        if (hypervisor_define(svc->hv, &spec, err) < 0 ||
            record_step(svc, vm, VM_STEP_DEFINED, err) < 0)
            return -1;
        if (step_done(hook, vm, "define", err) < 0)
            return 1;
    }
    if (vm->step < VM_STEP_STARTED) {
        *failed = "start";
        *attempted = VM_STEP_STARTED;
        if (start_once(svc, vm->id, err) < 0 || record_step(svc, vm, VM_STEP_STARTED, err) < 0)
            return -1;
        if (step_done(hook, vm, "start", err) < 0)
            return 1;
    }
    *failed = "finish";
    vm->status = VM_STATUS_RUNNING;
    if (record_step(svc, vm, VM_STEP_DONE, err) < 0)
        return -1;
    return step_done(hook, vm, "finish", err) < 0 ? 1 : 0;
}

/* The row, within @limits when they are given. */
static int
create_insert(struct vm_service *svc, const struct vm *vm, const struct quota *limits,
              struct quota_violation *v, struct st_error *err)
{
    if (!limits)
        return vm_repo_insert(svc->vms, vm, err);
    return vm_repo_insert_within_quota(svc->vms, vm, limits, v, err);
}

int
vm_service_create(struct vm_service *svc, const char *owner, const struct vm_create_req *req,
                  struct vm *out, struct st_error *err)
{
    return vm_service_create_within(svc, owner, NULL, req, out, NULL, err);
}

int
vm_service_create_within(struct vm_service *svc, const char *owner, const struct quota *limits,
                         const struct vm_create_req *req, struct vm *out, struct quota_violation *v,
                         struct st_error *err)
{
    struct vm vm;

    out->id[0] = '\0';
    if (vm_service_create_row(svc, owner, limits, req, &vm, v, err) < 0)
        return -1;
    return vm_service_create_resume(svc, vm.id, NULL, out, err);
}

int
vm_service_create_row(struct vm_service *svc, const char *owner, const struct quota *limits,
                      const struct vm_create_req *req, struct vm *out, struct quota_violation *v,
                      struct st_error *err)
{
    struct quota_violation unused;
    struct image image;
    struct vm vm;

    memset(&vm, 0, sizeof(vm));
    if (create_prepare(svc, owner, req, &vm, &image, err) < 0 ||
        create_insert(svc, &vm, limits, v ? v : &unused, err) < 0)
        return -1;
    *out = vm;
    return 0;
}

/*
 * Leave the row of a failed create in `error` saying @cause.  When the row
 * cannot say it, @cause says so too: the next reconcile pass finds a
 * creating row with no operation and requeues it.
 */
static void
create_fail_row(struct vm_service *svc, struct vm *vm, struct st_error *cause)
{
    struct st_error unsaved = {0};

    vm->status = VM_STATUS_ERROR;
    st_strlcpy(vm->fault, cause->msg, sizeof(vm->fault));
    if (vm_service_save_state(svc, vm, &unsaved) < 0)
        st_error_prefix(cause, "(the row could not record this: %s)", unsaved.msg);
}

int
vm_service_create_resume(struct vm_service *svc, const char *id, const struct vm_step_hook *hook,
                         struct vm *out, struct st_error *err)
{
    struct st_error cause = {0};
    enum vm_step attempted = VM_STEP_ROW;
    const char *failed = "row";
    struct image image;
    struct vm vm;
    int rc;

    if (vm_repo_get(svc->vms, NULL, id, &vm, err) < 0)
        return -1;
    st_strlcpy(out->id, vm.id, sizeof(out->id));
    /* Finished by an attempt that died before it could say so: nothing is left to do. */
    if (vm.step == VM_STEP_DONE && vm.status != VM_STATUS_ERROR &&
        vm.status != VM_STATUS_DELETING) {
        *out = vm;
        return 0;
    }
    if (vm.status != VM_STATUS_CREATING)
        return st_error_set(err, ST_ERR_CONFLICT, "VM '%s' is %s, not creating", id,
                            vm_status_name(vm.status));
    /*
     * The row is committed, so the image can no longer be deleted (its
     * store refuses while a VM names it): this one read is enough.
     */
    if (image_repo_get(svc->images, NULL, vm.image_id, &image, &cause) == 0) {
        rc = create_steps(svc, &vm, &image, hook, &attempted, &failed, &cause);
        if (rc == 0) {
            *out = vm;
            return 0;
        }
        if (rc > 0) {
            error_pass(err, &cause);
            return -1;
        }
    }
    st_error_prefix(&cause, "create failed at step %s", failed);
    /*
     * Whatever was not found here (an image's file, a pool) is not the
     * resource the caller named: the request met a server-side state it
     * cannot proceed from.
     */
    if (cause.code == ST_ERR_NOT_FOUND)
        cause.code = ST_ERR_CONFLICT;
    vm.step = create_undo(svc, &vm, attempted);
    create_fail_row(svc, &vm, &cause);
    error_pass(err, &cause);
    return -1;
}

int
vm_service_create_abandon(struct vm_service *svc, const char *id, const char *why,
                          struct st_error *err)
{
    struct vm vm;

    if (vm_repo_get(svc->vms, NULL, id, &vm, err) < 0)
        return -1;
    /* Whatever any attempt got to: undo all of it. */
    vm.step = create_undo(svc, &vm, VM_STEP_STARTED);
    vm.status = VM_STATUS_ERROR;
    st_strlcpy(vm.fault, why, sizeof(vm.fault));
    return vm_service_save_state(svc, &vm, err);
}

int
vm_service_patch_apply(const struct vm_patch_req *req, enum vm_status shown, struct vm *vm,
                       bool *resize, struct st_error *err)
{
    if (req->has_name && st_name_check("name", req->name, err) < 0)
        return -1;
    *resize = (req->has_vcpus && req->vcpus != vm->vcpus) ||
              (req->has_memory_mib && req->memory_mib != vm->memory_mib);
    if (*resize && shown != VM_STATUS_STOPPED)
        return st_error_set(err, ST_ERR_CONFLICT,
                            "VM '%s' is %s; stop it to change vcpus or memory_mib", vm->id,
                            vm_status_name(shown));
    if (req->has_name)
        st_strlcpy(vm->name, req->name, sizeof(vm->name));
    if (req->has_vcpus)
        vm->vcpus = req->vcpus;
    if (req->has_memory_mib)
        vm->memory_mib = req->memory_mib;
    /* Sized by hand now: the flavor no longer describes it. */
    if (*resize)
        vm->flavor_id[0] = '\0';
    return 0;
}

/* Define the domain of @vm from its row (a define replaces the one there). */
static int
redefine(struct vm_service *svc, const struct vm *vm, struct st_error *err)
{
    struct storage_vol_info disk;
    struct hv_domain_spec spec;
    char disk_vol[ST_NAME_BUF];

    vm_service_disk_vol_name(vm->id, disk_vol);
    if (storage_info(svc->storage, svc->cfg.disk_pool, disk_vol, &disk, err) < 0) {
        st_error_prefix(err, "root disk of VM '%s'", vm->id);
        return -1;
    }
    spec_from_vm(svc, vm, disk.path, &spec);
    return hypervisor_define(svc->hv, &spec, err);
}

int
vm_service_delete(struct vm_service *svc, const char *owner, const char *id,
                  const struct vm_step_hook *hook, struct st_error *err)
{
    struct st_error cause = {0};
    struct st_error unsaved = {0};
    char disk_vol[ST_NAME_BUF];
    const char *failed;
    struct vm vm;

    if (vm_repo_get(svc->vms, owner, id, &vm, err) < 0)
        return -1;
    if (vm.status != VM_STATUS_DELETING) {
        vm.status = VM_STATUS_DELETING;
        if (vm_service_save_state(svc, &vm, err) < 0)
            return -1;
    }
    /* Each step accepts that an earlier, interrupted delete already did it. */
    failed = "destroy";
    if (hypervisor_destroy(svc->hv, id, &cause) < 0 && cause.code != ST_ERR_NOT_FOUND &&
        cause.code != ST_ERR_CONFLICT)
        goto fail;
    if (step_done(hook, &vm, "destroy", err) < 0)
        return -1;
    failed = "undefine";
    if (hypervisor_undefine(svc->hv, id, &cause) < 0 && cause.code != ST_ERR_NOT_FOUND)
        goto fail;
    if (step_done(hook, &vm, "undefine", err) < 0)
        return -1;
    failed = "disk";
    vm_service_disk_vol_name(id, disk_vol);
    if (storage_remove(svc->storage, svc->cfg.disk_pool, disk_vol, &cause) < 0 &&
        cause.code != ST_ERR_NOT_FOUND)
        goto fail;
    if (step_done(hook, &vm, "disk", err) < 0)
        return -1;
    failed = "row";
    if (vm_repo_remove(svc->vms, owner, id, &cause) < 0)
        goto fail;
    return 0;

fail:
    st_error_prefix(&cause, "delete failed at step %s", failed);
    st_strlcpy(vm.fault, cause.msg, sizeof(vm.fault));
    /* The operation carries the cause; the row saying it too is a courtesy. */
    if (vm_service_save_state(svc, &vm, &unsaved) < 0)
        st_error_prefix(&cause, "(and the row could not record it: %s)", unsaved.msg);
    error_pass(err, &cause);
    return -1;
}

bool
vm_action_allowed(enum vm_action action, enum vm_status shown)
{
    switch (action) {
    case VM_ACTION_START:
    case VM_ACTION_RESIZE:
        return shown == VM_STATUS_STOPPED;
    case VM_ACTION_STOP:
    case VM_ACTION_REBOOT:
    case VM_ACTION_PAUSE:
        return shown == VM_STATUS_RUNNING;
    case VM_ACTION_FORCE_STOP:
        return shown == VM_STATUS_RUNNING || shown == VM_STATUS_PAUSED;
    case VM_ACTION_RESUME:
        return shown == VM_STATUS_PAUSED;
    }
    return false;
}

static enum vm_status
action_result(enum vm_action action)
{
    switch (action) {
    case VM_ACTION_STOP:
    case VM_ACTION_FORCE_STOP:
    case VM_ACTION_RESIZE:
        return VM_STATUS_STOPPED;
    case VM_ACTION_PAUSE:
        return VM_STATUS_PAUSED;
    case VM_ACTION_START:
    case VM_ACTION_REBOOT:
    case VM_ACTION_RESUME:
        return VM_STATUS_RUNNING;
    }
    return VM_STATUS_RUNNING;
}

/* Pull the plug, unless the domain is down already (on its own, or by an earlier attempt). */
static int
destroy_running(struct vm_service *svc, const char *id, struct st_error *err)
{
    struct st_error local = {0};
    enum hv_state state;

    if (hypervisor_state(svc->hv, id, &state, err) < 0)
        return -1;
    if (state == HV_STATE_SHUTOFF)
        return 0;
    if (hypervisor_destroy(svc->hv, id, &local) < 0 && local.code != ST_ERR_CONFLICT) {
        error_pass(err, &local);
        return -1;
    }
    return 0;
}

/* ACPI power button; a domain that is down already needs none. */
static int
shutdown_once(struct vm_service *svc, const char *id, struct st_error *err)
{
    struct st_error local = {0};

    if (hypervisor_shutdown(svc->hv, id, &local) < 0 && local.code != ST_ERR_CONFLICT) {
        error_pass(err, &local);
        return -1;
    }
    return 0;
}

/* Wait up to stop_timeout_ms for the domain to shut off; the next step pulls the plug. */
static int
wait_shutoff(struct vm_service *svc, const char *id, struct st_error *err)
{
    unsigned interval = svc->cfg.poll_interval_ms;
    int64_t deadline;
    enum hv_state state;

    if (interval == 0)
        interval = POLL_INTERVAL_DEFAULT_MS;
    deadline = st_monotonic_ms() + svc->cfg.stop_timeout_ms;
    for (;;) {
        if (hypervisor_state(svc->hv, id, &state, err) < 0)
            return -1;
        if (state == HV_STATE_SHUTOFF || st_monotonic_ms() >= deadline)
            return 0;
        st_sleep_ms(interval);
    }
}

/* Write the action's outcome to the row; *vm becomes the row as stored. */
static int
record_outcome(struct vm_service *svc, struct vm *vm, enum vm_action action, struct st_error *err)
{
    vm->status = action_result(action);
    vm->fault[0] = '\0';
    return vm_service_save_state(svc, vm, err);
}

/* One step of an action, by name. */
static int
action_step(struct vm_service *svc, struct vm *vm, enum vm_action action, const char *step,
            struct st_error *err)
{
    if (strcmp(step, "define") == 0)
        return redefine(svc, vm, err);
    if (strcmp(step, "start") == 0)
        return start_once(svc, vm->id, err);
    if (strcmp(step, "shutdown") == 0)
        return shutdown_once(svc, vm->id, err);
    if (strcmp(step, "wait") == 0)
        return wait_shutoff(svc, vm->id, err);
    if (strcmp(step, "destroy") == 0)
        return destroy_running(svc, vm->id, err);
    if (strcmp(step, "reboot") == 0)
        return hypervisor_reboot(svc->hv, vm->id, err);
    if (strcmp(step, "suspend") == 0)
        return change_unless(svc, vm->id, HV_STATE_PAUSED, hypervisor_suspend, err);
    if (strcmp(step, "resume") == 0)
        return change_unless(svc, vm->id, HV_STATE_RUNNING, hypervisor_resume, err);
    if (strcmp(step, "record") == 0)
        return record_outcome(svc, vm, action, err);
    return st_error_set(err, ST_ERR_INTERNAL, "action %s has no step '%s'", vm_action_name(action),
                        step);
}

/* Where a run resumes: the index after @done, or 0. */
static size_t
steps_resume_at(const char *const *steps, const char *done)
{
    size_t i;

    if (!done || !*done)
        return 0;
    for (i = 0; steps[i]; i++)
        if (strcmp(steps[i], done) == 0)
            return i + 1;
    return 0;
}

int
vm_service_action_run(struct vm_service *svc, const char *id, enum vm_action action,
                      const char *done, const struct vm_step_hook *hook, struct vm *out,
                      struct st_error *err)
{
    const char *const *steps = vm_action_steps(action);
    size_t i;
    struct vm vm;

    if (vm_repo_get(svc->vms, NULL, id, &vm, err) < 0)
        return -1;
    for (i = steps_resume_at(steps, done); steps[i]; i++) {
        if (action_step(svc, &vm, action, steps[i], err) < 0) {
            st_error_prefix(err, "%s VM '%s' failed at step %s", vm_action_name(action), id,
                            steps[i]);
            return -1;
        }
        if (step_done(hook, &vm, steps[i], err) < 0)
            return 1;
    }
    *out = vm;
    return 0;
}

int
vm_service_update(struct vm_service *svc, const char *owner, const char *id,
                  const struct vm_patch_req *req, struct vm *out, struct st_error *err)
{
    struct vm row, shown;
    bool resize;

    if (vm_repo_get(svc->vms, owner, id, &row, err) < 0)
        return -1;
    shown = row;
    if (vm_service_merge(svc, &shown, err) < 0 ||
        vm_service_patch_apply(req, shown.status, &row, &resize, err) < 0)
        return -1;
    row.updated_at = st_now_ms();
    if (vm_repo_update(svc->vms, owner, &row, err) < 0)
        return -1;
    row.revision++;
    if (resize && vm_service_action_run(svc, id, VM_ACTION_RESIZE, NULL, NULL, &row, err) != 0)
        return -1;
    row.status = shown.status;
    *out = row;
    return 0;
}

int
vm_service_action(struct vm_service *svc, const char *owner, const char *id, enum vm_action action,
                  struct vm *out, struct st_error *err)
{
    struct vm vm;

    if (vm_service_get(svc, owner, id, &vm, err) < 0)
        return -1;
    if (!vm_action_allowed(action, vm.status))
        return st_error_set(err, ST_ERR_CONFLICT, "VM '%s' is %s; cannot %s", id,
                            vm_status_name(vm.status), vm_action_name(action));
    if (vm_service_action_run(svc, id, action, NULL, NULL, &vm, err) != 0 ||
        vm_service_merge(svc, &vm, err) < 0)
        return -1;
    *out = vm;
    return 0;
}
