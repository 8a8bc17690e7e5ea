/*
 * test_models.c - decoding, validation and encoding of the models.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "models/common.h"
#include "models/flavor.h"
#include "models/image.h"
#include "models/vm.h"
#include "util/mem.h"

#define IMG "0b7c4a1e-5d3f-4a2b-9c8d-1e2f3a4b5c6d"
#define FLV "6f1e2d3c-4b5a-4978-8a6b-5c4d3e2f1a0b"
#define VMID "11111111-2222-4333-8444-555555555555"
#define OWNER "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
#define VM_OK_PREFIX "{\"name\":\"web-01\",\"image_id\":\"" IMG "\","

enum kind { K_VM_CREATE, K_VM_PATCH, K_IMAGE, K_FLAVOR };

struct bad_case {
    enum kind kind;
    const char *json;
    size_t flags; /* extra json_loads flags */
    const char *frag;
};

static const struct bad_case bad_cases[] = {
    /* the body itself */
    {K_VM_CREATE, "[]", 0, "request body must be a JSON object"},
    {K_VM_CREATE, "42", 0, "request body must be a JSON object"},
    {K_VM_CREATE, "\"vm\"", 0, "request body must be a JSON object"},
    {K_VM_CREATE, "null", 0, "request body must be a JSON object"},
    {K_VM_PATCH, "[1]", 0, "request body must be a JSON object"},
    {K_IMAGE, "true", 0, "request body must be a JSON object"},
    {K_FLAVOR, "null", 0, "request body must be a JSON object"},
    /* unknown members */
    {K_VM_CREATE, VM_OK_PREFIX "\"flavor_id\":\"" FLV "\",\"foo\":1}", 0, "unknown field 'foo'"},
    {K_VM_CREATE, "{\"na\\u0001me<\":1}", 0, "unknown field 'na\\x01me<'"},
    {K_VM_CREATE, "{\"it's\":1}", 0, "unknown field 'it\\x27s'"},
    {K_VM_CREATE, "{\"\\u00e9\":1}", 0, "unknown field '\\xC3\\xA9'"},
    {K_VM_CREATE, VM_OK_PREFIX "\"flavor_id\":\"" FLV "\",\"id\":\"" VMID "\"}", 0,
     "unknown field 'id'"},
    {K_IMAGE, "{\"name\":\"a\",\"source_path\":\"/a\",\"format\":\"raw\",\"checksum\":\"x\"}", 0,
     "unknown field 'checksum'"},
    {K_FLAVOR, "{\"name\":\"f\",\"vcpus\":1,\"memory_mib\":64,\"disk_gib\":1,\"flavor_id\":\"x\"}",
     0, "unknown field 'flavor_id'"},
    {K_VM_PATCH, "{\"status\":\"running\"}", 0, "unknown field 'status'"},
    {K_VM_PATCH, "{\"name\":\"a\",\"owner_id\":\"" OWNER "\"}", 0, "unknown field 'owner_id'"},
    /* names */
    {K_VM_CREATE, "{\"image_id\":\"" IMG "\",\"flavor_id\":\"" FLV "\"}", 0,
     "field 'name' is required"},
    {K_VM_CREATE, "{\"name\":5,\"image_id\":\"" IMG "\",\"flavor_id\":\"" FLV "\"}", 0,
     "field 'name' must be a string"},
    {K_VM_CREATE, "{\"name\":null,\"image_id\":\"" IMG "\",\"flavor_id\":\"" FLV "\"}", 0,
     "field 'name' must be a string"},
    {K_VM_CREATE, "{\"name\":[\"a\"],\"image_id\":\"" IMG "\",\"flavor_id\":\"" FLV "\"}", 0,
     "field 'name' must be a string"},
    {K_VM_CREATE, "{\"name\":\"\",\"image_id\":\"" IMG "\",\"flavor_id\":\"" FLV "\"}", 0,
     "field 'name' must not be empty"},
    {K_VM_CREATE, "{\"name\":\"web<1>\",\"image_id\":\"" IMG "\",\"flavor_id\":\"" FLV "\"}", 0,
     "'web<1>' has '<' at position 4"},
    {K_VM_CREATE, "{\"name\":\"it's\",\"image_id\":\"" IMG "\",\"flavor_id\":\"" FLV "\"}", 0,
     "has \"'\" at position 3"},
    {K_VM_CREATE, "{\"name\":\"../etc\",\"image_id\":\"" IMG "\",\"flavor_id\":\"" FLV "\"}", 0,
     "field 'name' must start with a letter or a digit, got '.'"},
    {K_VM_CREATE, "{\"name\":\"a/b\",\"image_id\":\"" IMG "\",\"flavor_id\":\"" FLV "\"}", 0,
     "has '/' at position 2"},
    {K_VM_CREATE, "{\"name\":\"a b\",\"image_id\":\"" IMG "\",\"flavor_id\":\"" FLV "\"}", 0,
     "has ' ' at position 2"},
    {K_VM_CREATE, "{\"name\":\"a\\nb\",\"image_id\":\"" IMG "\",\"flavor_id\":\"" FLV "\"}", 0,
     "has code 0x0A at position 2"},
    {K_VM_CREATE,
     "{\"name\":\"\\u00e9t\\u00e9\",\"image_id\":\"" IMG "\",\"flavor_id\":\"" FLV "\"}", 0,
     "must start with a letter or a digit, got code 0xC3"},
    {K_VM_CREATE, "{\"name\":\"-x\",\"image_id\":\"" IMG "\",\"flavor_id\":\"" FLV "\"}", 0,
     "got '-'"},
    {K_VM_CREATE, "{\"name\":\"a\\u0000b\",\"image_id\":\"" IMG "\",\"flavor_id\":\"" FLV "\"}",
     JSON_ALLOW_NUL, "field 'name' must not contain NUL characters"},
    {K_VM_CREATE,
     "{\"name\":\"a123456789012345678901234567890123456789012345678901234567890123\",\"image_id\":"
     "\"" IMG "\",\"flavor_id\":\"" FLV "\"}",
     0, "field 'name' is too long: at most 63 characters, got 64"},
    {K_VM_PATCH, "{\"name\":\"<x>\"}", 0, "got '<'"},
    {K_VM_PATCH, "{\"name\":null}", 0, "field 'name' must be a string"},
    {K_IMAGE, "{\"name\":\"a;b\",\"source_path\":\"/a\",\"format\":\"raw\"}", 0, "has ';'"},
    {K_FLAVOR, "{\"vcpus\":1,\"memory_mib\":64,\"disk_gib\":1}", 0, "field 'name' is required"},
    /* ids */
    {K_VM_CREATE, "{\"name\":\"a\",\"flavor_id\":\"" FLV "\"}", 0, "field 'image_id' is required"},
    {K_VM_CREATE, "{\"name\":\"a\",\"image_id\":\"not-a-uuid\",\"flavor_id\":\"" FLV "\"}", 0,
     "field 'image_id' must be a UUID, got 'not-a-uuid'"},
    {K_VM_CREATE, "{\"name\":\"a\",\"image_id\":12,\"flavor_id\":\"" FLV "\"}", 0,
     "field 'image_id' must be a string"},
    {K_VM_CREATE, "{\"name\":\"a\",\"image_id\":\"" IMG "x\",\"flavor_id\":\"" FLV "\"}", 0,
     "field 'image_id' must be a UUID, got '" IMG "x'"},
    {K_VM_CREATE, "{\"name\":\"a\",\"image_id\":\"0b7c4a1e\\u00005d3f-4a2b-9c8d-1e2f3a4b5c6d\"}",
     JSON_ALLOW_NUL, "field 'image_id' must not contain NUL characters"},
    {K_VM_CREATE, "{\"name\":\"a\",\"image_id\":\"0b7c4a1e-5d3f-4a2b-9c8d-1e2f3a4b5c6g\"}", 0,
     "must be a UUID"},
    {K_VM_CREATE, VM_OK_PREFIX "\"flavor_id\":\"xyz'\"}", 0,
     "field 'flavor_id' must be a UUID, got 'xyz\\x27'"},
    {K_VM_CREATE, VM_OK_PREFIX "\"flavor_id\":null}", 0, "field 'flavor_id' must be a string"},
    /* sizing forms */
    {K_VM_CREATE, VM_OK_PREFIX "\"flavor_id\":\"" FLV "\",\"vcpus\":2}", 0,
     "give either field 'flavor_id' or fields 'vcpus', 'memory_mib' and 'disk_gib', not both"},
    {K_VM_CREATE,
     VM_OK_PREFIX "\"flavor_id\":\"" FLV "\",\"vcpus\":2,\"memory_mib\":512,\"disk_gib\":10}", 0,
     "not both"},
    {K_VM_CREATE, "{\"name\":\"a\",\"image_id\":\"" IMG "\"}", 0,
     "field 'flavor_id' is required, or else fields 'vcpus', 'memory_mib' and 'disk_gib'"},
    {K_VM_CREATE, VM_OK_PREFIX "\"vcpus\":2}", 0, "field 'memory_mib' is required when sizing"},
    {K_VM_CREATE, VM_OK_PREFIX "\"vcpus\":2,\"memory_mib\":512}", 0,
     "field 'disk_gib' is required when sizing"},
    {K_VM_CREATE, VM_OK_PREFIX "\"memory_mib\":512,\"disk_gib\":5}", 0,
     "field 'vcpus' is required when sizing"},
    {K_VM_CREATE, VM_OK_PREFIX "\"disk_gib\":5}", 0, "field 'vcpus' is required"},
    /* integers */
    {K_VM_CREATE, VM_OK_PREFIX "\"vcpus\":500,\"memory_mib\":512,\"disk_gib\":5}", 0,
     "field 'vcpus' must be between 1 and 128, got 500"},
    {K_VM_CREATE, VM_OK_PREFIX "\"vcpus\":0,\"memory_mib\":512,\"disk_gib\":5}", 0,
     "field 'vcpus' must be between 1 and 128, got 0"},
    {K_VM_CREATE, VM_OK_PREFIX "\"vcpus\":-1,\"memory_mib\":512,\"disk_gib\":5}", 0,
     "field 'vcpus' must be between 1 and 128, got -1"},
    {K_VM_CREATE, VM_OK_PREFIX "\"vcpus\":2.0,\"memory_mib\":512,\"disk_gib\":5}", 0,
     "field 'vcpus' must be an integer"},
    {K_VM_CREATE, VM_OK_PREFIX "\"vcpus\":true,\"memory_mib\":512,\"disk_gib\":5}", 0,
     "field 'vcpus' must be an integer"},
    {K_VM_CREATE, VM_OK_PREFIX "\"vcpus\":\"2\",\"memory_mib\":512,\"disk_gib\":5}", 0,
     "field 'vcpus' must be an integer"},
    {K_VM_CREATE, VM_OK_PREFIX "\"vcpus\":1e30,\"memory_mib\":512,\"disk_gib\":5}", 0,
     "field 'vcpus' must be an integer"},
    /* jansson refuses this integer unless it may decode it as a real */
    {K_VM_CREATE, VM_OK_PREFIX "\"vcpus\":99999999999999999999,\"memory_mib\":512,\"disk_gib\":5}",
     JSON_DECODE_INT_AS_REAL, "field 'vcpus' must be an integer"},
    {K_VM_CREATE, VM_OK_PREFIX "\"vcpus\":9223372036854775807,\"memory_mib\":512,\"disk_gib\":5}",
     0, "field 'vcpus' must be between 1 and 128, got 9223372036854775807"},
    {K_VM_CREATE, VM_OK_PREFIX "\"vcpus\":-9223372036854775808,\"memory_mib\":512,\"disk_gib\":5}",
     0, "got -9223372036854775808"},
    /* would wrap to 1 if narrowed to unsigned before the range check */
    {K_VM_CREATE, VM_OK_PREFIX "\"vcpus\":4294967297,\"memory_mib\":512,\"disk_gib\":5}", 0,
     "got 4294967297"},
    {K_VM_CREATE, VM_OK_PREFIX "\"vcpus\":[],\"memory_mib\":512,\"disk_gib\":5}", 0,
     "field 'vcpus' must be an integer"},
    {K_VM_CREATE, VM_OK_PREFIX "\"vcpus\":{},\"memory_mib\":512,\"disk_gib\":5}", 0,
     "field 'vcpus' must be an integer"},
    {K_VM_CREATE, VM_OK_PREFIX "\"vcpus\":2,\"memory_mib\":15,\"disk_gib\":5}", 0,
     "field 'memory_mib' must be between 16 and 4194304, got 15"},
    {K_VM_CREATE, VM_OK_PREFIX "\"vcpus\":2,\"memory_mib\":4194305,\"disk_gib\":5}", 0,
     "got 4194305"},
    {K_VM_CREATE, VM_OK_PREFIX "\"vcpus\":2,\"memory_mib\":512,\"disk_gib\":0}", 0,
     "field 'disk_gib' must be between 1 and 65536, got 0"},
    {K_VM_CREATE, VM_OK_PREFIX "\"vcpus\":2,\"memory_mib\":512,\"disk_gib\":65537}", 0,
     "got 65537"},
    {K_VM_CREATE, VM_OK_PREFIX "\"vcpus\":2,\"memory_mib\":512,\"disk_gib\":null}", 0,
     "field 'disk_gib' must be an integer"},
    {K_VM_CREATE, VM_OK_PREFIX "\"vcpus\":2,\"memory_mib\":-1e30,\"disk_gib\":5}", 0,
     "field 'memory_mib' must be an integer"},
    /* patch */
    {K_VM_PATCH, "{}", 0, "nothing to change: give name, vcpus or memory_mib"},
    {K_VM_PATCH, "{\"disk_gib\":20}", 0, "field 'disk_gib' cannot be changed"},
    {K_VM_PATCH, "{\"name\":\"a\",\"disk_gib\":20}", 0, "field 'disk_gib' cannot be changed"},
    {K_VM_PATCH, "{\"image_id\":\"" IMG "\"}", 0, "field 'image_id' cannot be changed"},
    {K_VM_PATCH, "{\"flavor_id\":\"" FLV "\"}", 0, "field 'flavor_id' cannot be changed"},
    {K_VM_PATCH, "{\"vcpus\":0}", 0, "field 'vcpus' must be between 1 and 128, got 0"},
    {K_VM_PATCH, "{\"vcpus\":129}", 0, "got 129"},
    {K_VM_PATCH, "{\"memory_mib\":\"1024\"}", 0, "field 'memory_mib' must be an integer"},
    {K_VM_PATCH, "{\"memory_mib\":1e30}", 0, "field 'memory_mib' must be an integer"},
    {K_VM_PATCH, "{\"memory_mib\":-4096}", 0, "got -4096"},
    /* image */
    {K_IMAGE, "{\"source_path\":\"/a\",\"format\":\"raw\"}", 0, "field 'name' is required"},
    {K_IMAGE, "{\"name\":\"a\",\"format\":\"raw\"}", 0, "field 'source_path' is required"},
    {K_IMAGE, "{\"name\":\"a\",\"source_path\":\"/a\"}", 0, "field 'format' is required"},
    {K_IMAGE, "{\"name\":\"a\",\"source_path\":\"rel/x.qcow2\",\"format\":\"raw\"}", 0,
     "field 'source_path' must be an absolute path starting with '/', got 'rel/x.qcow2'"},
    {K_IMAGE, "{\"name\":\"a\",\"source_path\":\"../x\",\"format\":\"raw\"}", 0,
     "must be an absolute path"},
    {K_IMAGE, "{\"name\":\"a\",\"source_path\":\"\",\"format\":\"raw\"}", 0,
     "field 'source_path' must not be empty"},
    {K_IMAGE, "{\"name\":\"a\",\"source_path\":7,\"format\":\"raw\"}", 0,
     "field 'source_path' must be a string"},
    {K_IMAGE, "{\"name\":\"a\",\"source_path\":\"/a\\u0000b\",\"format\":\"raw\"}", JSON_ALLOW_NUL,
     "field 'source_path' must not contain NUL characters"},
    {K_IMAGE, "{\"name\":\"a\",\"source_path\":\"/a\",\"format\":\"vmdk\"}", 0,
     "field 'format' must be 'qcow2' or 'raw', got 'vmdk'"},
    {K_IMAGE, "{\"name\":\"a\",\"source_path\":\"/a\",\"format\":\"QCOW2\"}", 0, "got 'QCOW2'"},
    {K_IMAGE, "{\"name\":\"a\",\"source_path\":\"/a\",\"format\":\"\"}", 0, "got ''"},
    {K_IMAGE, "{\"name\":\"a\",\"source_path\":\"/a\",\"format\":1}", 0,
     "field 'format' must be a string"},
    /* flavor */
    {K_FLAVOR, "{\"name\":\"f\",\"memory_mib\":64,\"disk_gib\":1}", 0, "field 'vcpus' is required"},
    {K_FLAVOR, "{\"name\":\"f\",\"vcpus\":1,\"disk_gib\":1}", 0, "field 'memory_mib' is required"},
    {K_FLAVOR, "{\"name\":\"f\",\"vcpus\":1,\"memory_mib\":64}", 0, "field 'disk_gib' is required"},
    {K_FLAVOR, "{\"name\":\"f\",\"vcpus\":129,\"memory_mib\":64,\"disk_gib\":1}", 0,
     "field 'vcpus' must be between 1 and 128, got 129"},
    {K_FLAVOR, "{\"name\":\"f\",\"vcpus\":1,\"memory_mib\":1.5,\"disk_gib\":1}", 0,
     "field 'memory_mib' must be an integer"},
    {K_FLAVOR, "{\"name\":\"f\",\"vcpus\":1,\"memory_mib\":64,\"disk_gib\":-5}", 0,
     "field 'disk_gib' must be between 1 and 65536, got -5"},
    {K_FLAVOR, "{\"name\":\"f\",\"vcpus\":false,\"memory_mib\":64,\"disk_gib\":1}", 0,
     "field 'vcpus' must be an integer"},
};

/* Every decoder writes its output here; filled with a pattern to catch partial writes. */
union any_req {
    struct vm_create_req vm_create;
    struct vm_patch_req vm_patch;
    struct image_create_req image;
    struct flavor_create_req flavor;
};

static int
decode(enum kind kind, const json_t *body, union any_req *out, struct st_error *err)
{
    switch (kind) {
    case K_VM_CREATE:
        return vm_create_req_decode(body, &out->vm_create, err);
    case K_VM_PATCH:
        return vm_patch_req_decode(body, &out->vm_patch, err);
    case K_IMAGE:
        return image_create_req_decode(body, &out->image, err);
    case K_FLAVOR:
        return flavor_create_req_decode(body, &out->flavor, err);
    }
    fail_msg("unknown kind %d", (int)kind);
    return 0;
}

static json_t *
load(const char *text, size_t flags)
{
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_DECODE_ANY | flags, &jerr);

    if (!j)
        fail_msg("test body does not parse: %s: %s", jerr.text, text);
    return j;
}

/* Decode @text as @kind; expect ST_ERR_INVALID with @frag in the message. */
static void
expect_bad(enum kind kind, const char *text, size_t flags, const char *frag)
{
    union any_req out, pristine;
    struct st_error err;
    json_t *body = load(text, flags);
    int rc;

    memset(&out, 0xAB, sizeof(out));
    memcpy(&pristine, &out, sizeof(out));
    st_error_clear(&err);
    rc = decode(kind, body, &out, &err);
    json_decref(body);
    if (rc != -1 || err.code != ST_ERR_INVALID || !strstr(err.msg, frag))
        fail_msg("body %.200s\n  rc=%d code=%s msg=\"%s\"\n  wanted a message with \"%s\"", text,
                 rc, st_err_code_name(err.code), err.msg, frag);
    /* Out-parameters are written only on success. */
    assert_memory_equal(&out, &pristine, sizeof(out));
}

static void
expect_good(enum kind kind, const char *text, union any_req *out)
{
    struct st_error err;
    json_t *body = load(text, 0);
    int rc;

    st_error_clear(&err);
    memset(out, 0xAB, sizeof(*out));
    rc = decode(kind, body, out, &err);
    json_decref(body);
    if (rc != 0)
        fail_msg("body %.200s refused: %s", text, err.msg);
}

static void
test_models__bad_bodies_are_refused_with_precise_messages(void **state)
{
    size_t i;

    (void)state;
    assert_true(ST_ARRAY_LEN(bad_cases) >= 40);
    for (i = 0; i < ST_ARRAY_LEN(bad_cases); i++)
        expect_bad(bad_cases[i].kind, bad_cases[i].json, bad_cases[i].flags, bad_cases[i].frag);
}

/* Build {"<key>": <value>, ...rest} with a value of @n copies of @c. */
static char *
body_with_long(const char *before, char c, size_t n, const char *after)
{
    char *run = st_xcalloc(n + 1, 1);
    char *s;

    memset(run, c, n);
    s = st_xasprintf("%s%s%s", before, run, after);
    free(run);
    return s;
}

static void
test_models__huge_strings_are_refused_and_quoted_short(void **state)
{
    char *text;

    (void)state;
    text = body_with_long("{\"name\":\"", 'a', 10240, "\",\"image_id\":\"" IMG "\"}");
    expect_bad(K_VM_CREATE, text, 0, "field 'name' is too long: at most 63 characters, got 10240");
    free(text);

    text = body_with_long("{\"", 'k', 10240, "\":1}");
    expect_bad(K_VM_CREATE, text, 0, "unknown field 'kkkkkkkkkkkkkkkk");
    {
        struct st_error err;
        json_t *body = load(text, 0);
        struct vm_create_req req;

        st_error_clear(&err);
        assert_int_equal(vm_create_req_decode(body, &req, &err), -1);
        json_decref(body);
        /* The key is cut to 64 bytes and marked as cut. */
        assert_non_null(strstr(err.msg, "...'"));
        assert_true(strlen(err.msg) < 100);
    }
    free(text);

    text = body_with_long("{\"name\":\"a\",\"image_id\":\"", '9', 10240, "\"}");
    expect_bad(K_VM_CREATE, text, 0, "field 'image_id' must be a UUID, got '9999");
    free(text);

    text =
        body_with_long("{\"name\":\"a\",\"format\":\"raw\",\"source_path\":\"/", 'p', 4095, "\"}");
    expect_bad(K_IMAGE, text, 0, "field 'source_path' is too long: at most 4095 bytes, got 4096");
    free(text);

    text =
        body_with_long("{\"name\":\"a\",\"format\":\"raw\",\"source_path\":\"", 'p', 10000, "\"}");
    /* Too long to be worth quoting back. */
    expect_bad(K_IMAGE, text, 0, "field 'source_path' is too long");
    free(text);

    text = body_with_long("{\"name\":\"a\",\"format\":\"raw\",\"source_path\":\"", 'p', 100, "\"}");
    expect_bad(K_IMAGE, text, 0, "must be an absolute path starting with '/'");
    free(text);
}

static void
test_models__vm_create_accepts_flavor_form(void **state)
{
    union any_req out;

    (void)state;
    expect_good(K_VM_CREATE, VM_OK_PREFIX "\"flavor_id\":\"" FLV "\"}", &out);
    assert_string_equal(out.vm_create.name, "web-01");
    assert_string_equal(out.vm_create.image_id, IMG);
    assert_string_equal(out.vm_create.flavor_id, FLV);
    assert_int_equal(out.vm_create.vcpus, 0);
    assert_int_equal(out.vm_create.memory_mib, 0);
    assert_int_equal(out.vm_create.disk_gib, 0);
}

static void
test_models__vm_create_lowers_uuid_case(void **state)
{
    union any_req out;

    (void)state;
    expect_good(K_VM_CREATE,
                "{\"name\":\"A\",\"image_id\":\"0B7C4A1E-5D3F-4A2B-9C8D-1E2F3A4B5C6D\","
                "\"flavor_id\":\"6F1E2D3C-4B5A-4978-8A6B-5C4D3E2F1A0B\"}",
                &out);
    assert_string_equal(out.vm_create.image_id, IMG);
    assert_string_equal(out.vm_create.flavor_id, FLV);
    assert_string_equal(out.vm_create.name, "A");
}

static void
test_models__vm_create_accepts_sizing_at_the_limits(void **state)
{
    union any_req out;

    (void)state;
    expect_good(K_VM_CREATE, VM_OK_PREFIX "\"vcpus\":1,\"memory_mib\":16,\"disk_gib\":1}", &out);
    assert_string_equal(out.vm_create.flavor_id, "");
    assert_int_equal(out.vm_create.vcpus, 1);
    assert_int_equal(out.vm_create.memory_mib, 16);
    assert_int_equal(out.vm_create.disk_gib, 1);

    expect_good(K_VM_CREATE,
                "{\"disk_gib\":65536,\"memory_mib\":4194304,\"vcpus\":128,"
                "\"name\":\"a123456789012345678901234567890123456789012345678901234567890._\","
                "\"image_id\":\"" IMG "\"}",
                &out);
    assert_int_equal(out.vm_create.vcpus, ST_VCPUS_MAX);
    assert_int_equal(out.vm_create.memory_mib, ST_MEMORY_MIB_MAX);
    assert_int_equal(out.vm_create.disk_gib, ST_DISK_GIB_MAX);
    assert_int_equal(strlen(out.vm_create.name), ST_NAME_MAX);
}

static void
test_models__vm_patch_takes_any_subset(void **state)
{
    union any_req out;

    (void)state;
    expect_good(K_VM_PATCH, "{\"name\":\"db.2\"}", &out);
    assert_true(out.vm_patch.has_name);
    assert_false(out.vm_patch.has_vcpus);
    assert_false(out.vm_patch.has_memory_mib);
    assert_string_equal(out.vm_patch.name, "db.2");

    expect_good(K_VM_PATCH, "{\"vcpus\":4}", &out);
    assert_false(out.vm_patch.has_name);
    assert_true(out.vm_patch.has_vcpus);
    assert_int_equal(out.vm_patch.vcpus, 4);

    expect_good(K_VM_PATCH, "{\"memory_mib\":1024}", &out);
    assert_true(out.vm_patch.has_memory_mib);
    assert_false(out.vm_patch.has_vcpus);
    assert_int_equal(out.vm_patch.memory_mib, 1024);

    expect_good(K_VM_PATCH, "{\"name\":\"x\",\"vcpus\":128,\"memory_mib\":16}", &out);
    assert_true(out.vm_patch.has_name && out.vm_patch.has_vcpus && out.vm_patch.has_memory_mib);
    assert_string_equal(out.vm_patch.name, "x");
    assert_int_equal(out.vm_patch.vcpus, 128);
    assert_int_equal(out.vm_patch.memory_mib, 16);
}

static void
test_models__image_create_accepts_both_formats(void **state)
{
    union any_req out;

    (void)state;
    expect_good(
        K_IMAGE,
        "{\"name\":\"debian-12\",\"source_path\":\"/srv/import/d.qcow2\",\"format\":\"qcow2\"}",
        &out);
    assert_string_equal(out.image.name, "debian-12");
    assert_string_equal(out.image.source_path, "/srv/import/d.qcow2");
    assert_int_equal(out.image.format, IMAGE_FORMAT_QCOW2);

    expect_good(K_IMAGE, "{\"format\":\"raw\",\"name\":\"r\",\"source_path\":\"/\"}", &out);
    assert_int_equal(out.image.format, IMAGE_FORMAT_RAW);
    assert_string_equal(out.image.source_path, "/");
}

static void
test_models__image_create_accepts_longest_path(void **state)
{
    char *text =
        body_with_long("{\"name\":\"a\",\"format\":\"raw\",\"source_path\":\"/", 'p', 4094, "\"}");
    union any_req out;

    (void)state;
    expect_good(K_IMAGE, text, &out);
    assert_int_equal(strlen(out.image.source_path), ST_PATH_BUF - 1);
    free(text);
}

static void
test_models__flavor_create_accepts_valid_body(void **state)
{
    union any_req out;

    (void)state;
    expect_good(K_FLAVOR, "{\"name\":\"m1.small\",\"vcpus\":2,\"memory_mib\":2048,\"disk_gib\":20}",
                &out);
    assert_string_equal(out.flavor.name, "m1.small");
    assert_int_equal(out.flavor.vcpus, 2);
    assert_int_equal(out.flavor.memory_mib, 2048);
    assert_int_equal(out.flavor.disk_gib, 20);
}

static void
test_models__name_rules(void **state)
{
    static const char *const good[] = {
        "a",
        "Z",
        "0",
        "web-01",
        "a.b_c-d",
        "9lives",
        "a12345678901234567890123456789012345678901234567890123456789012"};
    static const char *const bad[] = {
        "",    ".a",
        "_a",  "-a",
        "a b", "a/b",
        "a<b", "a'b",
        "ä",   "a12345678901234567890123456789012345678901234567890123456789012x"};
    struct st_error err;
    size_t i;

    (void)state;
    for (i = 0; i < ST_ARRAY_LEN(good); i++) {
        st_error_clear(&err);
        assert_true(st_name_valid(good[i]));
        assert_int_equal(st_name_check("name", good[i], &err), 0);
        assert_int_equal(err.code, ST_ERR_OK);
    }
    for (i = 0; i < ST_ARRAY_LEN(bad); i++) {
        st_error_clear(&err);
        assert_false(st_name_valid(bad[i]));
        assert_int_equal(st_name_check("label", bad[i], &err), -1);
        assert_int_equal(err.code, ST_ERR_INVALID);
        assert_non_null(strstr(err.msg, "field 'label'"));
    }
    assert_false(st_name_valid(NULL));
    st_error_clear(&err);
    assert_int_equal(st_name_check("name", NULL, &err), -1);
    assert_string_equal(err.msg, "field 'name' is required");
    /* A NULL error struct is allowed and ignored. */
    assert_int_equal(st_name_check("name", "<", NULL), -1);
}

static void
test_models__status_and_step_names_round_trip(void **state)
{
    static const char *const statuses[] = {"creating", "running", "stopped", "paused",
                                           "deleting", "error",   "missing"};
    static const char *const steps[] = {"row", "disk", "defined", "started", "done"};
    enum vm_status st = VM_STATUS_PAUSED;
    enum image_format fmt = IMAGE_FORMAT_RAW;
    enum image_status ist = IMAGE_STATUS_ACTIVE;
    size_t i;

    (void)state;
    for (i = 0; i < ST_ARRAY_LEN(statuses); i++) {
        assert_string_equal(vm_status_name((enum vm_status)i), statuses[i]);
        assert_int_equal(vm_status_parse(statuses[i], &st), 0);
        assert_int_equal(st, i);
    }
    st = VM_STATUS_PAUSED;
    assert_int_equal(vm_status_parse("Running", &st), -1);
    assert_int_equal(vm_status_parse("", &st), -1);
    assert_int_equal(vm_status_parse(NULL, &st), -1);
    assert_int_equal(st, VM_STATUS_PAUSED);
    assert_string_equal(vm_status_name((enum vm_status)99), "unknown");

    for (i = 0; i < ST_ARRAY_LEN(steps); i++)
        assert_string_equal(vm_step_name((enum vm_step)i), steps[i]);
    assert_string_equal(vm_step_name((enum vm_step) - 1), "unknown");

    assert_string_equal(image_format_name(IMAGE_FORMAT_QCOW2), "qcow2");
    assert_string_equal(image_format_name(IMAGE_FORMAT_RAW), "raw");
    assert_string_equal(image_format_name((enum image_format)7), "unknown");
    assert_int_equal(image_format_parse("qcow2", &fmt), 0);
    assert_int_equal(fmt, IMAGE_FORMAT_QCOW2);
    assert_int_equal(image_format_parse("raw", &fmt), 0);
    assert_int_equal(fmt, IMAGE_FORMAT_RAW);
    assert_int_equal(image_format_parse("vmdk", &fmt), -1);
    assert_int_equal(image_format_parse(NULL, &fmt), -1);
    assert_int_equal(fmt, IMAGE_FORMAT_RAW);

    assert_string_equal(image_status_name(IMAGE_STATUS_ACTIVE), "active");
    assert_string_equal(image_status_name((enum image_status)3), "unknown");
    assert_int_equal(image_status_parse("active", &ist), 0);
    assert_int_equal(ist, IMAGE_STATUS_ACTIVE);
    assert_int_equal(image_status_parse("queued", &ist), -1);
}

static void
test_models__image_min_disk_rounds_up(void **state)
{
    static const struct {
        uint64_t bytes;
        unsigned gib;
    } cases[] = {
        {0, 1},
        {1, 1},
        {(uint64_t)1 << 30, 1},
        {((uint64_t)1 << 30) + 1, 2},
        {(uint64_t)10 << 30, 10},
        {((uint64_t)10 << 30) - 512, 10},
        {UINT64_MAX, 4294967295u},
    };
    struct image image;
    size_t i;

    (void)state;
    memset(&image, 0, sizeof(image));
    for (i = 0; i < ST_ARRAY_LEN(cases); i++) {
        image.virtual_size_bytes = cases[i].bytes;
        assert_int_equal(image_min_disk_gib(&image), cases[i].gib);
    }
}

/* 2023-11-14T22:13:20Z and a second later, with milliseconds that must be dropped. */
#define T0 1700000000123LL
#define T1 1700000001999LL

static void
fill_vm(struct vm *vm)
{
    memset(vm, 0, sizeof(*vm));
    strcpy(vm->id, VMID);
    strcpy(vm->owner_id, OWNER);
    strcpy(vm->name, "web-01");
    vm->status = VM_STATUS_RUNNING;
    vm->step = VM_STEP_DONE;
    vm->vcpus = 2;
    vm->memory_mib = 2048;
    vm->disk_gib = 10;
    strcpy(vm->image_id, IMG);
    vm->created_at = T0;
    vm->revision = 3;
    vm->updated_at = T1;
}

static void
assert_str_member(const json_t *obj, const char *key, const char *want)
{
    const json_t *v = json_object_get(obj, key);

    if (!json_is_string(v))
        fail_msg("member '%s' is not a string", key);
    assert_string_equal(json_string_value(v), want);
}

static void
assert_int_member(const json_t *obj, const char *key, json_int_t want)
{
    const json_t *v = json_object_get(obj, key);

    if (!json_is_integer(v))
        fail_msg("member '%s' is not an integer", key);
    assert_int_equal(json_integer_value(v), want);
}

static void
test_models__vm_to_json_has_exact_fields(void **state)
{
    struct vm vm;
    json_t *j;

    (void)state;
    fill_vm(&vm);
    j = vm_to_json(&vm);
    assert_non_null(j);
    assert_int_equal(json_object_size(j), 13);
    assert_str_member(j, "id", VMID);
    assert_int_member(j, "revision", 3);
    assert_str_member(j, "name", "web-01");
    assert_str_member(j, "status", "running");
    assert_int_member(j, "vcpus", 2);
    assert_int_member(j, "memory_mib", 2048);
    assert_int_member(j, "disk_gib", 10);
    assert_str_member(j, "image_id", IMG);
    assert_true(json_is_null(json_object_get(j, "flavor_id")));
    assert_str_member(j, "owner_id", OWNER);
    assert_str_member(j, "created_at", "2023-11-14T22:13:20Z");
    assert_str_member(j, "updated_at", "2023-11-14T22:13:21Z");
    assert_true(json_is_null(json_object_get(j, "fault")));
    /* The create step is internal. */
    assert_null(json_object_get(j, "step"));
    json_decref(j);

    strcpy(vm.flavor_id, FLV);
    strcpy(vm.fault, "define failed: no space left on device");
    vm.status = VM_STATUS_ERROR;
    j = vm_to_json(&vm);
    assert_non_null(j);
    assert_int_equal(json_object_size(j), 13);
    assert_str_member(j, "flavor_id", FLV);
    assert_str_member(j, "fault", "define failed: no space left on device");
    assert_str_member(j, "status", "error");
    json_decref(j);
}

static void
test_models__vm_to_json_survives_cut_utf8_fault(void **state)
{
    struct vm vm;
    json_t *j;

    (void)state;
    fill_vm(&vm);
    vm.status = VM_STATUS_MISSING;
    /* "disk é" cut after the first byte of the two-byte sequence. */
    strcpy(vm.fault, "disk \xC3");
    j = vm_to_json(&vm);
    assert_non_null(j);
    assert_str_member(j, "fault", "disk ?");
    assert_str_member(j, "status", "missing");
    json_decref(j);
}

static void
test_models__image_to_json_has_exact_fields(void **state)
{
    struct image image;
    json_t *j;

    (void)state;
    memset(&image, 0, sizeof(image));
    strcpy(image.id, IMG);
    strcpy(image.owner_id, OWNER);
    strcpy(image.name, "debian-12");
    image.format = IMAGE_FORMAT_QCOW2;
    image.status = IMAGE_STATUS_ACTIVE;
    image.size_bytes = 123456789;
    image.revision = 1;
    image.virtual_size_bytes = ((uint64_t)2 << 30) + 1;
    image.created_at = T0;
    image.updated_at = T1;
    j = image_to_json(&image);
    assert_non_null(j);
    assert_int_equal(json_object_size(j), 12);
    assert_str_member(j, "id", IMG);
    assert_int_member(j, "revision", 1);
    assert_str_member(j, "name", "debian-12");
    assert_str_member(j, "visibility", "private");
    assert_str_member(j, "owner_id", OWNER);
    assert_str_member(j, "format", "qcow2");
    assert_str_member(j, "status", "active");
    assert_int_member(j, "size_bytes", 123456789);
    assert_int_member(j, "virtual_size_bytes", ((json_int_t)2 << 30) + 1);
    assert_int_member(j, "min_disk_gib", 3);
    assert_str_member(j, "created_at", "2023-11-14T22:13:20Z");
    assert_str_member(j, "updated_at", "2023-11-14T22:13:21Z");
    json_decref(j);
    image.visibility = IMAGE_VISIBILITY_PUBLIC;
    j = image_to_json(&image);
    assert_str_member(j, "visibility", "public");
    json_decref(j);
}

static void
test_models__flavor_to_json_has_exact_fields(void **state)
{
    struct flavor flavor;
    json_t *j;

    (void)state;
    memset(&flavor, 0, sizeof(flavor));
    strcpy(flavor.id, FLV);
    strcpy(flavor.owner_id, OWNER);
    strcpy(flavor.name, "m1.small");
    flavor.vcpus = 2;
    flavor.memory_mib = 2048;
    flavor.disk_gib = 20;
    flavor.revision = 1;
    flavor.created_at = T0;
    j = flavor_to_json(&flavor);
    assert_non_null(j);
    assert_int_equal(json_object_size(j), 8);
    assert_str_member(j, "id", FLV);
    assert_int_member(j, "revision", 1);
    assert_str_member(j, "name", "m1.small");
    assert_str_member(j, "owner_id", OWNER);
    assert_int_member(j, "vcpus", 2);
    assert_int_member(j, "memory_mib", 2048);
    assert_int_member(j, "disk_gib", 20);
    assert_str_member(j, "created_at", "2023-11-14T22:13:20Z");
    json_decref(j);
}

static void
test_models__list_release_frees_and_zeroes(void **state)
{
    struct vm_list vms = {.items = st_xcalloc(3, sizeof(struct vm)), .count = 3, .more = true};
    struct image_list images = {
        .items = st_xcalloc(2, sizeof(struct image)), .count = 2, .more = true};
    struct flavor_list flavors = {
        .items = st_xcalloc(1, sizeof(struct flavor)), .count = 1, .more = true};

    (void)state;
    vm_list_release(&vms);
    image_list_release(&images);
    flavor_list_release(&flavors);
    assert_null(vms.items);
    assert_int_equal(vms.count, 0);
    assert_false(vms.more);
    assert_null(images.items);
    assert_int_equal(images.count, 0);
    assert_false(images.more);
    assert_null(flavors.items);
    assert_int_equal(flavors.count, 0);
    assert_false(flavors.more);
    /* Twice, and on NULL: both harmless. */
    vm_list_release(&vms);
    image_list_release(&images);
    flavor_list_release(&flavors);
    vm_list_release(NULL);
    image_list_release(NULL);
    flavor_list_release(NULL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_models__bad_bodies_are_refused_with_precise_messages),
        cmocka_unit_test(test_models__huge_strings_are_refused_and_quoted_short),
        cmocka_unit_test(test_models__vm_create_accepts_flavor_form),
        cmocka_unit_test(test_models__vm_create_lowers_uuid_case),
        cmocka_unit_test(test_models__vm_create_accepts_sizing_at_the_limits),
        cmocka_unit_test(test_models__vm_patch_takes_any_subset),
        cmocka_unit_test(test_models__image_create_accepts_both_formats),
        cmocka_unit_test(test_models__image_create_accepts_longest_path),
        cmocka_unit_test(test_models__flavor_create_accepts_valid_body),
        cmocka_unit_test(test_models__name_rules),
        cmocka_unit_test(test_models__status_and_step_names_round_trip),
        cmocka_unit_test(test_models__image_min_disk_rounds_up),
        cmocka_unit_test(test_models__vm_to_json_has_exact_fields),
        cmocka_unit_test(test_models__vm_to_json_survives_cut_utf8_fault),
        cmocka_unit_test(test_models__image_to_json_has_exact_fields),
        cmocka_unit_test(test_models__flavor_to_json_has_exact_fields),
        cmocka_unit_test(test_models__list_release_frees_and_zeroes),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
