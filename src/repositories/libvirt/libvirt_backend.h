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

/* Fill *out; the hypervisor borrows @conn. */
int hypervisor_libvirt_open(struct libvirt_conn *conn, const struct hypervisor_libvirt_config *cfg,
                            struct hypervisor *out, struct st_error *err);

struct storage_libvirt_config {
    const char *import_dir; /* import() accepts only files below this directory */
};

int storage_libvirt_open(struct libvirt_conn *conn, const struct storage_libvirt_config *cfg,
                         struct storage *out, struct st_error *err);

#endif
