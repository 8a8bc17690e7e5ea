#include "services/reconcile_service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/mem.h"

#define RECONCILE_PAGE 1000
#define VANISHED_FAULT "its domain vanished outside stratus"
/* A row written this recently was written by whoever acted on the VM just now. */
#define RECONCILE_RECENT_MS 2000

void
orphan_list_release(struct orphan_list *list)
{
    if (!list)
        return;
    free(list->items);
    memset(list, 0, sizeof(*list));
}

json_t *
orphan_to_json(const struct orphan *o)
{
    return json_pack("{s:s, s:s, s:s, s:o}", "kind", o->kind == ORPHAN_DOMAIN ? "domain" : "disk",
                     "vm_id", o->id, "name", o->name, "owner_id",
                     o->owner_id[0] ? json_string(o->owner_id) : json_null());
}

/*
 * Write @vm, read earlier in this pass (compare-and-set).  1 when written,
 * with @vm at the row's new revision; 0 when the row changed meanwhile:
 * left for the next pass, and said at debug level; -1 with @err filled.
 */
static int
write_row(struct reconcile_service *svc, struct vm *vm, struct st_error *err)
{
    char msg[ST_ERROR_MSG_MAX + 64];

    if (vm_repo_update(svc->vms, NULL, vm, err) == 0) {
        vm->revision++;
        return 1;
    }
    if (err->code != ST_ERR_STALE)
        return -1;
    if (svc->debug) {
        snprintf(msg, sizeof(msg), "reconcile: left for the next pass: %s", err->msg);
        svc->debug(msg);
    }
    return 0;
}

static int
id_cmp(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* Every row, unscoped, in pages; free() *rows. */
static int
all_rows(struct reconcile_service *svc, struct vm **rows, size_t *n, struct st_error *err)
{
    struct vm *all = NULL;
    size_t count = 0;
    struct vm_filter f;
    struct vm_list page;
    struct vm *grown;

    memset(&f, 0, sizeof(f));
    f.limit = RECONCILE_PAGE;
    for (;;) {
        if (vm_repo_list(svc->vms, NULL, &f, &page, err) < 0) {
            free(all);
            return -1;
        }
        grown = reallocarray(all, count + page.count + 1, sizeof(*all));
        if (!grown)
            BUG("out of memory");
        all = grown;
        if (page.count)
            memcpy(all + count, page.items, page.count * sizeof(*all));
        count += page.count;
        if (!page.more || page.count == 0) {
            vm_list_release(&page);
            break;
        }
        st_strlcpy(f.marker, page.next_marker, sizeof(f.marker));
        vm_list_release(&page);
    }
    *rows = all;
    *n = count;
    return 0;
}

/* Sorted ids of @rows (ST_ID_BUF each); free(). */
static char *
row_ids(const struct vm *rows, size_t n)
{
    char *ids = st_xcalloc(n + 1, ST_ID_BUF);
    size_t i;

    for (i = 0; i < n; i++)
        memcpy(ids + i * ST_ID_BUF, rows[i].id, ST_ID_BUF);
    qsort(ids, n, ST_ID_BUF, id_cmp);
    return ids;
}

static bool
has_id(const char *ids, size_t n, const char *id)
{
    return bsearch(id, ids, n, ST_ID_BUF, id_cmp) != NULL;
}

static void
orphan_add(struct orphan_list *list, enum orphan_kind kind, const char *id, const char *name,
           const char *owner)
{
    struct orphan *o;

    list->items = reallocarray(list->items, list->count + 1, sizeof(*list->items));
    if (!list->items)
        BUG("out of memory");
    o = &list->items[list->count++];
    memset(o, 0, sizeof(*o));
    o->kind = kind;
    st_strlcpy(o->id, id, sizeof(o->id));
    st_strlcpy(o->name, name, sizeof(o->name));
    st_strlcpy(o->owner_id, owner ? owner : "", sizeof(o->owner_id));
}

/* The VM id in a root disk's volume name "vm-<id>.qcow2", or false. */
static bool
disk_vm_id(const char *vol, char out[ST_ID_BUF])
{
    size_t len = strlen(vol);

    if (len != 3 + ST_ID_LEN + 6 || strncmp(vol, "vm-", 3) != 0 ||
        strcmp(vol + 3 + ST_ID_LEN, ".qcow2") != 0)
        return false;
    memcpy(out, vol + 3, ST_ID_LEN);
    out[ST_ID_LEN] = '\0';
    return st_uuid_valid(out);
}

/* What libvirt has of this installation: domains with metadata and the disk pool's volumes. */
struct backend_view {
    struct hv_domain_meta *doms;
    size_t ndoms;
    char **vols;
    size_t nvols;
};

static void
backend_view_release(struct backend_view *v)
{
    free(v->doms);
    storage_names_free(v->vols, v->nvols);
    memset(v, 0, sizeof(*v));
}

static int
backend_view_read(struct reconcile_service *svc, struct backend_view *v, struct st_error *err)
{
    memset(v, 0, sizeof(*v));
    if (hypervisor_list_meta(svc->hv, &v->doms, &v->ndoms, err) < 0)
        return -1;
    /* The id is the first member: sorted by it, a row finds its domain in O(log n). */
    if (v->ndoms)
        qsort(v->doms, v->ndoms, sizeof(*v->doms), id_cmp);
    if (storage_list_volumes(svc->storage, svc->disk_pool, &v->vols, &v->nvols, err) < 0) {
        backend_view_release(v);
        return -1;
    }
    return 0;
}

static bool
ours(const struct reconcile_service *svc, const struct hv_domain_meta *d)
{
    return !svc->instance || !svc->instance[0] || strcmp(d->instance, svc->instance) == 0;
}

static void
orphans_of(const struct reconcile_service *svc, const struct backend_view *v, const char *ids,
           size_t nids, struct orphan_list *out)
{
    char id[ST_ID_BUF];
    size_t i;

    for (i = 0; i < v->ndoms; i++) {
        const struct hv_domain_meta *d = &v->doms[i];
        char name[ST_NAME_BUF];

        if (!ours(svc, d) || has_id(ids, nids, d->id))
            continue;
        snprintf(name, sizeof(name), "stratus-%s", d->id);
        orphan_add(out, ORPHAN_DOMAIN, d->id, name, d->owner_id);
    }
    for (i = 0; i < v->nvols; i++)
        if (disk_vm_id(v->vols[i], id) && !has_id(ids, nids, id))
            orphan_add(out, ORPHAN_DISK, id, v->vols[i], NULL);
}

int
reconcile_find_orphans(struct reconcile_service *svc, struct orphan_list *out, struct st_error *err)
{
    struct orphan_list found = {NULL, 0};
    struct backend_view v;
    struct vm *rows;
    size_t n;
    char *ids;

    if (backend_view_read(svc, &v, err) < 0)
        return -1;
    if (all_rows(svc, &rows, &n, err) < 0) {
        backend_view_release(&v);
        return -1;
    }
    ids = row_ids(rows, n);
    orphans_of(svc, &v, ids, n, &found);
    free(ids);
    free(rows);
    backend_view_release(&v);
    *out = found;
    return 0;
}

int
reconcile_collect(struct reconcile_service *svc, bool dry_run, struct orphan_list *out,
                  struct st_error *err)
{
    struct orphan_list list;
    size_t i;

    if (reconcile_find_orphans(svc, &list, err) < 0)
        return -1;
    for (i = 0; i < list.count && !dry_run; i++) {
        const struct orphan *o = &list.items[i];
        struct st_error local = {0};

        if (o->kind == ORPHAN_DOMAIN) {
            if ((hypervisor_destroy(svc->hv, o->id, &local) < 0 && local.code != ST_ERR_NOT_FOUND &&
                 local.code != ST_ERR_CONFLICT) ||
                (hypervisor_undefine(svc->hv, o->id, &local) < 0 && local.code != ST_ERR_NOT_FOUND))
                goto fail;
        } else if (storage_remove(svc->storage, svc->disk_pool, o->name, &local) < 0 &&
                   local.code != ST_ERR_NOT_FOUND) {
            goto fail;
        }
        continue;
    fail:
        st_error_prefix(&local, "cannot remove orphan %s '%s'",
                        o->kind == ORPHAN_DOMAIN ? "domain" : "disk", o->name);
        *err = local;
        orphan_list_release(&list);
        return -1;
    }
    *out = list;
    return 0;
}

static const struct hv_domain_meta *
find_domain(const struct backend_view *v, const char *id)
{
    if (!v->ndoms)
        return NULL;
    return bsearch(id, v->doms, v->ndoms, sizeof(*v->doms), id_cmp);
}

static bool
has_domain(const struct backend_view *v, const char *id)
{
    return find_domain(v, id) != NULL;
}

/* Settled rows (not being made or removed) whose domain is gone: say so once. */
static void
mark_vanished(struct reconcile_service *svc, const struct backend_view *v, struct vm *rows,
              size_t n, struct reconcile_report *r)
{
    struct st_error ignored = {0};
    struct st_error gone = {0};
    enum hv_state state;
    size_t i;

    for (i = 0; i < n; i++) {
        struct vm *vm = &rows[i];

        if (vm->step != VM_STEP_DONE || vm->status == VM_STATUS_DELETING ||
            vm->status == VM_STATUS_ERROR || has_domain(v, vm->id) ||
            strcmp(vm->fault, VANISHED_FAULT) == 0)
            continue;
        /*
         * Written over a fresh copy: the pass's own may be seconds old, and
         * a create may have made its domain after the listing.  The
         * hypervisor is asked once more before anything is said.
         */
        if (vm_repo_get(svc->vms, NULL, vm->id, vm, &ignored) < 0 ||
            vm->status == VM_STATUS_DELETING || vm->status == VM_STATUS_ERROR ||
            hypervisor_state(svc->hv, vm->id, &state, &gone) == 0 || gone.code != ST_ERR_NOT_FOUND)
            continue;
        st_strlcpy(vm->fault, VANISHED_FAULT, sizeof(vm->fault));
        vm->updated_at = st_now_ms();
        if (write_row(svc, vm, &ignored) <= 0)
            continue;
        op_service_event(svc->op_svc, vm, VM_EVENT_WARNING,
                         "the domain vanished outside stratus: the VM shows missing", NULL,
                         &ignored);
        r->vanished++;
    }
}

static bool
hv_status(enum hv_state state, enum vm_status *out)
{
    switch (state) {
    case HV_STATE_RUNNING:
    case HV_STATE_BLOCKED:
        *out = VM_STATUS_RUNNING;
        return true;
    case HV_STATE_PAUSED:
        *out = VM_STATUS_PAUSED;
        return true;
    case HV_STATE_SHUTOFF:
    case HV_STATE_CRASHED:
        *out = VM_STATUS_STOPPED;
        return true;
    default:
        return false;
    }
}

/*
 * Settled rows whose stored status the hypervisor contradicts (a change
 * whose event was missed, say while libvirtd was away): the hypervisor is
 * right, and the row and the history say so.
 */
static bool
settled(const struct vm *vm)
{
    return vm->step == VM_STEP_DONE &&
           (vm->status == VM_STATUS_RUNNING || vm->status == VM_STATUS_STOPPED ||
            vm->status == VM_STATUS_PAUSED);
}

static void
sync_states(struct reconcile_service *svc, const struct backend_view *v, struct vm *rows, size_t n)
{
    struct st_error ignored = {0};
    const struct hv_domain_meta *d;
    enum hv_state state;
    struct operation op;
    enum vm_status now;
    char message[96];
    size_t i;

    for (i = 0; i < n; i++) {
        struct vm *vm = &rows[i];

        d = find_domain(v, vm->id);
        if (!settled(vm) || !d || !hv_status(d->state, &now) || now == vm->status ||
            op_repo_active_for(svc->ops, vm->id, &op, &ignored) == 0 ||
            ignored.code != ST_ERR_NOT_FOUND)
            continue;
        /* The listing and the pass's rows may both be old: ask both again. */
        if (hypervisor_state(svc->hv, vm->id, &state, &ignored) < 0 || !hv_status(state, &now) ||
            vm_repo_get(svc->vms, NULL, vm->id, vm, &ignored) < 0 || !settled(vm) ||
            now == vm->status || vm->updated_at > st_now_ms() - RECONCILE_RECENT_MS)
            continue;
        snprintf(message, sizeof(message), "%s -> %s (found by reconciliation)",
                 vm_status_name(vm->status), vm_status_name(now));
        vm->status = now;
        vm->updated_at = st_now_ms();
        if (write_row(svc, vm, &ignored) > 0)
            op_service_event(svc->op_svc, vm, VM_EVENT_STATE_CHANGE, message,
                             json_pack("{s:s}", "status", vm_status_name(now)), &ignored);
    }
}

/* Creates and deletes left without an operation (an API node died between row and queue). */
static void
requeue_stale(struct reconcile_service *svc, const struct vm *rows, size_t n,
              struct reconcile_report *r)
{
    int64_t before = st_now_ms() - svc->stale_ms;
    struct st_error local = {0};
    struct operation op;
    size_t i;

    for (i = 0; i < n; i++) {
        const struct vm *vm = &rows[i];

        /* A delete that failed says so in its fault: it waits for the user to retry it. */
        if ((vm->status != VM_STATUS_CREATING && vm->status != VM_STATUS_DELETING) ||
            vm->updated_at > before || vm->fault[0])
            continue;
        if (op_repo_active_for(svc->ops, vm->id, &op, &local) == 0 ||
            local.code != ST_ERR_NOT_FOUND)
            continue;
        memset(&op, 0, sizeof(op));
        st_uuid_generate(op.id);
        op.kind = vm->status == VM_STATUS_CREATING ? OP_KIND_VM_CREATE : OP_KIND_VM_DELETE;
        memcpy(op.target_id, vm->id, ST_ID_BUF);
        memcpy(op.owner_id, vm->owner_id, ST_ID_BUF);
        op.status = OP_STATUS_QUEUED;
        op.created_at = st_now_ms();
        op.revision = 1;
        if (op_repo_insert(svc->ops, &op, &local) < 0)
            continue;
        op_service_event(svc->op_svc, vm, VM_EVENT_WARNING,
                         "no operation carried this VM on: one was queued again",
                         json_pack("{s:s}", "operation_id", op.id), &local);
        r->requeued++;
    }
}

int
reconcile_run(struct reconcile_service *svc, struct reconcile_report *out, struct st_error *err)
{
    struct orphan_list orphans = {NULL, 0};
    struct reconcile_report r;
    struct backend_view v;
    struct vm *rows;
    size_t n, i;
    char *ids;

    memset(&r, 0, sizeof(r));
    if (backend_view_read(svc, &v, err) < 0)
        return -1;
    if (all_rows(svc, &rows, &n, err) < 0) {
        backend_view_release(&v);
        return -1;
    }
    ids = row_ids(rows, n);
    orphans_of(svc, &v, ids, n, &orphans);
    for (i = 0; i < orphans.count; i++) {
        if (orphans.items[i].kind == ORPHAN_DOMAIN)
            r.orphan_domains++;
        else
            r.orphan_disks++;
    }
    mark_vanished(svc, &v, rows, n, &r);
    sync_states(svc, &v, rows, n);
    requeue_stale(svc, rows, n, &r);
    free(ids);
    free(rows);
    orphan_list_release(&orphans);
    backend_view_release(&v);
    if (event_repo_prune(svc->events, st_now_ms() - svc->event_retention_ms, &r.events_pruned,
                         err) < 0 ||
        idem_repo_prune(svc->idem, st_now_ms(), &r.keys_pruned, err) < 0)
        return -1;
    *out = r;
    return 0;
}

int
reconcile_on_event(struct reconcile_service *svc, const char *id, enum hv_event event,
                   struct st_error *err)
{
    struct st_error local = {0};
    struct operation op;
    enum vm_status now = VM_STATUS_RUNNING;
    enum hv_state state;
    char message[96];
    struct vm vm;
    int written;

    /*
     * The event only says to look: events come late and in bursts, so what
     * the hypervisor says now is what counts, asked before the row is read
     * so that the row is the newer of the two.
     */
    if (hypervisor_state(svc->hv, id, &state, &local) == 0) {
        if (!hv_status(state, &now))
            return 0;
        event = HV_EVENT_STARTED; /* any event but undefined: a state to compare */
    } else if (local.code == ST_ERR_NOT_FOUND) {
        event = HV_EVENT_UNDEFINED;
    } else {
        *err = local;
        return -1;
    }
    if (vm_repo_get(svc->vms, NULL, id, &vm, &local) < 0) {
        if (local.code == ST_ERR_NOT_FOUND)
            return 0; /* an orphan's event: reconcile_run() counts those */
        *err = local;
        return -1;
    }
    /* Work under way owns the row (and when that cannot be told, so does the next pass). */
    if (op_repo_active_for(svc->ops, id, &op, &local) == 0 || local.code != ST_ERR_NOT_FOUND)
        return 0;
    /*
     * Only settled VMs change on their own, and a row the API has just
     * written is the API's: its action caused the event (a change of the
     * guest's own in that moment is caught by the next reconcile pass).
     */
    if (vm.step != VM_STEP_DONE ||
        (vm.status != VM_STATUS_RUNNING && vm.status != VM_STATUS_STOPPED &&
         vm.status != VM_STATUS_PAUSED) ||
        vm.updated_at > st_now_ms() - RECONCILE_RECENT_MS)
        return 0;
    if (event == HV_EVENT_UNDEFINED) {
        /* Undefined behind stratus's back: the VM shows missing from now on. */
        if (strcmp(vm.fault, VANISHED_FAULT) == 0)
            return 0;
        st_strlcpy(vm.fault, VANISHED_FAULT, sizeof(vm.fault));
        vm.updated_at = st_now_ms();
        written = write_row(svc, &vm, err);
        if (written <= 0)
            return written;
        return op_service_event(svc->op_svc, &vm, VM_EVENT_WARNING,
                                "the domain was undefined outside stratus: the VM shows missing",
                                NULL, err);
    }
    if (now == vm.status)
        return 0;
    snprintf(message, sizeof(message), "%s -> %s (seen by the hypervisor)",
             vm_status_name(vm.status), vm_status_name(now));
    vm.status = now;
    vm.updated_at = st_now_ms();
    written = write_row(svc, &vm, err);
    if (written <= 0)
        return written;
    return op_service_event(svc->op_svc, &vm, VM_EVENT_STATE_CHANGE, message,
                            json_pack("{s:s}", "status", vm_status_name(now)), err);
}
