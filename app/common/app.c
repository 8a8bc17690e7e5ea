#include "common/app.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "repositories/libvirt/libvirt_backend.h"
#include "util/ids.h"
#include "util/mem.h"

#define APP_POLL_INTERVAL_MS 200
/*
 * An Idempotency-Key whose first request is unanswered this long after it
 * began never will be (nginx gives up on a request after 300 s): the worker
 * serving it died, and the key is free again.
 */
#define APP_IDEM_ABANDONED_MS 310000
#define APP_KEYS_CHECK_MS 1000

int
app_make_dirs(const char *path, struct st_error *err)
{
    char buf[ST_PATH_BUF];
    char *p;

    if (st_strlcpy(buf, path, sizeof(buf)) < 0)
        return st_error_set(err, ST_ERR_INVALID, "path '%.64s...' is too long", path);
    for (p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) < 0 && errno != EEXIST)
            return st_error_set_native(err, ST_ERR_INTERNAL, errno, "cannot create '%s': %s", buf,
                                       strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0755) < 0 && errno != EEXIST)
        return st_error_set_native(err, ST_ERR_INTERNAL, errno, "cannot create '%s': %s", buf,
                                   strerror(errno));
    return 0;
}

int
app_make_parent_dir(const char *file, struct st_error *err)
{
    char buf[ST_PATH_BUF];
    char *slash;

    if (st_strlcpy(buf, file, sizeof(buf)) < 0)
        return st_error_set(err, ST_ERR_INVALID, "path '%.64s...' is too long", file);
    slash = strrchr(buf, '/');
    if (!slash || slash == buf)
        return 0;
    *slash = '\0';
    return app_make_dirs(buf, err);
}

/* libvirtd resolves paths in its own working directory: hand it absolute ones. */
static int
make_absolute(char *path, size_t size, struct st_error *err)
{
    char cwd[ST_PATH_BUF];
    char *abs;
    int rc = 0;

    if (path[0] == '/')
        return 0;
    if (!getcwd(cwd, sizeof(cwd)))
        return st_error_set_native(err, ST_ERR_INTERNAL, errno,
                                   "cannot resolve '%s': working directory unknown: %s", path,
                                   strerror(errno));
    abs = st_xasprintf("%s/%s", cwd, path);
    if (st_strlcpy(path, abs, size) < 0)
        rc = st_error_set(err, ST_ERR_INVALID, "path '%.64s...' is too long", abs);
    free(abs);
    return rc;
}

/* Absolute backend paths, and every directory made before libvirt needs it. */
static int
prepare_dirs(struct api_config *c, struct st_error *err)
{
    char *const dirs[] = {c->state_dir,       c->console_dir,      c->import_dir,
                          c->pool_images_dir, c->pool_default_dir, c->pool_snapshots_dir};
    size_t i;

    for (i = 0; i < ST_ARRAY_LEN(dirs); i++)
        if (make_absolute(dirs[i], ST_PATH_BUF, err) < 0 || app_make_dirs(dirs[i], err) < 0)
            return -1;
    return 0;
}

int
app_ensure_pools(struct app *app, struct st_error *err)
{
    const struct api_config *c = &app->cfg;

    if (app->pools_ready)
        return 0;
    if (storage_ensure_pool(&app->storage, c->pool_images, c->pool_images_dir, err) < 0 ||
        storage_ensure_pool(&app->storage, c->pool_default, c->pool_default_dir, err) < 0 ||
        storage_ensure_pool(&app->storage, c->pool_snapshots, c->pool_snapshots_dir, err) < 0)
        return -1;
    app->pools_ready = true;
    return 0;
}

static int
open_store(struct app *app, struct st_error *err)
{
    return store_open(&app->store, app->cfg.database, err);
}

static int64_t
keys_mtime_ns(const char *path)
{
    struct stat st;

    if (stat(path, &st) < 0)
        return -1;
    return (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
}

/* The keyring, made (0600) on first start; every process then reads the same one. */
static int
open_keys(struct app *app, struct st_error *err)
{
    if (make_absolute(app->cfg.token_keys_file, sizeof(app->cfg.token_keys_file), err) < 0 ||
        make_absolute(app->cfg.admin_password_file, sizeof(app->cfg.admin_password_file), err) <
            0 ||
        app_make_parent_dir(app->cfg.token_keys_file, err) < 0 ||
        keyring_ensure(app->cfg.token_keys_file, &app->keys, err) < 0)
        return -1;
    app->keys_mtime_ns = keys_mtime_ns(app->cfg.token_keys_file);
    app->keys_checked_ms = st_monotonic_ms();
    return 0;
}

void
app_refresh_keys(struct app *app)
{
    int64_t now = st_monotonic_ms();
    struct st_error err = {0};
    struct keyring fresh;
    int64_t mtime;

    if (now - app->keys_checked_ms < APP_KEYS_CHECK_MS)
        return;
    app->keys_checked_ms = now;
    mtime = keys_mtime_ns(app->cfg.token_keys_file);
    if (mtime == app->keys_mtime_ns)
        return;
    if (keyring_load(app->cfg.token_keys_file, &fresh, &err) < 0) {
        api_log(API_LOG_ERROR, "token keys not re-read, the old ones stay: %s", err.msg);
        return;
    }
    app->keys = fresh;
    app->keys_mtime_ns = mtime;
    api_log(API_LOG_INFO, "token keys re-read from '%s'", app->cfg.token_keys_file);
}

static void
wire_identity(struct app *app)
{
    const struct api_config *c = &app->cfg;

    app->user_svc = (struct user_service){
        .users = &app->store.users,
        .vms = &app->store.vms,
        .keys = &app->keys,
        .cfg =
            {
                .allow_registration = c->allow_registration,
                .token_ttl_s = c->token_ttl_s,
                .token_leeway_s = c->token_leeway_s,
                .login_max_failures = c->login_max_failures,
                .login_window_ms = (int64_t)c->login_window_s * 1000,
                .login_lockout_ms = (int64_t)c->login_lockout_s * 1000,
                .default_quota =
                    {
                        .max_vms = c->quota_max_vms,
                        .max_vcpus = c->quota_max_vcpus,
                        .max_memory_mib = c->quota_max_memory_mib,
                        .max_disk_gib = c->quota_max_disk_gib,
                    },
            },
    };
    if (secret_pwhash_limits_parse(c->password_hash, &app->user_svc.cfg.pwhash) < 0)
        BUG("config let an unknown password_hash through");
    app->audit_svc = (struct audit_service){.log = &app->store.audit};
}

int
app_open_store(struct app *app, const struct api_config *cfg, struct st_error *err)
{
    memset(app, 0, sizeof(*app));
    app->cfg = *cfg;
    if (make_absolute(app->cfg.state_dir, sizeof(app->cfg.state_dir), err) < 0 ||
        app_make_dirs(app->cfg.state_dir, err) < 0 || open_store(app, err) < 0 ||
        open_keys(app, err) < 0)
        goto fail;
    wire_identity(app);
    if (user_service_init(&app->user_svc, err) < 0)
        goto fail;
    return 0;

fail:
    app_close(app);
    return -1;
}

static int
open_backend(struct app *app, struct st_error *err)
{
    struct hypervisor_libvirt_config hv_cfg = {
        .virt_type = app->cfg.virt_type_resolved,
        .console_dir = app->cfg.console_dir,
        .emulator = NULL,
    };
    struct storage_libvirt_config st_cfg = {.import_dir = app->cfg.import_dir};

    app->conn = libvirt_conn_new(app->cfg.libvirt_uri);
    if (!app->conn)
        return st_error_set(err, ST_ERR_INTERNAL, "cannot set up a libvirt connection to '%s'",
                            app->cfg.libvirt_uri);
    if (hypervisor_libvirt_open(app->conn, &hv_cfg, &app->hv, err) < 0 ||
        storage_libvirt_open(app->conn, &st_cfg, &app->storage, err) < 0)
        return -1;
    return 0;
}

/* What the reconciler tells of rows it left for its next pass. */
static void
app_log_debug(const char *msg)
{
    api_log(API_LOG_DEBUG, "%s", msg);
}

static void
wire_services(struct app *app)
{
    app->vm_svc = (struct vm_service){
        .vms = &app->store.vms,
        .images = &app->store.images,
        .flavors = &app->store.flavors,
        .hv = &app->hv,
        .storage = &app->storage,
        .cfg =
            {
                .instance = app->cfg.instance,
                .disk_pool = app->cfg.pool_default,
                .image_pool = app->cfg.pool_images,
                .stop_timeout_ms = app->cfg.stop_timeout_s * 1000u,
                .poll_interval_ms = APP_POLL_INTERVAL_MS,
            },
    };
    app->image_svc = (struct image_service){
        .images = &app->store.images,
        .vms = &app->store.vms,
        .storage = &app->storage,
        .image_pool = app->cfg.pool_images,
    };
    app->flavor_svc = (struct flavor_service){.flavors = &app->store.flavors};
    app->op_svc = (struct op_service){
        .ops = &app->store.ops,
        .events = &app->store.events,
        .vms = &app->store.vms,
        .tx = &app->store.tx,
        .vm_svc = &app->vm_svc,
        .users = &app->user_svc,
        .cfg =
            {
                .lease_ms = (int64_t)app->cfg.lease_s * 1000,
                .wait_max_ms = (int64_t)app->cfg.wait_max_s * 1000,
                .wait_poll_ms = APP_POLL_INTERVAL_MS,
            },
        .probe = NULL,
    };
    app->idem_svc = (struct idem_service){
        .records = &app->store.idem,
        .ttl_ms = (int64_t)app->cfg.idempotency_ttl_s * 1000,
        .abandoned_ms = APP_IDEM_ABANDONED_MS,
    };
    app->reconcile_svc = (struct reconcile_service){
        .vms = &app->store.vms,
        .ops = &app->store.ops,
        .events = &app->store.events,
        .idem = &app->store.idem,
        .op_svc = &app->op_svc,
        .hv = &app->hv,
        .storage = &app->storage,
        .instance = app->cfg.instance,
        .disk_pool = app->cfg.pool_default,
        .event_retention_ms = (int64_t)app->cfg.event_retention_days * 86400 * 1000,
        /* Twice a lease: an operation being queued right now is not stale. */
        .stale_ms = (int64_t)app->cfg.lease_s * 2000,
        .debug = app_log_debug,
    };
    wire_identity(app);
}

int
app_open(struct app *app, const struct api_config *cfg, struct st_error *err)
{
    struct st_error pool_err;

    memset(app, 0, sizeof(*app));
    app->cfg = *cfg;
    if (prepare_dirs(&app->cfg, err) < 0 || open_store(app, err) < 0 || open_keys(app, err) < 0 ||
        open_backend(app, err) < 0) {
        app_close(app);
        return -1;
    }
    wire_services(app);
    if (user_service_init(&app->user_svc, err) < 0) {
        app_close(app);
        return -1;
    }
    memset(&pool_err, 0, sizeof(pool_err));
    if (app_ensure_pools(app, &pool_err) < 0) {
        if (pool_err.code != ST_ERR_UNAVAILABLE) {
            *err = pool_err;
            app_close(app);
            return -1;
        }
        api_log(API_LOG_WARN, "storage pools not ready, will retry: %s", pool_err.msg);
    }
    return 0;
}

void
app_close(struct app *app)
{
    if (!app)
        return;
    storage_close(&app->storage);
    hypervisor_close(&app->hv);
    if (app->conn)
        libvirt_conn_close(app->conn);
    app->conn = NULL;
    store_close(&app->store);
}
