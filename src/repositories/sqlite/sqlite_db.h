/*
 * sqlite_db.h - one SQLite connection shared by the SQLite repositories of
 * a process (or a worker).
 *
 * sqlite_db_open() opens (creating if needed) the database at @path, turns
 * on WAL and a busy timeout, and applies every pending schema migration,
 * recording each in the schema_version table.  Repositories borrow the
 * connection; close them before sqlite_db_close().
 */
#ifndef STRATUS_REPOSITORIES_SQLITE_DB_H
#define STRATUS_REPOSITORIES_SQLITE_DB_H

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

struct sqlite_db;

/* Returns a new handle (free with sqlite_db_close()) or NULL with @err filled. */
struct sqlite_db *sqlite_db_open(const char *path, struct st_error *err);
/* NULL-safe. */
void sqlite_db_close(struct sqlite_db *db);
/* A trivial query, for /v1/health. */
int sqlite_db_ping(struct sqlite_db *db, struct st_error *err);
/* Highest applied migration, for tests and /v1/health. */
int sqlite_db_schema_version(struct sqlite_db *db, int *out, struct st_error *err);

/*
 * Raw rows, for stratus-admin db copy (the same contract as pg_db_dump(),
 * pg_db_load() and pg_db_count()): @table and @cols come from code, never
 * from a user.  Load inside sqlite_db_begin() ... sqlite_db_commit().
 */
typedef int (*sqlite_row_fn)(void *ctx, int n, const char *const *values, struct st_error *err);
int sqlite_db_dump(struct sqlite_db *db, const char *table, const char *cols, const char *order,
                   sqlite_row_fn each, void *ctx, struct st_error *err);
int sqlite_db_load(struct sqlite_db *db, const char *table, const char *cols, int n,
                   const char *const *values, struct st_error *err);
int sqlite_db_count(struct sqlite_db *db, const char *table, int64_t *out, struct st_error *err);
/* One write transaction (BEGIN IMMEDIATE); see sqlite_internal.h. */
int sqlite_db_begin(struct sqlite_db *db, struct st_error *err);
int sqlite_db_commit(struct sqlite_db *db, struct st_error *err);
void sqlite_db_rollback(struct sqlite_db *db);

/* Constructors: fill *out with a repository borrowing @db. */
int vm_repo_sqlite_open(struct sqlite_db *db, struct vm_repo *out, struct st_error *err);
int image_repo_sqlite_open(struct sqlite_db *db, struct image_repo *out, struct st_error *err);
int flavor_repo_sqlite_open(struct sqlite_db *db, struct flavor_repo *out, struct st_error *err);
int user_repo_sqlite_open(struct sqlite_db *db, struct user_repo *out, struct st_error *err);
int audit_repo_sqlite_open(struct sqlite_db *db, struct audit_repo *out, struct st_error *err);
int op_repo_sqlite_open(struct sqlite_db *db, struct op_repo *out, struct st_error *err);
int event_repo_sqlite_open(struct sqlite_db *db, struct event_repo *out, struct st_error *err);
int idem_repo_sqlite_open(struct sqlite_db *db, struct idem_repo *out, struct st_error *err);
/* A transaction across every repository borrowing @db; it cannot fail to open. */
void store_tx_sqlite_open(struct sqlite_db *db, struct store_tx *out);

#endif
