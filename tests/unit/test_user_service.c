/*
 * test_user_service.c - users, logins, tokens, API keys and their rules,
 * against the real SQLite store in a temp dir and a real key file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "repositories/sqlite/sqlite_db.h"
#include "services/user_service.h"
#include "support/tmpdir.h"
#include "util/mem.h"

#define PASSWORD "correct horse battery"
#define LOCKOUT_MS 60000
#define T0 1700000000000 /* a fixed "now", in ms */

struct us_fx {
    char dir[64];
    struct sqlite_db *db;
    struct user_repo users;
    struct vm_repo vms;
    struct keyring keys;
    struct user_service svc;
    struct principal admin;
};

static int
setup(void **state)
{
    struct us_fx *fx = calloc(1, sizeof(*fx));
    struct st_error err = {0};
    char path[128];
    struct user admin;

    if (!fx || tmpdir_make(fx->dir, sizeof(fx->dir), "stratus-test-users", &err) < 0)
        goto fail;
    snprintf(path, sizeof(path), "%s/stratus.db", fx->dir);
    fx->db = sqlite_db_open(path, &err);
    snprintf(path, sizeof(path), "%s/token-keys", fx->dir);
    if (!fx->db || user_repo_sqlite_open(fx->db, &fx->users, &err) < 0 ||
        vm_repo_sqlite_open(fx->db, &fx->vms, &err) < 0 ||
        keyring_ensure(path, &fx->keys, &err) < 0)
        goto fail;
    fx->svc = (struct user_service){
        .users = &fx->users,
        .vms = &fx->vms,
        .keys = &fx->keys,
        .cfg =
            {
                .allow_registration = false,
                .pwhash = SECRET_PWHASH_MIN,
                .token_ttl_s = 3600,
                .token_leeway_s = 30,
                .login_max_failures = 5,
                .login_window_ms = 900000,
                .login_lockout_ms = LOCKOUT_MS,
                .default_quota = {10, 20, 4096, 100},
            },
    };
    if (user_service_init(&fx->svc, &err) < 0 ||
        user_service_create(&fx->svc, "Root@Example.test", PASSWORD, true, &admin, &err) < 0)
        goto fail;
    memcpy(fx->admin.user_id, admin.id, ST_ID_BUF);
    fx->admin.roles = admin.roles;
    *state = fx;
    return 0;

fail:
    fprintf(stderr, "setup: %s\n", err.msg);
    return -1;
}

static int
teardown(void **state)
{
    struct us_fx *fx = *state;

    user_repo_close(&fx->users);
    vm_repo_close(&fx->vms);
    sqlite_db_close(fx->db);
    tmpdir_remove(fx->dir);
    free(fx);
    return 0;
}

#define assert_code(call, err, want)                                                               \
    do {                                                                                           \
        memset(&(err), 0, sizeof(err));                                                            \
        if ((call) != -1 || (err).code != (want))                                                  \
            fail_msg("want %s, got %s: %s", st_err_code_name(want), st_err_code_name((err).code),  \
                     (err).msg);                                                                   \
    } while (0)

#define assert_ok(call, err)                                                                       \
    do {                                                                                           \
        memset(&(err), 0, sizeof(err));                                                            \
        if ((call) != 0)                                                                           \
            fail_msg("failed: %s", (err).msg);                                                     \
    } while (0)

/* A user registered by the admin, and their principal. */
static void
make_user(struct us_fx *fx, const char *email, struct user *user, struct principal *who)
{
    struct user_create_req req;
    struct st_error err;

    memset(&req, 0, sizeof(req));
    snprintf(req.email, sizeof(req.email), "%s", email);
    snprintf(req.password, sizeof(req.password), "%s", PASSWORD);
    assert_ok(user_service_register(&fx->svc, &fx->admin, &req, user, &err), err);
    memcpy(who->user_id, user->id, ST_ID_BUF);
    who->roles = user->roles;
}

static int
login(struct us_fx *fx, const char *email, const char *password, int64_t now, char **token,
      int64_t *retry, struct st_error *err)
{
    struct login_req req;
    int64_t exp;

    memset(&req, 0, sizeof(req));
    snprintf(req.email, sizeof(req.email), "%s", email);
    snprintf(req.password, sizeof(req.password), "%s", password);
    *token = NULL;
    return user_service_login(&fx->svc, &req, now, token, &exp, retry, err);
}

static void
test_user_service__registration_rules(void **state)
{
    struct us_fx *fx = *state;
    struct user_create_req req;
    struct principal who;
    struct st_error err;
    struct user user;

    memset(&req, 0, sizeof(req));
    snprintf(req.email, sizeof(req.email), "new@example.test");
    snprintf(req.password, sizeof(req.password), "%s", PASSWORD);
    assert_code(user_service_register(&fx->svc, NULL, &req, &user, &err), err,
                ST_ERR_UNAUTHENTICATED);
    make_user(fx, "carol@example.test", &user, &who);
    assert_code(user_service_register(&fx->svc, &who, &req, &user, &err), err, ST_ERR_FORBIDDEN);
    fx->svc.cfg.allow_registration = true;
    req.has_roles = true;
    req.roles = USER_ROLE_USER | USER_ROLE_ADMIN;
    assert_code(user_service_register(&fx->svc, NULL, &req, &user, &err), err, ST_ERR_FORBIDDEN);
    req.has_roles = false;
    assert_ok(user_service_register(&fx->svc, NULL, &req, &user, &err), err);
    assert_int_equal(user.roles, USER_ROLE_USER);
    assert_string_equal(user.email, "new@example.test");
    assert_non_null(strstr(user.password_hash, "$argon2id$"));
    /* The same address in another case is the same user. */
    assert_code(user_service_create(&fx->svc, "NEW@example.TEST", PASSWORD, false, &user, &err),
                err, ST_ERR_CONFLICT);
    assert_code(user_service_create(&fx->svc, "short@example.test", "123", false, &user, &err), err,
                ST_ERR_INVALID);
    assert_code(
        user_service_create(&fx->svc, "same@example.test", "SAME@example.test", false, &user, &err),
        err, ST_ERR_INVALID);
}

static void
test_user_service__login_and_authenticate(void **state)
{
    struct us_fx *fx = *state;
    struct principal who, got;
    struct st_error err, err2;
    struct user user;
    char *token;
    int64_t retry;

    make_user(fx, "dave@example.test", &user, &who);
    assert_ok(login(fx, "dave@example.test", PASSWORD, T0, &token, &retry, &err), err);
    assert_ok(user_service_authenticate(&fx->svc, token, T0 + 1000, &got, &err), err);
    assert_string_equal(got.user_id, user.id);
    assert_int_equal(got.roles, USER_ROLE_USER);
    /* Expired an hour later (plus the leeway). */
    assert_code(user_service_authenticate(&fx->svc, token, T0 + 3700000, &got, &err), err,
                ST_ERR_UNAUTHENTICATED);
    /* One changed character anywhere breaks it. */
    token[strlen(token) / 2] ^= 1;
    assert_code(user_service_authenticate(&fx->svc, token, T0 + 1000, &got, &err), err,
                ST_ERR_UNAUTHENTICATED);
    free(token);

    /* A wrong password and an unknown address fail the same way. */
    assert_code(login(fx, "dave@example.test", "wrong password!", T0, &token, &retry, &err), err,
                ST_ERR_UNAUTHENTICATED);
    assert_code(login(fx, "nobody@example.test", PASSWORD, T0, &token, &retry, &err2), err2,
                ST_ERR_UNAUTHENTICATED);
    assert_string_equal(err.msg, err2.msg);
    assert_null(token);
}

static void
test_user_service__login_throttling_and_reset(void **state)
{
    struct us_fx *fx = *state;
    struct principal who;
    struct st_error err;
    struct user user;
    char *token;
    int64_t retry = 0;
    int i;

    make_user(fx, "erin@example.test", &user, &who);
    for (i = 0; i < 5; i++)
        assert_code(login(fx, "erin@example.test", "wrong password!", T0 + i, &token, &retry, &err),
                    err, ST_ERR_UNAUTHENTICATED);
    /* Locked: even the right password is refused, without being checked. */
    assert_code(login(fx, "erin@example.test", PASSWORD, T0 + 10, &token, &retry, &err), err,
                ST_ERR_THROTTLED);
    assert_int_equal(retry, LOCKOUT_MS / 1000);
    assert_code(
        login(fx, "erin@example.test", PASSWORD, T0 + LOCKOUT_MS - 1000, &token, &retry, &err), err,
        ST_ERR_THROTTLED);
    assert_int_equal(retry, 2);
    /* Others are not affected. */
    assert_ok(login(fx, "root@example.test", PASSWORD, T0 + 10, &token, &retry, &err), err);
    free(token);
    /* After the lockout the right password works and the count starts again. */
    assert_ok(login(fx, "erin@example.test", PASSWORD, T0 + 4 + LOCKOUT_MS, &token, &retry, &err),
              err);
    free(token);
    assert_code(login(fx, "erin@example.test", "wrong password!", T0 + 5 + LOCKOUT_MS, &token,
                      &retry, &err),
                err, ST_ERR_UNAUTHENTICATED);
}

static void
test_user_service__disabled_user_stops_at_once(void **state)
{
    struct us_fx *fx = *state;
    struct user_patch_req patch;
    struct principal who, got;
    struct api_key key;
    struct st_error err;
    struct user user;
    char *token, *secret;
    int64_t retry;

    make_user(fx, "frank@example.test", &user, &who);
    assert_ok(login(fx, "frank@example.test", PASSWORD, T0, &token, &retry, &err), err);
    assert_ok(user_service_key_create(&fx->svc, &who, "ci", &key, &secret, &err), err);
    memset(&patch, 0, sizeof(patch));
    patch.has_status = true;
    patch.status = USER_STATUS_DISABLED;
    assert_ok(user_service_update(&fx->svc, &fx->admin, user.id, &patch, 0, &user, &err), err);
    assert_code(user_service_authenticate(&fx->svc, token, T0 + 1000, &got, &err), err,
                ST_ERR_UNAUTHENTICATED);
    assert_code(user_service_authenticate(&fx->svc, secret, T0 + 1000, &got, &err), err,
                ST_ERR_UNAUTHENTICATED);
    free(token);
    assert_code(login(fx, "frank@example.test", PASSWORD, T0, &token, &retry, &err), err,
                ST_ERR_FORBIDDEN);
    patch.status = USER_STATUS_ACTIVE;
    /* If-Match: a revision the user is no longer at changes nothing. */
    assert_code(
        user_service_update(&fx->svc, &fx->admin, user.id, &patch, user.revision - 1, &user, &err),
        err, ST_ERR_PRECONDITION);
    assert_ok(
        user_service_update(&fx->svc, &fx->admin, user.id, &patch, user.revision, &user, &err),
        err);
    assert_ok(user_service_authenticate(&fx->svc, secret, T0 + 1000, &got, &err), err);
    free(secret);
}

static void
test_user_service__api_keys(void **state)
{
    struct us_fx *fx = *state;
    struct principal who, other, got;
    struct api_key_list list;
    struct api_key key, again;
    struct st_error err;
    struct user user;
    char *secret, *second;

    make_user(fx, "grace@example.test", &user, &who);
    make_user(fx, "heidi@example.test", &user, &other);
    assert_ok(user_service_key_create(&fx->svc, &who, "deploy", &key, &secret, &err), err);
    assert_int_equal(strncmp(secret, "stk_", 4), 0);
    assert_int_equal(strncmp(secret, key.prefix, strlen(key.prefix)), 0);
    assert_null(strstr(key.hash, secret));
    assert_code(user_service_key_create(&fx->svc, &who, "deploy", &again, &second, &err), err,
                ST_ERR_CONFLICT);
    assert_code(user_service_key_create(&fx->svc, &who, "bad name!", &again, &second, &err), err,
                ST_ERR_INVALID);
    assert_ok(user_service_authenticate(&fx->svc, secret, T0, &got, &err), err);
    assert_string_equal(got.user_id, who.user_id);
    assert_ok(user_service_key_list(&fx->svc, &who, &list, &err), err);
    assert_int_equal(list.count, 1);
    assert_int_equal(list.items[0].last_used_at, T0);
    api_key_list_release(&list);
    /* A key with its secret part changed is not a key. */
    secret[strlen(secret) - 1] = secret[strlen(secret) - 1] == 'A' ? 'B' : 'A';
    assert_code(user_service_authenticate(&fx->svc, secret, T0, &got, &err), err,
                ST_ERR_UNAUTHENTICATED);
    secret[strlen(secret) - 1] = secret[strlen(secret) - 1] == 'A' ? 'B' : 'A';
    /* Only its owner revokes it. */
    assert_code(user_service_key_delete(&fx->svc, &other, key.id, &err), err, ST_ERR_NOT_FOUND);
    assert_ok(user_service_key_delete(&fx->svc, &who, key.id, &err), err);
    assert_code(user_service_authenticate(&fx->svc, secret, T0, &got, &err), err,
                ST_ERR_UNAUTHENTICATED);
    free(secret);
}

static void
test_user_service__update_rules(void **state)
{
    struct us_fx *fx = *state;
    struct user_patch_req patch;
    struct principal who, other;
    struct st_error err;
    struct user user, got;
    char *token;
    int64_t retry;

    make_user(fx, "ivan@example.test", &user, &who);
    make_user(fx, "judy@example.test", &got, &other);
    /* Another user is as invisible as nobody. */
    assert_code(user_service_get(&fx->svc, &other, user.id, &got, &err), err, ST_ERR_NOT_FOUND);
    memset(&patch, 0, sizeof(patch));
    patch.has_nickname = true;
    snprintf(patch.nickname, sizeof(patch.nickname), "stolen");
    assert_code(user_service_update(&fx->svc, &other, user.id, &patch, 0, &got, &err), err,
                ST_ERR_NOT_FOUND);
    assert_ok(user_service_update(&fx->svc, &who, user.id, &patch, 0, &got, &err), err);
    assert_string_equal(got.nickname, "stolen");

    memset(&patch, 0, sizeof(patch));
    patch.has_quota = true;
    patch.quota = (struct quota){3, -1, -1, -1};
    assert_code(user_service_update(&fx->svc, &who, user.id, &patch, 0, &got, &err), err,
                ST_ERR_FORBIDDEN);
    assert_ok(user_service_update(&fx->svc, &fx->admin, user.id, &patch, 0, &got, &err), err);
    assert_int_equal(user_service_quota_of(&fx->svc, &got).max_vms, 3);
    assert_int_equal(user_service_quota_of(&fx->svc, &got).max_vcpus, 20);
    patch.quota.max_vms = -2; /* null: back to the default */
    assert_ok(user_service_update(&fx->svc, &fx->admin, user.id, &patch, 0, &got, &err), err);
    assert_int_equal(user_service_quota_of(&fx->svc, &got).max_vms, 10);

    /* A password changes only with the old one. */
    memset(&patch, 0, sizeof(patch));
    patch.has_password = true;
    snprintf(patch.password, sizeof(patch.password), "a brand new passphrase");
    assert_code(user_service_update(&fx->svc, &who, user.id, &patch, 0, &got, &err), err,
                ST_ERR_INVALID);
    snprintf(patch.old_password, sizeof(patch.old_password), "not the password");
    assert_code(user_service_update(&fx->svc, &who, user.id, &patch, 0, &got, &err), err,
                ST_ERR_FORBIDDEN);
    snprintf(patch.old_password, sizeof(patch.old_password), "%s", PASSWORD);
    assert_ok(user_service_update(&fx->svc, &who, user.id, &patch, 0, &got, &err), err);
    assert_code(login(fx, "ivan@example.test", PASSWORD, T0, &token, &retry, &err), err,
                ST_ERR_UNAUTHENTICATED);
    assert_ok(login(fx, "ivan@example.test", "a brand new passphrase", T0, &token, &retry, &err),
              err);
    free(token);

    /* The last active admin stays one. */
    memset(&patch, 0, sizeof(patch));
    patch.has_roles = true;
    patch.roles = USER_ROLE_USER;
    assert_code(user_service_update(&fx->svc, &fx->admin, fx->admin.user_id, &patch, 0, &got, &err),
                err, ST_ERR_CONFLICT);
    patch.roles = USER_ROLE_USER | USER_ROLE_ADMIN;
    assert_ok(user_service_update(&fx->svc, &fx->admin, user.id, &patch, 0, &got, &err), err);
    patch.roles = USER_ROLE_USER;
    assert_ok(user_service_update(&fx->svc, &fx->admin, fx->admin.user_id, &patch, 0, &got, &err),
              err);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
        T(test_user_service__registration_rules),
        T(test_user_service__login_and_authenticate),
        T(test_user_service__login_throttling_and_reset),
        T(test_user_service__disabled_user_stops_at_once),
        T(test_user_service__api_keys),
        T(test_user_service__update_rules),
#undef T
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
