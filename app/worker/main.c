/*
 * stratus-worker: does the operations the API queues (VM create and
 * delete), keeps rows and libvirt in step, and records what guests do on
 * their own.
 *
 *   stratus-worker [-c FILE]
 *
 * worker_concurrency runner threads each hold their own database and
 * libvirt connections and claim one operation at a time under a lease;
 * the main thread reconciles every reconcile_interval_s and applies the
 * hypervisor's lifecycle events as they come.  SIGTERM and SIGINT stop
 * claiming; operations under way run to their end first.  A worker that
 * dies leaves its operations to whoever claims them once the lease ends.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/app.h"
#include "common/config.h"
#include "common/log.h"
#include "common/store.h"
#include "util/mem.h"

#define IDLE_POLL_MS 200
#define EVENT_QUEUE_MAX 1024
/*
 * An event is applied this long after it came: an action of the API's own
 * (a stop, a start) has saved its row by then, so only changes nobody asked
 * stratus for are recorded as seen by the hypervisor.
 */
#define EVENT_SETTLE_MS 500

static volatile sig_atomic_t worker_stop;
static int wake_pipe[2] = {-1, -1};

static void
on_stop(int sig)
{
    (void)sig;
    worker_stop = 1;
    if (wake_pipe[1] >= 0)
        (void)!write(wake_pipe[1], "s", 1);
}

/* Lifecycle events, handed from libvirt's thread to the main loop. */
struct event_queue {
    pthread_mutex_t lock;
    struct {
        char id[ST_ID_BUF];
        enum hv_event event;
        int64_t at; /* monotonic ms */
    } items[EVENT_QUEUE_MAX];
    size_t count;
    size_t dropped;
};

static struct event_queue events = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void
on_hv_event(void *ctx, const char *id, enum hv_event event)
{
    struct event_queue *q = ctx;

    pthread_mutex_lock(&q->lock);
    if (q->count < EVENT_QUEUE_MAX) {
        st_strlcpy(q->items[q->count].id, id, ST_ID_BUF);
        q->items[q->count].event = event;
        q->items[q->count].at = st_monotonic_ms();
        q->count++;
    } else {
        q->dropped++; /* the next reconcile pass catches up */
    }
    pthread_mutex_unlock(&q->lock);
    (void)!write(wake_pipe[1], "e", 1);
}

/* For tests: STRATUS_TEST_CRASH_AFTER=vm.create:disk exits hard right after that step. */
static const char *crash_after;

static void
crash_probe(const struct operation *op, const char *step)
{
    char here[64];

    snprintf(here, sizeof(here), "%s:%s", op_kind_name(op->kind), step);
    if (crash_after && strcmp(crash_after, here) == 0) {
        api_log(API_LOG_WARN, "test hook: exiting hard after step %s of operation %s", here,
                op->id);
        _exit(137);
    }
}

/*
 * A step may take longer than a lease (a slow libvirtd, a loaded host): while
 * a runner holds an operation, its heartbeat renews the lease every third of
 * it, over a connection of its own (a connection stays in one thread).
 */
struct heartbeat {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool quit;
    char op_id[ST_ID_BUF]; /* "" while the runner holds nothing */
    struct store store;    /* its own connection, holding only the operations */
};

struct runner {
    pthread_t thread;
    const struct api_config *cfg;
    char worker_id[ST_WORKER_ID_BUF];
    struct heartbeat hb;
};

/* A lost lease is noticed by the runner at its next step; here it is only said. */
static void
heartbeat_renew(struct runner *r, const char *id, int64_t lease_ms)
{
    struct st_error err = {0};

    if (op_repo_renew(&r->hb.store.ops, id, r->worker_id, st_now_ms() + lease_ms, NULL, &err) < 0)
        api_log(API_LOG_WARN, "worker %s: lease of operation %s not renewed: %s", r->worker_id, id,
                err.msg);
}

static void *
heartbeat_main(void *arg)
{
    struct runner *r = arg;
    struct heartbeat *hb = &r->hb;
    int64_t lease_ms = (int64_t)r->cfg->lease_s * 1000;
    char id[ST_ID_BUF];
    struct timespec until;

    pthread_mutex_lock(&hb->lock);
    while (!hb->quit) {
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += (time_t)(lease_ms / 3000);
        until.tv_nsec += (long)(lease_ms / 3 % 1000) * 1000000;
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&hb->wake, &hb->lock, &until);
        if (hb->quit || !hb->op_id[0])
            continue;
        memcpy(id, hb->op_id, ST_ID_BUF);
        pthread_mutex_unlock(&hb->lock);
        heartbeat_renew(r, id, lease_ms);
        pthread_mutex_lock(&hb->lock);
    }
    pthread_mutex_unlock(&hb->lock);
    return NULL;
}

/* The op_service's holding callback: what the heartbeat keeps alive. */
static void
heartbeat_hold(void *ctx, const struct operation *op)
{
    struct heartbeat *hb = ctx;

    pthread_mutex_lock(&hb->lock);
    if (op)
        memcpy(hb->op_id, op->id, ST_ID_BUF);
    else
        hb->op_id[0] = '\0';
    pthread_mutex_unlock(&hb->lock);
}

static int
heartbeat_start(struct runner *r, struct st_error *err)
{
    struct heartbeat *hb = &r->hb;

    pthread_mutex_init(&hb->lock, NULL);
    pthread_cond_init(&hb->wake, NULL);
    if (store_open_ops(&hb->store, r->cfg->database, err) < 0)
        goto fail;
    if (pthread_create(&hb->thread, NULL, heartbeat_main, r) != 0) {
        st_error_set(err, ST_ERR_INTERNAL, "cannot start a heartbeat thread");
        goto fail;
    }
    return 0;

fail:
    store_close(&hb->store);
    return -1;
}

static void
heartbeat_stop(struct heartbeat *hb)
{
    pthread_mutex_lock(&hb->lock);
    hb->quit = true;
    pthread_cond_signal(&hb->wake);
    pthread_mutex_unlock(&hb->lock);
    pthread_join(hb->thread, NULL);
    store_close(&hb->store);
}

static void *
runner_main(void *arg)
{
    struct runner *r = arg;
    struct st_error err = {0};
    struct app app;
    bool worked;

    if (app_open(&app, r->cfg, &err) < 0 || heartbeat_start(r, &err) < 0) {
        api_log(API_LOG_ERROR, "worker %s cannot start: %s", r->worker_id, err.msg);
        app_close(&app);
        return NULL;
    }
    if (r->cfg->test_hooks)
        app.op_svc.probe = crash_probe;
    app.op_svc.hold = (struct op_holding){.fn = heartbeat_hold, .ctx = &r->hb};
    while (!worker_stop) {
        memset(&err, 0, sizeof(err));
        if (!app.pools_ready && app_ensure_pools(&app, &err) < 0) {
            st_sleep_ms(IDLE_POLL_MS * 5);
            continue;
        }
        if (op_service_work_one(&app.op_svc, r->worker_id, &worked, &err) < 0) {
            api_log(API_LOG_ERROR, "worker %s: %s", r->worker_id, err.msg);
            st_sleep_ms(IDLE_POLL_MS * 5);
        } else if (!worked) {
            st_sleep_ms(IDLE_POLL_MS);
        }
    }
    heartbeat_stop(&r->hb);
    app_close(&app);
    return NULL;
}

static void
reconcile(struct app *app)
{
    struct reconcile_report r;
    struct st_error err = {0};

    if (reconcile_run(&app->reconcile_svc, &r, &err) < 0) {
        api_log(API_LOG_WARN, "reconcile failed: %s", err.msg);
        return;
    }
    api_log(r.orphan_domains || r.orphan_disks || r.vanished || r.requeued ? API_LOG_WARN
                                                                           : API_LOG_DEBUG,
            "reconcile: %zu orphan domains, %zu orphan disks, %zu vanished, %zu requeued, "
            "%zu events and %zu idempotency keys pruned",
            r.orphan_domains, r.orphan_disks, r.vanished, r.requeued, r.events_pruned,
            r.keys_pruned);
}

/*
 * Apply the events that have settled; returns how many milliseconds until
 * the oldest one left does (-1 when none is left).
 */
static int64_t
drain_events(struct app *app)
{
    struct st_error err = {0};
    int64_t now = st_monotonic_ms();
    size_t i, n, dropped;
    char ids[64][ST_ID_BUF];
    enum hv_event evs[64];
    int64_t next = -1;

    do {
        pthread_mutex_lock(&events.lock);
        for (n = 0; n < events.count && n < 64 && events.items[n].at + EVENT_SETTLE_MS <= now;
             n++) {
            memcpy(ids[n], events.items[n].id, ST_ID_BUF);
            evs[n] = events.items[n].event;
        }
        memmove(events.items, events.items + n, (events.count - n) * sizeof(events.items[0]));
        events.count -= n;
        next = events.count ? events.items[0].at + EVENT_SETTLE_MS - now : -1;
        dropped = events.dropped;
        events.dropped = 0;
        pthread_mutex_unlock(&events.lock);
        for (i = 0; i < n; i++)
            if (reconcile_on_event(&app->reconcile_svc, ids[i], evs[i], &err) < 0)
                api_log(API_LOG_WARN, "event for VM %s not applied: %s", ids[i], err.msg);
        if (dropped) {
            api_log(API_LOG_WARN, "%zu lifecycle events dropped; reconciling", dropped);
            reconcile(app);
        }
    } while (n == 64);
    return next < 0 ? -1 : (next > 0 ? next : 1);
}

/* Reconcile now and then, and apply events as they come, until told to stop. */
static void
main_loop(struct app *app, const struct api_config *cfg)
{
    int64_t interval = (int64_t)cfg->reconcile_interval_s * 1000;
    int64_t next = st_monotonic_ms();
    struct pollfd pfd = {.fd = wake_pipe[0], .events = POLLIN};
    int64_t settle = -1;
    char buf[64];

    while (!worker_stop) {
        int64_t now = st_monotonic_ms();
        int64_t timeout = next - now;

        if (now >= next) {
            reconcile(app);
            next = st_monotonic_ms() + interval;
            continue;
        }
        if (settle >= 0 && settle < timeout)
            timeout = settle;
        if (poll(&pfd, 1, (int)timeout) > 0)
            while (read(wake_pipe[0], buf, sizeof(buf)) > 0)
                ;
        settle = drain_events(app);
    }
}

static int
setup_signals(void)
{
    struct sigaction sa;

    if (pipe2(wake_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
        return -1;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGPIPE, &sa, NULL);
    return 0;
}

static int
run(const struct api_config *cfg)
{
    struct st_error err = {0};
    struct runner *runners;
    char host[64] = "localhost";
    struct app app;
    unsigned i;

    if (app_open(&app, cfg, &err) < 0) {
        fprintf(stderr, "stratus-worker: %s\n", err.msg);
        return 1;
    }
    if (hypervisor_watch(&app.hv, on_hv_event, &events, &err) < 0)
        api_log(API_LOG_WARN, "no lifecycle events, reconcile passes only: %s", err.msg);
    gethostname(host, sizeof(host) - 1);
    runners = st_xcalloc(cfg->worker_concurrency, sizeof(*runners));
    for (i = 0; i < cfg->worker_concurrency; i++) {
        runners[i].cfg = cfg;
        snprintf(runners[i].worker_id, sizeof(runners[i].worker_id), "%.40s:%ld:%u", host,
                 (long)getpid(), i);
        if (pthread_create(&runners[i].thread, NULL, runner_main, &runners[i]) != 0)
            BUG("cannot start a runner thread");
    }
    api_log(API_LOG_INFO, "stratus-worker up: %u runners, reconcile every %u s",
            cfg->worker_concurrency, cfg->reconcile_interval_s);
    main_loop(&app, cfg);
    api_log(API_LOG_INFO, "stratus-worker stopping: letting operations under way finish");
    for (i = 0; i < cfg->worker_concurrency; i++)
        pthread_join(runners[i].thread, NULL);
    free(runners);
    app_close(&app);
    api_log(API_LOG_INFO, "stratus-worker stopped");
    return 0;
}

int
main(int argc, char **argv)
{
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = getenv("STRATUS_CONFIG");
    struct st_error err = {0};
    enum api_log_level level;
    struct api_config cfg;
    int opt;

    while ((opt = getopt_long(argc, argv, "c:h", options, NULL)) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 'h':
            puts("usage: stratus-worker [-c FILE]");
            return 0;
        default:
            fputs("usage: stratus-worker [-c FILE]\n", stderr);
            return 2;
        }
    }
    if (path && !*path)
        path = NULL;
    if (api_config_load(&cfg, path, &err) < 0) {
        fprintf(stderr, "stratus-worker: %s\n", err.msg);
        return 1;
    }
    if (api_log_level_parse(cfg.log_level, &level) == 0)
        api_log_set_level(level);
    if (cfg.test_hooks)
        crash_after = getenv("STRATUS_TEST_CRASH_AFTER");
    if (setup_signals() < 0) {
        fprintf(stderr, "stratus-worker: cannot make a pipe: %s\n", strerror(errno));
        return 1;
    }
    return run(&cfg);
}
