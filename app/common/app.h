/*
 * app.h - the composition root of one worker.
 *
 * Opens the store (SQLite or PostgreSQL) and its repositories, the token keyring (made on
 * first start), the libvirt connection with its hypervisor and storage,
 * makes sure the three pools exist, and fills the services.  Everything is held for the life of
 * the worker and released by app_close().
 */
#ifndef STRATUS_COMMON_APP_H
#define STRATUS_COMMON_APP_H

#include <stdbool.h>

#include "common/config.h"
#include "common/store.h"
#include "repositories/audit_repo.h"
#include "repositories/event_repo.h"
#include "repositories/flavor_repo.h"
#include "repositories/hypervisor.h"
#include "repositories/image_repo.h"
#include "repositories/op_repo.h"
#include "repositories/storage.h"
#include "repositories/user_repo.h"
#include "repositories/vm_repo.h"
#include "services/audit_service.h"
#include "services/flavor_service.h"
#include "services/idem_service.h"
#include "services/image_service.h"
#include "services/op_service.h"
#include "services/reconcile_service.h"
#include "services/user_service.h"
#include "services/vm_service.h"
#include "util/keyring.h"

struct libvirt_conn;

struct app {
    struct api_config cfg;   /* a copy: the app owns what the services borrow */
    struct store store;      /* the database and every repository on it */
    struct keyring keys;     /* token signing keys, re-read when the file changes */
    int64_t keys_mtime_ns;   /* of the keys file when it was read */
    int64_t keys_checked_ms; /* monotonic: when the file was last looked at */
    struct libvirt_conn *conn;
    struct hypervisor hv;
    struct storage storage;
    bool pools_ready; /* false while libvirt could not be reached to make them */
    struct vm_service vm_svc;
    struct image_service image_svc;
    struct flavor_service flavor_svc;
    struct user_service user_svc;
    struct audit_service audit_svc;
    struct op_service op_svc;
    struct idem_service idem_svc;
    struct reconcile_service reconcile_svc;
};

/*
 * Open everything for @cfg (copied).  Creates state, console, import and
 * database directories.  libvirt being unreachable is not fatal (pools are
 * made on a later request); anything else is.  Returns 0, or -1 with @err
 * filled and nothing left open.  The services point into @app: it must not
 * be moved or copied while open.
 */
int app_open(struct app *app, const struct api_config *cfg, struct st_error *err);

/*
 * Make sure the three pools exist (idempotent, cheap once done).  Called
 * before each request while pools_ready is false.
 */
int app_ensure_pools(struct app *app, struct st_error *err);

/*
 * Re-read the token keys when their file changed (looked at no more than
 * once a second), so a key rotated by stratus-admin takes effect in every
 * worker without a restart.  A file that cannot be read keeps the old keys.
 */
void app_refresh_keys(struct app *app);

/*
 * Open only the store and the identity services, no libvirt (for
 * stratus-admin).  Close with app_close().
 */
int app_open_store(struct app *app, const struct api_config *cfg, struct st_error *err);

/* mkdir -p @path (mode 0755); ST_ERR_INTERNAL naming the directory. */
int app_make_dirs(const char *path, struct st_error *err);
/* mkdir -p of the directory that holds @file. */
int app_make_parent_dir(const char *file, struct st_error *err);

/* Release everything; safe on a zeroed or half-opened app. */
void app_close(struct app *app);

#endif
