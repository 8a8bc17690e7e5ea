/*
 * user_repo_pg.c - users, their API keys and failed logins in PostgreSQL.
 *
 * The same rows, pages and messages as user_repo_sqlite.c.  Two things the
 * SQLite schema gives for free are done here by hand: e-mail addresses are
 * compared as lower(email) (SQLite's COLLATE NOCASE; the unique index is on
 * lower(email)), and a failed insert is explained by looking at the rows it
 * clashed with, because PostgreSQL names a constraint where SQLite names
 * its kind, and SQLite's messages follow the order in which it checks them.
 */
#include "repositories/postgres/pg_db.h"

#include <stdlib.h>
#include <string.h>

#include "repositories/postgres/pg_internal.h"
#include "util/mem.h"

struct user_pg {
    struct pg_db *db; /* borrowed */
};

/* Every key of a user fits on one page of key_list. */
#define USER_PG_KEYS_MAX 1000

#define USER_PG_COLS                                                                               \
    "id, email, password_hash, nickname, status, roles, quota_max_vms, quota_max_vcpus, "          \
    "quota_max_memory_mib, quota_max_disk_gib, created_at, updated_at, revision"

#define API_KEY_PG_COLS "id, user_id, name, prefix, hash, created_at, last_used_at"

/*
 * Every query yields the marker flag as column 0, as pg_db_list() expects,
 * so that one row reader serves gets and lists alike.
 */
static const struct pg_stmt user_pg_insert_stmt = {
    "user_insert", "INSERT INTO users (" USER_PG_COLS ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, "
                   "$9, $10, $11, $12, $13)"};
static const struct pg_stmt user_pg_get_stmt = {"user_get", "SELECT false, " USER_PG_COLS
                                                            " FROM users WHERE id = $1"};
static const struct pg_stmt user_pg_get_by_email_stmt = {
    "user_get_by_email",
    "SELECT false, " USER_PG_COLS " FROM users WHERE lower(email) = lower($1)"};
static const struct pg_stmt user_pg_email_taken_stmt = {
    "user_email_taken", "SELECT EXISTS (SELECT 1 FROM users WHERE lower(email) = lower($1))"};
static const struct pg_stmt user_pg_list_stmt = {
    "user_list", "SELECT false, " USER_PG_COLS " FROM users ORDER BY created_at, id LIMIT $1"};
/* After a marker: the marker row itself (flagged), then the page. */
static const struct pg_stmt user_pg_list_after_stmt = {
    "user_list_after",
    "SELECT true, " USER_PG_COLS " FROM users WHERE id = $1 UNION ALL (SELECT false, " USER_PG_COLS
    " FROM users WHERE (created_at, id) > (SELECT created_at, id FROM users WHERE id = $1) ORDER "
    "BY created_at, id LIMIT $2) ORDER BY 1 DESC, created_at, id"};
static const struct pg_stmt user_pg_update_stmt = {
    "user_update",
    "UPDATE users SET email = $2, password_hash = $3, nickname = $4, status = $5, roles = $6, "
    "quota_max_vms = $7, quota_max_vcpus = $8, quota_max_memory_mib = $9, quota_max_disk_gib = "
    "$10, updated_at = $11, revision = revision + 1 WHERE id = $1 AND revision = $12"};
/* Why user_update changed nothing. */
static const struct pg_stmt user_pg_revision_stmt = {"user_revision",
                                                     "SELECT revision FROM users WHERE id = $1"};
static const struct pg_stmt user_pg_count_admins_stmt = {
    "user_count_admins", "SELECT count(*) FROM users WHERE status = $1 AND (roles & $2) <> 0"};

static const struct pg_stmt login_pg_failure_add_stmt = {
    "login_failure_add", "INSERT INTO login_failures (email, at) VALUES ($1, $2)"};
static const struct pg_stmt login_pg_failures_stmt = {
    "login_failures",
    "SELECT count(*), coalesce(max(at), 0) FROM login_failures WHERE email = $1 AND at >= $2"};
static const struct pg_stmt login_pg_failures_clear_stmt = {
    "login_failures_clear", "DELETE FROM login_failures WHERE email = $1"};

static const struct pg_stmt api_key_pg_insert_stmt = {"apikey_insert",
                                                      "INSERT INTO api_keys (" API_KEY_PG_COLS
                                                      ") VALUES ($1, $2, $3, $4, $5, $6, $7)"};
static const struct pg_stmt api_key_pg_get_by_prefix_stmt = {
    "apikey_get_by_prefix", "SELECT false, " API_KEY_PG_COLS " FROM api_keys WHERE prefix = $1"};
/*
 * What a failed key insert clashed with: the prefix of another key, the
 * name of one of the user's keys, the prefix at all; and whether the user
 * exists.
 */
static const struct pg_stmt api_key_pg_clashes_stmt = {
    "apikey_clashes",
    "SELECT EXISTS (SELECT 1 FROM api_keys WHERE prefix = $1 AND id <> $2), EXISTS (SELECT 1 FROM "
    "api_keys WHERE user_id = $3 AND name = $4), EXISTS (SELECT 1 FROM api_keys WHERE prefix = "
    "$1), EXISTS (SELECT 1 FROM users WHERE id = $3)"};
static const struct pg_stmt api_key_pg_list_stmt = {
    "apikey_list", "SELECT false, " API_KEY_PG_COLS
                   " FROM api_keys WHERE user_id = $1 ORDER BY created_at, id LIMIT $2"};
/* A NULL user lists every key, as SQLite's unscoped query does. */
static const struct pg_stmt api_key_pg_list_all_stmt = {
    "apikey_list_all",
    "SELECT false, " API_KEY_PG_COLS " FROM api_keys ORDER BY created_at, id LIMIT $1"};
static const struct pg_stmt api_key_pg_touch_stmt = {
    "apikey_touch", "UPDATE api_keys SET last_used_at = $2 WHERE id = $1"};
static const struct pg_stmt api_key_pg_remove_stmt = {
    "apikey_remove", "DELETE FROM api_keys WHERE id = $1 AND ($2::text IS NULL OR user_id = $2)"};

/* A quota limit < 0 ("not set": the default applies) is stored as NULL. */
static void
user_pg_param_limit(struct pg_params *p, int64_t limit)
{
    if (limit < 0)
        pg_param_text(p, NULL);
    else
        pg_param_int(p, limit);
}

static int64_t
user_pg_get_limit(const PGresult *res, int row, int col)
{
    if (pg_get_null(res, row, col))
        return -1;
    return pg_get_int(res, row, col);
}

static int
user_pg_read(const PGresult *res, int row, void *item, struct st_error *err)
{
    struct user *user = item;
    char status[32];

    memset(user, 0, sizeof(*user));
    pg_get_text(res, row, 1, user->id, sizeof(user->id));
    pg_get_text(res, row, 2, user->email, sizeof(user->email));
    pg_get_text(res, row, 3, user->password_hash, sizeof(user->password_hash));
    pg_get_text(res, row, 4, user->nickname, sizeof(user->nickname));
    pg_get_text(res, row, 5, status, sizeof(status));
    user->roles = (unsigned)pg_get_int(res, row, 6);
    user->quota.max_vms = user_pg_get_limit(res, row, 7);
    user->quota.max_vcpus = user_pg_get_limit(res, row, 8);
    user->quota.max_memory_mib = user_pg_get_limit(res, row, 9);
    user->quota.max_disk_gib = user_pg_get_limit(res, row, 10);
    user->created_at = pg_get_int(res, row, 11);
    user->updated_at = pg_get_int(res, row, 12);
    user->revision = (uint64_t)pg_get_int(res, row, 13);
    if (user_status_parse(status, &user->status) < 0)
        return st_error_set(err, ST_ERR_BACKEND, "user '%s' has an unknown status '%s' stored",
                            user->id, status);
    return 0;
}

static int
api_key_pg_read(const PGresult *res, int row, void *item, struct st_error *err)
{
    struct api_key *key = item;

    (void)err;
    memset(key, 0, sizeof(*key));
    pg_get_text(res, row, 1, key->id, sizeof(key->id));
    pg_get_text(res, row, 2, key->user_id, sizeof(key->user_id));
    pg_get_text(res, row, 3, key->name, sizeof(key->name));
    pg_get_text(res, row, 4, key->prefix, sizeof(key->prefix));
    pg_get_text(res, row, 5, key->hash, sizeof(key->hash));
    key->created_at = pg_get_int(res, row, 6);
    key->last_used_at = pg_get_int(res, row, 7); /* NULL reads as 0: never */
    return 0;
}

/*
 * The members of @user in the order of USER_PG_COLS, the immutable
 * created_at only when @with_created (the update leaves it alone).
 */
static void
user_pg_params(struct pg_params *p, const struct user *user, bool with_created)
{
    pg_params_init(p);
    pg_param_text(p, user->id);
    pg_param_text(p, user->email);
    pg_param_text(p, user->password_hash);
    pg_param_opt_text(p, user->nickname);
    pg_param_text(p, user_status_name(user->status));
    pg_param_int(p, user->roles);
    user_pg_param_limit(p, user->quota.max_vms);
    user_pg_param_limit(p, user->quota.max_vcpus);
    user_pg_param_limit(p, user->quota.max_memory_mib);
    user_pg_param_limit(p, user->quota.max_disk_gib);
    if (with_created)
        pg_param_int(p, user->created_at);
    pg_param_int(p, user->updated_at);
}

/*
 * A user insert that broke a unique constraint: SQLite checks the e-mail
 * before the id, so it is the e-mail's fault whenever the address is
 * taken.  Failing to look leaves the message as it was.
 */
static void
user_pg_insert_failed(struct user_pg *r, const struct user *user, struct st_error *err)
{
    struct st_error ignored = {0};
    struct pg_params p;
    PGresult *res;
    bool email_taken;

    if (!err || err->code != ST_ERR_CONFLICT)
        return;
    pg_params_init(&p);
    pg_param_text(&p, user->email);
    res = pg_db_exec(r->db, &user_pg_email_taken_stmt, &p, &ignored);
    if (!res)
        return;
    email_taken = PQntuples(res) == 1 && pg_get_bool(res, 0, 0);
    PQclear(res);
    if (email_taken)
        st_error_set_native(err, ST_ERR_CONFLICT, err->native,
                            "a user with e-mail '%s' already exists", user->email);
    else
        st_error_set_native(err, ST_ERR_CONFLICT, err->native, "a user with id '%s' already exists",
                            user->id);
}

static int
user_pg_insert(void *self, const struct user *user, struct st_error *err)
{
    struct user_pg *r = self;
    struct pg_row_ref ref = {
        .noun = "user", .id = user->id, .name = user->email, .name_is = "with e-mail"};
    struct pg_params p;

    user_pg_params(&p, user, true);
    pg_param_revision(&p, user->revision);
    if (pg_db_write_one(r->db, &user_pg_insert_stmt, &p, &ref, err) >= 0)
        return 0;
    user_pg_insert_failed(r, user, err);
    return -1;
}

static int
user_pg_get(void *self, const char *id, struct user *out, struct st_error *err)
{
    struct user_pg *r = self;
    struct user user;
    struct pg_params p;

    pg_params_init(&p);
    pg_param_text(&p, id);
    if (pg_db_get(r->db, &user_pg_get_stmt, &p, "user", id, user_pg_read, &user, err) < 0)
        return -1;
    *out = user;
    return 0;
}

static int
user_pg_get_by_email(void *self, const char *email, struct user *out, struct st_error *err)
{
    struct user_pg *r = self;
    struct user user;
    struct pg_params p;

    pg_params_init(&p);
    pg_param_text(&p, email);
    /* "no user with e-mail 'x'" */
    if (pg_db_get(r->db, &user_pg_get_by_email_stmt, &p, "user with e-mail", email, user_pg_read,
                  &user, err) < 0)
        return -1;
    *out = user;
    return 0;
}

static int
user_pg_list(void *self, const struct user_filter *f, struct user_list *out, struct st_error *err)
{
    struct user_pg *r = self;
    bool after = f->marker[0] != '\0';
    struct pg_params p;
    struct pg_page page;

    pg_params_init(&p);
    if (after)
        pg_param_text(&p, f->marker);
    pg_param_int(&p, pg_list_limit(f->limit));
    if (pg_db_list(r->db, after ? &user_pg_list_after_stmt : &user_pg_list_stmt, &p, "user",
                   f->marker, f->limit, sizeof(struct user), user_pg_read, &page, err) < 0)
        return -1;
    out->items = page.items;
    out->count = page.count;
    out->more = page.more;
    return 0;
}

static int
user_pg_update(void *self, const struct user *user, struct st_error *err)
{
    struct user_pg *r = self;
    struct pg_row_ref ref = {
        .noun = "user", .id = user->id, .name = user->email, .name_is = "with e-mail"};
    struct pg_params probe;
    struct pg_params p;

    user_pg_params(&p, user, false);
    pg_param_int(&p, (int64_t)user->revision);
    pg_params_init(&probe);
    pg_param_text(&probe, user->id);
    return pg_db_write_cas(r->db, &user_pg_update_stmt, &p, &user_pg_revision_stmt, &probe, &ref,
                           user->revision, err);
}

static int
user_pg_count_admins(void *self, size_t *out, struct st_error *err)
{
    struct user_pg *r = self;
    struct pg_params p;
    PGresult *res;

    pg_params_init(&p);
    pg_param_text(&p, user_status_name(USER_STATUS_ACTIVE));
    pg_param_int(&p, USER_ROLE_ADMIN);
    res = pg_db_exec(r->db, &user_pg_count_admins_stmt, &p, err);
    if (!res)
        return -1;
    *out = PQntuples(res) == 1 ? (size_t)pg_get_int(res, 0, 0) : 0;
    PQclear(res);
    return 0;
}

static int
user_pg_login_failure_add(void *self, const char *email, int64_t at, struct st_error *err)
{
    struct user_pg *r = self;
    struct pg_row_ref ref = {
        .noun = "login failure of", .id = email, .name = NULL, .name_is = NULL};
    struct pg_params p;

    pg_params_init(&p);
    pg_param_text(&p, email);
    pg_param_int(&p, at);
    return pg_db_write_one(r->db, &login_pg_failure_add_stmt, &p, &ref, err) < 0 ? -1 : 0;
}

/*
 * The failures of @email at or after @since: how many, and the time of the
 * newest of them (0 when there are none).
 */
static int
user_pg_login_failures(void *self, const char *email, int64_t since, size_t *count, int64_t *newest,
                       struct st_error *err)
{
    struct user_pg *r = self;
    struct pg_params p;
    PGresult *res;

    pg_params_init(&p);
    pg_param_text(&p, email);
    pg_param_int(&p, since);
    res = pg_db_exec(r->db, &login_pg_failures_stmt, &p, err);
    if (!res)
        return -1;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return st_error_set(err, ST_ERR_BACKEND,
                            "cannot count the login failures of '%s': no row came back", email);
    }
    *count = (size_t)pg_get_int(res, 0, 0);
    *newest = pg_get_int(res, 0, 1);
    PQclear(res);
    return 0;
}

/* Nothing to forget is no error. */
static int
user_pg_login_failures_clear(void *self, const char *email, struct st_error *err)
{
    struct user_pg *r = self;
    struct pg_row_ref ref = {
        .noun = "login failures of", .id = email, .name = NULL, .name_is = NULL};
    struct pg_params p;

    pg_params_init(&p);
    pg_param_text(&p, email);
    return pg_db_write(r->db, &login_pg_failures_clear_stmt, &p, &ref, err) < 0 ? -1 : 0;
}

static int
api_key_pg_get_by_prefix(void *self, const char *prefix, struct api_key *out, struct st_error *err)
{
    struct user_pg *r = self;
    struct api_key key;
    struct pg_params p;

    pg_params_init(&p);
    pg_param_text(&p, prefix);
    /* "no API key with prefix 'x'" */
    if (pg_db_get(r->db, &api_key_pg_get_by_prefix_stmt, &p, "API key with prefix", prefix,
                  api_key_pg_read, &key, err) < 0)
        return -1;
    *out = key;
    return 0;
}

/*
 * A failed key insert, told as SQLite tells it: SQLite checks the
 * (user, name) pair, then the prefix, then the id, names a prefix taken by
 * another key whatever it found first, and reports a missing user only
 * when no unique constraint broke.  Failing to look leaves the message as
 * it was.
 */
static void
api_key_pg_insert_failed(struct user_pg *r, const struct api_key *key, struct st_error *err)
{
    struct st_error ignored = {0};
    struct pg_params p;
    PGresult *res;
    bool other_prefix, name_taken, prefix_taken, user_exists;

    if (!err || err->code == ST_ERR_UNAVAILABLE)
        return;
    pg_params_init(&p);
    pg_param_text(&p, key->prefix);
    pg_param_text(&p, key->id);
    pg_param_text(&p, key->user_id);
    pg_param_opt_text(&p, key->name);
    res = pg_db_exec(r->db, &api_key_pg_clashes_stmt, &p, &ignored);
    if (!res)
        return;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return;
    }
    other_prefix = pg_get_bool(res, 0, 0);
    name_taken = pg_get_bool(res, 0, 1);
    prefix_taken = pg_get_bool(res, 0, 2);
    user_exists = pg_get_bool(res, 0, 3);
    PQclear(res);
    if (err->code != ST_ERR_CONFLICT) {
        if (!user_exists)
            st_error_set_native(err, ST_ERR_NOT_FOUND, err->native, "no user '%s'", key->user_id);
    } else if (other_prefix) {
        st_error_set_native(err, ST_ERR_CONFLICT, err->native,
                            "an API key with prefix '%s' already exists", key->prefix);
    } else if (name_taken || prefix_taken) {
        st_error_set_native(err, ST_ERR_CONFLICT, err->native,
                            "an API key named '%s' already exists", key->name);
    } else {
        st_error_set_native(err, ST_ERR_CONFLICT, err->native,
                            "an API key with id '%s' already exists", key->id);
    }
}

static int
api_key_pg_insert(void *self, const struct api_key *key, struct st_error *err)
{
    struct user_pg *r = self;
    struct pg_row_ref ref = {.noun = "API key", .id = key->id, .name = key->name, .name_is = NULL};
    struct pg_params p;

    pg_params_init(&p);
    pg_param_text(&p, key->id);
    pg_param_text(&p, key->user_id);
    /* An unnamed key is stored with a NULL name, which clashes with nothing. */
    pg_param_opt_text(&p, key->name);
    pg_param_text(&p, key->prefix);
    pg_param_text(&p, key->hash);
    pg_param_int(&p, key->created_at);
    if (key->last_used_at)
        pg_param_int(&p, key->last_used_at);
    else
        pg_param_text(&p, NULL);
    if (pg_db_write_one(r->db, &api_key_pg_insert_stmt, &p, &ref, err) >= 0)
        return 0;
    api_key_pg_insert_failed(r, key, err);
    return -1;
}

static int
api_key_pg_list(void *self, const char *user_id, struct api_key_list *out, struct st_error *err)
{
    struct user_pg *r = self;
    struct pg_params p;
    struct pg_page page;

    pg_params_init(&p);
    if (user_id)
        pg_param_text(&p, user_id);
    pg_param_int(&p, pg_list_limit(USER_PG_KEYS_MAX));
    if (pg_db_list(r->db, user_id ? &api_key_pg_list_stmt : &api_key_pg_list_all_stmt, &p,
                   "API key", "", USER_PG_KEYS_MAX, sizeof(struct api_key), api_key_pg_read, &page,
                   err) < 0)
        return -1;
    out->items = page.items;
    out->count = page.count;
    out->more = page.more;
    return 0;
}

static int
api_key_pg_touch(void *self, const char *id, int64_t at, struct st_error *err)
{
    struct user_pg *r = self;
    struct pg_row_ref ref = {.noun = "API key", .id = id, .name = NULL, .name_is = NULL};
    struct pg_params p;

    pg_params_init(&p);
    pg_param_text(&p, id);
    pg_param_int(&p, at);
    return pg_db_write_one(r->db, &api_key_pg_touch_stmt, &p, &ref, err) < 0 ? -1 : 0;
}

static int
api_key_pg_remove(void *self, const char *user_id, const char *id, struct st_error *err)
{
    struct user_pg *r = self;
    struct pg_row_ref ref = {.noun = "API key", .id = id, .name = NULL, .name_is = NULL};
    struct pg_params p;

    pg_params_init(&p);
    pg_param_text(&p, id);
    pg_param_text(&p, user_id);
    return pg_db_write_one(r->db, &api_key_pg_remove_stmt, &p, &ref, err) < 0 ? -1 : 0;
}

static void
user_pg_close(void *self)
{
    free(self);
}

static const struct user_repo_ops user_pg_ops = {
    .insert = user_pg_insert,
    .get = user_pg_get,
    .get_by_email = user_pg_get_by_email,
    .list = user_pg_list,
    .update = user_pg_update,
    .count_admins = user_pg_count_admins,
    .login_failure_add = user_pg_login_failure_add,
    .login_failures = user_pg_login_failures,
    .login_failures_clear = user_pg_login_failures_clear,
    .key_insert = api_key_pg_insert,
    .key_get_by_prefix = api_key_pg_get_by_prefix,
    .key_list = api_key_pg_list,
    .key_touch = api_key_pg_touch,
    .key_remove = api_key_pg_remove,
    .close = user_pg_close,
};

/* Statements are prepared on first use (pg_internal.h): opening cannot fail. */
int
user_repo_pg_open(struct pg_db *db, struct user_repo *out, struct st_error *err)
{
    struct user_pg *r = st_xcalloc(1, sizeof(*r));

    (void)err;
    r->db = db;
    out->ops = &user_pg_ops;
    out->self = r;
    return 0;
}
