#include "repositories/postgres/pg_db.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/common.h"
#include "repositories/postgres/pg_internal.h"
#include "util/ids.h"
#include "util/mem.h"

/*
 * The key of the session advisory lock migrations run under ("stratusm" in
 * ASCII, as a bigint).  Changing it would let an old and a new program
 * migrate at once.
 */
#define PG_DB_MIGRATION_LOCK "8319400174551397229"

/* Rows pg_db_dump() fetches per round trip. */
#define PG_DB_DUMP_BATCH 500

struct pg_db {
    PGconn *conn;
    /*
     * Names of the statements prepared on @conn: open addressing with
     * linear probing, NULL is a free slot, at most half full.  Emptied on
     * every reconnect, since a new session has none.
     */
    char **prepared;
    size_t prepared_cap; /* 0 or a power of two */
    size_t prepared_count;
    bool in_tx;   /* between pg_db_begin() and its commit or rollback */
    bool tx_lost; /* ... and the connection went down inside it */
    /*
     * Open levels of the one transaction (0: none), and whether an inner
     * level failed, which dooms the whole (see pg_db_doom()).
     */
    unsigned depth;
    bool doomed;
    /*
     * The session holds what a reconnect would silently drop (the migration
     * lock): a lost connection is then an error, never re-established.
     */
    bool pinned;
    unsigned cursors; /* numbers the cursors of pg_db_dump() */
};

/*
 * Schema migrations, oldest first.  Entry i is version i + 1.  Append only:
 * a published entry is never edited, since databases out there recorded it
 * as applied.  Each means what the SQLite migration of the same number
 * means, with the same tables, columns (in the same order: stratus-admin db
 * copy moves rows column by column) and indexes; times and sizes are
 * BIGINT.  Ids sort byte by byte (COLLATE "C"), as in SQLite, whatever the
 * database's locale: pages are ordered and resumed by (time, id).
 */
static const char *const pg_migrations[] = {
    /* 1: VMs, images, flavors. Enums are stored by name, times in ms since epoch. */
    "CREATE TABLE vms ("
    "  id TEXT COLLATE \"C\" PRIMARY KEY NOT NULL,"
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
    "  created_at BIGINT NOT NULL,"
    "  updated_at BIGINT NOT NULL"
    ");"
    "CREATE UNIQUE INDEX vms_owner_name ON vms (owner_id, name);"
    "CREATE INDEX vms_owner_page ON vms (owner_id, created_at, id);"
    "CREATE INDEX vms_image ON vms (image_id);"
    /* Unscoped (admin, recovery) paging over every VM. */
    "CREATE INDEX vms_page ON vms (created_at, id);"
    "CREATE TABLE images ("
    "  id TEXT COLLATE \"C\" PRIMARY KEY NOT NULL,"
    "  owner_id TEXT NOT NULL,"
    "  name TEXT NOT NULL,"
    "  format TEXT NOT NULL,"
    "  status TEXT NOT NULL,"
    "  size_bytes BIGINT NOT NULL,"
    "  virtual_size_bytes BIGINT NOT NULL,"
    "  created_at BIGINT NOT NULL,"
    "  updated_at BIGINT NOT NULL"
    ");"
    "CREATE UNIQUE INDEX images_owner_name ON images (owner_id, name);"
    "CREATE INDEX images_owner_page ON images (owner_id, created_at, id);"
    "CREATE TABLE flavors ("
    "  id TEXT COLLATE \"C\" PRIMARY KEY NOT NULL,"
    "  owner_id TEXT NOT NULL,"
    "  name TEXT NOT NULL,"
    "  vcpus INTEGER NOT NULL,"
    "  memory_mib INTEGER NOT NULL,"
    "  disk_gib INTEGER NOT NULL,"
    "  created_at BIGINT NOT NULL"
    ");"
    "CREATE UNIQUE INDEX flavors_owner_name ON flavors (owner_id, name);"
    "CREATE INDEX flavors_owner_page ON flavors (owner_id, created_at, id);",
    /*
     * 2: identity.  Users (e-mail stored lower case, and unique whatever
     * the case, as SQLite's COLLATE NOCASE makes it; a NULL quota member
     * means the configured default), their API keys, failed logins for
     * throttling, the audit hash chain (seq assigned newest + 1 inside the
     * append transaction, so no sequence), and image visibility.
     */
    "CREATE TABLE users ("
    "  id TEXT COLLATE \"C\" PRIMARY KEY NOT NULL,"
    "  email TEXT NOT NULL,"
    "  password_hash TEXT NOT NULL,"
    "  nickname TEXT,"
    "  status TEXT NOT NULL,"
    "  roles INTEGER NOT NULL,"
    "  quota_max_vms BIGINT,"
    "  quota_max_vcpus BIGINT,"
    "  quota_max_memory_mib BIGINT,"
    "  quota_max_disk_gib BIGINT,"
    "  created_at BIGINT NOT NULL,"
    "  updated_at BIGINT NOT NULL"
    ");"
    "CREATE UNIQUE INDEX users_email ON users (lower(email));"
    "CREATE INDEX users_page ON users (created_at, id);"
    "CREATE TABLE api_keys ("
    "  id TEXT COLLATE \"C\" PRIMARY KEY NOT NULL,"
    "  user_id TEXT NOT NULL REFERENCES users (id),"
    "  name TEXT,"
    "  prefix TEXT NOT NULL UNIQUE,"
    "  hash TEXT NOT NULL,"
    "  created_at BIGINT NOT NULL,"
    "  last_used_at BIGINT,"
    "  UNIQUE (user_id, name)"
    ");"
    "CREATE INDEX api_keys_user_page ON api_keys (user_id, created_at, id);"
    "CREATE TABLE login_failures ("
    "  email TEXT NOT NULL,"
    "  at BIGINT NOT NULL"
    ");"
    "CREATE INDEX login_failures_email_at ON login_failures (email, at);"
    "CREATE TABLE audit_log ("
    "  seq BIGINT PRIMARY KEY,"
    "  id TEXT UNIQUE NOT NULL,"
    "  at BIGINT NOT NULL,"
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
    "  id TEXT COLLATE \"C\" PRIMARY KEY NOT NULL,"
    "  kind TEXT NOT NULL,"
    "  target_id TEXT NOT NULL,"
    "  owner_id TEXT NOT NULL,"
    "  status TEXT NOT NULL,"
    "  step TEXT NOT NULL,"
    "  error TEXT,"
    "  created_at BIGINT NOT NULL,"
    "  started_at BIGINT NOT NULL,"
    "  finished_at BIGINT NOT NULL,"
    "  worker_id TEXT,"
    "  lease_expires_at BIGINT NOT NULL,"
    "  attempts INTEGER NOT NULL"
    ");"
    "CREATE INDEX operations_claim ON operations (status, created_at, id);"
    "CREATE INDEX operations_target ON operations (target_id);"
    "CREATE INDEX operations_owner_page ON operations (owner_id, created_at, id);"
    "CREATE INDEX operations_page ON operations (created_at, id);"
    "CREATE UNIQUE INDEX operations_active ON operations (target_id)"
    "  WHERE status IN ('queued', 'running');"
    "CREATE TABLE vm_events ("
    "  id TEXT COLLATE \"C\" PRIMARY KEY NOT NULL,"
    "  vm_id TEXT NOT NULL,"
    "  owner_id TEXT NOT NULL,"
    "  at BIGINT NOT NULL,"
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
    "  created_at BIGINT NOT NULL,"
    "  expires_at BIGINT NOT NULL,"
    "  PRIMARY KEY (owner_id, key)"
    ");"
    "CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);",
    /*
     * 4: revisions.  Every row a caller reads and writes back carries one,
     * bumped by each update, which names the revision it read
     * (compare-and-set); rows written before this migration start at 1.
     */
    "ALTER TABLE vms ADD COLUMN revision BIGINT NOT NULL DEFAULT 1;"
    "ALTER TABLE images ADD COLUMN revision BIGINT NOT NULL DEFAULT 1;"
    "ALTER TABLE flavors ADD COLUMN revision BIGINT NOT NULL DEFAULT 1;"
    "ALTER TABLE users ADD COLUMN revision BIGINT NOT NULL DEFAULT 1;"
    "ALTER TABLE operations ADD COLUMN revision BIGINT NOT NULL DEFAULT 1;",
};

static const struct pg_stmt pg_db_ping_stmt = {"pg_db_ping", "SELECT 1"};
static const struct pg_stmt pg_db_version_stmt = {
    "pg_db_schema_version", "SELECT coalesce(max(version), 0) FROM schema_version"};
static const struct pg_stmt pg_db_record_stmt = {
    "pg_db_record_version", "INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)"};
static const struct pg_stmt pg_db_lock_stmt = {
    "pg_db_lock", "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"};

/* One statement to run: the prepared @st, or else the plain @sql; @n text @values. */
struct pg_call {
    const struct pg_stmt *st;
    const char *sql;
    int n;
    const char *const *values;
};

/* ---- statements prepared on the current connection ---- */

static size_t
pg_db_hash(const char *s)
{
    uint64_t h = 14695981039346656037ULL;

    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return (size_t)h;
}

static bool
pg_db_prepared_has(const struct pg_db *db, const char *name)
{
    size_t mask = db->prepared_cap - 1;
    size_t i;

    if (!db->prepared_cap)
        return false;
    for (i = pg_db_hash(name) & mask; db->prepared[i]; i = (i + 1) & mask)
        if (strcmp(db->prepared[i], name) == 0)
            return true;
    return false;
}

/* Put @name (owned) into a free slot of the table; there is one. */
static void
pg_db_prepared_put(char **slots, size_t cap, char *name)
{
    size_t i;

    for (i = pg_db_hash(name) & (cap - 1); slots[i]; i = (i + 1) & (cap - 1))
        ;
    slots[i] = name;
}

/* Double the table, moving every name over. */
static void
pg_db_prepared_grow(struct pg_db *db)
{
    size_t cap = db->prepared_cap ? db->prepared_cap * 2 : 64;
    char **slots = st_xcalloc(cap, sizeof(*slots));
    size_t i;

    for (i = 0; i < db->prepared_cap; i++)
        if (db->prepared[i])
            pg_db_prepared_put(slots, cap, db->prepared[i]);
    free(db->prepared);
    db->prepared = slots;
    db->prepared_cap = cap;
}

static void
pg_db_prepared_add(struct pg_db *db, const char *name)
{
    if ((db->prepared_count + 1) * 2 > db->prepared_cap)
        pg_db_prepared_grow(db);
    pg_db_prepared_put(db->prepared, db->prepared_cap, st_xstrdup(name));
    db->prepared_count++;
}

static void
pg_db_prepared_clear(struct pg_db *db)
{
    size_t i;

    for (i = 0; i < db->prepared_cap; i++) {
        free(db->prepared[i]);
        db->prepared[i] = NULL;
    }
    db->prepared_count = 0;
}

/* ---- errors ---- */

/* SQLSTATE @s as the server encodes it internally (MAKE_SQLSTATE), or 0: the native code. */
static int
pg_sqlstate_code(const char *s)
{
    int code = 0;
    int i;

    if (!s || strlen(s) != 5)
        return 0;
    for (i = 0; i < 5; i++)
        code += ((s[i] - '0') & 0x3f) << (6 * i);
    return code;
}

static const char *
pg_sqlstate(const PGresult *res)
{
    return res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
}

/*
 * What a failure with SQLSTATE @s means here.  Connection trouble (class
 * 08, but for the protocol violation a bad call makes), a server going
 * away or starting, serialization failures, deadlocks, too many clients
 * and NOWAIT locks pass when tried again; a unique violation names a row
 * that exists; the rest is the database refusing the statement.
 */
static enum st_err_code
pg_sqlstate_err(const char *s)
{
    static const char *const transient[] = {"57P01", "57P02", "57P03", "40001",
                                            "40P01", "53300", "55P03"};
    size_t i;

    if (!s)
        return ST_ERR_BACKEND;
    if (strcmp(s, "23505") == 0)
        return ST_ERR_CONFLICT;
    if (strncmp(s, "08", 2) == 0 && strcmp(s, "08P01") != 0)
        return ST_ERR_UNAVAILABLE;
    for (i = 0; i < ST_ARRAY_LEN(transient); i++)
        if (strcmp(s, transient[i]) == 0)
            return ST_ERR_UNAVAILABLE;
    return ST_ERR_BACKEND;
}

/* libpq's messages span lines ("...\n\tIs the server running"): make one line of @buf. */
static void
pg_db_one_line(char *buf)
{
    char *out = buf;
    const char *in;
    bool space = false;

    for (in = buf; *in; in++) {
        if (isspace((unsigned char)*in)) {
            space = out != buf;
            continue;
        }
        if (space)
            *out++ = ' ';
        space = false;
        *out++ = *in;
    }
    *out = '\0';
}

/*
 * The message of the failure @res (NULL: none came) as one line: the
 * server's primary message and its detail, or what libpq said.
 */
static void
pg_db_message(const struct pg_db *db, const PGresult *res, char *buf, size_t n)
{
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *detail = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : NULL;
    const char *msg = res ? PQresultErrorMessage(res) : "";

    if (primary && detail)
        snprintf(buf, n, "%s (%s)", primary, detail);
    else if (primary)
        st_strlcpy(buf, primary, n);
    else {
        if (!*msg)
            msg = PQerrorMessage(db->conn);
        st_strlcpy(buf, *msg ? msg : "the server sent no answer", n);
    }
    pg_db_one_line(buf);
}

/* Whether @res ended in success. */
static bool
pg_db_ok(const PGresult *res)
{
    ExecStatusType status = PQresultStatus(res);

    return status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK;
}

/* Whether the failure @res (NULL: no answer) is the connection going down. */
static bool
pg_db_lost(const struct pg_db *db, const PGresult *res)
{
    return !res || PQstatus(db->conn) == CONNECTION_BAD;
}

static int
pg_db_fail_unavailable(const char *what, int native, const char *why, struct st_error *err)
{
    return st_error_set_native(err, ST_ERR_UNAVAILABLE, native,
                               "cannot %s: the database is unavailable, try again later (%s)", what,
                               why);
}

/*
 * "a" or "an" before @noun: a word by its first letter ("an image", "a
 * user"), an acronym by how its first letter is spoken ("an API key", "a VM").
 */
static const char *
pg_db_article(const char *noun)
{
    const char *vowels = islower((unsigned char)noun[0]) ? "aeio" : "AEFHILMNORSX";

    return noun[0] && strchr(vowels, noun[0]) ? "an" : "a";
}

/* The unique violation @res, named after the row @ref: its primary key or its name. */
static int
pg_db_fail_conflict(const PGresult *res, const struct pg_row_ref *ref, struct st_error *err)
{
    const char *constraint = PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME);
    const char *article = pg_db_article(ref->noun);
    int native = pg_sqlstate_code(pg_sqlstate(res));
    size_t len = constraint ? strlen(constraint) : 0;
    bool on_key = len >= 5 && strcmp(constraint + len - 5, "_pkey") == 0;

    if (ref->name && !on_key)
        return st_error_set_native(err, ST_ERR_CONFLICT, native, "%s %s %s '%s' already exists",
                                   article, ref->noun, ref->name_is ? ref->name_is : "named",
                                   ref->name);
    return st_error_set_native(err, ST_ERR_CONFLICT, native, "%s %s with id '%s' already exists",
                               article, ref->noun, ref->id);
}

/*
 * Fill @err from the failure @res of "<what>" (NULL: no answer came), as
 * pg_internal.h says; a unique violation is named after @ref when given.
 * Call it before anything else runs on the connection.  Returns -1.
 */
static int
pg_db_fail(const struct pg_db *db, const PGresult *res, const char *what,
           const struct pg_row_ref *ref, struct st_error *err)
{
    const char *state = pg_sqlstate(res);
    enum st_err_code code = pg_sqlstate_err(state);
    int native = pg_sqlstate_code(state);
    char msg[ST_ERROR_MSG_MAX];

    if (pg_db_lost(db, res)) {
        code = ST_ERR_UNAVAILABLE;
        native = native ? native : pg_sqlstate_code("08006");
    }
    if (code == ST_ERR_CONFLICT && ref)
        return pg_db_fail_conflict(res, ref, err);
    pg_db_message(db, res, msg, sizeof(msg));
    if (code == ST_ERR_UNAVAILABLE)
        return pg_db_fail_unavailable(what, native, msg, err);
    return st_error_set_native(err, code, native, "cannot %s: %s", what, msg);
}

/* ---- running statements ---- */

/* Re-establish the connection; the new session has no prepared statements. */
static int
pg_db_reconnect(struct pg_db *db)
{
    PQreset(db->conn);
    pg_db_prepared_clear(db);
    return PQstatus(db->conn) == CONNECTION_OK ? 0 : -1;
}

/* Run @c once, preparing its statement first if this connection has not seen it. */
static PGresult *
pg_db_send(struct pg_db *db, const struct pg_call *c)
{
    if (c->st) {
        if (!pg_db_prepared_has(db, c->st->name)) {
            PGresult *res = PQprepare(db->conn, c->st->name, c->st->sql, 0, NULL);
            if (PQresultStatus(res) != PGRES_COMMAND_OK)
                return res;
            PQclear(res);
            pg_db_prepared_add(db, c->st->name);
        }
        return PQexecPrepared(db->conn, c->st->name, c->n, c->values, NULL, NULL, 0);
    }
    if (c->n > 0)
        return PQexecParams(db->conn, c->sql, c->n, NULL, c->values, NULL, NULL, 0);
    return PQexec(db->conn, c->sql);
}

static int
pg_db_fail_reconnect(struct pg_db *db, const char *what, struct st_error *err)
{
    char msg[ST_ERROR_MSG_MAX];

    st_strlcpy(msg, PQerrorMessage(db->conn), sizeof(msg));
    pg_db_one_line(msg);
    return st_error_set_native(
        err, ST_ERR_UNAVAILABLE, pg_sqlstate_code("08001"),
        "cannot %s: the database is unavailable, try again later (cannot reconnect: %s)", what,
        msg);
}

/*
 * Run @c and return its result (PQclear() it), or NULL with @err filled
 * (see pg_db_fail()).  Outside a transaction, and unless the session is
 * pinned, a connection found or going down is re-established once and @c
 * run again; inside one, the transaction is then marked lost.
 */
static PGresult *
pg_db_run(struct pg_db *db, const struct pg_call *c, const char *what, const struct pg_row_ref *ref,
          struct st_error *err)
{
    bool in_tx = pg_db_in_transaction(db);
    bool may_retry = !in_tx && !db->pinned;

    if (db->tx_lost) {
        pg_db_fail_unavailable(
            what, pg_sqlstate_code("08006"),
            "the connection was lost inside a transaction, which is gone: roll it back", err);
        return NULL;
    }
    if (PQstatus(db->conn) == CONNECTION_BAD) {
        db->tx_lost = db->in_tx;
        if (!may_retry) {
            pg_db_fail(db, NULL, what, ref, err);
            return NULL;
        }
        may_retry = false;
        if (pg_db_reconnect(db) < 0) {
            pg_db_fail_reconnect(db, what, err);
            return NULL;
        }
    }
    for (;;) {
        PGresult *res = pg_db_send(db, c);

        if (pg_db_ok(res))
            return res;
        if (!pg_db_lost(db, res) || !may_retry) {
            db->tx_lost = db->in_tx && pg_db_lost(db, res);
            pg_db_fail(db, res, what, ref, err);
            PQclear(res);
            return NULL;
        }
        PQclear(res);
        may_retry = false;
        if (pg_db_reconnect(db) < 0) {
            pg_db_fail_reconnect(db, what, err);
            return NULL;
        }
    }
}

static PGresult *
pg_db_run_stmt(struct pg_db *db, const struct pg_stmt *st, const struct pg_params *p,
               const struct pg_row_ref *ref, struct st_error *err)
{
    struct pg_call c = {.st = st, .n = p ? p->n : 0, .values = p ? p->values : NULL};
    char what[128];

    snprintf(what, sizeof(what), "run %s", st->name);
    return pg_db_run(db, &c, what, ref, err);
}

/* Run plain SQL @sql (no parameters) as "<what>", discarding its result. */
static int
pg_db_run_sql(struct pg_db *db, const char *sql, const char *what, struct st_error *err)
{
    struct pg_call c = {.sql = sql};
    PGresult *res = pg_db_run(db, &c, what, NULL, err);

    if (!res)
        return -1;
    PQclear(res);
    return 0;
}

PGresult *
pg_db_exec(struct pg_db *db, const struct pg_stmt *st, const struct pg_params *p,
           struct st_error *err)
{
    return pg_db_run_stmt(db, st, p, NULL, err);
}

int
pg_db_exec_sql(struct pg_db *db, const char *sql, struct st_error *err)
{
    char what[128];

    snprintf(what, sizeof(what), "run '%.80s'", sql);
    return pg_db_run_sql(db, sql, what, err);
}

int
pg_db_write(struct pg_db *db, const struct pg_stmt *st, const struct pg_params *p,
            const struct pg_row_ref *ref, struct st_error *err)
{
    PGresult *res = pg_db_run_stmt(db, st, p, ref, err);
    long changed;

    if (!res) {
        pg_db_doom(db);
        return -1;
    }
    changed = strtol(PQcmdTuples(res), NULL, 10);
    PQclear(res);
    return (int)changed;
}

int
pg_db_write_one(struct pg_db *db, const struct pg_stmt *st, const struct pg_params *p,
                const struct pg_row_ref *ref, struct st_error *err)
{
    int changed = pg_db_write(db, st, p, ref, err);

    if (changed == 0) {
        pg_db_doom(db);
        return st_error_set(err, ST_ERR_NOT_FOUND, "no %s '%s'", ref->noun, ref->id);
    }
    return changed;
}

int
pg_db_stale(const char *noun, const char *id, uint64_t expected, uint64_t stored,
            struct st_error *err)
{
    return st_error_set(err, ST_ERR_STALE,
                        "%s '%s' changed meanwhile: revision %" PRIu64 " expected, %" PRIu64
                        " stored",
                        noun, id, expected, stored);
}

int
pg_db_write_cas(struct pg_db *db, const struct pg_stmt *st, const struct pg_params *p,
                const struct pg_stmt *probe, const struct pg_params *probe_p,
                const struct pg_row_ref *ref, uint64_t expected, struct st_error *err)
{
    int changed = pg_db_write(db, st, p, ref, err);
    PGresult *res;

    if (changed != 0)
        return changed < 0 ? -1 : 0;
    pg_db_doom(db);
    res = pg_db_exec(db, probe, probe_p, err);
    if (!res) {
        st_error_prefix(err, "cannot read the revision of %s '%s'", ref->noun, ref->id);
        return -1;
    }
    if (PQntuples(res) == 0)
        st_error_set(err, ST_ERR_NOT_FOUND, "no %s '%s'", ref->noun, ref->id);
    else
        pg_db_stale(ref->noun, ref->id, expected, (uint64_t)pg_get_int(res, 0, 0), err);
    PQclear(res);
    return -1;
}

int
pg_db_get(struct pg_db *db, const struct pg_stmt *st, const struct pg_params *p, const char *noun,
          const char *id, pg_read_fn read, void *item, struct st_error *err)
{
    PGresult *res = pg_db_exec(db, st, p, err);
    int ret;

    if (!res)
        return -1;
    if (PQntuples(res) == 0)
        ret = st_error_set(err, ST_ERR_NOT_FOUND, "no %s '%s'", noun, id);
    else
        ret = read(res, 0, item, err);
    PQclear(res);
    return ret;
}

/*
 * The API caps ?limit= at ST_LIST_LIMIT_MAX; in-process callers (bulk jobs,
 * the benchmark) may ask for more in one query.
 */
static unsigned
pg_page_size(unsigned limit)
{
    return limit == 0 ? ST_LIST_LIMIT_DEFAULT : limit;
}

int64_t
pg_list_limit(unsigned limit)
{
    return (int64_t)pg_page_size(limit) + 1;
}

/* Make room for one more item after @count; realloc() memory, so free() releases it. */
static void *
pg_grow(void *items, size_t *cap, size_t count, size_t size, struct st_error *err)
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

int
pg_db_list(struct pg_db *db, const struct pg_stmt *st, const struct pg_params *p, const char *noun,
           const char *marker, unsigned limit, size_t size, pg_read_fn read, struct pg_page *out,
           struct st_error *err)
{
    PGresult *res = pg_db_exec(db, st, p, err);
    unsigned page = pg_page_size(limit);
    char *items = NULL;
    size_t count = 0;
    size_t cap = 0;
    bool marker_seen = false;
    void *grown;
    int rows;
    int row;

    if (!res)
        return -1;
    rows = PQntuples(res);
    for (row = 0; row < rows; row++) {
        if (pg_get_bool(res, row, 0)) {
            marker_seen = true;
            continue;
        }
        grown = pg_grow(items, &cap, count, size, err);
        if (!grown)
            goto fail;
        items = grown;
        if (read(res, row, items + count * size, err) < 0)
            goto fail;
        count++;
    }
    if (marker && *marker && !marker_seen) {
        st_error_set(err, ST_ERR_INVALID, "marker '%s' names no %s", marker, noun);
        goto fail;
    }
    PQclear(res);
    out->items = items;
    out->more = count > page;
    out->count = out->more ? page : count;
    return 0;

fail:
    PQclear(res);
    free(items);
    return -1;
}

/* ---- transactions ---- */

bool
pg_db_in_transaction(const struct pg_db *db)
{
    PGTransactionStatusType ts = PQtransactionStatus(db->conn);

    return db->in_tx || ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR;
}

void
pg_db_doom(struct pg_db *db)
{
    if (db->depth > 0)
        db->doomed = true;
}

int
pg_db_begin(struct pg_db *db, struct st_error *err)
{
    if (db->depth > 0) {
        db->depth++;
        return 0;
    }
    /* Opened behind the levels' back (plain SQL): not one to join. */
    if (pg_db_in_transaction(db))
        return st_error_set(err, ST_ERR_INTERNAL,
                            "cannot begin a transaction: one is already open");
    if (pg_db_run_sql(db, "BEGIN ISOLATION LEVEL READ COMMITTED", "begin a transaction", err) < 0)
        return -1;
    db->in_tx = true;
    db->tx_lost = false;
    db->depth = 1;
    db->doomed = false;
    return 0;
}

void
pg_db_rollback(struct pg_db *db)
{
    PGTransactionStatusType ts;

    if (!db)
        return;
    if (db->depth > 1) {
        db->depth--;
        db->doomed = true;
        return;
    }
    db->depth = 0;
    db->doomed = false;
    db->in_tx = false;
    db->tx_lost = false;
    ts = PQtransactionStatus(db->conn);
    if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR)
        PQclear(PQexec(db->conn, "ROLLBACK"));
}

int
pg_db_commit(struct pg_db *db, struct st_error *err)
{
    PGresult *res;
    bool committed;

    if (db->depth > 1) {
        db->depth--;
        return 0;
    }
    if (!pg_db_in_transaction(db))
        return st_error_set(err, ST_ERR_INTERNAL, "cannot commit a transaction: none is open");
    if (db->doomed) {
        pg_db_rollback(db);
        return st_error_set(
            err, ST_ERR_BACKEND,
            "cannot commit a transaction: a part of it failed, so the transaction was rolled back");
    }
    if (db->tx_lost) {
        pg_db_rollback(db);
        return pg_db_fail_unavailable(
            "commit a transaction", pg_sqlstate_code("08006"),
            "the connection was lost inside the transaction, which is gone", err);
    }
    if (PQtransactionStatus(db->conn) == PQTRANS_INERROR) {
        pg_db_rollback(db);
        return st_error_set(
            err, ST_ERR_BACKEND,
            "cannot commit a transaction: a statement in it failed, so the transaction was rolled "
            "back");
    }
    res = PQexec(db->conn, "COMMIT");
    /* COMMIT of a transaction the server already aborted answers "ROLLBACK". */
    committed = pg_db_ok(res) && strcmp(PQcmdStatus(res), "COMMIT") == 0;
    if (!committed && pg_db_lost(db, res))
        pg_db_fail_unavailable(
            "commit a transaction", pg_sqlstate_code("08006"),
            "the connection was lost during the commit, which may or may not have taken effect",
            err);
    else if (!committed && pg_db_ok(res))
        st_error_set(err, ST_ERR_BACKEND, "cannot commit a transaction: the server rolled it back");
    else if (!committed)
        pg_db_fail(db, res, "commit a transaction", NULL, err);
    PQclear(res);
    pg_db_rollback(db);
    return committed ? 0 : -1;
}

int
pg_db_lock(struct pg_db *db, const char *key, struct st_error *err)
{
    struct pg_params p;
    PGresult *res;

    if (!pg_db_in_transaction(db))
        return st_error_set(err, ST_ERR_INTERNAL, "cannot take lock '%s': no transaction is open",
                            key);
    pg_params_init(&p);
    pg_param_text(&p, key);
    res = pg_db_exec(db, &pg_db_lock_stmt, &p, err);
    if (!res)
        return -1;
    PQclear(res);
    return 0;
}

/* ---- parameters and columns ---- */

static void
pg_param_push(struct pg_params *p, const char *s)
{
    if (p->n >= PG_PARAMS_MAX)
        BUG("more than PG_PARAMS_MAX statement parameters");
    p->values[p->n++] = s;
}

void
pg_params_init(struct pg_params *p)
{
    p->n = 0;
}

void
pg_param_text(struct pg_params *p, const char *s)
{
    pg_param_push(p, s);
}

void
pg_param_opt_text(struct pg_params *p, const char *s)
{
    pg_param_push(p, s && *s ? s : NULL);
}

void
pg_param_int(struct pg_params *p, int64_t v)
{
    if (p->n >= PG_PARAMS_MAX)
        BUG("more than PG_PARAMS_MAX statement parameters");
    snprintf(p->nums[p->n], sizeof(p->nums[p->n]), "%" PRId64, v);
    pg_param_push(p, p->nums[p->n]);
}

void
pg_param_bool(struct pg_params *p, bool v)
{
    pg_param_push(p, v ? "true" : "false");
}

/* Column @col of @row, or NULL when it is SQL NULL or out of range. */
void
pg_param_revision(struct pg_params *p, uint64_t revision)
{
    pg_param_int(p, revision ? (int64_t)revision : 1);
}

static const char *
pg_get_value(const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col))
        return NULL;
    return PQgetvalue(res, row, col);
}

void
pg_get_text(const PGresult *res, int row, int col, char *buf, size_t n)
{
    const char *v = pg_get_value(res, row, col);

    st_strlcpy(buf, v ? v : "", n);
}

int64_t
pg_get_int(const PGresult *res, int row, int col)
{
    const char *v = pg_get_value(res, row, col);

    return v ? strtoll(v, NULL, 10) : 0;
}

bool
pg_get_bool(const PGresult *res, int row, int col)
{
    const char *v = pg_get_value(res, row, col);

    if (!v)
        return false;
    if (v[0] == 't' || v[0] == 'T')
        return true;
    return strtoll(v, NULL, 10) != 0;
}

bool
pg_get_null(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) != 0;
}

/* ---- raw rows, for stratus-admin db copy ---- */

/*
 * Whether @s is a plain SQL name, or with @list a ", "-separated list of
 * them (ASC and DESC are names too).  The names come from code, but a
 * slip must not become SQL.
 */
static bool
pg_db_names_ok(const char *s, bool list)
{
    const char *extra = list ? ", " : "";

    if (!s || !(islower((unsigned char)s[0]) || s[0] == '_'))
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_' && !strchr(extra, *s))
            return false;
    return true;
}

static int
pg_db_check_names(const char *verb, const char *table, const char *cols, const char *order,
                  struct st_error *err)
{
    if (!pg_db_names_ok(table, false))
        return st_error_set(err, ST_ERR_INVALID, "cannot %s table '%s': not a plain table name",
                            verb, table ? table : "");
    if (cols && !pg_db_names_ok(cols, true))
        return st_error_set(err, ST_ERR_INVALID,
                            "cannot %s table '%s': '%s' is not a list of column names", verb, table,
                            cols);
    if (order && *order && !pg_db_names_ok(order, true))
        return st_error_set(err, ST_ERR_INVALID,
                            "cannot %s table '%s': '%s' is not a list of column names", verb, table,
                            order);
    return 0;
}

/* Hand each row of @res to @each; its first non-zero return, or 0. */
static int
pg_db_dump_rows(const PGresult *res, pg_row_fn each, void *ctx, struct st_error *err)
{
    int n = PQnfields(res);
    ST_AUTOFREE const char **values = st_xcalloc(n > 0 ? (size_t)n : 1, sizeof(*values));
    int rows = PQntuples(res);
    int row;
    int col;

    for (row = 0; row < rows; row++) {
        int rc;

        for (col = 0; col < n; col++)
            values[col] = pg_get_value(res, row, col);
        rc = each(ctx, n, values, err);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/*
 * Fetch the rows of the open cursor @cursor batch by batch, so that a big
 * table never sits in memory whole.  Returns 0, -1 with @err filled, or
 * the first non-zero return of @each.
 */
static int
pg_db_dump_cursor(struct pg_db *db, const char *cursor, const char *what, pg_row_fn each, void *ctx,
                  struct st_error *err)
{
    ST_AUTOFREE char *fetch = st_xasprintf("FETCH FORWARD %d FROM %s", PG_DB_DUMP_BATCH, cursor);
    struct pg_call c = {.sql = fetch};
    int rows;

    do {
        PGresult *res = pg_db_run(db, &c, what, NULL, err);
        int rc;

        if (!res)
            return -1;
        rows = PQntuples(res);
        rc = pg_db_dump_rows(res, each, ctx, err);
        PQclear(res);
        if (rc != 0)
            return rc;
    } while (rows == PG_DB_DUMP_BATCH);
    return 0;
}

/*
 * A cursor needs a transaction: the caller's, or one of the dump's own,
 * committed when the dump did not fail.  Returns as pg_db_dump_cursor().
 */
int
pg_db_dump(struct pg_db *db, const char *table, const char *cols, const char *order, pg_row_fn each,
           void *ctx, struct st_error *err)
{
    bool own = !pg_db_in_transaction(db);
    ST_AUTOFREE char *cursor = NULL;
    ST_AUTOFREE char *declare = NULL;
    ST_AUTOFREE char *close_sql = NULL;
    char what[128];
    int ret;

    if (pg_db_check_names("dump", table, cols, order, err) < 0)
        return -1;
    if (!cols)
        return st_error_set(err, ST_ERR_INVALID, "cannot dump table '%s': no columns named", table);
    snprintf(what, sizeof(what), "dump table '%s'", table);
    if (own && pg_db_begin(db, err) < 0)
        return -1;
    cursor = st_xasprintf("pg_db_dump_%u", ++db->cursors);
    declare = st_xasprintf("DECLARE %s NO SCROLL CURSOR FOR SELECT %s FROM %s%s%s", cursor, cols,
                           table, order && *order ? " ORDER BY " : "", order ? order : "");
    close_sql = st_xasprintf("CLOSE %s", cursor);
    ret = pg_db_run_sql(db, declare, what, err);
    if (ret == 0)
        ret = pg_db_dump_cursor(db, cursor, what, each, ctx, err);
    if (ret >= 0 && pg_db_run_sql(db, close_sql, what, err) < 0)
        ret = -1;
    if (own && ret >= 0 && pg_db_commit(db, err) < 0)
        ret = -1;
    else if (own && ret < 0)
        pg_db_rollback(db);
    return ret;
}

int
pg_db_load(struct pg_db *db, const char *table, const char *cols, int n, const char *const *values,
           struct st_error *err)
{
    ST_AUTOFREE char *marks = NULL;
    ST_AUTOFREE char *sql = NULL;
    struct pg_call c;
    PGresult *res;
    char what[128];
    size_t len = 0;
    int i;

    if (pg_db_check_names("load", table, cols, NULL, err) < 0)
        return -1;
    if (!cols || n <= 0 || n > 65535)
        return st_error_set(err, ST_ERR_INVALID,
                            "cannot load a row into table '%s': %d values given", table, n);
    marks = st_xcalloc((size_t)n, 9); /* "$65535, " and the final NUL */
    for (i = 1; i <= n; i++)
        len += (size_t)snprintf(marks + len, (size_t)n * 9 - len, "%s$%d", i > 1 ? ", " : "", i);
    sql = st_xasprintf("INSERT INTO %s (%s) VALUES (%s)", table, cols, marks);
    c = (struct pg_call){.sql = sql, .n = n, .values = values};
    snprintf(what, sizeof(what), "load a row into table '%s'", table);
    res = pg_db_run(db, &c, what, NULL, err);
    if (!res)
        return -1;
    PQclear(res);
    return 0;
}

int
pg_db_count(struct pg_db *db, const char *table, int64_t *out, struct st_error *err)
{
    ST_AUTOFREE char *sql = NULL;
    struct pg_call c;
    PGresult *res;
    char what[128];

    if (pg_db_check_names("count", table, NULL, NULL, err) < 0)
        return -1;
    sql = st_xasprintf("SELECT count(*) FROM %s", table);
    c = (struct pg_call){.sql = sql};
    snprintf(what, sizeof(what), "count the rows of table '%s'", table);
    res = pg_db_run(db, &c, what, NULL, err);
    if (!res)
        return -1;
    *out = pg_get_int(res, 0, 0);
    PQclear(res);
    return 0;
}

/* ---- the connection ---- */

int
pg_db_ping(struct pg_db *db, struct st_error *err)
{
    struct pg_call c = {.st = &pg_db_ping_stmt};
    PGresult *res = pg_db_run(db, &c, "reach the database", NULL, err);

    if (!res)
        return -1;
    PQclear(res);
    return 0;
}

int
pg_db_schema_version(struct pg_db *db, int *out, struct st_error *err)
{
    struct pg_call c = {.st = &pg_db_version_stmt};
    PGresult *res = pg_db_run(db, &c, "read the schema version", NULL, err);

    if (!res)
        return -1;
    *out = (int)pg_get_int(res, 0, 0);
    PQclear(res);
    return 0;
}

/* Apply migration @version in its own transaction and record it. */
static int
pg_db_migrate_one(struct pg_db *db, int version, struct st_error *err)
{
    struct pg_call apply = {.sql = pg_migrations[version - 1]};
    struct pg_params p;
    PGresult *res;
    char what[64];

    snprintf(what, sizeof(what), "apply schema migration %d", version);
    if (pg_db_begin(db, err) < 0)
        return -1;
    res = pg_db_run(db, &apply, what, NULL, err);
    if (!res)
        goto fail;
    PQclear(res);
    pg_params_init(&p);
    pg_param_int(&p, version);
    pg_param_int(&p, st_now_ms());
    res = pg_db_exec(db, &pg_db_record_stmt, &p, err);
    if (!res)
        goto fail;
    PQclear(res);
    return pg_db_commit(db, err);

fail:
    pg_db_rollback(db);
    return -1;
}

/*
 * Apply every pending migration.  The session advisory lock makes
 * processes opening the same database at once take turns: the first
 * applies, the others then read the version it recorded and apply
 * nothing.  Even CREATE TABLE IF NOT EXISTS needs it, since two of them
 * racing can both fail on the catalog's unique indexes.
 */
static int
pg_db_migrate(struct pg_db *db, struct st_error *err)
{
    const int known = (int)ST_ARRAY_LEN(pg_migrations);
    int current;
    int version;
    int ret = -1;

    db->pinned = true;
    if (pg_db_run_sql(db, "SELECT pg_advisory_lock(" PG_DB_MIGRATION_LOCK ")",
                      "take the migration lock", err) < 0)
        goto done;
    if (pg_db_run_sql(db,
                      "CREATE TABLE IF NOT EXISTS schema_version ("
                      "  version INTEGER PRIMARY KEY,"
                      "  applied_at BIGINT NOT NULL"
                      ")",
                      "create table schema_version", err) < 0 ||
        pg_db_schema_version(db, &current, err) < 0)
        goto unlock;
    if (current > known) {
        st_error_set(
            err, ST_ERR_BACKEND,
            "the database schema is at version %d, newer than the %d this program knows: upgrade stratus",
            current, known);
        goto unlock;
    }
    for (version = current + 1; version <= known; version++)
        if (pg_db_migrate_one(db, version, err) < 0)
            goto unlock;
    ret = 0;

unlock:
    /* Ending the session would release it too. */
    if (PQstatus(db->conn) == CONNECTION_OK)
        PQclear(PQexec(db->conn, "SELECT pg_advisory_unlock(" PG_DB_MIGRATION_LOCK ")"));
done:
    db->pinned = false;
    return ret;
}

/*
 * The server's notices: CREATE ... IF NOT EXISTS and the like report what
 * they skipped, which is noise here; warnings are worth a line on stderr.
 */
static void
pg_db_notice(void *arg, const PGresult *res)
{
    const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

    (void)arg;
    if (severity && strcmp(severity, "WARNING") == 0 && msg)
        fprintf(stderr, "stratus: PostgreSQL warning: %s\n", msg);
}

/* Whether libpq reads @s as a connection string or URI rather than a database name. */
static bool
pg_db_is_conninfo(const char *s)
{
    return strchr(s, '=') || strncmp(s, "postgresql://", 13) == 0 ||
           strncmp(s, "postgres://", 11) == 0;
}

/*
 * libpq quotes the token it could not parse, which may be (part of) a
 * password: copy @in into @buf (size @n) with every quoted part left out.
 */
static void
pg_db_mask_quoted(const char *in, char *buf, size_t n)
{
    size_t len = 0;
    bool quoted = false;

    for (; *in && len + 5 < n; in++) {
        if (*in == '"') {
            quoted = !quoted;
            if (!quoted) {
                memcpy(buf + len, "...", 3);
                len += 3;
            }
        } else if (quoted) {
            continue;
        }
        buf[len++] = *in;
    }
    buf[len] = '\0';
}

/* Check @conninfo's syntax, since the message of a failure to connect must never quote it. */
static int
pg_db_check_conninfo(const char *conninfo, struct st_error *err)
{
    PQconninfoOption *opts;
    char *perr = NULL;
    char msg[ST_ERROR_MSG_MAX];

    if (!pg_db_is_conninfo(conninfo))
        return 0;
    opts = PQconninfoParse(conninfo, &perr);
    if (opts) {
        PQconninfoFree(opts);
        return 0;
    }
    pg_db_mask_quoted(perr ? perr : "out of memory", msg, sizeof(msg));
    PQfreemem(perr);
    pg_db_one_line(msg);
    return st_error_set(err, ST_ERR_INVALID,
                        "cannot connect to the database: the connection string is not valid (%s)",
                        msg);
}

/*
 * Connect with @conninfo, which may set anything but the client encoding;
 * a connect timeout and an application name apply unless it sets them.
 */
static int
pg_db_connect(struct pg_db *db, const char *conninfo, struct st_error *err)
{
    const char *const keys[] = {"connect_timeout", "application_name", "dbname", "client_encoding",
                                NULL};
    const char *const values[] = {"10", "stratus", conninfo, "UTF8", NULL};

    if (pg_db_check_conninfo(conninfo, err) < 0)
        return -1;
    db->conn = PQconnectdbParams(keys, values, 1);
    if (!db->conn)
        return st_error_set_native(err, ST_ERR_INTERNAL, ENOMEM,
                                   "cannot connect to the database: out of memory");
    if (PQstatus(db->conn) != CONNECTION_OK) {
        char msg[ST_ERROR_MSG_MAX];

        st_strlcpy(msg, PQerrorMessage(db->conn), sizeof(msg));
        pg_db_one_line(msg);
        return st_error_set_native(err, ST_ERR_UNAVAILABLE, pg_sqlstate_code("08001"),
                                   "cannot connect to the database: %s", msg);
    }
    PQsetNoticeReceiver(db->conn, pg_db_notice, NULL);
    return 0;
}

struct pg_db *
pg_db_open(const char *conninfo, struct st_error *err)
{
    struct pg_db *db;

    if (!conninfo) {
        st_error_set(err, ST_ERR_INVALID, "no database connection string given");
        return NULL;
    }
    db = st_xcalloc(1, sizeof(*db));
    if (pg_db_connect(db, conninfo, err) < 0)
        goto fail;
    if (pg_db_migrate(db, err) < 0) {
        st_error_prefix(err, "cannot open the database");
        goto fail;
    }
    return db;

fail:
    pg_db_close(db);
    return NULL;
}

void
pg_db_close(struct pg_db *db)
{
    if (!db)
        return;
    PQfinish(db->conn);
    pg_db_prepared_clear(db);
    free(db->prepared);
    free(db);
}

PGconn *
pg_db_conn(struct pg_db *db)
{
    return db->conn;
}
