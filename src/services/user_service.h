/*
 * user_service.h - who is calling: users, logins, bearer tokens, API keys
 * and quotas.
 *
 * The service knows only the repository interfaces and the token keyring.
 * Returns 0, or -1 with @err filled.  Credentials that do not identify an
 * active user are ST_ERR_UNAUTHENTICATED; a caller who is known but may not
 * do something is ST_ERR_FORBIDDEN; another user who is not visible to the
 * caller is ST_ERR_NOT_FOUND, exactly like one that does not exist.
 */
#ifndef STRATUS_SERVICES_USER_SERVICE_H
#define STRATUS_SERVICES_USER_SERVICE_H

#include "models/user.h"
#include "repositories/user_repo.h"
#include "repositories/vm_repo.h"
#include "util/keyring.h"
#include "util/secret.h"

/* The authenticated caller of one request. */
struct principal {
    char user_id[ST_ID_BUF];
    unsigned roles; /* as stored now, not as the token claimed */
};

static inline bool
principal_is_admin(const struct principal *p)
{
    return p && (p->roles & USER_ROLE_ADMIN);
}

struct user_service_config {
    bool allow_registration;
    enum secret_pwhash_limits pwhash;
    int64_t token_ttl_s;
    int64_t token_leeway_s;
    unsigned login_max_failures;
    int64_t login_window_ms;
    int64_t login_lockout_ms;
    struct quota default_quota; /* every member >= 0 */
};

/* Borrowed dependencies; the service owns nothing but a dummy hash. */
struct user_service {
    struct user_repo *users;
    struct vm_repo *vms;
    const struct keyring *keys;
    struct user_service_config cfg;
    /* Verified against when an e-mail is unknown, so that path costs the same. */
    char dummy_hash[ST_PASSWORD_HASH_BUF];
};

/* Fill the dummy hash (one argon2id computation).  Call once before use. */
int user_service_init(struct user_service *svc, struct st_error *err);

/*
 * Register a user.  @caller is NULL for an anonymous request: allowed only
 * when allow_registration is set (else ST_ERR_UNAUTHENTICATED).  A caller
 * who is not an admin may register only while registration is open, and
 * never with the admin role (ST_ERR_FORBIDDEN).  ST_ERR_CONFLICT when the
 * e-mail is taken.
 */
int user_service_register(struct user_service *svc, const struct principal *caller,
                          const struct user_create_req *req, struct user *out,
                          struct st_error *err);
/* The first of those checks alone, so a closed door answers before the body is read. */
int user_service_may_register(const struct user_service *svc, const struct principal *caller,
                              struct st_error *err);

/*
 * Make a user without a caller (stratus-admin, bootstrap): @password is
 * checked against the policy and hashed.
 */
int user_service_create(struct user_service *svc, const char *email, const char *password,
                        bool admin, struct user *out, struct st_error *err);

/* Set @email's password without the old one (stratus-admin). */
int user_service_reset_password(struct user_service *svc, const char *email, const char *password,
                                struct st_error *err);

/* How many active admins exist (bootstrap makes one when there are none). */
int user_service_count_admins(struct user_service *svc, size_t *out, struct st_error *err);

/*
 * Log in at @now_ms.  After login_max_failures failures of one e-mail within
 * login_window_ms, attempts are refused for login_lockout_ms after the last
 * one: ST_ERR_THROTTLED with *retry_after_s set, the password not even
 * checked.  A wrong password or an unknown e-mail (the same work and the
 * same message) is ST_ERR_UNAUTHENTICATED and counts as a failure; a
 * disabled user with the right password is ST_ERR_FORBIDDEN.  On success
 * the failures are forgotten and *token (free()) expires at *expires_at
 * (seconds since the epoch).
 */
int user_service_login(struct user_service *svc, const struct login_req *req, int64_t now_ms,
                       char **token, int64_t *expires_at, int64_t *retry_after_s,
                       struct st_error *err);

/*
 * Who is behind "Authorization: Bearer @credential": a token this service
 * issued, or an API key ("stk_...").  The user is read on every call, so a
 * disabled user is refused at once and roles are the current ones.
 */
int user_service_authenticate(struct user_service *svc, const char *credential, int64_t now_ms,
                              struct principal *out, struct st_error *err);

/* The caller themself, or anyone for an admin; else ST_ERR_NOT_FOUND. */
int user_service_get(struct user_service *svc, const struct principal *caller, const char *id,
                     struct user *out, struct st_error *err);

/* Admins only (ST_ERR_FORBIDDEN otherwise).  Free with user_list_release(). */
int user_service_list(struct user_service *svc, const struct principal *caller,
                      const struct user_filter *f, struct user_list *out, struct st_error *err);

/*
 * PATCH: a user may change their own nickname, and their password with the
 * old one; an admin may change anything of anyone (a password without the
 * old one).  Status, roles and quotas of oneself are admin-only
 * (ST_ERR_FORBIDDEN).  The last active admin cannot be disabled or lose
 * the role (ST_ERR_CONFLICT).  The write is compare-and-set on the
 * revision read: a user changed meanwhile is ST_ERR_STALE, and one not at
 * @expect (If-Match; 0 for any) is ST_ERR_PRECONDITION.
 */
int user_service_update(struct user_service *svc, const struct principal *caller, const char *id,
                        const struct user_patch_req *req, uint64_t expect, struct user *out,
                        struct st_error *err);

/* The limits that apply to @user: its own where set, else the defaults. */
struct quota user_service_quota_of(const struct user_service *svc, const struct user *user);

/* @user_id's limits alone: one read of the user's row (ST_ERR_NOT_FOUND for no such user). */
int user_service_limits(struct user_service *svc, const char *user_id, struct quota *limits,
                        struct st_error *err);

/* @user_id's limits and what their rows use now. */
int user_service_quota(struct user_service *svc, const char *user_id, struct quota *limits,
                       struct quota_usage *usage, struct st_error *err);

/*
 * A new API key named @name for the caller.  *secret (free()) is the key
 * itself, shown once; only its SHA-256 is kept.
 */
int user_service_key_create(struct user_service *svc, const struct principal *caller,
                            const char *name, struct api_key *out, char **secret,
                            struct st_error *err);
int user_service_key_list(struct user_service *svc, const struct principal *caller,
                          struct api_key_list *out, struct st_error *err);
int user_service_key_delete(struct user_service *svc, const struct principal *caller,
                            const char *id, struct st_error *err);

#endif
