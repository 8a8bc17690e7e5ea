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

#include "repositories/libvirt/libvirt_backend.h"
#include "util/err.h"

/* Namespace of the <metadata> element stratus puts into each domain. */
#define LIBVIRT_STRATUS_NS_URI "https://stratus.dev/xmlns/libvirt/domain/1"
#define LIBVIRT_STRATUS_NS_PREFIX "stratus"

/* Domain name of a VM: "stratus-<id>". */
#define LIBVIRT_DOMAIN_PREFIX "stratus-"

/*
 * One attempt of an operation on a live connection.  @err is never NULL.
 * Returns 0, or -1 with @err filled (libvirt failures through
 * libvirt_error_set(), so a lost connection shows as ST_ERR_UNAVAILABLE).
 */
typedef int (*libvirt_op_fn)(virConnectPtr conn, void *arg, struct st_error *err);

/*
 * Run @op on @lc's connection, opening it first when there is none or it
 * is dead.  When @op fails because the connection went away, the
 * connection is dropped, reopened once and @op runs once more.  An
 * unreachable libvirt gives ST_ERR_UNAVAILABLE "libvirt at '<uri>' is
 * unreachable: <reason>".  A holder is not thread-safe: one per thread.
 */
int libvirt_conn_run(struct libvirt_conn *lc, libvirt_op_fn op, void *arg, struct st_error *err);

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

/* Copy of @s with & < > ' " replaced by entities (NULL gives "").  Caller free()s. */
char *libvirt_xml_escape(const char *s);

/* Undo libvirt_xml_escape() (and numeric character references) in place. */
void libvirt_xml_unescape(char *s);

#endif
