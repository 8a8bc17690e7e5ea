#include "support/fault.h"

#include <string.h>

#include "util/mem.h"

/* What a wrapper does with one call. */
enum fault_verdict {
    FAULT_VERDICT_FAIL = -1,
    FAULT_VERDICT_SKIP = 0,
    FAULT_VERDICT_FORWARD = 1,
};

static void
plan_add(struct fault_plan *p, int method, unsigned nth, enum st_err_code code, bool skip)
{
    struct fault_rule *r;

    if (p->nrules >= FAULT_RULES_MAX || method < 0 || method >= FAULT_METHODS_MAX || nth == 0)
        BUG("fault plan: bad rule");
    r = &p->rules[p->nrules++];
    r->method = method;
    r->at = p->calls[method] + nth;
    r->code = code;
    r->skip = skip;
    r->used = false;
}

/* Count the call and decide its fate; a failure fills @err. */
static int
plan_enter(struct fault_plan *p, int method, const char *name, struct st_error *err)
{
    unsigned i, n = ++p->calls[method];

    for (i = 0; i < p->nrules; i++) {
        struct fault_rule *r = &p->rules[i];

        if (r->used || r->method != method || r->at != n)
            continue;
        r->used = true;
        if (r->skip)
            return FAULT_VERDICT_SKIP;
        st_error_set(err, r->code, "injected fault: %s call %u", name, n);
        return FAULT_VERDICT_FAIL;
    }
    return FAULT_VERDICT_FORWARD;
}

static void
plan_reset(struct fault_plan *p)
{
    memset(p, 0, sizeof(*p));
}

/* Evaluates to the wrapper's early return when the plan says so. */
#define FAULT_ENTER(plan, method, name, err)                                                       \
    do {                                                                                           \
        int verdict_ = plan_enter((plan), (method), (name), (err));                                \
        if (verdict_ != FAULT_VERDICT_FORWARD)                                                     \
            return verdict_;                                                                       \
    } while (0)

/* ---- hypervisor ---- */

static int
fhv_define(void *self, const struct hv_domain_spec *spec, struct st_error *err)
{
    struct fault_hypervisor *w = self;

    FAULT_ENTER(&w->plan, FAULT_HV_DEFINE, "define", err);
    return hypervisor_define(w->real, spec, err);
}

static int
fhv_start(void *self, const char *id, struct st_error *err)
{
    struct fault_hypervisor *w = self;

    FAULT_ENTER(&w->plan, FAULT_HV_START, "start", err);
    return hypervisor_start(w->real, id, err);
}

static int
fhv_shutdown(void *self, const char *id, struct st_error *err)
{
    struct fault_hypervisor *w = self;

    FAULT_ENTER(&w->plan, FAULT_HV_SHUTDOWN, "shutdown", err);
    return hypervisor_shutdown(w->real, id, err);
}

static int
fhv_destroy(void *self, const char *id, struct st_error *err)
{
    struct fault_hypervisor *w = self;

    FAULT_ENTER(&w->plan, FAULT_HV_DESTROY, "destroy", err);
    return hypervisor_destroy(w->real, id, err);
}

static int
fhv_reboot(void *self, const char *id, struct st_error *err)
{
    struct fault_hypervisor *w = self;

    FAULT_ENTER(&w->plan, FAULT_HV_REBOOT, "reboot", err);
    return hypervisor_reboot(w->real, id, err);
}

static int
fhv_suspend(void *self, const char *id, struct st_error *err)
{
    struct fault_hypervisor *w = self;

    FAULT_ENTER(&w->plan, FAULT_HV_SUSPEND, "suspend", err);
    return hypervisor_suspend(w->real, id, err);
}

static int
fhv_resume(void *self, const char *id, struct st_error *err)
{
    struct fault_hypervisor *w = self;

    FAULT_ENTER(&w->plan, FAULT_HV_RESUME, "resume", err);
    return hypervisor_resume(w->real, id, err);
}

static int
fhv_undefine(void *self, const char *id, struct st_error *err)
{
    struct fault_hypervisor *w = self;

    FAULT_ENTER(&w->plan, FAULT_HV_UNDEFINE, "undefine", err);
    return hypervisor_undefine(w->real, id, err);
}

static int
fhv_state(void *self, const char *id, enum hv_state *out, struct st_error *err)
{
    struct fault_hypervisor *w = self;

    FAULT_ENTER(&w->plan, FAULT_HV_STATE, "state", err);
    return hypervisor_state(w->real, id, out, err);
}

static int
fhv_list_all(void *self, struct hv_domain_info **out, size_t *n, struct st_error *err)
{
    struct fault_hypervisor *w = self;

    FAULT_ENTER(&w->plan, FAULT_HV_LIST_ALL, "list_all", err);
    return hypervisor_list_all(w->real, out, n, err);
}

static int
fhv_ping(void *self, struct st_error *err)
{
    struct fault_hypervisor *w = self;

    FAULT_ENTER(&w->plan, FAULT_HV_PING, "ping", err);
    return hypervisor_ping(w->real, err);
}

static int
fhv_list_meta(void *self, struct hv_domain_meta **out, size_t *n, struct st_error *err)
{
    struct fault_hypervisor *w = self;

    FAULT_ENTER(&w->plan, FAULT_HV_LIST_META, "list_meta", err);
    return hypervisor_list_meta(w->real, out, n, err);
}

static int
fhv_watch(void *self, hv_event_fn fn, void *ctx, struct st_error *err)
{
    struct fault_hypervisor *w = self;

    FAULT_ENTER(&w->plan, FAULT_HV_WATCH, "watch", err);
    return hypervisor_watch(w->real, fn, ctx, err);
}

/* The wrapper borrows the real backend; its owner closes it. */
static void
fhv_close(void *self)
{
    (void)self;
}

static const struct hypervisor_ops fault_hypervisor_ops = {
    .define = fhv_define,
    .start = fhv_start,
    .shutdown = fhv_shutdown,
    .destroy = fhv_destroy,
    .reboot = fhv_reboot,
    .suspend = fhv_suspend,
    .resume = fhv_resume,
    .undefine = fhv_undefine,
    .state = fhv_state,
    .list_all = fhv_list_all,
    .ping = fhv_ping,
    .close = fhv_close,
    .list_meta = fhv_list_meta,
    .watch = fhv_watch,
};

void
fault_hypervisor_init(struct fault_hypervisor *w, struct hypervisor *real)
{
    memset(w, 0, sizeof(*w));
    w->real = real;
    w->iface.ops = &fault_hypervisor_ops;
    w->iface.self = w;
}

void
fault_hypervisor_fail(struct fault_hypervisor *w, enum fault_hv_method method, unsigned nth,
                      enum st_err_code code)
{
    plan_add(&w->plan, (int)method, nth, code, false);
}

void
fault_hypervisor_skip(struct fault_hypervisor *w, enum fault_hv_method method, unsigned nth)
{
    plan_add(&w->plan, (int)method, nth, ST_ERR_OK, true);
}

unsigned
fault_hypervisor_calls(const struct fault_hypervisor *w, enum fault_hv_method method)
{
    return w->plan.calls[method];
}

void
fault_hypervisor_reset(struct fault_hypervisor *w)
{
    plan_reset(&w->plan);
}

/* ---- storage ---- */

static int
fst_ensure_pool(void *self, const char *pool, const char *dir, struct st_error *err)
{
    struct fault_storage *w = self;

    FAULT_ENTER(&w->plan, FAULT_ST_ENSURE_POOL, "ensure_pool", err);
    return storage_ensure_pool(w->real, pool, dir, err);
}

static int
fst_clone_overlay(void *self, const char *pool, const char *vol, const char *backing_path,
                  const char *backing_format, uint64_t capacity, struct storage_vol_info *out,
                  struct st_error *err)
{
    struct fault_storage *w = self;

    FAULT_ENTER(&w->plan, FAULT_ST_CLONE_OVERLAY, "clone_overlay", err);
    return storage_clone_overlay(w->real, pool, vol, backing_path, backing_format, capacity, out,
                                 err);
}

static int
fst_import(void *self, const char *pool, const char *vol, const char *source_path,
           struct storage_vol_info *out, struct st_error *err)
{
    struct fault_storage *w = self;

    FAULT_ENTER(&w->plan, FAULT_ST_IMPORT, "import", err);
    return storage_import(w->real, pool, vol, source_path, out, err);
}

static int
fst_remove(void *self, const char *pool, const char *vol, struct st_error *err)
{
    struct fault_storage *w = self;

    FAULT_ENTER(&w->plan, FAULT_ST_REMOVE, "remove", err);
    return storage_remove(w->real, pool, vol, err);
}

static int
fst_info(void *self, const char *pool, const char *vol, struct storage_vol_info *out,
         struct st_error *err)
{
    struct fault_storage *w = self;

    FAULT_ENTER(&w->plan, FAULT_ST_INFO, "info", err);
    return storage_info(w->real, pool, vol, out, err);
}

static int
fst_list_volumes(void *self, const char *pool, char ***names, size_t *n, struct st_error *err)
{
    struct fault_storage *w = self;

    FAULT_ENTER(&w->plan, FAULT_ST_LIST_VOLUMES, "list_volumes", err);
    return storage_list_volumes(w->real, pool, names, n, err);
}

static void
fst_close(void *self)
{
    (void)self;
}

static const struct storage_ops fault_storage_ops = {
    .ensure_pool = fst_ensure_pool,
    .clone_overlay = fst_clone_overlay,
    .import = fst_import,
    .remove = fst_remove,
    .info = fst_info,
    .close = fst_close,
    .list_volumes = fst_list_volumes,
};

void
fault_storage_init(struct fault_storage *w, struct storage *real)
{
    memset(w, 0, sizeof(*w));
    w->real = real;
    w->iface.ops = &fault_storage_ops;
    w->iface.self = w;
}

void
fault_storage_fail(struct fault_storage *w, enum fault_storage_method method, unsigned nth,
                   enum st_err_code code)
{
    plan_add(&w->plan, (int)method, nth, code, false);
}

unsigned
fault_storage_calls(const struct fault_storage *w, enum fault_storage_method method)
{
    return w->plan.calls[method];
}

void
fault_storage_reset(struct fault_storage *w)
{
    plan_reset(&w->plan);
}

/* ---- vm_repo ---- */

static int
fvr_insert(void *self, const struct vm *vm, struct st_error *err)
{
    struct fault_vm_repo *w = self;

    FAULT_ENTER(&w->plan, FAULT_VR_INSERT, "insert", err);
    return vm_repo_insert(w->real, vm, err);
}

static int
fvr_get(void *self, const char *owner, const char *id, struct vm *out, struct st_error *err)
{
    struct fault_vm_repo *w = self;

    FAULT_ENTER(&w->plan, FAULT_VR_GET, "get", err);
    return vm_repo_get(w->real, owner, id, out, err);
}

static int
fvr_list(void *self, const char *owner, const struct vm_filter *f, struct vm_list *out,
         struct st_error *err)
{
    struct fault_vm_repo *w = self;

    FAULT_ENTER(&w->plan, FAULT_VR_LIST, "list", err);
    return vm_repo_list(w->real, owner, f, out, err);
}

static int
fvr_update(void *self, const char *owner, const struct vm *vm, struct st_error *err)
{
    struct fault_vm_repo *w = self;

    FAULT_ENTER(&w->plan, FAULT_VR_UPDATE, "update", err);
    return vm_repo_update(w->real, owner, vm, err);
}

static int
fvr_remove(void *self, const char *owner, const char *id, struct st_error *err)
{
    struct fault_vm_repo *w = self;

    FAULT_ENTER(&w->plan, FAULT_VR_REMOVE, "remove", err);
    return vm_repo_remove(w->real, owner, id, err);
}

static int
fvr_count_by_image(void *self, const char *owner, const char *image_id, size_t *out,
                   struct st_error *err)
{
    struct fault_vm_repo *w = self;

    FAULT_ENTER(&w->plan, FAULT_VR_COUNT_BY_IMAGE, "count_by_image", err);
    return vm_repo_count_by_image(w->real, owner, image_id, out, err);
}

static int
fvr_insert_within_quota(void *self, const struct vm *vm, const struct quota *limits,
                        struct quota_violation *v, struct st_error *err)
{
    struct fault_vm_repo *w = self;

    FAULT_ENTER(&w->plan, FAULT_VR_INSERT_WITHIN_QUOTA, "insert_within_quota", err);
    return vm_repo_insert_within_quota(w->real, vm, limits, v, err);
}

static int
fvr_usage(void *self, const char *owner, struct quota_usage *out, struct st_error *err)
{
    struct fault_vm_repo *w = self;

    FAULT_ENTER(&w->plan, FAULT_VR_USAGE, "usage", err);
    return vm_repo_usage(w->real, owner, out, err);
}

static int
fvr_update_within_quota(void *self, const char *owner, const struct vm *vm,
                        const struct quota *limits, struct quota_violation *v, struct st_error *err)
{
    struct fault_vm_repo *w = self;

    FAULT_ENTER(&w->plan, FAULT_VR_UPDATE_WITHIN_QUOTA, "update_within_quota", err);
    return vm_repo_update_within_quota(w->real, owner, vm, limits, v, err);
}

static void
fvr_close(void *self)
{
    (void)self;
}

static const struct vm_repo_ops fault_vm_repo_ops = {
    .insert = fvr_insert,
    .get = fvr_get,
    .list = fvr_list,
    .update = fvr_update,
    .remove = fvr_remove,
    .count_by_image = fvr_count_by_image,
    .close = fvr_close,
    .insert_within_quota = fvr_insert_within_quota,
    .usage = fvr_usage,
    .update_within_quota = fvr_update_within_quota,
};

void
fault_vm_repo_init(struct fault_vm_repo *w, struct vm_repo *real)
{
    memset(w, 0, sizeof(*w));
    w->real = real;
    w->iface.ops = &fault_vm_repo_ops;
    w->iface.self = w;
}

void
fault_vm_repo_fail(struct fault_vm_repo *w, enum fault_vm_repo_method method, unsigned nth,
                   enum st_err_code code)
{
    plan_add(&w->plan, (int)method, nth, code, false);
}

unsigned
fault_vm_repo_calls(const struct fault_vm_repo *w, enum fault_vm_repo_method method)
{
    return w->plan.calls[method];
}

void
fault_vm_repo_reset(struct fault_vm_repo *w)
{
    plan_reset(&w->plan);
}
