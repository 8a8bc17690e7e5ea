#include "common/store.h"

#include <stdlib.h>
#include <string.h>

#include "common/app.h"
#include "repositories/postgres/pg_db.h"
#include "repositories/sqlite/sqlite_db.h"
#include "services/audit_service.h"
#include "util/mem.h"

/*
 * Parents before children (api_keys refers to users).  The columns are
 * those of the migrations, identical in both stores.
 */
const struct store_table store_tables[STORE_TABLES + 1] = {
    {"users",
     "id, email, password_hash, nickname, status, roles, quota_max_vms, quota_max_vcpus, "
     "quota_max_memory_mib, quota_max_disk_gib, created_at, updated_at, revision",
     "created_at, id"},
    {"api_keys", "id, user_id, name, prefix, hash, created_at, last_used_at", "created_at, id"},
    {"login_failures", "email, at", "at, email"},
    {"images",
     "id, owner_id, name, format, status, size_bytes, virtual_size_bytes, created_at, updated_at, "
     "visibility, revision",
     "created_at, id"},
    {"flavors", "id, owner_id, name, vcpus, memory_mib, disk_gib, created_at, revision",
     "created_at, id"},
    {"vms",
     "id, owner_id, name, status, step, vcpus, memory_mib, disk_gib, image_id, flavor_id, fault, "
     "created_at, updated_at, revision",
     "created_at, id"},
    {"operations",
     "id, kind, target_id, owner_id, status, step, error, created_at, started_at, finished_at, "
     "worker_id, lease_expires_at, attempts, revision",
     "created_at, id"},
    {"vm_events", "id, vm_id, owner_id, at, type, message, data", "at, id"},
    {"idempotency_keys",
     "owner_id, key, request_hash, status, body, location, created_at, expires_at",
     "created_at, owner_id, key"},
    {"audit_log",
     "seq, id, at, user_id, method, route, target_id, status, request_id, client_addr, prev_hash, "
     "hash",
     "seq"},
    {NULL, NULL, NULL},
};

int
store_parse_url(const char *url, enum store_kind *kind, const char **target, struct st_error *err)
{
    if (!url || !*url)
        return st_error_set(err, ST_ERR_INVALID, "no database given");
    if (strncmp(url, "postgresql://", 13) == 0 || strncmp(url, "postgres://", 11) == 0) {
        *kind = STORE_POSTGRES;
        *target = url;
        return 0;
    }
    if (strncmp(url, "sqlite://", 9) == 0) {
        /* sqlite:///abs/path keeps its leading slash; sqlite://rel is relative. */
        *kind = STORE_SQLITE;
        *target = url + 9;
        if (!**target)
            return st_error_set(err, ST_ERR_INVALID, "database '%s' names no file", url);
        return 0;
    }
    if (strstr(url, "://"))
        return st_error_set(err, ST_ERR_INVALID,
                            "database '%.200s' is not supported (use sqlite://PATH, a path, or "
                            "postgresql://...)",
                            url);
    *kind = STORE_SQLITE;
    *target = url;
    return 0;
}

const char *
store_kind_name(enum store_kind kind)
{
    return kind == STORE_POSTGRES ? "postgresql" : "sqlite";
}

static int
store_connect(struct store *s, const char *url, struct st_error *err)
{
    const char *target;

    memset(s, 0, sizeof(*s));
    if (store_parse_url(url, &s->kind, &target, err) < 0)
        return -1;
    if (s->kind == STORE_POSTGRES) {
        s->pg = pg_db_open(target, err);
        if (!s->pg)
            return -1;
        store_tx_pg_open(s->pg, &s->tx);
        return 0;
    }
    if (app_make_parent_dir(target, err) < 0)
        return -1;
    s->sqlite = sqlite_db_open(target, err);
    if (!s->sqlite)
        return -1;
    store_tx_sqlite_open(s->sqlite, &s->tx);
    return 0;
}

int
store_open(struct store *s, const char *url, struct st_error *err)
{
    int rc;

    if (store_connect(s, url, err) < 0)
        return -1;
    if (s->kind == STORE_POSTGRES)
        rc = vm_repo_pg_open(s->pg, &s->vms, err) < 0 ||
                     image_repo_pg_open(s->pg, &s->images, err) < 0 ||
                     flavor_repo_pg_open(s->pg, &s->flavors, err) < 0 ||
                     user_repo_pg_open(s->pg, &s->users, err) < 0 ||
                     audit_repo_pg_open(s->pg, &s->audit, err) < 0 ||
                     op_repo_pg_open(s->pg, &s->ops, err) < 0 ||
                     event_repo_pg_open(s->pg, &s->events, err) < 0 ||
                     idem_repo_pg_open(s->pg, &s->idem, err) < 0
                 ? -1
                 : 0;
    else
        rc = vm_repo_sqlite_open(s->sqlite, &s->vms, err) < 0 ||
                     image_repo_sqlite_open(s->sqlite, &s->images, err) < 0 ||
                     flavor_repo_sqlite_open(s->sqlite, &s->flavors, err) < 0 ||
                     user_repo_sqlite_open(s->sqlite, &s->users, err) < 0 ||
                     audit_repo_sqlite_open(s->sqlite, &s->audit, err) < 0 ||
                     op_repo_sqlite_open(s->sqlite, &s->ops, err) < 0 ||
                     event_repo_sqlite_open(s->sqlite, &s->events, err) < 0 ||
                     idem_repo_sqlite_open(s->sqlite, &s->idem, err) < 0
                 ? -1
                 : 0;
    if (rc < 0)
        store_close(s);
    return rc;
}

int
store_open_ops(struct store *s, const char *url, struct st_error *err)
{
    int rc;

    if (store_connect(s, url, err) < 0)
        return -1;
    rc = s->kind == STORE_POSTGRES ? op_repo_pg_open(s->pg, &s->ops, err)
                                   : op_repo_sqlite_open(s->sqlite, &s->ops, err);
    if (rc < 0)
        store_close(s);
    return rc;
}

void
store_close(struct store *s)
{
    if (!s)
        return;
    vm_repo_close(&s->vms);
    image_repo_close(&s->images);
    flavor_repo_close(&s->flavors);
    user_repo_close(&s->users);
    audit_repo_close(&s->audit);
    op_repo_close(&s->ops);
    event_repo_close(&s->events);
    idem_repo_close(&s->idem);
    sqlite_db_close(s->sqlite);
    pg_db_close(s->pg);
    s->sqlite = NULL;
    s->pg = NULL;
    s->tx.ops = NULL;
    s->tx.self = NULL;
}

int
store_ping(struct store *s, struct st_error *err)
{
    return s->kind == STORE_POSTGRES ? pg_db_ping(s->pg, err) : sqlite_db_ping(s->sqlite, err);
}

int
store_schema_version(struct store *s, int *out, struct st_error *err)
{
    return s->kind == STORE_POSTGRES ? pg_db_schema_version(s->pg, out, err)
                                     : sqlite_db_schema_version(s->sqlite, out, err);
}

int
store_count(struct store *s, const char *table, int64_t *out, struct st_error *err)
{
    return s->kind == STORE_POSTGRES ? pg_db_count(s->pg, table, out, err)
                                     : sqlite_db_count(s->sqlite, table, out, err);
}

/* One table's rows on their way from one store to the other. */
struct store_copy_ctx {
    struct store *to;
    const struct store_table *table;
    int64_t rows;
};

static int
store_copy_row(void *ctx, int n, const char *const *values, struct st_error *err)
{
    struct store_copy_ctx *c = ctx;
    int rc = c->to->kind == STORE_POSTGRES
                 ? pg_db_load(c->to->pg, c->table->name, c->table->cols, n, values, err)
                 : sqlite_db_load(c->to->sqlite, c->table->name, c->table->cols, n, values, err);

    if (rc == 0)
        c->rows++;
    return rc;
}

static int
store_dump(struct store *s, const struct store_table *t, pg_row_fn each, void *ctx,
           struct st_error *err)
{
    return s->kind == STORE_POSTGRES
               ? pg_db_dump(s->pg, t->name, t->cols, t->order, each, ctx, err)
               : sqlite_db_dump(s->sqlite, t->name, t->cols, t->order, each, ctx, err);
}

/* Every table of @to must be empty: a copy never merges. */
static int
store_check_empty(struct store *to, struct st_error *err)
{
    const struct store_table *t;
    int64_t n;

    for (t = store_tables; t->name; t++) {
        if (store_count(to, t->name, &n, err) < 0)
            return -1;
        if (n > 0)
            return st_error_set(err, ST_ERR_CONFLICT,
                                "the target database is not empty: table %s holds %lld rows",
                                t->name, (long long)n);
    }
    return 0;
}

static int
store_check_versions(struct store *from, struct store *to, struct st_error *err)
{
    int vf;
    int vt;

    if (store_schema_version(from, &vf, err) < 0 || store_schema_version(to, &vt, err) < 0)
        return -1;
    if (vf != vt)
        return st_error_set(err, ST_ERR_INVALID,
                            "the source schema is at version %d, the target at %d: open both with "
                            "the same stratus first",
                            vf, vt);
    return 0;
}

/*
 * Each table on @to holds what was read from the source, and the audit
 * chain is intact (read on @to's connection, inside its transaction).
 */
static int
store_check_copy(struct store *to, const int64_t *counts, FILE *log, struct st_error *err)
{
    struct audit_service audit = {.log = &to->audit};
    struct audit_verdict verdict = {0};
    const struct store_table *t;
    int64_t n;
    size_t i;

    for (t = store_tables, i = 0; t->name; t++, i++) {
        if (store_count(to, t->name, &n, err) < 0)
            return -1;
        if (n != counts[i])
            return st_error_set(err, ST_ERR_INTERNAL,
                                "table %s: %lld rows in the source, %lld in the target", t->name,
                                (long long)counts[i], (long long)n);
    }
    if (audit_service_verify(&audit, &verdict, err) < 0)
        return -1;
    if (verdict.broken_seq)
        return st_error_set(err, ST_ERR_INTERNAL,
                            "the audit chain in the target breaks at entry %lld: %s",
                            (long long)verdict.broken_seq, verdict.why);
    if (log)
        fprintf(log,
                "verified: row counts equal in every table; audit chain intact (%lld entries)\n",
                (long long)verdict.entries);
    return 0;
}

/*
 * The source is read in one transaction, so that what is copied is one
 * consistent state even if something still writes (it should not: copy a
 * stopped installation): SQLite's write lock, PostgreSQL's snapshot.
 */
static int
store_begin_read(struct store *s, struct st_error *err)
{
    return s->kind == STORE_POSTGRES ? pg_db_begin_snapshot(s->pg, err)
                                     : sqlite_db_begin(s->sqlite, err);
}

/* Every table's rows, counted and then copied, inside both transactions. */
static int
store_copy_tables(struct store *from, struct store *to, int64_t *counts, FILE *log,
                  struct st_error *err)
{
    struct store_copy_ctx ctx = {.to = to};
    const struct store_table *t;
    size_t i;

    for (t = store_tables, i = 0; t->name; t++, i++) {
        ctx.table = t;
        ctx.rows = 0;
        if (store_count(from, t->name, &counts[i], err) < 0 ||
            store_dump(from, t, store_copy_row, &ctx, err) < 0) {
            st_error_prefix(err, "copying table %s", t->name);
            return -1;
        }
        if (ctx.rows != counts[i])
            return st_error_set(err, ST_ERR_INTERNAL, "table %s: counted %lld rows, read %lld",
                                t->name, (long long)counts[i], (long long)ctx.rows);
        if (log)
            fprintf(log, "copied %s: %lld rows\n", t->name, (long long)ctx.rows);
    }
    return 0;
}

int
store_copy(struct store *from, struct store *to, FILE *log, struct st_error *err)
{
    int64_t counts[ST_ARRAY_LEN(store_tables)];
    int rc;

    if (store_check_versions(from, to, err) < 0 || store_check_empty(to, err) < 0)
        return -1;
    if (store_begin_read(from, err) < 0)
        return -1;
    if (store_tx_begin(&to->tx, err) < 0) {
        store_tx_rollback(&from->tx);
        return -1;
    }
    /* Checked inside the target's transaction: a copy that fails its check leaves nothing. */
    rc = store_copy_tables(from, to, counts, log, err);
    store_tx_rollback(&from->tx); /* it only read */
    if (rc == 0)
        rc = store_check_copy(to, counts, log, err);
    if (rc < 0) {
        store_tx_rollback(&to->tx);
        return -1;
    }
    return store_tx_commit(&to->tx, err);
}
