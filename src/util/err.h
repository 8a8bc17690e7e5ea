/*
 * err.h - the one error type of stratus.
 *
 * Every fallible function returns 0 (or a pointer) on success and -1 (or
 * NULL) on failure, with a struct st_error filled where the failure
 * happened.  Callers pass it up unchanged, optionally adding context with
 * st_error_prefix(); they never replace the message.
 */
#ifndef STRATUS_UTIL_ERR_H
#define STRATUS_UTIL_ERR_H

/* Coarse, stable codes.  The HTTP layer maps each to one status. */
enum st_err_code {
    ST_ERR_OK = 0,
    ST_ERR_INVALID,         /* the request is wrong: bad field, bad value */
    ST_ERR_NOT_FOUND,       /* no such thing (or not visible to the caller) */
    ST_ERR_CONFLICT,        /* exists already, or wrong state for the action */
    ST_ERR_FORBIDDEN,       /* the caller may not do this */
    ST_ERR_UNSUPPORTED,     /* this backend cannot do this */
    ST_ERR_UNAVAILABLE,     /* a backend is down or busy: try again later */
    ST_ERR_BACKEND,         /* a backend refused or failed the operation */
    ST_ERR_INTERNAL,        /* a bug or resource exhaustion on our side */
    ST_ERR_UNAUTHENTICATED, /* no valid credentials: who is calling is unknown */
    ST_ERR_THROTTLED,       /* too many attempts: wait before trying again */
    ST_ERR_STALE,           /* the row changed since it was read: read it again */
    ST_ERR_PRECONDITION,    /* the caller's expected revision (If-Match) is not the row's */
};

#define ST_ERROR_MSG_MAX 512

struct st_error {
    enum st_err_code code;
    int native;       /* backend's own code (SQLite, libvirt, errno), or 0 */
    const char *file; /* where it was set (string literal) */
    int line;
    char msg[ST_ERROR_MSG_MAX];
};

/*
 * Fill @err (which may be NULL: then nothing happens).  The message is a
 * single sentence a person can act on; it quotes the value it complains
 * about.  Always returns -1 so callers may write `return st_error_set(...)`.
 */
int st_error_set_at(struct st_error *err, enum st_err_code code, int native, const char *file,
                    int line, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

#define st_error_set(err, code, ...)                                                               \
    st_error_set_at((err), (code), 0, __FILE__, __LINE__, __VA_ARGS__)
#define st_error_set_native(err, code, native, ...)                                                \
    st_error_set_at((err), (code), (native), __FILE__, __LINE__, __VA_ARGS__)

/* Put "context: " in front of the existing message; code and origin stay. */
void st_error_prefix(struct st_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Reset to ST_ERR_OK with an empty message. */
void st_error_clear(struct st_error *err);

/* Stable lower-case name of a code ("not_found", ...). Never NULL. */
const char *st_err_code_name(enum st_err_code code);

#endif
