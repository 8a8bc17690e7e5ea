#include "services/user_service.h"

#include <stdlib.h>
#include <string.h>

#include "services/token.h"
#include "util/mem.h"

/* "stk_" + 8 characters: the prefix a key is found by and shown with. */
#define API_KEY_TAG "stk_"
#define API_KEY_SECRET_CHARS 40
#define API_KEY_BUF (ST_API_KEY_PREFIX_LEN + 1 + API_KEY_SECRET_CHARS + 1)
/* A key's last use is written at most this often: a read must not always write. */
#define API_KEY_TOUCH_MS 60000
#define API_KEYS_PER_USER 100

int
user_service_init(struct user_service *svc, struct st_error *err)
{
    char pad[32];

    if (secret_init(err) < 0)
        return -1;
    secret_random_token(pad, sizeof(pad) - 1);
    return secret_password_hash(pad, svc->cfg.pwhash, svc->dummy_hash, err);
}

static int
user_make(struct user_service *svc, const char *email, const char *password, const char *nickname,
          unsigned roles, struct user *out, struct st_error *err)
{
    struct user user;

    if (user_password_check(password, email, err) < 0)
        return -1;
    memset(&user, 0, sizeof(user));
    st_uuid_generate(user.id);
    st_strlcpy(user.email, email, sizeof(user.email));
    st_strlcpy(user.nickname, nickname ? nickname : "", sizeof(user.nickname));
    user.status = USER_STATUS_ACTIVE;
    user.roles = roles | USER_ROLE_USER;
    user.quota = (struct quota){-1, -1, -1, -1};
    user.revision = 1;
    user.created_at = user.updated_at = st_now_ms();
    if (secret_password_hash(password, svc->cfg.pwhash, user.password_hash, err) < 0 ||
        user_repo_insert(svc->users, &user, err) < 0)
        return -1;
    *out = user;
    return 0;
}

int
user_service_may_register(const struct user_service *svc, const struct principal *caller,
                          struct st_error *err)
{
    if (principal_is_admin(caller) || svc->cfg.allow_registration)
        return 0;
    if (caller)
        return st_error_set(err, ST_ERR_FORBIDDEN,
                            "registration is closed: only an admin may create users");
    return st_error_set(err, ST_ERR_UNAUTHENTICATED,
                        "registration is closed: log in as an admin to create users");
}

int
user_service_register(struct user_service *svc, const struct principal *caller,
                      const struct user_create_req *req, struct user *out, struct st_error *err)
{
    bool admin = principal_is_admin(caller);

    if (user_service_may_register(svc, caller, err) < 0)
        return -1;
    if (!admin && req->has_roles && (req->roles & USER_ROLE_ADMIN))
        return st_error_set(err, ST_ERR_FORBIDDEN, "only an admin may grant the admin role");
    return user_make(svc, req->email, req->password, req->nickname,
                     req->has_roles ? req->roles : USER_ROLE_USER, out, err);
}

int
user_service_create(struct user_service *svc, const char *email, const char *password, bool admin,
                    struct user *out, struct st_error *err)
{
    char normal[ST_EMAIL_BUF];

    if (user_email_normalize("email", email, normal, err) < 0)
        return -1;
    return user_make(svc, normal, password, NULL, admin ? USER_ROLE_ADMIN : USER_ROLE_USER, out,
                     err);
}

int
user_service_reset_password(struct user_service *svc, const char *email, const char *password,
                            struct st_error *err)
{
    char normal[ST_EMAIL_BUF];
    struct user user;

    if (user_email_normalize("email", email, normal, err) < 0 ||
        user_repo_get_by_email(svc->users, normal, &user, err) < 0 ||
        user_password_check(password, user.email, err) < 0 ||
        secret_password_hash(password, svc->cfg.pwhash, user.password_hash, err) < 0)
        return -1;
    user.updated_at = st_now_ms();
    return user_repo_update(svc->users, &user, err);
}

int
user_service_count_admins(struct user_service *svc, size_t *out, struct st_error *err)
{
    return user_repo_count_admins(svc->users, out, err);
}

/* ST_ERR_THROTTLED while @email is locked out at @now_ms. */
static int
login_throttle(struct user_service *svc, const char *email, int64_t now_ms, int64_t *retry_after_s,
               struct st_error *err)
{
    size_t failures;
    int64_t newest, until;

    if (user_repo_login_failures(svc->users, email, now_ms - svc->cfg.login_window_ms, &failures,
                                 &newest, err) < 0)
        return -1;
    until = newest + svc->cfg.login_lockout_ms;
    if (failures < svc->cfg.login_max_failures || now_ms >= until)
        return 0;
    *retry_after_s = (until - now_ms + 999) / 1000;
    return st_error_set(err, ST_ERR_THROTTLED,
                        "too many failed logins for '%s': try again in %lld s", email,
                        (long long)*retry_after_s);
}

static int
issue_token(struct user_service *svc, const struct user *user, int64_t now_ms, char **token,
            int64_t *expires_at, struct st_error *err)
{
    struct token_claims claims;

    memset(&claims, 0, sizeof(claims));
    st_strlcpy(claims.sub, user->id, sizeof(claims.sub));
    claims.roles = user->roles;
    claims.iat = now_ms / 1000;
    claims.exp = claims.iat + svc->cfg.token_ttl_s;
    st_uuid_generate(claims.jti);
    if (token_issue(svc->keys, &claims, token, err) < 0)
        return -1;
    *expires_at = claims.exp;
    return 0;
}

int
user_service_login(struct user_service *svc, const struct login_req *req, int64_t now_ms,
                   char **token, int64_t *expires_at, int64_t *retry_after_s, struct st_error *err)
{
    struct st_error lookup = {0};
    struct user user;
    bool known, good;

    if (login_throttle(svc, req->email, now_ms, retry_after_s, err) < 0)
        return -1;
    known = user_repo_get_by_email(svc->users, req->email, &user, &lookup) == 0;
    if (!known && lookup.code != ST_ERR_NOT_FOUND) {
        *err = lookup;
        return -1;
    }
    /* An unknown e-mail costs one verification too, and fails the same way. */
    good = secret_password_verify(known ? user.password_hash : svc->dummy_hash, req->password);
    if (!known || !good) {
        if (user_repo_login_failure_add(svc->users, req->email, now_ms, err) < 0)
            return -1;
        return st_error_set(err, ST_ERR_UNAUTHENTICATED, "e-mail or password is wrong");
    }
    if (user.status != USER_STATUS_ACTIVE)
        return st_error_set(err, ST_ERR_FORBIDDEN, "user '%s' is disabled", user.email);
    if (user_repo_login_failures_clear(svc->users, req->email, err) < 0)
        return -1;
    return issue_token(svc, &user, now_ms, token, expires_at, err);
}

/* The user of an API key: found by its prefix, then its hash compared in constant time. */
static int
authenticate_key(struct user_service *svc, const char *credential, int64_t now_ms,
                 char user_id[ST_ID_BUF], struct st_error *err)
{
    char prefix[ST_API_KEY_PREFIX_BUF];
    char hash[ST_HASH_HEX_BUF];
    struct st_error lookup = {0};
    struct api_key key;

    if (strlen(credential) != API_KEY_BUF - 1)
        return st_error_set(err, ST_ERR_UNAUTHENTICATED, "API key is malformed");
    memcpy(prefix, credential, ST_API_KEY_PREFIX_LEN);
    prefix[ST_API_KEY_PREFIX_LEN] = '\0';
    secret_sha256_hex(credential, strlen(credential), hash);
    if (user_repo_key_get_by_prefix(svc->users, prefix, &key, &lookup) < 0) {
        if (lookup.code != ST_ERR_NOT_FOUND) {
            *err = lookup;
            return -1;
        }
        return st_error_set(err, ST_ERR_UNAUTHENTICATED, "API key is not known");
    }
    if (!secret_equal(hash, key.hash, ST_HASH_HEX_BUF - 1))
        return st_error_set(err, ST_ERR_UNAUTHENTICATED, "API key is not known");
    if (now_ms - key.last_used_at >= API_KEY_TOUCH_MS &&
        user_repo_key_touch(svc->users, key.id, now_ms, err) < 0)
        return -1;
    memcpy(user_id, key.user_id, ST_ID_BUF);
    return 0;
}

int
user_service_authenticate(struct user_service *svc, const char *credential, int64_t now_ms,
                          struct principal *out, struct st_error *err)
{
    struct st_error lookup = {0};
    struct token_claims claims;
    char user_id[ST_ID_BUF];
    struct user user;

    if (strncmp(credential, API_KEY_TAG, strlen(API_KEY_TAG)) == 0) {
        if (authenticate_key(svc, credential, now_ms, user_id, err) < 0)
            return -1;
    } else {
        if (token_verify(svc->keys, credential, now_ms / 1000, svc->cfg.token_leeway_s, &claims,
                         err) < 0)
            return -1;
        memcpy(user_id, claims.sub, ST_ID_BUF);
    }
    if (user_repo_get(svc->users, user_id, &user, &lookup) < 0) {
        if (lookup.code != ST_ERR_NOT_FOUND) {
            *err = lookup;
            return -1;
        }
        return st_error_set(err, ST_ERR_UNAUTHENTICATED, "the user of this credential is gone");
    }
    if (user.status != USER_STATUS_ACTIVE)
        return st_error_set(err, ST_ERR_UNAUTHENTICATED, "user '%s' is disabled", user.email);
    memcpy(out->user_id, user.id, ST_ID_BUF);
    out->roles = user.roles;
    return 0;
}

int
user_service_get(struct user_service *svc, const struct principal *caller, const char *id,
                 struct user *out, struct st_error *err)
{
    /* Not oneself and not an admin: the same answer as for nobody at all. */
    if (!principal_is_admin(caller) && strcmp(caller->user_id, id) != 0)
        return st_error_set(err, ST_ERR_NOT_FOUND, "no user '%s'", id);
    return user_repo_get(svc->users, id, out, err);
}

int
user_service_list(struct user_service *svc, const struct principal *caller,
                  const struct user_filter *f, struct user_list *out, struct st_error *err)
{
    if (!principal_is_admin(caller))
        return st_error_set(err, ST_ERR_FORBIDDEN, "only an admin may list users");
    return user_repo_list(svc->users, f, out, err);
}

/* Would @req leave no active admin behind? */
static int
update_keeps_an_admin(struct user_service *svc, const struct user *user,
                      const struct user_patch_req *req, struct st_error *err)
{
    bool was = user->status == USER_STATUS_ACTIVE && (user->roles & USER_ROLE_ADMIN);
    bool stays = was && !(req->has_status && req->status != USER_STATUS_ACTIVE) &&
                 !(req->has_roles && !(req->roles & USER_ROLE_ADMIN));
    size_t admins;

    if (!was || stays)
        return 0;
    if (user_repo_count_admins(svc->users, &admins, err) < 0)
        return -1;
    if (admins <= 1)
        return st_error_set(err, ST_ERR_CONFLICT,
                            "user '%s' is the last active admin: make another admin first",
                            user->email);
    return 0;
}

/* A quota member of a PATCH: -2 (null) means back to the default, stored as unset. */
static int64_t
patched_limit(int64_t asked, int64_t current)
{
    if (asked == -2)
        return -1;
    return asked >= 0 ? asked : current;
}

static int
apply_password(struct user_service *svc, const struct principal *caller, struct user *user,
               const struct user_patch_req *req, struct st_error *err)
{
    bool self = strcmp(caller->user_id, user->id) == 0;

    /* Even an admin proves it is them when changing their own password. */
    if (self || !principal_is_admin(caller)) {
        if (!req->old_password[0])
            return st_error_set(err, ST_ERR_INVALID,
                                "field 'old_password' is required to change your password");
        if (!secret_password_verify(user->password_hash, req->old_password))
            return st_error_set(err, ST_ERR_FORBIDDEN, "old_password is wrong");
    }
    if (user_password_check(req->password, user->email, err) < 0)
        return -1;
    return secret_password_hash(req->password, svc->cfg.pwhash, user->password_hash, err);
}

int
user_service_update(struct user_service *svc, const struct principal *caller, const char *id,
                    const struct user_patch_req *req, uint64_t expect, struct user *out,
                    struct st_error *err)
{
    struct user user;

    if (user_service_get(svc, caller, id, &user, err) < 0)
        return -1;
    if (st_revision_check("user", user.id, user.revision, expect, err) < 0)
        return -1;
    if (!principal_is_admin(caller) && (req->has_status || req->has_roles || req->has_quota))
        return st_error_set(err, ST_ERR_FORBIDDEN,
                            "only an admin may change status, roles or quotas");
    if (update_keeps_an_admin(svc, &user, req, err) < 0)
        return -1;
    if (req->has_password && apply_password(svc, caller, &user, req, err) < 0)
        return -1;
    if (req->has_nickname)
        st_strlcpy(user.nickname, req->nickname, sizeof(user.nickname));
    if (req->has_status)
        user.status = req->status;
    if (req->has_roles)
        user.roles = req->roles | USER_ROLE_USER;
    if (req->has_quota) {
        user.quota.max_vms = patched_limit(req->quota.max_vms, user.quota.max_vms);
        user.quota.max_vcpus = patched_limit(req->quota.max_vcpus, user.quota.max_vcpus);
        user.quota.max_memory_mib =
            patched_limit(req->quota.max_memory_mib, user.quota.max_memory_mib);
        user.quota.max_disk_gib = patched_limit(req->quota.max_disk_gib, user.quota.max_disk_gib);
    }
    user.updated_at = st_now_ms();
    if (user_repo_update(svc->users, &user, err) < 0)
        return -1;
    user.revision++;
    *out = user;
    return 0;
}

struct quota
user_service_quota_of(const struct user_service *svc, const struct user *user)
{
    return quota_effective(&user->quota, &svc->cfg.default_quota);
}

int
user_service_limits(struct user_service *svc, const char *user_id, struct quota *limits,
                    struct st_error *err)
{
    struct user user;

    if (user_repo_get(svc->users, user_id, &user, err) < 0)
        return -1;
    *limits = user_service_quota_of(svc, &user);
    return 0;
}

int
user_service_quota(struct user_service *svc, const char *user_id, struct quota *limits,
                   struct quota_usage *usage, struct st_error *err)
{
    struct quota_usage used;
    struct quota own;

    if (user_service_limits(svc, user_id, &own, err) < 0 ||
        vm_repo_usage(svc->vms, user_id, &used, err) < 0)
        return -1;
    *limits = own;
    *usage = used;
    return 0;
}

int
user_service_key_create(struct user_service *svc, const struct principal *caller, const char *name,
                        struct api_key *out, char **secret, struct st_error *err)
{
    char token[API_KEY_BUF];
    struct api_key_list keys;
    struct api_key key;
    size_t tag = strlen(API_KEY_TAG);

    if (st_name_check("name", name, err) < 0 ||
        user_repo_key_list(svc->users, caller->user_id, &keys, err) < 0)
        return -1;
    if (keys.count >= API_KEYS_PER_USER) {
        api_key_list_release(&keys);
        return st_error_set(err, ST_ERR_CONFLICT,
                            "a user may hold at most %d API keys: delete one first",
                            API_KEYS_PER_USER);
    }
    api_key_list_release(&keys);
    memcpy(token, API_KEY_TAG, tag);
    secret_random_token(token + tag, ST_API_KEY_PREFIX_LEN - tag);
    token[ST_API_KEY_PREFIX_LEN] = '_';
    secret_random_token(token + ST_API_KEY_PREFIX_LEN + 1, API_KEY_SECRET_CHARS);
    memset(&key, 0, sizeof(key));
    st_uuid_generate(key.id);
    memcpy(key.user_id, caller->user_id, ST_ID_BUF);
    st_strlcpy(key.name, name, sizeof(key.name));
    memcpy(key.prefix, token, ST_API_KEY_PREFIX_LEN);
    key.prefix[ST_API_KEY_PREFIX_LEN] = '\0';
    secret_sha256_hex(token, strlen(token), key.hash);
    key.created_at = st_now_ms();
    if (user_repo_key_insert(svc->users, &key, err) < 0)
        return -1;
    *out = key;
    *secret = st_xstrdup(token);
    return 0;
}

int
user_service_key_list(struct user_service *svc, const struct principal *caller,
                      struct api_key_list *out, struct st_error *err)
{
    return user_repo_key_list(svc->users, caller->user_id, out, err);
}

int
user_service_key_delete(struct user_service *svc, const struct principal *caller, const char *id,
                        struct st_error *err)
{
    return user_repo_key_remove(svc->users, caller->user_id, id, err);
}
