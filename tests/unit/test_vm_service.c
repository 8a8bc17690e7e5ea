/*
 * test_vm_service - VM business rules against real SQLite and libvirt's
 * test:///default driver, with faults injected through support/fault.h.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "support/checks.h"
#include "support/fixture.h"
#include "util/mem.h"

/* The row as stored, unscoped and unmerged. */
static enum vm_status
shown(struct fixture *fx, const char *id)
{
    struct st_error err = {0};
    struct vm vm;

    assert_st_ok(vm_service_get(&fx->vm_svc, FIXTURE_OWNER, id, &vm, &err), err);
    return vm.status;
}

static void
create(struct fixture *fx, const char *name, struct vm *out)
{
    struct st_error err = {0};

    assert_st_ok(fixture_create_vm(fx, name, out, &err), err);
}

static void
act(struct fixture *fx, const char *id, enum vm_action action, enum vm_status want)
{
    struct st_error err = {0};
    struct vm vm;

    assert_st_ok(vm_service_action(&fx->vm_svc, FIXTURE_OWNER, id, action, &vm, &err), err);
    assert_int_equal(vm.status, want);
    assert_int_equal(fx_stored(fx, id).status, want);
}

static void
test_vm_service__create_then_get_and_list_show_running(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct storage_vol_info disk;
    struct vm_filter f = {.limit = 10};
    struct vm_list list = {0};
    struct vm vm, got;
    char vol[ST_NAME_BUF];
    enum hv_state st;

    create(fx, "web-01", &vm);
    assert_true(st_uuid_valid(vm.id));
    assert_int_equal(vm.status, VM_STATUS_RUNNING);
    assert_int_equal(vm.step, VM_STEP_DONE);
    assert_string_equal(vm.owner_id, FIXTURE_OWNER);
    assert_string_equal(vm.image_id, fx->image.id);
    assert_string_equal(vm.fault, "");

    assert_st_ok(vm_service_get(&fx->vm_svc, FIXTURE_OWNER, vm.id, &got, &err), err);
    assert_int_equal(got.status, VM_STATUS_RUNNING);
    assert_string_equal(got.name, "web-01");
    assert_int_equal(got.vcpus, 1);
    assert_int_equal(got.memory_mib, 64);
    assert_int_equal(got.disk_gib, 1);

    assert_st_ok(vm_service_list(&fx->vm_svc, FIXTURE_OWNER, &f, &list, &err), err);
    assert_int_equal(list.count, 1);
    assert_string_equal(list.items[0].id, vm.id);
    assert_int_equal(list.items[0].status, VM_STATUS_RUNNING);
    vm_list_release(&list);

    assert_st_ok(hypervisor_state(&fx->hv_real, vm.id, &st, &err), err);
    assert_int_equal(st, HV_STATE_RUNNING);
    vm_service_disk_vol_name(vm.id, vol);
    assert_st_ok(storage_info(&fx->storage_real, fx->disk_pool, vol, &disk, &err), err);
    assert_true(disk.capacity >= (uint64_t)1 << 30);
}

static void
test_vm_service__create_refuses_bad_references(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct vm_create_req req;
    struct image_create_req ireq;
    struct image big;
    struct vm vm;
    char missing[ST_ID_BUF];

    st_uuid_generate(missing);
    fixture_create_req(fx, "web-01", &req);
    st_strlcpy(req.image_id, missing, sizeof(req.image_id));
    assert_st_err(vm_service_create(&fx->vm_svc, FIXTURE_OWNER, &req, &vm, &err), err,
                  ST_ERR_INVALID, "does not exist");
    assert_non_null(strstr(err.msg, missing));
    assert_string_equal(vm.id, "");

    /* Another owner's image is as absent as a missing one. */
    fixture_create_req(fx, "web-01", &req);
    assert_st_err(vm_service_create(&fx->vm_svc, FIXTURE_OTHER_OWNER, &req, &vm, &err), err,
                  ST_ERR_INVALID, "does not exist");

    fixture_create_req(fx, "web-01", &req);
    st_strlcpy(req.flavor_id, missing, sizeof(req.flavor_id));
    assert_st_err(vm_service_create(&fx->vm_svc, FIXTURE_OWNER, &req, &vm, &err), err,
                  ST_ERR_INVALID, "flavor");

    memset(&ireq, 0, sizeof(ireq));
    st_strlcpy(ireq.name, "big", sizeof(ireq.name));
    {
        ST_AUTOFREE char *path = st_xasprintf("%s/big.qcow2", fx->import_dir);

        assert_int_equal(st_strlcpy(ireq.source_path, path, sizeof(ireq.source_path)), 0);
    }
    ireq.format = IMAGE_FORMAT_QCOW2;
    assert_st_ok(fixture_write_qcow2(ireq.source_path, (uint64_t)3 << 30, NULL, &err), err);
    assert_st_ok(image_service_register(&fx->image_svc, FIXTURE_OWNER, &ireq, &big, &err), err);
    fixture_create_req(fx, "web-01", &req);
    st_strlcpy(req.image_id, big.id, sizeof(req.image_id));
    req.disk_gib = 2;
    assert_st_err(vm_service_create(&fx->vm_svc, FIXTURE_OWNER, &req, &vm, &err), err,
                  ST_ERR_INVALID, "disk_gib 2");
    assert_non_null(strstr(err.msg, "3 GiB"));
    req.disk_gib = 3;
    assert_st_ok(vm_service_create(&fx->vm_svc, FIXTURE_OWNER, &req, &vm, &err), err);
    assert_int_equal(fx_stored(fx, vm.id).disk_gib, 3);

    /* Only the last create made a row, a domain and a disk. */
    assert_int_equal(fixture_pool_volume_count(fx, fx->disk_pool), 1);
}

static void
test_vm_service__create_name_taken_is_conflict(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct hv_domain_info *doms = NULL;
    struct vm a, b;
    size_t n = 0;

    create(fx, "web-01", &a);
    assert_st_err(fixture_create_vm(fx, "web-01", &b, &err), err, ST_ERR_CONFLICT, "");
    assert_string_equal(b.id, "");
    assert_st_ok(hypervisor_list_all(&fx->hv_real, &doms, &n, &err), err);
    free(doms);
    assert_int_equal(n, 1);
    assert_int_equal(fixture_pool_volume_count(fx, fx->disk_pool), 1);
}

/* One repository list and one list_all per call, whatever the page holds. */
static void
test_vm_service__list_makes_one_bulk_call(void **state)
{
    struct fixture *fx = *state;
    static const size_t sizes[] = {0, 1, 300};
    struct st_error err = {0};
    size_t have = 0, i;

    for (i = 0; i < ST_ARRAY_LEN(sizes); i++) {
        struct vm_filter f = {.limit = ST_LIST_LIMIT_MAX};
        struct vm_list list = {0};
        size_t j;

        assert_st_ok(fixture_seed_vms(fx,
                                      i == 0   ? "a"
                                      : i == 1 ? "b"
                                               : "c",
                                      sizes[i] - have, VM_STATUS_STOPPED, &err),
                     err);
        have = sizes[i];
        fault_hypervisor_reset(&fx->hv);
        fault_vm_repo_reset(&fx->vms);
        assert_st_ok(vm_service_list(&fx->vm_svc, FIXTURE_OWNER, &f, &list, &err), err);
        assert_int_equal(list.count, have);
        assert_false(list.more);
        for (j = 0; j < list.count; j++)
            assert_int_equal(list.items[j].status, VM_STATUS_STOPPED);
        vm_list_release(&list);
        assert_int_equal(fault_hypervisor_calls(&fx->hv, FAULT_HV_LIST_ALL), 1);
        assert_int_equal(fault_hypervisor_calls(&fx->hv, FAULT_HV_STATE), 0);
        assert_int_equal(fault_vm_repo_calls(&fx->vms, FAULT_VR_LIST), 1);
        assert_int_equal(fault_vm_repo_calls(&fx->vms, FAULT_VR_GET), 0);
    }
}

static void
test_vm_service__list_pages_with_marker(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct vm_filter f = {.limit = 2};
    char seen[5][ST_ID_BUF];
    size_t nseen = 0, pages = 0, i, j;

    assert_st_ok(fixture_seed_vms(fx, "p", 5, VM_STATUS_RUNNING, &err), err);
    for (;;) {
        struct vm_list list = {0};
        bool more;

        assert_st_ok(vm_service_list(&fx->vm_svc, FIXTURE_OWNER, &f, &list, &err), err);
        pages++;
        assert_true(list.count <= 2);
        for (i = 0; i < list.count; i++) {
            assert_true(nseen < 5);
            st_strlcpy(seen[nseen++], list.items[i].id, ST_ID_BUF);
        }
        more = list.more && list.count > 0;
        if (more)
            st_strlcpy(f.marker, list.items[list.count - 1].id, sizeof(f.marker));
        vm_list_release(&list);
        if (!more)
            break;
        assert_true(pages < 10);
    }
    assert_int_equal(nseen, 5);
    assert_true(pages >= 3);
    for (i = 0; i < nseen; i++)
        for (j = i + 1; j < nseen; j++)
            assert_string_not_equal(seen[i], seen[j]);
    /* Another owner sees none of them. */
    {
        struct vm_list list = {0};

        memset(&f, 0, sizeof(f));
        f.limit = 10;
        assert_st_ok(vm_service_list(&fx->vm_svc, FIXTURE_OTHER_OWNER, &f, &list, &err), err);
        assert_int_equal(list.count, 0);
        vm_list_release(&list);
    }
}

static void
test_vm_service__undefined_behind_back_shows_missing(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct vm_filter f = {.limit = 10};
    struct vm_list list = {0};
    struct vm vm, other;

    create(fx, "gone", &vm);
    create(fx, "stays", &other);
    assert_st_ok(hypervisor_destroy(&fx->hv_real, vm.id, &err), err);
    assert_st_ok(hypervisor_undefine(&fx->hv_real, vm.id, &err), err);

    assert_int_equal(shown(fx, vm.id), VM_STATUS_MISSING);
    assert_int_equal(shown(fx, other.id), VM_STATUS_RUNNING);
    assert_int_equal(fx_stored(fx, vm.id).status, VM_STATUS_RUNNING);

    assert_st_ok(vm_service_list(&fx->vm_svc, FIXTURE_OWNER, &f, &list, &err), err);
    assert_int_equal(list.count, 2);
    /* Both rows may share a millisecond, so the order is by id: find each. */
    for (size_t i = 0; i < list.count; i++)
        assert_int_equal(list.items[i].status, strcmp(list.items[i].id, vm.id) == 0
                                                   ? VM_STATUS_MISSING
                                                   : VM_STATUS_RUNNING);
    vm_list_release(&list);

    f.has_status = true;
    f.status = VM_STATUS_MISSING;
    assert_st_ok(vm_service_list(&fx->vm_svc, FIXTURE_OWNER, &f, &list, &err), err);
    assert_int_equal(list.count, 1);
    assert_string_equal(list.items[0].id, vm.id);
    vm_list_release(&list);

    f.status = VM_STATUS_RUNNING;
    assert_st_ok(vm_service_list(&fx->vm_svc, FIXTURE_OWNER, &f, &list, &err), err);
    assert_int_equal(list.count, 1);
    assert_string_equal(list.items[0].id, other.id);
    vm_list_release(&list);
}

static void
test_vm_service__stopped_behind_back_shows_stopped(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct vm_filter f = {.limit = 10, .has_status = true, .status = VM_STATUS_RUNNING};
    struct vm_list list = {0};
    struct vm vm;

    create(fx, "web-01", &vm);
    assert_st_ok(hypervisor_destroy(&fx->hv_real, vm.id, &err), err);
    assert_int_equal(shown(fx, vm.id), VM_STATUS_STOPPED);
    assert_int_equal(fx_stored(fx, vm.id).status, VM_STATUS_RUNNING);
    /* Stored running, shown stopped: a running filter drops it after the merge. */
    assert_st_ok(vm_service_list(&fx->vm_svc, FIXTURE_OWNER, &f, &list, &err), err);
    assert_int_equal(list.count, 0);
    vm_list_release(&list);
    /* ...and a stopped filter finds it, though its row still says running. */
    f.status = VM_STATUS_STOPPED;
    assert_st_ok(vm_service_list(&fx->vm_svc, FIXTURE_OWNER, &f, &list, &err), err);
    assert_int_equal(list.count, 1);
    assert_string_equal(list.items[0].id, vm.id);
    vm_list_release(&list);
    f.has_status = false;
    assert_st_ok(vm_service_list(&fx->vm_svc, FIXTURE_OWNER, &f, &list, &err), err);
    assert_int_equal(list.count, 1);
    assert_int_equal(list.items[0].status, VM_STATUS_STOPPED);
    vm_list_release(&list);
    /* Paused behind its back shows paused. */
    assert_st_ok(hypervisor_start(&fx->hv_real, vm.id, &err), err);
    assert_st_ok(hypervisor_suspend(&fx->hv_real, vm.id, &err), err);
    assert_int_equal(shown(fx, vm.id), VM_STATUS_PAUSED);
}

static void
test_vm_service__list_fails_when_hypervisor_unavailable(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct vm_filter f = {.limit = 10};
    struct vm_list list = {0};
    struct vm vm;

    create(fx, "web-01", &vm);
    fault_hypervisor_fail(&fx->hv, FAULT_HV_LIST_ALL, 1, ST_ERR_UNAVAILABLE);
    assert_st_err(vm_service_list(&fx->vm_svc, FIXTURE_OWNER, &f, &list, &err), err,
                  ST_ERR_UNAVAILABLE, "injected fault");
    assert_int_equal(list.count, 0);
    fault_hypervisor_fail(&fx->hv, FAULT_HV_STATE, 1, ST_ERR_UNAVAILABLE);
    assert_st_err(vm_service_get(&fx->vm_svc, FIXTURE_OWNER, vm.id, &vm, &err), err,
                  ST_ERR_UNAVAILABLE, "injected fault");
}

static void
test_vm_service__get_is_scoped(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct vm vm, got;
    char missing[ST_ID_BUF];

    create(fx, "web-01", &vm);
    assert_st_err(vm_service_get(&fx->vm_svc, FIXTURE_OTHER_OWNER, vm.id, &got, &err), err,
                  ST_ERR_NOT_FOUND, "");
    st_uuid_generate(missing);
    assert_st_err(vm_service_get(&fx->vm_svc, FIXTURE_OWNER, missing, &got, &err), err,
                  ST_ERR_NOT_FOUND, "");
    assert_st_err(vm_service_delete(&fx->vm_svc, FIXTURE_OTHER_OWNER, vm.id, NULL, &err), err,
                  ST_ERR_NOT_FOUND, "");
    assert_int_equal(shown(fx, vm.id), VM_STATUS_RUNNING);
}

/* Put a fresh running VM into @want through the service. */
static void
vm_in_state(struct fixture *fx, const char *name, enum vm_status want, struct vm *out)
{
    create(fx, name, out);
    if (want == VM_STATUS_STOPPED)
        act(fx, out->id, VM_ACTION_FORCE_STOP, VM_STATUS_STOPPED);
    else if (want == VM_STATUS_PAUSED)
        act(fx, out->id, VM_ACTION_PAUSE, VM_STATUS_PAUSED);
}

/* Every action from every state the service can put a VM in. */
static void
test_vm_service__action_transitions(void **state)
{
    struct fixture *fx = *state;
    static const enum vm_status from[] = {VM_STATUS_RUNNING, VM_STATUS_STOPPED, VM_STATUS_PAUSED};
    /* Result of each action from each state; VM_STATUS_ERROR marks a refusal. */
    static const enum vm_status table[3][6] = {
        /* start, stop, force-stop, reboot, pause, resume */
        {VM_STATUS_ERROR, VM_STATUS_STOPPED, VM_STATUS_STOPPED, VM_STATUS_RUNNING, VM_STATUS_PAUSED,
         VM_STATUS_ERROR},
        {VM_STATUS_RUNNING, VM_STATUS_ERROR, VM_STATUS_ERROR, VM_STATUS_ERROR, VM_STATUS_ERROR,
         VM_STATUS_ERROR},
        {VM_STATUS_ERROR, VM_STATUS_ERROR, VM_STATUS_STOPPED, VM_STATUS_ERROR, VM_STATUS_ERROR,
         VM_STATUS_RUNNING},
    };
    size_t i, a;

    for (i = 0; i < ST_ARRAY_LEN(from); i++) {
        for (a = 0; a < 6; a++) {
            struct st_error err = {0};
            struct vm vm, got;
            char name[ST_NAME_BUF], want[128];

            snprintf(name, sizeof(name), "vm-%zu-%zu", i, a);
            vm_in_state(fx, name, from[i], &vm);
            if (table[i][a] != VM_STATUS_ERROR) {
                act(fx, vm.id, (enum vm_action)a, table[i][a]);
                continue;
            }
            snprintf(want, sizeof(want), "VM '%s' is %s; cannot %s", vm.id, vm_status_name(from[i]),
                     vm_action_name((enum vm_action)a));
            assert_st_err(
                vm_service_action(&fx->vm_svc, FIXTURE_OWNER, vm.id, (enum vm_action)a, &got, &err),
                err, ST_ERR_CONFLICT, want);
            assert_int_equal(shown(fx, vm.id), from[i]);
        }
    }
}

static void
test_vm_service__actions_refused_outside_live_states(void **state)
{
    struct fixture *fx = *state;
    static const enum vm_status stuck[] = {VM_STATUS_CREATING, VM_STATUS_DELETING, VM_STATUS_ERROR};
    struct st_error err = {0};
    struct vm vm, got, row;
    size_t i, a;

    create(fx, "web-01", &vm);
    for (i = 0; i < ST_ARRAY_LEN(stuck); i++) {
        row = fx_stored(fx, vm.id);
        row.status = stuck[i];
        assert_st_ok(vm_repo_update(&fx->vms_real, NULL, &row, &err), err);
        row.revision++;
        assert_int_equal(shown(fx, vm.id), stuck[i]);
        for (a = 0; a < 6; a++) {
            char want[128];

            snprintf(want, sizeof(want), "is %s; cannot %s", vm_status_name(stuck[i]),
                     vm_action_name((enum vm_action)a));
            assert_st_err(
                vm_service_action(&fx->vm_svc, FIXTURE_OWNER, vm.id, (enum vm_action)a, &got, &err),
                err, ST_ERR_CONFLICT, want);
        }
    }
    /* Missing: the domain went away behind the service's back. */
    row.status = VM_STATUS_RUNNING;
    assert_st_ok(vm_repo_update(&fx->vms_real, NULL, &row, &err), err);
    assert_st_ok(hypervisor_destroy(&fx->hv_real, vm.id, &err), err);
    assert_st_ok(hypervisor_undefine(&fx->hv_real, vm.id, &err), err);
    fault_hypervisor_reset(&fx->hv);
    assert_st_err(vm_service_action(&fx->vm_svc, FIXTURE_OWNER, vm.id, VM_ACTION_START, &got, &err),
                  err, ST_ERR_CONFLICT, "is missing; cannot start");
    assert_int_equal(fault_hypervisor_calls(&fx->hv, FAULT_HV_START), 0);
}

static void
test_vm_service__stop_is_graceful_when_the_guest_obeys(void **state)
{
    struct fixture *fx = *state;
    struct vm vm;

    create(fx, "web-01", &vm);
    act(fx, vm.id, VM_ACTION_STOP, VM_STATUS_STOPPED);
    assert_int_equal(fault_hypervisor_calls(&fx->hv, FAULT_HV_SHUTDOWN), 1);
    assert_int_equal(fault_hypervisor_calls(&fx->hv, FAULT_HV_DESTROY), 0);
}

static void
test_vm_service__stop_destroys_after_timeout(void **state)
{
    struct fixture *fx = *state;
    struct vm vm;
    int64_t start;

    create(fx, "web-01", &vm);
    /* The guest ignores the ACPI request. */
    fault_hypervisor_skip(&fx->hv, FAULT_HV_SHUTDOWN, 1);
    start = st_monotonic_ms();
    act(fx, vm.id, VM_ACTION_STOP, VM_STATUS_STOPPED);
    assert_true(st_monotonic_ms() - start >= FIXTURE_STOP_TIMEOUT_MS);
    assert_true(fault_hypervisor_calls(&fx->hv, FAULT_HV_STATE) >= 3);
    assert_int_equal(fault_hypervisor_calls(&fx->hv, FAULT_HV_DESTROY), 1);
}

static void
test_vm_service__action_failure_keeps_stored_status(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct vm vm, got;

    create(fx, "web-01", &vm);
    fault_hypervisor_fail(&fx->hv, FAULT_HV_SUSPEND, 1, ST_ERR_BACKEND);
    assert_st_err(vm_service_action(&fx->vm_svc, FIXTURE_OWNER, vm.id, VM_ACTION_PAUSE, &got, &err),
                  err, ST_ERR_BACKEND, "injected fault");
    assert_int_equal(fx_stored(fx, vm.id).status, VM_STATUS_RUNNING);
    assert_int_equal(shown(fx, vm.id), VM_STATUS_RUNNING);
}

static void
test_vm_service__patch_rules(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct vm_patch_req req;
    struct vm vm, other, got, row;

    create(fx, "web-01", &vm);
    create(fx, "web-02", &other);

    memset(&req, 0, sizeof(req));
    req.has_name = true;
    st_strlcpy(req.name, "web-renamed", sizeof(req.name));
    assert_st_ok(vm_service_update(&fx->vm_svc, FIXTURE_OWNER, vm.id, &req, &got, &err), err);
    assert_string_equal(got.name, "web-renamed");
    assert_int_equal(got.status, VM_STATUS_RUNNING);
    assert_string_equal(fx_stored(fx, vm.id).name, "web-renamed");

    st_strlcpy(req.name, "web-02", sizeof(req.name));
    assert_st_err(vm_service_update(&fx->vm_svc, FIXTURE_OWNER, vm.id, &req, &got, &err), err,
                  ST_ERR_CONFLICT, "");
    assert_string_equal(fx_stored(fx, vm.id).name, "web-renamed");

    memset(&req, 0, sizeof(req));
    req.has_vcpus = true;
    req.vcpus = 2;
    assert_st_err(vm_service_update(&fx->vm_svc, FIXTURE_OWNER, vm.id, &req, &got, &err), err,
                  ST_ERR_CONFLICT, "is running; stop it to change vcpus or memory_mib");
    assert_int_equal(fx_stored(fx, vm.id).vcpus, 1);

    /* Asking for the sizes it already has changes nothing, so it is no conflict. */
    req.vcpus = 1;
    assert_st_ok(vm_service_update(&fx->vm_svc, FIXTURE_OWNER, vm.id, &req, &got, &err), err);

    act(fx, vm.id, VM_ACTION_STOP, VM_STATUS_STOPPED);
    fault_hypervisor_reset(&fx->hv);
    req.vcpus = 2;
    req.has_memory_mib = true;
    req.memory_mib = 128;
    assert_st_ok(vm_service_update(&fx->vm_svc, FIXTURE_OWNER, vm.id, &req, &got, &err), err);
    assert_int_equal(got.vcpus, 2);
    assert_int_equal(got.memory_mib, 128);
    assert_int_equal(got.status, VM_STATUS_STOPPED);
    assert_int_equal(fault_hypervisor_calls(&fx->hv, FAULT_HV_DEFINE), 1);
    row = fx_stored(fx, vm.id);
    assert_int_equal(row.vcpus, 2);
    assert_int_equal(row.memory_mib, 128);
    act(fx, vm.id, VM_ACTION_START, VM_STATUS_RUNNING);

    /* Paused is not stopped either. */
    act(fx, other.id, VM_ACTION_PAUSE, VM_STATUS_PAUSED);
    assert_st_err(vm_service_update(&fx->vm_svc, FIXTURE_OWNER, other.id, &req, &got, &err), err,
                  ST_ERR_CONFLICT, "is paused; stop it");
}

static void
test_vm_service__patch_row_failure_leaves_the_domain(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct vm_patch_req req;
    struct vm vm, got;

    create(fx, "web-01", &vm);
    act(fx, vm.id, VM_ACTION_FORCE_STOP, VM_STATUS_STOPPED);
    fault_hypervisor_reset(&fx->hv);
    memset(&req, 0, sizeof(req));
    req.has_vcpus = true;
    req.vcpus = 4;
    fault_vm_repo_fail(&fx->vms, FAULT_VR_UPDATE, 1, ST_ERR_UNAVAILABLE);
    assert_st_err(vm_service_update(&fx->vm_svc, FIXTURE_OWNER, vm.id, &req, &got, &err), err,
                  ST_ERR_UNAVAILABLE, "injected fault");
    /* The row is written first: when it cannot be, the domain is never touched. */
    assert_int_equal(fault_hypervisor_calls(&fx->hv, FAULT_HV_DEFINE), 0);
    assert_int_equal(fx_stored(fx, vm.id).vcpus, 1);
    assert_int_equal(shown(fx, vm.id), VM_STATUS_STOPPED);
}

/* A create that fails at @step leaves nothing but an error row naming the step. */
static void
assert_rolled_back(struct fixture *fx, const struct vm *out, const struct st_error *err,
                   const char *step)
{
    char want[64];
    struct vm row;

    snprintf(want, sizeof(want), "create failed at step %s", step);
    assert_true(st_uuid_valid(out->id));
    if (!strstr(err->msg, want) || !strstr(err->msg, "injected fault"))
        fail_msg("error \"%s\" lacks \"%s\" or the cause", err->msg, want);
    fx_assert_no_domain(fx, out->id);
    fx_assert_no_disk(fx, out->id);
    assert_int_equal(fixture_pool_volume_count(fx, fx->disk_pool), 0);
    row = fx_stored(fx, out->id);
    assert_int_equal(row.status, VM_STATUS_ERROR);
    assert_int_equal(row.step, VM_STEP_ROW);
    if (!strstr(row.fault, want))
        fail_msg("fault \"%s\" lacks \"%s\"", row.fault, want);
    assert_int_equal(shown(fx, out->id), VM_STATUS_ERROR);
}

static void
test_vm_service__create_rolls_back_each_step(void **state)
{
    struct fixture *fx = *state;
    static const struct {
        const char *step;
        int kind; /* 0 storage, 1 hypervisor, 2 repo */
        int method;
        unsigned nth;
    } cases[] = {
        {"disk", 0, FAULT_ST_CLONE_OVERLAY, 1},
        {"disk", 2, FAULT_VR_UPDATE, 1}, /* recording the disk step */
        {"define", 1, FAULT_HV_DEFINE, 1},
        {"define", 2, FAULT_VR_UPDATE, 2},
        {"start", 1, FAULT_HV_START, 1},
        {"start", 2, FAULT_VR_UPDATE, 3},
        {"finish", 2, FAULT_VR_UPDATE, 4}, /* the final "running" update */
    };
    size_t i;

    for (i = 0; i < ST_ARRAY_LEN(cases); i++) {
        struct st_error err = {0};
        char name[ST_NAME_BUF];
        struct vm vm;

        fault_storage_reset(&fx->storage);
        fault_hypervisor_reset(&fx->hv);
        fault_vm_repo_reset(&fx->vms);
        if (cases[i].kind == 0)
            fault_storage_fail(&fx->storage, cases[i].method, cases[i].nth, ST_ERR_BACKEND);
        else if (cases[i].kind == 1)
            fault_hypervisor_fail(&fx->hv, cases[i].method, cases[i].nth, ST_ERR_BACKEND);
        else
            fault_vm_repo_fail(&fx->vms, cases[i].method, cases[i].nth, ST_ERR_BACKEND);
        snprintf(name, sizeof(name), "fail-%zu", i);
        assert_int_equal(fixture_create_vm(fx, name, &vm, &err), -1);
        assert_int_equal(err.code, ST_ERR_BACKEND);
        assert_rolled_back(fx, &vm, &err, cases[i].step);
    }
    /* Nothing of the failures is left to trip a later create. */
    {
        struct st_error err = {0};
        struct vm vm;

        fault_storage_reset(&fx->storage);
        fault_hypervisor_reset(&fx->hv);
        fault_vm_repo_reset(&fx->vms);
        assert_st_ok(fixture_create_vm(fx, "works", &vm, &err), err);
    }
}

static void
test_vm_service__delete_removes_everything(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct vm vm, got;

    create(fx, "web-01", &vm);
    assert_st_ok(vm_service_delete(&fx->vm_svc, FIXTURE_OWNER, vm.id, NULL, &err), err);
    assert_st_err(vm_repo_get(&fx->vms_real, NULL, vm.id, &got, &err), err, ST_ERR_NOT_FOUND, "");
    fx_assert_no_domain(fx, vm.id);
    fx_assert_no_disk(fx, vm.id);
    assert_st_err(vm_service_delete(&fx->vm_svc, FIXTURE_OWNER, vm.id, NULL, &err), err,
                  ST_ERR_NOT_FOUND, "");

    /* A VM whose domain vanished deletes as well. */
    create(fx, "web-02", &vm);
    assert_st_ok(hypervisor_destroy(&fx->hv_real, vm.id, &err), err);
    assert_st_ok(hypervisor_undefine(&fx->hv_real, vm.id, &err), err);
    assert_st_ok(vm_service_delete(&fx->vm_svc, FIXTURE_OWNER, vm.id, NULL, &err), err);
    fx_assert_no_disk(fx, vm.id);
    assert_int_equal(fixture_pool_volume_count(fx, fx->disk_pool), 0);
}

static void
test_vm_service__delete_resumes_after_failure(void **state)
{
    struct fixture *fx = *state;
    static const struct {
        const char *step;
        int where; /* 0 hypervisor, 1 storage, 2 VM store */
        int method;
    } cases[] = {
        {"destroy", 0, FAULT_HV_DESTROY},
        {"undefine", 0, FAULT_HV_UNDEFINE},
        {"disk", 1, FAULT_ST_REMOVE},
        {"row", 2, FAULT_VR_REMOVE},
    };
    size_t i;

    for (i = 0; i < ST_ARRAY_LEN(cases); i++) {
        struct st_error err = {0};
        char want[64];
        struct vm vm, got, row;

        create(fx, cases[i].step, &vm);
        if (cases[i].where == 2)
            fault_vm_repo_fail(&fx->vms, cases[i].method, 1, ST_ERR_BACKEND);
        else if (cases[i].where == 1)
            fault_storage_fail(&fx->storage, cases[i].method, 1, ST_ERR_BACKEND);
        else
            fault_hypervisor_fail(&fx->hv, cases[i].method, 1, ST_ERR_BACKEND);
        snprintf(want, sizeof(want), "delete failed at step %s", cases[i].step);
        assert_st_err(vm_service_delete(&fx->vm_svc, FIXTURE_OWNER, vm.id, NULL, &err), err,
                      ST_ERR_BACKEND, want);
        row = fx_stored(fx, vm.id);
        assert_int_equal(row.status, VM_STATUS_DELETING);
        if (!strstr(row.fault, want))
            fail_msg("fault \"%s\" lacks \"%s\"", row.fault, want);
        assert_int_equal(shown(fx, vm.id), VM_STATUS_DELETING);
        assert_st_err(
            vm_service_action(&fx->vm_svc, FIXTURE_OWNER, vm.id, VM_ACTION_START, &got, &err), err,
            ST_ERR_CONFLICT, "is deleting; cannot start");

        assert_st_ok(vm_service_delete(&fx->vm_svc, FIXTURE_OWNER, vm.id, NULL, &err), err);
        assert_st_err(vm_repo_get(&fx->vms_real, NULL, vm.id, &got, &err), err, ST_ERR_NOT_FOUND,
                      "");
        fx_assert_no_domain(fx, vm.id);
        fx_assert_no_disk(fx, vm.id);
        assert_st_err(vm_service_delete(&fx->vm_svc, FIXTURE_OWNER, vm.id, NULL, &err), err,
                      ST_ERR_NOT_FOUND, "");
    }
}

/* An undo step that fails itself leaves the row at the furthest step still in place. */
static void
test_vm_service__create_undo_failure_is_recorded_and_delete_finishes(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct vm_create_req req;
    struct vm vm, row;
    enum hv_state st;
    struct storage_vol_info info;
    char vol[ST_NAME_BUF];

    fixture_create_req(fx, "half-undone", &req);
    fault_hypervisor_fail(&fx->hv, FAULT_HV_START, 1, ST_ERR_BACKEND);
    fault_hypervisor_fail(&fx->hv, FAULT_HV_UNDEFINE, 1, ST_ERR_BACKEND);
    assert_st_err(vm_service_create(&fx->vm_svc, FIXTURE_OWNER, &req, &vm, &err), err,
                  ST_ERR_BACKEND, "create failed at step start");
    row = fx_stored(fx, vm.id);
    assert_int_equal(row.status, VM_STATUS_ERROR);
    assert_int_equal(row.step, VM_STEP_DEFINED);
    assert_non_null(strstr(row.fault, "create failed at step start"));
    /* The undo stopped where it failed: the domain and its disk are both still there. */
    assert_st_ok(hypervisor_state(&fx->hv_real, vm.id, &st, &err), err);
    vm_service_disk_vol_name(vm.id, vol);
    assert_st_ok(storage_info(&fx->storage_real, fx->disk_pool, vol, &info, &err), err);

    assert_st_ok(vm_service_delete(&fx->vm_svc, FIXTURE_OWNER, vm.id, NULL, &err), err);
    fx_assert_no_domain(fx, vm.id);
    fx_assert_no_disk(fx, vm.id);
}

static void
test_vm_service__action_names_round_trip(void **state)
{
    enum vm_action a, back;

    (void)state;
    for (a = VM_ACTION_START; a <= VM_ACTION_RESUME; a++) {
        assert_int_equal(vm_action_parse(vm_action_name(a), &back), 0);
        assert_int_equal(back, a);
    }
    assert_string_equal(vm_action_name(VM_ACTION_FORCE_STOP), "force-stop");
    assert_int_equal(vm_action_parse("explode", &back), -1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, fixture_setup, fixture_teardown)
        T(test_vm_service__create_then_get_and_list_show_running),
        T(test_vm_service__create_refuses_bad_references),
        T(test_vm_service__create_name_taken_is_conflict),
        T(test_vm_service__list_makes_one_bulk_call),
        T(test_vm_service__list_pages_with_marker),
        T(test_vm_service__undefined_behind_back_shows_missing),
        T(test_vm_service__stopped_behind_back_shows_stopped),
        T(test_vm_service__list_fails_when_hypervisor_unavailable),
        T(test_vm_service__get_is_scoped),
        T(test_vm_service__action_transitions),
        T(test_vm_service__actions_refused_outside_live_states),
        T(test_vm_service__stop_is_graceful_when_the_guest_obeys),
        T(test_vm_service__stop_destroys_after_timeout),
        T(test_vm_service__action_failure_keeps_stored_status),
        T(test_vm_service__patch_rules),
        T(test_vm_service__patch_row_failure_leaves_the_domain),
        T(test_vm_service__create_rolls_back_each_step),
        T(test_vm_service__delete_removes_everything),
        T(test_vm_service__delete_resumes_after_failure),
        T(test_vm_service__create_undo_failure_is_recorded_and_delete_finishes),
        cmocka_unit_test(test_vm_service__action_names_round_trip),
#undef T
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
