#include "api/waitgate.h"

#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>

#include "util/mem.h"

/* Keeps the mapping small and every slot + 1 a valid mark. */
#define WAITGATE_SLOTS_MAX 65536u
#define PLACE_FREE 0u
#define MARK_UNBOUND (WAITGATE_SLOTS_MAX + 1u)

/* Atomics that take a lock would take a process-private one. */
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "the wait gate needs lock-free atomic_uint");

/* Shared by the master and all its workers; never moved once mapped. */
struct waitgate {
    atomic_uint limit;   /* places [0, limit) may be taken; 1..n_places */
    unsigned n_places;   /* = the slot count: one place per process at most */
    atomic_uint place[]; /* PLACE_FREE, or the holder's mark (slot + 1) */
};

/* Per process: inherited by fork(), reset by waitgate_bind_slot(). */
static struct waitgate *gate;
static size_t gate_size;
static unsigned my_mark = MARK_UNBOUND;
static int my_place = -1;

static unsigned
clamp_limit(unsigned limit, unsigned n_places)
{
    if (limit < 1)
        return 1;
    return limit > n_places ? n_places : limit;
}

int
waitgate_init(unsigned limit, unsigned slots, struct st_error *err)
{
    size_t size;
    void *map;
    unsigned i;

    if (gate)
        return st_error_set(err, ST_ERR_INTERNAL, "the wait gate is already set up");
    if (limit < 1)
        return st_error_set(err, ST_ERR_INVALID, "wait gate limit %u is not at least 1", limit);
    if (slots < 1 || slots > WAITGATE_SLOTS_MAX)
        return st_error_set(err, ST_ERR_INVALID, "wait gate slot count %u is not in 1..%u", slots,
                            WAITGATE_SLOTS_MAX);
    size = sizeof(struct waitgate) + (size_t)slots * sizeof(atomic_uint);
    map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED)
        return st_error_set_native(err, ST_ERR_INTERNAL, errno,
                                   "cannot map the wait gate (%zu bytes): %s", size,
                                   strerror(errno));
    gate = map;
    gate_size = size;
    gate->n_places = slots;
    atomic_init(&gate->limit, clamp_limit(limit, slots));
    for (i = 0; i < slots; i++)
        atomic_init(&gate->place[i], PLACE_FREE);
    my_mark = MARK_UNBOUND;
    my_place = -1;
    return 0;
}

void
waitgate_set_limit(unsigned limit)
{
    if (gate)
        atomic_store(&gate->limit, clamp_limit(limit, gate->n_places));
}

void
waitgate_bind_slot(unsigned slot)
{
    if (!gate)
        return;
    if (slot >= gate->n_places)
        BUG("wait gate slot out of range");
    my_mark = slot + 1;
    my_place = -1;
}

bool
waitgate_enter(void)
{
    unsigned limit, i;

    if (!gate || my_place >= 0)
        return true;
    limit = atomic_load(&gate->limit);
    for (i = 0; i < limit; i++) {
        unsigned expected = PLACE_FREE;

        /* One compare-and-swap takes the place and marks it: no window to leak it in. */
        if (atomic_compare_exchange_strong(&gate->place[i], &expected, my_mark)) {
            my_place = (int)i;
            return true;
        }
    }
    return false;
}

void
waitgate_leave(void)
{
    if (!gate || my_place < 0)
        return;
    /* Ours while this process lives: only a reclaim after its death touches it. */
    atomic_store(&gate->place[my_place], PLACE_FREE);
    my_place = -1;
}

bool
waitgate_held(void)
{
    return gate && my_place >= 0;
}

void
waitgate_reclaim(unsigned slot)
{
    unsigned i;

    if (!gate || slot >= gate->n_places)
        return;
    for (i = 0; i < gate->n_places; i++) {
        unsigned expected = slot + 1;

        atomic_compare_exchange_strong(&gate->place[i], &expected, PLACE_FREE);
    }
}

unsigned
waitgate_waiting(void)
{
    unsigned i, n = 0;

    if (!gate)
        return 0;
    for (i = 0; i < gate->n_places; i++)
        n += atomic_load(&gate->place[i]) != PLACE_FREE;
    return n;
}

void
waitgate_free(void)
{
    if (gate)
        munmap(gate, gate_size);
    gate = NULL;
    gate_size = 0;
    my_mark = MARK_UNBOUND;
    my_place = -1;
}
