/*
 * The libvirt storage against libvirt's test:///default driver, with pools
 * pointing at a temporary directory.  The test driver keeps volumes in
 * memory only; the files the backend writes itself (imports) are real.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libvirt/libvirt.h>

#include "repositories/libvirt/libvirt_backend.h"
#include "repositories/libvirt/libvirt_internal.h"
#include "support/fault.h"
#include "support/keeper.h"
#include "support/tmpdir.h"
#include "util/ids.h"
#include "util/mem.h"

#define TEST_URI "test:///default"
#define DEAD_URI "qemu+unix:///system?socket=/nonexistent"
#define GIB (1024ull * 1024 * 1024)

struct fixture {
    char base[64];
    char pool_dir[PATH_MAX];
    char import_dir[PATH_MAX];
    char outside_dir[PATH_MAX];
    char pool[32];
    struct libvirt_conn *lc;
    struct storage st;
};

static unsigned pool_seq;

static int
setup(void **state)
{
    struct fixture *f = st_xcalloc(1, sizeof(*f));
    struct storage_libvirt_config cfg;
    struct st_error err;

    if (tmpdir_make(f->base, sizeof(f->base), "stratus-st", &err) < 0) {
        fprintf(stderr, "setup: %s\n", err.msg);
        free(f);
        return -1;
    }
    snprintf(f->pool_dir, sizeof(f->pool_dir), "%s/pool", f->base);
    snprintf(f->import_dir, sizeof(f->import_dir), "%s/import", f->base);
    snprintf(f->outside_dir, sizeof(f->outside_dir), "%s/outside", f->base);
    if (mkdir(f->pool_dir, 0755) < 0 || mkdir(f->import_dir, 0755) < 0 ||
        mkdir(f->outside_dir, 0755) < 0)
        return -1;
    snprintf(f->pool, sizeof(f->pool), "st-test-%u", ++pool_seq);
    cfg.import_dir = f->import_dir;
    f->lc = libvirt_conn_new(TEST_URI);
    if (storage_libvirt_open(f->lc, &cfg, &f->st, &err) < 0)
        return -1;
    *state = f;
    return 0;
}

static void
drop_pool(const char *name)
{
    virStoragePoolPtr p = virStoragePoolLookupByName(keeper, name);

    if (!p)
        return;
    if (virStoragePoolIsActive(p) == 1)
        virStoragePoolDestroy(p);
    virStoragePoolUndefine(p);
    virStoragePoolFree(p);
}

static int
teardown(void **state)
{
    struct fixture *f = *state;

    drop_pool(f->pool);
    storage_close(&f->st);
    libvirt_conn_close(f->lc);
    tmpdir_remove(f->base);
    free(f);
    return 0;
}

static void
ensure(struct fixture *f)
{
    struct st_error err;

    assert_int_equal(storage_ensure_pool(&f->st, f->pool, f->pool_dir, &err), 0);
}

static void
write_file(const char *path, const void *data, size_t len)
{
    FILE *fp = fopen(path, "wb");

    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

static void
put_be(unsigned char *p, uint64_t v, int bytes)
{
    int i;

    for (i = 0; i < bytes; i++)
        p[i] = (unsigned char)(v >> (8 * (bytes - 1 - i)));
}

/* A 512-byte qcow2 header: @version, @crypt_method and (v3) @incompatible features. */
static void
write_qcow2_ex(const char *path, uint32_t version, uint64_t size, uint64_t backing_offset,
               uint32_t crypt_method, uint64_t incompatible)
{
    unsigned char head[512];

    memset(head, 0, sizeof(head));
    memcpy(head, "QFI\xfb", 4);
    put_be(head + 4, version, 4);
    put_be(head + 8, backing_offset, 8);
    put_be(head + 20, 16, 4); /* cluster_bits */
    put_be(head + 24, size, 8);
    put_be(head + 32, crypt_method, 4);
    if (version >= 3) {
        put_be(head + 72, incompatible, 8);
        put_be(head + 100, 104, 4); /* header_length */
    }
    write_file(path, head, sizeof(head));
}

/* A 512-byte qcow2 (v3) header of @size bytes with @backing_offset. */
static void
write_qcow2(const char *path, uint64_t size, uint64_t backing_offset)
{
    write_qcow2_ex(path, 3, size, backing_offset, 0, 0);
}

static void
assert_no_vol(struct fixture *f, const char *vol)
{
    struct storage_vol_info info;
    struct st_error err;

    assert_int_equal(storage_info(&f->st, f->pool, vol, &info, &err), -1);
    assert_int_equal(err.code, ST_ERR_NOT_FOUND);
}

/* "<outside_dir>/secret.img" into @path, written: a file no import may reach. */
static void
write_secret(struct fixture *f, char *path, size_t size)
{
    snprintf(path, size, "%s/secret.img", f->outside_dir);
    write_file(path, "secret", 6);
}

/* Importing @path as "img-x" is refused as invalid; @err keeps why. */
static void
assert_import_invalid(struct fixture *f, const char *path, struct st_error *err)
{
    struct storage_vol_info out;

    assert_int_equal(storage_import(&f->st, f->pool, "img-x", path, &out, err), -1);
    assert_int_equal(err->code, ST_ERR_INVALID);
}

static void
test_storage_libvirt__ensure_pool_is_idempotent(void **state)
{
    struct fixture *f = *state;
    char with_slash[PATH_MAX + 1];
    virStoragePoolPtr p;
    int autostart = 0;
    char *xml;

    ensure(f);
    ensure(f);
    snprintf(with_slash, sizeof(with_slash), "%s/", f->pool_dir);
    assert_int_equal(storage_ensure_pool(&f->st, f->pool, with_slash, NULL), 0);
    p = virStoragePoolLookupByName(keeper, f->pool);
    assert_non_null(p);
    assert_int_equal(virStoragePoolIsActive(p), 1);
    assert_int_equal(virStoragePoolGetAutostart(p, &autostart), 0);
    assert_int_equal(autostart, 1);
    xml = virStoragePoolGetXMLDesc(p, 0);
    assert_non_null(strstr(xml, "<pool type='dir'>"));
    assert_non_null(strstr(xml, f->pool_dir));
    free(xml);
    virStoragePoolFree(p);
}

static void
test_storage_libvirt__ensure_pool_conflicts_on_another_path(void **state)
{
    struct fixture *f = *state;
    struct st_error err;

    ensure(f);
    assert_int_equal(storage_ensure_pool(&f->st, f->pool, f->outside_dir, &err), -1);
    assert_int_equal(err.code, ST_ERR_CONFLICT);
    assert_non_null(strstr(err.msg, f->pool_dir));
    assert_non_null(strstr(err.msg, f->outside_dir));
    assert_int_equal(storage_ensure_pool(&f->st, f->pool, "relative/dir", &err), -1);
    assert_int_equal(err.code, ST_ERR_INVALID);
}

static void
test_storage_libvirt__ensure_pool_starts_an_inactive_pool(void **state)
{
    struct fixture *f = *state;
    virStoragePoolPtr p;

    ensure(f);
    p = virStoragePoolLookupByName(keeper, f->pool);
    assert_non_null(p);
    assert_int_equal(virStoragePoolDestroy(p), 0);
    assert_int_equal(virStoragePoolIsActive(p), 0);
    ensure(f);
    assert_int_equal(virStoragePoolIsActive(p), 1);
    virStoragePoolFree(p);
}

static void
test_storage_libvirt__clone_overlay_info_remove(void **state)
{
    struct fixture *f = *state;
    struct storage_vol_info out, info;
    char want[PATH_MAX + 32];
    struct st_error err;

    ensure(f);
    assert_int_equal(storage_clone_overlay(&f->st, f->pool, "vm-1.qcow2", "/images/base.img", "raw",
                                           10 * GIB, &out, &err),
                     0);
    snprintf(want, sizeof(want), "%s/vm-1.qcow2", f->pool_dir);
    assert_string_equal(out.path, want);
    assert_string_equal(out.format, "qcow2");
    assert_true(out.has_backing);
    assert_int_equal(out.capacity, 10 * GIB);

    assert_int_equal(storage_info(&f->st, f->pool, "vm-1.qcow2", &info, &err), 0);
    assert_string_equal(info.path, want);
    assert_string_equal(info.format, "qcow2");
    assert_true(info.has_backing);
    assert_int_equal(info.capacity, 10 * GIB);

    assert_int_equal(storage_clone_overlay(&f->st, f->pool, "vm-1.qcow2", "/images/base.img", "raw",
                                           GIB, &out, &err),
                     -1);
    assert_int_equal(err.code, ST_ERR_CONFLICT);

    assert_int_equal(storage_remove(&f->st, f->pool, "vm-1.qcow2", &err), 0);
    assert_no_vol(f, "vm-1.qcow2");
    assert_int_equal(storage_remove(&f->st, f->pool, "vm-1.qcow2", &err), -1);
    assert_int_equal(err.code, ST_ERR_NOT_FOUND);
}

static void
test_storage_libvirt__clone_overlay_escapes_xml(void **state)
{
    struct fixture *f = *state;
    struct storage_vol_info out;
    struct st_error err;

    ensure(f);
    assert_int_equal(storage_clone_overlay(&f->st, f->pool, "a&b<'c'>.qcow2",
                                           "/images/it's <base>.img", "qcow2", GIB, &out, &err),
                     0);
    assert_non_null(strstr(out.path, "/a&b<'c'>.qcow2"));
    assert_true(out.has_backing);
}

static void
test_storage_libvirt__unknown_pool_is_not_found(void **state)
{
    struct fixture *f = *state;
    struct storage_vol_info out;
    char src[PATH_MAX + 16];
    struct st_error err;

    assert_int_equal(
        storage_clone_overlay(&f->st, "no-such-pool", "v", "/b.img", "raw", GIB, &out, &err), -1);
    assert_int_equal(err.code, ST_ERR_NOT_FOUND);
    assert_int_equal(storage_info(&f->st, "no-such-pool", "v", &out, &err), -1);
    assert_int_equal(err.code, ST_ERR_NOT_FOUND);
    assert_int_equal(storage_remove(&f->st, "no-such-pool", "v", &err), -1);
    assert_int_equal(err.code, ST_ERR_NOT_FOUND);
    snprintf(src, sizeof(src), "%s/x.img", f->import_dir);
    write_file(src, "x", 1);
    assert_int_equal(storage_import(&f->st, "no-such-pool", "v", src, &out, &err), -1);
    assert_int_equal(err.code, ST_ERR_NOT_FOUND);
    ensure(f);
    assert_no_vol(f, "v");
}

static void
test_storage_libvirt__import_raw_copies_the_bytes(void **state)
{
    struct fixture *f = *state;
    enum { LEN = 3 * 1024 * 1024 + 123 };
    ST_AUTOFREE unsigned char *data = st_xcalloc(1, LEN);
    ST_AUTOFREE unsigned char *back = st_xcalloc(1, LEN);
    char src[PATH_MAX + 16], want[PATH_MAX + 16];
    struct storage_vol_info out, info;
    struct stat st;
    FILE *fp;
    size_t i;
    struct st_error err;

    /* Data, then a long zero run (a hole in the copy), then data at the very end. */
    for (i = 0; i < 1024 * 1024; i++)
        data[i] = (unsigned char)(i * 7 + 1);
    data[LEN - 1] = 0x5a;
    snprintf(src, sizeof(src), "%s/disk.raw", f->import_dir);
    write_file(src, data, LEN);
    ensure(f);
    assert_int_equal(storage_import(&f->st, f->pool, "img-1", src, &out, &err), 0);
    snprintf(want, sizeof(want), "%s/img-1", f->pool_dir);
    assert_string_equal(out.path, want);
    assert_string_equal(out.format, "raw");
    assert_false(out.has_backing);
    assert_int_equal(out.capacity, LEN);
    assert_true(out.allocation > 0);
    assert_int_equal(stat(want, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0644);
    assert_int_equal(st.st_size, LEN);
    fp = fopen(want, "rb");
    assert_non_null(fp);
    assert_int_equal(fread(back, 1, LEN, fp), LEN);
    fclose(fp);
    assert_memory_equal(back, data, LEN);

    assert_int_equal(storage_info(&f->st, f->pool, "img-1", &info, &err), 0);
    assert_string_equal(info.format, "raw");
    assert_int_equal(info.capacity, LEN);

    /* A second import under the same name is refused and keeps the first. */
    assert_int_equal(storage_import(&f->st, f->pool, "img-1", src, &out, &err), -1);
    assert_int_equal(err.code, ST_ERR_CONFLICT);
    assert_int_equal(storage_info(&f->st, f->pool, "img-1", &info, &err), 0);
}

static void
test_storage_libvirt__import_probes_a_qcow2_header(void **state)
{
    struct fixture *f = *state;
    char src[PATH_MAX + 16];
    struct storage_vol_info out;
    struct st_error err;

    ensure(f);
    snprintf(src, sizeof(src), "%s/plain.qcow2", f->import_dir);
    write_qcow2(src, 20 * GIB, 0);
    assert_int_equal(storage_import(&f->st, f->pool, "img-q", src, &out, &err), 0);
    assert_string_equal(out.format, "qcow2");
    assert_int_equal(out.capacity, 20 * GIB);
    assert_false(out.has_backing);

    snprintf(src, sizeof(src), "%s/backed.qcow2", f->import_dir);
    write_qcow2(src, 5 * GIB, 0x200);
    assert_int_equal(storage_import(&f->st, f->pool, "img-b", src, &out, &err), 0);
    assert_string_equal(out.format, "qcow2");
    assert_int_equal(out.capacity, 5 * GIB);
    assert_true(out.has_backing);

    assert_int_equal(storage_info(&f->st, f->pool, "img-b", &out, &err), 0);
    assert_string_equal(out.format, "qcow2");
    assert_true(out.has_backing);
}

static void
test_storage_libvirt__import_names_other_formats(void **state)
{
    static const struct {
        const char *head;
        size_t len;
        const char *format;
    } cases[] = {
        {"QED\0", 4, "qed"},
        {"KDMV", 4, "vmdk"},
        {"vhdxfile", 8, "vhdx"},
        {"LUKS\xba\xbe", 6, "luks"},
    };
    struct fixture *f = *state;
    char src[PATH_MAX + 16], vol[32];
    unsigned char head[1024];
    struct storage_vol_info out;
    size_t i;
    struct st_error err;

    ensure(f);
    for (i = 0; i < ST_ARRAY_LEN(cases); i++) {
        memset(head, 0, sizeof(head));
        memcpy(head, cases[i].head, cases[i].len);
        snprintf(src, sizeof(src), "%s/f%zu", f->import_dir, i);
        snprintf(vol, sizeof(vol), "img-%zu", i);
        write_file(src, head, sizeof(head));
        assert_int_equal(storage_import(&f->st, f->pool, vol, src, &out, &err), 0);
        assert_string_equal(out.format, cases[i].format);
    }
}

static void
test_storage_libvirt__import_refuses_files_outside_the_import_dir(void **state)
{
    struct fixture *f = *state;
    char outside[PATH_MAX + 16], link[PATH_MAX + 16], dotdot[PATH_MAX + 32], sub[PATH_MAX + 16];
    struct st_error err;

    ensure(f);
    write_secret(f, outside, sizeof(outside));

    assert_import_invalid(f, outside, &err);
    assert_non_null(strstr(err.msg, "is not inside the import directory"));
    assert_non_null(strstr(err.msg, outside));
    assert_non_null(strstr(err.msg, f->import_dir));

    snprintf(link, sizeof(link), "%s/link.img", f->import_dir);
    assert_int_equal(symlink(outside, link), 0);
    assert_import_invalid(f, link, &err);
    assert_non_null(strstr(err.msg, "is not inside the import directory"));

    snprintf(dotdot, sizeof(dotdot), "%s/../outside/secret.img", f->import_dir);
    assert_import_invalid(f, dotdot, &err);

    snprintf(sub, sizeof(sub), "%s/sub", f->import_dir);
    assert_int_equal(mkdir(sub, 0755), 0);
    assert_import_invalid(f, sub, &err);
    assert_import_invalid(f, f->import_dir, &err);

    snprintf(sub, sizeof(sub), "%s/missing.img", f->import_dir);
    assert_import_invalid(f, sub, &err);

    assert_no_vol(f, "img-x");
}

static void
test_storage_libvirt__info_of_unknown_volume_is_not_found(void **state)
{
    struct fixture *f = *state;

    ensure(f);
    assert_no_vol(f, "nothing-here");
}

static void
test_storage_libvirt__unreachable_is_unavailable(void **state)
{
    struct fixture *f = *state;
    struct storage_libvirt_config cfg = {.import_dir = f->import_dir};
    struct libvirt_conn *lc;
    struct storage st;
    struct storage_vol_info out;
    int64_t t0;
    struct st_error err;

    t0 = st_monotonic_ms();
    lc = libvirt_conn_new(DEAD_URI);
    assert_int_equal(storage_libvirt_open(lc, &cfg, &st, &err), 0);
    assert_int_equal(storage_ensure_pool(&st, "p", f->pool_dir, &err), -1);
    assert_int_equal(err.code, ST_ERR_UNAVAILABLE);
    assert_non_null(strstr(err.msg, "unreachable"));
    assert_int_equal(storage_info(&st, "p", "v", &out, &err), -1);
    assert_int_equal(err.code, ST_ERR_UNAVAILABLE);
    assert_true(st_monotonic_ms() - t0 < 2000);
    storage_close(&st);
    libvirt_conn_close(lc);
}

static void
test_storage_libvirt__import_refuses_qcow2_that_reads_elsewhere(void **state)
{
    static const struct {
        uint32_t version;
        uint32_t crypt;
        uint64_t incompatible;
        const char *refusal; /* NULL: accepted */
    } cases[] = {
        {3, 0, 1ull << 2, "external data file"},
        {3, 0, (1ull << 2) | 1, "external data file"},
        {3, 0, 1ull << 5, "unknown incompatible features 0x20"},
        {3, 0, 1ull << 63, "unknown incompatible features"},
        {3, 2, 0, "encrypted (crypt_method 2)"},
        {2, 1, 0, "encrypted (crypt_method 1)"},
        {4, 0, 0, "qcow2 version 4 is not supported"},
        {3, 0, (1ull << 0) | (1ull << 1) | (1ull << 3) | (1ull << 4), NULL},
        {2, 0, 1ull << 2, NULL}, /* v2 has no feature bits: 72.. is not read */
    };
    struct fixture *f = *state;
    char src[PATH_MAX + 16], vol[32];
    struct storage_vol_info out;
    size_t i;
    struct st_error err;

    ensure(f);
    for (i = 0; i < ST_ARRAY_LEN(cases); i++) {
        snprintf(src, sizeof(src), "%s/q%zu.qcow2", f->import_dir, i);
        snprintf(vol, sizeof(vol), "img-q%zu", i);
        write_qcow2_ex(src, cases[i].version, GIB, 0, cases[i].crypt, cases[i].incompatible);
        assert_int_equal(storage_import(&f->st, f->pool, vol, src, &out, &err), 0);
        assert_string_equal(out.format, "qcow2");
        assert_int_equal(out.capacity, GIB);
        if (!cases[i].refusal) {
            assert_false(out.has_backing);
            assert_string_equal(out.refusal, "");
            continue;
        }
        assert_true(out.has_backing); /* so a caller checking only that refuses too */
        assert_non_null(strstr(out.refusal, cases[i].refusal));
        assert_int_equal(storage_info(&f->st, f->pool, vol, &out, &err), 0);
        assert_true(out.has_backing);
        assert_non_null(strstr(out.refusal, cases[i].refusal));
    }
}

/* Paths outside are refused as text, with one message whether they exist or not. */
static void
test_storage_libvirt__import_checks_the_path_before_the_file_system(void **state)
{
    struct fixture *f = *state;
    char outside[PATH_MAX + 16], missing[PATH_MAX + 16], want[2 * PATH_MAX + 64];
    const char *paths[4];
    size_t i;
    struct st_error err;

    ensure(f);
    write_secret(f, outside, sizeof(outside));
    snprintf(missing, sizeof(missing), "%s/missing.img", f->outside_dir);
    paths[0] = outside;
    paths[1] = missing;
    paths[2] = "relative/x.img";
    paths[3] = "/";
    for (i = 0; i < ST_ARRAY_LEN(paths); i++) {
        assert_import_invalid(f, paths[i], &err);
        snprintf(want, sizeof(want), "source_path '%s' is not inside the import directory '%s'",
                 paths[i], f->import_dir);
        assert_string_equal(err.msg, want);
    }
    assert_no_vol(f, "img-x");
}

/* The file actually opened is checked: links inside the directory cannot lead out. */
static void
test_storage_libvirt__import_checks_the_file_opened(void **state)
{
    struct fixture *f = *state;
    char outside[PATH_MAX + 16], link[PATH_MAX + 16], via[PATH_MAX + 32], inner[PATH_MAX + 16];
    struct storage_vol_info out;
    struct st_error err;

    ensure(f);
    write_secret(f, outside, sizeof(outside));
    snprintf(link, sizeof(link), "%s/dir", f->import_dir);
    assert_int_equal(symlink(f->outside_dir, link), 0);
    snprintf(via, sizeof(via), "%s/dir/secret.img", f->import_dir);
    assert_import_invalid(f, via, &err);
    assert_non_null(strstr(err.msg, "is not inside the import directory"));
    assert_no_vol(f, "img-x");

    /* A link that stays inside is fine. */
    snprintf(inner, sizeof(inner), "%s/real.img", f->import_dir);
    write_file(inner, "data", 4);
    snprintf(link, sizeof(link), "%s/alias.img", f->import_dir);
    assert_int_equal(symlink("real.img", link), 0);
    assert_int_equal(storage_import(&f->st, f->pool, "img-y", link, &out, &err), 0);
    assert_int_equal(out.capacity, 4);
}

/* A large, mostly empty image is copied by its data extents only. */
static void
test_storage_libvirt__import_copies_sparse_files_quickly(void **state)
{
    struct fixture *f = *state;
    const uint64_t size = 64 * GIB;
    const uint64_t marks[] = {0, 17 * GIB + 12345, size - 1};
    char src[PATH_MAX + 16], got;
    struct storage_vol_info out;
    struct stat st;
    int64_t t0;
    size_t i;
    int fd;
    struct st_error err;

    ensure(f);
    snprintf(src, sizeof(src), "%s/sparse.raw", f->import_dir);
    fd = open(src, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)size), 0);
    for (i = 0; i < ST_ARRAY_LEN(marks); i++)
        assert_int_equal(pwrite(fd, "\x5a", 1, (off_t)marks[i]), 1);
    close(fd);
    t0 = st_monotonic_ms();
    assert_int_equal(storage_import(&f->st, f->pool, "img-s", src, &out, &err), 0);
    assert_true(st_monotonic_ms() - t0 < 5000);
    assert_int_equal(out.capacity, size);
    assert_true(out.allocation < 64 * 1024 * 1024);
    assert_int_equal(stat(out.path, &st), 0);
    assert_int_equal((uint64_t)st.st_size, size);
    fd = open(out.path, O_RDONLY);
    assert_true(fd >= 0);
    for (i = 0; i < ST_ARRAY_LEN(marks); i++) {
        assert_int_equal(pread(fd, &got, 1, (off_t)marks[i]), 1);
        assert_int_equal(got, 0x5a);
        assert_int_equal(pread(fd, &got, 1, (off_t)marks[i] - (marks[i] ? 1 : -1)), 1);
        assert_int_equal(got, 0);
    }
    close(fd);
}

/* Deleting is not repeated after a lost connection; reading is. */
static void
test_storage_libvirt__lost_connection_retries_only_reads(void **state)
{
    struct fixture *f = *state;
    struct storage_vol_info out;
    struct st_error err;

    ensure(f);
    assert_int_equal(
        storage_clone_overlay(&f->st, f->pool, "v.qcow2", "/b.img", "raw", GIB, &out, &err), 0);
    libvirt_conn_fault_lose(f->lc, 1);
    assert_int_equal(storage_info(&f->st, f->pool, "v.qcow2", &out, &err), 0);
    libvirt_conn_fault_lose(f->lc, 1);
    assert_int_equal(storage_remove(&f->st, f->pool, "v.qcow2", &err), -1);
    assert_int_equal(err.code, ST_ERR_UNAVAILABLE);
    assert_non_null(strstr(err.msg, "libvirt connection was lost during volume delete; it may or "
                                    "may not have happened"));
    assert_no_vol(f, "v.qcow2"); /* it did happen */

    libvirt_conn_fault_lose(f->lc, 1);
    assert_int_equal(
        storage_clone_overlay(&f->st, f->pool, "w.qcow2", "/b.img", "raw", GIB, &out, &err), -1);
    assert_int_equal(err.code, ST_ERR_UNAVAILABLE);
    assert_non_null(strstr(err.msg, "lost during volume create"));
    assert_int_equal(storage_info(&f->st, f->pool, "w.qcow2", &out, &err), 0);
}

/* ---- list_volumes ---- */

static bool
names_have(char **names, size_t n, const char *want)
{
    size_t i;

    for (i = 0; i < n; i++) {
        if (strcmp(names[i], want) == 0)
            return true;
    }
    return false;
}

static void
test_storage_libvirt__list_volumes_names_every_volume(void **state)
{
    struct fixture *f = *state;
    struct storage_vol_info out;
    char **names = (char **)&out;
    char src[PATH_MAX + 16];
    size_t n = 9;
    struct st_error err;

    ensure(f);
    assert_int_equal(storage_list_volumes(&f->st, f->pool, &names, &n, &err), 0);
    assert_int_equal(n, 0);
    storage_names_free(names, n);
    assert_int_equal(
        storage_clone_overlay(&f->st, f->pool, "vm-1.qcow2", "/b.img", "raw", GIB, &out, &err), 0);
    assert_int_equal(
        storage_clone_overlay(&f->st, f->pool, "a&b<'c'>.qcow2", "/b.img", "raw", GIB, &out, &err),
        0);
    snprintf(src, sizeof(src), "%s/x.img", f->import_dir);
    write_file(src, "x", 1);
    assert_int_equal(storage_import(&f->st, f->pool, "img-1", src, &out, &err), 0);
    assert_int_equal(storage_list_volumes(&f->st, f->pool, &names, &n, &err), 0);
    assert_int_equal(n, 3);
    assert_true(names_have(names, n, "vm-1.qcow2"));
    assert_true(names_have(names, n, "a&b<'c'>.qcow2"));
    assert_true(names_have(names, n, "img-1"));
    storage_names_free(names, n);
    storage_names_free(NULL, 0);
}

struct refresh_count {
    pthread_mutex_t lock;
    char pool[32];
    int n;
};

static void
count_refresh(virConnectPtr conn, virStoragePoolPtr pool, void *opaque)
{
    struct refresh_count *c = opaque;

    (void)conn;
    pthread_mutex_lock(&c->lock);
    if (strcmp(virStoragePoolGetName(pool), c->pool) == 0)
        c->n++;
    pthread_mutex_unlock(&c->lock);
}

/* libvirt's free callback: it holds the counter no more. */
static void
free_refresh_count(void *opaque)
{
    struct refresh_count *c = opaque;

    pthread_mutex_destroy(&c->lock);
    free(c);
}

static int
refreshes(struct refresh_count *c)
{
    int n;

    pthread_mutex_lock(&c->lock);
    n = c->n;
    pthread_mutex_unlock(&c->lock);
    return n;
}

/*
 * Listing refreshes the pool first.  The test driver's refresh rescans
 * nothing (its volumes live in memory), so what is checked here is that
 * the refresh happens: libvirt reports each one as a pool event.
 */
static void
test_storage_libvirt__list_volumes_refreshes_the_pool(void **state)
{
    struct fixture *f = *state;
    struct refresh_count *c = st_xcalloc(1, sizeof(*c));
    char **names = NULL;
    int64_t until;
    size_t n = 0;
    int id;
    struct st_error err;

    pthread_mutex_init(&c->lock, NULL);
    st_strlcpy(c->pool, f->pool, sizeof(c->pool));
    ensure(f);
    id = virConnectStoragePoolEventRegisterAny(keeper, NULL, VIR_STORAGE_POOL_EVENT_ID_REFRESH,
                                               VIR_STORAGE_POOL_EVENT_CALLBACK(count_refresh), c,
                                               free_refresh_count);
    assert_true(id >= 0);
    assert_int_equal(storage_list_volumes(&f->st, f->pool, &names, &n, &err), 0);
    storage_names_free(names, n);
    until = st_monotonic_ms() + 5000;
    while (refreshes(c) < 1 && st_monotonic_ms() < until)
        st_sleep_ms(10);
    n = (size_t)refreshes(c);
    /* Frees c, now or when a dispatch in progress ends. */
    assert_int_equal(virConnectStoragePoolEventDeregisterAny(keeper, id), 0);
    assert_int_equal(n, 1);
}

static void
test_storage_libvirt__list_volumes_errors(void **state)
{
    struct fixture *f = *state;
    struct storage_libvirt_config cfg = {.import_dir = f->import_dir};
    struct storage_vol_info out;
    struct libvirt_conn *lc;
    struct storage st;
    char **names = (char **)&cfg;
    size_t n = 7;
    struct st_error err;

    assert_int_equal(storage_list_volumes(&f->st, "no-such-pool", &names, &n, &err), -1);
    assert_int_equal(err.code, ST_ERR_NOT_FOUND);
    assert_non_null(strstr(err.msg, "no-such-pool"));
    assert_ptr_equal(names, (char **)&cfg); /* untouched on failure */
    assert_int_equal(n, 7);

    /* A read: run again on a new connection after a loss. */
    ensure(f);
    assert_int_equal(
        storage_clone_overlay(&f->st, f->pool, "v.qcow2", "/b.img", "raw", GIB, &out, &err), 0);
    libvirt_conn_fault_lose(f->lc, 1);
    assert_int_equal(storage_list_volumes(&f->st, f->pool, &names, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(names[0], "v.qcow2");
    storage_names_free(names, n);

    lc = libvirt_conn_new(DEAD_URI);
    assert_int_equal(storage_libvirt_open(lc, &cfg, &st, &err), 0);
    assert_int_equal(storage_list_volumes(&st, f->pool, &names, &n, &err), -1);
    assert_int_equal(err.code, ST_ERR_UNAVAILABLE);
    storage_close(&st);
    libvirt_conn_close(lc);
}

/*
 * Against a real daemon only: set STRATUS_TEST_STORAGE_URI (for example
 * qemu:///system) to see a file put into the pool's directory behind
 * libvirt's back listed after the refresh; the test driver cannot show it.
 * The pool is transient and goes with the test.
 */
static void
test_storage_libvirt__list_volumes_sees_files_made_behind_libvirts_back(void **state)
{
    struct fixture *f = *state;
    const char *uri = getenv("STRATUS_TEST_STORAGE_URI");
    struct storage_libvirt_config cfg = {.import_dir = f->import_dir};
    ST_AUTOFREE char *xml = NULL;
    char path[PATH_MAX + 32], pool[40];
    virStoragePoolPtr p;
    virConnectPtr raw;
    struct libvirt_conn *lc;
    struct storage st;
    char **names = NULL;
    size_t n = 0;
    struct st_error err;

    if (!uri || !*uri)
        skip();
    raw = virConnectOpen(uri);
    assert_non_null(raw);
    /* The daemon may run as another user: it must reach the directory. */
    assert_int_equal(chmod(f->base, 0755), 0);
    snprintf(pool, sizeof(pool), "st-unit-%u-%d", pool_seq, (int)getpid());
    xml = st_xasprintf("<pool type='dir'><name>%s</name><target><path>%s</path></target></pool>",
                       pool, f->pool_dir);
    p = virStoragePoolCreateXML(raw, xml, 0);
    assert_non_null(p);
    lc = libvirt_conn_new(uri);
    assert_int_equal(storage_libvirt_open(lc, &cfg, &st, &err), 0);
    snprintf(path, sizeof(path), "%s/behind.raw", f->pool_dir);
    write_file(path, "data", 4);
    assert_int_equal(storage_list_volumes(&st, pool, &names, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(names[0], "behind.raw");
    storage_names_free(names, n);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(storage_list_volumes(&st, pool, &names, &n, &err), 0);
    assert_int_equal(n, 0);
    storage_names_free(names, n);
    storage_close(&st);
    libvirt_conn_close(lc);
    virStoragePoolDestroy(p);
    virStoragePoolFree(p);
    virConnectClose(raw);
}

static void
bare_close(void *self)
{
    (void)self;
}

static void
test_storage_libvirt__fault_wrapper_forwards_list_volumes(void **state)
{
    struct fixture *f = *state;
    static const struct storage_ops bare_ops = {.close = bare_close};
    struct storage bare = {.ops = &bare_ops};
    struct storage_vol_info out;
    struct fault_storage w, wb;
    char **names = NULL;
    size_t n = 0;
    struct st_error err;

    ensure(f);
    assert_int_equal(
        storage_clone_overlay(&f->st, f->pool, "v.qcow2", "/b.img", "raw", GIB, &out, &err), 0);
    fault_storage_init(&w, &f->st);
    fault_storage_fail(&w, FAULT_ST_LIST_VOLUMES, 2, ST_ERR_UNAVAILABLE);
    assert_int_equal(storage_list_volumes(&w.iface, f->pool, &names, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(names[0], "v.qcow2");
    storage_names_free(names, n);
    names = NULL;
    assert_int_equal(storage_list_volumes(&w.iface, f->pool, &names, &n, &err), -1);
    assert_int_equal(err.code, ST_ERR_UNAVAILABLE);
    assert_non_null(strstr(err.msg, "injected fault: list_volumes call 2"));
    assert_null(names);
    assert_int_equal(fault_storage_calls(&w, FAULT_ST_LIST_VOLUMES), 2);

    fault_storage_init(&wb, &bare);
    assert_int_equal(storage_list_volumes(&wb.iface, f->pool, &names, &n, &err), -1);
    assert_int_equal(err.code, ST_ERR_UNSUPPORTED);
    assert_int_equal(fault_storage_calls(&wb, FAULT_ST_LIST_VOLUMES), 1);
}

#define T(name) cmocka_unit_test_setup_teardown(test_storage_libvirt__##name, setup, teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(ensure_pool_is_idempotent),
        T(ensure_pool_conflicts_on_another_path),
        T(ensure_pool_starts_an_inactive_pool),
        T(clone_overlay_info_remove),
        T(clone_overlay_escapes_xml),
        T(unknown_pool_is_not_found),
        T(import_raw_copies_the_bytes),
        T(import_probes_a_qcow2_header),
        T(import_names_other_formats),
        T(import_refuses_files_outside_the_import_dir),
        T(info_of_unknown_volume_is_not_found),
        T(unreachable_is_unavailable),
        T(import_refuses_qcow2_that_reads_elsewhere),
        T(import_checks_the_path_before_the_file_system),
        T(import_checks_the_file_opened),
        T(import_copies_sparse_files_quickly),
        T(lost_connection_retries_only_reads),
        T(list_volumes_names_every_volume),
        T(list_volumes_refreshes_the_pool),
        T(list_volumes_errors),
        T(list_volumes_sees_files_made_behind_libvirts_back),
        T(fault_wrapper_forwards_list_volumes),
    };

    return cmocka_run_group_tests(tests, keeper_group_setup, keeper_group_teardown);
}
