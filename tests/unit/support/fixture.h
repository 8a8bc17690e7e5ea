/*
 * fixture.h - a complete, private stratus for one service test.
 *
 * fixture_new() makes a mkdtemp() directory, opens the real SQLite store in
 * it with the VM, image, flavor, operation and event repositories, opens libvirt's
 * test:///default driver through the libvirt backend, makes two storage
 * pools with random names (so fixtures never share volumes) whose target
 * directories lie in the temp dir, and registers one raw image through the
 * real image service.  The VM, operation and reconcile services name the
 * fixture's own installation ("st-test-<random>"), so domains of other
 * fixtures sharing test:///default are never this one's orphans; the
 * operation service holds leases of FIXTURE_LEASE_MS and the reconcile
 * service requeues rows untouched for FIXTURE_STALE_MS, so that tests can
 * wait them out.  The services see the VM repository, the hypervisor
 * and the storage through fault wrappers (support/fault.h), so a test can
 * count calls and inject failures; the unwrapped `*_real` members act
 * "behind the service's back".
 *
 * fixture_free() destroys and undefines the domains of every VM row left
 * and every other domain of the fixture's installation, removes the pools
 * and deletes the directory.
 *
 * Support code is also linked into programs without cmocka: report
 * failures through struct st_error, never through cmocka asserts.
 */
#ifndef STRATUS_TESTS_FIXTURE_H
#define STRATUS_TESTS_FIXTURE_H

#include <stdint.h>

#include "repositories/libvirt/libvirt_backend.h"
#include "repositories/sqlite/sqlite_db.h"
#include "services/flavor_service.h"
#include "services/image_service.h"
#include "services/op_service.h"
#include "services/reconcile_service.h"
#include "services/vm_service.h"
#include "support/fault.h"

/* The owner every fixture request runs as, and a second one for scope checks. */
#define FIXTURE_OWNER "00000000-0000-4000-8000-0000000000a1"
#define FIXTURE_OTHER_OWNER "00000000-0000-4000-8000-0000000000b2"

#define FIXTURE_STOP_TIMEOUT_MS 300
#define FIXTURE_POLL_INTERVAL_MS 10
#define FIXTURE_LEASE_MS 50
#define FIXTURE_WAIT_MAX_MS 2000
#define FIXTURE_STALE_MS 50
#define FIXTURE_EVENT_RETENTION_MS ((int64_t)86400 * 1000)

struct fixture_raw_conn; /* the fixture's own libvirt connection, for teardown */

struct fixture {
    char dir[ST_PATH_BUF];        /* the temp dir */
    char import_dir[ST_PATH_BUF]; /* <dir>/import: storage_import() accepts only files here */
    char image_pool[ST_NAME_BUF]; /* "st-images-<random>" */
    char disk_pool[ST_NAME_BUF];  /* "st-default-<random>" */
    char instance[ST_NAME_BUF];   /* "st-test-<random>": the installation the services name */

    struct sqlite_db *db;
    struct vm_repo vms_real;
    struct image_repo images;
    struct flavor_repo flavors;
    struct op_repo ops;
    struct event_repo events;
    struct idem_repo idem;
    struct store_tx tx; /* a transaction across the repositories above */
    struct libvirt_conn *conn;
    struct hypervisor hv_real;
    struct storage storage_real;
    struct fixture_raw_conn *raw;

    struct fault_vm_repo vms;
    struct fault_hypervisor hv;
    struct fault_storage storage;

    struct vm_service vm_svc;
    struct image_service image_svc;
    struct flavor_service flavor_svc;
    struct op_service op_svc;               /* over ops, events and the wrapped VM repository */
    struct reconcile_service reconcile_svc; /* over the wrapped repository and backends */

    struct image image; /* registered by fixture_new(): raw, 1 MiB */
};

/* New fixture, or NULL with @err filled (everything made so far undone). */
struct fixture *fixture_new(struct st_error *err);
/* Tear down and free; NULL-safe. */
void fixture_free(struct fixture *fx);

/*
 * cmocka-shaped per-test set-up and teardown (they call nothing of cmocka's):
 * fixture_setup() puts a new fixture in *@state, or prints why it could not
 * and returns -1; fixture_teardown() frees *@state and returns 0.
 */
int fixture_setup(void **state);
int fixture_teardown(void **state);

/* "<dir>/<rel>"; caller free()s. */
char *fixture_path(const struct fixture *fx, const char *rel);

/* A sparse raw file of @size bytes at @path. */
int fixture_write_raw(const char *path, uint64_t size, struct st_error *err);
/*
 * A valid, empty qcow2 (version 2, 64 KiB clusters) of virtual size
 * @virtual_size at @path; with a non-NULL @backing the header names that
 * backing file.
 */
int fixture_write_qcow2(const char *path, uint64_t virtual_size, const char *backing,
                        struct st_error *err);

/* A create request for FIXTURE's image: 1 vcpu, 64 MiB, 1 GiB. */
void fixture_create_req(const struct fixture *fx, const char *name, struct vm_create_req *out);
/* Create a running VM named @name through the service. */
int fixture_create_vm(struct fixture *fx, const char *name, struct vm *out, struct st_error *err);

/*
 * Fast bulk set-up for list tests: @n rows (stored status @status, names
 * "<prefix>-<i>") each with a defined, shut-off domain, written through the
 * unwrapped repository and hypervisor.  No disks are made.
 */
int fixture_seed_vms(struct fixture *fx, const char *prefix, size_t n, enum vm_status status,
                     struct st_error *err);

/* How many volumes pool @pool holds (-1 when it cannot be read), asked of libvirt directly. */
int fixture_pool_volume_count(struct fixture *fx, const char *pool);

/*
 * Assertions for test programs (they expand to cmocka calls, so include
 * <cmocka.h> before using them).  On failure they print the error message.
 */
#define assert_st_ok(call, e)                                                                      \
    do {                                                                                           \
        if ((call) < 0)                                                                            \
            fail_msg("%s failed: %s: %s", #call, st_err_code_name((e).code), (e).msg);             \
    } while (0)

#define assert_st_err(call, e, want_code, needle)                                                  \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != -1 || (e).code != (want_code) || !strstr((e).msg, (needle)))                    \
            fail_msg("%s: want -1 %s containing \"%s\", got %d %s: %s", #call,                     \
                     st_err_code_name(want_code), (needle), rc_, st_err_code_name((e).code),       \
                     (e).msg);                                                                     \
    } while (0)

#endif
