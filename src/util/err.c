#include "util/err.h"

#include "util/mem.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int
st_error_set_at(struct st_error *err, enum st_err_code code, int native, const char *file, int line,
                const char *fmt, ...)
{
    va_list ap;

    if (!err)
        return -1;
    err->code = code;
    err->native = native;
    err->file = file;
    err->line = line;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    return -1;
}

void
st_error_prefix(struct st_error *err, const char *fmt, ...)
{
    char prefix[ST_ERROR_MSG_MAX];
    char old[ST_ERROR_MSG_MAX];
    va_list ap;
    size_t plen;

    if (!err)
        return;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof(old));
    plen = strlen(prefix);
    if (plen > sizeof(err->msg) - 3)
        plen = sizeof(err->msg) - 3;
    memcpy(err->msg, prefix, plen);
    memcpy(err->msg + plen, ": ", 2);
    st_strlcpy(err->msg + plen + 2, old, sizeof(err->msg) - plen - 2);
}

void
st_error_clear(struct st_error *err)
{
    if (!err)
        return;
    memset(err, 0, sizeof(*err));
}

const char *
st_err_code_name(enum st_err_code code)
{
    switch (code) {
    case ST_ERR_OK:
        return "ok";
    case ST_ERR_INVALID:
        return "invalid";
    case ST_ERR_NOT_FOUND:
        return "not_found";
    case ST_ERR_CONFLICT:
        return "conflict";
    case ST_ERR_FORBIDDEN:
        return "forbidden";
    case ST_ERR_UNSUPPORTED:
        return "unsupported";
    case ST_ERR_UNAVAILABLE:
        return "unavailable";
    case ST_ERR_BACKEND:
        return "backend";
    case ST_ERR_INTERNAL:
        return "internal";
    case ST_ERR_UNAUTHENTICATED:
        return "unauthenticated";
    case ST_ERR_THROTTLED:
        return "throttled";
    case ST_ERR_STALE:
        return "stale";
    case ST_ERR_PRECONDITION:
        return "precondition_failed";
    }
    return "unknown";
}
