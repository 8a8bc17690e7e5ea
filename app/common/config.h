/*
 * config.h - the configuration of stratus-api.
 *
 * Sources, later ones winning: built-in defaults, an INI file (`key = value`
 * lines, `#` or `;` comments, [sections] allowed but ignored for lookup),
 * then environment variables STRATUS_<KEY in upper case>.  Every key is
 * optional.  Values are checked once, here, with messages that name the key
 * (and file:line or the variable) and quote the value.
 */
#ifndef STRATUS_COMMON_CONFIG_H
#define STRATUS_COMMON_CONFIG_H

#include <stdbool.h>
#include <stdio.h>

#include "models/common.h"
#include "models/user.h"
#include "util/err.h"

#define API_CONFIG_STR 512
#define API_CONFIG_WORKERS_MAX 1024

struct api_config {
    char socket[ST_PATH_BUF];
    unsigned socket_mode;
    unsigned workers;           /* resolved: never 0 after api_config_load() */
    char database[ST_PATH_BUF]; /* sqlite://PATH, a path, or postgresql://... (common/store.h) */
    char libvirt_uri[API_CONFIG_STR];
    char virt_type[8];          /* as configured: auto, kvm or qemu */
    char virt_type_resolved[8]; /* kvm or qemu */
    char state_dir[ST_PATH_BUF];
    char pool_images[ST_NAME_BUF];
    char pool_default[ST_NAME_BUF];
    char pool_snapshots[ST_NAME_BUF];
    char pool_images_dir[ST_PATH_BUF];
    char pool_default_dir[ST_PATH_BUF];
    char pool_snapshots_dir[ST_PATH_BUF];
    char console_dir[ST_PATH_BUF];
    char import_dir[ST_PATH_BUF];
    unsigned long max_body_bytes;
    unsigned stop_timeout_s;
    char log_level[8];
    /* Identity. */
    bool allow_registration; /* POST /v1/users without a token */
    char password_hash[16];  /* argon2id limits: min, interactive or moderate */
    unsigned token_ttl_s;    /* lifetime of a bearer token */
    unsigned token_leeway_s; /* clock skew allowed on exp, iat and nbf */
    char token_keys_file[ST_PATH_BUF];
    unsigned login_max_failures; /* failed logins of one e-mail within login_window_s ... */
    unsigned login_window_s;
    unsigned login_lockout_s; /* ... refuse further attempts for this long */
    unsigned quota_max_vms;   /* default quotas; admins override them per user */
    unsigned quota_max_vcpus;
    unsigned quota_max_memory_mib;
    unsigned quota_max_disk_gib;
    char admin_email[ST_EMAIL_BUF];        /* the admin created on first start */
    char admin_password_file[ST_PATH_BUF]; /* where its password is written (0600) */
    /* Durable operations. */
    char instance[ST_NAME_BUF];  /* this installation's mark on its domains */
    unsigned worker_concurrency; /* operations one stratus-worker runs at once */
    unsigned lease_s;            /* a claimed operation is taken again after this */
    unsigned reconcile_interval_s;
    unsigned event_retention_days;
    unsigned idempotency_ttl_s;
    unsigned wait_max_s; /* GET /v1/operations/{id}?wait= is cut to this */
    /* Requests of one master waiting at once; resolved: never 0 (api/waitgate.h). */
    unsigned max_waiting_requests;
    bool test_hooks; /* honour STRATUS_TEST_CRASH_AFTER (tests only) */
};

/*
 * Load the configuration: defaults, then @path when not NULL (a missing
 * file is an error: it was asked for), then the environment.  Resolves
 * derived values (directories under state_dir, workers = 0,
 * max_waiting_requests = 0 as half the workers but at least 1, virt_type
 * auto using /proc/cpuinfo).  Returns 0 with *cfg filled, or -1 with @err
 * (ST_ERR_INVALID) and *cfg untouched.
 */
int api_config_load(struct api_config *cfg, const char *path, struct st_error *err);

/*
 * The virt_type to use for @configured ("auto", "kvm" or "qemu") on a host
 * whose /proc/cpuinfo reads @cpuinfo (may be NULL: unreadable).  auto means
 * kvm only when a "flags" line names vmx or svm.  Pure; returns a literal.
 */
const char *api_config_resolve_virt_type(const char *configured, const char *cpuinfo);

/* Print every key as `key = value`, in the order of the documentation. */
void api_config_print(const struct api_config *cfg, FILE *out);

#endif
