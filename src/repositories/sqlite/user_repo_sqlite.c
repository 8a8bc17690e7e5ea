/*
 * user_repo_sqlite.c - users, their API keys and failed logins in SQLite.
 *
 * The users table is served by the shared table helper as a table nobody
 * owns; API keys by the same helper, owned through user_id.
 */
#include "repositories/sqlite/sqlite_db.h"

#include <stdlib.h>
#include <string.h>

#include "repositories/sqlite/sqlite_internal.h"
#include "util/mem.h"

struct user_sqlite {
    struct sqlite_db *db; /* borrowed */
    struct sqlite_table *users;
    struct sqlite_table *keys;
    sqlite3_stmt *get_by_email;
    sqlite3_stmt *update;
    sqlite3_stmt *count_admins;
    sqlite3_stmt *failure_add;
    sqlite3_stmt *failures;
    sqlite3_stmt *failures_clear;
    sqlite3_stmt *key_by_prefix;
    sqlite3_stmt *key_touch;
};

/* A quota limit < 0 ("not set": the default applies) is stored as NULL. */
static int
user_sqlite_bind_limit(sqlite3_stmt *st, int idx, int64_t limit)
{
    if (limit < 0)
        return sqlite3_bind_null(st, idx);
    return sqlite3_bind_int64(st, idx, limit);
}

static int64_t
user_sqlite_column_limit(sqlite3_stmt *st, int col)
{
    if (sqlite3_column_type(st, col) == SQLITE_NULL)
        return -1;
    return sqlite3_column_int64(st, col);
}

static int
user_sqlite_read(sqlite3_stmt *st, void *item, struct st_error *err)
{
    struct user *user = item;
    char status[32];

    memset(user, 0, sizeof(*user));
    sqlite_column_text(st, 1, user->id, sizeof(user->id));
    sqlite_column_text(st, 2, user->email, sizeof(user->email));
    sqlite_column_text(st, 3, user->password_hash, sizeof(user->password_hash));
    sqlite_column_text(st, 4, user->nickname, sizeof(user->nickname));
    sqlite_column_text(st, 5, status, sizeof(status));
    user->roles = (unsigned)sqlite3_column_int64(st, 6);
    user->quota.max_vms = user_sqlite_column_limit(st, 7);
    user->quota.max_vcpus = user_sqlite_column_limit(st, 8);
    user->quota.max_memory_mib = user_sqlite_column_limit(st, 9);
    user->quota.max_disk_gib = user_sqlite_column_limit(st, 10);
    user->created_at = sqlite3_column_int64(st, 11);
    user->updated_at = sqlite3_column_int64(st, 12);
    user->revision = (uint64_t)sqlite3_column_int64(st, 13);
    if (user_status_parse(status, &user->status) < 0)
        return st_error_set(err, ST_ERR_BACKEND, "user '%s' has an unknown status '%s' stored",
                            user->id, status);
    return 0;
}

#define USER_SQLITE_COLS                                                                           \
    "id, email, password_hash, nickname, status, roles, quota_max_vms, quota_max_vcpus, "          \
    "quota_max_memory_mib, quota_max_disk_gib, created_at, updated_at, revision"

static const struct sqlite_table_spec user_sqlite_table = {
    .table = "users",
    .noun = "user",
    .cols = USER_SQLITE_COLS,
    .size = sizeof(struct user),
    .read = user_sqlite_read,
    .list_where = NULL,
    .remove_where = NULL,
    .owner_col = NULL,
    .unowned = true,
    .shared_where = NULL,
};

static int
api_key_sqlite_read(sqlite3_stmt *st, void *item, struct st_error *err)
{
    struct api_key *key = item;

    (void)err;
    memset(key, 0, sizeof(*key));
    sqlite_column_text(st, 1, key->id, sizeof(key->id));
    sqlite_column_text(st, 2, key->user_id, sizeof(key->user_id));
    sqlite_column_text(st, 3, key->name, sizeof(key->name));
    sqlite_column_text(st, 4, key->prefix, sizeof(key->prefix));
    sqlite_column_text(st, 5, key->hash, sizeof(key->hash));
    key->created_at = sqlite3_column_int64(st, 6);
    key->last_used_at = sqlite3_column_int64(st, 7); /* NULL reads as 0: never */
    return 0;
}

#define API_KEY_SQLITE_COLS "id, user_id, name, prefix, hash, created_at, last_used_at"

static const struct sqlite_table_spec api_key_sqlite_table = {
    .table = "api_keys",
    .noun = "API key",
    .cols = API_KEY_SQLITE_COLS,
    .size = sizeof(struct api_key),
    .read = api_key_sqlite_read,
    .list_where = NULL,
    .remove_where = NULL,
    .owner_col = "user_id",
    .unowned = false,
    .shared_where = NULL,
};

/* Every key of a user fits on one page of key_list. */
#define USER_SQLITE_KEYS_MAX 1000

/*
 * A user as ?1..?12 in the order of USER_SQLITE_COLS, the revision
 * (?13) left to the caller; true when a bind failed.
 */
static bool
user_sqlite_bind(sqlite3_stmt *st, const struct user *user)
{
    return sqlite_bind_text(st, 1, user->id) || sqlite_bind_text(st, 2, user->email) ||
           sqlite_bind_text(st, 3, user->password_hash) ||
           sqlite_bind_opt_text(st, 4, user->nickname) ||
           sqlite_bind_text(st, 5, user_status_name(user->status)) ||
           sqlite3_bind_int64(st, 6, user->roles) ||
           user_sqlite_bind_limit(st, 7, user->quota.max_vms) ||
           user_sqlite_bind_limit(st, 8, user->quota.max_vcpus) ||
           user_sqlite_bind_limit(st, 9, user->quota.max_memory_mib) ||
           user_sqlite_bind_limit(st, 10, user->quota.max_disk_gib) ||
           sqlite3_bind_int64(st, 11, user->created_at) ||
           sqlite3_bind_int64(st, 12, user->updated_at);
}

static int
user_sqlite_insert(void *self, const struct user *user, struct st_error *err)
{
    struct user_sqlite *r = self;
    struct sqlite_row_ref ref = {
        .noun = "user", .id = user->id, .name = user->email, .name_is = "with e-mail"};
    sqlite3_stmt *st = r->users->insert;

    return sqlite_table_write(
        r->users, st, user_sqlite_bind(st, user) || sqlite_bind_revision(st, 13, user->revision),
        "insert", &ref, err);
}

static int
user_sqlite_get(void *self, const char *id, struct user *out, struct st_error *err)
{
    struct user_sqlite *r = self;

    return sqlite_table_get(r->users, NULL, id, out, err);
}

static int
user_sqlite_get_by_email(void *self, const char *email, struct user *out, struct st_error *err)
{
    struct user_sqlite *r = self;
    struct user user;
    int rc = sqlite_bind_text(r->get_by_email, 1, email);

    if (rc != SQLITE_OK) {
        sqlite_db_fail(r->db, rc, err, "cannot read user with e-mail '%s'", email);
        sqlite_stmt_done(r->get_by_email);
        return -1;
    }
    /* "no user with e-mail 'x'" */
    if (sqlite_db_get(r->db, r->get_by_email, "user with e-mail", email, user_sqlite_read, &user,
                      err) < 0)
        return -1;
    *out = user;
    return 0;
}

static int
user_sqlite_list(void *self, const struct user_filter *f, struct user_list *out,
                 struct st_error *err)
{
    struct user_sqlite *r = self;
    struct sqlite_page page;

    if (sqlite_table_list(r->users, NULL, f->marker, f->limit, NULL, NULL, &page, err) < 0)
        return -1;
    out->items = page.items;
    out->count = page.count;
    out->more = page.more;
    return 0;
}

static int
user_sqlite_update(void *self, const struct user *user, struct st_error *err)
{
    struct user_sqlite *r = self;
    struct sqlite_row_ref ref = {
        .noun = "user", .id = user->id, .name = user->email, .name_is = "with e-mail"};
    sqlite3_stmt *st = r->update;

    /*
     * The update leaves created_at (?11) alone, but takes the insert's
     * parameters, and the revision it read as ?13.
     */
    return sqlite_table_write_cas(r->users, st,
                                  user_sqlite_bind(st, user) ||
                                      sqlite3_bind_int64(st, 13, (sqlite3_int64)user->revision),
                                  "update", NULL, user->revision, &ref, err);
}

static int
user_sqlite_count_admins(void *self, size_t *out, struct st_error *err)
{
    struct user_sqlite *r = self;
    sqlite3_stmt *st = r->count_admins;
    int rc = sqlite_bind_text(st, 1, user_status_name(USER_STATUS_ACTIVE));

    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 2, USER_ROLE_ADMIN);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite_db_fail(r->db, rc, err, "cannot count the active admins");
        sqlite_stmt_done(st);
        return -1;
    }
    *out = (size_t)sqlite3_column_int64(st, 0);
    sqlite_stmt_done(st);
    return 0;
}

static int
user_sqlite_login_failure_add(void *self, const char *email, int64_t at, struct st_error *err)
{
    struct user_sqlite *r = self;
    struct sqlite_row_ref ref = {
        .noun = "login failure of", .id = email, .name = NULL, .name_is = NULL};
    sqlite3_stmt *st = r->failure_add;
    int rc = sqlite_bind_text(st, 1, email);

    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 2, at);
    if (rc != SQLITE_OK) {
        sqlite_db_fail(r->db, rc, err, "cannot record a login failure of '%s'", email);
        sqlite_stmt_done(st);
        return -1;
    }
    return sqlite_db_write(r->db, st, &ref, err);
}

/*
 * The failures of @email at or after @since: how many, and the time of the
 * newest of them (0 when there are none).
 */
static int
user_sqlite_login_failures(void *self, const char *email, int64_t since, size_t *count,
                           int64_t *newest, struct st_error *err)
{
    struct user_sqlite *r = self;
    sqlite3_stmt *st = r->failures;
    int rc = sqlite_bind_text(st, 1, email);

    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 2, since);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite_db_fail(r->db, rc, err, "cannot count the login failures of '%s'", email);
        sqlite_stmt_done(st);
        return -1;
    }
    *count = (size_t)sqlite3_column_int64(st, 0);
    *newest = sqlite3_column_int64(st, 1);
    sqlite_stmt_done(st);
    return 0;
}

/* Nothing to forget is no error: one transaction, whatever it deletes. */
static int
user_sqlite_login_failures_clear(void *self, const char *email, struct st_error *err)
{
    struct user_sqlite *r = self;
    struct sqlite_row_ref ref = {
        .noun = "login failures of", .id = email, .name = NULL, .name_is = NULL};
    sqlite3_stmt *st = r->failures_clear;
    int rc = sqlite_bind_text(st, 1, email);

    if (rc != SQLITE_OK) {
        sqlite_db_fail(r->db, rc, err, "cannot forget the login failures of '%s'", email);
        sqlite_stmt_done(st);
        return -1;
    }
    if (sqlite_db_begin(r->db, err) < 0) {
        sqlite_stmt_done(st);
        return -1;
    }
    if (sqlite_db_write_step(r->db, st, &ref, err) < 0) {
        sqlite_db_rollback(r->db);
        return -1;
    }
    return sqlite_db_commit(r->db, err);
}

static int
api_key_sqlite_get_by_prefix(void *self, const char *prefix, struct api_key *out,
                             struct st_error *err)
{
    struct user_sqlite *r = self;
    struct api_key key;
    int rc = sqlite_bind_text(r->key_by_prefix, 1, prefix);

    if (rc != SQLITE_OK) {
        sqlite_db_fail(r->db, rc, err, "cannot read API key with prefix '%s'", prefix);
        sqlite_stmt_done(r->key_by_prefix);
        return -1;
    }
    /* "no API key with prefix 'x'" */
    if (sqlite_db_get(r->db, r->key_by_prefix, "API key with prefix", prefix, api_key_sqlite_read,
                      &key, err) < 0)
        return -1;
    *out = key;
    return 0;
}

/*
 * A failed key insert says more than the constraint: a user that does not
 * exist, or (names and ids being unique already) a prefix that is taken.
 */
static void
api_key_sqlite_insert_failed(struct user_sqlite *r, const struct api_key *key, struct st_error *err)
{
    struct api_key other;
    struct st_error ignored = {0};

    if (!err)
        return;
    if (err->native == SQLITE_CONSTRAINT_FOREIGNKEY)
        st_error_set_native(err, ST_ERR_NOT_FOUND, err->native, "no user '%s'", key->user_id);
    else if (err->code == ST_ERR_CONFLICT &&
             api_key_sqlite_get_by_prefix(r, key->prefix, &other, &ignored) == 0 &&
             strcmp(other.id, key->id) != 0)
        st_error_set_native(err, ST_ERR_CONFLICT, err->native,
                            "an API key with prefix '%s' already exists", key->prefix);
}

static int
api_key_sqlite_insert(void *self, const struct api_key *key, struct st_error *err)
{
    struct user_sqlite *r = self;
    struct sqlite_row_ref ref = {
        .noun = "API key", .id = key->id, .name = key->name, .name_is = NULL};
    sqlite3_stmt *st = r->keys->insert;
    /* An unnamed key is stored with a NULL name, which clashes with nothing. */
    bool bind_failed = sqlite_bind_text(st, 1, key->id) || sqlite_bind_text(st, 2, key->user_id) ||
                       sqlite_bind_opt_text(st, 3, key->name) ||
                       sqlite_bind_text(st, 4, key->prefix) || sqlite_bind_text(st, 5, key->hash) ||
                       sqlite3_bind_int64(st, 6, key->created_at) ||
                       (key->last_used_at ? sqlite3_bind_int64(st, 7, key->last_used_at)
                                          : sqlite3_bind_null(st, 7));

    if (sqlite_table_write(r->keys, st, bind_failed, "insert", &ref, err) == 0)
        return 0;
    api_key_sqlite_insert_failed(r, key, err);
    return -1;
}

static int
api_key_sqlite_list(void *self, const char *user_id, struct api_key_list *out, struct st_error *err)
{
    struct user_sqlite *r = self;
    struct sqlite_page page;

    if (sqlite_table_list(r->keys, user_id, "", USER_SQLITE_KEYS_MAX, NULL, NULL, &page, err) < 0)
        return -1;
    out->items = page.items;
    out->count = page.count;
    out->more = page.more;
    return 0;
}

static int
api_key_sqlite_touch(void *self, const char *id, int64_t at, struct st_error *err)
{
    struct user_sqlite *r = self;
    struct sqlite_row_ref ref = {.noun = "API key", .id = id, .name = NULL, .name_is = NULL};
    sqlite3_stmt *st = r->key_touch;
    bool bind_failed = sqlite_bind_text(st, 1, id) || sqlite3_bind_int64(st, 2, at);

    return sqlite_table_write(r->keys, st, bind_failed, "touch", &ref, err);
}

static int
api_key_sqlite_remove(void *self, const char *user_id, const char *id, struct st_error *err)
{
    struct user_sqlite *r = self;

    return sqlite_table_remove(r->keys, user_id, id, err);
}

static void
user_sqlite_close(void *self)
{
    struct user_sqlite *r = self;

    if (!r)
        return;
    sqlite3_finalize(r->get_by_email);
    sqlite3_finalize(r->update);
    sqlite3_finalize(r->count_admins);
    sqlite3_finalize(r->failure_add);
    sqlite3_finalize(r->failures);
    sqlite3_finalize(r->failures_clear);
    sqlite3_finalize(r->key_by_prefix);
    sqlite3_finalize(r->key_touch);
    sqlite_table_close(r->users);
    sqlite_table_close(r->keys);
    free(r);
}

static const struct user_repo_ops user_sqlite_ops = {
    .insert = user_sqlite_insert,
    .get = user_sqlite_get,
    .get_by_email = user_sqlite_get_by_email,
    .list = user_sqlite_list,
    .update = user_sqlite_update,
    .count_admins = user_sqlite_count_admins,
    .login_failure_add = user_sqlite_login_failure_add,
    .login_failures = user_sqlite_login_failures,
    .login_failures_clear = user_sqlite_login_failures_clear,
    .key_insert = api_key_sqlite_insert,
    .key_get_by_prefix = api_key_sqlite_get_by_prefix,
    .key_list = api_key_sqlite_list,
    .key_touch = api_key_sqlite_touch,
    .key_remove = api_key_sqlite_remove,
    .close = user_sqlite_close,
};

static int
user_sqlite_prepare(struct user_sqlite *r, struct st_error *err)
{
    const struct {
        const char *sql;
        sqlite3_stmt **st;
    } stmts[] = {
        {"SELECT 0, " USER_SQLITE_COLS " FROM users WHERE email = ?1", &r->get_by_email},
        {"UPDATE users SET email = ?2, password_hash = ?3, nickname = ?4, status = ?5, roles = ?6, quota_max_vms = ?7, quota_max_vcpus = ?8, quota_max_memory_mib = ?9, quota_max_disk_gib = ?10, updated_at = ?12, revision = revision + 1 WHERE id = ?1 AND revision = ?13",
         &r->update},
        {"SELECT count(*) FROM users WHERE status = ?1 AND (roles & ?2) != 0", &r->count_admins},
        {"INSERT INTO login_failures (email, at) VALUES (?1, ?2)", &r->failure_add},
        {"SELECT count(*), coalesce(max(at), 0) FROM login_failures WHERE email = ?1 AND at >= ?2",
         &r->failures},
        {"DELETE FROM login_failures WHERE email = ?1", &r->failures_clear},
        {"SELECT 0, " API_KEY_SQLITE_COLS " FROM api_keys WHERE prefix = ?1", &r->key_by_prefix},
        {"UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1", &r->key_touch},
    };
    size_t i;

    for (i = 0; i < ST_ARRAY_LEN(stmts); i++)
        if (sqlite_db_prepare(r->db, stmts[i].sql, stmts[i].st, err) < 0)
            return -1;
    return 0;
}

int
user_repo_sqlite_open(struct sqlite_db *db, struct user_repo *out, struct st_error *err)
{
    struct user_sqlite *r = st_xcalloc(1, sizeof(*r));

    r->db = db;
    r->users = sqlite_table_open(db, &user_sqlite_table, err);
    if (!r->users)
        goto fail;
    r->keys = sqlite_table_open(db, &api_key_sqlite_table, err);
    if (!r->keys || user_sqlite_prepare(r, err) < 0)
        goto fail;
    out->ops = &user_sqlite_ops;
    out->self = r;
    return 0;

fail:
    st_error_prefix(err, "cannot open the user repository");
    user_sqlite_close(r);
    return -1;
}
