/*
 * test_reconcile_service - keeping rows and libvirt in step, against real
 * SQLite and libvirt's test:///default driver: orphans of this
 * installation, rows whose domain vanished, creates and deletes no
 * operation carries, and lifecycle events.
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

#define GIB ((uint64_t)1 << 30)

static bool
has_volume(struct fixture *fx, const char *vol)
{
    struct st_error err = {0};
    struct storage_vol_info info;

    if (storage_info(&fx->storage_real, fx->disk_pool, vol, &info, &err) == 0)
        return true;
    assert_int_equal(err.code, ST_ERR_NOT_FOUND);
    return false;
}

/* Run the queue dry. */
static void
run_ops(struct fixture *fx)
{
    struct st_error err = {0};
    bool worked = true;
    int n = 0;

    while (worked) {
        assert_st_ok(op_service_work_one(&fx->op_svc, "test-worker", &worked, &err), err);
        if (++n > 100)
            fail_msg("operations keep coming");
    }
}

/* A running VM of FIXTURE_OWNER's, made by an accepted create and the worker. */
static void
create_running(struct fixture *fx, const char *name, struct vm *out)
{
    struct st_error err = {0};
    struct vm_create_req req;
    struct operation op;
    struct vm vm;

    fixture_create_req(fx, name, &req);
    assert_st_ok(op_service_create_vm(&fx->op_svc, FIXTURE_OWNER, &req, &vm, &op, NULL, &err), err);
    run_ops(fx);
    *out = fx_stored(fx, vm.id);
    assert_int_equal(out->status, VM_STATUS_RUNNING);
}

/* Make the row look untouched for a while, as a row nobody acted on just now is. */
static void
age_row(struct fixture *fx, const char *id)
{
    struct st_error err = {0};
    struct vm vm = fx_stored(fx, id);

    vm.updated_at -= 10000;
    assert_st_ok(vm_repo_update(&fx->vms_real, NULL, &vm, &err), err);
}

/* A domain with no row, recorded as @instance's (NULL: none); its id into @id. */
static void
define_stray(struct fixture *fx, const char *instance, char id[ST_ID_BUF])
{
    ST_AUTOFREE char *disk = fixture_path(fx, "pools/default/stray.qcow2");
    struct st_error err = {0};
    struct hv_domain_spec spec;

    st_uuid_generate(id);
    memset(&spec, 0, sizeof(spec));
    spec.id = id;
    spec.owner_id = FIXTURE_OWNER;
    spec.name = "stray";
    spec.vcpus = 1;
    spec.memory_mib = 64;
    spec.disk_path = disk;
    spec.disk_format = "qcow2";
    spec.instance = instance;
    assert_st_ok(hypervisor_define(&fx->hv_real, &spec, &err), err);
}

/* A volume @vol in the disk pool, on the fixture's image, with no row. */
static void
make_stray_volume(struct fixture *fx, const char *vol)
{
    struct st_error err = {0};
    struct storage_vol_info base, made;
    char base_vol[ST_NAME_BUF];

    vm_service_image_vol_name(fx->image.id, base_vol);
    assert_st_ok(storage_info(&fx->storage_real, fx->image_pool, base_vol, &base, &err), err);
    assert_st_ok(storage_clone_overlay(&fx->storage_real, fx->disk_pool, vol, base.path, "raw", GIB,
                                       &made, &err),
                 err);
}

/* Another installation's domain, one with no installation, and unrelated volumes: none are ours. */
struct strays {
    char orphan_dom[ST_ID_BUF];
    char orphan_disk_id[ST_ID_BUF];
    char orphan_disk[ST_NAME_BUF];
    char foreign_dom[ST_ID_BUF];
    char bare_dom[ST_ID_BUF];
};

static void
make_strays(struct fixture *fx, struct strays *s)
{
    ST_AUTOFREE char *foreign = st_xasprintf("%s-elsewhere", fx->instance);

    struct st_error err = {0};

    define_stray(fx, fx->instance, s->orphan_dom);
    /* A running one: collecting it has to pull the plug first. */
    assert_st_ok(hypervisor_start(&fx->hv_real, s->orphan_dom, &err), err);
    st_uuid_generate(s->orphan_disk_id);
    vm_service_disk_vol_name(s->orphan_disk_id, s->orphan_disk);
    make_stray_volume(fx, s->orphan_disk);
    define_stray(fx, foreign, s->foreign_dom);
    define_stray(fx, NULL, s->bare_dom);
    /* Not named like a root disk: not stratus's to judge. */
    make_stray_volume(fx, "scratch.qcow2");
}

/* Other fixtures share test:///default: take away the domains that are not this one's. */
static void
remove_foreign(struct fixture *fx, const struct strays *s)
{
    struct st_error ignored = {0};

    hypervisor_undefine(&fx->hv_real, s->foreign_dom, &ignored);
    hypervisor_undefine(&fx->hv_real, s->bare_dom, &ignored);
}

static void
assert_the_two_orphans(const struct orphan_list *list, const struct strays *s)
{
    char name[ST_NAME_BUF];
    size_t i, doms = 0, disks = 0;

    assert_int_equal(list->count, 2);
    snprintf(name, sizeof(name), "stratus-%s", s->orphan_dom);
    for (i = 0; i < list->count; i++) {
        const struct orphan *o = &list->items[i];

        if (o->kind == ORPHAN_DOMAIN) {
            doms++;
            assert_string_equal(o->id, s->orphan_dom);
            assert_string_equal(o->name, name);
            assert_string_equal(o->owner_id, FIXTURE_OWNER);
        } else {
            disks++;
            assert_string_equal(o->id, s->orphan_disk_id);
            assert_string_equal(o->name, s->orphan_disk);
            assert_string_equal(o->owner_id, "");
        }
    }
    assert_int_equal(doms, 1);
    assert_int_equal(disks, 1);
}

static void
test_reconcile_service__finds_only_this_installations_orphans(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct orphan_list list = {NULL, 0};
    struct strays s;
    struct vm vm;

    create_running(fx, "kept", &vm);
    assert_st_ok(reconcile_find_orphans(&fx->reconcile_svc, &list, &err), err);
    assert_int_equal(list.count, 0);
    orphan_list_release(&list);

    make_strays(fx, &s);
    assert_st_ok(reconcile_find_orphans(&fx->reconcile_svc, &list, &err), err);
    assert_the_two_orphans(&list, &s);
    {
        json_t *j = orphan_to_json(&list.items[0]);

        assert_non_null(j);
        assert_non_null(json_object_get(j, "vm_id"));
        json_decref(j);
    }
    orphan_list_release(&list);
    remove_foreign(fx, &s);
}

static void
test_reconcile_service__collect_removes_orphans_unless_dry_run(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct orphan_list list = {NULL, 0};
    struct reconcile_report r;
    struct strays s;
    struct vm vm;

    create_running(fx, "kept", &vm);
    make_strays(fx, &s);

    /* A pass counts them and leaves them. */
    assert_st_ok(reconcile_run(&fx->reconcile_svc, &r, &err), err);
    assert_int_equal(r.orphan_domains, 1);
    assert_int_equal(r.orphan_disks, 1);
    assert_true(fx_domain_exists(fx, s.orphan_dom));

    assert_st_ok(reconcile_collect(&fx->reconcile_svc, true, &list, &err), err);
    assert_the_two_orphans(&list, &s);
    orphan_list_release(&list);
    assert_true(fx_domain_exists(fx, s.orphan_dom));
    assert_true(has_volume(fx, s.orphan_disk));

    assert_st_ok(reconcile_collect(&fx->reconcile_svc, false, &list, &err), err);
    assert_the_two_orphans(&list, &s);
    orphan_list_release(&list);
    assert_false(fx_domain_exists(fx, s.orphan_dom));
    assert_false(has_volume(fx, s.orphan_disk));

    /* What is not an orphan of this installation stays. */
    assert_true(fx_domain_exists(fx, s.foreign_dom));
    assert_true(fx_domain_exists(fx, s.bare_dom));
    assert_true(has_volume(fx, "scratch.qcow2"));
    assert_true(fx_domain_exists(fx, vm.id));
    assert_true(fx_has_disk(fx, vm.id));
    assert_int_equal(fx_stored(fx, vm.id).status, VM_STATUS_RUNNING);

    assert_st_ok(reconcile_find_orphans(&fx->reconcile_svc, &list, &err), err);
    assert_int_equal(list.count, 0);
    orphan_list_release(&list);
    remove_foreign(fx, &s);
}

static void
test_reconcile_service__collect_reports_a_removal_that_fails(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct orphan_list list = {NULL, 0};
    struct strays s;
    struct vm vm;

    create_running(fx, "kept", &vm);
    make_strays(fx, &s);
    fault_storage_fail(&fx->storage, FAULT_ST_REMOVE, 1, ST_ERR_BACKEND);
    assert_st_err(reconcile_collect(&fx->reconcile_svc, false, &list, &err), err, ST_ERR_BACKEND,
                  s.orphan_disk);
    assert_non_null(strstr(err.msg, "cannot remove orphan disk"));
    assert_true(has_volume(fx, s.orphan_disk));
    remove_foreign(fx, &s);
}

static void
events_of(struct fixture *fx, const char *vm_id, struct vm_event_list *out)
{
    struct st_error err = {0};
    struct vm_event_filter f = {.marker = "", .limit = ST_LIST_LIMIT_MAX};

    assert_st_ok(op_service_events(&fx->op_svc, FIXTURE_OWNER, vm_id, &f, out, &err), err);
}

/* How many of @vm_id's events are of @type with a message containing @needle. */
static size_t
count_events(struct fixture *fx, const char *vm_id, enum vm_event_type type, const char *needle)
{
    struct vm_event_list list = {0};
    size_t i, n = 0;

    events_of(fx, vm_id, &list);
    for (i = 0; i < list.count; i++)
        if (list.items[i].type == type && strstr(list.items[i].message, needle))
            n++;
    vm_event_list_release(&list);
    return n;
}

static void
test_reconcile_service__vanished_domain_is_marked_once(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct reconcile_report r;
    struct vm vm, other, shown;

    create_running(fx, "gone", &vm);
    create_running(fx, "stays", &other);
    assert_st_ok(hypervisor_destroy(&fx->hv_real, vm.id, &err), err);
    assert_st_ok(hypervisor_undefine(&fx->hv_real, vm.id, &err), err);

    assert_st_ok(reconcile_run(&fx->reconcile_svc, &r, &err), err);
    assert_int_equal(r.vanished, 1);
    assert_int_equal(r.orphan_domains, 0);
    assert_int_equal(r.orphan_disks, 0);
    assert_int_equal(r.requeued, 0);
    assert_string_equal(fx_stored(fx, vm.id).fault, "its domain vanished outside stratus");
    assert_string_equal(fx_stored(fx, other.id).fault, "");
    assert_int_equal(count_events(fx, vm.id, VM_EVENT_WARNING, "vanished"), 1);
    assert_int_equal(count_events(fx, other.id, VM_EVENT_WARNING, ""), 0);
    assert_st_ok(vm_service_get(&fx->vm_svc, FIXTURE_OWNER, vm.id, &shown, &err), err);
    assert_int_equal(shown.status, VM_STATUS_MISSING);

    /* Said once: the next pass finds it marked already. */
    assert_st_ok(reconcile_run(&fx->reconcile_svc, &r, &err), err);
    assert_int_equal(r.vanished, 0);
    assert_int_equal(count_events(fx, vm.id, VM_EVENT_WARNING, "vanished"), 1);
}

/* Rows come in pages of 1000: one on the second page is looked at too. */
static void
test_reconcile_service__run_reads_every_page_of_rows(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct orphan_list list = {NULL, 0};
    struct reconcile_report r;
    struct vm vm;

    assert_st_ok(fixture_seed_vms(fx, "seed", 1000, VM_STATUS_STOPPED, &err), err);
    /* Made last, listed last. */
    st_sleep_ms(2);
    create_running(fx, "last", &vm);
    assert_st_ok(hypervisor_destroy(&fx->hv_real, vm.id, &err), err);
    assert_st_ok(hypervisor_undefine(&fx->hv_real, vm.id, &err), err);
    assert_st_ok(reconcile_run(&fx->reconcile_svc, &r, &err), err);
    assert_int_equal(r.vanished, 1);
    assert_int_equal(r.orphan_domains + r.orphan_disks, 0);
    assert_string_equal(fx_stored(fx, vm.id).fault, "its domain vanished outside stratus");
    assert_st_ok(reconcile_find_orphans(&fx->reconcile_svc, &list, &err), err);
    assert_int_equal(list.count, 0);
    orphan_list_release(&list);
}

/* A row a create left behind with no operation (the API node died after the insert). */
static void
test_reconcile_service__stale_creating_row_is_requeued(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct vm_create_req req;
    struct reconcile_report r;
    struct operation op;
    struct vm row;

    fixture_create_req(fx, "left", &req);
    assert_st_ok(vm_service_create_row(&fx->vm_svc, FIXTURE_OWNER, NULL, &req, &row, NULL, &err),
                 err);

    /* Not stale yet: it may be queued right now. */
    fx->reconcile_svc.stale_ms = 60000;
    assert_st_ok(reconcile_run(&fx->reconcile_svc, &r, &err), err);
    assert_int_equal(r.requeued, 0);
    assert_st_err(op_repo_active_for(&fx->ops, row.id, &op, &err), err, ST_ERR_NOT_FOUND, "");

    fx->reconcile_svc.stale_ms = FIXTURE_STALE_MS;
    st_sleep_ms(FIXTURE_STALE_MS + 20);
    assert_st_ok(reconcile_run(&fx->reconcile_svc, &r, &err), err);
    assert_int_equal(r.requeued, 1);
    assert_int_equal(r.orphan_domains + r.orphan_disks + r.vanished, 0);
    assert_st_ok(op_repo_active_for(&fx->ops, row.id, &op, &err), err);
    assert_int_equal(op.kind, OP_KIND_VM_CREATE);
    assert_int_equal(op.status, OP_STATUS_QUEUED);
    assert_string_equal(op.owner_id, FIXTURE_OWNER);
    assert_int_equal(count_events(fx, row.id, VM_EVENT_WARNING, "queued again"), 1);

    /* Queued once: the next pass sees the operation. */
    assert_st_ok(reconcile_run(&fx->reconcile_svc, &r, &err), err);
    assert_int_equal(r.requeued, 0);

    run_ops(fx);
    assert_st_ok(op_repo_get(&fx->ops, FIXTURE_OWNER, op.id, &op, &err), err);
    assert_int_equal(op.status, OP_STATUS_SUCCEEDED);
    row = fx_stored(fx, row.id);
    assert_int_equal(row.status, VM_STATUS_RUNNING);
    assert_int_equal(row.step, VM_STEP_DONE);
    assert_true(fx_domain_exists(fx, row.id));
    assert_true(fx_has_disk(fx, row.id));
}

/* A row left deleting with no operation gets a delete queued again. */
static void
test_reconcile_service__stale_deleting_row_is_requeued(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct reconcile_report r;
    struct operation op;
    struct vm vm, gone;

    create_running(fx, "half-deleted", &vm);
    vm.status = VM_STATUS_DELETING;
    vm.updated_at = st_now_ms();
    assert_st_ok(vm_repo_update(&fx->vms_real, NULL, &vm, &err), err);
    st_sleep_ms(FIXTURE_STALE_MS + 20);

    assert_st_ok(reconcile_run(&fx->reconcile_svc, &r, &err), err);
    assert_int_equal(r.requeued, 1);
    assert_st_ok(op_repo_active_for(&fx->ops, vm.id, &op, &err), err);
    assert_int_equal(op.kind, OP_KIND_VM_DELETE);
    run_ops(fx);
    assert_st_err(vm_repo_get(&fx->vms_real, NULL, vm.id, &gone, &err), err, ST_ERR_NOT_FOUND, "");
    assert_false(fx_domain_exists(fx, vm.id));
    assert_false(fx_has_disk(fx, vm.id));
}

static void
test_reconcile_service__event_updates_a_settled_vm(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct vm vm;

    create_running(fx, "web-01", &vm);
    assert_st_ok(hypervisor_destroy(&fx->hv_real, vm.id, &err), err);
    /* A row written just now is whoever wrote it's: the event was theirs. */
    assert_st_ok(reconcile_on_event(&fx->reconcile_svc, vm.id, HV_EVENT_STOPPED, &err), err);
    assert_int_equal(fx_stored(fx, vm.id).status, VM_STATUS_RUNNING);
    age_row(fx, vm.id);
    assert_st_ok(reconcile_on_event(&fx->reconcile_svc, vm.id, HV_EVENT_STOPPED, &err), err);
    assert_int_equal(fx_stored(fx, vm.id).status, VM_STATUS_STOPPED);
    assert_int_equal(count_events(fx, vm.id, VM_EVENT_STATE_CHANGE, "running -> stopped"), 1);

    /* Told again: nothing changes, nothing is said twice. */
    assert_st_ok(reconcile_on_event(&fx->reconcile_svc, vm.id, HV_EVENT_STOPPED, &err), err);
    assert_int_equal(count_events(fx, vm.id, VM_EVENT_STATE_CHANGE, "running -> stopped"), 1);

    assert_st_ok(hypervisor_start(&fx->hv_real, vm.id, &err), err);
    age_row(fx, vm.id);
    /* What counts is the state now, whatever the (late) event said. */
    assert_st_ok(reconcile_on_event(&fx->reconcile_svc, vm.id, HV_EVENT_STOPPED, &err), err);
    assert_int_equal(fx_stored(fx, vm.id).status, VM_STATUS_RUNNING);
    assert_int_equal(count_events(fx, vm.id, VM_EVENT_STATE_CHANGE, "stopped -> running"), 1);

    /* A domain with no row (an orphan's event) is reconcile_run()'s business. */
    {
        char stray[ST_ID_BUF];

        st_uuid_generate(stray);
        assert_st_ok(reconcile_on_event(&fx->reconcile_svc, stray, HV_EVENT_STOPPED, &err), err);
    }
}

static void
test_reconcile_service__event_waits_for_the_active_operation(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct operation op;
    struct vm vm;

    create_running(fx, "busy", &vm);
    /* An operation queued on the VM owns its row, whatever the row says. */
    memset(&op, 0, sizeof(op));
    st_uuid_generate(op.id);
    op.kind = OP_KIND_VM_DELETE;
    memcpy(op.target_id, vm.id, ST_ID_BUF);
    memcpy(op.owner_id, vm.owner_id, ST_ID_BUF);
    op.status = OP_STATUS_QUEUED;
    op.created_at = st_now_ms();
    assert_st_ok(op_repo_insert(&fx->ops, &op, &err), err);

    assert_st_ok(hypervisor_destroy(&fx->hv_real, vm.id, &err), err);
    assert_st_ok(reconcile_on_event(&fx->reconcile_svc, vm.id, HV_EVENT_STOPPED, &err), err);
    assert_int_equal(fx_stored(fx, vm.id).status, VM_STATUS_RUNNING);
    assert_int_equal(count_events(fx, vm.id, VM_EVENT_STATE_CHANGE, "->"), 0);
    assert_st_ok(reconcile_on_event(&fx->reconcile_svc, vm.id, HV_EVENT_UNDEFINED, &err), err);
    assert_string_equal(fx_stored(fx, vm.id).fault, "");
}

static void
test_reconcile_service__undefined_event_marks_the_vm_once(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct reconcile_report r;
    struct vm vm;

    create_running(fx, "web-01", &vm);
    age_row(fx, vm.id);
    assert_st_ok(hypervisor_destroy(&fx->hv_real, vm.id, &err), err);
    assert_st_ok(hypervisor_undefine(&fx->hv_real, vm.id, &err), err);
    assert_st_ok(reconcile_on_event(&fx->reconcile_svc, vm.id, HV_EVENT_UNDEFINED, &err), err);
    assert_string_equal(fx_stored(fx, vm.id).fault, "its domain vanished outside stratus");
    assert_int_equal(fx_stored(fx, vm.id).status, VM_STATUS_RUNNING);
    assert_int_equal(count_events(fx, vm.id, VM_EVENT_WARNING, "undefined outside stratus"), 1);

    /* Neither the event again nor a pass says it twice. */
    assert_st_ok(reconcile_on_event(&fx->reconcile_svc, vm.id, HV_EVENT_UNDEFINED, &err), err);
    assert_st_ok(reconcile_run(&fx->reconcile_svc, &r, &err), err);
    assert_int_equal(r.vanished, 0);
    assert_int_equal(count_events(fx, vm.id, VM_EVENT_WARNING, ""), 1);
}

/* An installation with no VM at all has nothing to reconcile, and says so. */
static void
test_reconcile_service__no_rows_at_all(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct reconcile_report r;
    struct orphan_list list;

    assert_st_ok(reconcile_find_orphans(&fx->reconcile_svc, &list, &err), err);
    assert_int_equal(list.count, 0);
    orphan_list_release(&list);
    assert_st_ok(reconcile_run(&fx->reconcile_svc, &r, &err), err);
    assert_int_equal(r.vanished + r.requeued + r.orphan_domains + r.orphan_disks, 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reconcile_service__no_rows_at_all, fixture_setup,
                                        fixture_teardown),
#define T(name) cmocka_unit_test_setup_teardown(name, fixture_setup, fixture_teardown)
        T(test_reconcile_service__finds_only_this_installations_orphans),
        T(test_reconcile_service__collect_removes_orphans_unless_dry_run),
        T(test_reconcile_service__collect_reports_a_removal_that_fails),
        T(test_reconcile_service__vanished_domain_is_marked_once),
        T(test_reconcile_service__run_reads_every_page_of_rows),
        T(test_reconcile_service__stale_creating_row_is_requeued),
        T(test_reconcile_service__stale_deleting_row_is_requeued),
        T(test_reconcile_service__event_updates_a_settled_vm),
        T(test_reconcile_service__event_waits_for_the_active_operation),
        T(test_reconcile_service__undefined_event_marks_the_vm_once),
#undef T
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
