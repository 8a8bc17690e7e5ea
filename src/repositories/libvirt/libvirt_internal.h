/*
 * libvirt_internal.h - what the libvirt hypervisor and storage adapters
 * share: a live connection with reconnect-and-retry, the translation of
 * libvirt errors into struct st_error, and XML escaping.
 *
 * Private to src/repositories/libvirt/ (and its unit tests).
 */
#ifndef STRATUS_REPOSITORIES_LIBVIRT_INTERNAL_H
#define STRATUS_REPOSITORIES_LIBVIRT_INTERNAL_H

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <stdbool.h>

#include "repositories/libvirt/libvirt_backend.h"
#include "util/err.h"

/* Namespace of the <metadata> element stratus puts into each domain. */
#define LIBVIRT_STRATUS_NS_URI "https://stratus.dev/xmlns/libvirt/domain/1"
#define LIBVIRT_STRATUS_NS_PREFIX "stratus"

/* Domain name of a VM: "stratus-<id>". */
#define LIBVIRT_DOMAIN_PREFIX "stratus-"

/*
 * Sets of virDomainState values as bit masks.  A daemon newer than these
 * headers may report a state past VIR_DOMAIN_PMSUSPENDED: such a state (or
 * a negative one) is in no set, and is never used as a shift count.
 */
#define LIBVIRT_DOMAIN_STATE_COUNT (VIR_DOMAIN_PMSUSPENDED + 1)
#define LIBVIRT_STATE_BIT(state) (1u << (state))

_Static_assert(LIBVIRT_DOMAIN_STATE_COUNT <= 32, "domain states do not fit a mask");

static inline bool
libvirt_state_in(int state, unsigned set)
{
    return state >= 0 && state < LIBVIRT_DOMAIN_STATE_COUNT && (set & LIBVIRT_STATE_BIT(state));
}

/*
 * One attempt of an operation on a live connection.  @err is never NULL.
 * Returns 0, or -1 with @err filled (libvirt failures through
 * libvirt_error_set(), so a lost connection shows as ST_ERR_UNAVAILABLE).
 */
typedef int (*libvirt_op_fn)(virConnectPtr conn, void *arg, struct st_error *err);

/* What a connection lost in the middle of an operation means for it. */
enum libvirt_op_kind {
    LIBVIRT_OP_READ,  /* changes nothing (or is idempotent): safe to run again */
    LIBVIRT_OP_WRITE, /* may have taken effect before the loss: never run twice */
};

/*
 * Run @op on @lc's connection, opening it first when there is none or it
 * is dead.  When @op fails because the connection went away, the
 * connection is dropped; then a LIBVIRT_OP_READ op runs once more on a
 * reopened connection, while a LIBVIRT_OP_WRITE op fails with
 * ST_ERR_UNAVAILABLE "libvirt connection was lost during <what>; it may or
 * may not have happened: <reason>" (the next call reconnects).  An
 * unreachable libvirt gives ST_ERR_UNAVAILABLE "libvirt at '<uri>' is
 * unreachable: <reason>".  Remote connections use keepalive, so a daemon
 * that hangs fails calls after ~20 s.  A holder is not thread-safe: one
 * per thread.
 */
int libvirt_conn_run(struct libvirt_conn *lc, enum libvirt_op_kind kind, const char *what,
                     libvirt_op_fn op, void *arg, struct st_error *err);

/* The URI @lc connects to; NULL means libvirt's default.  Borrowed from @lc. */
const char *libvirt_conn_uri(const struct libvirt_conn *lc);

/*
 * A connection of its own to @uri for a long-lived user in another thread
 * (the event watch), opened as a holder opens its own: bounded by the same
 * timeout, keepalive on where the driver has it, with @closed(@opaque)
 * called from libvirt's event thread when the connection closes (not every
 * driver reports that: test:/// does not).  Gives up early when *@cancel
 * (read atomically; NULL = never) turns true.  NULL with @err filled
 * (ST_ERR_UNAVAILABLE).  Close with libvirt_conn_close_own() and the same
 * @closed; afterwards @closed is not running and will not be called.
 */
virConnectPtr libvirt_conn_open_own(const char *uri, virConnectCloseFunc closed, void *opaque,
                                    const bool *cancel, struct st_error *err);
void libvirt_conn_close_own(virConnectPtr conn, virConnectCloseFunc closed);

/*
 * For tests: the @nth op call on @lc from now on (1 = the next) does its
 * work and then fails as if the connection had broken at that moment.
 * 0 cancels.  Fires once.
 */
void libvirt_conn_fault_lose(struct libvirt_conn *lc, unsigned nth);

/*
 * Fill @err from libvirt's last error of this thread: "<context>: <libvirt
 * message>", libvirt's code as native, and the code mapped as
 *   VIR_ERR_NO_DOMAIN, _NO_STORAGE_VOL, _NO_STORAGE_POOL  -> ST_ERR_NOT_FOUND
 *   VIR_ERR_OPERATION_INVALID, _DOM_EXIST, _STORAGE_VOL_EXIST -> ST_ERR_CONFLICT
 *   a lost or refused connection                         -> ST_ERR_UNAVAILABLE
 *   anything else                                        -> ST_ERR_BACKEND
 * Call it right after the failing libvirt call.  Returns -1.
 */
int libvirt_error_set_at(struct st_error *err, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#define libvirt_error_set(err, ...) libvirt_error_set_at((err), __FILE__, __LINE__, __VA_ARGS__)

/* libvirt's last error code of this thread (VIR_ERR_OK when none). */
int libvirt_last_error_code(void);

/*
 * The lifecycle events of stratus domains, watched on a connection of
 * their own by a thread of their own (see libvirt_backend.h for the
 * contract the hypervisor gives).
 */
struct libvirt_watch;

/*
 * Start watching @uri (NULL = libvirt's default) for lifecycle events of
 * domains named LIBVIRT_DOMAIN_PREFIX*, calling @fn(@ctx, uuid, event)
 * from libvirt's event thread.  Returns once the first attempt to connect
 * and register has finished, successfully or not (an unreachable libvirt
 * is retried in the background).  NULL with @err filled when no thread
 * can be started.  Stop with libvirt_watch_stop().
 */
struct libvirt_watch *libvirt_watch_start(const char *uri, hv_event_fn fn, void *ctx,
                                          struct st_error *err);

/*
 * Stop calling @fn (waiting for a call in progress to return), drop the
 * connection and join the thread.  NULL-safe.  Never call it from @fn.
 */
void libvirt_watch_stop(struct libvirt_watch *w);

/*
 * What a lifecycle event (virDomainEventType @event with @detail) means
 * for stratus: true with *@out filled, false for events it ignores.
 */
bool libvirt_event_map(int event, int detail, enum hv_event *out);

/* For tests: behave as if the watch connection had closed (libvirtd restart). */
void libvirt_watch_fault_lose(struct libvirt_watch *w);
/* For tests: how many times the watch has connected and registered so far. */
unsigned libvirt_watch_connects(struct libvirt_watch *w);
/* For tests: the watch of a libvirt hypervisor, NULL before watch() (or for another backend). */
struct libvirt_watch *hypervisor_libvirt_watch(struct hypervisor *h);

/* Copy of @s with & < > ' " replaced by entities (NULL gives "").  Caller free()s. */
char *libvirt_xml_escape(const char *s);

/* Undo libvirt_xml_escape() (and numeric character references) in place. */
void libvirt_xml_unescape(char *s);

#endif
