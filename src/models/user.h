/*
 * user.h - people who call the API, their API keys, quotas and the audit
 * log entries their requests leave.
 */
#ifndef STRATUS_MODELS_USER_H
#define STRATUS_MODELS_USER_H

#include <jansson.h>

#include "models/common.h"

#define ST_EMAIL_MAX 254
#define ST_EMAIL_BUF 255
#define ST_NICKNAME_MAX 64
#define ST_NICKNAME_BUF 65
#define ST_PASSWORD_MIN 10
#define ST_PASSWORD_MAX 1024
#define ST_PASSWORD_BUF 1025
/* crypto_pwhash_STRBYTES: an encoded argon2id hash with its parameters. */
#define ST_PASSWORD_HASH_BUF 128
#define ST_HASH_HEX_BUF 65 /* SHA-256 as lower-case hex */

enum user_status {
    USER_STATUS_ACTIVE = 0,
    USER_STATUS_DISABLED,
};

/* Role bits; every user has USER_ROLE_USER. */
#define USER_ROLE_USER 0x1u
#define USER_ROLE_ADMIN 0x2u

/* A quota's limits; a member < 0 means "not set here" (the default applies). */
struct quota {
    int64_t max_vms;
    int64_t max_vcpus;
    int64_t max_memory_mib;
    int64_t max_disk_gib;
};

/* What an owner's rows add up to (every row counts, whatever its status). */
struct quota_usage {
    uint64_t vms;
    uint64_t vcpus;
    uint64_t memory_mib;
    uint64_t disk_gib;
};

/* Which limit a create would break, and by how much (ST_ERR_FORBIDDEN). */
struct quota_violation {
    const char *quota; /* "max_vms", "max_vcpus", "max_memory_mib", "max_disk_gib"; NULL = none */
    int64_t limit;
    uint64_t in_use;
    uint64_t requested;
};

struct user {
    char id[ST_ID_BUF];
    char email[ST_EMAIL_BUF]; /* stored in lower case: unique regardless of case */
    char password_hash[ST_PASSWORD_HASH_BUF];
    char nickname[ST_NICKNAME_BUF]; /* "" when none */
    enum user_status status;
    unsigned roles;     /* USER_ROLE_* bits */
    struct quota quota; /* per-user overrides; < 0 members use the configured default */
    /* Bumped by every update; a write names the revision it read (compare-and-set). */
    uint64_t revision;
    int64_t created_at;
    int64_t updated_at;
};

/* POST /v1/users: email and password required; roles only for admins. */
struct user_create_req {
    char email[ST_EMAIL_BUF]; /* lower-cased by the decoder */
    char password[ST_PASSWORD_BUF];
    char nickname[ST_NICKNAME_BUF];
    bool has_roles;
    unsigned roles;
};

/* PATCH /v1/users/{id}: every member optional, at least one present. */
struct user_patch_req {
    bool has_nickname, has_status, has_roles, has_quota, has_password;
    char nickname[ST_NICKNAME_BUF];
    enum user_status status;
    unsigned roles;
    /* Members present in the body are >= 0 (a value) or -2 (null: back to the default). */
    struct quota quota;
    char password[ST_PASSWORD_BUF];
    char old_password[ST_PASSWORD_BUF]; /* "" when absent */
};

/* POST /v1/auth/tokens */
struct login_req {
    char email[ST_EMAIL_BUF]; /* lower-cased */
    char password[ST_PASSWORD_BUF];
};

struct user_filter {
    char marker[ST_ID_BUF];
    unsigned limit;
};

struct user_list {
    struct user *items;
    size_t count;
    bool more;
};
void user_list_release(struct user_list *list);

/* An API key.  The key itself is shown once; only its SHA-256 is kept. */
#define ST_API_KEY_PREFIX_LEN 12 /* "stk_" + 8 random characters, shown in lists */
#define ST_API_KEY_PREFIX_BUF 13
struct api_key {
    char id[ST_ID_BUF];
    char user_id[ST_ID_BUF];
    char name[ST_NAME_BUF];
    char prefix[ST_API_KEY_PREFIX_BUF];
    char hash[ST_HASH_HEX_BUF];
    int64_t created_at;
    int64_t last_used_at; /* 0: never */
};

struct api_key_list {
    struct api_key *items;
    size_t count;
    bool more;
};
void api_key_list_release(struct api_key_list *list);

/* One audited request.  seq orders the chain; hash covers prev_hash and every field. */
#define ST_AUDIT_ROUTE_BUF 256
#define ST_AUDIT_ADDR_BUF 64
struct audit_entry {
    int64_t seq; /* 1, 2, ... assigned by the store */
    char id[ST_ID_BUF];
    int64_t at;                     /* ms since epoch */
    char user_id[ST_ID_BUF];        /* "" when nobody was authenticated */
    char method[8];                 /* "POST", ... */
    char route[ST_AUDIT_ROUTE_BUF]; /* the request path */
    char target_id[ST_ID_BUF];      /* "" when none */
    int status;                     /* HTTP status of the answer */
    char request_id[65];
    char client_addr[ST_AUDIT_ADDR_BUF];
    char prev_hash[ST_HASH_HEX_BUF]; /* "" for the first entry */
    char hash[ST_HASH_HEX_BUF];
};

struct audit_filter {
    char user_id[ST_ID_BUF];   /* "" = any */
    char target_id[ST_ID_BUF]; /* "" = any */
    char marker[ST_ID_BUF];    /* an entry id; "" = from the oldest */
    unsigned limit;
};

struct audit_list {
    struct audit_entry *items;
    size_t count;
    bool more;
};
void audit_list_release(struct audit_list *list);

const char *user_status_name(enum user_status status);
int user_status_parse(const char *name, enum user_status *out);

/* ["user"] or ["user", "admin"]; new reference. */
json_t *user_roles_to_json(unsigned roles);

/*
 * An e-mail address as stratus accepts it: 3..254 bytes, printable ASCII
 * without spaces, exactly one '@' with something on both sides.  Writes the
 * lower-cased address to @out on success.
 */
int user_email_normalize(const char *field, const char *email, char out[ST_EMAIL_BUF],
                         struct st_error *err);

/*
 * The password policy: 10..1024 bytes, not equal to the e-mail address
 * (compared without regard to case).  ST_ERR_INVALID with a message that
 * says which rule failed.
 */
int user_password_check(const char *password, const char *email, struct st_error *err);

int user_create_req_decode(const json_t *body, struct user_create_req *out, struct st_error *err);
int user_patch_req_decode(const json_t *body, struct user_patch_req *out, struct st_error *err);
int login_req_decode(const json_t *body, struct login_req *out, struct st_error *err);

/* The effective limits: each member of @own when set (>= 0), else of @defaults. */
struct quota quota_effective(const struct quota *own, const struct quota *defaults);

/*
 * Would adding (vcpus, memory_mib, disk_gib) as one more VM to @usage break
 * @limits (a limit < 0 is unlimited)?  Returns false with *v filled with
 * the first broken limit in the order vms, vcpus, memory, disk; true with
 * v->quota NULL otherwise.
 */
bool quota_allows(const struct quota *limits, const struct quota_usage *usage, unsigned vcpus,
                  unsigned memory_mib, unsigned disk_gib, struct quota_violation *v);

/* {"id","email","nickname","status","roles","quota":{...effective},"created_at","updated_at"} */
json_t *user_to_json(const struct user *user, const struct quota *effective);
/* {"max_vms":..,...}: a limit < 0 shows as null (unlimited). */
json_t *quota_to_json(const struct quota *q);
json_t *quota_usage_to_json(const struct quota_usage *u);
/* Never the hash. */
json_t *api_key_to_json(const struct api_key *key);
json_t *audit_entry_to_json(const struct audit_entry *e);

#endif
