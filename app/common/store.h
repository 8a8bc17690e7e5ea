/*
 * store.h - the database a process uses, chosen by its URL, with every
 * repository opened on it.
 *
 *   sqlite:///abs/path.db, sqlite://rel/path.db, or a bare path   SQLite
 *   postgresql://... or postgres://... (any libpq URI)            PostgreSQL
 *
 * Services see only the repository interfaces; this is the one place that
 * knows which implementation stands behind them.
 */
#ifndef STRATUS_COMMON_STORE_H
#define STRATUS_COMMON_STORE_H

#include <stdint.h>
#include <stdio.h>

#include "repositories/audit_repo.h"
#include "repositories/event_repo.h"
#include "repositories/flavor_repo.h"
#include "repositories/idem_repo.h"
#include "repositories/image_repo.h"
#include "repositories/op_repo.h"
#include "repositories/store_tx.h"
#include "repositories/user_repo.h"
#include "repositories/vm_repo.h"

enum store_kind {
    STORE_SQLITE = 0,
    STORE_POSTGRES,
};

struct sqlite_db;
struct pg_db;

struct store {
    enum store_kind kind;
    struct sqlite_db *sqlite; /* set when kind is STORE_SQLITE */
    struct pg_db *pg;         /* set when kind is STORE_POSTGRES */
    struct vm_repo vms;
    struct image_repo images;
    struct flavor_repo flavors;
    struct user_repo users;
    struct audit_repo audit;
    struct op_repo ops;
    struct event_repo events;
    struct idem_repo idem;
    /* A transaction across the repositories above, on the same connection. */
    struct store_tx tx;
};

/*
 * Which store @url names, and where: *target is the file path (SQLite) or
 * the libpq connection URI (PostgreSQL), pointing into @url.  An empty URL
 * or an unknown scheme is ST_ERR_INVALID.
 */
int store_parse_url(const char *url, enum store_kind *kind, const char **target,
                    struct st_error *err);

/* "sqlite" or "postgresql". */
const char *store_kind_name(enum store_kind kind);

/*
 * Open the store @url names (making a SQLite file's directory first),
 * apply pending migrations, and open every repository on it.  Returns 0,
 * or -1 with @err filled and nothing left open.
 */
int store_open(struct store *s, const char *url, struct st_error *err);
/* Open the store and only its operation repository (a worker's heartbeat). */
int store_open_ops(struct store *s, const char *url, struct st_error *err);
/* Close every repository, then the connection; safe on a zeroed store. */
void store_close(struct store *s);

/* A trivial query: is the database there. */
int store_ping(struct store *s, struct st_error *err);
/* Highest applied migration. */
int store_schema_version(struct store *s, int *out, struct st_error *err);

/* How many rows table @table (one of store_tables[]) holds. */
int store_count(struct store *s, const char *table, int64_t *out, struct st_error *err);

/* A table of the schema, with its columns in the order a copy moves them. */
struct store_table {
    const char *name;
    const char *cols;
    const char *order;
};
/* Every table of the schema, parents before children; then one with a NULL name. */
#define STORE_TABLES 10
extern const struct store_table store_tables[STORE_TABLES + 1];

/*
 * Copy every row of every table from @from (read as one snapshot) to the
 * empty store @to (both at the same schema version), in one transaction on
 * @to, and commit only when each table holds as many rows on both sides
 * and the audit chain on @to verifies.  Progress lines go to @log (may be NULL).  ST_ERR_CONFLICT
 * when @to is not empty, ST_ERR_INVALID when the versions differ.
 */
int store_copy(struct store *from, struct store *to, FILE *log, struct st_error *err);

#endif
