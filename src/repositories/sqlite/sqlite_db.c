#include "repositories/sqlite/sqlite_db.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "repositories/sqlite/sqlite_internal.h"
#include "util/ids.h"
#include "util/mem.h"

struct sqlite_db {
    sqlite3 *conn;
    sqlite3_stmt *begin;
    sqlite3_stmt *commit;
    sqlite3_stmt *rollback;
    sqlite3_stmt *version;
    sqlite3_stmt *record;
    sqlite3_stmt *ping;
    int busy_bound_ms;
    /*
     * Open levels of the one transaction (0: none), and whether an inner
     * level rolled back, which dooms the whole: SQLite cannot undo a part.
     */
    unsigned depth;
    bool doomed;
};

/*
 * Schema migrations, oldest first.  Entry i is version i + 1.  Append only:
 * a published entry is never edited, since databases out there recorded it
 * as applied.
 */
static const char *const sqlite_migrations[] = {
    /* 1: VMs, images, flavors. Enums are stored by name, times in ms since epoch. */
    "CREATE TABLE vms ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  owner_id TEXT NOT NULL,"
    "  name TEXT NOT NULL,"
    "  status TEXT NOT NULL,"
    "  step TEXT NOT NULL,"
    "  vcpus INTEGER NOT NULL,"
    "  memory_mib INTEGER NOT NULL,"
    "  disk_gib INTEGER NOT NULL,"
    "  image_id TEXT NOT NULL,"
    "  flavor_id TEXT,"
    "  fault TEXT,"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL"
    ");"
    "CREATE UNIQUE INDEX vms_owner_name ON vms (owner_id, name);"
    "CREATE INDEX vms_owner_page ON vms (owner_id, created_at, id);"
    "CREATE INDEX vms_image ON vms (image_id);"
    /* Unscoped (admin, recovery) paging over every VM. */
    "CREATE INDEX vms_page ON vms (created_at, id);"
    "CREATE TABLE images ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  owner_id TEXT NOT NULL,"
    "  name TEXT NOT NULL,"
    "  format TEXT NOT NULL,"
    "  status TEXT NOT NULL,"
    "  size_bytes INTEGER NOT NULL,"
    "  virtual_size_bytes INTEGER NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL"
    ");"
    "CREATE UNIQUE INDEX images_owner_name ON images (owner_id, name);"
    "CREATE INDEX images_owner_page ON images (owner_id, created_at, id);"
    "CREATE TABLE flavors ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  owner_id TEXT NOT NULL,"
    "  name TEXT NOT NULL,"
    "  vcpus INTEGER NOT NULL,"
    "  memory_mib INTEGER NOT NULL,"
    "  disk_gib INTEGER NOT NULL,"
    "  created_at INTEGER NOT NULL"
    ");"
    "CREATE UNIQUE INDEX flavors_owner_name ON flavors (owner_id, name);"
    "CREATE INDEX flavors_owner_page ON flavors (owner_id, created_at, id);",
    /*
     * 2: identity.  Users (e-mail stored lower case; a NULL quota member
     * means the configured default), their API keys, failed logins for
     * throttling, the audit hash chain (seq assigned newest + 1 inside the
     * append transaction), and image visibility.
     */
    "CREATE TABLE users ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  email TEXT NOT NULL UNIQUE COLLATE NOCASE,"
    "  password_hash TEXT NOT NULL,"
    "  nickname TEXT,"
    "  status TEXT NOT NULL,"
    "  roles INTEGER NOT NULL,"
    "  quota_max_vms INTEGER,"
    "  quota_max_vcpus INTEGER,"
    "  quota_max_memory_mib INTEGER,"
    "  quota_max_disk_gib INTEGER,"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL"
    ");"
    "CREATE INDEX users_page ON users (created_at, id);"
    "CREATE TABLE api_keys ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  user_id TEXT NOT NULL REFERENCES users (id),"
    "  name TEXT,"
    "  prefix TEXT NOT NULL UNIQUE,"
    "  hash TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  last_used_at INTEGER,"
    "  UNIQUE (user_id, name)"
    ");"
    "CREATE INDEX api_keys_user_page ON api_keys (user_id, created_at, id);"
    "CREATE TABLE login_failures ("
    "  email TEXT NOT NULL,"
    "  at INTEGER NOT NULL"
    ");"
    "CREATE INDEX login_failures_email_at ON login_failures (email, at);"
    "CREATE TABLE audit_log ("
    "  seq INTEGER PRIMARY KEY,"
    "  id TEXT UNIQUE NOT NULL,"
    "  at INTEGER NOT NULL,"
    "  user_id TEXT,"
    "  method TEXT,"
    "  route TEXT,"
    "  target_id TEXT,"
    "  status INTEGER,"
    "  request_id TEXT,"
    "  client_addr TEXT,"
    "  prev_hash TEXT,"
    "  hash TEXT NOT NULL"
    ");"
    "CREATE INDEX audit_log_user ON audit_log (user_id);"
    "CREATE INDEX audit_log_target ON audit_log (target_id);"
    "ALTER TABLE images ADD COLUMN visibility TEXT NOT NULL DEFAULT 'private';",
    /*
     * 3: durable operations, VM events and idempotency records.  A time of
     * 0 is "not yet"; step is '' before the first, error and worker_id are
     * NULL when there is none.  operations_active makes "one queued or
     * running operation per VM" a constraint rather than a check, and
     * operations_claim serves the claim's search for the oldest queued
     * one.  Events carry their VM's owner so that they outlive the VM row.
     * An idempotency record's status is the answer's HTTP status, 0 while
     * the first request is still being served.
     */
    "CREATE TABLE operations ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  kind TEXT NOT NULL,"
    "  target_id TEXT NOT NULL,"
    "  owner_id TEXT NOT NULL,"
    "  status TEXT NOT NULL,"
    "  step TEXT NOT NULL,"
    "  error TEXT,"
    "  created_at INTEGER NOT NULL,"
    "  started_at INTEGER NOT NULL,"
    "  finished_at INTEGER NOT NULL,"
    "  worker_id TEXT,"
    "  lease_expires_at INTEGER NOT NULL,"
    "  attempts INTEGER NOT NULL"
    ");"
    "CREATE INDEX operations_claim ON operations (status, created_at, id);"
    "CREATE INDEX operations_target ON operations (target_id);"
    "CREATE INDEX operations_owner_page ON operations (owner_id, created_at, id);"
    "CREATE INDEX operations_page ON operations (created_at, id);"
    "CREATE UNIQUE INDEX operations_active ON operations (target_id)"
    "  WHERE status IN ('queued', 'running');"
    "CREATE TABLE vm_events ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  vm_id TEXT NOT NULL,"
    "  owner_id TEXT NOT NULL,"
    "  at INTEGER NOT NULL,"
    "  type TEXT NOT NULL,"
    "  message TEXT NOT NULL,"
    "  data TEXT"
    ");"
    "CREATE INDEX vm_events_vm ON vm_events (vm_id, at, id);"
    "CREATE INDEX vm_events_at ON vm_events (at);"
    "CREATE TABLE idempotency_keys ("
    "  owner_id TEXT NOT NULL,"
    "  key TEXT NOT NULL,"
    "  request_hash TEXT NOT NULL,"
    "  status INTEGER NOT NULL,"
    "  body TEXT,"
    "  location TEXT,"
    "  created_at INTEGER NOT NULL,"
    "  expires_at INTEGER NOT NULL,"
    "  PRIMARY KEY (owner_id, key)"
    ");"
    "CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);",
    /*
     * 4: revisions.  Every row a caller reads and writes back carries one,
     * bumped by each update, which names the revision it read
     * (compare-and-set); rows written before this migration start at 1.
     */
    "ALTER TABLE vms ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;"
    "ALTER TABLE images ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;"
    "ALTER TABLE flavors ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;"
    "ALTER TABLE users ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;"
    "ALTER TABLE operations ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;",
};

static bool
sqlite_is_busy(int rc)
{
    int primary = rc & 0xff;

    return primary == SQLITE_BUSY || primary == SQLITE_LOCKED;
}

/* Sleep before the next attempt; false once the busy bound would be passed. */
static bool
sqlite_db_backoff(struct sqlite_db *db, int64_t start, int64_t *pause)
{
    if (st_monotonic_ms() - start + *pause > db->busy_bound_ms)
        return false;
    st_sleep_ms(*pause);
    *pause = *pause * 2 > 100 ? 100 : *pause * 2;
    return true;
}

/*
 * Step a statement that returns no rows (BEGIN, COMMIT), again while the
 * database is busy.  The busy handler already waited inside each attempt;
 * the loop bounds the total and survives SQLITE_LOCKED, which the handler
 * does not cover.
 */
static int
sqlite_db_step_retrying(struct sqlite_db *db, sqlite3_stmt *st)
{
    int64_t start = st_monotonic_ms();
    int64_t pause = 2;
    int rc;

    for (;;) {
        rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (!sqlite_is_busy(rc) || !sqlite_db_backoff(db, start, &pause))
            return rc;
    }
}

static int
sqlite_db_exec_retrying(struct sqlite_db *db, const char *sql)
{
    int64_t start = st_monotonic_ms();
    int64_t pause = 2;
    int rc;

    for (;;) {
        rc = sqlite3_exec(db->conn, sql, NULL, NULL, NULL);
        if (!sqlite_is_busy(rc) || !sqlite_db_backoff(db, start, &pause))
            return rc;
    }
}

sqlite3 *
sqlite_db_handle(struct sqlite_db *db)
{
    return db->conn;
}

void
sqlite_db_set_busy_bound(struct sqlite_db *db, int ms)
{
    int per_attempt = ms / 2;

    db->busy_bound_ms = ms;
    if (per_attempt > SQLITE_DB_BUSY_TIMEOUT_MS)
        per_attempt = SQLITE_DB_BUSY_TIMEOUT_MS;
    sqlite3_busy_timeout(db->conn, per_attempt);
}

int
sqlite_db_fail_at(struct sqlite_db *db, int rc, struct st_error *err, const char *file, int line,
                  const char *fmt, ...)
{
    char what[ST_ERROR_MSG_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    if (sqlite_is_busy(rc))
        return st_error_set_at(err, ST_ERR_UNAVAILABLE, rc, file, line,
                               "%s: the database is busy, try again later (%s)", what,
                               sqlite3_errmsg(db->conn));
    return st_error_set_at(err, ST_ERR_BACKEND, rc, file, line, "%s: %s", what,
                           sqlite3_errmsg(db->conn));
}

int
sqlite_db_prepare(struct sqlite_db *db, const char *sql, sqlite3_stmt **out, struct st_error *err)
{
    int rc = sqlite3_prepare_v3(db->conn, sql, -1, SQLITE_PREPARE_PERSISTENT, out, NULL);

    if (rc != SQLITE_OK)
        return sqlite_db_fail(db, rc, err, "cannot prepare a statement");
    return 0;
}

void
sqlite_stmt_done(sqlite3_stmt *st)
{
    if (!st)
        return;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

int
sqlite_bind_text(sqlite3_stmt *st, int idx, const char *s)
{
    if (!s)
        return sqlite3_bind_null(st, idx);
    return sqlite3_bind_text(st, idx, s, -1, SQLITE_STATIC);
}

int
sqlite_bind_opt_text(sqlite3_stmt *st, int idx, const char *s)
{
    return sqlite_bind_text(st, idx, s && *s ? s : NULL);
}

int
sqlite_bind_revision(sqlite3_stmt *st, int idx, uint64_t revision)
{
    return sqlite3_bind_int64(st, idx, revision ? (sqlite3_int64)revision : 1);
}

void
sqlite_column_text(sqlite3_stmt *st, int col, char *buf, size_t n)
{
    const unsigned char *s = sqlite3_column_text(st, col);

    st_strlcpy(buf, s ? (const char *)s : "", n);
}

/* Make room for one more item after @count; realloc() memory, so free() releases it. */
static void *
sqlite_grow(void *items, size_t *cap, size_t count, size_t size, struct st_error *err)
{
    size_t want;
    void *p;

    if (count < *cap)
        return items;
    want = *cap ? *cap * 2 : 16;
    p = reallocarray(items, want, size);
    if (!p) {
        st_error_set_native(err, ST_ERR_INTERNAL, ENOMEM,
                            "out of memory growing a list to %zu items", want);
        return NULL;
    }
    *cap = want;
    return p;
}

/*
 * The API caps ?limit= at ST_LIST_LIMIT_MAX; in-process callers (bulk jobs,
 * the benchmark) may ask for more in one query.
 */
static unsigned
sqlite_list_limit(unsigned limit)
{
    return limit == 0 ? ST_LIST_LIMIT_DEFAULT : limit;
}

int
sqlite_db_get(struct sqlite_db *db, sqlite3_stmt *st, const char *noun, const char *id,
              int (*read)(sqlite3_stmt *st, void *item, struct st_error *err), void *item,
              struct st_error *err)
{
    int rc = sqlite3_step(st);
    int ret = -1;

    if (rc == SQLITE_ROW)
        ret = read(st, item, err);
    else if (rc == SQLITE_DONE)
        st_error_set(err, ST_ERR_NOT_FOUND, "no %s '%s'", noun, id);
    else
        sqlite_db_fail(db, rc, err, "cannot read %s '%s'", noun, id);
    sqlite_stmt_done(st);
    return ret;
}

int
sqlite_db_list(struct sqlite_db *db, sqlite3_stmt *st, const char *noun, const char *marker,
               unsigned limit, size_t size,
               int (*read)(sqlite3_stmt *st, void *item, struct st_error *err),
               struct sqlite_page *out, struct st_error *err)
{
    char *items = NULL;
    size_t count = 0;
    size_t cap = 0;
    bool marker_seen = false;
    void *grown;
    int rc;

    limit = sqlite_list_limit(limit);
    rc = sqlite3_bind_int64(st, 5, (sqlite3_int64)limit + 1);
    if (rc != SQLITE_OK) {
        sqlite_db_fail(db, rc, err, "cannot list %ss", noun);
        goto fail;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (sqlite3_column_int(st, 0)) {
            marker_seen = true;
            continue;
        }
        grown = sqlite_grow(items, &cap, count, size, err);
        if (!grown)
            goto fail;
        items = grown;
        if (read(st, items + count * size, err) < 0)
            goto fail;
        count++;
    }
    if (rc != SQLITE_DONE) {
        sqlite_db_fail(db, rc, err, "cannot list %ss", noun);
        goto fail;
    }
    if (marker && *marker && !marker_seen) {
        st_error_set(err, ST_ERR_INVALID, "marker '%s' names no %s", marker, noun);
        goto fail;
    }
    sqlite_stmt_done(st);
    out->items = items;
    out->more = count > limit;
    out->count = out->more ? limit : count;
    return 0;

fail:
    sqlite_stmt_done(st);
    free(items);
    return -1;
}

int
sqlite_db_begin(struct sqlite_db *db, struct st_error *err)
{
    int rc;

    if (db->depth > 0) {
        db->depth++;
        return 0;
    }
    rc = sqlite_db_step_retrying(db, db->begin);
    if (rc == SQLITE_DONE) {
        db->depth = 1;
        db->doomed = false;
        return 0;
    }
    if (sqlite_is_busy(rc))
        return st_error_set_native(
            err, ST_ERR_UNAVAILABLE, rc,
            "the database stayed locked by another writer for %d ms, try again later",
            db->busy_bound_ms);
    return sqlite_db_fail(db, rc, err, "cannot begin a transaction");
}

void
sqlite_db_rollback(struct sqlite_db *db)
{
    if (db->depth > 1) {
        db->depth--;
        db->doomed = true;
        return;
    }
    db->depth = 0;
    db->doomed = false;
    /* A failed COMMIT or a full disk may already have rolled back. */
    if (sqlite3_get_autocommit(db->conn))
        return;
    sqlite3_step(db->rollback);
    sqlite3_reset(db->rollback);
}

int
sqlite_db_commit(struct sqlite_db *db, struct st_error *err)
{
    int rc;

    if (db->depth == 0)
        return st_error_set(err, ST_ERR_INTERNAL, "cannot commit a transaction: none is open");
    if (db->depth > 1) {
        db->depth--;
        return 0;
    }
    /* SQLite ends a transaction itself after some errors (a full disk, say). */
    if (db->doomed || sqlite3_get_autocommit(db->conn)) {
        sqlite_db_rollback(db);
        return st_error_set(
            err, ST_ERR_BACKEND,
            "cannot commit a transaction: a part of it failed, so the transaction was rolled back");
    }
    rc = sqlite_db_step_retrying(db, db->commit);
    if (rc == SQLITE_DONE) {
        db->depth = 0;
        return 0;
    }
    sqlite_db_fail(db, rc, err, "cannot commit a transaction");
    sqlite_db_rollback(db);
    return -1;
}

/*
 * "a" or "an" before @noun: a word by its first letter ("an image", "a
 * user"), an acronym by how its first letter is spoken ("an API key", "a VM").
 */
static const char *
sqlite_db_article(const char *noun)
{
    const char *vowels = islower((unsigned char)noun[0]) ? "aeio" : "AEFHILMNORSX";

    return noun[0] && strchr(vowels, noun[0]) ? "an" : "a";
}

static void
sqlite_db_write_fail(struct sqlite_db *db, int rc, const struct sqlite_row_ref *ref,
                     struct st_error *err)
{
    const char *article = sqlite_db_article(ref->noun);

    if (rc == SQLITE_CONSTRAINT_UNIQUE && ref->name)
        st_error_set_native(err, ST_ERR_CONFLICT, rc, "%s %s %s '%s' already exists", article,
                            ref->noun, ref->name_is ? ref->name_is : "named", ref->name);
    else if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY)
        st_error_set_native(err, ST_ERR_CONFLICT, rc, "%s %s with id '%s' already exists", article,
                            ref->noun, ref->id);
    else
        sqlite_db_fail(db, rc, err, "cannot write %s '%s'", ref->noun, ref->id);
}

int
sqlite_db_write_step(struct sqlite_db *db, sqlite3_stmt *st, const struct sqlite_row_ref *ref,
                     struct st_error *err)
{
    int rc = sqlite3_step(st);
    int changed = -1;

    if (rc == SQLITE_DONE)
        changed = sqlite3_changes(db->conn);
    else
        sqlite_db_write_fail(db, rc, ref, err);
    sqlite_stmt_done(st);
    return changed;
}

int
sqlite_db_write(struct sqlite_db *db, sqlite3_stmt *st, const struct sqlite_row_ref *ref,
                struct st_error *err)
{
    int changed;

    if (sqlite_db_begin(db, err) < 0) {
        sqlite_stmt_done(st);
        return -1;
    }
    changed = sqlite_db_write_step(db, st, ref, err);
    if (changed == 0)
        st_error_set(err, ST_ERR_NOT_FOUND, "no %s '%s'", ref->noun, ref->id);
    if (changed <= 0) {
        sqlite_db_rollback(db);
        return -1;
    }
    return sqlite_db_commit(db, err);
}

int
sqlite_db_delete(struct sqlite_db *db, sqlite3_stmt *st, const struct sqlite_row_ref *ref,
                 size_t *n, struct st_error *err)
{
    int changed;

    if (sqlite_db_begin(db, err) < 0) {
        sqlite_stmt_done(st);
        return -1;
    }
    changed = sqlite_db_write_step(db, st, ref, err);
    if (changed < 0) {
        sqlite_db_rollback(db);
        return -1;
    }
    if (sqlite_db_commit(db, err) < 0)
        return -1;
    *n = (size_t)changed;
    return 0;
}

int
sqlite_db_ping(struct sqlite_db *db, struct st_error *err)
{
    int rc = sqlite3_step(db->ping);

    sqlite3_reset(db->ping);
    if (rc != SQLITE_ROW)
        return sqlite_db_fail(db, rc, err, "the database does not answer");
    return 0;
}

int
sqlite_db_schema_version(struct sqlite_db *db, int *out, struct st_error *err)
{
    int rc = sqlite3_step(db->version);

    if (rc != SQLITE_ROW) {
        sqlite_db_fail(db, rc, err, "cannot read the schema version");
        sqlite3_reset(db->version);
        return -1;
    }
    *out = sqlite3_column_int(db->version, 0);
    sqlite3_reset(db->version);
    return 0;
}

/*
 * Apply migration @version in its own write transaction.  The version is
 * read again under the write lock: another process opening the same file
 * may have applied it while this one waited, and then nothing is done.
 */
static int
sqlite_db_migrate_one(struct sqlite_db *db, int version, struct st_error *err)
{
    int current;
    int rc;

    if (sqlite_db_begin(db, err) < 0)
        return -1;
    if (sqlite_db_schema_version(db, &current, err) < 0)
        goto fail;
    if (current < version) {
        rc = sqlite3_exec(db->conn, sqlite_migrations[version - 1], NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            sqlite_db_fail(db, rc, err, "cannot apply schema migration %d", version);
            goto fail;
        }
        sqlite3_bind_int(db->record, 1, version);
        sqlite3_bind_int64(db->record, 2, st_now_ms());
        rc = sqlite3_step(db->record);
        if (rc != SQLITE_DONE) {
            sqlite_db_fail(db, rc, err, "cannot record schema migration %d", version);
            sqlite_stmt_done(db->record);
            goto fail;
        }
        sqlite_stmt_done(db->record);
    }
    return sqlite_db_commit(db, err);

fail:
    sqlite_db_rollback(db);
    return -1;
}

static int
sqlite_db_migrate(struct sqlite_db *db, struct st_error *err)
{
    const int known = (int)ST_ARRAY_LEN(sqlite_migrations);
    int current;
    int version;

    if (sqlite_db_schema_version(db, &current, err) < 0)
        return -1;
    if (current > known)
        return st_error_set(
            err, ST_ERR_BACKEND,
            "the database schema is at version %d, newer than the %d this program knows: upgrade stratus",
            current, known);
    for (version = current + 1; version <= known; version++)
        if (sqlite_db_migrate_one(db, version, err) < 0)
            return -1;
    return 0;
}

/* Connection settings, then the statements sqlite_db itself runs. */
static int
sqlite_db_setup(struct sqlite_db *db, struct st_error *err)
{
    static const char *const pragmas[] = {
        "PRAGMA journal_mode=WAL",
        "PRAGMA synchronous=NORMAL",
        "PRAGMA foreign_keys=ON",
        "CREATE TABLE IF NOT EXISTS schema_version ("
        "  version INTEGER PRIMARY KEY,"
        "  applied_at INTEGER NOT NULL"
        ")",
    };
    size_t i;
    int rc;

    sqlite3_extended_result_codes(db->conn, 1);
    sqlite_db_set_busy_bound(db, SQLITE_DB_BUSY_BOUND_MS);
    for (i = 0; i < ST_ARRAY_LEN(pragmas); i++) {
        rc = sqlite_db_exec_retrying(db, pragmas[i]);
        if (rc != SQLITE_OK)
            return sqlite_db_fail(db, rc, err, "cannot run '%s'", pragmas[i]);
    }
    if (sqlite_db_prepare(db, "BEGIN IMMEDIATE", &db->begin, err) < 0 ||
        sqlite_db_prepare(db, "COMMIT", &db->commit, err) < 0 ||
        sqlite_db_prepare(db, "ROLLBACK", &db->rollback, err) < 0 ||
        sqlite_db_prepare(db, "SELECT coalesce(max(version), 0) FROM schema_version", &db->version,
                          err) < 0 ||
        sqlite_db_prepare(db, "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)",
                          &db->record, err) < 0 ||
        sqlite_db_prepare(db, "SELECT 1", &db->ping, err) < 0)
        return -1;
    return 0;
}

struct sqlite_db *
sqlite_db_open(const char *path, struct st_error *err)
{
    struct sqlite_db *db;
    int rc;
    int sys;

    if (!path || !*path) {
        st_error_set(err, ST_ERR_INVALID, "no database path given");
        return NULL;
    }
    db = st_xcalloc(1, sizeof(*db));
    rc = sqlite3_open_v2(path, &db->conn, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc != SQLITE_OK) {
        sys = db->conn ? sqlite3_system_errno(db->conn) : 0;
        st_error_set_native(err, ST_ERR_BACKEND, rc, "cannot open database '%s': %s%s%s%s", path,
                            db->conn ? sqlite3_errmsg(db->conn) : sqlite3_errstr(rc),
                            sys ? " (" : "", sys ? strerror(sys) : "", sys ? ")" : "");
        goto fail;
    }
    if (sqlite_db_setup(db, err) < 0 || sqlite_db_migrate(db, err) < 0) {
        st_error_prefix(err, "cannot open database '%s'", path);
        goto fail;
    }
    return db;

fail:
    sqlite_db_close(db);
    return NULL;
}

void
sqlite_db_close(struct sqlite_db *db)
{
    if (!db)
        return;
    sqlite3_finalize(db->begin);
    sqlite3_finalize(db->commit);
    sqlite3_finalize(db->rollback);
    sqlite3_finalize(db->version);
    sqlite3_finalize(db->record);
    sqlite3_finalize(db->ping);
    /* v2: a repository closed too late keeps the connection alive, not dangling. */
    sqlite3_close_v2(db->conn);
    free(db);
}

int
sqlite_db_dump(struct sqlite_db *db, const char *table, const char *cols, const char *order,
               sqlite_row_fn each, void *ctx, struct st_error *err)
{
    const char *values[64];
    char *sql = st_xasprintf("SELECT %s FROM %s ORDER BY %s", cols, table, order);
    sqlite3_stmt *st = NULL;
    int ret = -1;
    int rc;
    int n;
    int i;

    rc = sqlite3_prepare_v2(db->conn, sql, -1, &st, NULL);
    free(sql);
    if (rc != SQLITE_OK)
        return sqlite_db_fail(db, rc, err, "cannot read table %s", table);
    n = sqlite3_column_count(st);
    if (n > (int)ST_ARRAY_LEN(values)) {
        st_error_set(err, ST_ERR_INTERNAL, "table %s has too many columns (%d)", table, n);
        goto done;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        for (i = 0; i < n; i++)
            values[i] = (const char *)sqlite3_column_text(st, i);
        if (each(ctx, n, values, err) != 0)
            goto done;
    }
    if (rc != SQLITE_DONE) {
        sqlite_db_fail(db, rc, err, "cannot read table %s", table);
        goto done;
    }
    ret = 0;

done:
    sqlite3_finalize(st);
    return ret;
}

int
sqlite_db_load(struct sqlite_db *db, const char *table, const char *cols, int n,
               const char *const *values, struct st_error *err)
{
    char marks[64 * 5];
    size_t used = 0;
    sqlite3_stmt *st = NULL;
    char *sql;
    int rc;
    int i;

    if (n <= 0 || n > 64)
        return st_error_set(err, ST_ERR_INTERNAL, "cannot load %d columns into %s", n, table);
    for (i = 0; i < n; i++)
        used += (size_t)snprintf(marks + used, sizeof(marks) - used, "%s?%d", i ? "," : "", i + 1);
    sql = st_xasprintf("INSERT INTO %s (%s) VALUES (%s)", table, cols, marks);
    rc = sqlite3_prepare_v2(db->conn, sql, -1, &st, NULL);
    free(sql);
    if (rc != SQLITE_OK)
        return sqlite_db_fail(db, rc, err, "cannot write table %s", table);
    for (i = 0; i < n && rc == SQLITE_OK; i++)
        rc = sqlite_bind_text(st, i + 1, values[i]);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc != SQLITE_DONE) {
        sqlite_db_fail(db, rc, err, "cannot write a row of table %s", table);
        sqlite3_finalize(st);
        return -1;
    }
    sqlite3_finalize(st);
    return 0;
}

int
sqlite_db_count(struct sqlite_db *db, const char *table, int64_t *out, struct st_error *err)
{
    char *sql = st_xasprintf("SELECT count(*) FROM %s", table);
    sqlite3_stmt *st = NULL;
    int rc;

    rc = sqlite3_prepare_v2(db->conn, sql, -1, &st, NULL);
    free(sql);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite_db_fail(db, rc, err, "cannot count the rows of table %s", table);
        sqlite3_finalize(st);
        return -1;
    }
    *out = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return 0;
}
