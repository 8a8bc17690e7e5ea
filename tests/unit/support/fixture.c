#include "support/fixture.h"

#include <errno.h>
#include <fcntl.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "support/tmpdir.h"
#include "util/mem.h"

#define FIXTURE_URI "test:///default"
#define QCOW2_CLUSTER_BITS 16
#define QCOW2_CLUSTER ((uint64_t)1 << QCOW2_CLUSTER_BITS)
#define QCOW2_HEADER_LEN 72

/*
 * A connection of the fixture's own.  test:///default keeps one in-process
 * state for all connections, so this sees the backend's pools and can
 * remove them, which storage.h has no method for.
 */
struct fixture_raw_conn {
    virConnectPtr conn;
};

/* Expected failures during teardown are not worth a line on stderr. */
static void
quiet_libvirt_error(void *opaque, virErrorPtr error)
{
    (void)opaque;
    (void)error;
}

char *
fixture_path(const struct fixture *fx, const char *rel)
{
    return st_xasprintf("%s/%s", fx->dir, rel);
}

static int
write_file(const char *path, const unsigned char *buf, size_t len, uint64_t size,
           struct st_error *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int rc = 0;

    if (fd < 0)
        return st_error_set_native(err, ST_ERR_INTERNAL, errno, "cannot create '%s': %s", path,
                                   strerror(errno));
    if (len > 0 && write(fd, buf, len) != (ssize_t)len)
        rc = st_error_set_native(err, ST_ERR_INTERNAL, errno, "cannot write '%s': %s", path,
                                 strerror(errno));
    if (rc == 0 && size > len && ftruncate(fd, (off_t)size) < 0)
        rc = st_error_set_native(err, ST_ERR_INTERNAL, errno, "cannot size '%s': %s", path,
                                 strerror(errno));
    close(fd);
    return rc;
}

int
fixture_write_raw(const char *path, uint64_t size, struct st_error *err)
{
    return write_file(path, NULL, 0, size, err);
}

static void
put_be16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

static void
put_be32(unsigned char *p, uint32_t v)
{
    put_be16(p, (uint16_t)(v >> 16));
    put_be16(p + 2, (uint16_t)v);
}

static void
put_be64(unsigned char *p, uint64_t v)
{
    put_be32(p, (uint32_t)(v >> 32));
    put_be32(p + 4, (uint32_t)v);
}

/*
 * Four clusters: header (and backing name), L1 table, refcount table,
 * refcount block counting those four.  No data cluster: reads give zeros.
 */
int
fixture_write_qcow2(const char *path, uint64_t virtual_size, const char *backing,
                    struct st_error *err)
{
    const uint64_t l2_span = QCOW2_CLUSTER * (QCOW2_CLUSTER / 8);
    const size_t len = (size_t)(4 * QCOW2_CLUSTER);
    ST_AUTOFREE unsigned char *buf = st_xcalloc(1, len);
    uint64_t l1_size = (virtual_size + l2_span - 1) / l2_span;
    size_t i;

    if (l1_size * 8 > QCOW2_CLUSTER || (backing && strlen(backing) > 1024))
        return st_error_set(err, ST_ERR_INVALID, "qcow2 of %llu bytes does not fit the fixture",
                            (unsigned long long)virtual_size);
    memcpy(buf, "QFI\xfb", 4);
    put_be32(buf + 4, 2);
    if (backing) {
        put_be64(buf + 8, QCOW2_HEADER_LEN);
        put_be32(buf + 16, (uint32_t)strlen(backing));
        memcpy(buf + QCOW2_HEADER_LEN, backing, strlen(backing));
    }
    put_be32(buf + 20, QCOW2_CLUSTER_BITS);
    put_be64(buf + 24, virtual_size);
    put_be32(buf + 36, (uint32_t)l1_size);
    put_be64(buf + 40, QCOW2_CLUSTER);     /* L1 table */
    put_be64(buf + 48, 2 * QCOW2_CLUSTER); /* refcount table */
    put_be32(buf + 56, 1);
    put_be64(buf + 2 * QCOW2_CLUSTER, 3 * QCOW2_CLUSTER);
    for (i = 0; i < 4; i++)
        put_be16(buf + 3 * QCOW2_CLUSTER + 2 * i, 1);
    return write_file(path, buf, len, len, err);
}

void
fixture_create_req(const struct fixture *fx, const char *name, struct vm_create_req *out)
{
    memset(out, 0, sizeof(*out));
    st_strlcpy(out->name, name, sizeof(out->name));
    st_strlcpy(out->image_id, fx->image.id, sizeof(out->image_id));
    out->vcpus = 1;
    out->memory_mib = 64;
    out->disk_gib = 1;
}

int
fixture_create_vm(struct fixture *fx, const char *name, struct vm *out, struct st_error *err)
{
    struct vm_create_req req;

    fixture_create_req(fx, name, &req);
    return vm_service_create(&fx->vm_svc, FIXTURE_OWNER, &req, out, err);
}

int
fixture_seed_vms(struct fixture *fx, const char *prefix, size_t n, enum vm_status status,
                 struct st_error *err)
{
    ST_AUTOFREE char *disk = fixture_path(fx, "pools/default/none.qcow2");
    size_t i;

    for (i = 0; i < n; i++) {
        struct vm vm;
        struct hv_domain_spec spec;

        memset(&vm, 0, sizeof(vm));
        st_uuid_generate(vm.id);
        st_strlcpy(vm.owner_id, FIXTURE_OWNER, sizeof(vm.owner_id));
        snprintf(vm.name, sizeof(vm.name), "%s-%zu", prefix, i);
        vm.status = status;
        vm.step = VM_STEP_DONE;
        vm.vcpus = 1;
        vm.memory_mib = 64;
        vm.disk_gib = 1;
        st_strlcpy(vm.image_id, fx->image.id, sizeof(vm.image_id));
        vm.created_at = vm.updated_at = st_now_ms();
        if (vm_repo_insert(&fx->vms_real, &vm, err) < 0)
            return -1;
        memset(&spec, 0, sizeof(spec));
        spec.id = vm.id;
        spec.owner_id = vm.owner_id;
        spec.name = vm.name;
        spec.vcpus = vm.vcpus;
        spec.memory_mib = vm.memory_mib;
        spec.disk_path = disk;
        spec.disk_format = "qcow2";
        if (hypervisor_define(&fx->hv_real, &spec, err) < 0)
            return -1;
    }
    return 0;
}

int
fixture_pool_volume_count(struct fixture *fx, const char *pool)
{
    virStoragePoolPtr p;
    int n;

    if (!fx->raw || !fx->raw->conn)
        return -1;
    p = virStoragePoolLookupByName(fx->raw->conn, pool);
    if (!p)
        return -1;
    /* The backend may have written files behind libvirt's back. */
    virStoragePoolRefresh(p, 0);
    n = virStoragePoolNumOfVolumes(p);
    virStoragePoolFree(p);
    return n;
}

static int
make_dir(const char *path, struct st_error *err)
{
    if (mkdir(path, 0755) < 0 && errno != EEXIST)
        return st_error_set_native(err, ST_ERR_INTERNAL, errno, "cannot create '%s': %s", path,
                                   strerror(errno));
    return 0;
}

static int
open_store(struct fixture *fx, struct st_error *err)
{
    ST_AUTOFREE char *db_path = fixture_path(fx, "stratus.db");

    fx->db = sqlite_db_open(db_path, err);
    if (!fx->db)
        return -1;
    if (vm_repo_sqlite_open(fx->db, &fx->vms_real, err) < 0 ||
        image_repo_sqlite_open(fx->db, &fx->images, err) < 0 ||
        flavor_repo_sqlite_open(fx->db, &fx->flavors, err) < 0 ||
        op_repo_sqlite_open(fx->db, &fx->ops, err) < 0 ||
        event_repo_sqlite_open(fx->db, &fx->events, err) < 0 ||
        idem_repo_sqlite_open(fx->db, &fx->idem, err) < 0)
        return -1;
    store_tx_sqlite_open(fx->db, &fx->tx);
    return 0;
}

static int
open_libvirt(struct fixture *fx, struct st_error *err)
{
    struct hypervisor_libvirt_config hcfg = {.virt_type = "qemu"};
    struct storage_libvirt_config scfg = {.import_dir = fx->import_dir};

    fx->conn = libvirt_conn_new(FIXTURE_URI);
    if (!fx->conn)
        return st_error_set(err, ST_ERR_UNAVAILABLE, "cannot open '%s'", FIXTURE_URI);
    if (hypervisor_libvirt_open(fx->conn, &hcfg, &fx->hv_real, err) < 0 ||
        storage_libvirt_open(fx->conn, &scfg, &fx->storage_real, err) < 0)
        return -1;
    fx->raw = st_xcalloc(1, sizeof(*fx->raw));
    fx->raw->conn = virConnectOpen(FIXTURE_URI);
    if (!fx->raw->conn)
        return st_error_set(err, ST_ERR_UNAVAILABLE, "cannot open '%s'", FIXTURE_URI);
    virConnSetErrorFunc(fx->raw->conn, NULL, quiet_libvirt_error);
    return 0;
}

static int
make_pools(struct fixture *fx, struct st_error *err)
{
    ST_AUTOFREE char *pools = fixture_path(fx, "pools");
    ST_AUTOFREE char *images = fixture_path(fx, "pools/images");
    ST_AUTOFREE char *disks = fixture_path(fx, "pools/default");
    char rnd[ST_ID_BUF];

    st_uuid_generate(rnd);
    rnd[8] = '\0';
    snprintf(fx->image_pool, sizeof(fx->image_pool), "st-images-%s", rnd);
    snprintf(fx->disk_pool, sizeof(fx->disk_pool), "st-default-%s", rnd);
    snprintf(fx->instance, sizeof(fx->instance), "st-test-%s", rnd);
    if (make_dir(pools, err) < 0 || make_dir(images, err) < 0 || make_dir(disks, err) < 0)
        return -1;
    if (storage_ensure_pool(&fx->storage_real, fx->image_pool, images, err) < 0 ||
        storage_ensure_pool(&fx->storage_real, fx->disk_pool, disks, err) < 0)
        return -1;
    return 0;
}

static void
wire_services(struct fixture *fx)
{
    fault_vm_repo_init(&fx->vms, &fx->vms_real);
    fault_hypervisor_init(&fx->hv, &fx->hv_real);
    fault_storage_init(&fx->storage, &fx->storage_real);

    fx->vm_svc.vms = &fx->vms.iface;
    fx->vm_svc.images = &fx->images;
    fx->vm_svc.flavors = &fx->flavors;
    fx->vm_svc.hv = &fx->hv.iface;
    fx->vm_svc.storage = &fx->storage.iface;
    fx->vm_svc.cfg.instance = fx->instance;
    fx->vm_svc.cfg.disk_pool = fx->disk_pool;
    fx->vm_svc.cfg.image_pool = fx->image_pool;
    fx->vm_svc.cfg.stop_timeout_ms = FIXTURE_STOP_TIMEOUT_MS;
    fx->vm_svc.cfg.poll_interval_ms = FIXTURE_POLL_INTERVAL_MS;

    fx->image_svc.images = &fx->images;
    fx->image_svc.vms = &fx->vms.iface;
    fx->image_svc.storage = &fx->storage.iface;
    fx->image_svc.image_pool = fx->image_pool;

    fx->flavor_svc.flavors = &fx->flavors;

    fx->op_svc = (struct op_service){
        .ops = &fx->ops,
        .events = &fx->events,
        .vms = &fx->vms.iface,
        .tx = &fx->tx,
        .vm_svc = &fx->vm_svc,
        .users = NULL,
        .cfg =
            {
                .lease_ms = FIXTURE_LEASE_MS,
                .wait_max_ms = FIXTURE_WAIT_MAX_MS,
                .wait_poll_ms = FIXTURE_POLL_INTERVAL_MS,
            },
        .probe = NULL,
    };
    fx->reconcile_svc = (struct reconcile_service){
        .vms = &fx->vms.iface,
        .ops = &fx->ops,
        .events = &fx->events,
        .idem = &fx->idem,
        .op_svc = &fx->op_svc,
        .hv = &fx->hv.iface,
        .storage = &fx->storage.iface,
        .instance = fx->instance,
        .disk_pool = fx->disk_pool,
        .event_retention_ms = FIXTURE_EVENT_RETENTION_MS,
        .stale_ms = FIXTURE_STALE_MS,
    };
}

static int
register_base_image(struct fixture *fx, struct st_error *err)
{
    struct image_create_req req;

    memset(&req, 0, sizeof(req));
    st_strlcpy(req.name, "base", sizeof(req.name));
    if (snprintf(req.source_path, sizeof(req.source_path), "%s/base.raw", fx->import_dir) >=
        (int)sizeof(req.source_path))
        return st_error_set(err, ST_ERR_INTERNAL, "import path '%s' is too long", fx->import_dir);
    req.format = IMAGE_FORMAT_RAW;
    if (fixture_write_raw(req.source_path, 1024 * 1024, err) < 0)
        return -1;
    return image_service_register(&fx->image_svc, FIXTURE_OWNER, &req, &fx->image, err);
}

struct fixture *
fixture_new(struct st_error *err)
{
    struct fixture *fx = st_xcalloc(1, sizeof(*fx));

    if (tmpdir_make(fx->dir, sizeof(fx->dir), "stratus-test", err) < 0) {
        free(fx);
        return NULL;
    }
    if (snprintf(fx->import_dir, sizeof(fx->import_dir), "%s/import", fx->dir) >=
        (int)sizeof(fx->import_dir)) {
        st_error_set(err, ST_ERR_INTERNAL, "temp dir '%s' is too long", fx->dir);
        goto fail;
    }
    if (make_dir(fx->import_dir, err) < 0 || open_store(fx, err) < 0 || open_libvirt(fx, err) < 0 ||
        make_pools(fx, err) < 0)
        goto fail;
    wire_services(fx);
    if (register_base_image(fx, err) < 0)
        goto fail;
    /* Tests count from here. */
    fault_vm_repo_reset(&fx->vms);
    fault_hypervisor_reset(&fx->hv);
    fault_storage_reset(&fx->storage);
    return fx;

fail:
    fixture_free(fx);
    return NULL;
}

/* Destroy and undefine the domain of every row, page by page. */
static void
remove_domains(struct fixture *fx)
{
    struct vm_filter f;
    struct st_error ignored = {0};

    memset(&f, 0, sizeof(f));
    f.limit = ST_LIST_LIMIT_MAX;
    for (;;) {
        struct vm_list page = {0};
        size_t i;

        if (vm_repo_list(&fx->vms_real, NULL, &f, &page, &ignored) < 0)
            return;
        for (i = 0; i < page.count; i++) {
            hypervisor_destroy(&fx->hv_real, page.items[i].id, &ignored);
            hypervisor_undefine(&fx->hv_real, page.items[i].id, &ignored);
        }
        if (!page.more || page.count == 0) {
            vm_list_release(&page);
            return;
        }
        st_strlcpy(f.marker, page.items[page.count - 1].id, sizeof(f.marker));
        vm_list_release(&page);
    }
}

/* Destroy and undefine what is left of this installation without a row (a test's orphans). */
static void
remove_instance_domains(struct fixture *fx)
{
    struct st_error ignored = {0};
    struct hv_domain_meta *doms = NULL;
    size_t n = 0, i;

    if (hypervisor_list_meta(&fx->hv_real, &doms, &n, &ignored) < 0)
        return;
    for (i = 0; i < n; i++) {
        if (strcmp(doms[i].instance, fx->instance) != 0)
            continue;
        hypervisor_destroy(&fx->hv_real, doms[i].id, &ignored);
        hypervisor_undefine(&fx->hv_real, doms[i].id, &ignored);
    }
    free(doms);
}

static void
remove_pool(virConnectPtr conn, const char *name)
{
    virStoragePoolPtr pool;
    virStorageVolPtr *vols = NULL;
    int n, i;

    if (!name[0])
        return;
    pool = virStoragePoolLookupByName(conn, name);
    if (!pool)
        return;
    n = virStoragePoolListAllVolumes(pool, &vols, 0);
    for (i = 0; i < n; i++) {
        virStorageVolDelete(vols[i], 0);
        virStorageVolFree(vols[i]);
    }
    free(vols);
    virStoragePoolDestroy(pool);
    virStoragePoolUndefine(pool);
    virStoragePoolFree(pool);
}

void
fixture_free(struct fixture *fx)
{
    if (!fx)
        return;
    if (fx->vms_real.ops && fx->hv_real.ops)
        remove_domains(fx);
    if (fx->hv_real.ops && fx->instance[0])
        remove_instance_domains(fx);
    vm_repo_close(&fx->vms_real);
    image_repo_close(&fx->images);
    flavor_repo_close(&fx->flavors);
    op_repo_close(&fx->ops);
    event_repo_close(&fx->events);
    idem_repo_close(&fx->idem);
    sqlite_db_close(fx->db);
    if (fx->raw && fx->raw->conn) {
        remove_pool(fx->raw->conn, fx->image_pool);
        remove_pool(fx->raw->conn, fx->disk_pool);
        virConnectClose(fx->raw->conn);
    }
    free(fx->raw);
    storage_close(&fx->storage_real);
    hypervisor_close(&fx->hv_real);
    libvirt_conn_close(fx->conn);
    tmpdir_remove(fx->dir);
    free(fx);
}

int
fixture_setup(void **state)
{
    struct st_error err = {0};
    struct fixture *fx = fixture_new(&err);

    if (!fx) {
        fprintf(stderr, "fixture: %s: %s\n", st_err_code_name(err.code), err.msg);
        return -1;
    }
    *state = fx;
    return 0;
}

int
fixture_teardown(void **state)
{
    fixture_free(*state);
    return 0;
}
