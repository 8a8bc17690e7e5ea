/*
 * libvirt_backend.h - the libvirt implementations of hypervisor.h and
 * storage.h, sharing one connection.
 *
 * The connection is opened lazily and reopened when libvirtd went away
 * (restart): a call made while libvirtd is unreachable fails at once with
 * ST_ERR_UNAVAILABLE instead of hanging, and one made while it hangs
 * (stopped, deadlocked) fails so after ~20 s (keepalive, run by libvirt's
 * event loop in a thread the first connection of each process starts).
 */
#ifndef STRATUS_REPOSITORIES_LIBVIRT_BACKEND_H
#define STRATUS_REPOSITORIES_LIBVIRT_BACKEND_H

#include "repositories/hypervisor.h"
#include "repositories/storage.h"

struct libvirt_conn;

/*
 * New connection holder for @uri ("qemu:///system", "test:///default", ...).
 * Tries to connect once; failing that it still returns the holder (calls
 * will retry), so a process can start while libvirtd is down.  Free with
 * libvirt_conn_close().
 */
struct libvirt_conn *libvirt_conn_new(const char *uri);
void libvirt_conn_close(struct libvirt_conn *conn);

struct hypervisor_libvirt_config {
    const char *virt_type;   /* "kvm" or "qemu" (already resolved from auto) */
    const char *console_dir; /* serial console logs: <dir>/<id>.log; NULL = none */
    const char *emulator;    /* NULL = libvirt's default */
};

/*
 * Fill *out; the hypervisor borrows @conn.
 *
 * Besides the mandatory methods it has list_meta (owner and installation
 * read back from each domain's stratus metadata) and watch.
 *
 * Threading contract of watch(fn, ctx):
 *  - watch() starts one thread of the hypervisor's own, which opens its own
 *    connection to @conn's URI (@conn itself stays with the caller's thread)
 *    and registers for lifecycle events there.  watch() returns once that
 *    first attempt has finished: when it succeeded, every event from then
 *    on is delivered, so a caller can watch first and read the state after.
 *    An unreachable libvirt is no error: the thread keeps trying.
 *  - fn(ctx, id, event) is called from libvirt's event thread (the one
 *    thread per process that runs libvirt's default event loop, started by
 *    the first connection), never from the caller's thread and never from
 *    two threads at once: one call at a time, in the order libvirt
 *    reported the events.  id is the domain UUID (= VM id), borrowed for
 *    the call.  Only domains named "stratus-*" are reported.
 *  - fn must return quickly and must not call this hypervisor (close()
 *    waits for a call in progress; the event thread also carries keepalive
 *    for every connection of the process).
 *  - When the connection closes (libvirtd restarted, or keepalive found it
 *    hung) the thread reconnects and registers again: at once, then after
 *    0.5 s, doubling up to 10 s between attempts.  Events that happen while
 *    it is disconnected are lost: reconcile with list_meta() periodically.
 *    libvirt may also report one stop twice (SHUTDOWN then STOPPED).
 *  - close() stops calling fn (after a call in progress returns), wakes and
 *    joins the thread and closes its connection; after close() returns fn
 *    is never called again.  It returns at once normally, and within about
 *    20 s at worst (a daemon that hangs in the middle of a call).
 *  - Event mapping:  STARTED -> HV_EVENT_STARTED;  STOPPED, CRASHED and
 *    SHUTDOWN (finished: by the guest, by the host, or unspecified) ->
 *    HV_EVENT_STOPPED;  SUSPENDED -> HV_EVENT_PAUSED;  RESUMED ->
 *    HV_EVENT_RESUMED;  UNDEFINED -> HV_EVENT_UNDEFINED;  DEFINED,
 *    PMSUSPENDED and anything newer are not reported.
 */
int hypervisor_libvirt_open(struct libvirt_conn *conn, const struct hypervisor_libvirt_config *cfg,
                            struct hypervisor *out, struct st_error *err);

struct storage_libvirt_config {
    const char *import_dir; /* import() accepts only files below this directory */
};

/* Fill *out; the storage borrows @conn.  It has list_volumes (after a refresh of the pool). */
int storage_libvirt_open(struct libvirt_conn *conn, const struct storage_libvirt_config *cfg,
                         struct storage *out, struct st_error *err);

#endif
