#include "api/master.h"

#include <errno.h>
#include <fcgiapp.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/app.h"
#include "api/fcgi.h"
#include "api/handlers.h"
#include "common/log.h"
#include "api/waitgate.h"
#include "util/ids.h"
#include "util/mem.h"

#define LISTEN_BACKLOG 128
#define SD_LISTEN_FD 3
#define STOP_GRACE_MS 30000
#define RESTART_QUICK_MS 2000 /* a worker that dies sooner than this is failing */
#define RESTART_BACKOFF_MAX_MS 10000
#define TICK_MS 1000
/*
 * Wait-gate slots: one per live worker, current and retiring sets together,
 * so a reload may start a full new set while the old one finishes.
 */
#define MASTER_SLOTS (2 * API_CONFIG_WORKERS_MAX)

struct worker {
    pid_t pid;          /* 0: not running */
    int64_t started_ms; /* monotonic */
    int64_t start_at;   /* when pid is 0: monotonic time of the next start */
    unsigned failures;  /* quick deaths in a row */
};

struct master {
    struct api_config cfg;
    const char *config_path;
    int listen_fd;
    bool socket_created;
    struct worker *workers; /* the current set, cfg.workers long */
    size_t n_workers;
    pid_t *retiring; /* old sets told to stop after SIGHUP */
    size_t n_retiring;
    pid_t *slots; /* MASTER_SLOTS long: the worker in each wait-gate slot; 0: free */
};

/* ---- worker ---- */

/*
 * A worker acts on SIGTERM/SIGINT only while it holds no request: the two
 * signals stay blocked except inside ppoll(), which waits for a connection
 * with them unblocked.  The handler just raises worker_stop; the loop sees it
 * when ppoll() returns EINTR and exits between requests.  A signal that comes
 * while a request is read or served stays pending until the next wait.
 */
static volatile sig_atomic_t worker_stop;

static void
worker_on_term(int sig)
{
    (void)sig;
    worker_stop = 1;
}

/* Fills @wait_mask with the mask to wait under (the stop signals unblocked). */
static void
worker_signals(sigset_t *wait_mask)
{
    struct sigaction sa;
    sigset_t stop;

    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    /* Before the handler goes in: a stop inherited as pending waits for ppoll(). */
    sigprocmask(SIG_SETMASK, &stop, NULL);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = worker_on_term;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGPIPE, &sa, NULL);
    sa.sa_handler = SIG_DFL;
    sigaction(SIGCHLD, &sa, NULL);
    sigemptyset(wait_mask);
}

static void
worker_serve(struct app *app, FCGX_Request *fr)
{
    int64_t start = st_monotonic_ms();
    struct http_request req;
    struct http_response resp;

    fcgi_read_request(fr, app->cfg.max_body_bytes, &req);
    http_response_init(&resp);
    api_dispatch(app, &req, &resp);
    /* A place kept past its request would be lost for the life of this worker. */
    if (waitgate_held()) {
        api_log(API_LOG_WARN, "request %s ended still holding a waiting place; giving it back",
                req.request_id);
        waitgate_leave();
    }
    fcgi_write_response(fr, &resp);
    api_log_request(req.request_id, req.method, req.path, resp.status, st_monotonic_ms() - start);
    http_response_release(&resp);
    http_request_release(&req);
}

/*
 * Waits until the listening socket has a connection (1) or a stop signal came
 * (0).  Every worker wakes for each connection; the listening socket is
 * non-blocking, so those that lose the race get EAGAIN from accept().
 */
static int
worker_wait(int listen_fd, const sigset_t *wait_mask)
{
    struct pollfd pfd = {.fd = listen_fd, .events = POLLIN};

    while (!worker_stop) {
        if (ppoll(&pfd, 1, NULL, wait_mask) > 0)
            return 1;
        if (errno != EINTR) {
            api_log(API_LOG_WARN, "waiting for connections failed: %s", strerror(errno));
            st_sleep_ms(100);
        }
    }
    return 0;
}

static void __attribute__((noreturn)) worker_main(const struct api_config *cfg, int listen_fd)
{
    struct app app;
    struct st_error err;
    FCGX_Request fr;
    sigset_t wait_mask;

    worker_signals(&wait_mask);
    memset(&err, 0, sizeof(err));
    if (app_open(&app, cfg, &err) < 0) {
        api_log(API_LOG_ERROR, "worker cannot start: %s", err.msg);
        _exit(1);
    }
    FCGX_InitRequest(&fr, listen_fd, 0);
    while (worker_wait(listen_fd, &wait_mask)) {
        int rc = FCGX_Accept_r(&fr);

        if (rc < 0) {
            /* Another worker took the connection: not worth a word. */
            if (rc == -EAGAIN || rc == -EWOULDBLOCK || rc == -EINTR)
                continue;
            api_log(API_LOG_WARN, "accept failed: %s", strerror(-rc));
            st_sleep_ms(100);
            continue;
        }
        worker_serve(&app, &fr);
        FCGX_Finish_r(&fr);
    }
    FCGX_Free(&fr, 0);
    app_close(&app);
    _exit(0);
}

/* ---- master ---- */

static void
master_on_signal(int sig)
{
    /* Signals are blocked and collected by sigtimedwait(); nothing to do here. */
    (void)sig;
}

static void
master_signals(sigset_t *set)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = master_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGCHLD, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
    sigaddset(set, SIGCHLD);
    sigprocmask(SIG_BLOCK, set, NULL);
}

static bool
is_listening_socket(int fd)
{
    struct stat st;
    int value = 0;
    socklen_t len = sizeof(value);

    if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode))
        return false;
    return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &value, &len) == 0 && value;
}

/* An existing socket file is stale unless something still accepts on it. */
static int
remove_stale_socket(const char *path, struct st_error *err)
{
    struct sockaddr_un sun;
    struct stat st;
    int fd, rc;

    if (lstat(path, &st) < 0)
        return 0;
    if (!S_ISSOCK(st.st_mode))
        return st_error_set(err, ST_ERR_INVALID, "socket path '%s' exists and is not a socket",
                            path);
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    if (st_strlcpy(sun.sun_path, path, sizeof(sun.sun_path)) < 0)
        return st_error_set(err, ST_ERR_INVALID, "socket path '%s' is too long", path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return st_error_set_native(err, ST_ERR_INTERNAL, errno, "socket(): %s", strerror(errno));
    rc = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
    close(fd);
    if (rc == 0)
        return st_error_set(err, ST_ERR_CONFLICT,
                            "socket '%s' is in use by another process; stop it first", path);
    if (unlink(path) < 0)
        return st_error_set_native(err, ST_ERR_INTERNAL, errno,
                                   "cannot remove stale socket '%s': %s", path, strerror(errno));
    return 0;
}

static int
open_listener(struct master *m, struct st_error *err)
{
    const char *fds = getenv("LISTEN_FDS");
    const char *pid = getenv("LISTEN_PID");

    if (is_listening_socket(STDIN_FILENO)) {
        api_log(API_LOG_INFO, "using the listening socket on fd 0");
        m->listen_fd = STDIN_FILENO;
        return 0;
    }
    if (fds && pid && strcmp(fds, "1") == 0 && atol(pid) == (long)getpid() &&
        is_listening_socket(SD_LISTEN_FD)) {
        api_log(API_LOG_INFO, "using the socket-activated listening socket on fd 3");
        unsetenv("LISTEN_FDS");
        unsetenv("LISTEN_PID");
        m->listen_fd = SD_LISTEN_FD;
        return 0;
    }
    if (app_make_parent_dir(m->cfg.socket, err) < 0 || remove_stale_socket(m->cfg.socket, err) < 0)
        return -1;
    m->listen_fd = FCGX_OpenSocket(m->cfg.socket, LISTEN_BACKLOG);
    if (m->listen_fd < 0)
        return st_error_set(err, ST_ERR_INTERNAL, "cannot listen on '%s'", m->cfg.socket);
    m->socket_created = true;
    if (chmod(m->cfg.socket, (mode_t)m->cfg.socket_mode) < 0)
        return st_error_set_native(err, ST_ERR_INTERNAL, errno, "cannot chmod %04o '%s': %s",
                                   m->cfg.socket_mode, m->cfg.socket, strerror(errno));
    api_log(API_LOG_INFO, "listening on %s (mode %04o)", m->cfg.socket, m->cfg.socket_mode);
    return 0;
}

/*
 * Workers wait in ppoll() and may all wake for one connection: the losers must
 * get EAGAIN, not block in accept() where a stop signal cannot reach them.
 * Accepted sockets do not inherit O_NONBLOCK on Linux, so requests are read
 * and written blocking, as libfcgi expects.
 */
static int
set_nonblocking(int fd, struct st_error *err)
{
    int flags = fcntl(fd, F_GETFL);

    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
        return st_error_set_native(err, ST_ERR_INTERNAL, errno,
                                   "cannot make the listening socket non-blocking: %s",
                                   strerror(errno));
    return 0;
}

/* A free wait-gate slot, or -1 when every one has a live worker. */
static int
free_slot(const struct master *m)
{
    size_t i;

    for (i = 0; i < MASTER_SLOTS; i++)
        if (m->slots[i] == 0)
            return (int)i;
    return -1;
}

/* @pid was reaped: give back its waiting place, then its slot. */
static void
release_slot(struct master *m, pid_t pid)
{
    size_t i;

    for (i = 0; i < MASTER_SLOTS; i++) {
        if (m->slots[i] == pid) {
            waitgate_reclaim((unsigned)i);
            m->slots[i] = 0;
            return;
        }
    }
}

static void
spawn(struct master *m, struct worker *w)
{
    int slot = free_slot(m);
    pid_t pid;

    if (slot < 0) {
        api_log(API_LOG_WARN, "all %d worker slots are taken by running workers; retrying",
                MASTER_SLOTS);
        w->start_at = st_monotonic_ms() + TICK_MS;
        return;
    }
    pid = fork();
    if (pid < 0) {
        api_log(API_LOG_ERROR, "fork failed: %s; retrying", strerror(errno));
        w->start_at = st_monotonic_ms() + TICK_MS;
        return;
    }
    if (pid == 0) {
        waitgate_bind_slot((unsigned)slot);
        worker_main(&m->cfg, m->listen_fd);
    }
    m->slots[slot] = pid;
    w->pid = pid;
    w->started_ms = st_monotonic_ms();
    api_log(API_LOG_DEBUG, "worker %ld started", (long)pid);
}

static void
spawn_due(struct master *m)
{
    int64_t now = st_monotonic_ms();
    size_t i;

    for (i = 0; i < m->n_workers; i++)
        if (m->workers[i].pid == 0 && m->workers[i].start_at <= now)
            spawn(m, &m->workers[i]);
}

static void
new_worker_set(struct master *m)
{
    m->n_workers = m->cfg.workers;
    m->workers = st_xcalloc(m->n_workers, sizeof(*m->workers));
}

static void
describe_exit(int status, char *buf, size_t n)
{
    if (WIFEXITED(status))
        snprintf(buf, n, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, n, "was killed by signal %d", WTERMSIG(status));
    else
        snprintf(buf, n, "stopped (status %d)", status);
}

/* A current worker died: schedule its restart, slower if it keeps dying. */
static void
worker_died(struct worker *w, int status, bool stopping)
{
    int64_t now = st_monotonic_ms();
    int64_t delay = 0;
    pid_t pid = w->pid;
    char how[64];

    describe_exit(status, how, sizeof(how));
    w->pid = 0;
    if (stopping)
        return;
    if (now - w->started_ms < RESTART_QUICK_MS) {
        unsigned shift = w->failures < 7 ? w->failures : 7;

        delay = 100LL << shift;
        if (delay > RESTART_BACKOFF_MAX_MS)
            delay = RESTART_BACKOFF_MAX_MS;
        w->failures++;
    } else {
        w->failures = 0;
    }
    w->start_at = now + delay;
    api_log(API_LOG_WARN, "worker %ld %s; restarting in %lld ms", (long)pid, how, (long long)delay);
}

static void
reap(struct master *m, bool stopping)
{
    pid_t pid;
    int status;
    size_t i;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        bool found = false;

        release_slot(m, pid);
        for (i = 0; i < m->n_workers && !found; i++) {
            if (m->workers[i].pid == pid) {
                worker_died(&m->workers[i], status, stopping);
                found = true;
            }
        }
        for (i = 0; i < m->n_retiring && !found; i++) {
            if (m->retiring[i] == pid) {
                m->retiring[i] = m->retiring[--m->n_retiring];
                found = true;
            }
        }
    }
}

static size_t
alive(const struct master *m)
{
    size_t i, n = m->n_retiring;

    for (i = 0; i < m->n_workers; i++)
        n += m->workers[i].pid != 0;
    return n;
}

static void
signal_all(struct master *m, int sig)
{
    size_t i;

    for (i = 0; i < m->n_workers; i++)
        if (m->workers[i].pid)
            kill(m->workers[i].pid, sig);
    for (i = 0; i < m->n_retiring; i++)
        kill(m->retiring[i], sig);
}

static void
reload(struct master *m)
{
    struct api_config fresh;
    struct st_error err;
    enum api_log_level level;
    size_t i;

    memset(&err, 0, sizeof(err));
    if (api_config_load(&fresh, m->config_path, &err) < 0) {
        api_log(API_LOG_ERROR, "reload failed, keeping the running configuration: %s", err.msg);
        return;
    }
    if (strcmp(fresh.socket, m->cfg.socket) != 0 || fresh.socket_mode != m->cfg.socket_mode) {
        api_log(API_LOG_WARN, "socket settings change only on restart; keeping %s", m->cfg.socket);
        memcpy(fresh.socket, m->cfg.socket, sizeof(fresh.socket));
        fresh.socket_mode = m->cfg.socket_mode;
    }
    m->cfg = fresh;
    waitgate_set_limit(m->cfg.max_waiting_requests);
    if (api_log_level_parse(m->cfg.log_level, &level) == 0)
        api_log_set_level(level);
    /* The old set finishes its requests while the new one already accepts. */
    m->retiring = realloc(m->retiring, (m->n_retiring + m->n_workers) * sizeof(pid_t));
    if (!m->retiring)
        BUG("out of memory");
    for (i = 0; i < m->n_workers; i++)
        if (m->workers[i].pid)
            m->retiring[m->n_retiring++] = m->workers[i].pid;
    free(m->workers);
    new_worker_set(m);
    spawn_due(m);
    for (i = 0; i < m->n_retiring; i++)
        kill(m->retiring[i], SIGTERM);
    api_log(API_LOG_INFO, "configuration reloaded: %u workers (%u may wait), virt_type %s",
            m->cfg.workers, m->cfg.max_waiting_requests, m->cfg.virt_type_resolved);
}

static void
wait_for_signal(const sigset_t *set, int64_t ms, int *sig)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};

    *sig = sigtimedwait(set, NULL, &ts);
}

static void
shutdown_workers(struct master *m, const sigset_t *set)
{
    int64_t deadline = st_monotonic_ms() + STOP_GRACE_MS;
    int sig;

    if (deadline < st_monotonic_ms() + (int64_t)m->cfg.stop_timeout_s * 1000 + 5000)
        deadline = st_monotonic_ms() + (int64_t)m->cfg.stop_timeout_s * 1000 + 5000;
    signal_all(m, SIGTERM);
    reap(m, true);
    while (alive(m) > 0 && st_monotonic_ms() < deadline) {
        wait_for_signal(set, 100, &sig);
        reap(m, true);
    }
    if (alive(m) > 0) {
        api_log(API_LOG_WARN, "%zu workers still busy after the grace period; killing them",
                alive(m));
        signal_all(m, SIGKILL);
        while (alive(m) > 0 && waitpid(-1, NULL, 0) > 0)
            reap(m, true);
    }
}

int
master_run(const char *config_path, const struct api_config *cfg)
{
    struct master m;
    struct st_error err;
    sigset_t set;
    bool stopping = false;
    int sig;

    memset(&m, 0, sizeof(m));
    memset(&err, 0, sizeof(err));
    m.cfg = *cfg;
    m.config_path = config_path;
    m.listen_fd = -1;
    master_signals(&set);
    if (FCGX_Init() != 0 || open_listener(&m, &err) < 0 || set_nonblocking(m.listen_fd, &err) < 0 ||
        waitgate_init(m.cfg.max_waiting_requests, MASTER_SLOTS, &err) < 0) {
        api_log(API_LOG_ERROR, "cannot start: %s", err.msg[0] ? err.msg : "FCGX_Init failed");
        if (m.socket_created)
            unlink(m.cfg.socket);
        return 1;
    }
    api_log(
        API_LOG_INFO,
        "stratus-api starting: %u workers (%u may wait), virt_type %s (configured %s), libvirt %s",
        m.cfg.workers, m.cfg.max_waiting_requests, m.cfg.virt_type_resolved, m.cfg.virt_type,
        m.cfg.libvirt_uri);
    m.slots = st_xcalloc(MASTER_SLOTS, sizeof(*m.slots));
    new_worker_set(&m);
    while (!stopping) {
        spawn_due(&m);
        wait_for_signal(&set, TICK_MS, &sig);
        if (sig == SIGTERM || sig == SIGINT)
            stopping = true;
        else if (sig == SIGHUP)
            reload(&m);
        reap(&m, stopping);
    }
    api_log(API_LOG_INFO, "stopping: waiting for workers to finish their requests");
    shutdown_workers(&m, &set);
    close(m.listen_fd);
    if (m.socket_created)
        unlink(m.cfg.socket);
    free(m.workers);
    free(m.retiring);
    free(m.slots);
    waitgate_free();
    api_log(API_LOG_INFO, "stopped");
    return 0;
}
