/*
 * bench_ops - what durable operations cost, in process, with libvirt's
 * test driver and SQLite in a temp dir.
 *
 *   accept  op_service_create_vm: the row and the queued operation, what
 *           a POST /v1/vms does before it answers 202 (p50, p99)
 *   create  op_service_work_one until the queue is empty: creates a second
 *           that one worker sustains (claim, disk, define, start, finish)
 *   delete  the same for deletes
 *
 *   bench_ops [N]   (default 500)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "repositories/sqlite/sqlite_db.h"
#include "services/op_service.h"
#include "support/fixture.h"
#include "util/ids.h"
#include "util/mem.h"

static void
die(const char *what, const struct st_error *err)
{
    fprintf(stderr, "bench_ops: %s: %s\n", what, err ? err->msg : "");
    exit(1);
}

static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

/* Run queued operations until none is left; returns how many ran. */
static size_t
drain(struct op_service *svc)
{
    struct st_error err = {0};
    bool worked = true;
    size_t n = 0;

    while (worked) {
        if (op_service_work_one(svc, "bench-worker", &worked, &err) < 0)
            die("work", &err);
        n += worked;
    }
    return n;
}

int
main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 500;
    struct st_error err = {0};
    struct op_repo ops;
    struct event_repo events;
    struct op_service svc;
    struct fixture *fx;
    struct vm *vms;
    int64_t *accept_ns, t0, t;
    size_t i, ran;

    if (n == 0)
        n = 1;
    fx = fixture_new(&err);
    if (!fx)
        die("fixture", &err);
    if (op_repo_sqlite_open(fx->db, &ops, &err) < 0 ||
        event_repo_sqlite_open(fx->db, &events, &err) < 0)
        die("open repositories", &err);
    svc = (struct op_service){
        .ops = &ops,
        .events = &events,
        .vms = &fx->vms_real,
        .tx = &fx->tx,
        .vm_svc = &fx->vm_svc,
        .cfg = {.lease_ms = 30000, .wait_max_ms = 0, .wait_poll_ms = 100},
        .probe = NULL,
    };
    vms = st_xcalloc(n, sizeof(*vms));
    accept_ns = st_xcalloc(n, sizeof(*accept_ns));
    for (i = 0; i < n; i++) {
        struct vm_create_req req;
        struct operation op;
        char name[ST_NAME_BUF];

        snprintf(name, sizeof(name), "bench-%zu", i);
        fixture_create_req(fx, name, &req);
        t = st_monotonic_ns();
        if (op_service_create_vm(&svc, FIXTURE_OWNER, &req, &vms[i], &op, NULL, &err) < 0)
            die("accept", &err);
        accept_ns[i] = st_monotonic_ns() - t;
    }
    qsort(accept_ns, n, sizeof(*accept_ns), cmp_i64);
    printf("accept (row + queued operation), N=%zu: p50 %.3f ms, p99 %.3f ms\n", n,
           (double)accept_ns[n / 2] / 1e6, (double)accept_ns[(n * 99) / 100] / 1e6);

    t0 = st_monotonic_ns();
    ran = drain(&svc);
    t = st_monotonic_ns() - t0;
    printf("create by one worker: %zu operations in %.3f s = %.0f creates/s\n", ran,
           (double)t / 1e9, (double)ran / ((double)t / 1e9));

    for (i = 0; i < n; i++) {
        struct operation op;
        struct vm vm;

        if (op_service_delete_vm(&svc, NULL, vms[i].id, 0, &vm, &op, &err) < 0)
            die("delete", &err);
    }
    t0 = st_monotonic_ns();
    ran = drain(&svc);
    t = st_monotonic_ns() - t0;
    printf("delete by one worker: %zu operations in %.3f s = %.0f deletes/s\n", ran,
           (double)t / 1e9, (double)ran / ((double)t / 1e9));

    free(accept_ns);
    free(vms);
    event_repo_close(&events);
    op_repo_close(&ops);
    fixture_free(fx);
    return 0;
}
