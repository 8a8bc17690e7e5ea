/*
 * checks.h - cmocka checks of what a fixture's real backends hold: the row
 * as stored, the domain, the root disk.  Shared by the service tests;
 * include after <cmocka.h> (these expand to cmocka calls, unlike fixture.c).
 */
#ifndef STRATUS_TESTS_CHECKS_H
#define STRATUS_TESTS_CHECKS_H

#include "support/fixture.h"

/* The row as stored, unscoped and unmerged. */
static inline struct vm
fx_stored(struct fixture *fx, const char *id)
{
    struct st_error err = {0};
    struct vm vm;

    assert_st_ok(vm_repo_get(&fx->vms_real, NULL, id, &vm, &err), err);
    return vm;
}

/* Whether @id's domain exists; any answer but "no such domain" fails the test. */
static inline bool
fx_domain_exists(struct fixture *fx, const char *id)
{
    struct st_error err = {0};
    enum hv_state st;

    if (hypervisor_state(&fx->hv_real, id, &st, &err) == 0)
        return true;
    assert_int_equal(err.code, ST_ERR_NOT_FOUND);
    return false;
}

static inline void
fx_assert_no_domain(struct fixture *fx, const char *id)
{
    assert_false(fx_domain_exists(fx, id));
}

/* 0 when @id's root disk exists, else the code storage_info() answered. */
static inline int
fx_disk_state(struct fixture *fx, const char *id)
{
    struct st_error err = {0};
    struct storage_vol_info info;
    char vol[ST_NAME_BUF];

    vm_service_disk_vol_name(id, vol);
    if (storage_info(&fx->storage_real, fx->disk_pool, vol, &info, &err) == 0)
        return 0;
    return (int)err.code;
}

/* Whether @id's root disk exists; any answer but "no such volume" fails the test. */
static inline bool
fx_has_disk(struct fixture *fx, const char *id)
{
    int state = fx_disk_state(fx, id);

    if (state == 0)
        return true;
    assert_int_equal(state, ST_ERR_NOT_FOUND);
    return false;
}

static inline void
fx_assert_disk(struct fixture *fx, const char *id)
{
    assert_int_equal(fx_disk_state(fx, id), 0);
}

static inline void
fx_assert_no_disk(struct fixture *fx, const char *id)
{
    assert_int_equal(fx_disk_state(fx, id), ST_ERR_NOT_FOUND);
}

#endif
