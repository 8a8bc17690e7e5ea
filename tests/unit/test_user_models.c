/*
 * test_user_models.c - users, API keys, quotas and audit entries: request
 * decoding, the e-mail and password rules, quota arithmetic, encoders.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "models/user.h"
#include "util/mem.h"

#define UID "11111111-2222-4333-8444-555555555555"
#define KEYID "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
#define T0 1700000000000LL
#define T1 1700000001000LL
#define PW "correct horse battery"
#define OK_CREATE_PREFIX "{\"email\":\"Ann@Example.COM\",\"password\":\"" PW "\""

enum kind { K_CREATE, K_PATCH, K_LOGIN };

union any_req {
    struct user_create_req create;
    struct user_patch_req patch;
    struct login_req login;
};

struct bad_case {
    enum kind kind;
    const char *json;
    size_t flags;
    const char *frag;
};

static const struct bad_case bad_cases[] = {
    /* bodies and unknown members */
    {K_CREATE, "[]", 0, "request body must be a JSON object"},
    {K_PATCH, "null", 0, "request body must be a JSON object"},
    {K_LOGIN, "\"x\"", 0, "request body must be a JSON object"},
    {K_CREATE, OK_CREATE_PREFIX ",\"admin\":true}", 0, "unknown field 'admin'"},
    {K_CREATE, OK_CREATE_PREFIX ",\"password_hash\":\"x\"}", 0, "unknown field 'password_hash'"},
    {K_CREATE, OK_CREATE_PREFIX ",\"status\":\"active\"}", 0, "unknown field 'status'"},
    {K_PATCH, "{\"email\":\"a@b.c\"}", 0, "unknown field 'email'"},
    {K_PATCH, "{\"id\":\"" UID "\"}", 0, "unknown field 'id'"},
    {K_LOGIN, "{\"email\":\"a@b.c\",\"password\":\"x\",\"otp\":\"1\"}", 0, "unknown field 'otp'"},
    /* e-mail */
    {K_CREATE, "{\"password\":\"" PW "\"}", 0, "field 'email' is required"},
    {K_CREATE, "{\"email\":null,\"password\":\"" PW "\"}", 0, "field 'email' must be a string"},
    {K_CREATE, "{\"email\":42,\"password\":\"" PW "\"}", 0, "field 'email' must be a string"},
    {K_CREATE, "{\"email\":[\"a@b.c\"],\"password\":\"" PW "\"}", 0,
     "field 'email' must be a string"},
    {K_CREATE, "{\"email\":\"a\",\"password\":\"" PW "\"}", 0,
     "field 'email' must be an e-mail address like 'name@example.com', got 'a'"},
    {K_CREATE, "{\"email\":\"a@\",\"password\":\"" PW "\"}", 0, "got 'a@'"},
    {K_CREATE, "{\"email\":\"@b\",\"password\":\"" PW "\"}", 0, "got '@b'"},
    {K_CREATE, "{\"email\":\"@bc\",\"password\":\"" PW "\"}", 0, "got '@bc'"},
    {K_CREATE, "{\"email\":\"ab@\",\"password\":\"" PW "\"}", 0, "got 'ab@'"},
    {K_CREATE, "{\"email\":\"a@b@c\",\"password\":\"" PW "\"}", 0, "got 'a@b@c'"},
    {K_CREATE, "{\"email\":\"abc\",\"password\":\"" PW "\"}", 0, "must be an e-mail address"},
    {K_CREATE, "{\"email\":\"\",\"password\":\"" PW "\"}", 0, "must be an e-mail address"},
    {K_CREATE, "{\"email\":\"a b@c\",\"password\":\"" PW "\"}", 0,
     "field 'email' must not contain spaces, got 'a b@c'"},
    {K_CREATE, "{\"email\":\"a\\tb@c\",\"password\":\"" PW "\"}", 0,
     "field 'email' may hold only printable ASCII characters, got 'a\\x09b@c'"},
    {K_CREATE, "{\"email\":\"\\u00e9@c.d\",\"password\":\"" PW "\"}", 0, "got '\\xC3\\xA9@c.d'"},
    {K_CREATE, "{\"email\":\"it's\",\"password\":\"" PW "\"}", 0,
     "field 'email' must be an e-mail address like 'name@example.com', got 'it\\x27s'"},
    {K_CREATE, "{\"email\":\"a\\u0000@b.c\",\"password\":\"" PW "\"}", JSON_ALLOW_NUL,
     "field 'email' must not contain NUL characters"},
    {K_LOGIN, "{\"email\":\"nobody\",\"password\":\"x\"}", 0, "got 'nobody'"},
    {K_LOGIN, "{\"password\":\"x\"}", 0, "field 'email' is required"},
    /* password */
    {K_CREATE, "{\"email\":\"a@b.c\"}", 0, "field 'password' is required"},
    {K_CREATE, "{\"email\":\"a@b.c\",\"password\":\"\"}", 0, "field 'password' must not be empty"},
    {K_CREATE, "{\"email\":\"a@b.c\",\"password\":123456789012}", 0,
     "field 'password' must be a string"},
    {K_CREATE, "{\"email\":\"a@b.c\",\"password\":\"123456789\"}", 0,
     "password must be at least 10 characters long, got 9"},
    {K_CREATE, "{\"email\":\"ann@example.com\",\"password\":\"ANN@Example.com\"}", 0,
     "password must not be the e-mail address"},
    {K_CREATE, "{\"email\":\"ANN@example.com\",\"password\":\"ann@example.com\"}", 0,
     "password must not be the e-mail address"},
    {K_CREATE, "{\"email\":\"a@b.c\",\"password\":\"abc\\u0000defghijkl\"}", JSON_ALLOW_NUL,
     "field 'password' must not contain NUL characters"},
    {K_LOGIN, "{\"email\":\"a@b.c\"}", 0, "field 'password' is required"},
    {K_LOGIN, "{\"email\":\"a@b.c\",\"password\":\"\"}", 0, "field 'password' must not be empty"},
    {K_LOGIN, "{\"email\":\"a@b.c\",\"password\":false}", 0, "field 'password' must be a string"},
    /* nickname */
    {K_CREATE, OK_CREATE_PREFIX ",\"nickname\":\"\"}", 0, "field 'nickname' must not be empty"},
    {K_CREATE, OK_CREATE_PREFIX ",\"nickname\":7}", 0, "field 'nickname' must be a string"},
    {K_CREATE, OK_CREATE_PREFIX ",\"nickname\":\"a\\nb\"}", 0,
     "field 'nickname' must not contain control characters, got code 0x0A at position 2"},
    {K_CREATE, OK_CREATE_PREFIX ",\"nickname\":\"a\\u007f\"}", 0, "got code 0x7F at position 2"},
    {K_CREATE, OK_CREATE_PREFIX ",\"nickname\":\"x\\u009b31m\"}", 0, "got code 0x9B at position 2"},
    {K_PATCH, "{\"nickname\":\"\\u001b[2J\"}", 0, "got code 0x1B at position 1"},
    {K_PATCH, "{\"nickname\":null}", 0, "field 'nickname' must be a string"},
    /* roles */
    {K_CREATE, OK_CREATE_PREFIX ",\"roles\":\"admin\"}", 0,
     "field 'roles' must be an array of role names ('user', 'admin')"},
    {K_CREATE, OK_CREATE_PREFIX ",\"roles\":{}}", 0, "field 'roles' must be an array"},
    {K_CREATE, OK_CREATE_PREFIX ",\"roles\":[\"root\"]}", 0,
     "field 'roles' has unknown role 'root': the roles are 'user' and 'admin'"},
    {K_CREATE, OK_CREATE_PREFIX ",\"roles\":[\"Admin\"]}", 0, "has unknown role 'Admin'"},
    {K_CREATE, OK_CREATE_PREFIX ",\"roles\":[\"admin\\u0000x\"]}", JSON_ALLOW_NUL,
     "has unknown role 'admin\\x00x'"},
    {K_CREATE, OK_CREATE_PREFIX ",\"roles\":[\"admin\",\"admin\"]}", 0,
     "field 'roles' names role 'admin' twice"},
    {K_CREATE, OK_CREATE_PREFIX ",\"roles\":[\"user\",\"user\"]}", 0, "names role 'user' twice"},
    {K_CREATE, OK_CREATE_PREFIX ",\"roles\":[\"user\",1]}", 0,
     "field 'roles' must hold only role names, but item 2 is not a string"},
    {K_PATCH, "{\"roles\":[null]}", 0, "item 1 is not a string"},
    /* patch: status */
    {K_PATCH, "{\"status\":\"deleted\"}", 0,
     "field 'status' must be 'active' or 'disabled', got 'deleted'"},
    {K_PATCH, "{\"status\":true}", 0, "field 'status' must be a string"},
    /* patch: quota */
    {K_PATCH, "{\"quota\":5}", 0, "field 'quota' must be an object"},
    {K_PATCH, "{\"quota\":null}", 0, "field 'quota' must be an object"},
    {K_PATCH, "{\"quota\":{}}", 0,
     "field 'quota' must name at least one of 'max_vms', 'max_vcpus', 'max_memory_mib' or "
     "'max_disk_gib'"},
    {K_PATCH, "{\"quota\":{\"max_gpus\":1}}", 0, "field 'quota': unknown field 'max_gpus'"},
    {K_PATCH, "{\"quota\":{\"max_vms\":-1}}", 0,
     "field 'quota.max_vms' must be between 0 and 1000000000, or null for the default, got -1"},
    {K_PATCH, "{\"quota\":{\"max_vcpus\":1000000001}}", 0,
     "field 'quota.max_vcpus' must be between 0 and 1000000000"},
    {K_PATCH, "{\"quota\":{\"max_memory_mib\":1.5}}", 0,
     "field 'quota.max_memory_mib' must be an integer, or null for the default"},
    {K_PATCH, "{\"quota\":{\"max_disk_gib\":\"10\"}}", 0, "field 'quota.max_disk_gib' must be"},
    {K_PATCH, "{\"quota\":{\"max_vms\":9223372036854775807}}", 0, "got 9223372036854775807"},
    /* patch: passwords and emptiness */
    {K_PATCH, "{}", 0,
     "the body must name at least one of 'nickname', 'status', 'roles', 'quota' or 'password'"},
    {K_PATCH, "{\"old_password\":\"" PW "\"}", 0,
     "field 'old_password' is only accepted together with 'password'"},
    {K_PATCH, "{\"nickname\":\"x\",\"old_password\":\"" PW "\"}", 0,
     "field 'old_password' is only accepted together with 'password'"},
    {K_PATCH, "{\"password\":\"short\"}", 0, "password must be at least 10 characters long, got 5"},
    {K_PATCH, "{\"password\":null}", 0, "field 'password' must be a string"},
    {K_PATCH, "{\"password\":\"" PW "\",\"old_password\":\"\"}", 0,
     "field 'old_password' must not be empty"},
    {K_PATCH, "{\"password\":\"" PW "\",\"old_password\":1}", 0,
     "field 'old_password' must be a string"},
};

static json_t *
load(const char *text, size_t flags)
{
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_DECODE_ANY | flags, &jerr);

    if (!j)
        fail_msg("test body does not parse: %s: %s", jerr.text, text);
    return j;
}

static int
decode(enum kind kind, const json_t *body, union any_req *out, struct st_error *err)
{
    switch (kind) {
    case K_CREATE:
        return user_create_req_decode(body, &out->create, err);
    case K_PATCH:
        return user_patch_req_decode(body, &out->patch, err);
    case K_LOGIN:
        return login_req_decode(body, &out->login, err);
    }
    return -1;
}

static void
expect_bad(enum kind kind, const char *text, size_t flags, const char *frag)
{
    union any_req out, pristine;
    struct st_error err;
    json_t *body = load(text, flags);
    int rc;

    memset(&out, 0xAB, sizeof(out));
    memcpy(&pristine, &out, sizeof(out));
    st_error_clear(&err);
    rc = decode(kind, body, &out, &err);
    json_decref(body);
    if (rc != -1 || err.code != ST_ERR_INVALID || !strstr(err.msg, frag))
        fail_msg("body %.200s\n  rc=%d code=%s msg=\"%s\"\n  wanted a message with \"%s\"", text,
                 rc, st_err_code_name(err.code), err.msg, frag);
    assert_memory_equal(&out, &pristine, sizeof(out));
}

static void
expect_good(enum kind kind, const char *text, union any_req *out)
{
    struct st_error err;
    json_t *body = load(text, 0);
    int rc;

    st_error_clear(&err);
    memset(out, 0xAB, sizeof(*out));
    rc = decode(kind, body, out, &err);
    json_decref(body);
    if (rc != 0)
        fail_msg("body %.200s refused: %s", text, err.msg);
}

/* {"<before><n copies of c><after>} */
static char *
body_with_long(const char *before, char c, size_t n, const char *after)
{
    char *run = st_xcalloc(n + 1, 1);
    char *s;

    memset(run, c, n);
    s = st_xasprintf("%s%s%s", before, run, after);
    free(run);
    return s;
}

static void
test_user_models__bad_bodies_are_refused_with_precise_messages(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < ST_ARRAY_LEN(bad_cases); i++)
        expect_bad(bad_cases[i].kind, bad_cases[i].json, bad_cases[i].flags, bad_cases[i].frag);
}

static void
test_user_models__long_values_are_refused(void **state)
{
    char *text;

    (void)state;
    /* 300 bytes of address: refused by length, not quoted back in full. */
    text = body_with_long("{\"email\":\"a@", 'b', 298, "\",\"password\":\"" PW "\"}");
    expect_bad(K_CREATE, text, 0, "field 'email' is too long: at most 254 bytes, got 300");
    free(text);
    /* 254 bytes is fine. */
    text = body_with_long("{\"email\":\"a@", 'b', 252, "\",\"password\":\"" PW "\"}");
    {
        union any_req out;

        expect_good(K_CREATE, text, &out);
        assert_int_equal(strlen(out.create.email), 254);
    }
    free(text);
    text = body_with_long("{\"email\":\"a@b.c\",\"password\":\"", 'p', 1025, "\"}");
    expect_bad(K_CREATE, text, 0, "field 'password' is too long: at most 1024 bytes, got 1025");
    expect_bad(K_LOGIN, text, 0, "field 'password' is too long: at most 1024 bytes, got 1025");
    free(text);
    text = body_with_long("{\"password\":\"", 'p', 1025, "\"}");
    expect_bad(K_PATCH, text, 0, "field 'password' is too long");
    free(text);
    text = body_with_long(OK_CREATE_PREFIX ",\"nickname\":\"", 'n', 65, "\"}");
    expect_bad(K_CREATE, text, 0, "field 'nickname' is too long: at most 64 bytes, got 65");
    free(text);
    text = body_with_long(OK_CREATE_PREFIX ",\"roles\":[\"", 'r', 5000, "\"]}");
    expect_bad(K_CREATE, text, 0, "has unknown role 'rrrr");
    {
        struct st_error err;
        struct user_create_req req;
        json_t *body = load(text, 0);

        st_error_clear(&err);
        assert_int_equal(user_create_req_decode(body, &req, &err), -1);
        json_decref(body);
        assert_true(strlen(err.msg) < 200);
    }
    free(text);
}

static void
test_user_models__create_normalizes_and_fills_defaults(void **state)
{
    union any_req out;
    char *text;

    (void)state;
    expect_good(K_CREATE, OK_CREATE_PREFIX "}", &out);
    assert_string_equal(out.create.email, "ann@example.com");
    assert_string_equal(out.create.password, PW);
    assert_string_equal(out.create.nickname, "");
    assert_false(out.create.has_roles);
    assert_int_equal(out.create.roles, USER_ROLE_USER);

    expect_good(K_CREATE,
                OK_CREATE_PREFIX ",\"nickname\":\"Zo\\u00eb \\ud83d\\ude80\",\"roles\":[]}", &out);
    assert_string_equal(out.create.nickname, "Zo\xc3\xab \xf0\x9f\x9a\x80");
    assert_true(out.create.has_roles);
    assert_int_equal(out.create.roles, USER_ROLE_USER);

    expect_good(K_CREATE, OK_CREATE_PREFIX ",\"roles\":[\"admin\"]}", &out);
    assert_int_equal(out.create.roles, USER_ROLE_USER | USER_ROLE_ADMIN);
    expect_good(K_CREATE, OK_CREATE_PREFIX ",\"roles\":[\"user\",\"admin\"]}", &out);
    assert_int_equal(out.create.roles, USER_ROLE_USER | USER_ROLE_ADMIN);

    /* Exactly ten and exactly 1024 bytes are allowed; so is any byte. */
    expect_good(K_CREATE, "{\"email\":\"a@b.c\",\"password\":\"0123456789\"}", &out);
    text = body_with_long("{\"email\":\"a@b.c\",\"password\":\"", 'p', 1024, "\"}");
    expect_good(K_CREATE, text, &out);
    assert_int_equal(strlen(out.create.password), 1024);
    free(text);
    expect_good(K_CREATE,
                "{\"email\":\"a@b.c\",\"password\":\"\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\"}", &out);
    /* The address is compared whole: containing it is fine. */
    expect_good(K_CREATE, "{\"email\":\"ann@example.com\",\"password\":\"ann@example.com!\"}",
                &out);
    expect_good(K_CREATE, "{\"email\":\"O'Brien@c.d\",\"password\":\"" PW "\"}", &out);
    assert_string_equal(out.create.email, "o'brien@c.d");
    /* The shortest address. */
    expect_good(K_CREATE, "{\"email\":\"A@B\",\"password\":\"" PW "\"}", &out);
    assert_string_equal(out.create.email, "a@b");
}

static void
test_user_models__login_lowers_email_without_policy(void **state)
{
    union any_req out;

    (void)state;
    expect_good(K_LOGIN, "{\"email\":\"Bob@EXAMPLE.org\",\"password\":\"x\"}", &out);
    assert_string_equal(out.login.email, "bob@example.org");
    assert_string_equal(out.login.password, "x");
    /* The policy is for new passwords; an old one may still be the address. */
    expect_good(K_LOGIN, "{\"email\":\"bob@example.org\",\"password\":\"bob@example.org\"}", &out);
}

static void
test_user_models__patch_takes_any_subset(void **state)
{
    union any_req out;

    (void)state;
    expect_good(K_PATCH, "{\"nickname\":\"Ann\"}", &out);
    assert_true(out.patch.has_nickname);
    assert_false(out.patch.has_status || out.patch.has_roles || out.patch.has_quota ||
                 out.patch.has_password);
    assert_string_equal(out.patch.nickname, "Ann");

    expect_good(K_PATCH, "{\"status\":\"disabled\"}", &out);
    assert_true(out.patch.has_status);
    assert_int_equal(out.patch.status, USER_STATUS_DISABLED);
    expect_good(K_PATCH, "{\"status\":\"active\",\"roles\":[\"admin\"]}", &out);
    assert_int_equal(out.patch.status, USER_STATUS_ACTIVE);
    assert_true(out.patch.has_roles);
    assert_int_equal(out.patch.roles, USER_ROLE_USER | USER_ROLE_ADMIN);
    expect_good(K_PATCH, "{\"roles\":[]}", &out);
    assert_int_equal(out.patch.roles, USER_ROLE_USER);

    expect_good(K_PATCH, "{\"password\":\"" PW "\"}", &out);
    assert_true(out.patch.has_password);
    assert_string_equal(out.patch.password, PW);
    assert_string_equal(out.patch.old_password, "");
    expect_good(K_PATCH, "{\"password\":\"" PW "\",\"old_password\":\"x\"}", &out);
    assert_string_equal(out.patch.old_password, "x");
}

static void
test_user_models__patch_quota_null_means_default(void **state)
{
    union any_req out;

    (void)state;
    expect_good(K_PATCH,
                "{\"quota\":{\"max_vms\":null,\"max_vcpus\":0,\"max_disk_gib\":1000000000}}", &out);
    assert_true(out.patch.has_quota);
    assert_false(out.patch.has_nickname);
    assert_int_equal(out.patch.quota.max_vms, -2);
    assert_int_equal(out.patch.quota.max_vcpus, 0);
    /* Absent: left as it is, distinct from null. */
    assert_int_equal(out.patch.quota.max_memory_mib, -1);
    assert_int_equal(out.patch.quota.max_disk_gib, 1000000000);
    expect_good(K_PATCH, "{\"quota\":{\"max_memory_mib\":4096}}", &out);
    assert_int_equal(out.patch.quota.max_memory_mib, 4096);
    assert_int_equal(out.patch.quota.max_vms, -1);
}

static void
test_user_models__email_and_password_rules(void **state)
{
    char out[ST_EMAIL_BUF];
    struct st_error err;

    (void)state;
    st_error_clear(&err);
    assert_int_equal(user_email_normalize("owner", "X.Y+tag@Sub.Example.NET", out, &err), 0);
    assert_string_equal(out, "x.y+tag@sub.example.net");
    strcpy(out, "untouched");
    assert_int_equal(user_email_normalize("owner", "nope", out, &err), -1);
    assert_int_equal(err.code, ST_ERR_INVALID);
    assert_non_null(strstr(err.msg, "field 'owner' must be an e-mail address"));
    assert_string_equal(out, "untouched");
    assert_int_equal(user_email_normalize("owner", NULL, out, &err), -1);
    assert_non_null(strstr(err.msg, "field 'owner' is required"));

    assert_int_equal(user_password_check("0123456789", "a@b.c", &err), 0);
    assert_int_equal(user_password_check("012345678", "a@b.c", &err), -1);
    assert_non_null(strstr(err.msg, "password must be at least 10 characters long"));
    assert_int_equal(user_password_check("LongEnough@Example.org", "longenough@example.org", &err),
                     -1);
    assert_int_equal(err.code, ST_ERR_INVALID);
    assert_non_null(strstr(err.msg, "password must not be the e-mail address"));
    {
        char *big = st_xcalloc(ST_PASSWORD_MAX + 2, 1);

        memset(big, 'p', ST_PASSWORD_MAX + 1);
        assert_int_equal(user_password_check(big, "a@b.c", &err), -1);
        assert_non_null(strstr(err.msg, "password must be at most 1024 bytes long, got 1025"));
        big[ST_PASSWORD_MAX] = '\0';
        assert_int_equal(user_password_check(big, "a@b.c", &err), 0);
        free(big);
    }
    assert_int_equal(user_password_check(NULL, "a@b.c", &err), -1);
}

static void
test_user_models__quota_effective_prefers_own_limits(void **state)
{
    struct quota own = {.max_vms = 3, .max_vcpus = -1, .max_memory_mib = 0, .max_disk_gib = -2};
    struct quota defaults = {
        .max_vms = 10, .max_vcpus = 20, .max_memory_mib = 4096, .max_disk_gib = -1};
    struct quota q;

    (void)state;
    q = quota_effective(&own, &defaults);
    assert_int_equal(q.max_vms, 3);
    assert_int_equal(q.max_vcpus, 20);
    /* 0 is a limit (nothing allowed), not "unset". */
    assert_int_equal(q.max_memory_mib, 0);
    assert_int_equal(q.max_disk_gib, -1);
}

static void
test_user_models__quota_allows_up_to_the_limit(void **state)
{
    struct quota limits = {
        .max_vms = 2, .max_vcpus = 8, .max_memory_mib = 8192, .max_disk_gib = 100};
    struct quota unlimited = {-1, -1, -1, -1};
    struct quota_usage usage = {.vms = 1, .vcpus = 6, .memory_mib = 4096, .disk_gib = 90};
    struct quota_violation v;

    (void)state;
    memset(&v, 0xAB, sizeof(v));
    /* Exactly at every limit. */
    assert_true(quota_allows(&limits, &usage, 2, 4096, 10, &v));
    assert_null(v.quota);

    assert_false(quota_allows(&limits, &usage, 3, 1024, 1, &v));
    assert_string_equal(v.quota, "max_vcpus");
    assert_int_equal(v.limit, 8);
    assert_int_equal(v.in_use, 6);
    assert_int_equal(v.requested, 3);

    assert_false(quota_allows(&limits, &usage, 1, 4097, 1, &v));
    assert_string_equal(v.quota, "max_memory_mib");
    assert_int_equal(v.limit, 8192);
    assert_int_equal(v.in_use, 4096);
    assert_int_equal(v.requested, 4097);

    assert_false(quota_allows(&limits, &usage, 1, 16, 11, &v));
    assert_string_equal(v.quota, "max_disk_gib");
    assert_int_equal(v.requested, 11);

    /* The VM count comes first, whatever else is over. */
    usage.vms = 2;
    assert_false(quota_allows(&limits, &usage, 100, 100000, 1000, &v));
    assert_string_equal(v.quota, "max_vms");
    assert_int_equal(v.limit, 2);
    assert_int_equal(v.in_use, 2);
    assert_int_equal(v.requested, 1);

    assert_true(quota_allows(&unlimited, &usage, 128, 4u << 20, 65536, &v));
    assert_null(v.quota);

    /* A zero limit allows nothing. */
    limits.max_vms = 0;
    usage.vms = 0;
    assert_false(quota_allows(&limits, &usage, 1, 16, 1, &v));
    assert_string_equal(v.quota, "max_vms");
    /* v may be NULL. */
    assert_false(quota_allows(&limits, &usage, 1, 16, 1, NULL));
    assert_true(quota_allows(&unlimited, &usage, 1, 16, 1, NULL));
}

static void
test_user_models__quota_arithmetic_cannot_overflow(void **state)
{
    struct quota limits = {.max_vms = INT64_MAX,
                           .max_vcpus = INT64_MAX,
                           .max_memory_mib = 1000,
                           .max_disk_gib = INT64_MAX};
    struct quota_usage usage = {.vms = UINT64_MAX, .vcpus = 0, .memory_mib = 0, .disk_gib = 0};
    struct quota_violation v;

    (void)state;
    /* UINT64_MAX + 1 would wrap to 0 and pass. */
    assert_false(quota_allows(&limits, &usage, 1, 1, 1, &v));
    assert_string_equal(v.quota, "max_vms");
    assert_true(v.in_use == UINT64_MAX);

    usage.vms = 0;
    usage.vcpus = UINT64_MAX - 1;
    assert_false(quota_allows(&limits, &usage, 4, 1, 1, &v));
    assert_string_equal(v.quota, "max_vcpus");

    usage.vcpus = 0;
    usage.memory_mib = UINT64_MAX;
    assert_false(quota_allows(&limits, &usage, 1, 1, 1, &v));
    assert_string_equal(v.quota, "max_memory_mib");
    assert_int_equal(v.limit, 1000);

    usage.memory_mib = 0;
    usage.disk_gib = (uint64_t)INT64_MAX;
    assert_false(quota_allows(&limits, &usage, 1, 1, 1, &v));
    assert_string_equal(v.quota, "max_disk_gib");
    usage.disk_gib = (uint64_t)INT64_MAX - 1;
    assert_true(quota_allows(&limits, &usage, 1, 1, 1, &v));
}

static void
assert_str_member(const json_t *j, const char *key, const char *want)
{
    const json_t *v = json_object_get(j, key);

    if (!json_is_string(v) || strcmp(json_string_value(v), want) != 0)
        fail_msg("member '%s' is not \"%s\"", key, want);
}

static void
assert_int_member(const json_t *j, const char *key, json_int_t want)
{
    const json_t *v = json_object_get(j, key);

    if (!json_is_integer(v) || json_integer_value(v) != want)
        fail_msg("member '%s' is not %" JSON_INTEGER_FORMAT, key, want);
}

static void
assert_null_member(const json_t *j, const char *key)
{
    if (!json_is_null(json_object_get(j, key)))
        fail_msg("member '%s' is not null", key);
}

static void
assert_text_lacks(const json_t *j, const char *needle)
{
    char *text = json_dumps(j, 0);

    assert_non_null(text);
    if (strstr(text, needle))
        fail_msg("\"%s\" found in %s", needle, text);
    free(text);
}

static void
test_user_models__user_to_json_never_shows_the_hash(void **state)
{
    struct user u;
    struct quota eff = {.max_vms = 10, .max_vcpus = -1, .max_memory_mib = 0, .max_disk_gib = 5};
    json_t *j, *roles, *q;

    (void)state;
    memset(&u, 0, sizeof(u));
    strcpy(u.id, UID);
    strcpy(u.email, "ann@example.com");
    strcpy(u.password_hash, "$argon2id$v=19$m=65536,t=2,p=1$SECRETSALT$SECRETHASH");
    u.status = USER_STATUS_DISABLED;
    u.roles = USER_ROLE_USER | USER_ROLE_ADMIN;
    u.quota = (struct quota){-1, -1, -1, -1};
    u.created_at = T0;
    u.updated_at = T1;
    u.revision = 4;
    j = user_to_json(&u, &eff);
    assert_non_null(j);
    assert_int_equal(json_object_size(j), 9);
    assert_str_member(j, "id", UID);
    assert_int_equal(json_integer_value(json_object_get(j, "revision")), 4);
    assert_str_member(j, "email", "ann@example.com");
    assert_null_member(j, "nickname");
    assert_str_member(j, "status", "disabled");
    assert_str_member(j, "created_at", "2023-11-14T22:13:20Z");
    assert_str_member(j, "updated_at", "2023-11-14T22:13:21Z");
    roles = json_object_get(j, "roles");
    assert_int_equal(json_array_size(roles), 2);
    assert_string_equal(json_string_value(json_array_get(roles, 0)), "user");
    assert_string_equal(json_string_value(json_array_get(roles, 1)), "admin");
    q = json_object_get(j, "quota");
    assert_int_member(q, "max_vms", 10);
    assert_null_member(q, "max_vcpus");
    assert_int_member(q, "max_memory_mib", 0);
    assert_int_member(q, "max_disk_gib", 5);
    assert_text_lacks(j, "password");
    assert_text_lacks(j, "argon2");
    assert_text_lacks(j, "SECRET");
    json_decref(j);

    strcpy(u.nickname, "Ann");
    u.status = USER_STATUS_ACTIVE;
    u.roles = 0;
    j = user_to_json(&u, &u.quota);
    assert_str_member(j, "nickname", "Ann");
    assert_str_member(j, "status", "active");
    /* Every user holds the user role. */
    assert_int_equal(json_array_size(json_object_get(j, "roles")), 1);
    assert_null_member(json_object_get(j, "quota"), "max_vms");
    json_decref(j);
}

static void
test_user_models__quota_encoders(void **state)
{
    struct quota q = {.max_vms = 0, .max_vcpus = -1, .max_memory_mib = -2, .max_disk_gib = 7};
    struct quota_usage u = {.vms = 2, .vcpus = 4, .memory_mib = 2048, .disk_gib = UINT64_MAX};
    json_t *j;

    (void)state;
    j = quota_to_json(&q);
    assert_int_equal(json_object_size(j), 4);
    assert_int_member(j, "max_vms", 0);
    assert_null_member(j, "max_vcpus");
    assert_null_member(j, "max_memory_mib");
    assert_int_member(j, "max_disk_gib", 7);
    json_decref(j);
    j = quota_usage_to_json(&u);
    assert_int_equal(json_object_size(j), 4);
    assert_int_member(j, "vms", 2);
    assert_int_member(j, "vcpus", 4);
    assert_int_member(j, "memory_mib", 2048);
    /* Clamped, never negative. */
    assert_int_member(j, "disk_gib", INT64_MAX);
    json_decref(j);
}

static void
test_user_models__api_key_to_json_never_shows_the_hash(void **state)
{
    struct api_key k;
    json_t *j;

    (void)state;
    memset(&k, 0, sizeof(k));
    strcpy(k.id, KEYID);
    strcpy(k.user_id, UID);
    strcpy(k.name, "ci-runner");
    strcpy(k.prefix, "stk_abcdefgh");
    strcpy(k.hash, "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
    k.created_at = T0;
    j = api_key_to_json(&k);
    assert_non_null(j);
    assert_int_equal(json_object_size(j), 5);
    assert_str_member(j, "id", KEYID);
    assert_str_member(j, "name", "ci-runner");
    assert_str_member(j, "prefix", "stk_abcdefgh");
    assert_str_member(j, "created_at", "2023-11-14T22:13:20Z");
    assert_null_member(j, "last_used_at");
    assert_text_lacks(j, k.hash);
    assert_text_lacks(j, "hash");
    json_decref(j);
    k.last_used_at = T1;
    j = api_key_to_json(&k);
    assert_str_member(j, "last_used_at", "2023-11-14T22:13:21Z");
    json_decref(j);
}

static void
test_user_models__audit_entry_to_json_has_exact_fields(void **state)
{
    struct audit_entry e;
    json_t *j;

    (void)state;
    memset(&e, 0, sizeof(e));
    e.seq = 42;
    strcpy(e.id, KEYID);
    e.at = T0;
    strcpy(e.method, "POST");
    strcpy(e.route, "/v1/auth/tokens");
    e.status = 401;
    strcpy(e.request_id, "req-1");
    strcpy(e.client_addr, "192.0.2.7");
    strcpy(e.hash, "ab12");
    j = audit_entry_to_json(&e);
    assert_non_null(j);
    assert_int_equal(json_object_size(j), 12);
    assert_str_member(j, "id", KEYID);
    assert_int_member(j, "seq", 42);
    assert_str_member(j, "at", "2023-11-14T22:13:20Z");
    assert_null_member(j, "user_id");
    assert_str_member(j, "method", "POST");
    assert_str_member(j, "route", "/v1/auth/tokens");
    assert_null_member(j, "target_id");
    assert_int_member(j, "status", 401);
    assert_str_member(j, "request_id", "req-1");
    assert_str_member(j, "client_addr", "192.0.2.7");
    assert_null_member(j, "prev_hash");
    assert_str_member(j, "hash", "ab12");
    json_decref(j);

    strcpy(e.user_id, UID);
    strcpy(e.target_id, KEYID);
    strcpy(e.prev_hash, "cd34");
    /* A route cut inside a UTF-8 sequence still encodes. */
    strcpy(e.route, "/v1/vms/caf\xc3");
    j = audit_entry_to_json(&e);
    assert_non_null(j);
    assert_str_member(j, "user_id", UID);
    assert_str_member(j, "target_id", KEYID);
    assert_str_member(j, "prev_hash", "cd34");
    assert_str_member(j, "route", "/v1/vms/caf?");
    json_decref(j);
}

static void
test_user_models__status_and_roles_names(void **state)
{
    enum user_status s = USER_STATUS_DISABLED;
    json_t *r;

    (void)state;
    assert_string_equal(user_status_name(USER_STATUS_ACTIVE), "active");
    assert_string_equal(user_status_name(USER_STATUS_DISABLED), "disabled");
    assert_string_equal(user_status_name((enum user_status)9), "unknown");
    assert_int_equal(user_status_parse("active", &s), 0);
    assert_int_equal(s, USER_STATUS_ACTIVE);
    assert_int_equal(user_status_parse("disabled", &s), 0);
    assert_int_equal(s, USER_STATUS_DISABLED);
    assert_int_equal(user_status_parse("Active", &s), -1);
    assert_int_equal(user_status_parse(NULL, &s), -1);
    assert_int_equal(s, USER_STATUS_DISABLED);

    r = user_roles_to_json(USER_ROLE_USER);
    assert_int_equal(json_array_size(r), 1);
    assert_string_equal(json_string_value(json_array_get(r, 0)), "user");
    json_decref(r);
    r = user_roles_to_json(USER_ROLE_ADMIN);
    assert_int_equal(json_array_size(r), 2);
    assert_string_equal(json_string_value(json_array_get(r, 1)), "admin");
    json_decref(r);
}

static void
test_user_models__list_release_frees_and_zeroes(void **state)
{
    struct user_list users = {
        .items = st_xcalloc(2, sizeof(struct user)), .count = 2, .more = true};
    struct api_key_list keys = {
        .items = st_xcalloc(1, sizeof(struct api_key)), .count = 1, .more = true};
    struct audit_list audit = {
        .items = st_xcalloc(3, sizeof(struct audit_entry)), .count = 3, .more = true};

    (void)state;
    user_list_release(&users);
    api_key_list_release(&keys);
    audit_list_release(&audit);
    assert_null(users.items);
    assert_int_equal(users.count, 0);
    assert_false(users.more);
    assert_null(keys.items);
    assert_int_equal(keys.count, 0);
    assert_null(audit.items);
    assert_int_equal(audit.count, 0);
    user_list_release(&users);
    api_key_list_release(&keys);
    audit_list_release(&audit);
    user_list_release(NULL);
    api_key_list_release(NULL);
    audit_list_release(NULL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_user_models__bad_bodies_are_refused_with_precise_messages),
        cmocka_unit_test(test_user_models__long_values_are_refused),
        cmocka_unit_test(test_user_models__create_normalizes_and_fills_defaults),
        cmocka_unit_test(test_user_models__login_lowers_email_without_policy),
        cmocka_unit_test(test_user_models__patch_takes_any_subset),
        cmocka_unit_test(test_user_models__patch_quota_null_means_default),
        cmocka_unit_test(test_user_models__email_and_password_rules),
        cmocka_unit_test(test_user_models__quota_effective_prefers_own_limits),
        cmocka_unit_test(test_user_models__quota_allows_up_to_the_limit),
        cmocka_unit_test(test_user_models__quota_arithmetic_cannot_overflow),
        cmocka_unit_test(test_user_models__user_to_json_never_shows_the_hash),
        cmocka_unit_test(test_user_models__quota_encoders),
        cmocka_unit_test(test_user_models__api_key_to_json_never_shows_the_hash),
        cmocka_unit_test(test_user_models__audit_entry_to_json_has_exact_fields),
        cmocka_unit_test(test_user_models__status_and_roles_names),
        cmocka_unit_test(test_user_models__list_release_frees_and_zeroes),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
