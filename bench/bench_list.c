/*
 * bench_list - how GET /v1/vms scales.
 *
 * For each N it fills N rows (SQLite in a temp dir, or the empty database
 * --db names, emptied again afterwards) and N domains (libvirt
 * test driver in process, or a real libvirtd with defined, shut-off
 * domains) and times three things over the same data:
 *   list   vm_service_list over every page (one SQL query + one list_all each)
 *   naive  one repository page walk plus one hypervisor_state call per VM,
 *          the per-VM lookup loop the bulk merge replaces
 *   floor  one bare hypervisor_list_all call
 * It prints each median and the ratios list/naive and list/floor.
 *
 *   bench_list [--db URL] [--uri URI] N...
 *   bench_list --seed DB URI N   fill an existing database and libvirt, print one VM id
 *   bench_list --unseed DB URI   undefine every domain whose row is in DB, drop the rows
 *
 * DB and URL are database URLs (sqlite://PATH, a path, postgresql://...).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/store.h"
#include "repositories/libvirt/libvirt_backend.h"
#include "services/vm_service.h"
#include "util/ids.h"
#include "util/mem.h"

#define OWNER "00000000-0000-4000-8000-000000000001"
#define ROUNDS 5

struct bench {
    struct store store;
    struct libvirt_conn *conn;
    struct hypervisor hv;
    struct vm_service svc;
    unsigned n;
};

static void
die(const char *what, const struct st_error *err)
{
    fprintf(stderr, "bench_list: %s: %s\n", what, err ? err->msg : "");
    exit(1);
}

static void
bench_open(struct bench *b, const char *db_url, const char *uri)
{
    struct hypervisor_libvirt_config hcfg = {.virt_type = "qemu"};
    struct st_error err = {0};

    memset(b, 0, sizeof(*b));
    if (store_open(&b->store, db_url, &err) < 0)
        die("open database", &err);
    b->conn = libvirt_conn_new(uri);
    if (hypervisor_libvirt_open(b->conn, &hcfg, &b->hv, &err) < 0)
        die("open hypervisor", &err);
    b->svc.vms = &b->store.vms;
    b->svc.hv = &b->hv;
}

static void
bench_close(struct bench *b)
{
    hypervisor_close(&b->hv);
    libvirt_conn_close(b->conn);
    store_close(&b->store);
}

/* Rows and shut-off domains for n VMs; the first id goes to first_id. */
static void
seed(struct bench *b, size_t n, char first_id[ST_ID_BUF])
{
    struct st_error err = {0};
    size_t i;

    for (i = 0; i < n; i++) {
        struct vm vm = {0};
        struct hv_domain_spec spec = {0};

        st_uuid_generate(vm.id);
        st_strlcpy(vm.owner_id, OWNER, sizeof(vm.owner_id));
        snprintf(vm.name, sizeof(vm.name), "bench-%zu", i);
        vm.status = VM_STATUS_STOPPED;
        vm.step = VM_STEP_DONE;
        vm.vcpus = 1;
        vm.memory_mib = 64;
        vm.disk_gib = 1;
        st_uuid_generate(vm.image_id);
        vm.created_at = vm.updated_at = st_now_ms();
        if (vm_repo_insert(&b->store.vms, &vm, &err) < 0)
            die("insert row", &err);
        spec.id = vm.id;
        spec.owner_id = vm.owner_id;
        spec.name = vm.name;
        spec.vcpus = 1;
        spec.memory_mib = 64;
        spec.disk_path = "/var/lib/stratus-bench/none.qcow2";
        spec.disk_format = "qcow2";
        if (hypervisor_define(&b->hv, &spec, &err) < 0)
            die("define domain", &err);
        if (i == 0 && first_id)
            st_strlcpy(first_id, vm.id, ST_ID_BUF);
    }
}

/* Undefine every domain that has a row in the database, and drop the rows. */
static void
unseed(struct bench *b)
{
    struct vm_filter f = {.limit = ST_LIST_LIMIT_MAX};
    struct st_error err = {0};

    for (;;) {
        struct vm_list page = {0};
        size_t i;

        if (vm_repo_list(&b->store.vms, NULL, &f, &page, &err) < 0)
            die("list rows", &err);
        for (i = 0; i < page.count; i++) {
            hypervisor_undefine(&b->hv, page.items[i].id, &err);
            if (vm_repo_remove(&b->store.vms, NULL, page.items[i].id, &err) < 0)
                die("remove row", &err);
        }
        if (page.count == 0) {
            vm_list_release(&page);
            break;
        }
        vm_list_release(&page);
    }
}

/* The whole set as one page: one SQL query and one list_all, whatever N. */
static size_t
time_list(struct bench *b)
{
    struct vm_filter f = {.limit = b->n};
    struct st_error err = {0};
    size_t seen = 0;

    for (;;) {
        struct vm_list page = {0};

        if (vm_service_list(&b->svc, OWNER, &f, &page, &err) < 0)
            die("service list", &err);
        seen += page.count;
        if (!page.more || page.count == 0) {
            vm_list_release(&page);
            break;
        }
        st_strlcpy(f.marker, page.next_marker, sizeof(f.marker));
        vm_list_release(&page);
    }
    return seen;
}

static size_t
time_naive(struct bench *b)
{
    struct vm_filter f = {.limit = b->n};
    struct st_error err = {0};
    size_t seen = 0;

    for (;;) {
        struct vm_list page = {0};
        size_t i;

        if (vm_repo_list(&b->store.vms, OWNER, &f, &page, &err) < 0)
            die("repo list", &err);
        for (i = 0; i < page.count; i++) {
            enum hv_state st;

            if (hypervisor_state(&b->hv, page.items[i].id, &st, &err) == 0)
                seen++;
        }
        if (!page.more || page.count == 0) {
            vm_list_release(&page);
            break;
        }
        st_strlcpy(f.marker, page.items[page.count - 1].id, sizeof(f.marker));
        vm_list_release(&page);
    }
    return seen;
}

static size_t
time_floor(struct bench *b)
{
    struct hv_domain_info *doms = NULL;
    struct st_error err = {0};
    size_t n = 0;

    if (hypervisor_list_all(&b->hv, &doms, &n, &err) < 0)
        die("list_all", &err);
    free(doms);
    return n;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* Median wall time in ms of ROUNDS runs of fn. */
static double
median_ms(struct bench *b, size_t (*fn)(struct bench *), size_t *seen)
{
    double t[ROUNDS];
    int i;

    for (i = 0; i < ROUNDS; i++) {
        int64_t start = st_monotonic_ns();

        *seen = fn(b);
        t[i] = (double)(st_monotonic_ns() - start) / 1e6;
    }
    qsort(t, ROUNDS, sizeof(t[0]), cmp_double);
    return t[ROUNDS / 2];
}

/* One N against @uri, on the database @db_url (NULL: a fresh SQLite file). */
static void
run_one(const char *db_url, const char *uri, size_t n)
{
    char dir[] = "/tmp/stratus-bench-XXXXXX";
    ST_AUTOFREE char *db_path = NULL;
    ST_AUTOFREE char *cmd = NULL;
    struct bench b;
    size_t seen_list, seen_naive, seen_floor;
    double list, naive, floor_ms;

    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(1);
    }
    db_path = st_xasprintf("%s/bench.db", dir);
    bench_open(&b, db_url ? db_url : db_path, uri);
    b.n = (unsigned)n;
    seed(&b, n, NULL);
    list = median_ms(&b, time_list, &seen_list);
    naive = median_ms(&b, time_naive, &seen_naive);
    floor_ms = median_ms(&b, time_floor, &seen_floor);
    printf("%-16s %-10s N=%-6zu list %9.2f ms  naive %9.2f ms  floor %9.2f ms  "
           "list/naive %6.3f (%.1fx faster)  list/floor %6.2f  per-VM list %6.2f us\n",
           uri, store_kind_name(b.store.kind), n, list, naive, floor_ms, list / naive, naive / list,
           list / floor_ms, list * 1000.0 / (double)n);
    if (seen_list != n || seen_naive != n)
        fprintf(stderr, "bench_list: expected %zu VMs, list saw %zu, naive saw %zu\n", n, seen_list,
                seen_naive);
    unseed(&b);
    bench_close(&b);
    cmd = st_xasprintf("rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "bench_list: could not remove %s\n", dir);
}

int
main(int argc, char **argv)
{
    const char *uri = "test:///default";
    const char *db_url = NULL;
    int i = 1;

    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 5 && strcmp(argv[1], "--seed") == 0) {
        struct bench b;
        char first[ST_ID_BUF] = "";

        bench_open(&b, argv[2], argv[3]);
        seed(&b, (size_t)strtoul(argv[4], NULL, 10), first);
        printf("%s\n", first);
        bench_close(&b);
        return 0;
    }
    if (argc >= 4 && strcmp(argv[1], "--unseed") == 0) {
        struct bench b;

        bench_open(&b, argv[2], argv[3]);
        unseed(&b);
        bench_close(&b);
        return 0;
    }
    for (; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--uri") == 0)
            uri = argv[i + 1];
        else if (strcmp(argv[i], "--db") == 0)
            db_url = argv[i + 1];
        else
            break;
    }
    for (; i < argc; i++)
        run_one(db_url, uri, (size_t)strtoul(argv[i], NULL, 10));
    return 0;
}
