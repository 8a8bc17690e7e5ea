#include "models/user.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/mem.h"

/* A quota limit a client may set: enough for any real cloud, far from overflow. */
#define USER_QUOTA_LIMIT_MAX 1000000000
/* In a decoded PATCH quota: the member was absent (leave it as it is). */
#define USER_QUOTA_UNCHANGED (-1)
/* In a decoded PATCH quota: the member was null (back to the configured default). */
#define USER_QUOTA_DEFAULT (-2)

/* Values quoted back in messages are cut to this many input bytes. */
#define USER_QUOTE_MAX 64
#define USER_QUOTE_BUF (USER_QUOTE_MAX * 4 + 4)

static const char *const user_status_names[] = {
    [USER_STATUS_ACTIVE] = "active",
    [USER_STATUS_DISABLED] = "disabled",
};

struct user_role_name {
    const char *name;
    unsigned bit;
};

static const struct user_role_name user_role_names[] = {
    {"user", USER_ROLE_USER},
    {"admin", USER_ROLE_ADMIN},
};

static const char *const user_create_fields[] = {"email", "password", "nickname", "roles"};
static const char *const user_patch_fields[] = {
    "nickname", "status", "roles", "quota", "password", "old_password",
};
static const char *const login_fields[] = {"email", "password"};
static const char *const user_quota_fields[] = {
    "max_vms",
    "max_vcpus",
    "max_memory_mib",
    "max_disk_gib",
};

void
user_list_release(struct user_list *list)
{
    if (!list)
        return;
    free(list->items);
    memset(list, 0, sizeof(*list));
}

void
api_key_list_release(struct api_key_list *list)
{
    if (!list)
        return;
    free(list->items);
    memset(list, 0, sizeof(*list));
}

void
audit_list_release(struct audit_list *list)
{
    if (!list)
        return;
    free(list->items);
    memset(list, 0, sizeof(*list));
}

const char *
user_status_name(enum user_status status)
{
    if ((size_t)status >= ST_ARRAY_LEN(user_status_names))
        return "unknown";
    return user_status_names[status];
}

int
user_status_parse(const char *name, enum user_status *out)
{
    size_t i;

    if (!name)
        return -1;
    for (i = 0; i < ST_ARRAY_LEN(user_status_names); i++) {
        if (strcmp(name, user_status_names[i]) == 0) {
            *out = (enum user_status)i;
            return 0;
        }
    }
    return -1;
}

json_t *
user_roles_to_json(unsigned roles)
{
    json_t *a = json_array();
    size_t i;

    if (!a)
        return NULL;
    for (i = 0; i < ST_ARRAY_LEN(user_role_names); i++) {
        /* Every user holds the user role, whatever the bits say. */
        if ((roles & user_role_names[i].bit) || user_role_names[i].bit == USER_ROLE_USER)
            json_array_append_new(a, json_string(user_role_names[i].name));
    }
    return a;
}

/*
 * Copy at most USER_QUOTE_MAX bytes of s[0..len) for use between single
 * quotes: printable ASCII passes, the quote, the backslash and every other
 * byte become "\xNN" (as the other models' messages do).
 */
static void
user_quote(const char *s, size_t len, char out[USER_QUOTE_BUF])
{
    size_t i, o = 0;

    for (i = 0; i < len && i < USER_QUOTE_MAX; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\')
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, USER_QUOTE_BUF - o, "\\x%02X", c);
    }
    if (i < len) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

static char
user_ascii_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/* Equal without regard to ASCII case (strcasecmp() would follow the locale). */
static bool
user_ascii_equal_nocase(const char *a, const char *b)
{
    for (; *a && *b; a++, b++) {
        if (user_ascii_lower(*a) != user_ascii_lower(*b))
            return false;
    }
    return *a == *b;
}

/* Borrow a string member; refuse other types and embedded NULs. */
static int
user_get_str(const json_t *body, const char *field, const char **s, struct st_error *err)
{
    const json_t *v = json_object_get(body, field);

    if (!v)
        return 0;
    if (!json_is_string(v))
        return st_error_set(err, ST_ERR_INVALID, "field '%s' must be a string", field);
    if (strlen(json_string_value(v)) != json_string_length(v))
        return st_error_set(err, ST_ERR_INVALID, "field '%s' must not contain NUL characters",
                            field);
    *s = json_string_value(v);
    return 1;
}

int
user_email_normalize(const char *field, const char *email, char out[ST_EMAIL_BUF],
                     struct st_error *err)
{
    char shown[USER_QUOTE_BUF];
    const char *at;
    size_t len, i;

    if (!email)
        return st_error_set(err, ST_ERR_INVALID, "field '%s' is required", field);
    len = strlen(email);
    if (len > ST_EMAIL_MAX)
        return st_error_set(err, ST_ERR_INVALID,
                            "field '%s' is too long: at most %d bytes, got %zu", field,
                            ST_EMAIL_MAX, len);
    user_quote(email, len, shown);
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)email[i];

        if (c == ' ')
            return st_error_set(err, ST_ERR_INVALID, "field '%s' must not contain spaces, got '%s'",
                                field, shown);
        if (c < 0x20 || c >= 0x7f)
            return st_error_set(err, ST_ERR_INVALID,
                                "field '%s' may hold only printable ASCII characters, got '%s'",
                                field, shown);
    }
    at = strchr(email, '@');
    if (len < 3 || !at || at == email || !at[1] || strchr(at + 1, '@'))
        return st_error_set(
            err, ST_ERR_INVALID,
            "field '%s' must be an e-mail address like 'name@example.com', got '%s'", field, shown);
    for (i = 0; i < len; i++)
        out[i] = user_ascii_lower(email[i]);
    out[len] = '\0';
    return 0;
}

int
user_password_check(const char *password, const char *email, struct st_error *err)
{
    size_t len = password ? strlen(password) : 0;

    if (len < ST_PASSWORD_MIN)
        return st_error_set(err, ST_ERR_INVALID,
                            "password must be at least %d characters long, got %zu",
                            ST_PASSWORD_MIN, len);
    if (len > ST_PASSWORD_MAX)
        return st_error_set(err, ST_ERR_INVALID, "password must be at most %d bytes long, got %zu",
                            ST_PASSWORD_MAX, len);
    /* NULL or "": the address is not known here; the caller checks it later. */
    if (email && email[0] && user_ascii_equal_nocase(password, email))
        return st_error_set(err, ST_ERR_INVALID, "password must not be the e-mail address");
    return 0;
}

/* A required e-mail member, lower-cased into @out. */
static int
user_get_email(const json_t *body, char out[ST_EMAIL_BUF], struct st_error *err)
{
    const char *s = NULL;
    int rc = user_get_str(body, "email", &s, err);

    if (rc < 0)
        return -1;
    if (!rc)
        return st_error_set(err, ST_ERR_INVALID, "field 'email' is required");
    return user_email_normalize("email", s, out, err);
}

/* A required password member of 1..ST_PASSWORD_MAX bytes; no policy here. */
static int
user_get_password(const json_t *body, const char *field, char out[ST_PASSWORD_BUF],
                  struct st_error *err)
{
    int rc = st_json_get_string(body, field, ST_PASSWORD_MAX, out, ST_PASSWORD_BUF, err);

    if (rc < 0)
        return -1;
    if (!rc)
        return st_error_set(err, ST_ERR_INVALID, "field '%s' is required", field);
    return 0;
}

/*
 * The nickname is shown to people: any UTF-8 text (jansson has checked the
 * encoding) of 1..64 bytes without C0 controls, DEL or C1 controls
 * (U+0080..U+009F, encoded C2 80..C2 9F), which could rewrite a terminal.
 */
static int
user_get_nickname(const json_t *body, char out[ST_NICKNAME_BUF], struct st_error *err)
{
    char nick[ST_NICKNAME_BUF];
    size_t i;
    int rc = st_json_get_string(body, "nickname", ST_NICKNAME_MAX, nick, sizeof(nick), err);

    if (rc <= 0)
        return rc;
    for (i = 0; nick[i]; i++) {
        unsigned char c = (unsigned char)nick[i];
        unsigned char next = (unsigned char)nick[i + 1];

        if (c < 0x20 || c == 0x7f || (c == 0xc2 && next >= 0x80 && next <= 0x9f))
            return st_error_set(
                err, ST_ERR_INVALID,
                "field 'nickname' must not contain control characters, got code 0x%02X at position %zu",
                c == 0xc2 ? next : c, i + 1);
    }
    memcpy(out, nick, sizeof(nick));
    return 1;
}

/* Role names to bits; USER_ROLE_USER is always set. */
static int
user_get_roles(const json_t *body, unsigned *out, struct st_error *err)
{
    const json_t *roles = json_object_get(body, "roles");
    char shown[USER_QUOTE_BUF];
    unsigned seen = 0;
    size_t i, r;

    if (!roles)
        return 0;
    if (!json_is_array(roles))
        return st_error_set(err, ST_ERR_INVALID,
                            "field 'roles' must be an array of role names ('user', 'admin')");
    for (i = 0; i < json_array_size(roles); i++) {
        const json_t *v = json_array_get(roles, i);

        if (!json_is_string(v))
            return st_error_set(
                err, ST_ERR_INVALID,
                "field 'roles' must hold only role names, but item %zu is not a string", i + 1);
        for (r = 0; r < ST_ARRAY_LEN(user_role_names); r++) {
            if (strcmp(json_string_value(v), user_role_names[r].name) == 0 &&
                strlen(user_role_names[r].name) == json_string_length(v))
                break;
        }
        user_quote(json_string_value(v), json_string_length(v), shown);
        if (r == ST_ARRAY_LEN(user_role_names))
            return st_error_set(
                err, ST_ERR_INVALID,
                "field 'roles' has unknown role '%s': the roles are 'user' and 'admin'", shown);
        if (seen & user_role_names[r].bit)
            return st_error_set(err, ST_ERR_INVALID, "field 'roles' names role '%s' twice", shown);
        seen |= user_role_names[r].bit;
    }
    *out = seen | USER_ROLE_USER;
    return 1;
}

/* One member of a PATCH quota: a limit, null (the default) or absent (unchanged). */
static int
user_get_quota_limit(const json_t *quota, const char *field, int64_t *out, struct st_error *err)
{
    const json_t *v = json_object_get(quota, field);
    json_int_t n;

    if (!v) {
        *out = USER_QUOTA_UNCHANGED;
        return 0;
    }
    if (json_is_null(v)) {
        *out = USER_QUOTA_DEFAULT;
        return 0;
    }
    if (!json_is_integer(v))
        return st_error_set(err, ST_ERR_INVALID,
                            "field 'quota.%s' must be an integer, or null for the default", field);
    n = json_integer_value(v);
    if (n < 0 || n > USER_QUOTA_LIMIT_MAX)
        return st_error_set(
            err, ST_ERR_INVALID,
            "field 'quota.%s' must be between 0 and %d, or null for the default, got %" JSON_INTEGER_FORMAT,
            field, USER_QUOTA_LIMIT_MAX, n);
    *out = (int64_t)n;
    return 0;
}

static int
user_get_quota(const json_t *body, struct quota *out, struct st_error *err)
{
    const json_t *q = json_object_get(body, "quota");
    struct quota quota;

    if (!q)
        return 0;
    if (!json_is_object(q))
        return st_error_set(err, ST_ERR_INVALID, "field 'quota' must be an object");
    if (st_json_check_object(q, user_quota_fields, ST_ARRAY_LEN(user_quota_fields), err) < 0) {
        st_error_prefix(err, "field 'quota'");
        return -1;
    }
    if (json_object_size(q) == 0)
        return st_error_set(
            err, ST_ERR_INVALID,
            "field 'quota' must name at least one of 'max_vms', 'max_vcpus', 'max_memory_mib' or 'max_disk_gib'");
    if (user_get_quota_limit(q, "max_vms", &quota.max_vms, err) < 0 ||
        user_get_quota_limit(q, "max_vcpus", &quota.max_vcpus, err) < 0 ||
        user_get_quota_limit(q, "max_memory_mib", &quota.max_memory_mib, err) < 0 ||
        user_get_quota_limit(q, "max_disk_gib", &quota.max_disk_gib, err) < 0)
        return -1;
    *out = quota;
    return 1;
}

int
user_create_req_decode(const json_t *body, struct user_create_req *out, struct st_error *err)
{
    struct user_create_req req;
    int rc;

    memset(&req, 0, sizeof(req));
    if (st_json_check_object(body, user_create_fields, ST_ARRAY_LEN(user_create_fields), err) < 0)
        return -1;
    if (user_get_email(body, req.email, err) < 0 ||
        user_get_password(body, "password", req.password, err) < 0 ||
        user_password_check(req.password, req.email, err) < 0)
        return -1;
    if (user_get_nickname(body, req.nickname, err) < 0)
        return -1;
    if ((rc = user_get_roles(body, &req.roles, err)) < 0)
        return -1;
    req.has_roles = rc > 0;
    if (!req.has_roles)
        req.roles = USER_ROLE_USER;
    *out = req;
    return 0;
}

int
user_patch_req_decode(const json_t *body, struct user_patch_req *out, struct st_error *err)
{
    struct user_patch_req req;
    int rc, status = 0;

    memset(&req, 0, sizeof(req));
    req.quota.max_vms = req.quota.max_vcpus = USER_QUOTA_UNCHANGED;
    req.quota.max_memory_mib = req.quota.max_disk_gib = USER_QUOTA_UNCHANGED;
    if (st_json_check_object(body, user_patch_fields, ST_ARRAY_LEN(user_patch_fields), err) < 0)
        return -1;
    if ((rc = user_get_nickname(body, req.nickname, err)) < 0)
        return -1;
    req.has_nickname = rc > 0;
    if ((rc = st_json_get_enum(body, "status", user_status_names, ST_ARRAY_LEN(user_status_names),
                               &status, err)) < 0)
        return -1;
    req.has_status = rc > 0;
    req.status = (enum user_status)status;
    if ((rc = user_get_roles(body, &req.roles, err)) < 0)
        return -1;
    req.has_roles = rc > 0;
    if ((rc = user_get_quota(body, &req.quota, err)) < 0)
        return -1;
    req.has_quota = rc > 0;
    req.has_password = json_object_get(body, "password") != NULL;
    /* The e-mail rule needs the stored address: the service checks it. */
    if (req.has_password && (user_get_password(body, "password", req.password, err) < 0 ||
                             user_password_check(req.password, NULL, err) < 0))
        return -1;
    if (json_object_get(body, "old_password")) {
        if (!req.has_password)
            return st_error_set(err, ST_ERR_INVALID,
                                "field 'old_password' is only accepted together with 'password'");
        if (user_get_password(body, "old_password", req.old_password, err) < 0)
            return -1;
    }
    if (!req.has_nickname && !req.has_status && !req.has_roles && !req.has_quota &&
        !req.has_password)
        return st_error_set(
            err, ST_ERR_INVALID,
            "the body must name at least one of 'nickname', 'status', 'roles', 'quota' or 'password'");
    *out = req;
    return 0;
}

int
login_req_decode(const json_t *body, struct login_req *out, struct st_error *err)
{
    struct login_req req;

    memset(&req, 0, sizeof(req));
    if (st_json_check_object(body, login_fields, ST_ARRAY_LEN(login_fields), err) < 0)
        return -1;
    if (user_get_email(body, req.email, err) < 0 ||
        user_get_password(body, "password", req.password, err) < 0)
        return -1;
    *out = req;
    return 0;
}

struct quota
quota_effective(const struct quota *own, const struct quota *defaults)
{
    struct quota q;

    q.max_vms = own->max_vms >= 0 ? own->max_vms : defaults->max_vms;
    q.max_vcpus = own->max_vcpus >= 0 ? own->max_vcpus : defaults->max_vcpus;
    q.max_memory_mib = own->max_memory_mib >= 0 ? own->max_memory_mib : defaults->max_memory_mib;
    q.max_disk_gib = own->max_disk_gib >= 0 ? own->max_disk_gib : defaults->max_disk_gib;
    return q;
}

/* in_use + requested > limit, without the sum ever overflowing. */
static bool
quota_exceeds(int64_t limit, uint64_t in_use, uint64_t requested)
{
    uint64_t cap;

    if (limit < 0)
        return false;
    cap = (uint64_t)limit;
    return in_use > cap || requested > cap - in_use;
}

bool
quota_allows(const struct quota *limits, const struct quota_usage *usage, unsigned vcpus,
             unsigned memory_mib, unsigned disk_gib, struct quota_violation *v)
{
    const struct quota_violation checks[] = {
        {"max_vms", limits->max_vms, usage->vms, 1},
        {"max_vcpus", limits->max_vcpus, usage->vcpus, vcpus},
        {"max_memory_mib", limits->max_memory_mib, usage->memory_mib, memory_mib},
        {"max_disk_gib", limits->max_disk_gib, usage->disk_gib, disk_gib},
    };
    size_t i;

    for (i = 0; i < ST_ARRAY_LEN(checks); i++) {
        if (quota_exceeds(checks[i].limit, checks[i].in_use, checks[i].requested)) {
            if (v)
                *v = checks[i];
            return false;
        }
    }
    if (v)
        memset(v, 0, sizeof(*v));
    return true;
}

/*
 * Stored text may have been cut inside a UTF-8 sequence, which jansson
 * refuses; show its ASCII part rather than lose the whole object.
 */
static json_t *
user_text_to_json(const char *s)
{
    char ascii[ST_AUDIT_ROUTE_BUF];
    json_t *j = json_string(s);
    size_t i;

    if (j)
        return j;
    for (i = 0; s[i] && i + 1 < sizeof(ascii); i++)
        ascii[i] = ((unsigned char)s[i] < 0x80) ? s[i] : '?';
    ascii[i] = '\0';
    return json_string(ascii);
}

/* "" becomes null. */
static json_t *
user_optional_to_json(const char *s)
{
    return s[0] ? user_text_to_json(s) : json_null();
}

static json_t *
user_limit_to_json(int64_t limit)
{
    return limit < 0 ? json_null() : json_integer((json_int_t)limit);
}

static json_int_t
user_count_to_json_int(uint64_t n)
{
    return n > (uint64_t)INT64_MAX ? (json_int_t)INT64_MAX : (json_int_t)n;
}

json_t *
quota_to_json(const struct quota *q)
{
    return json_pack("{s:o, s:o, s:o, s:o}", "max_vms", user_limit_to_json(q->max_vms), "max_vcpus",
                     user_limit_to_json(q->max_vcpus), "max_memory_mib",
                     user_limit_to_json(q->max_memory_mib), "max_disk_gib",
                     user_limit_to_json(q->max_disk_gib));
}

json_t *
quota_usage_to_json(const struct quota_usage *u)
{
    return json_pack("{s:I, s:I, s:I, s:I}", "vms", user_count_to_json_int(u->vms), "vcpus",
                     user_count_to_json_int(u->vcpus), "memory_mib",
                     user_count_to_json_int(u->memory_mib), "disk_gib",
                     user_count_to_json_int(u->disk_gib));
}

json_t *
user_to_json(const struct user *user, const struct quota *effective)
{
    json_t *doc;
    char created[ST_TIME_BUF], updated[ST_TIME_BUF];

    st_time_format(user->created_at, created);
    st_time_format(user->updated_at, updated);
    /* password_hash stays out, whoever asks. */
    doc = json_pack("{s:s, s:o, s:o, s:s, s:o, s:o, s:s, s:s}", "id", user->id, "email",
                    user_text_to_json(user->email), "nickname",
                    user_optional_to_json(user->nickname), "status", user_status_name(user->status),
                    "roles", user_roles_to_json(user->roles), "quota",
                    quota_to_json(effective ? effective : &user->quota), "created_at", created,
                    "updated_at", updated);
    json_object_set_new(doc, "revision", json_integer((json_int_t)user->revision));
    return doc;
}

json_t *
api_key_to_json(const struct api_key *key)
{
    char created[ST_TIME_BUF], used[ST_TIME_BUF];

    st_time_format(key->created_at, created);
    st_time_format(key->last_used_at, used);
    /* Only the prefix identifies the key to its owner; the hash stays in the store. */
    return json_pack("{s:s, s:o, s:s, s:s, s:o}", "id", key->id, "name",
                     user_text_to_json(key->name), "prefix", key->prefix, "created_at", created,
                     "last_used_at", key->last_used_at ? json_string(used) : json_null());
}

json_t *
audit_entry_to_json(const struct audit_entry *e)
{
    char at[ST_TIME_BUF];

    st_time_format(e->at, at);
    return json_pack(
        "{s:s, s:I, s:s, s:o, s:o, s:o, s:o, s:i, s:o, s:o, s:o, s:s}", "id", e->id, "seq",
        (json_int_t)e->seq, "at", at, "user_id", user_optional_to_json(e->user_id), "method",
        user_text_to_json(e->method), "route", user_text_to_json(e->route), "target_id",
        user_optional_to_json(e->target_id), "status", e->status, "request_id",
        user_text_to_json(e->request_id), "client_addr", user_text_to_json(e->client_addr),
        "prev_hash", user_optional_to_json(e->prev_hash), "hash", e->hash);
}
