/*
 * test_flavor_service - named VM sizes, and creating VMs by flavor, against
 * real SQLite and libvirt's test:///default driver.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "support/fixture.h"
#include "util/mem.h"

static void
flavor_req(const char *name, unsigned vcpus, unsigned memory_mib, unsigned disk_gib,
           struct flavor_create_req *out)
{
    memset(out, 0, sizeof(*out));
    st_strlcpy(out->name, name, sizeof(out->name));
    out->vcpus = vcpus;
    out->memory_mib = memory_mib;
    out->disk_gib = disk_gib;
}

static void
test_flavor_service__crud(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct flavor_create_req req;
    struct flavor_filter f = {.limit = 10};
    struct flavor_list list = {0};
    struct flavor small, large, got;

    flavor_req("small", 1, 512, 5, &req);
    assert_st_ok(flavor_service_create(&fx->flavor_svc, FIXTURE_OWNER, &req, &small, &err), err);
    assert_true(st_uuid_valid(small.id));
    assert_string_equal(small.owner_id, FIXTURE_OWNER);
    assert_true(small.created_at > 0);
    flavor_req("large", 8, 16384, 100, &req);
    assert_st_ok(flavor_service_create(&fx->flavor_svc, FIXTURE_OWNER, &req, &large, &err), err);

    assert_st_ok(flavor_service_get(&fx->flavor_svc, FIXTURE_OWNER, small.id, &got, &err), err);
    assert_string_equal(got.name, "small");
    assert_int_equal(got.vcpus, 1);
    assert_int_equal(got.memory_mib, 512);
    assert_int_equal(got.disk_gib, 5);
    assert_st_err(flavor_service_get(&fx->flavor_svc, FIXTURE_OTHER_OWNER, small.id, &got, &err),
                  err, ST_ERR_NOT_FOUND, "");

    assert_st_ok(flavor_service_list(&fx->flavor_svc, FIXTURE_OWNER, &f, &list, &err), err);
    assert_int_equal(list.count, 2);
    assert_false(list.more);
    flavor_list_release(&list);

    f.limit = 1;
    assert_st_ok(flavor_service_list(&fx->flavor_svc, FIXTURE_OWNER, &f, &list, &err), err);
    assert_int_equal(list.count, 1);
    assert_true(list.more);
    st_strlcpy(f.marker, list.items[0].id, sizeof(f.marker));
    flavor_list_release(&list);
    assert_st_ok(flavor_service_list(&fx->flavor_svc, FIXTURE_OWNER, &f, &list, &err), err);
    assert_int_equal(list.count, 1);
    assert_false(list.more);
    flavor_list_release(&list);

    assert_st_ok(flavor_service_delete(&fx->flavor_svc, FIXTURE_OWNER, small.id, 0, &err), err);
    assert_st_err(flavor_service_get(&fx->flavor_svc, FIXTURE_OWNER, small.id, &got, &err), err,
                  ST_ERR_NOT_FOUND, "");
    assert_st_err(flavor_service_delete(&fx->flavor_svc, FIXTURE_OWNER, small.id, 0, &err), err,
                  ST_ERR_NOT_FOUND, "");
    assert_st_err(flavor_service_delete(&fx->flavor_svc, FIXTURE_OTHER_OWNER, large.id, 0, &err),
                  err, ST_ERR_NOT_FOUND, "");
    assert_st_ok(flavor_service_get(&fx->flavor_svc, FIXTURE_OWNER, large.id, &got, &err), err);
}

static void
test_flavor_service__create_refuses_bad_requests(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct flavor_create_req req;
    struct flavor out;

    flavor_req("tiny", 0, 512, 5, &req);
    assert_st_err(flavor_service_create(&fx->flavor_svc, FIXTURE_OWNER, &req, &out, &err), err,
                  ST_ERR_INVALID, "vcpus");
    flavor_req("tiny", 1, 1, 5, &req);
    assert_st_err(flavor_service_create(&fx->flavor_svc, FIXTURE_OWNER, &req, &out, &err), err,
                  ST_ERR_INVALID, "memory_mib");
    flavor_req("tiny", 1, 512, 0, &req);
    assert_st_err(flavor_service_create(&fx->flavor_svc, FIXTURE_OWNER, &req, &out, &err), err,
                  ST_ERR_INVALID, "disk_gib");
    flavor_req("-bad name", 1, 512, 5, &req);
    assert_st_err(flavor_service_create(&fx->flavor_svc, FIXTURE_OWNER, &req, &out, &err), err,
                  ST_ERR_INVALID, "name");

    flavor_req("tiny", 1, 512, 5, &req);
    assert_st_ok(flavor_service_create(&fx->flavor_svc, FIXTURE_OWNER, &req, &out, &err), err);
    assert_st_err(flavor_service_create(&fx->flavor_svc, FIXTURE_OWNER, &req, &out, &err), err,
                  ST_ERR_CONFLICT, "");
    assert_st_ok(flavor_service_create(&fx->flavor_svc, FIXTURE_OTHER_OWNER, &req, &out, &err),
                 err);
}

static void
test_flavor_service__create_vm_by_flavor(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct flavor_create_req freq;
    struct vm_create_req req;
    struct flavor flavor;
    struct vm vm, got;
    char missing[ST_ID_BUF];

    flavor_req("medium", 2, 128, 3, &freq);
    assert_st_ok(flavor_service_create(&fx->flavor_svc, FIXTURE_OWNER, &freq, &flavor, &err), err);

    memset(&req, 0, sizeof(req));
    st_strlcpy(req.name, "by-flavor", sizeof(req.name));
    st_strlcpy(req.image_id, fx->image.id, sizeof(req.image_id));
    st_strlcpy(req.flavor_id, flavor.id, sizeof(req.flavor_id));
    assert_st_ok(vm_service_create(&fx->vm_svc, FIXTURE_OWNER, &req, &vm, &err), err);
    assert_int_equal(vm.vcpus, 2);
    assert_int_equal(vm.memory_mib, 128);
    assert_int_equal(vm.disk_gib, 3);
    assert_string_equal(vm.flavor_id, flavor.id);
    assert_st_ok(vm_service_get(&fx->vm_svc, FIXTURE_OWNER, vm.id, &got, &err), err);
    assert_int_equal(got.status, VM_STATUS_RUNNING);
    assert_int_equal(got.vcpus, 2);
    assert_string_equal(got.flavor_id, flavor.id);

    /* A resize by hand means the flavor no longer describes it, in the row too. */
    {
        struct vm_patch_req patch;
        struct vm_filter f = {.limit = 10};
        struct vm_list list = {0};

        assert_st_ok(
            vm_service_action(&fx->vm_svc, FIXTURE_OWNER, vm.id, VM_ACTION_FORCE_STOP, &got, &err),
            err);
        memset(&patch, 0, sizeof(patch));
        patch.has_vcpus = true;
        patch.vcpus = 1;
        assert_st_ok(vm_service_update(&fx->vm_svc, FIXTURE_OWNER, vm.id, &patch, &got, &err), err);
        assert_string_equal(got.flavor_id, "");
        assert_st_ok(vm_service_get(&fx->vm_svc, FIXTURE_OWNER, vm.id, &got, &err), err);
        assert_string_equal(got.flavor_id, "");
        assert_int_equal(got.vcpus, 1);
        assert_st_ok(vm_service_list(&fx->vm_svc, FIXTURE_OWNER, &f, &list, &err), err);
        assert_int_equal(list.count, 1);
        assert_string_equal(list.items[0].flavor_id, "");
        vm_list_release(&list);
    }

    /* Deleting the flavor later leaves the VM's sizes alone. */
    assert_st_ok(flavor_service_delete(&fx->flavor_svc, FIXTURE_OWNER, flavor.id, 0, &err), err);
    assert_st_ok(vm_service_get(&fx->vm_svc, FIXTURE_OWNER, vm.id, &got, &err), err);
    assert_int_equal(got.memory_mib, 128);

    st_uuid_generate(missing);
    st_strlcpy(req.name, "no-flavor", sizeof(req.name));
    st_strlcpy(req.flavor_id, missing, sizeof(req.flavor_id));
    assert_st_err(vm_service_create(&fx->vm_svc, FIXTURE_OWNER, &req, &vm, &err), err,
                  ST_ERR_INVALID, "does not exist");
    assert_non_null(strstr(err.msg, missing));
    assert_string_equal(vm.id, "");

    /* Flavors are shared (admins make them for everyone): another owner's serves too. */
    assert_st_ok(flavor_service_create(&fx->flavor_svc, FIXTURE_OTHER_OWNER, &freq, &flavor, &err),
                 err);
    st_strlcpy(req.flavor_id, flavor.id, sizeof(req.flavor_id));
    assert_st_ok(vm_service_create(&fx->vm_svc, FIXTURE_OWNER, &req, &vm, &err), err);
    assert_string_equal(vm.flavor_id, flavor.id);
    assert_string_equal(vm.owner_id, FIXTURE_OWNER);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, fixture_setup, fixture_teardown)
        T(test_flavor_service__crud),
        T(test_flavor_service__create_refuses_bad_requests),
        T(test_flavor_service__create_vm_by_flavor),
#undef T
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
