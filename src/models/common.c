#include "models/common.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "util/mem.h"

/*
 * Values quoted back in messages are cut to this many input bytes, so a
 * 10 KB member cannot crowd the rest of the message out.
 */
#define QUOTE_MAX 64
/* Every input byte may become "\xNN", plus "..." and the terminator. */
#define QUOTE_BUF (QUOTE_MAX * 4 + 4)
#define CHAR_DESC_BUF 16

static bool
is_alnum(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool
is_name_char(unsigned char c)
{
    return is_alnum(c) || c == '.' || c == '_' || c == '-';
}

/*
 * Copy at most QUOTE_MAX bytes of s[0..len) into out for use between single
 * quotes: printable ASCII passes, the quote, the backslash and every other
 * byte become "\xNN", so a message never carries control bytes or broken
 * UTF-8 back to the client or into a log.
 */
static void
quote(const char *s, size_t len, char out[QUOTE_BUF])
{
    size_t i, o = 0;

    for (i = 0; i < len && i < QUOTE_MAX; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\')
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, QUOTE_BUF - o, "\\x%02X", c);
    }
    if (i < len) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

/* "'<'" for a printable character, else its code. */
static void
describe_char(unsigned char c, char out[CHAR_DESC_BUF])
{
    if (c == '\'')
        snprintf(out, CHAR_DESC_BUF, "\"'\"");
    else if (c >= 0x20 && c < 0x7f)
        snprintf(out, CHAR_DESC_BUF, "'%c'", c);
    else
        snprintf(out, CHAR_DESC_BUF, "code 0x%02X", c);
}

bool
st_name_valid(const char *name)
{
    size_t i;

    if (!name || !is_alnum((unsigned char)name[0]))
        return false;
    for (i = 1; name[i]; i++) {
        if (i >= ST_NAME_MAX || !is_name_char((unsigned char)name[i]))
            return false;
    }
    return true;
}

int
st_name_check(const char *field, const char *name, struct st_error *err)
{
    char what[CHAR_DESC_BUF];
    char shown[QUOTE_BUF];
    size_t len, i;

    if (!name)
        return st_error_set(err, ST_ERR_INVALID, "field '%s' is required", field);
    len = strlen(name);
    if (len == 0)
        return st_error_set(err, ST_ERR_INVALID, "field '%s' must not be empty", field);
    if (len > ST_NAME_MAX)
        return st_error_set(err, ST_ERR_INVALID,
                            "field '%s' is too long: at most %d characters, got %zu", field,
                            ST_NAME_MAX, len);
    if (!is_alnum((unsigned char)name[0])) {
        describe_char((unsigned char)name[0], what);
        return st_error_set(err, ST_ERR_INVALID,
                            "field '%s' must start with a letter or a digit, got %s", field, what);
    }
    for (i = 1; i < len; i++) {
        if (is_name_char((unsigned char)name[i]))
            continue;
        describe_char((unsigned char)name[i], what);
        quote(name, len, shown);
        return st_error_set(
            err, ST_ERR_INVALID,
            "field '%s' may hold only letters, digits, '.', '_' and '-', but '%s' has %s at position %zu",
            field, shown, what, i + 1);
    }
    return 0;
}

int
st_revision_check(const char *noun, const char *id, uint64_t have, uint64_t expect,
                  struct st_error *err)
{
    if (!expect || have == expect)
        return 0;
    return st_error_set(err, ST_ERR_PRECONDITION,
                        "%s '%s' is at revision %llu, not %llu (If-Match)", noun, id,
                        (unsigned long long)have, (unsigned long long)expect);
}

int
st_json_check_object(const struct json_t *body, const char *const *known, size_t n_known,
                     struct st_error *err)
{
    /* jansson's iterators are not const-correct; nothing is modified. */
    json_t *obj = (json_t *)body;
    void *it;

    if (!json_is_object(obj))
        return st_error_set(err, ST_ERR_INVALID, "request body must be a JSON object");
    for (it = json_object_iter(obj); it; it = json_object_iter_next(obj, it)) {
        const char *key = json_object_iter_key(it);
        size_t key_len = json_object_iter_key_len(it);
        char shown[QUOTE_BUF];
        size_t i;

        for (i = 0; i < n_known; i++) {
            if (strlen(known[i]) == key_len && memcmp(known[i], key, key_len) == 0)
                break;
        }
        if (i == n_known) {
            quote(key, key_len, shown);
            return st_error_set(err, ST_ERR_INVALID, "unknown field '%s'", shown);
        }
    }
    return 0;
}

int
st_json_get_uint(const struct json_t *body, const char *field, unsigned min, unsigned max,
                 unsigned *out, struct st_error *err)
{
    const json_t *v = json_object_get(body, field);
    json_int_t n;

    if (!v)
        return 0;
    /* Reals and booleans are refused: 2.5 vCPUs or `true` MiB mean a confused client. */
    if (!json_is_integer(v))
        return st_error_set(err, ST_ERR_INVALID, "field '%s' must be an integer", field);
    n = json_integer_value(v);
    if (n < (json_int_t)min || n > (json_int_t)max)
        return st_error_set(err, ST_ERR_INVALID,
                            "field '%s' must be between %u and %u, got %" JSON_INTEGER_FORMAT,
                            field, min, max, n);
    *out = (unsigned)n;
    return 1;
}

/* Borrow a string member; refuse other types and embedded NULs. */
static int
get_str(const json_t *body, const char *field, const char **s, size_t *len, struct st_error *err)
{
    const json_t *v = json_object_get(body, field);

    if (!v)
        return 0;
    if (!json_is_string(v))
        return st_error_set(err, ST_ERR_INVALID, "field '%s' must be a string", field);
    *s = json_string_value(v);
    *len = json_string_length(v);
    /* A NUL would silently cut the value short in every C string after us. */
    if (strlen(*s) != *len)
        return st_error_set(err, ST_ERR_INVALID, "field '%s' must not contain NUL characters",
                            field);
    return 1;
}

int
st_json_get_string(const struct json_t *body, const char *field, size_t max_len, char *out,
                   size_t out_size, struct st_error *err)
{
    const char *s = NULL;
    size_t len = 0;
    int rc;

    if (out_size <= max_len)
        BUG("st_json_get_string: buffer smaller than max_len + 1");
    rc = get_str(body, field, &s, &len, err);
    if (rc <= 0)
        return rc;
    if (len == 0)
        return st_error_set(err, ST_ERR_INVALID, "field '%s' must not be empty", field);
    if (len > max_len)
        return st_error_set(err, ST_ERR_INVALID,
                            "field '%s' is too long: at most %zu bytes, got %zu", field, max_len,
                            len);
    memcpy(out, s, len + 1);
    return 1;
}

int
st_json_get_name(const struct json_t *body, const char *field, char out[ST_NAME_BUF],
                 struct st_error *err)
{
    const char *s = NULL;
    size_t len = 0;
    int rc;

    rc = get_str(body, field, &s, &len, err);
    if (rc <= 0)
        return rc;
    if (st_name_check(field, s, err) < 0)
        return -1;
    memcpy(out, s, len + 1);
    return 1;
}

int
st_json_get_uuid(const struct json_t *body, const char *field, char out[ST_ID_BUF],
                 struct st_error *err)
{
    char shown[QUOTE_BUF];
    const char *s = NULL;
    size_t len = 0, i;
    int rc;

    rc = get_str(body, field, &s, &len, err);
    if (rc <= 0)
        return rc;
    if (!st_uuid_valid(s)) {
        quote(s, len, shown);
        return st_error_set(err, ST_ERR_INVALID, "field '%s' must be a UUID, got '%s'", field,
                            shown);
    }
    /* Ids are stored in lower case; compare like with like. */
    for (i = 0; i < ST_ID_LEN; i++)
        out[i] = (s[i] >= 'A' && s[i] <= 'F') ? (char)(s[i] - 'A' + 'a') : s[i];
    out[ST_ID_LEN] = '\0';
    return 1;
}

int
st_json_get_enum(const struct json_t *body, const char *field, const char *const *names, size_t n,
                 int *out, struct st_error *err)
{
    char choices[256];
    char shown[QUOTE_BUF];
    const char *s = NULL;
    size_t len = 0, i, used = 0;
    int rc;

    rc = get_str(body, field, &s, &len, err);
    if (rc <= 0)
        return rc;
    for (i = 0; i < n; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (int)i;
            return 1;
        }
    }
    choices[0] = '\0';
    for (i = 0; i < n && used < sizeof(choices); i++) {
        const char *sep = i == 0 ? "" : (i + 1 == n ? " or " : ", ");

        used += (size_t)snprintf(choices + used, sizeof(choices) - used, "%s'%s'", sep, names[i]);
    }
    quote(s, len, shown);
    return st_error_set(err, ST_ERR_INVALID, "field '%s' must be %s, got '%s'", field, choices,
                        shown);
}
