/*
 * test_repo.c - the VM, image and flavor repositories, on the store named
 * by STRATUS_TEST_STORE (contract/support/store_fixture.h), through the
 * repository interfaces only; and what opening a store does to its schema.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "contract/support/contract.h"
#include "contract/support/rows.h"
#include "util/mem.h"

#define OWNER_A "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
#define OWNER_B "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
#define IMAGE_1 "11111111-1111-4111-8111-111111111111"
#define IMAGE_2 "22222222-2222-4222-8222-222222222222"

static void
insert_vm(struct store_fixture *fx, const struct vm *vm)
{
    struct st_error err = {0};

    if (vm_repo_insert(&fx->store.vms, vm, &err) != 0)
        fail_msg("[%s] insert VM '%s': %s", store_fixture_name(fx), vm->name, err.msg);
}

static void
test_repo__vm_crud(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct vm vm = make_vm(OWNER_A, "web-01", IMAGE_1, 1700000000123);
    struct vm got;

    strcpy(vm.flavor_id, IMAGE_2);
    insert_vm(fx, &vm);

    assert_int_equal(vm_repo_get(&fx->store.vms, OWNER_A, vm.id, &got, &err), 0);
    assert_memory_equal(&got, &vm, sizeof(vm));

    vm.status = VM_STATUS_ERROR;
    vm.step = VM_STEP_DEFINED;
    vm.vcpus = 8;
    vm.memory_mib = 4096;
    vm.disk_gib = 20;
    strcpy(vm.name, "web-02");
    strcpy(vm.fault, "define: the domain XML was refused");
    vm.updated_at += 5000;
    assert_int_equal(vm_repo_update(&fx->store.vms, OWNER_A, &vm, &err), 0);
    /* Compare-and-set: the stored revision is the one read + 1, and the caller bumps its copy. */
    vm.revision++;
    assert_int_equal(vm_repo_get(&fx->store.vms, NULL, vm.id, &got, &err), 0);
    assert_memory_equal(&got, &vm, sizeof(vm));

    /* An empty fault is stored as NULL and reads back empty. */
    memset(vm.fault, 0, sizeof(vm.fault));
    vm.status = VM_STATUS_RUNNING;
    vm.step = VM_STEP_DONE;
    assert_int_equal(vm_repo_update(&fx->store.vms, OWNER_A, &vm, &err), 0);
    vm.revision++;
    assert_int_equal(vm_repo_get(&fx->store.vms, OWNER_A, vm.id, &got, &err), 0);
    assert_memory_equal(&got, &vm, sizeof(vm));

    assert_int_equal(vm_repo_remove(&fx->store.vms, OWNER_A, vm.id, &err), 0);
    assert_int_equal(vm_repo_get(&fx->store.vms, OWNER_A, vm.id, &got, &err), -1);
    assert_int_equal(err.code, ST_ERR_NOT_FOUND);
    assert_non_null(strstr(err.msg, vm.id));
    assert_int_equal(vm_repo_remove(&fx->store.vms, OWNER_A, vm.id, &err), -1);
    assert_int_equal(err.code, ST_ERR_NOT_FOUND);
    assert_int_equal(vm_repo_update(&fx->store.vms, NULL, &vm, &err), -1);
    assert_int_equal(err.code, ST_ERR_NOT_FOUND);
}

static void
test_repo__vm_name_conflict(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct vm a = make_vm(OWNER_A, "web-01", IMAGE_1, 1000);
    struct vm dup = make_vm(OWNER_A, "web-01", IMAGE_1, 2000);
    struct vm b = make_vm(OWNER_B, "web-01", IMAGE_1, 3000);
    struct vm c = make_vm(OWNER_A, "web-02", IMAGE_1, 4000);
    struct vm same_id = make_vm(OWNER_A, "web-03", IMAGE_1, 5000);
    struct vm got;

    insert_vm(fx, &a);
    assert_int_equal(vm_repo_insert(&fx->store.vms, &dup, &err), -1);
    assert_int_equal(err.code, ST_ERR_CONFLICT);
    assert_string_equal(err.msg, "a VM named 'web-01' already exists");

    /* Another owner may use the same name. */
    insert_vm(fx, &b);

    /* Renaming onto a taken name conflicts and leaves the row as it was. */
    insert_vm(fx, &c);
    strcpy(c.name, "web-01");
    assert_int_equal(vm_repo_update(&fx->store.vms, OWNER_A, &c, &err), -1);
    assert_int_equal(err.code, ST_ERR_CONFLICT);
    assert_int_equal(vm_repo_get(&fx->store.vms, OWNER_A, c.id, &got, &err), 0);
    assert_string_equal(got.name, "web-02");

    strcpy(same_id.id, a.id);
    assert_int_equal(vm_repo_insert(&fx->store.vms, &same_id, &err), -1);
    assert_int_equal(err.code, ST_ERR_CONFLICT);
    assert_non_null(strstr(err.msg, a.id));
}

static void
test_repo__vm_owner_scope(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct vm a = make_vm(OWNER_A, "mine", IMAGE_1, 1000);
    struct vm b = make_vm(OWNER_B, "theirs", IMAGE_1, 2000);
    struct vm_filter f = {.limit = 100};
    struct vm_list list = {0};
    struct vm got;

    insert_vm(fx, &a);
    insert_vm(fx, &b);

    assert_int_equal(vm_repo_get(&fx->store.vms, OWNER_A, b.id, &got, &err), -1);
    assert_int_equal(err.code, ST_ERR_NOT_FOUND);
    b.status = VM_STATUS_STOPPED;
    assert_int_equal(vm_repo_update(&fx->store.vms, OWNER_A, &b, &err), -1);
    assert_int_equal(err.code, ST_ERR_NOT_FOUND);
    assert_int_equal(vm_repo_remove(&fx->store.vms, OWNER_A, b.id, &err), -1);
    assert_int_equal(err.code, ST_ERR_NOT_FOUND);

    /* Untouched: still there, still creating. */
    assert_int_equal(vm_repo_get(&fx->store.vms, OWNER_B, b.id, &got, &err), 0);
    assert_int_equal(got.status, VM_STATUS_CREATING);

    assert_int_equal(vm_repo_list(&fx->store.vms, OWNER_A, &f, &list, &err), 0);
    assert_int_equal(list.count, 1);
    assert_string_equal(list.items[0].id, a.id);
    assert_false(list.more);
    vm_list_release(&list);

    /* Unscoped sees both. */
    assert_int_equal(vm_repo_list(&fx->store.vms, NULL, &f, &list, &err), 0);
    assert_int_equal(list.count, 2);
    assert_string_equal(list.items[0].id, a.id);
    assert_string_equal(list.items[1].id, b.id);
    vm_list_release(&list);
}

/* Walk every page of owner's VMs; checks order and returns how many were seen. */
static size_t
walk_pages(struct store_fixture *fx, const char *owner, unsigned limit, size_t *pages)
{
    struct st_error err = {0};
    struct vm_filter f = {.limit = limit};
    struct vm_list list = {0};
    struct vm last = {0};
    size_t seen = 0;
    size_t i;
    bool more = true;

    *pages = 0;
    while (more) {
        if (vm_repo_list(&fx->store.vms, owner, &f, &list, &err) != 0)
            fail_msg("[%s] list: %s", store_fixture_name(fx), err.msg);
        (*pages)++;
        for (i = 0; i < list.count; i++) {
            const struct vm *v = &list.items[i];

            if (owner)
                assert_string_equal(v->owner_id, owner);
            if (seen > 0)
                assert_true(v->created_at > last.created_at ||
                            (v->created_at == last.created_at && strcmp(v->id, last.id) > 0));
            last = *v;
            seen++;
        }
        more = list.more;
        if (more) {
            assert_int_equal(list.count, limit);
            assert_string_equal(list.next_marker, list.items[list.count - 1].id);
        } else {
            assert_string_equal(list.next_marker, "");
        }
        if (list.count)
            strcpy(f.marker, list.items[list.count - 1].id);
        vm_list_release(&list);
    }
    return seen;
}

static void
test_repo__vm_paging(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct vm_filter f = {.limit = 100};
    struct vm_list list = {0};
    struct vm vm;
    char name[ST_NAME_BUF];
    size_t pages;
    int i;

    /* Three rows share each created_at, so the id decides their order. */
    for (i = 0; i < 250; i++) {
        snprintf(name, sizeof(name), "vm-%03d", i);
        vm = make_vm(OWNER_A, name, IMAGE_1, 1000 + i / 3);
        insert_vm(fx, &vm);
    }
    for (i = 0; i < 30; i++) {
        snprintf(name, sizeof(name), "other-%03d", i);
        vm = make_vm(OWNER_B, name, IMAGE_1, 1000 + i);
        insert_vm(fx, &vm);
    }

    assert_int_equal(vm_repo_list(&fx->store.vms, OWNER_A, &f, &list, &err), 0);
    assert_int_equal(list.count, 100);
    assert_true(list.more);
    vm_list_release(&list);

    assert_int_equal(walk_pages(fx, OWNER_A, 100, &pages), 250);
    assert_int_equal(pages, 3);
    assert_int_equal(walk_pages(fx, OWNER_B, 100, &pages), 30);
    assert_int_equal(pages, 1);
    assert_int_equal(walk_pages(fx, NULL, 100, &pages), 280);
    assert_int_equal(pages, 3);
    /* The extra row fetched tells a page ending exactly at the last row that none follow. */
    assert_int_equal(walk_pages(fx, OWNER_A, 125, &pages), 250);
    assert_int_equal(pages, 2);
    assert_int_equal(walk_pages(fx, OWNER_A, 1, &pages), 250);
}

static void
test_repo__vm_bad_marker(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct vm a = make_vm(OWNER_A, "a", IMAGE_1, 1000);
    struct vm b = make_vm(OWNER_B, "b", IMAGE_1, 1000);
    struct vm_filter f = {.limit = 10};
    struct vm_list list = {0};

    insert_vm(fx, &a);
    insert_vm(fx, &b);

    strcpy(f.marker, "99999999-9999-4999-8999-999999999999");
    assert_int_equal(vm_repo_list(&fx->store.vms, OWNER_A, &f, &list, &err), -1);
    assert_int_equal(err.code, ST_ERR_INVALID);
    assert_string_equal(err.msg, "marker '99999999-9999-4999-8999-999999999999' names no VM");
    assert_null(list.items);

    /* Another owner's row is no marker either. */
    strcpy(f.marker, b.id);
    assert_int_equal(vm_repo_list(&fx->store.vms, OWNER_A, &f, &list, &err), -1);
    assert_int_equal(err.code, ST_ERR_INVALID);

    /* The last row is a fine marker: an empty last page. */
    strcpy(f.marker, a.id);
    assert_int_equal(vm_repo_list(&fx->store.vms, OWNER_A, &f, &list, &err), 0);
    assert_int_equal(list.count, 0);
    assert_false(list.more);
    vm_list_release(&list);
}

static void
test_repo__vm_filters(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct vm_filter f = {.limit = 100};
    struct vm_list list = {0};
    struct vm vm;
    char name[ST_NAME_BUF];
    int i;

    for (i = 0; i < 10; i++) {
        snprintf(name, sizeof(name), "web-%02d", i);
        vm = make_vm(OWNER_A, name, IMAGE_1, 1000 + i);
        vm.status = i % 2 ? VM_STATUS_RUNNING : VM_STATUS_STOPPED;
        insert_vm(fx, &vm);
    }
    vm = make_vm(OWNER_B, "web-03", IMAGE_1, 5000);
    vm.status = VM_STATUS_RUNNING;
    insert_vm(fx, &vm);

    strcpy(f.name, "web-03");
    assert_int_equal(vm_repo_list(&fx->store.vms, OWNER_A, &f, &list, &err), 0);
    assert_int_equal(list.count, 1);
    assert_string_equal(list.items[0].name, "web-03");
    assert_string_equal(list.items[0].owner_id, OWNER_A);
    vm_list_release(&list);

    /* Exact, not a prefix. */
    strcpy(f.name, "web-0");
    assert_int_equal(vm_repo_list(&fx->store.vms, OWNER_A, &f, &list, &err), 0);
    assert_int_equal(list.count, 0);
    vm_list_release(&list);

    f.name[0] = '\0';
    f.has_status = true;
    f.status = VM_STATUS_RUNNING;
    assert_int_equal(vm_repo_list(&fx->store.vms, OWNER_A, &f, &list, &err), 0);
    assert_int_equal(list.count, 5);
    for (i = 0; i < 5; i++)
        assert_int_equal(list.items[i].status, VM_STATUS_RUNNING);
    vm_list_release(&list);

    /* Filters and a marker together: the page after the second running VM. */
    f.limit = 2;
    assert_int_equal(vm_repo_list(&fx->store.vms, OWNER_A, &f, &list, &err), 0);
    assert_int_equal(list.count, 2);
    assert_true(list.more);
    strcpy(f.marker, list.items[1].id);
    vm_list_release(&list);
    f.limit = 100;
    assert_int_equal(vm_repo_list(&fx->store.vms, OWNER_A, &f, &list, &err), 0);
    assert_int_equal(list.count, 3);
    assert_string_equal(list.items[0].name, "web-05");
    vm_list_release(&list);

    /* missing is never stored. */
    f.marker[0] = '\0';
    f.status = VM_STATUS_MISSING;
    assert_int_equal(vm_repo_list(&fx->store.vms, NULL, &f, &list, &err), 0);
    assert_int_equal(list.count, 0);
    vm_list_release(&list);
}

static void
test_repo__vm_count_by_image(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct vm vm;
    size_t n = 99;

    vm = make_vm(OWNER_A, "a1", IMAGE_1, 1);
    insert_vm(fx, &vm);
    vm = make_vm(OWNER_A, "a2", IMAGE_1, 2);
    insert_vm(fx, &vm);
    vm = make_vm(OWNER_A, "a3", IMAGE_2, 3);
    insert_vm(fx, &vm);
    vm = make_vm(OWNER_B, "b1", IMAGE_1, 4);
    insert_vm(fx, &vm);

    assert_int_equal(vm_repo_count_by_image(&fx->store.vms, OWNER_A, IMAGE_1, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_int_equal(vm_repo_count_by_image(&fx->store.vms, NULL, IMAGE_1, &n, &err), 0);
    assert_int_equal(n, 3);
    assert_int_equal(vm_repo_count_by_image(&fx->store.vms, OWNER_B, IMAGE_2, &n, &err), 0);
    assert_int_equal(n, 0);
}

/* An image a VM row (of any owner) is built on cannot lose its row. */
static void
test_repo__image_remove_refused_while_used(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct image image = make_image(OWNER_A, "base", 1000);
    struct vm vm;

    assert_int_equal(image_repo_insert(&fx->store.images, &image, &err), 0);
    vm = make_vm(OWNER_B, "b1", image.id, 2000);
    insert_vm(fx, &vm);
    assert_int_equal(image_repo_remove(&fx->store.images, OWNER_A, image.id, &err), -1);
    assert_int_equal(err.code, ST_ERR_CONFLICT);
    assert_non_null(strstr(err.msg, "is used by a VM"));
    assert_int_equal(image_repo_get(&fx->store.images, OWNER_A, image.id, &image, &err), 0);

    assert_int_equal(vm_repo_remove(&fx->store.vms, OWNER_B, vm.id, &err), 0);
    assert_int_equal(image_repo_remove(&fx->store.images, OWNER_A, image.id, &err), 0);
    assert_int_equal(image_repo_remove(&fx->store.images, OWNER_A, image.id, &err), -1);
    assert_int_equal(err.code, ST_ERR_NOT_FOUND);
}

/* @rc of a repository call: 0, or fail with the message in @err. */
static void
check_ok(int rc, const struct st_error *err)
{
    if (rc != 0)
        fail_msg("[%s] want 0, got %d %s: %s", store_fixture_env_name(), rc,
                 st_err_code_name(err->code), err->msg);
}

/* @rc of a repository call: -1 with @code and @needle in the message. */
static void
check_err(int rc, const struct st_error *err, enum st_err_code code, const char *needle)
{
    if (rc != -1 || err->code != code || !strstr(err->msg, needle))
        fail_msg("[%s] want -1 %s containing \"%s\", got %d %s: %s", store_fixture_env_name(),
                 st_err_code_name(code), needle, rc, st_err_code_name(err->code), err->msg);
}

static const struct quota unlimited = {
    .max_vms = -1, .max_vcpus = -1, .max_memory_mib = -1, .max_disk_gib = -1};

/* Insert within @limits; on failure, @v and @err tell why. */
static int
quota_insert(struct store_fixture *fx, const char *owner, const char *name,
             const struct quota *limits, struct quota_violation *v, struct st_error *err)
{
    struct vm vm = make_vm(owner, name, IMAGE_1, st_now_ms());

    return vm_repo_insert_within_quota(&fx->store.vms, &vm, limits, v, err);
}

static void
test_repo__vm_quota_insert(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct quota limits = unlimited;
    struct quota_violation v = {.quota = "untouched"};
    struct vm vm;
    size_t n = 0;
    int i;

    /* make_vm() VMs have 2 vcpus, 2048 MiB and 10 GiB each. */
    limits.max_vms = 2;
    check_ok(quota_insert(fx, OWNER_A, "a1", &limits, &v, &err), &err);
    assert_null(v.quota);
    check_ok(quota_insert(fx, OWNER_A, "a2", &limits, &v, &err), &err);
    check_err(quota_insert(fx, OWNER_A, "a3", &limits, &v, &err), &err, ST_ERR_FORBIDDEN,
              "quota max_vms exceeded: limit 2, in use 2, requested 1");
    assert_string_equal(v.quota, "max_vms");
    assert_int_equal(v.limit, 2);
    assert_int_equal(v.in_use, 2);
    assert_int_equal(v.requested, 1);
    assert_int_equal(vm_repo_count_by_image(&fx->store.vms, OWNER_A, IMAGE_1, &n, &err), 0);
    assert_int_equal(n, 2);

    /* Another owner's rows count against nobody else. */
    check_ok(quota_insert(fx, OWNER_B, "b1", &limits, &v, &err), &err);

    /* The first broken limit in quota_allows() order is the one reported. */
    limits.max_vms = 10;
    limits.max_vcpus = 5;
    limits.max_disk_gib = 20;
    check_err(quota_insert(fx, OWNER_A, "a3", &limits, &v, &err), &err, ST_ERR_FORBIDDEN,
              "quota max_vcpus exceeded: limit 5, in use 4, requested 2");
    limits.max_vcpus = 6;
    check_err(quota_insert(fx, OWNER_A, "a3", &limits, &v, &err), &err, ST_ERR_FORBIDDEN,
              "quota max_disk_gib exceeded: limit 20, in use 20, requested 10");
    assert_string_equal(v.quota, "max_disk_gib");
    limits.max_vcpus = -1;
    limits.max_disk_gib = -1;
    limits.max_memory_mib = 6144;
    check_ok(quota_insert(fx, OWNER_A, "a3", &limits, &v, &err), &err);
    check_err(quota_insert(fx, OWNER_A, "a4", &limits, &v, &err), &err, ST_ERR_FORBIDDEN,
              "quota max_memory_mib exceeded: limit 6144, in use 6144, requested 2048");

    /* Within the limits, a name clash is still a conflict, and nothing is inserted. */
    limits = unlimited;
    vm = make_vm(OWNER_A, "a1", IMAGE_1, 5);
    check_err(vm_repo_insert_within_quota(&fx->store.vms, &vm, &limits, &v, &err), &err,
              ST_ERR_CONFLICT, "a VM named 'a1' already exists");
    for (i = 0; i < 20; i++) {
        char name[ST_NAME_BUF];

        snprintf(name, sizeof(name), "many-%02d", i);
        check_ok(quota_insert(fx, OWNER_A, name, &limits, &v, &err), &err);
    }
    assert_int_equal(vm_repo_count_by_image(&fx->store.vms, OWNER_A, IMAGE_1, &n, &err), 0);
    assert_int_equal(n, 23);

    /* A limit of 0 refuses the first VM. */
    limits.max_vms = 0;
    check_err(quota_insert(fx, OWNER_B, "b2", &limits, &v, &err), &err, ST_ERR_FORBIDDEN,
              "quota max_vms exceeded: limit 0, in use 1, requested 1");
}

static void
test_repo__vm_usage(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct quota_usage u = {.vms = 99};
    struct vm vm;

    check_ok(vm_repo_usage(&fx->store.vms, OWNER_A, &u, &err), &err);
    assert_int_equal(u.vms, 0);
    assert_int_equal(u.vcpus, 0);
    assert_int_equal(u.memory_mib, 0);
    assert_int_equal(u.disk_gib, 0);

    vm = make_vm(OWNER_A, "a1", IMAGE_1, 1);
    insert_vm(fx, &vm);
    /* Every row counts, whatever its status. */
    vm = make_vm(OWNER_A, "a2", IMAGE_1, 2);
    vm.status = VM_STATUS_ERROR;
    vm.vcpus = 3;
    vm.memory_mib = 100;
    vm.disk_gib = 1;
    insert_vm(fx, &vm);
    vm = make_vm(OWNER_B, "b1", IMAGE_1, 3);
    insert_vm(fx, &vm);

    check_ok(vm_repo_usage(&fx->store.vms, OWNER_A, &u, &err), &err);
    assert_int_equal(u.vms, 2);
    assert_int_equal(u.vcpus, 5);
    assert_int_equal(u.memory_mib, 2148);
    assert_int_equal(u.disk_gib, 11);
    check_ok(vm_repo_usage(&fx->store.vms, OWNER_B, &u, &err), &err);
    assert_int_equal(u.vms, 1);
    assert_int_equal(u.vcpus, 2);
    check_err(vm_repo_usage(&fx->store.vms, NULL, &u, &err), &err, ST_ERR_INVALID, "per owner");
}

#define QUOTA_RACE_LIMIT 5
#define QUOTA_RACE_TRIES 10

struct quota_racer {
    const char *url;
    pthread_barrier_t *start;
    const char *prefix;
    unsigned inserted;
    unsigned refused;
    char failure[ST_ERROR_MSG_MAX + 16]; /* "" unless something else went wrong */
};

/* A store of its own, opened from the test's URL, trying QUOTA_RACE_TRIES creates for OWNER_A. */
static void *
quota_racer_run(void *arg)
{
    struct quota_racer *q = arg;
    struct quota limits = unlimited;
    struct st_error err = {0};
    struct quota_violation v;
    struct store store;
    struct vm vm;
    char name[ST_NAME_BUF];
    int i;

    limits.max_vms = QUOTA_RACE_LIMIT;
    if (store_open(&store, q->url, &err) < 0) {
        snprintf(q->failure, sizeof(q->failure), "open: %s", err.msg);
        pthread_barrier_wait(q->start);
        return NULL;
    }
    pthread_barrier_wait(q->start);
    for (i = 0; i < QUOTA_RACE_TRIES; i++) {
        snprintf(name, sizeof(name), "%s-%02d", q->prefix, i);
        vm = make_vm(OWNER_A, name, IMAGE_1, st_now_ms());
        if (vm_repo_insert_within_quota(&store.vms, &vm, &limits, &v, &err) == 0)
            q->inserted++;
        else if (err.code == ST_ERR_FORBIDDEN && strcmp(v.quota, "max_vms") == 0)
            q->refused++;
        else
            snprintf(q->failure, sizeof(q->failure), "insert: %s", err.msg);
        /* Give the other connection its turn, so that creates interleave. */
        st_sleep_ms(1);
    }
    store_close(&store);
    return NULL;
}

/* Two connections race to create against a limit of 5: never a sixth row. */
static void
test_repo__vm_quota_concurrent(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct quota_usage u;
    pthread_barrier_t start;
    struct quota_racer q[2] = {
        {.url = store_fixture_url(fx), .start = &start, .prefix = "left"},
        {.url = store_fixture_url(fx), .start = &start, .prefix = "right"},
    };
    pthread_t t[2];
    size_t i;

    assert_int_equal(pthread_barrier_init(&start, NULL, 2), 0);
    for (i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, quota_racer_run, &q[i]), 0);
    for (i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&start);
    for (i = 0; i < 2; i++)
        if (q[i].failure[0])
            fail_msg("[%s] racer %zu: %s", store_fixture_name(fx), i, q[i].failure);
    assert_int_equal(q[0].inserted + q[1].inserted, QUOTA_RACE_LIMIT);
    assert_int_equal(q[0].refused + q[1].refused, 2 * QUOTA_RACE_TRIES - QUOTA_RACE_LIMIT);
    check_ok(vm_repo_usage(&fx->store.vms, OWNER_A, &u, &err), &err);
    assert_int_equal(u.vms, QUOTA_RACE_LIMIT);
}

/* Ids of a page of @owner's images, at most 8. */
static size_t
image_page_ids(struct store_fixture *fx, const char *owner, char ids[8][ST_ID_BUF])
{
    struct st_error err = {0};
    struct image_filter f = {.limit = 8};
    struct image_list list = {0};
    size_t i, n;

    check_ok(image_repo_list(&fx->store.images, owner, &f, &list, &err), &err);
    n = list.count;
    for (i = 0; i < n; i++)
        strcpy(ids[i], list.items[i].id);
    image_list_release(&list);
    return n;
}

static void
test_repo__image_visibility_scope(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct image mine = make_image(OWNER_A, "mine", 1000);
    struct image shared = make_image(OWNER_A, "shared", 2000);
    struct image theirs = make_image(OWNER_B, "theirs", 3000);
    struct image also = make_image(OWNER_B, "shared", 4000);
    struct image_filter f = {.limit = 8};
    struct image_list list = {0};
    struct image got;
    char ids[8][ST_ID_BUF];

    shared.visibility = IMAGE_VISIBILITY_PUBLIC;
    also.visibility = IMAGE_VISIBILITY_PUBLIC;
    check_ok(image_repo_insert(&fx->store.images, &mine, &err), &err);
    check_ok(image_repo_insert(&fx->store.images, &shared, &err), &err);
    check_ok(image_repo_insert(&fx->store.images, &theirs, &err), &err);
    /* Names stay unique per owner, public or not. */
    check_ok(image_repo_insert(&fx->store.images, &also, &err), &err);

    check_ok(image_repo_get(&fx->store.images, OWNER_B, shared.id, &got, &err), &err);
    assert_memory_equal(&got, &shared, sizeof(shared));
    assert_int_equal(got.visibility, IMAGE_VISIBILITY_PUBLIC);
    check_err(image_repo_get(&fx->store.images, OWNER_B, mine.id, &got, &err), &err,
              ST_ERR_NOT_FOUND, "no image '");
    check_ok(image_repo_get(&fx->store.images, OWNER_A, mine.id, &got, &err), &err);
    assert_int_equal(got.visibility, IMAGE_VISIBILITY_PRIVATE);

    /* Their own rows and every public one, in (created_at, id) order. */
    assert_int_equal(image_page_ids(fx, OWNER_B, ids), 3);
    assert_string_equal(ids[0], shared.id);
    assert_string_equal(ids[1], theirs.id);
    assert_string_equal(ids[2], also.id);
    assert_int_equal(image_page_ids(fx, OWNER_A, ids), 3);
    assert_string_equal(ids[0], mine.id);
    assert_string_equal(ids[1], shared.id);
    assert_string_equal(ids[2], also.id);
    assert_int_equal(image_page_ids(fx, NULL, ids), 4);

    /* Another owner's public image is a valid marker, a private one is not. */
    strcpy(f.marker, shared.id);
    check_ok(image_repo_list(&fx->store.images, OWNER_B, &f, &list, &err), &err);
    assert_int_equal(list.count, 2);
    image_list_release(&list);
    strcpy(f.marker, mine.id);
    check_err(image_repo_list(&fx->store.images, OWNER_B, &f, &list, &err), &err, ST_ERR_INVALID,
              "names no image");

    /* Removing is for the owner (or unscoped) only: another owner's public image stays. */
    check_err(image_repo_remove(&fx->store.images, OWNER_B, shared.id, &err), &err,
              ST_ERR_NOT_FOUND, "no image '");
    check_ok(image_repo_get(&fx->store.images, OWNER_A, shared.id, &got, &err), &err);
    check_ok(image_repo_remove(&fx->store.images, OWNER_B, also.id, &err), &err);
    check_ok(image_repo_remove(&fx->store.images, OWNER_A, shared.id, &err), &err);
    check_ok(image_repo_remove(&fx->store.images, NULL, theirs.id, &err), &err);
    assert_int_equal(image_page_ids(fx, OWNER_B, ids), 0);
}

/* A public image in use by another owner's VM: that owner still gets not found. */
static void
test_repo__image_remove_public_in_use(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct image shared = make_image(OWNER_A, "shared", 1000);
    struct vm vm;

    shared.visibility = IMAGE_VISIBILITY_PUBLIC;
    check_ok(image_repo_insert(&fx->store.images, &shared, &err), &err);
    vm = make_vm(OWNER_B, "b1", shared.id, 2000);
    insert_vm(fx, &vm);
    check_err(image_repo_remove(&fx->store.images, OWNER_B, shared.id, &err), &err,
              ST_ERR_NOT_FOUND, "no image '");
    check_err(image_repo_remove(&fx->store.images, OWNER_A, shared.id, &err), &err, ST_ERR_CONFLICT,
              "is used by a VM");
}

/*
 * Images and flavors are both named rows of an owner, paged by created_at
 * and id: struct catalog adapts either repository to one check of what
 * they share.  Rows travel as union catalog_row.
 */
union catalog_row {
    struct image image;
    struct flavor flavor;
};

struct catalog_page {
    size_t count;
    bool more;
    char first_id[ST_ID_BUF]; /* "" when count is 0 */
};

struct catalog {
    const char *name;       /* of rows a, dup and b */
    const char *other_name; /* of row a2 */
    const char *conflict;   /* the message for a second row named name */
    size_t row_size;
    union catalog_row (*make)(const char *owner, const char *name, int64_t created_at);
    const char *(*id)(const union catalog_row *row);
    int (*insert)(struct store_fixture *fx, const union catalog_row *row, struct st_error *err);
    int (*get)(struct store_fixture *fx, const char *owner, const char *id, union catalog_row *out,
               struct st_error *err);
    int (*remove)(struct store_fixture *fx, const char *owner, const char *id,
                  struct st_error *err);
    int (*page)(struct store_fixture *fx, const char *owner, const char *marker, unsigned limit,
                struct catalog_page *out, struct st_error *err);
};

/* The adapters of one kind: struct <kind> rows in repository fx-><member>. */
#define CATALOG_ADAPTERS(kind, member)                                                             \
    static union catalog_row kind##_row_make(const char *owner, const char *name,                  \
                                             int64_t created_at)                                   \
    {                                                                                              \
        union catalog_row row;                                                                     \
                                                                                                   \
        memset(&row, 0, sizeof(row));                                                              \
        row.kind = make_##kind(owner, name, created_at);                                           \
        return row;                                                                                \
    }                                                                                              \
    static const char *kind##_row_id(const union catalog_row *row)                                 \
    {                                                                                              \
        return row->kind.id;                                                                       \
    }                                                                                              \
    static int kind##_row_insert(struct store_fixture *fx, const union catalog_row *row,           \
                                 struct st_error *err)                                             \
    {                                                                                              \
        return kind##_repo_insert(&fx->store.member, &row->kind, err);                             \
    }                                                                                              \
    static int kind##_row_get(struct store_fixture *fx, const char *owner, const char *id,         \
                              union catalog_row *out, struct st_error *err)                        \
    {                                                                                              \
        return kind##_repo_get(&fx->store.member, owner, id, &out->kind, err);                     \
    }                                                                                              \
    static int kind##_row_remove(struct store_fixture *fx, const char *owner, const char *id,      \
                                 struct st_error *err)                                             \
    {                                                                                              \
        return kind##_repo_remove(&fx->store.member, owner, id, err);                              \
    }                                                                                              \
    static int kind##_row_page(struct store_fixture *fx, const char *owner, const char *marker,    \
                               unsigned limit, struct catalog_page *out, struct st_error *err)     \
    {                                                                                              \
        struct kind##_filter f = {.limit = limit};                                                 \
        struct kind##_list list = {0};                                                             \
                                                                                                   \
        snprintf(f.marker, sizeof(f.marker), "%s", marker);                                        \
        if (kind##_repo_list(&fx->store.member, owner, &f, &list, err) < 0)                        \
            return -1;                                                                             \
        out->count = list.count;                                                                   \
        out->more = list.more;                                                                     \
        snprintf(out->first_id, sizeof(out->first_id), "%s", list.count ? list.items[0].id : "");  \
        kind##_list_release(&list);                                                                \
        return 0;                                                                                  \
    }

CATALOG_ADAPTERS(image, images)
CATALOG_ADAPTERS(flavor, flavors)

#define CATALOG_OPS(kind)                                                                          \
    .row_size = sizeof(struct kind), .make = kind##_row_make, .id = kind##_row_id,                 \
    .insert = kind##_row_insert, .get = kind##_row_get, .remove = kind##_row_remove,               \
    .page = kind##_row_page

static const struct catalog image_catalog = {
    .name = "debian-12",
    .other_name = "alpine",
    .conflict = "an image named 'debian-12' already exists",
    CATALOG_OPS(image),
};

static const struct catalog flavor_catalog = {
    .name = "m1.small",
    .other_name = "m1.large",
    .conflict = "a flavor named 'm1.small' already exists",
    CATALOG_OPS(flavor),
};

/*
 * Row @a (OWNER_A, named cat->name, created at 1000) goes in; a second row
 * of that name conflicts; OWNER_B may use the name (row b, 3000); row a2
 * (OWNER_A, 4000) follows.  Reads and removes are scoped by owner, and
 * OWNER_A's rows come one to a page in order.  b's and a2's ids go to
 * @b_id and @a2_id for the kind's own checks.
 */
static void
check_catalog(struct store_fixture *fx, const struct catalog *cat, const union catalog_row *a,
              char b_id[ST_ID_BUF], char a2_id[ST_ID_BUF])
{
    struct st_error err = {0};
    union catalog_row dup = cat->make(OWNER_A, cat->name, 2000);
    union catalog_row b = cat->make(OWNER_B, cat->name, 3000);
    union catalog_row a2 = cat->make(OWNER_A, cat->other_name, 4000);
    union catalog_row got;
    struct catalog_page page;

    assert_int_equal(cat->insert(fx, a, &err), 0);
    assert_int_equal(cat->insert(fx, &dup, &err), -1);
    assert_int_equal(err.code, ST_ERR_CONFLICT);
    assert_string_equal(err.msg, cat->conflict);
    assert_int_equal(cat->insert(fx, &b, &err), 0);
    assert_int_equal(cat->insert(fx, &a2, &err), 0);

    assert_int_equal(cat->get(fx, OWNER_A, cat->id(a), &got, &err), 0);
    assert_memory_equal(&got, a, cat->row_size);
    assert_int_equal(cat->get(fx, OWNER_A, cat->id(&b), &got, &err), -1);
    assert_int_equal(err.code, ST_ERR_NOT_FOUND);
    assert_int_equal(cat->remove(fx, OWNER_A, cat->id(&b), &err), -1);
    assert_int_equal(err.code, ST_ERR_NOT_FOUND);

    assert_int_equal(cat->page(fx, OWNER_A, "", 1, &page, &err), 0);
    assert_int_equal(page.count, 1);
    assert_true(page.more);
    assert_string_equal(page.first_id, cat->id(a));
    assert_int_equal(cat->page(fx, OWNER_A, page.first_id, 1, &page, &err), 0);
    assert_int_equal(page.count, 1);
    assert_false(page.more);
    assert_string_equal(page.first_id, cat->id(&a2));

    strcpy(b_id, cat->id(&b));
    strcpy(a2_id, cat->id(&a2));
}

static void
test_repo__image_crud(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    union catalog_row a = image_row_make(OWNER_A, image_catalog.name, 1000);
    struct image_filter f = {.limit = 1};
    struct image_list list = {0};
    struct image got;
    char b_id[ST_ID_BUF], a2_id[ST_ID_BUF];

    a.image.format = IMAGE_FORMAT_QCOW2;
    check_catalog(fx, &image_catalog, &a, b_id, a2_id);

    strcpy(f.marker, b_id);
    assert_int_equal(image_repo_list(&fx->store.images, OWNER_A, &f, &list, &err), -1);
    assert_int_equal(err.code, ST_ERR_INVALID);
    assert_non_null(strstr(err.msg, "names no image"));
    f.limit = 10;
    assert_int_equal(image_repo_list(&fx->store.images, NULL, &f, &list, &err), 0);
    assert_int_equal(list.count, 1);
    assert_string_equal(list.items[0].id, a2_id);
    image_list_release(&list);

    assert_int_equal(image_repo_remove(&fx->store.images, OWNER_A, a.image.id, &err), 0);
    assert_int_equal(image_repo_get(&fx->store.images, NULL, a.image.id, &got, &err), -1);
    assert_int_equal(err.code, ST_ERR_NOT_FOUND);
    assert_non_null(strstr(err.msg, "no image '"));
    assert_non_null(strstr(err.msg, a.image.id));
}

static void
test_repo__flavor_crud(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    union catalog_row a = flavor_row_make(OWNER_A, flavor_catalog.name, 1000);
    struct flavor_filter f = {.limit = 1};
    struct flavor_list list = {0};
    struct flavor got;
    char b_id[ST_ID_BUF], a2_id[ST_ID_BUF];

    check_catalog(fx, &flavor_catalog, &a, b_id, a2_id);

    strcpy(f.marker, "not-an-id");
    assert_int_equal(flavor_repo_list(&fx->store.flavors, OWNER_A, &f, &list, &err), -1);
    assert_int_equal(err.code, ST_ERR_INVALID);
    assert_string_equal(err.msg, "marker 'not-an-id' names no flavor");

    assert_int_equal(flavor_repo_remove(&fx->store.flavors, NULL, a.flavor.id, &err), 0);
    assert_int_equal(flavor_repo_get(&fx->store.flavors, OWNER_A, a.flavor.id, &got, &err), -1);
    assert_int_equal(err.code, ST_ERR_NOT_FOUND);
}

static void
test_repo__migrations_once(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct store again;
    int64_t applied_at;
    int version = -1;

    assert_st_ok(store_schema_version(&fx->store, &version, &err), err);
    assert_int_equal(version, 4);
    assert_int_equal(contract_int(fx, "SELECT count(*) FROM schema_version"), 4);
    applied_at = contract_int(fx, "SELECT applied_at FROM schema_version WHERE version = 1");
    assert_true(applied_at > 0);

    /* Re-opening (twice, while the first store is open) applies nothing again. */
    store_close(&fx->store);
    fx->opened = false;
    assert_st_ok(store_open(&fx->store, store_fixture_url(fx), &err), err);
    fx->opened = true;
    assert_st_ok(store_open(&again, store_fixture_url(fx), &err), err);
    store_close(&again);
    assert_int_equal(contract_int(fx, "SELECT count(*) FROM schema_version"), 4);
    assert_int_equal(contract_int(fx, "SELECT applied_at FROM schema_version WHERE version = 1"),
                     applied_at);
    assert_st_ok(store_schema_version(&fx->store, &version, &err), err);
    assert_int_equal(version, 4);
}

/* Several processes open a fresh store at once: each migration is applied once. */
static void
test_repo__concurrent_open(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};
    struct store_fixture *fresh = store_fixture_add(fx, fx->kind, STORE_FIXTURE_UNOPENED, &err);
    int gate[2];
    pid_t pids[6];
    int status;
    size_t i;
    char c = 0;

    if (!fresh)
        fail_msg("[%s] a second store: %s", store_fixture_name(fx), err.msg);
    assert_int_equal(pipe(gate), 0);
    for (i = 0; i < ST_ARRAY_LEN(pids); i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            struct store s;

            close(gate[1]);
            /* Wait for the gate to open so that all start together. */
            if (read(gate[0], &c, 1) < 0)
                _exit(3);
            if (store_open(&s, store_fixture_url(fresh), &err) < 0) {
                fprintf(stderr, "child open: %s\n", err.msg);
                _exit(1);
            }
            store_close(&s);
            _exit(0);
        }
    }
    close(gate[0]);
    close(gate[1]);
    for (i = 0; i < ST_ARRAY_LEN(pids); i++) {
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    assert_int_equal(contract_int(fresh, "SELECT count(*) FROM schema_version"), 4);
    assert_int_equal(contract_int(fresh, fresh->kind == STORE_SQLITE
                                             ? "SELECT count(*) FROM sqlite_master WHERE name = "
                                               "'vms'"
                                             : "SELECT count(*) FROM pg_tables WHERE schemaname = "
                                               "current_schema() AND tablename = 'vms'"),
                     1);
}

static void
test_repo__ping(void **state)
{
    struct store_fixture *fx = *state;
    struct st_error err = {0};

    assert_st_ok(store_ping(&fx->store, &err), err);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        CONTRACT_TEST(test_repo__vm_crud),
        CONTRACT_TEST(test_repo__vm_name_conflict),
        CONTRACT_TEST(test_repo__vm_owner_scope),
        CONTRACT_TEST(test_repo__vm_paging),
        CONTRACT_TEST(test_repo__vm_bad_marker),
        CONTRACT_TEST(test_repo__vm_filters),
        CONTRACT_TEST(test_repo__vm_count_by_image),
        CONTRACT_TEST(test_repo__image_remove_refused_while_used),
        CONTRACT_TEST(test_repo__vm_quota_insert),
        CONTRACT_TEST(test_repo__vm_usage),
        CONTRACT_TEST(test_repo__vm_quota_concurrent),
        CONTRACT_TEST(test_repo__image_visibility_scope),
        CONTRACT_TEST(test_repo__image_remove_public_in_use),
        CONTRACT_TEST(test_repo__image_crud),
        CONTRACT_TEST(test_repo__flavor_crud),
        CONTRACT_TEST(test_repo__migrations_once),
        CONTRACT_TEST(test_repo__concurrent_open),
        CONTRACT_TEST(test_repo__ping),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
