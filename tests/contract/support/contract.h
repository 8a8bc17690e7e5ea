/*
 * contract.h - the cmocka side of the contract suite: checks of repository
 * calls whose failure messages say which store was under test, and the
 * fixture's SQL helpers as checks.  Include after <cmocka.h>.
 */
#ifndef STRATUS_TESTS_CONTRACT_H
#define STRATUS_TESTS_CONTRACT_H

#include <string.h>

#include "contract/support/store_fixture.h"

/* @call (returning 0 or -1 with @e filled) must succeed. */
#define assert_st_ok(call, e)                                                                      \
    do {                                                                                           \
        if ((call) < 0)                                                                            \
            fail_msg("[%s] %s failed: %s: %s", store_fixture_env_name(), #call,                    \
                     st_err_code_name((e).code), (e).msg);                                         \
    } while (0)

/* @call must fail with @want_code and a message containing @needle. */
#define assert_st_err(call, e, want_code, needle)                                                  \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != -1 || (e).code != (want_code) || !strstr((e).msg, (needle)))                    \
            fail_msg("[%s] %s: want -1 %s containing \"%s\", got %d %s: %s",                       \
                     store_fixture_env_name(), #call, st_err_code_name(want_code), (needle), rc_,  \
                     st_err_code_name((e).code), (e).msg);                                         \
    } while (0)

/* A case on a fresh store of the kind under test, in state as struct store_fixture *. */
#define CONTRACT_TEST(name)                                                                        \
    cmocka_unit_test_setup_teardown(name, store_fixture_setup, store_fixture_teardown)

/* Run @sql on @fx's database outside the repositories; it must succeed. */
static inline void
contract_exec(struct store_fixture *fx, const char *sql)
{
    struct st_error err = {0};

    if (store_fixture_exec_sql(fx, sql, &err) < 0)
        fail_msg("[%s] %s", store_fixture_name(fx), err.msg);
}

/* The one integer @sql answers on @fx's database. */
static inline int64_t
contract_int(struct store_fixture *fx, const char *sql)
{
    struct st_error err = {0};
    int64_t v = 0;

    if (store_fixture_query_int(fx, sql, &v, &err) < 0)
        fail_msg("[%s] %s", store_fixture_name(fx), err.msg);
    return v;
}

#endif
