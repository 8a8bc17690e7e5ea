#include "repositories/libvirt/libvirt_backend.h"

#include "repositories/libvirt/libvirt_internal.h"
#include "util/mem.h"

#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/*
 * Keepalive: a ping every 5 s, the connection closed after 3 unanswered
 * ones, so a daemon that stops answering fails pending calls after ~20 s.
 */
#define LIBVIRT_KEEPALIVE_INTERVAL 5
#define LIBVIRT_KEEPALIVE_COUNT 3
/* An open gets as long as keepalive gives a call: a hung daemon accepts but never answers. */
#define LIBVIRT_OPEN_TIMEOUT_S 20
/* How often a waiting open looks whether its caller gave up. */
#define LIBVIRT_OPEN_SLICE_MS 100L

struct libvirt_conn {
    char *uri;          /* NULL = libvirt's default URI */
    virConnectPtr conn; /* NULL until opened, and after a loss */
    int close_reason;   /* virConnectCloseReason of conn, -1 while open (atomic: event thread) */
    unsigned fault_lose_at; /* tests: op call that looks lost; 0 = none */
    unsigned fault_calls;   /* op calls since libvirt_conn_fault_lose() */
};

static pthread_once_t libvirt_init_once = PTHREAD_ONCE_INIT;

/*
 * The process whose event thread runs, 0 before the first one.  A forked
 * child inherits the value but not the thread, hence a pid rather than a
 * pthread_once.
 */
static pid_t libvirt_event_pid;

/* libvirt prints every error to stderr unless a handler takes it; ours are reported through
 * st_error. */
static void
libvirt_error_silence(void *opaque, virErrorPtr error)
{
    (void)opaque;
    (void)error;
}

/* Runs libvirt's default event loop for the life of the process (keepalive timers, socket I/O). */
static void *
libvirt_event_main(void *arg)
{
    (void)arg;
    for (;;) {
        /* It only fails when no loop is registered: do not spin then. */
        if (virEventRunDefaultImpl() < 0)
            st_sleep_ms(1000);
    }
    return NULL;
}

/*
 * Start the event thread once per process, in the process that opens
 * connections: a thread started before a fork would not exist in the
 * workers.  Without it connections still work, only keepalive does not.
 */
static void
libvirt_event_start(void)
{
    pid_t self = getpid();
    pid_t seen = __atomic_load_n(&libvirt_event_pid, __ATOMIC_ACQUIRE);
    pthread_attr_t attr;
    pthread_t thread;
    int rc;

    if (seen == self || !__atomic_compare_exchange_n(&libvirt_event_pid, &seen, self, false,
                                                     __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        return;
    if (pthread_attr_init(&attr) != 0) {
        __atomic_store_n(&libvirt_event_pid, 0, __ATOMIC_RELEASE);
        return;
    }
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    rc = pthread_create(&thread, &attr, libvirt_event_main, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0)
        __atomic_store_n(&libvirt_event_pid, 0, __ATOMIC_RELEASE);
}

static void
libvirt_init(void)
{
    struct sigaction sa;

    virInitialize();
    virSetErrorFunc(NULL, libvirt_error_silence);
    /* Before the first connection is opened, as libvirt requires. */
    virEventRegisterDefaultImpl();
    /*
     * libvirt writes to its socket without MSG_NOSIGNAL: once libvirtd is
     * gone the next call would kill the process with SIGPIPE instead of
     * failing.  Only the default action is replaced, never a handler the
     * program installed.
     */
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
        sa.sa_handler = SIG_IGN;
        sigaction(SIGPIPE, &sa, NULL);
    }
}

static const char *
libvirt_conn_uri_name(const struct libvirt_conn *lc)
{
    return lc->uri ? lc->uri : "(default)";
}

static bool
libvirt_error_conn_lost(const virError *e)
{
    const char *msg = e->message ? e->message : "";

    switch (e->code) {
    case VIR_ERR_NO_CONNECT:
    case VIR_ERR_INVALID_CONN:
    case VIR_ERR_RPC:
        return true;
    default:
        break;
    }
    if (e->domain == VIR_FROM_RPC)
        return true;
    return strstr(msg, "connection closed") != NULL ||
           strstr(msg, "End of file while reading data") != NULL ||
           strstr(msg, "client socket is closed") != NULL;
}

static enum st_err_code
libvirt_error_code_map(const virError *e)
{
    if (libvirt_error_conn_lost(e))
        return ST_ERR_UNAVAILABLE;
    switch (e->code) {
    case VIR_ERR_NO_DOMAIN:
    case VIR_ERR_NO_STORAGE_VOL:
    case VIR_ERR_NO_STORAGE_POOL:
        return ST_ERR_NOT_FOUND;
    case VIR_ERR_OPERATION_INVALID:
    case VIR_ERR_DOM_EXIST:
    case VIR_ERR_STORAGE_VOL_EXIST:
        return ST_ERR_CONFLICT;
    default:
        return ST_ERR_BACKEND;
    }
}

int
libvirt_error_set_at(struct st_error *err, const char *file, int line, const char *fmt, ...)
{
    virErrorPtr e = virGetLastError();
    char context[ST_ERROR_MSG_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(context, sizeof(context), fmt, ap);
    va_end(ap);
    if (!e || e->code == VIR_ERR_OK)
        return st_error_set_at(err, ST_ERR_BACKEND, 0, file, line, "%s: libvirt gave no reason",
                               context);
    return st_error_set_at(err, libvirt_error_code_map(e), e->code, file, line, "%s: %s", context,
                           e->message ? e->message : "unknown libvirt error");
}

int
libvirt_last_error_code(void)
{
    virErrorPtr e = virGetLastError();

    return e ? e->code : VIR_ERR_OK;
}

static void libvirt_conn_closed(virConnectPtr conn, int reason, void *opaque);

static void
libvirt_conn_drop(struct libvirt_conn *lc)
{
    if (lc->conn) {
        /* Afterwards the callback cannot be running: @lc may go away. */
        if (virConnectUnregisterCloseCallback(lc->conn, libvirt_conn_closed) < 0)
            virResetLastError();
        virConnectClose(lc->conn);
        lc->conn = NULL;
    }
}

/* An open running in a thread of its own, so a hung daemon cannot hold the caller. */
struct libvirt_open_job {
    pthread_mutex_t lock;
    pthread_cond_t done_cond;
    char *uri;
    bool done;      /* the open returned */
    bool abandoned; /* the caller gave up: the thread cleans up */
    virConnectPtr conn;
    int code; /* libvirt's error when conn is NULL */
    char msg[256];
};

static void
libvirt_open_job_free(struct libvirt_open_job *job)
{
    pthread_mutex_destroy(&job->lock);
    pthread_cond_destroy(&job->done_cond);
    free(job->uri);
    free(job);
}

static void *
libvirt_open_main(void *arg)
{
    struct libvirt_open_job *job = arg;
    virConnectPtr conn = virConnectOpen(job->uri);
    virErrorPtr e = conn ? NULL : virGetLastError();
    bool abandoned;

    pthread_mutex_lock(&job->lock);
    job->conn = conn;
    job->code = e ? e->code : 0;
    st_strlcpy(job->msg, e && e->message ? e->message : "no reason given", sizeof(job->msg));
    job->done = true;
    abandoned = job->abandoned;
    pthread_cond_signal(&job->done_cond);
    pthread_mutex_unlock(&job->lock);
    if (abandoned) {
        if (conn)
            virConnectClose(conn);
        libvirt_open_job_free(job);
    }
    return NULL;
}

/*
 * virConnectOpen() that gives up after LIBVIRT_OPEN_TIMEOUT_S, or as soon
 * as *@cancel (when not NULL) turns true; NULL with @err filled.
 */
static virConnectPtr
libvirt_open_timed(const char *uri, const bool *cancel, struct st_error *err)
{
    struct libvirt_open_job *job = st_xcalloc(1, sizeof(*job));
    pthread_condattr_t cattr;
    pthread_attr_t attr;
    pthread_t thread;
    struct timespec deadline;
    virConnectPtr conn;
    long waited;
    bool done;

    pthread_mutex_init(&job->lock, NULL);
    pthread_condattr_init(&cattr);
    pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
    pthread_cond_init(&job->done_cond, &cattr);
    pthread_condattr_destroy(&cattr);
    job->uri = uri ? st_xstrdup(uri) : NULL;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&thread, &attr, libvirt_open_main, job) != 0) {
        pthread_attr_destroy(&attr);
        libvirt_open_job_free(job);
        return NULL; /* no thread to spare: open in this one */
    }
    pthread_attr_destroy(&attr);
    pthread_mutex_lock(&job->lock);
    for (waited = 0; !job->done && waited < LIBVIRT_OPEN_TIMEOUT_S * 1000;
         waited += LIBVIRT_OPEN_SLICE_MS) {
        if (cancel && __atomic_load_n(cancel, __ATOMIC_ACQUIRE))
            break;
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        deadline.tv_nsec += LIBVIRT_OPEN_SLICE_MS * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
        while (!job->done && pthread_cond_timedwait(&job->done_cond, &job->lock, &deadline) == 0)
            ;
    }
    done = job->done;
    job->abandoned = !done;
    pthread_mutex_unlock(&job->lock);
    if (!done) {
        if (cancel && __atomic_load_n(cancel, __ATOMIC_ACQUIRE))
            st_error_set(err, ST_ERR_UNAVAILABLE,
                         "the connection to libvirt at '%s' was given up: its user is closing",
                         uri ? uri : "(default)");
        else
            st_error_set(
                err, ST_ERR_UNAVAILABLE,
                "libvirt at '%s' is unreachable: no answer to the connection request within %d s",
                uri ? uri : "(default)", LIBVIRT_OPEN_TIMEOUT_S);
        return NULL;
    }
    conn = job->conn;
    if (!conn)
        st_error_set_native(err, ST_ERR_UNAVAILABLE, job->code,
                            "libvirt at '%s' is unreachable: %s", uri ? uri : "(default)",
                            job->msg);
    libvirt_open_job_free(job);
    return conn;
}

/* Called from the event thread when a connection closes; @opaque is its holder. */
static void
libvirt_conn_closed(virConnectPtr conn, int reason, void *opaque)
{
    struct libvirt_conn *lc = opaque;

    (void)conn;
    __atomic_store_n(&lc->close_reason, reason, __ATOMIC_RELEASE);
}

/*
 * Drivers without keepalive or close events (test:///, in-process ones)
 * cannot hang on a peer, so their refusal is no error.
 */
virConnectPtr
libvirt_conn_open_own(const char *uri, virConnectCloseFunc closed, void *opaque, const bool *cancel,
                      struct st_error *err)
{
    struct st_error local = {0};
    virConnectPtr conn;

    pthread_once(&libvirt_init_once, libvirt_init);
    libvirt_event_start();
    conn = libvirt_open_timed(uri, cancel, &local);
    if (!conn && local.code == ST_ERR_OK)
        conn = virConnectOpen(uri);
    if (!conn) {
        if (local.code == ST_ERR_OK)
            libvirt_error_set(&local, "libvirt at '%s' is unreachable", uri ? uri : "(default)");
        local.code = ST_ERR_UNAVAILABLE;
        if (err)
            *err = local;
        return NULL;
    }
    if (virConnectSetKeepAlive(conn, LIBVIRT_KEEPALIVE_INTERVAL, LIBVIRT_KEEPALIVE_COUNT) < 0)
        virResetLastError();
    if (virConnectRegisterCloseCallback(conn, closed, opaque, NULL) < 0)
        virResetLastError();
    return conn;
}

/* Open @lc's connection, noting why it closes.  NULL with @err filled. */
static virConnectPtr
libvirt_conn_open(struct libvirt_conn *lc, struct st_error *err)
{
    /* Before the open: the callback may fire as soon as it is registered. */
    __atomic_store_n(&lc->close_reason, -1, __ATOMIC_RELEASE);
    return libvirt_conn_open_own(lc->uri, libvirt_conn_closed, lc, NULL, err);
}

void
libvirt_conn_close_own(virConnectPtr conn, virConnectCloseFunc closed)
{
    if (!conn)
        return;
    if (virConnectUnregisterCloseCallback(conn, closed) < 0)
        virResetLastError();
    virConnectClose(conn);
}

const char *
libvirt_conn_uri(const struct libvirt_conn *lc)
{
    return lc->uri;
}

/* A live connection (borrowed from @lc), or NULL with ST_ERR_UNAVAILABLE. */
static virConnectPtr
libvirt_conn_get(struct libvirt_conn *lc, struct st_error *err)
{
    /* IsAlive is answered locally; it notices a daemon that went away. */
    if (lc->conn && virConnectIsAlive(lc->conn) == 1)
        return lc->conn;
    libvirt_conn_drop(lc);
    lc->conn = libvirt_conn_open(lc, err);
    return lc->conn;
}

/* One call of @op, unless a planned fault makes it look lost after the op did its work. */
static int
libvirt_conn_call(struct libvirt_conn *lc, virConnectPtr conn, libvirt_op_fn op, void *arg,
                  struct st_error *err)
{
    int rc = op(conn, arg, err);

    if (lc->fault_lose_at == 0 || ++lc->fault_calls != lc->fault_lose_at)
        return rc;
    lc->fault_lose_at = 0;
    return st_error_set_native(err, ST_ERR_UNAVAILABLE, VIR_ERR_RPC,
                               "injected fault: the connection to libvirt was lost");
}

void
libvirt_conn_fault_lose(struct libvirt_conn *lc, unsigned nth)
{
    lc->fault_lose_at = nth;
    lc->fault_calls = 0;
}

int
libvirt_conn_run(struct libvirt_conn *lc, enum libvirt_op_kind kind, const char *what,
                 libvirt_op_fn op, void *arg, struct st_error *err)
{
    struct st_error local;
    virConnectPtr conn;
    bool hung;
    int attempt;

    for (attempt = 0; attempt < 2; attempt++) {
        st_error_clear(&local);
        conn = libvirt_conn_get(lc, &local);
        if (!conn)
            break;
        if (libvirt_conn_call(lc, conn, op, arg, &local) == 0)
            return 0;
        if (local.code != ST_ERR_UNAVAILABLE)
            break;
        hung = __atomic_load_n(&lc->close_reason, __ATOMIC_ACQUIRE) ==
               VIR_CONNECT_CLOSE_REASON_KEEPALIVE;
        /* The connection broke under @op: whatever comes next gets a fresh one. */
        libvirt_conn_drop(lc);
        if (hung) {
            /* Not a restart: a daemon that stopped answering would hang the retry too. */
            st_error_prefix(&local, "libvirt at '%s' stopped answering during %s",
                            libvirt_conn_uri_name(lc), what);
            break;
        }
        if (kind == LIBVIRT_OP_WRITE) {
            /* The request may have reached libvirt before the loss: never do it twice. */
            st_error_prefix(
                &local, "libvirt connection was lost during %s; it may or may not have happened",
                what);
            break;
        }
    }
    if (err)
        *err = local;
    return -1;
}

struct libvirt_conn *
libvirt_conn_new(const char *uri)
{
    struct libvirt_conn *lc;

    pthread_once(&libvirt_init_once, libvirt_init);
    lc = st_xcalloc(1, sizeof(*lc));
    lc->uri = uri ? st_xstrdup(uri) : NULL;
    /* A daemon that is down now is not fatal: every call tries again. */
    lc->close_reason = -1;
    lc->conn = libvirt_conn_open(lc, NULL);
    return lc;
}

void
libvirt_conn_close(struct libvirt_conn *lc)
{
    if (!lc)
        return;
    libvirt_conn_drop(lc);
    free(lc->uri);
    free(lc);
}

char *
libvirt_xml_escape(const char *s)
{
    size_t len = 0;
    const char *p;
    char *out, *q;

    if (!s)
        s = "";
    for (p = s; *p; p++)
        len += (*p == '&' || *p == '\'' || *p == '"') ? 6 : (*p == '<' || *p == '>') ? 4 : 1;
    out = st_xcalloc(len + 1, 1);
    q = out;
    for (p = s; *p; p++) {
        const char *ent = NULL;

        switch (*p) {
        case '&':
            ent = "&amp;";
            break;
        case '<':
            ent = "&lt;";
            break;
        case '>':
            ent = "&gt;";
            break;
        case '\'':
            ent = "&apos;";
            break;
        case '"':
            ent = "&quot;";
            break;
        default:
            *q++ = *p;
            continue;
        }
        memcpy(q, ent, strlen(ent));
        q += strlen(ent);
    }
    *q = '\0';
    return out;
}

/* Write the UTF-8 encoding of @cp at @q; returns the bytes written (0 when invalid). */
static size_t
libvirt_utf8_put(char *q, unsigned long cp)
{
    if (cp == 0 || cp > 0x10FFFF)
        return 0;
    if (cp < 0x80) {
        q[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        q[0] = (char)(0xC0 | (cp >> 6));
        q[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        q[0] = (char)(0xE0 | (cp >> 12));
        q[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        q[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    q[0] = (char)(0xF0 | (cp >> 18));
    q[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    q[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    q[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

void
libvirt_xml_unescape(char *s)
{
    static const struct {
        const char *ent;
        char ch;
    } named[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&apos;", '\''}, {"&quot;", '"'}};
    char *p = s, *q = s;
    size_t i, n;

    while (*p) {
        if (*p != '&') {
            *q++ = *p++;
            continue;
        }
        for (i = 0; i < ST_ARRAY_LEN(named); i++) {
            if (strncmp(p, named[i].ent, strlen(named[i].ent)) == 0)
                break;
        }
        if (i < ST_ARRAY_LEN(named)) {
            *q++ = named[i].ch;
            p += strlen(named[i].ent);
            continue;
        }
        if (p[1] == '#') {
            char *end;
            unsigned long cp = (p[2] == 'x') ? strtoul(p + 3, &end, 16) : strtoul(p + 2, &end, 10);

            /* A reference always encodes in fewer bytes than its own text. */
            if (*end == ';' && (n = libvirt_utf8_put(q, cp)) > 0) {
                q += n;
                p = end + 1;
                continue;
            }
        }
        *q++ = *p++;
    }
    *q = '\0';
}
