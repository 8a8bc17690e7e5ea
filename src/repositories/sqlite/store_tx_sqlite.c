/*
 * store_tx_sqlite.c - store_tx on SQLite: the levels of sqlite_db_begin(),
 * which every repository of the connection joins (see sqlite_internal.h).
 */
#include "repositories/sqlite/sqlite_db.h"

#include "repositories/sqlite/sqlite_internal.h"

static int
store_tx_sqlite_begin(void *self, struct st_error *err)
{
    return sqlite_db_begin(self, err);
}

static int
store_tx_sqlite_commit(void *self, struct st_error *err)
{
    return sqlite_db_commit(self, err);
}

static void
store_tx_sqlite_rollback(void *self)
{
    sqlite_db_rollback(self);
}

static const struct store_tx_ops store_tx_sqlite_ops = {
    .begin = store_tx_sqlite_begin,
    .commit = store_tx_sqlite_commit,
    .rollback = store_tx_sqlite_rollback,
};

void
store_tx_sqlite_open(struct sqlite_db *db, struct store_tx *out)
{
    out->ops = &store_tx_sqlite_ops;
    out->self = db;
}
