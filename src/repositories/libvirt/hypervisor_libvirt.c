#include "repositories/libvirt/libvirt_backend.h"

#include "repositories/libvirt/libvirt_internal.h"
#include "util/ids.h"
#include "util/mem.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct hv_libvirt {
    struct libvirt_conn *lc; /* borrowed */
    char *virt_type;
    char *console_dir;           /* NULL = no serial console */
    char *emulator;              /* NULL = libvirt's default */
    struct libvirt_watch *watch; /* NULL until watch() */
};

enum hv_action {
    HV_ACTION_START = 0,
    HV_ACTION_SHUTDOWN,
    HV_ACTION_DESTROY,
    HV_ACTION_REBOOT,
    HV_ACTION_SUSPEND,
    HV_ACTION_RESUME,
    HV_ACTION_UNDEFINE,
};

#define HV_BIT(state) LIBVIRT_STATE_BIT(state)
#define HV_ACTIVE_STATES                                                                           \
    (HV_BIT(VIR_DOMAIN_RUNNING) | HV_BIT(VIR_DOMAIN_BLOCKED) | HV_BIT(VIR_DOMAIN_PAUSED) |         \
     HV_BIT(VIR_DOMAIN_SHUTDOWN) | HV_BIT(VIR_DOMAIN_PMSUSPENDED))
#define HV_INACTIVE_STATES (HV_BIT(VIR_DOMAIN_SHUTOFF) | HV_BIT(VIR_DOMAIN_CRASHED))

/*
 * The states in which each action makes sense.  Drivers disagree on the
 * code of a wrong-state refusal (qemu: OPERATION_INVALID, test: INTERNAL_ERROR),
 * so a failed action is checked against this table to report ST_ERR_CONFLICT.
 */
static const struct {
    const char *verb;
    unsigned allowed;
} hv_actions[] = {
    [HV_ACTION_START] = {"start", HV_INACTIVE_STATES},
    [HV_ACTION_SHUTDOWN] = {"shut down", HV_ACTIVE_STATES},
    [HV_ACTION_DESTROY] = {"destroy", HV_ACTIVE_STATES},
    [HV_ACTION_REBOOT] = {"reboot", HV_ACTIVE_STATES},
    [HV_ACTION_SUSPEND] = {"suspend", HV_BIT(VIR_DOMAIN_RUNNING) | HV_BIT(VIR_DOMAIN_BLOCKED)},
    [HV_ACTION_RESUME] = {"resume", HV_BIT(VIR_DOMAIN_PAUSED)},
    [HV_ACTION_UNDEFINE] = {"undefine", HV_INACTIVE_STATES | HV_BIT(VIR_DOMAIN_NOSTATE)},
};

static enum hv_state
hv_state_from_libvirt(int state)
{
    switch (state) {
    case VIR_DOMAIN_RUNNING:
        return HV_STATE_RUNNING;
    case VIR_DOMAIN_BLOCKED:
        return HV_STATE_BLOCKED;
    case VIR_DOMAIN_PAUSED:
        return HV_STATE_PAUSED;
    case VIR_DOMAIN_SHUTDOWN:
        return HV_STATE_SHUTDOWN;
    case VIR_DOMAIN_SHUTOFF:
        return HV_STATE_SHUTOFF;
    case VIR_DOMAIN_CRASHED:
        return HV_STATE_CRASHED;
    case VIR_DOMAIN_PMSUSPENDED:
        return HV_STATE_PMSUSPENDED;
    default:
        return HV_STATE_NOSTATE;
    }
}

/* Find the domain of VM @id by its name (never touches domains not ours). */
static virDomainPtr
hv_lookup(virConnectPtr conn, const char *id, struct st_error *err)
{
    char name[sizeof(LIBVIRT_DOMAIN_PREFIX) + ST_ID_BUF];
    virDomainPtr dom;

    if (snprintf(name, sizeof(name), LIBVIRT_DOMAIN_PREFIX "%s", id) >= (int)sizeof(name)) {
        st_error_set(err, ST_ERR_NOT_FOUND, "no domain for VM '%s': not a VM id", id);
        return NULL;
    }
    dom = virDomainLookupByName(conn, name);
    if (!dom)
        libvirt_error_set(err, "no domain for VM '%s'", id);
    return dom;
}

/*
 * The domain XML of @spec; every value escaped.  Caller free()s.  The
 * metadata element is called "instance" for the VM it describes; the
 * stratus installation owning the domain is its <installation> child.
 */
static char *
hv_domain_xml(const struct hv_libvirt *hv, const struct hv_domain_spec *spec)
{
    ST_AUTOFREE char *type = libvirt_xml_escape(hv->virt_type);
    ST_AUTOFREE char *id = libvirt_xml_escape(spec->id);
    ST_AUTOFREE char *owner = libvirt_xml_escape(spec->owner_id);
    ST_AUTOFREE char *name = libvirt_xml_escape(spec->name);
    ST_AUTOFREE char *disk = libvirt_xml_escape(spec->disk_path);
    ST_AUTOFREE char *format = libvirt_xml_escape(spec->disk_format);
    ST_AUTOFREE char *emulator = NULL;
    ST_AUTOFREE char *console = NULL;
    ST_AUTOFREE char *installation = NULL;

    if (spec->instance && *spec->instance) {
        ST_AUTOFREE char *esc = libvirt_xml_escape(spec->instance);

        installation =
            st_xasprintf("      <" LIBVIRT_STRATUS_NS_PREFIX
                         ":installation>%s</" LIBVIRT_STRATUS_NS_PREFIX ":installation>\n",
                         esc);
    }
    if (hv->emulator) {
        ST_AUTOFREE char *path = libvirt_xml_escape(hv->emulator);

        emulator = st_xasprintf("    <emulator>%s</emulator>\n", path);
    }
    if (hv->console_dir) {
        ST_AUTOFREE char *log = st_xasprintf("%s/%s.log", hv->console_dir, spec->id);
        ST_AUTOFREE char *esc = libvirt_xml_escape(log);

        console = st_xasprintf("    <serial type='pty'>\n"
                               "      <log file='%s' append='on'/>\n"
                               "    </serial>\n"
                               "    <console type='pty'/>\n",
                               esc);
    }
    return st_xasprintf(
        "<domain type='%s'>\n"
        "  <name>" LIBVIRT_DOMAIN_PREFIX "%s</name>\n"
        "  <uuid>%s</uuid>\n"
        "  <metadata>\n"
        "    <" LIBVIRT_STRATUS_NS_PREFIX ":instance xmlns:" LIBVIRT_STRATUS_NS_PREFIX
        "='" LIBVIRT_STRATUS_NS_URI "'>\n"
        "      <" LIBVIRT_STRATUS_NS_PREFIX ":id>%s</" LIBVIRT_STRATUS_NS_PREFIX ":id>\n"
        "      <" LIBVIRT_STRATUS_NS_PREFIX ":owner>%s</" LIBVIRT_STRATUS_NS_PREFIX ":owner>\n"
        "      <" LIBVIRT_STRATUS_NS_PREFIX ":name>%s</" LIBVIRT_STRATUS_NS_PREFIX ":name>\n"
        "%s"
        "    </" LIBVIRT_STRATUS_NS_PREFIX ":instance>\n"
        "  </metadata>\n"
        "  <memory unit='MiB'>%u</memory>\n"
        "  <vcpu>%u</vcpu>\n"
        "  <os>\n"
        "    <type>hvm</type>\n"
        "    <boot dev='hd'/>\n"
        "  </os>\n"
        "  <features>\n"
        "    <acpi/>\n"
        "  </features>\n"
        "  <on_crash>destroy</on_crash>\n"
        "  <devices>\n"
        "%s"
        "    <disk type='file' device='disk'>\n"
        "      <driver name='qemu' type='%s'/>\n"
        "      <source file='%s'/>\n"
        "      <target dev='vda' bus='virtio'/>\n"
        "    </disk>\n"
        "%s"
        "  </devices>\n"
        "</domain>\n",
        type, id, id, id, owner, name, installation ? installation : "", spec->memory_mib,
        spec->vcpus, emulator ? emulator : "", format, disk, console ? console : "");
}

struct hv_define_arg {
    const struct hv_libvirt *hv;
    const struct hv_domain_spec *spec;
};

static int
hv_define_op(virConnectPtr conn, void *arg, struct st_error *err)
{
    const struct hv_define_arg *a = arg;
    ST_AUTOFREE char *xml = hv_domain_xml(a->hv, a->spec);
    virDomainPtr dom;

    /* Same name and UUID: libvirt replaces the persistent definition. */
    dom = virDomainDefineXML(conn, xml);
    if (!dom)
        return libvirt_error_set(err, "cannot define the domain of VM '%s'", a->spec->id);
    virDomainFree(dom);
    return 0;
}

static int
hv_define(void *self, const struct hv_domain_spec *spec, struct st_error *err)
{
    struct hv_define_arg arg = {.hv = self, .spec = spec};

    if (!st_uuid_valid(spec->id))
        return st_error_set(err, ST_ERR_INVALID, "cannot define a domain for VM '%s': not a UUID",
                            spec->id ? spec->id : "");
    if (!spec->disk_path || !*spec->disk_path || !spec->disk_format || !*spec->disk_format)
        return st_error_set(err, ST_ERR_INVALID,
                            "cannot define the domain of VM '%s': no root disk given", spec->id);
    if (spec->vcpus == 0 || spec->memory_mib == 0)
        return st_error_set(err, ST_ERR_INVALID,
                            "cannot define the domain of VM '%s': %u vCPUs and %u MiB of memory",
                            spec->id, spec->vcpus, spec->memory_mib);
    return libvirt_conn_run(((struct hv_libvirt *)self)->lc, LIBVIRT_OP_WRITE, "define",
                            hv_define_op, &arg, err);
}

/* Undefine with everything libvirt keeps beside the definition, where the driver knows how. */
static int
hv_undefine_dom(virDomainPtr dom)
{
    int rc;
    int code;

    rc = virDomainUndefineFlags(dom, VIR_DOMAIN_UNDEFINE_MANAGED_SAVE |
                                         VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA |
                                         VIR_DOMAIN_UNDEFINE_NVRAM);
    if (rc == 0)
        return 0;
    code = libvirt_last_error_code();
    if (code == VIR_ERR_NO_SUPPORT || code == VIR_ERR_INVALID_ARG)
        rc = virDomainUndefine(dom);
    return rc;
}

static int
hv_action_do(virDomainPtr dom, enum hv_action action)
{
    switch (action) {
    case HV_ACTION_START:
        return virDomainCreate(dom);
    case HV_ACTION_SHUTDOWN:
        return virDomainShutdown(dom);
    case HV_ACTION_DESTROY:
        return virDomainDestroy(dom);
    case HV_ACTION_REBOOT:
        return virDomainReboot(dom, 0);
    case HV_ACTION_SUSPEND:
        return virDomainSuspend(dom);
    case HV_ACTION_RESUME:
        return virDomainResume(dom);
    case HV_ACTION_UNDEFINE:
        return hv_undefine_dom(dom);
    }
    BUG("unknown hypervisor action");
}

struct hv_action_arg {
    const char *id;
    enum hv_action action;
};

static int
hv_action_op(virConnectPtr conn, void *arg, struct st_error *err)
{
    const struct hv_action_arg *a = arg;
    const char *verb = hv_actions[a->action].verb;
    virDomainPtr dom;
    int state = VIR_DOMAIN_NOSTATE;
    int rc = -1;

    dom = hv_lookup(conn, a->id, err);
    if (!dom)
        return -1;
    if (a->action == HV_ACTION_UNDEFINE) {
        /* libvirt would turn a running domain transient; the contract says it must not run. */
        rc = virDomainIsActive(dom);
        if (rc != 0) {
            if (rc < 0)
                libvirt_error_set(err, "cannot undefine VM '%s'", a->id);
            else
                st_error_set(err, ST_ERR_CONFLICT, "cannot undefine VM '%s': its domain is running",
                             a->id);
            rc = -1;
            goto out;
        }
    }
    rc = hv_action_do(dom, a->action);
    if (rc == 0)
        goto out;
    libvirt_error_set(err, "cannot %s VM '%s'", verb, a->id);
    if (err->code == ST_ERR_BACKEND && virDomainGetState(dom, &state, NULL, 0) == 0 &&
        !libvirt_state_in(state, hv_actions[a->action].allowed))
        err->code = ST_ERR_CONFLICT;
out:
    virDomainFree(dom);
    return rc < 0 ? -1 : 0;
}

static int
hv_action(struct hv_libvirt *hv, const char *id, enum hv_action action, struct st_error *err)
{
    struct hv_action_arg arg = {.id = id, .action = action};

    return libvirt_conn_run(hv->lc, LIBVIRT_OP_WRITE, hv_actions[action].verb, hv_action_op, &arg,
                            err);
}

static int
hv_start(void *self, const char *id, struct st_error *err)
{
    return hv_action(self, id, HV_ACTION_START, err);
}

static int
hv_shutdown(void *self, const char *id, struct st_error *err)
{
    return hv_action(self, id, HV_ACTION_SHUTDOWN, err);
}

static int
hv_destroy(void *self, const char *id, struct st_error *err)
{
    return hv_action(self, id, HV_ACTION_DESTROY, err);
}

static int
hv_reboot(void *self, const char *id, struct st_error *err)
{
    return hv_action(self, id, HV_ACTION_REBOOT, err);
}

static int
hv_suspend(void *self, const char *id, struct st_error *err)
{
    return hv_action(self, id, HV_ACTION_SUSPEND, err);
}

static int
hv_resume(void *self, const char *id, struct st_error *err)
{
    return hv_action(self, id, HV_ACTION_RESUME, err);
}

/*
 * The serial console log belongs to the domain: it goes with the
 * definition, also when the domain was already gone (an interrupted delete),
 * so a deleted VM leaves no file behind.
 */
static int
hv_undefine(void *self, const char *id, struct st_error *err)
{
    struct hv_libvirt *hv = self;
    struct st_error local = {0};
    int rc = hv_action(self, id, HV_ACTION_UNDEFINE, &local);

    if ((rc == 0 || local.code == ST_ERR_NOT_FOUND) && hv->console_dir && st_uuid_valid(id)) {
        ST_AUTOFREE char *log = st_xasprintf("%s/%s.log", hv->console_dir, id);

        if (unlink(log) < 0 && errno != ENOENT && rc == 0)
            return st_error_set_native(err, ST_ERR_BACKEND, errno,
                                       "cannot remove console log '%s': %s", log, strerror(errno));
    }
    if (rc < 0 && err)
        *err = local;
    return rc;
}

struct hv_state_arg {
    const char *id;
    enum hv_state state;
};

static int
hv_state_op(virConnectPtr conn, void *arg, struct st_error *err)
{
    struct hv_state_arg *a = arg;
    virDomainPtr dom;
    int state;
    int rc;

    dom = hv_lookup(conn, a->id, err);
    if (!dom)
        return -1;
    rc = virDomainGetState(dom, &state, NULL, 0);
    if (rc < 0)
        libvirt_error_set(err, "cannot read the state of VM '%s'", a->id);
    else
        a->state = hv_state_from_libvirt(state);
    virDomainFree(dom);
    return rc < 0 ? -1 : 0;
}

static int
hv_state(void *self, const char *id, enum hv_state *out, struct st_error *err)
{
    struct hv_state_arg arg = {.id = id, .state = HV_STATE_NOSTATE};

    if (libvirt_conn_run(((struct hv_libvirt *)self)->lc, LIBVIRT_OP_READ, "state", hv_state_op,
                         &arg, err) < 0)
        return -1;
    *out = arg.state;
    return 0;
}

/* Called by hv_domains_each() for every domain; @state < 0 when not known yet. */
typedef int (*hv_domain_fn)(virDomainPtr dom, int state, void *arg, struct st_error *err);

static bool
hv_is_stratus(const char *name)
{
    return name && strncmp(name, LIBVIRT_DOMAIN_PREFIX, strlen(LIBVIRT_DOMAIN_PREFIX)) == 0;
}

/* @items grown to hold at least one more element of @size; never fails. */
static void *
hv_grow(void *items, size_t *cap, size_t size)
{
    void *grown;

    *cap = *cap ? *cap * 2 : 64;
    grown = realloc(items, *cap * size);
    if (!grown)
        BUG("out of memory");
    return grown;
}

/*
 * For drivers without bulk stats: one listing per state class, so the cost
 * stays a handful of calls whatever the number of domains.
 */
static int
hv_each_by_state(virConnectPtr conn, hv_domain_fn fn, void *arg, struct st_error *err)
{
    static const struct {
        unsigned flag;
        int state; /* -1: the class mixes states */
    } classes[] = {
        {VIR_CONNECT_LIST_DOMAINS_RUNNING, VIR_DOMAIN_RUNNING},
        {VIR_CONNECT_LIST_DOMAINS_PAUSED, VIR_DOMAIN_PAUSED},
        {VIR_CONNECT_LIST_DOMAINS_SHUTOFF, VIR_DOMAIN_SHUTOFF},
        {VIR_CONNECT_LIST_DOMAINS_OTHER, -1},
    };
    size_t c;
    int i, n, rc = 0;

    for (c = 0; c < ST_ARRAY_LEN(classes) && rc == 0; c++) {
        virDomainPtr *doms = NULL;

        n = virConnectListAllDomains(conn, &doms, classes[c].flag);
        if (n < 0)
            return libvirt_error_set(err, "cannot list domains");
        for (i = 0; i < n; i++) {
            if (rc == 0)
                rc = fn(doms[i], classes[c].state, arg, err);
            virDomainFree(doms[i]);
        }
        free(doms);
    }
    return rc;
}

/* Call @fn for every domain with its state, in as few backend calls as the driver allows. */
static int
hv_domains_each(virConnectPtr conn, hv_domain_fn fn, void *arg, struct st_error *err)
{
    virDomainStatsRecordPtr *records = NULL;
    int i, n, state, rc = 0;

    n = virConnectGetAllDomainStats(conn, VIR_DOMAIN_STATS_STATE, &records, 0);
    if (n < 0) {
        if (libvirt_last_error_code() == VIR_ERR_NO_SUPPORT)
            return hv_each_by_state(conn, fn, arg, err);
        return libvirt_error_set(err, "cannot list domains");
    }
    for (i = 0; i < n && rc == 0; i++) {
        if (virTypedParamsGetInt(records[i]->params, records[i]->nparams, "state.state", &state) !=
            1)
            state = -1;
        rc = fn(records[i]->dom, state, arg, err);
    }
    virDomainStatsRecordListFree(records);
    return rc;
}

/*
 * The state of @dom: @state when known, else asked of the domain itself
 * (one call, only for the few domains in odd states).  1 with *@out set,
 * 0 when the domain is gone meanwhile, -1 with @err filled.
 */
static int
hv_dom_state(virDomainPtr dom, const char *name, int state, int *out, struct st_error *err)
{
    if (state < 0 && virDomainGetState(dom, &state, NULL, 0) < 0) {
        if (libvirt_last_error_code() == VIR_ERR_NO_DOMAIN)
            return 0;
        return libvirt_error_set(err, "cannot read the state of domain '%s'", name);
    }
    *out = state;
    return 1;
}

struct hv_list {
    struct hv_domain_info *items;
    size_t count;
    size_t cap;
};

/* Add @dom to the hv_list @arg when it is a stratus domain. */
static int
hv_list_add(virDomainPtr dom, int state, void *arg, struct st_error *err)
{
    struct hv_list *list = arg;
    const char *name = virDomainGetName(dom);
    char uuid[VIR_UUID_STRING_BUFLEN];
    struct hv_domain_info *info;
    int rc;

    if (!hv_is_stratus(name))
        return 0;
    if (virDomainGetUUIDString(dom, uuid) < 0)
        return libvirt_error_set(err, "cannot read the UUID of domain '%s'", name);
    rc = hv_dom_state(dom, name, state, &state, err);
    if (rc <= 0)
        return rc;
    if (list->count == list->cap)
        list->items = hv_grow(list->items, &list->cap, sizeof(*list->items));
    info = &list->items[list->count++];
    st_strlcpy(info->id, uuid, sizeof(info->id));
    info->state = hv_state_from_libvirt(state);
    return 0;
}

static int
hv_list_all_op(virConnectPtr conn, void *arg, struct st_error *err)
{
    struct hv_list *list = arg;

    list->count = 0;
    return hv_domains_each(conn, hv_list_add, list, err);
}

static int
hv_list_all(void *self, struct hv_domain_info **out, size_t *n, struct st_error *err)
{
    struct hv_list list = {0};

    if (libvirt_conn_run(((struct hv_libvirt *)self)->lc, LIBVIRT_OP_READ, "list", hv_list_all_op,
                         &list, err) < 0) {
        free(list.items);
        return -1;
    }
    *out = list.items;
    *n = list.count;
    return 0;
}

/*
 * The text of the first element called @tag (under any namespace prefix)
 * in @xml, unescaped into @out; "" when there is none, it is empty, or it
 * does not fit @out (such a value is not one stratus wrote).  @xml is the
 * stratus metadata element as libvirt serialises it: elements holding only
 * escaped text, so every '<' is markup and a text ends at the next one.
 */
static void
hv_meta_text(const char *xml, const char *tag, char *out, size_t size)
{
    size_t tlen = strlen(tag), nlen;
    const char *p = xml, *name, *local, *gt, *end;
    ST_AUTOFREE char *text = NULL;

    out[0] = '\0';
    while ((p = strchr(p, '<')) != NULL) {
        name = ++p;
        nlen = strcspn(name, " \t\r\n/>");
        if (nlen == 0 || *name == '?' || *name == '!')
            continue;
        local = memchr(name, ':', nlen);
        local = local ? local + 1 : name;
        if ((size_t)(name + nlen - local) != tlen || strncmp(local, tag, tlen) != 0)
            continue;
        gt = strchr(name + nlen, '>');
        if (!gt || gt[-1] == '/')
            return; /* cut short, or <tag/> */
        end = strchr(gt + 1, '<');
        if (!end)
            return;
        text = st_xcalloc((size_t)(end - gt), 1);
        memcpy(text, gt + 1, (size_t)(end - gt - 1));
        libvirt_xml_unescape(text);
        if (st_strlcpy(out, text, size) < 0)
            out[0] = '\0';
        return;
    }
}

/*
 * Owner and installation of @dom from its stratus metadata into @meta
 * ("" for a domain without).  1 when read, 0 when the domain is gone
 * meanwhile, -1 with @err filled.
 */
static int
hv_meta_read(virDomainPtr dom, const char *name, struct hv_domain_meta *meta, struct st_error *err)
{
    ST_AUTOFREE char *xml = NULL;

    xml = virDomainGetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, LIBVIRT_STRATUS_NS_URI, 0);
    if (!xml) {
        switch (libvirt_last_error_code()) {
        case VIR_ERR_NO_DOMAIN:
            return 0;
        case VIR_ERR_NO_DOMAIN_METADATA:
            meta->owner_id[0] = '\0';
            meta->instance[0] = '\0';
            return 1;
        default:
            return libvirt_error_set(err, "cannot read the stratus metadata of domain '%s'", name);
        }
    }
    hv_meta_text(xml, "owner", meta->owner_id, sizeof(meta->owner_id));
    hv_meta_text(xml, "installation", meta->instance, sizeof(meta->instance));
    return 1;
}

struct hv_meta_list {
    struct hv_domain_meta *items;
    size_t count;
    size_t cap;
};

/* Add @dom with its metadata to the hv_meta_list @arg when it is named like a stratus domain. */
static int
hv_meta_add(virDomainPtr dom, int state, void *arg, struct st_error *err)
{
    struct hv_meta_list *list = arg;
    const char *name = virDomainGetName(dom);
    char uuid[VIR_UUID_STRING_BUFLEN];
    struct hv_domain_meta meta;
    int rc;

    if (!hv_is_stratus(name))
        return 0;
    if (virDomainGetUUIDString(dom, uuid) < 0)
        return libvirt_error_set(err, "cannot read the UUID of domain '%s'", name);
    memset(&meta, 0, sizeof(meta));
    rc = hv_dom_state(dom, name, state, &state, err);
    if (rc > 0)
        rc = hv_meta_read(dom, name, &meta, err);
    if (rc <= 0)
        return rc;
    st_strlcpy(meta.id, uuid, sizeof(meta.id));
    meta.state = hv_state_from_libvirt(state);
    if (list->count == list->cap)
        list->items = hv_grow(list->items, &list->cap, sizeof(*list->items));
    list->items[list->count++] = meta;
    return 0;
}

static int
hv_list_meta_op(virConnectPtr conn, void *arg, struct st_error *err)
{
    struct hv_meta_list *list = arg;

    list->count = 0;
    return hv_domains_each(conn, hv_meta_add, list, err);
}

static int
hv_list_meta(void *self, struct hv_domain_meta **out, size_t *n, struct st_error *err)
{
    struct hv_meta_list list = {0};

    if (libvirt_conn_run(((struct hv_libvirt *)self)->lc, LIBVIRT_OP_READ, "metadata list",
                         hv_list_meta_op, &list, err) < 0) {
        free(list.items);
        return -1;
    }
    *out = list.items;
    *n = list.count;
    return 0;
}

static int
hv_ping_op(virConnectPtr conn, void *arg, struct st_error *err)
{
    unsigned long version;

    (void)arg;
    if (virConnectGetLibVersion(conn, &version) < 0)
        return libvirt_error_set(err, "libvirt does not answer");
    return 0;
}

static int
hv_ping(void *self, struct st_error *err)
{
    return libvirt_conn_run(((struct hv_libvirt *)self)->lc, LIBVIRT_OP_READ, "ping", hv_ping_op,
                            NULL, err);
}

/*
 * The watch connects to the URI of the hypervisor's connection holder, on
 * a connection of its own: a holder belongs to one thread (the caller's).
 */
static int
hv_watch(void *self, hv_event_fn fn, void *ctx, struct st_error *err)
{
    struct hv_libvirt *hv = self;

    if (!fn)
        return st_error_set(err, ST_ERR_INVALID, "watching for domain events needs a callback");
    if (hv->watch)
        return st_error_set(err, ST_ERR_CONFLICT,
                            "the hypervisor is already watching libvirt at "
                            "'%s' for domain events",
                            libvirt_conn_uri(hv->lc) ? libvirt_conn_uri(hv->lc) : "(default)");
    hv->watch = libvirt_watch_start(libvirt_conn_uri(hv->lc), fn, ctx, err);
    return hv->watch ? 0 : -1;
}

static void
hv_close(void *self)
{
    struct hv_libvirt *hv = self;

    if (!hv)
        return;
    libvirt_watch_stop(hv->watch);
    free(hv->virt_type);
    free(hv->console_dir);
    free(hv->emulator);
    free(hv);
}

static const struct hypervisor_ops hv_libvirt_ops = {
    .define = hv_define,
    .start = hv_start,
    .shutdown = hv_shutdown,
    .destroy = hv_destroy,
    .reboot = hv_reboot,
    .suspend = hv_suspend,
    .resume = hv_resume,
    .undefine = hv_undefine,
    .state = hv_state,
    .list_all = hv_list_all,
    .ping = hv_ping,
    .close = hv_close,
    .list_meta = hv_list_meta,
    .watch = hv_watch,
};

struct libvirt_watch *
hypervisor_libvirt_watch(struct hypervisor *h)
{
    if (!h || h->ops != &hv_libvirt_ops)
        return NULL;
    return ((struct hv_libvirt *)h->self)->watch;
}

int
hypervisor_libvirt_open(struct libvirt_conn *conn, const struct hypervisor_libvirt_config *cfg,
                        struct hypervisor *out, struct st_error *err)
{
    struct hv_libvirt *hv;

    if (!conn || !cfg || !cfg->virt_type || !*cfg->virt_type)
        return st_error_set(err, ST_ERR_INVALID,
                            "the libvirt hypervisor needs a connection and a virt_type");
    hv = st_xcalloc(1, sizeof(*hv));
    hv->lc = conn;
    hv->virt_type = st_xstrdup(cfg->virt_type);
    hv->console_dir = cfg->console_dir && *cfg->console_dir ? st_xstrdup(cfg->console_dir) : NULL;
    hv->emulator = cfg->emulator && *cfg->emulator ? st_xstrdup(cfg->emulator) : NULL;
    out->ops = &hv_libvirt_ops;
    out->self = hv;
    return 0;
}
