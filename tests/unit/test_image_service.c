/*
 * test_image_service - registering and deleting base images against real
 * SQLite and libvirt's test:///default storage.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "support/fixture.h"
#include "util/mem.h"

/* A request for file @file in @dir (the import dir when NULL). */
static void
req_for(const struct fixture *fx, const char *dir, const char *file, const char *name,
        enum image_format format, struct image_create_req *out)
{
    ST_AUTOFREE char *path = st_xasprintf("%s/%s", dir ? dir : fx->import_dir, file);

    memset(out, 0, sizeof(*out));
    st_strlcpy(out->name, name, sizeof(out->name));
    assert_int_equal(st_strlcpy(out->source_path, path, sizeof(out->source_path)), 0);
    out->format = format;
}

static size_t
image_count(struct fixture *fx, const char *owner)
{
    struct image_filter f = {.limit = 100};
    struct image_list list = {0};
    struct st_error err = {0};
    size_t n;

    assert_st_ok(image_service_list(&fx->image_svc, owner, &f, &list, &err), err);
    n = list.count;
    image_list_release(&list);
    return n;
}

/* The refused request left no volume and no row behind. */
static void
assert_nothing_left(struct fixture *fx, int volumes_before)
{
    assert_int_equal(fixture_pool_volume_count(fx, fx->image_pool), volumes_before);
    assert_int_equal(image_count(fx, FIXTURE_OWNER), 1);
}

static void
test_image_service__register_raw_and_qcow2(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct image_create_req req;
    struct storage_vol_info info;
    struct image img, got;
    char vol[ST_NAME_BUF];

    /* The fixture's own image went through the same path. */
    assert_int_equal(fx->image.format, IMAGE_FORMAT_RAW);
    assert_int_equal(fx->image.virtual_size_bytes, 1024 * 1024);
    assert_int_equal(image_min_disk_gib(&fx->image), 1);

    req_for(fx, NULL, "disk.qcow2", "ubuntu", IMAGE_FORMAT_QCOW2, &req);
    assert_st_ok(fixture_write_qcow2(req.source_path, (uint64_t)5 << 30, NULL, &err), err);
    assert_st_ok(image_service_register(&fx->image_svc, FIXTURE_OWNER, &req, &img, &err), err);
    assert_true(st_uuid_valid(img.id));
    assert_string_equal(img.name, "ubuntu");
    assert_string_equal(img.owner_id, FIXTURE_OWNER);
    assert_int_equal(img.format, IMAGE_FORMAT_QCOW2);
    assert_int_equal(img.status, IMAGE_STATUS_ACTIVE);
    assert_int_equal(img.virtual_size_bytes, (uint64_t)5 << 30);
    assert_int_equal(image_min_disk_gib(&img), 5);

    assert_st_ok(image_service_get(&fx->image_svc, FIXTURE_OWNER, img.id, &got, &err), err);
    assert_string_equal(got.name, "ubuntu");
    assert_int_equal(got.virtual_size_bytes, img.virtual_size_bytes);
    assert_st_err(image_service_get(&fx->image_svc, FIXTURE_OTHER_OWNER, img.id, &got, &err), err,
                  ST_ERR_NOT_FOUND, "");
    assert_int_equal(image_count(fx, FIXTURE_OWNER), 2);
    assert_int_equal(image_count(fx, FIXTURE_OTHER_OWNER), 0);

    vm_service_image_vol_name(img.id, vol);
    assert_st_ok(storage_info(&fx->storage_real, fx->image_pool, vol, &info, &err), err);
    assert_string_equal(info.format, "qcow2");
    assert_false(info.has_backing);
}

static void
test_image_service__refuses_format_mismatch(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct image_create_req req;
    struct image img;
    int before = fixture_pool_volume_count(fx, fx->image_pool);

    assert_int_equal(before, 1);
    req_for(fx, NULL, "disk.qcow2", "liar", IMAGE_FORMAT_RAW, &req);
    assert_st_ok(fixture_write_qcow2(req.source_path, (uint64_t)1 << 30, NULL, &err), err);
    assert_st_err(image_service_register(&fx->image_svc, FIXTURE_OWNER, &req, &img, &err), err,
                  ST_ERR_INVALID, "file is qcow2 but format says raw");
    assert_nothing_left(fx, before);

    req_for(fx, NULL, "disk.raw", "liar", IMAGE_FORMAT_QCOW2, &req);
    assert_st_ok(fixture_write_raw(req.source_path, 1024 * 1024, &err), err);
    assert_st_err(image_service_register(&fx->image_svc, FIXTURE_OWNER, &req, &img, &err), err,
                  ST_ERR_INVALID, "file is raw but format says qcow2");
    assert_nothing_left(fx, before);
}

static void
test_image_service__refuses_backing_file(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct image_create_req req;
    struct image img;
    int before = fixture_pool_volume_count(fx, fx->image_pool);

    req_for(fx, NULL, "overlay.qcow2", "overlay", IMAGE_FORMAT_QCOW2, &req);
    assert_st_ok(fixture_write_qcow2(req.source_path, (uint64_t)1 << 30, "/etc/shadow", &err), err);
    assert_st_err(image_service_register(&fx->image_svc, FIXTURE_OWNER, &req, &img, &err), err,
                  ST_ERR_INVALID, "image has a backing file; only standalone images are accepted");
    assert_nothing_left(fx, before);
}

static void
test_image_service__refuses_other_formats_and_empty_images(void **state)
{
    struct fixture *fx = *state;
    static const unsigned char qed[16] = {'Q', 'E', 'D', 0};
    struct st_error err = {0};
    struct image_create_req req;
    struct image img;
    int before = fixture_pool_volume_count(fx, fx->image_pool);
    FILE *f;

    req_for(fx, NULL, "disk.qed", "qed", IMAGE_FORMAT_QCOW2, &req);
    f = fopen(req.source_path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(qed, 1, sizeof(qed), f), sizeof(qed));
    assert_int_equal(fclose(f), 0);
    assert_st_err(image_service_register(&fx->image_svc, FIXTURE_OWNER, &req, &img, &err), err,
                  ST_ERR_INVALID, "file is qed; only qcow2 and raw images are accepted");
    assert_nothing_left(fx, before);

    req_for(fx, NULL, "empty.raw", "empty", IMAGE_FORMAT_RAW, &req);
    assert_st_ok(fixture_write_raw(req.source_path, 0, &err), err);
    assert_st_err(image_service_register(&fx->image_svc, FIXTURE_OWNER, &req, &img, &err), err,
                  ST_ERR_INVALID, "virtual size of 0");
    assert_nothing_left(fx, before);

    /* A header claiming more than any VM disk may hold. */
    req_for(fx, NULL, "huge.qcow2", "huge", IMAGE_FORMAT_QCOW2, &req);
    {
        /* Only the header matters to the probe: magic, version 2, size at offset 24. */
        unsigned char hdr[512] = {'Q', 'F', 'I', 0xfb, 0, 0, 0, 2};
        uint64_t size = ((uint64_t)ST_DISK_GIB_MAX + 1) << 30;
        int i;

        for (i = 0; i < 8; i++)
            hdr[24 + i] = (unsigned char)(size >> (56 - 8 * i));
        hdr[23] = 16; /* cluster_bits */
        f = fopen(req.source_path, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(hdr, 1, sizeof(hdr), f), sizeof(hdr));
        assert_int_equal(fclose(f), 0);
    }
    assert_st_err(image_service_register(&fx->image_svc, FIXTURE_OWNER, &req, &img, &err), err,
                  ST_ERR_INVALID, "more than the largest disk");
    assert_nothing_left(fx, before);

    /* qcow2 v3 whose data lives in an external file: it could read any host file. */
    req_for(fx, NULL, "datafile.qcow2", "datafile", IMAGE_FORMAT_QCOW2, &req);
    {
        unsigned char hdr[512] = {'Q', 'F', 'I', 0xfb, 0, 0, 0, 3};

        hdr[23] = 16;      /* cluster_bits */
        hdr[28] = 1;       /* size: 4 GiB, big-endian u64 at offset 24 */
        hdr[79] = 1u << 2; /* incompatible_features: data_file */
        hdr[103] = 104;    /* header_length */
        f = fopen(req.source_path, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(hdr, 1, sizeof(hdr), f), sizeof(hdr));
        assert_int_equal(fclose(f), 0);
    }
    assert_st_err(image_service_register(&fx->image_svc, FIXTURE_OWNER, &req, &img, &err), err,
                  ST_ERR_INVALID, "image refused:");
    assert_nothing_left(fx, before);
}

static void
test_image_service__refuses_files_outside_import_dir(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct image_create_req req;
    struct image img;
    int before = fixture_pool_volume_count(fx, fx->image_pool);

    req_for(fx, fx->dir, "outside.raw", "outside", IMAGE_FORMAT_RAW, &req);
    assert_st_ok(fixture_write_raw(req.source_path, 1024 * 1024, &err), err);
    assert_st_err(image_service_register(&fx->image_svc, FIXTURE_OWNER, &req, &img, &err), err,
                  ST_ERR_INVALID, "");
    assert_nothing_left(fx, before);

    /* A path that starts inside but climbs out is outside too. */
    req_for(fx, NULL, "../outside.raw", "climber", IMAGE_FORMAT_RAW, &req);
    assert_st_err(image_service_register(&fx->image_svc, FIXTURE_OWNER, &req, &img, &err), err,
                  ST_ERR_INVALID, "");
    assert_nothing_left(fx, before);
}

static void
test_image_service__name_taken_leaves_no_volume(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct image_create_req req;
    struct image img;
    int before = fixture_pool_volume_count(fx, fx->image_pool);

    req_for(fx, NULL, "again.raw", "base", IMAGE_FORMAT_RAW, &req);
    assert_st_ok(fixture_write_raw(req.source_path, 1024 * 1024, &err), err);
    assert_st_err(image_service_register(&fx->image_svc, FIXTURE_OWNER, &req, &img, &err), err,
                  ST_ERR_CONFLICT, "");
    assert_nothing_left(fx, before);

    /* The same name is free for another owner. */
    assert_st_ok(image_service_register(&fx->image_svc, FIXTURE_OTHER_OWNER, &req, &img, &err),
                 err);
    assert_int_equal(fixture_pool_volume_count(fx, fx->image_pool), before + 1);
}

static void
test_image_service__delete_refused_while_used(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct image got;
    struct vm vm;

    assert_st_ok(fixture_create_vm(fx, "web-01", &vm, &err), err);
    assert_st_err(image_service_delete(&fx->image_svc, FIXTURE_OWNER, fx->image.id, 0, &err), err,
                  ST_ERR_CONFLICT, "is used by 1 VM");
    assert_st_ok(image_service_get(&fx->image_svc, FIXTURE_OWNER, fx->image.id, &got, &err), err);
    assert_int_equal(fixture_pool_volume_count(fx, fx->image_pool), 1);

    assert_st_ok(vm_service_delete(&fx->vm_svc, FIXTURE_OWNER, vm.id, NULL, &err), err);
    assert_st_ok(image_service_delete(&fx->image_svc, FIXTURE_OWNER, fx->image.id, 0, &err), err);
    assert_st_err(image_service_get(&fx->image_svc, FIXTURE_OWNER, fx->image.id, &got, &err), err,
                  ST_ERR_NOT_FOUND, "");
    assert_int_equal(fixture_pool_volume_count(fx, fx->image_pool), 0);
    assert_st_err(image_service_delete(&fx->image_svc, FIXTURE_OWNER, fx->image.id, 0, &err), err,
                  ST_ERR_NOT_FOUND, "");
}

/* Another owner's VM on the image counts as well. */
static void
test_image_service__delete_counts_every_owner(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct vm row;

    memset(&row, 0, sizeof(row));
    st_uuid_generate(row.id);
    st_strlcpy(row.owner_id, FIXTURE_OTHER_OWNER, sizeof(row.owner_id));
    st_strlcpy(row.name, "theirs", sizeof(row.name));
    row.status = VM_STATUS_STOPPED;
    row.step = VM_STEP_DONE;
    row.vcpus = 1;
    row.memory_mib = 64;
    row.disk_gib = 1;
    st_strlcpy(row.image_id, fx->image.id, sizeof(row.image_id));
    row.created_at = row.updated_at = st_now_ms();
    assert_st_ok(vm_repo_insert(&fx->vms_real, &row, &err), err);
    assert_st_ok(fixture_seed_vms(fx, "mine", 2, VM_STATUS_STOPPED, &err), err);
    assert_st_err(image_service_delete(&fx->image_svc, FIXTURE_OWNER, fx->image.id, 0, &err), err,
                  ST_ERR_CONFLICT, "is used by 3 VMs");
}

static void
test_image_service__delete_tolerates_missing_volume(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    char vol[ST_NAME_BUF];

    vm_service_image_vol_name(fx->image.id, vol);
    assert_st_ok(storage_remove(&fx->storage_real, fx->image_pool, vol, &err), err);
    assert_st_ok(image_service_delete(&fx->image_svc, FIXTURE_OWNER, fx->image.id, 0, &err), err);
    assert_int_equal(image_count(fx, FIXTURE_OWNER), 0);
}

static void
test_image_service__delete_keeps_row_when_volume_removal_fails(void **state)
{
    struct fixture *fx = *state;
    struct st_error err = {0};
    struct image got;

    fault_storage_fail(&fx->storage, FAULT_ST_REMOVE, 1, ST_ERR_BACKEND);
    assert_st_err(image_service_delete(&fx->image_svc, FIXTURE_OWNER, fx->image.id, 0, &err), err,
                  ST_ERR_BACKEND, "injected fault");
    assert_st_ok(image_service_get(&fx->image_svc, FIXTURE_OWNER, fx->image.id, &got, &err), err);
    assert_st_ok(image_service_delete(&fx->image_svc, FIXTURE_OWNER, fx->image.id, 0, &err), err);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, fixture_setup, fixture_teardown)
        T(test_image_service__register_raw_and_qcow2),
        T(test_image_service__refuses_format_mismatch),
        T(test_image_service__refuses_backing_file),
        T(test_image_service__refuses_other_formats_and_empty_images),
        T(test_image_service__refuses_files_outside_import_dir),
        T(test_image_service__name_taken_leaves_no_volume),
        T(test_image_service__delete_refused_while_used),
        T(test_image_service__delete_counts_every_owner),
        T(test_image_service__delete_tolerates_missing_volume),
        T(test_image_service__delete_keeps_row_when_volume_removal_fails),
#undef T
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
