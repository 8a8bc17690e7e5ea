/*
 * test_waitgate.c - the pool-wide limit on waiting requests: enforced
 * across real forked processes, places of dead processes reclaimed by slot,
 * limit changes, and a gate that was never set up.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "api/waitgate.h"

#define N_CHILDREN 6

/*
 * Children report whether waitgate_enter() let them in on @result, then
 * (when they leave) hold their place until @release reaches end of file.
 */
struct pool {
    int result[2];
    int release[2];
};

static void
pool_open(struct pool *p)
{
    assert_int_equal(pipe(p->result), 0);
    assert_int_equal(pipe(p->release), 0);
}

/* Let every waiting child leave, and close what is left. */
static void
pool_close(struct pool *p)
{
    if (p->release[1] >= 0)
        close(p->release[1]);
    close(p->release[0]);
    close(p->result[0]);
    close(p->result[1]);
    p->release[1] = -1;
}

static void
child_run(const struct pool *p, unsigned slot, bool leaves)
{
    char ok, c;

    close(p->result[0]);
    close(p->release[1]);
    waitgate_bind_slot(slot);
    ok = waitgate_enter() ? '1' : '0';
    if (write(p->result[1], &ok, 1) != 1)
        _exit(2);
    if (leaves) {
        while (read(p->release[0], &c, 1) > 0)
            ;
        waitgate_leave();
    }
    /* Without leaving: a worker that dies mid-wait. */
    _exit(0);
}

static pid_t
spawn_waiter(const struct pool *p, unsigned slot, bool leaves)
{
    pid_t pid = fork();

    assert_true(pid >= 0);
    if (pid == 0)
        child_run(p, slot, leaves);
    return pid;
}

static bool
read_result(const struct pool *p)
{
    char c = 0;

    assert_int_equal(read(p->result[0], &c, 1), 1);
    assert_true(c == '0' || c == '1');
    return c == '1';
}

static void
reap_ok(pid_t pid)
{
    int status = 0;

    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static int
teardown(void **state)
{
    (void)state;
    waitgate_free();
    return 0;
}

static void
test_waitgate__uninitialised_always_allows(void **state)
{
    int i;

    (void)state;
    waitgate_bind_slot(7);
    for (i = 0; i < 100; i++)
        assert_true(waitgate_enter());
    assert_false(waitgate_held());
    assert_int_equal(waitgate_waiting(), 0);
    waitgate_leave();
    waitgate_reclaim(7);
    waitgate_set_limit(1);
    assert_true(waitgate_enter());
    waitgate_free();
    assert_true(waitgate_enter());
}

static void
test_waitgate__init_refuses_bad_arguments(void **state)
{
    struct st_error err = {0};

    (void)state;
    assert_int_equal(waitgate_init(0, 4, &err), -1);
    assert_int_equal(err.code, ST_ERR_INVALID);
    assert_non_null(strstr(err.msg, "limit 0"));
    assert_int_equal(waitgate_init(2, 0, &err), -1);
    assert_int_equal(err.code, ST_ERR_INVALID);
    assert_non_null(strstr(err.msg, "slot count 0"));
    /* Nothing was set up by the refusals. */
    assert_true(waitgate_enter());
    assert_false(waitgate_held());

    assert_int_equal(waitgate_init(2, 4, &err), 0);
    assert_int_equal(waitgate_init(2, 4, &err), -1);
    assert_int_equal(err.code, ST_ERR_INTERNAL);
}

static void
test_waitgate__one_process_holds_one_place(void **state)
{
    struct st_error err = {0};

    (void)state;
    assert_int_equal(waitgate_init(2, 4, &err), 0);
    waitgate_bind_slot(0);
    assert_true(waitgate_enter());
    assert_true(waitgate_held());
    /* Entering again takes nothing more. */
    assert_true(waitgate_enter());
    assert_int_equal(waitgate_waiting(), 1);
    waitgate_leave();
    assert_false(waitgate_held());
    assert_int_equal(waitgate_waiting(), 0);
    waitgate_leave();
    assert_int_equal(waitgate_waiting(), 0);
}

static void
test_waitgate__limit_holds_across_processes(void **state)
{
    struct st_error err = {0};
    struct pool p;
    pid_t pids[N_CHILDREN];
    unsigned i, admitted = 0;

    (void)state;
    assert_int_equal(waitgate_init(2, 8, &err), 0);
    pool_open(&p);
    for (i = 0; i < N_CHILDREN; i++)
        pids[i] = spawn_waiter(&p, i, true);
    for (i = 0; i < N_CHILDREN; i++)
        admitted += read_result(&p);
    assert_int_equal(admitted, 2);
    assert_int_equal(waitgate_waiting(), 2);
    assert_false(waitgate_enter());

    pool_close(&p);
    for (i = 0; i < N_CHILDREN; i++)
        reap_ok(pids[i]);
    assert_int_equal(waitgate_waiting(), 0);
    assert_true(waitgate_enter());
    waitgate_leave();
}

static void
test_waitgate__reclaim_gives_back_a_dead_process_place(void **state)
{
    struct st_error err = {0};
    struct pool p;
    pid_t pid;
    int status = 0;

    (void)state;
    assert_int_equal(waitgate_init(2, 4, &err), 0);
    pool_open(&p);

    /* Slot 3 enters and exits without leaving. */
    pid = spawn_waiter(&p, 3, false);
    assert_true(read_result(&p));
    reap_ok(pid);
    assert_int_equal(waitgate_waiting(), 1);

    /* Slot 1 enters and is killed while it waits. */
    pid = spawn_waiter(&p, 1, true);
    assert_true(read_result(&p));
    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(waitgate_waiting(), 2);
    assert_false(waitgate_enter());

    /* Another slot's reclaim gives back nothing; each dead slot's gives back its own. */
    waitgate_reclaim(0);
    waitgate_reclaim(99);
    assert_int_equal(waitgate_waiting(), 2);
    waitgate_reclaim(3);
    assert_int_equal(waitgate_waiting(), 1);
    waitgate_reclaim(1);
    assert_int_equal(waitgate_waiting(), 0);

    /* The slot is usable again. */
    pid = spawn_waiter(&p, 3, true);
    assert_true(read_result(&p));
    pool_close(&p);
    reap_ok(pid);
    assert_int_equal(waitgate_waiting(), 0);
}

static void
test_waitgate__set_limit_applies_at_once(void **state)
{
    struct st_error err = {0};
    struct pool p;
    pid_t pids[4];
    unsigned i;

    (void)state;
    assert_int_equal(waitgate_init(1, 4, &err), 0);
    pool_open(&p);
    pids[0] = spawn_waiter(&p, 0, true);
    assert_true(read_result(&p));
    pids[1] = spawn_waiter(&p, 1, true);
    assert_false(read_result(&p));

    waitgate_set_limit(2);
    pids[2] = spawn_waiter(&p, 2, true);
    assert_true(read_result(&p));

    /* Lowered: the places taken stay taken, and nobody else gets in. */
    waitgate_set_limit(1);
    pids[3] = spawn_waiter(&p, 3, true);
    assert_false(read_result(&p));
    assert_int_equal(waitgate_waiting(), 2);

    pool_close(&p);
    for (i = 0; i < 4; i++)
        reap_ok(pids[i]);
    assert_int_equal(waitgate_waiting(), 0);
}

static void
test_waitgate__limit_above_slots_is_the_slot_count(void **state)
{
    struct st_error err = {0};
    struct pool p;
    pid_t pids[2];
    unsigned i, admitted = 0;

    (void)state;
    assert_int_equal(waitgate_init(100, 2, &err), 0);
    pool_open(&p);
    for (i = 0; i < 2; i++)
        pids[i] = spawn_waiter(&p, i, true);
    for (i = 0; i < 2; i++)
        admitted += read_result(&p);
    assert_int_equal(admitted, 2);
    /* Unbound, this process competes for the same places. */
    assert_false(waitgate_enter());
    pool_close(&p);
    for (i = 0; i < 2; i++)
        reap_ok(pids[i]);
    assert_true(waitgate_enter());
    waitgate_leave();
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_waitgate__uninitialised_always_allows, teardown),
        cmocka_unit_test_teardown(test_waitgate__init_refuses_bad_arguments, teardown),
        cmocka_unit_test_teardown(test_waitgate__one_process_holds_one_place, teardown),
        cmocka_unit_test_teardown(test_waitgate__limit_holds_across_processes, teardown),
        cmocka_unit_test_teardown(test_waitgate__reclaim_gives_back_a_dead_process_place, teardown),
        cmocka_unit_test_teardown(test_waitgate__set_limit_applies_at_once, teardown),
        cmocka_unit_test_teardown(test_waitgate__limit_above_slots_is_the_slot_count, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
