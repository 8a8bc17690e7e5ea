/*
 * store_tx_pg.c - store_tx on PostgreSQL: the levels of pg_db_begin(),
 * which every repository of the connection joins (see pg_internal.h).
 */
#include "repositories/postgres/pg_db.h"

#include "repositories/postgres/pg_internal.h"

static int
store_tx_pg_begin(void *self, struct st_error *err)
{
    return pg_db_begin(self, err);
}

static int
store_tx_pg_commit(void *self, struct st_error *err)
{
    return pg_db_commit(self, err);
}

static void
store_tx_pg_rollback(void *self)
{
    pg_db_rollback(self);
}

static const struct store_tx_ops store_tx_pg_ops = {
    .begin = store_tx_pg_begin,
    .commit = store_tx_pg_commit,
    .rollback = store_tx_pg_rollback,
};

void
store_tx_pg_open(struct pg_db *db, struct store_tx *out)
{
    out->ops = &store_tx_pg_ops;
    out->self = db;
}
