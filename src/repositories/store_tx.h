/*
 * store_tx.h - one write transaction across several repositories of the
 * same store.
 *
 * Every repository of a store shares one connection.  Between begin() and
 * commit() their methods join this transaction instead of opening their
 * own: a VM row and its operation, or a VM's new sizes and its resize
 * operation, are written together or not at all.
 *
 * Nesting: a repository method that opens its own transaction inside an
 * open one joins it.  When such an inner transaction fails, the whole
 * transaction is doomed: the outermost commit() then rolls back and
 * answers ST_ERR_BACKEND ("the transaction was rolled back"), and
 * rollback() ends it.  Callers therefore write
 *
 *   if (store_tx_begin(tx, err) < 0) return -1;
 *   if (repo_a(...) < 0 || repo_b(...) < 0) { store_tx_rollback(tx); return -1; }
 *   return store_tx_commit(tx, err);
 *
 * SQLite: BEGIN IMMEDIATE (the write lock is held from the start, with the
 * store's busy bound); PostgreSQL: BEGIN, with each method's advisory
 * locks held until the end.  Returns 0, or -1 with @err filled:
 * ST_ERR_UNAVAILABLE when the store is busy or down, ST_ERR_BACKEND else.
 */
#ifndef STRATUS_REPOSITORIES_STORE_TX_H
#define STRATUS_REPOSITORIES_STORE_TX_H

#include "util/err.h"

struct store_tx_ops {
    /* Mandatory. Open the transaction (or join the one open: nesting counts). */
    int (*begin)(void *self, struct st_error *err);
    /* Mandatory. Commit the outermost level; an inner level only counts down. */
    int (*commit)(void *self, struct st_error *err);
    /* Mandatory. Roll back the outermost level; an inner level dooms the whole. */
    void (*rollback)(void *self);
};

struct store_tx {
    const struct store_tx_ops *ops;
    void *self;
};

static inline int
store_tx_begin(struct store_tx *tx, struct st_error *err)
{
    return tx->ops->begin(tx->self, err);
}

static inline int
store_tx_commit(struct store_tx *tx, struct st_error *err)
{
    return tx->ops->commit(tx->self, err);
}

static inline void
store_tx_rollback(struct store_tx *tx)
{
    tx->ops->rollback(tx->self);
}

#endif
