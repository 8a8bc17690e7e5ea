/*
 * pg_snapshot.c - the read side of stratus-admin db copy: one snapshot for
 * every table read.
 */
#include "repositories/postgres/pg_internal.h"

int
pg_db_begin_snapshot(struct pg_db *db, struct st_error *err)
{
    if (pg_db_begin(db, err) < 0)
        return -1;
    /* Must be the transaction's first statement: nothing has read yet. */
    if (pg_db_exec_sql(db, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", err) < 0) {
        pg_db_rollback(db);
        return -1;
    }
    return 0;
}
