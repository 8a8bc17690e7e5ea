/*
 * pg_db.h - one PostgreSQL connection shared by the PostgreSQL repositories
 * of a process (or of one worker thread).
 *
 * pg_db_open() connects with a libpq connection string or URI
 * ("postgresql://user@host:port/db", "host=/run/x dbname=stratus"), and
 * applies every pending schema migration under an advisory lock, so that
 * several nodes starting at once apply each exactly once.  Repositories
 * borrow the connection; close them before pg_db_close().
 *
 * The schema means what the SQLite one means, table for table and column
 * for column (times in ms since the epoch as BIGINT, enums by name), and
 * its migrations are numbered the same.
 */
#ifndef STRATUS_REPOSITORIES_POSTGRES_PG_DB_H
#define STRATUS_REPOSITORIES_POSTGRES_PG_DB_H

#include <stdint.h>

#include "repositories/audit_repo.h"
#include "repositories/event_repo.h"
#include "repositories/flavor_repo.h"
#include "repositories/idem_repo.h"
#include "repositories/image_repo.h"
#include "repositories/op_repo.h"
#include "repositories/store_tx.h"
#include "repositories/user_repo.h"
#include "repositories/vm_repo.h"

struct pg_db;

/* Returns a new handle (free with pg_db_close()) or NULL with @err filled. */
struct pg_db *pg_db_open(const char *conninfo, struct st_error *err);
/* NULL-safe. */
void pg_db_close(struct pg_db *db);
/* A trivial query, for /v1/health. */
int pg_db_ping(struct pg_db *db, struct st_error *err);
/* Highest applied migration. */
int pg_db_schema_version(struct pg_db *db, int *out, struct st_error *err);

/*
 * Raw rows, for stratus-admin db copy.  @table is one of the schema's own
 * tables and @cols its columns (", "-separated), named by the caller, never
 * by a user.  pg_db_dump() hands every row, ordered by @order, to @each as
 * text (NULL for SQL NULL) and stops at the first non-zero return;
 * pg_db_load() inserts one row in the caller's transaction (pg_db_begin());
 * pg_db_count() counts the rows.
 */
typedef int (*pg_row_fn)(void *ctx, int n, const char *const *values, struct st_error *err);
int pg_db_dump(struct pg_db *db, const char *table, const char *cols, const char *order,
               pg_row_fn each, void *ctx, struct st_error *err);
int pg_db_load(struct pg_db *db, const char *table, const char *cols, int n,
               const char *const *values, struct st_error *err);
int pg_db_count(struct pg_db *db, const char *table, int64_t *out, struct st_error *err);
/*
 * A read-only REPEATABLE READ transaction: every read sees one snapshot
 * (the source side of a copy).  End it with pg_db_commit() or pg_db_rollback().
 */
int pg_db_begin_snapshot(struct pg_db *db, struct st_error *err);
/* Plain transactions for pg_db_load(); see pg_internal.h. */
int pg_db_begin(struct pg_db *db, struct st_error *err);
int pg_db_commit(struct pg_db *db, struct st_error *err);
void pg_db_rollback(struct pg_db *db);

/* Constructors: fill *out with a repository borrowing @db. */
int vm_repo_pg_open(struct pg_db *db, struct vm_repo *out, struct st_error *err);
int image_repo_pg_open(struct pg_db *db, struct image_repo *out, struct st_error *err);
int flavor_repo_pg_open(struct pg_db *db, struct flavor_repo *out, struct st_error *err);
int user_repo_pg_open(struct pg_db *db, struct user_repo *out, struct st_error *err);
int audit_repo_pg_open(struct pg_db *db, struct audit_repo *out, struct st_error *err);
int op_repo_pg_open(struct pg_db *db, struct op_repo *out, struct st_error *err);
int event_repo_pg_open(struct pg_db *db, struct event_repo *out, struct st_error *err);
int idem_repo_pg_open(struct pg_db *db, struct idem_repo *out, struct st_error *err);
/* A transaction across every repository borrowing @db; it cannot fail to open. */
void store_tx_pg_open(struct pg_db *db, struct store_tx *out);

#endif
