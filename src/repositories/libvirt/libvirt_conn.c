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

struct libvirt_conn {
    char *uri;          /* NULL = libvirt's default URI */
    virConnectPtr conn; /* NULL until opened, and after a loss */
};

static pthread_once_t libvirt_init_once = PTHREAD_ONCE_INIT;

/* libvirt prints every error to stderr unless a handler takes it; ours are reported through
 * st_error. */
static void
libvirt_error_silence(void *opaque, virErrorPtr error)
{
    (void)opaque;
    (void)error;
}

static void
libvirt_init(void)
{
    struct sigaction sa;

    virInitialize();
    virSetErrorFunc(NULL, libvirt_error_silence);
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

static void
libvirt_conn_drop(struct libvirt_conn *lc)
{
    if (lc->conn) {
        virConnectClose(lc->conn);
        lc->conn = NULL;
    }
}

/* A live connection (borrowed from @lc), or NULL with ST_ERR_UNAVAILABLE. */
static virConnectPtr
libvirt_conn_get(struct libvirt_conn *lc, struct st_error *err)
{
    virErrorPtr e;

    /* IsAlive is answered locally; it notices a daemon that went away. */
    if (lc->conn && virConnectIsAlive(lc->conn) == 1)
        return lc->conn;
    libvirt_conn_drop(lc);
    lc->conn = virConnectOpen(lc->uri);
    if (lc->conn)
        return lc->conn;
    e = virGetLastError();
    st_error_set_native(err, ST_ERR_UNAVAILABLE, e ? e->code : 0,
                        "libvirt at '%s' is unreachable: %s", libvirt_conn_uri_name(lc),
                        e && e->message ? e->message : "no reason given");
    return NULL;
}

int
libvirt_conn_run(struct libvirt_conn *lc, libvirt_op_fn op, void *arg, struct st_error *err)
{
    struct st_error local;
    virConnectPtr conn;
    int attempt;

    for (attempt = 0; attempt < 2; attempt++) {
        st_error_clear(&local);
        conn = libvirt_conn_get(lc, &local);
        if (!conn)
            break;
        if (op(conn, arg, &local) == 0)
            return 0;
        if (local.code != ST_ERR_UNAVAILABLE)
            break;
        /* The daemon went away under us (restart): one more try on a fresh connection. */
        libvirt_conn_drop(lc);
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
    lc->conn = virConnectOpen(lc->uri);
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
