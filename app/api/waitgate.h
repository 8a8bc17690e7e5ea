/*
 * waitgate.h - how many requests of one stratus-api master may wait at once.
 *
 * A request that waits for an outcome (?wait=N, a duplicate Idempotency-Key)
 * holds its worker for that long; with every worker waiting, nothing else is
 * served.  The gate hands out at most `limit` places across all workers of a
 * master: a request waits only while it holds one, and one that gets none
 * answers at once.
 *
 * The places live in an anonymous MAP_SHARED mapping the master makes before
 * it forks, so every worker sees the same ones.  Each place is one atomic
 * word holding the slot of the process that took it (0: free): taking and
 * giving back are single compare-and-swaps, so a process killed at any
 * instant leaves either a free place or one marked with its slot, which the
 * master gives back after reaping it.  Slots are the master's: it gives each
 * live worker its own, current and retiring sets alike, and reuses a slot
 * only after the reclaim.
 *
 * A process holds at most one place (a worker serves one request at a time).
 * In a process where waitgate_init() never ran (unit tests, stratus-admin,
 * stratus-worker) there is no pool to protect: waitgate_enter() always
 * allows and waitgate_leave() does nothing.
 */
#ifndef STRATUS_API_WAITGATE_H
#define STRATUS_API_WAITGATE_H

#include <stdbool.h>

#include "util/err.h"

/*
 * Master, before forking: map the gate with @slots slots (the size of the
 * master's slot table) and a limit of @limit places.  No more than @slots can
 * ever wait (one place per process), so a larger @limit acts as @slots.
 * Returns 0, or -1 with @err filled: ST_ERR_INVALID for a limit or slot count
 * of 0, ST_ERR_INTERNAL when the mapping fails or a gate is already set up.
 * Released by waitgate_free().
 */
int waitgate_init(unsigned limit, unsigned slots, struct st_error *err);

/*
 * Master, on reload: from now on at most @limit places (at least 1; clamped
 * to the slot count) may be taken.  Places already taken beyond a lowered
 * limit stay taken until their waits end.  No-op without a gate.
 */
void waitgate_set_limit(unsigned limit);

/*
 * Worker, right after fork(): this process is the one in @slot of the
 * master's table; the places it takes are marked with it.  Forgets any place
 * the parent held (it stays the parent's).  @slot must be below the slot
 * count given to waitgate_init() (else BUG()).  No-op without a gate.
 */
void waitgate_bind_slot(unsigned slot);

/*
 * Take a place before waiting.  True: the caller may wait and holds a place
 * until waitgate_leave() (true again, taking nothing more, when it holds one
 * already).  False: `limit` places are taken; the caller must not wait.
 * Never blocks.  Always true without a gate.  A process that never called
 * waitgate_bind_slot() takes places no reclaim can give back.
 */
bool waitgate_enter(void);

/* Give back the place this process holds; nothing when it holds none. */
void waitgate_leave(void);

/* Whether this process holds a place now.  Always false without a gate. */
bool waitgate_held(void);

/*
 * Master, after reaping the process that was in @slot (and before giving
 * @slot to another): give back every place marked with @slot, so a worker
 * killed mid-wait leaks none.  An out-of-range @slot is ignored.  No-op
 * without a gate.
 */
void waitgate_reclaim(unsigned slot);

/* How many places are taken now, across all processes.  0 without a gate. */
unsigned waitgate_waiting(void);

/*
 * Unmap the gate in this process; afterwards it behaves as if
 * waitgate_init() never ran.  Workers still running keep their mapping.
 * Safe to call without a gate.
 */
void waitgate_free(void);

#endif
