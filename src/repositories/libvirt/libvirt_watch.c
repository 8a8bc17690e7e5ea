/*
 * libvirt_watch.c - lifecycle events of stratus domains.
 *
 * One thread per watch keeps a connection of its own registered for
 * lifecycle events and reconnects after a loss (libvirtd restart, keepalive
 * timeout).  It does not run libvirt's event loop: libvirt_conn.c already
 * runs the process's one default loop in a thread of its own, and a second
 * runner of the same loop would compete with it for every wakeup, so
 * neither a stop request nor a callback could be directed at this thread.
 * Callbacks therefore come from that event thread, and this thread waits on
 * a condition variable, which close() can always wake.
 */
#include "repositories/libvirt/libvirt_internal.h"

#include "util/ids.h"
#include "util/mem.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Reconnect attempts: first at once, then after 0.5 s, doubling up to 10 s. */
#define LIBVIRT_WATCH_BACKOFF_MIN_MS 500
#define LIBVIRT_WATCH_BACKOFF_MAX_MS 10000
/* How often a held connection is checked for life besides its close callback. */
#define LIBVIRT_WATCH_CHECK_MS 1000
/* How long the thread waits for libvirt to release its registrations at the end. */
#define LIBVIRT_WATCH_RELEASE_MS 5000

struct libvirt_watch {
    char *uri; /* NULL = libvirt's default */
    hv_event_fn fn;
    void *ctx;
    pthread_t thread;

    pthread_mutex_t lock; /* guards the members up to deliver_lock */
    pthread_cond_t cond;  /* CLOCK_MONOTONIC; broadcast on every change below */
    bool stop;            /* close asked; also read atomically by a pending open */
    bool lost;            /* the connection closed (or a test said so) */
    bool first_done;      /* the first attempt to connect and register finished */
    unsigned regs;        /* registrations libvirt still holds (its free callback not run) */
    unsigned connects;    /* successful registrations */

    pthread_mutex_t deliver_lock; /* held while fn runs */
    bool muted;                   /* under deliver_lock: fn is not called again */
};

bool
libvirt_event_map(int event, int detail, enum hv_event *out)
{
    switch (event) {
    case VIR_DOMAIN_EVENT_STARTED:
        *out = HV_EVENT_STARTED;
        return true;
    case VIR_DOMAIN_EVENT_STOPPED:
    case VIR_DOMAIN_EVENT_CRASHED:
        *out = HV_EVENT_STOPPED;
        return true;
    case VIR_DOMAIN_EVENT_SHUTDOWN:
        /* Every detail libvirt defines says the guest finished shutting down. */
        if (detail != VIR_DOMAIN_EVENT_SHUTDOWN_FINISHED &&
            detail != VIR_DOMAIN_EVENT_SHUTDOWN_GUEST && detail != VIR_DOMAIN_EVENT_SHUTDOWN_HOST)
            return false;
        *out = HV_EVENT_STOPPED;
        return true;
    case VIR_DOMAIN_EVENT_SUSPENDED:
        *out = HV_EVENT_PAUSED;
        return true;
    case VIR_DOMAIN_EVENT_RESUMED:
        *out = HV_EVENT_RESUMED;
        return true;
    case VIR_DOMAIN_EVENT_UNDEFINED:
        *out = HV_EVENT_UNDEFINED;
        return true;
    default:
        /* DEFINED, PMSUSPENDED and whatever a newer daemon adds. */
        return false;
    }
}

/* Runs in libvirt's event thread.  Only local calls on @dom: no round trip to the daemon. */
static int
libvirt_watch_event(virConnectPtr conn, virDomainPtr dom, int event, int detail, void *opaque)
{
    struct libvirt_watch *w = opaque;
    const char *name = virDomainGetName(dom);
    char uuid[VIR_UUID_STRING_BUFLEN];
    enum hv_event ev;

    (void)conn;
    if (!name || strncmp(name, LIBVIRT_DOMAIN_PREFIX, strlen(LIBVIRT_DOMAIN_PREFIX)) != 0 ||
        !libvirt_event_map(event, detail, &ev))
        return 0;
    if (virDomainGetUUIDString(dom, uuid) < 0) {
        virResetLastError();
        return 0;
    }
    pthread_mutex_lock(&w->deliver_lock);
    if (!w->muted)
        w->fn(w->ctx, uuid, ev);
    pthread_mutex_unlock(&w->deliver_lock);
    return 0;
}

/* libvirt's free callback of a registration: it holds @opaque no more. */
static void
libvirt_watch_released(void *opaque)
{
    struct libvirt_watch *w = opaque;

    pthread_mutex_lock(&w->lock);
    w->regs--;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

static void
libvirt_watch_mark_lost(struct libvirt_watch *w)
{
    pthread_mutex_lock(&w->lock);
    w->lost = true;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

/* Runs in libvirt's event thread when the watch connection closes. */
static void
libvirt_watch_closed(virConnectPtr conn, int reason, void *opaque)
{
    (void)conn;
    (void)reason;
    libvirt_watch_mark_lost(opaque);
}

/* Wait on @w->cond for at most @ms; @w->lock held. */
static void
libvirt_watch_wait_ms(struct libvirt_watch *w, int64_t ms)
{
    struct timespec deadline;

    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += (time_t)(ms / 1000);
    deadline.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&w->cond, &w->lock, &deadline);
}

static bool
libvirt_watch_stopping(struct libvirt_watch *w)
{
    return __atomic_load_n(&w->stop, __ATOMIC_ACQUIRE);
}

/* Open a connection and register for lifecycle events; 0 with *@conn and *@id set. */
static int
libvirt_watch_connect(struct libvirt_watch *w, virConnectPtr *conn, int *id)
{
    virConnectPtr c;
    int cb;

    /* Cleared before the open: the new connection may close as soon as it is open. */
    pthread_mutex_lock(&w->lock);
    w->lost = false;
    pthread_mutex_unlock(&w->lock);
    c = libvirt_conn_open_own(w->uri, libvirt_watch_closed, w, &w->stop, NULL);
    if (!c)
        return -1;
    /* Counted first: libvirt may release the registration before the call returns. */
    pthread_mutex_lock(&w->lock);
    w->regs++;
    pthread_mutex_unlock(&w->lock);
    cb = virConnectDomainEventRegisterAny(c, NULL, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                          VIR_DOMAIN_EVENT_CALLBACK(libvirt_watch_event), w,
                                          libvirt_watch_released);
    if (cb < 0) {
        /* A failed registration is dropped without its free callback. */
        virResetLastError();
        pthread_mutex_lock(&w->lock);
        w->regs--;
        pthread_mutex_unlock(&w->lock);
        libvirt_conn_close_own(c, libvirt_watch_closed);
        return -1;
    }
    pthread_mutex_lock(&w->lock);
    w->connects++;
    pthread_mutex_unlock(&w->lock);
    *conn = c;
    *id = cb;
    return 0;
}

/* Keep @conn until close is asked or the connection is gone. */
static void
libvirt_watch_hold(struct libvirt_watch *w, virConnectPtr conn)
{
    int alive;

    pthread_mutex_lock(&w->lock);
    while (!w->stop && !w->lost) {
        libvirt_watch_wait_ms(w, LIBVIRT_WATCH_CHECK_MS);
        if (w->stop || w->lost)
            break;
        /* Answered locally; it notices a daemon gone without a close event. */
        pthread_mutex_unlock(&w->lock);
        alive = virConnectIsAlive(conn);
        pthread_mutex_lock(&w->lock);
        if (alive != 1)
            w->lost = true;
    }
    pthread_mutex_unlock(&w->lock);
}

static void
libvirt_watch_disconnect(virConnectPtr conn, int id)
{
    /* On a dead connection libvirt still drops the registration locally. */
    if (virConnectDomainEventDeregisterAny(conn, id) < 0)
        virResetLastError();
    libvirt_conn_close_own(conn, libvirt_watch_closed);
}

static void
libvirt_watch_first_done(struct libvirt_watch *w)
{
    pthread_mutex_lock(&w->lock);
    w->first_done = true;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

static void *
libvirt_watch_main(void *arg)
{
    struct libvirt_watch *w = arg;
    int64_t backoff = 0, until;
    virConnectPtr conn;
    int id;

    while (!libvirt_watch_stopping(w)) {
        if (libvirt_watch_connect(w, &conn, &id) == 0) {
            libvirt_watch_first_done(w);
            backoff = 0;
            libvirt_watch_hold(w, conn);
            libvirt_watch_disconnect(conn, id);
            continue;
        }
        libvirt_watch_first_done(w);
        backoff = backoff == 0 ? LIBVIRT_WATCH_BACKOFF_MIN_MS : backoff * 2;
        if (backoff > LIBVIRT_WATCH_BACKOFF_MAX_MS)
            backoff = LIBVIRT_WATCH_BACKOFF_MAX_MS;
        until = st_monotonic_ms() + backoff;
        pthread_mutex_lock(&w->lock);
        while (!w->stop && st_monotonic_ms() < until)
            libvirt_watch_wait_ms(w, until - st_monotonic_ms());
        pthread_mutex_unlock(&w->lock);
    }
    /* A registration dropped during a dispatch is released when the dispatch ends. */
    until = st_monotonic_ms() + LIBVIRT_WATCH_RELEASE_MS;
    pthread_mutex_lock(&w->lock);
    while (w->regs > 0 && st_monotonic_ms() < until)
        libvirt_watch_wait_ms(w, until - st_monotonic_ms());
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

static void
libvirt_watch_free(struct libvirt_watch *w)
{
    pthread_mutex_destroy(&w->lock);
    pthread_mutex_destroy(&w->deliver_lock);
    pthread_cond_destroy(&w->cond);
    free(w->uri);
    free(w);
}

struct libvirt_watch *
libvirt_watch_start(const char *uri, hv_event_fn fn, void *ctx, struct st_error *err)
{
    struct libvirt_watch *w = st_xcalloc(1, sizeof(*w));
    pthread_condattr_t cattr;
    int rc;

    w->uri = uri ? st_xstrdup(uri) : NULL;
    w->fn = fn;
    w->ctx = ctx;
    pthread_mutex_init(&w->lock, NULL);
    pthread_mutex_init(&w->deliver_lock, NULL);
    pthread_condattr_init(&cattr);
    pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cond, &cattr);
    pthread_condattr_destroy(&cattr);
    rc = pthread_create(&w->thread, NULL, libvirt_watch_main, w);
    if (rc != 0) {
        libvirt_watch_free(w);
        st_error_set_native(err, ST_ERR_INTERNAL, rc,
                            "cannot start the thread that watches libvirt at '%s' for events: %s",
                            uri ? uri : "(default)", strerror(rc));
        return NULL;
    }
    /* So that whoever reads the state right after watch() misses no event since. */
    pthread_mutex_lock(&w->lock);
    while (!w->first_done)
        pthread_cond_wait(&w->cond, &w->lock);
    pthread_mutex_unlock(&w->lock);
    return w;
}

void
libvirt_watch_stop(struct libvirt_watch *w)
{
    bool released;

    if (!w)
        return;
    /* Waits for a call of fn in progress; none starts afterwards. */
    pthread_mutex_lock(&w->deliver_lock);
    w->muted = true;
    pthread_mutex_unlock(&w->deliver_lock);
    pthread_mutex_lock(&w->lock);
    __atomic_store_n(&w->stop, true, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    pthread_mutex_lock(&w->lock);
    released = w->regs == 0;
    pthread_mutex_unlock(&w->lock);
    /* libvirt still holds @w (it never released a registration): leaking beats a dangling call. */
    if (released)
        libvirt_watch_free(w);
}

void
libvirt_watch_fault_lose(struct libvirt_watch *w)
{
    libvirt_watch_mark_lost(w);
}

unsigned
libvirt_watch_connects(struct libvirt_watch *w)
{
    unsigned n;

    pthread_mutex_lock(&w->lock);
    n = w->connects;
    pthread_mutex_unlock(&w->lock);
    return n;
}
