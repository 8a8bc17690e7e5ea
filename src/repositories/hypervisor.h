/*
 * hypervisor.h - what stratus asks of a compute backend.
 *
 * Domains are addressed by the VM id (which is also the domain UUID).  The
 * backend names them "stratus-<id>" and records owner and id in its own
 * metadata, so every domain can be traced back to its row.
 *
 * Every method returns 0 or -1 with @err filled:
 *   ST_ERR_NOT_FOUND    no such domain
 *   ST_ERR_CONFLICT     the domain is in the wrong state for the call
 *   ST_ERR_UNAVAILABLE  the backend cannot be reached now (retry later)
 *   ST_ERR_BACKEND      anything else the backend said
 * Optional methods may be NULL; the wrappers then report ST_ERR_UNSUPPORTED.
 */
#ifndef STRATUS_REPOSITORIES_HYPERVISOR_H
#define STRATUS_REPOSITORIES_HYPERVISOR_H

#include <stddef.h>

#include "models/common.h"

enum hv_state {
    HV_STATE_NOSTATE = 0,
    HV_STATE_RUNNING,
    HV_STATE_BLOCKED,
    HV_STATE_PAUSED,
    HV_STATE_SHUTDOWN, /* shutting down */
    HV_STATE_SHUTOFF,
    HV_STATE_CRASHED,
    HV_STATE_PMSUSPENDED,
};

/* What a domain is made of.  Borrowed strings; the backend copies what it keeps. */
struct hv_domain_spec {
    const char *id;       /* VM id = domain UUID */
    const char *owner_id; /* recorded in metadata */
    const char *name;     /* the user's name for the VM, recorded in metadata */
    unsigned vcpus;
    unsigned memory_mib;
    const char *disk_path;   /* root disk */
    const char *disk_format; /* "qcow2" or "raw" */
    /*
     * Which stratus installation owns the domain (recorded in metadata), so
     * that two installations sharing one libvirtd never take each other's
     * domains for orphans.  NULL or "" records none.
     */
    const char *instance;
};

/* One entry of list_all. */
struct hv_domain_info {
    char id[ST_ID_BUF];
    enum hv_state state;
};

/* A stratus domain with what its metadata says, for reconciliation. */
struct hv_domain_meta {
    char id[ST_ID_BUF];       /* the domain UUID */
    char owner_id[ST_ID_BUF]; /* "" when the metadata has none */
    char instance[ST_NAME_BUF];
    enum hv_state state;
};

/* What a lifecycle event says happened to a domain. */
enum hv_event {
    HV_EVENT_STARTED = 0,
    HV_EVENT_STOPPED, /* shut off, by itself, by the host or by a crash */
    HV_EVENT_PAUSED,
    HV_EVENT_RESUMED,
    HV_EVENT_UNDEFINED,
};

/*
 * Called from the backend's own event thread: keep it short and use only
 * what is safe from another thread (the callback must not use the
 * hypervisor it came from).
 */
typedef void (*hv_event_fn)(void *ctx, const char *id, enum hv_event event);

struct hypervisor_ops {
    /* Mandatory. Define, or redefine (same id) with the new spec. */
    int (*define)(void *self, const struct hv_domain_spec *spec, struct st_error *err);
    /* Mandatory. Boot a defined, shut-off domain. */
    int (*start)(void *self, const char *id, struct st_error *err);
    /* Mandatory. Ask the guest to power off (ACPI); returns at once. */
    int (*shutdown)(void *self, const char *id, struct st_error *err);
    /* Mandatory. Pull the plug. */
    int (*destroy)(void *self, const char *id, struct st_error *err);
    /* Mandatory. Ask the guest to reboot. */
    int (*reboot)(void *self, const char *id, struct st_error *err);
    /* Mandatory. Pause the vCPUs. */
    int (*suspend)(void *self, const char *id, struct st_error *err);
    /* Mandatory. */
    int (*resume)(void *self, const char *id, struct st_error *err);
    /* Mandatory. Forget the definition (the domain must not run). */
    int (*undefine)(void *self, const char *id, struct st_error *err);
    /* Mandatory. */
    int (*state)(void *self, const char *id, enum hv_state *out, struct st_error *err);
    /*
     * Mandatory. Every stratus domain's id and state, in one backend call.
     * *out is malloc'ed (possibly NULL when *n is 0); caller free()s it.
     */
    int (*list_all)(void *self, struct hv_domain_info **out, size_t *n, struct st_error *err);
    /* Optional. Check the backend answers (for /v1/health). */
    int (*ping)(void *self, struct st_error *err);
    /* Mandatory. */
    void (*close)(void *self);
    /*
     * Optional. Every domain named like a stratus domain, with its
     * metadata (one call per domain is allowed: this is for periodic
     * reconciliation, not for listing).  *out is malloc'ed; free() it.
     */
    int (*list_meta)(void *self, struct hv_domain_meta **out, size_t *n, struct st_error *err);
    /*
     * Optional. Start calling @fn(@ctx, ...) for lifecycle events of
     * stratus domains, from a thread the backend runs, until close.  Call
     * at most once.
     */
    int (*watch)(void *self, hv_event_fn fn, void *ctx, struct st_error *err);
};

struct hypervisor {
    const struct hypervisor_ops *ops;
    void *self;
};

static inline int
hypervisor_define(struct hypervisor *h, const struct hv_domain_spec *spec, struct st_error *err)
{
    return h->ops->define(h->self, spec, err);
}

static inline int
hypervisor_start(struct hypervisor *h, const char *id, struct st_error *err)
{
    return h->ops->start(h->self, id, err);
}

static inline int
hypervisor_shutdown(struct hypervisor *h, const char *id, struct st_error *err)
{
    return h->ops->shutdown(h->self, id, err);
}

static inline int
hypervisor_destroy(struct hypervisor *h, const char *id, struct st_error *err)
{
    return h->ops->destroy(h->self, id, err);
}

static inline int
hypervisor_reboot(struct hypervisor *h, const char *id, struct st_error *err)
{
    return h->ops->reboot(h->self, id, err);
}

static inline int
hypervisor_suspend(struct hypervisor *h, const char *id, struct st_error *err)
{
    return h->ops->suspend(h->self, id, err);
}

static inline int
hypervisor_resume(struct hypervisor *h, const char *id, struct st_error *err)
{
    return h->ops->resume(h->self, id, err);
}

static inline int
hypervisor_undefine(struct hypervisor *h, const char *id, struct st_error *err)
{
    return h->ops->undefine(h->self, id, err);
}

static inline int
hypervisor_state(struct hypervisor *h, const char *id, enum hv_state *out, struct st_error *err)
{
    return h->ops->state(h->self, id, out, err);
}

static inline int
hypervisor_list_all(struct hypervisor *h, struct hv_domain_info **out, size_t *n,
                    struct st_error *err)
{
    return h->ops->list_all(h->self, out, n, err);
}

static inline int
hypervisor_ping(struct hypervisor *h, struct st_error *err)
{
    if (!h->ops->ping)
        return st_error_set(err, ST_ERR_UNSUPPORTED, "hypervisor backend has no ping");
    return h->ops->ping(h->self, err);
}

static inline int
hypervisor_list_meta(struct hypervisor *h, struct hv_domain_meta **out, size_t *n,
                     struct st_error *err)
{
    if (!h->ops->list_meta)
        return st_error_set(err, ST_ERR_UNSUPPORTED, "hypervisor backend cannot list metadata");
    return h->ops->list_meta(h->self, out, n, err);
}

static inline int
hypervisor_watch(struct hypervisor *h, hv_event_fn fn, void *ctx, struct st_error *err)
{
    if (!h->ops->watch)
        return st_error_set(err, ST_ERR_UNSUPPORTED, "hypervisor backend has no events");
    return h->ops->watch(h->self, fn, ctx, err);
}

static inline void
hypervisor_close(struct hypervisor *h)
{
    if (h && h->ops) {
        h->ops->close(h->self);
        h->ops = NULL;
        h->self = NULL;
    }
}

/* "running", "shutoff", ... ; never NULL. */
const char *hv_state_name(enum hv_state state);

#endif
