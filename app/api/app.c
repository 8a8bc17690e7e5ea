#include "api/app.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/log.h"
#include "repositories/libvirt/libvirt_backend.h"
#include "repositories/sqlite/sqlite_db.h"
#include "util/mem.h"

#define APP_POLL_INTERVAL_MS 200

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
    if (app_make_parent_dir(app->cfg.database, err) < 0)
        return -1;
    app->db = sqlite_db_open(app->cfg.database, err);
    if (!app->db)
        return -1;
    if (vm_repo_sqlite_open(app->db, &app->vms, err) < 0 ||
        image_repo_sqlite_open(app->db, &app->images, err) < 0 ||
        flavor_repo_sqlite_open(app->db, &app->flavors, err) < 0)
        return -1;
    return 0;
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

static void
wire_services(struct app *app)
{
    app->vm_svc = (struct vm_service){
        .vms = &app->vms,
        .images = &app->images,
        .flavors = &app->flavors,
        .hv = &app->hv,
        .storage = &app->storage,
        .cfg =
            {
                .disk_pool = app->cfg.pool_default,
                .image_pool = app->cfg.pool_images,
                .stop_timeout_ms = app->cfg.stop_timeout_s * 1000u,
                .poll_interval_ms = APP_POLL_INTERVAL_MS,
            },
    };
    app->image_svc = (struct image_service){
        .images = &app->images,
        .vms = &app->vms,
        .storage = &app->storage,
        .image_pool = app->cfg.pool_images,
    };
    app->flavor_svc = (struct flavor_service){.flavors = &app->flavors};
}

int
app_open(struct app *app, const struct api_config *cfg, struct st_error *err)
{
    struct st_error pool_err;

    memset(app, 0, sizeof(*app));
    app->cfg = *cfg;
    if (prepare_dirs(&app->cfg, err) < 0 || open_store(app, err) < 0 ||
        open_backend(app, err) < 0) {
        app_close(app);
        return -1;
    }
    wire_services(app);
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
    flavor_repo_close(&app->flavors);
    image_repo_close(&app->images);
    vm_repo_close(&app->vms);
    sqlite_db_close(app->db);
    app->db = NULL;
}
