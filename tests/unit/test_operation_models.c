/*
 * test_operation_models.c - operations, VM events and idempotency keys:
 * names, encoders, the key rule and the release functions.
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

#include "models/operation.h"
#include "util/mem.h"

#define OP_ID "11111111-2222-4333-8444-555555555555"
#define VM_ID "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
#define OWNER "99999999-8888-4777-8666-555555555555"
#define T0 1700000000000LL /* 2023-11-14T22:13:20Z */

static void
test_operation_models__names_round_trip(void **state)
{
    static const char *const kinds[] = {"vm.create", "vm.delete",     "vm.start",
                                        "vm.stop",   "vm.force-stop", "vm.reboot",
                                        "vm.pause",  "vm.resume",     "vm.resize"};
    static const char *const statuses[] = {"queued", "running", "succeeded", "failed"};
    static const char *const types[] = {"STATE_CHANGE", "INFO", "WARNING", "ERROR"};
    enum op_kind kind;
    enum op_status status;
    enum vm_event_type type;
    size_t i;

    (void)state;
    for (i = 0; i < ST_ARRAY_LEN(kinds); i++) {
        assert_string_equal(op_kind_name((enum op_kind)i), kinds[i]);
        assert_int_equal(op_kind_parse(kinds[i], &kind), 0);
        assert_int_equal(kind, i);
    }
    for (i = 0; i < ST_ARRAY_LEN(statuses); i++) {
        assert_string_equal(op_status_name((enum op_status)i), statuses[i]);
        assert_int_equal(op_status_parse(statuses[i], &status), 0);
        assert_int_equal(status, i);
    }
    for (i = 0; i < ST_ARRAY_LEN(types); i++) {
        assert_string_equal(vm_event_type_name((enum vm_event_type)i), types[i]);
        assert_int_equal(vm_event_type_parse(types[i], &type), 0);
        assert_int_equal(type, i);
    }

    /* Unknown names leave *out alone; unknown values have a name. */
    kind = OP_KIND_VM_DELETE;
    assert_int_equal(op_kind_parse("vm.migrate", &kind), -1);
    assert_int_equal(op_kind_parse(NULL, &kind), -1);
    assert_int_equal(kind, OP_KIND_VM_DELETE);
    assert_int_equal(op_status_parse("Queued", &status), -1);
    assert_int_equal(vm_event_type_parse("info", &type), -1);
    assert_string_equal(op_kind_name((enum op_kind)(OP_KIND_VM_RESIZE + 1)), "unknown");
    assert_string_equal(op_status_name((enum op_status)7), "unknown");
    assert_string_equal(vm_event_type_name((enum vm_event_type)7), "unknown");

    assert_false(op_status_terminal(OP_STATUS_QUEUED));
    assert_false(op_status_terminal(OP_STATUS_RUNNING));
    assert_true(op_status_terminal(OP_STATUS_SUCCEEDED));
    assert_true(op_status_terminal(OP_STATUS_FAILED));
}

static struct operation
sample_op(void)
{
    struct operation op;

    memset(&op, 0, sizeof(op));
    strcpy(op.id, OP_ID);
    op.kind = OP_KIND_VM_CREATE;
    strcpy(op.target_id, VM_ID);
    strcpy(op.owner_id, OWNER);
    op.status = OP_STATUS_QUEUED;
    op.revision = 1;
    op.created_at = T0;
    strcpy(op.worker_id, "worker-1");
    op.lease_expires_at = T0 + 30000;
    return op;
}

static void
test_operation_models__queued_operation_to_json(void **state)
{
    struct operation op = sample_op();
    json_t *j = operation_to_json(&op);
    char *text;

    (void)state;
    assert_non_null(j);
    text = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT);
    assert_string_equal(text,
                        "{\"attempts\":0,\"created_at\":\"2023-11-14T22:13:20Z\","
                        "\"error\":null,\"finished_at\":null,\"id\":\"" OP_ID "\","
                        "\"kind\":\"vm.create\",\"owner_id\":\"" OWNER "\","
                        "\"revision\":1,\"started_at\":null,\"status\":\"queued\",\"step\":null,"
                        "\"target_id\":\"" VM_ID "\"}");
    free(text);
    json_decref(j);
}

static void
test_operation_models__failed_operation_to_json(void **state)
{
    struct operation op = sample_op();
    json_t *j;

    (void)state;
    op.kind = OP_KIND_VM_DELETE;
    op.status = OP_STATUS_FAILED;
    strcpy(op.step, "disk");
    strcpy(op.error, "disk full \xe2\x82"); /* cut in the middle of a UTF-8 sequence */
    op.started_at = T0 + 1000;
    op.finished_at = T0 + 61000;
    op.attempts = 2;
    j = operation_to_json(&op);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "kind")), "vm.delete");
    assert_string_equal(json_string_value(json_object_get(j, "status")), "failed");
    assert_string_equal(json_string_value(json_object_get(j, "step")), "disk");
    assert_string_equal(json_string_value(json_object_get(j, "error")), "disk full ??");
    assert_string_equal(json_string_value(json_object_get(j, "started_at")),
                        "2023-11-14T22:13:21Z");
    assert_string_equal(json_string_value(json_object_get(j, "finished_at")),
                        "2023-11-14T22:14:21Z");
    assert_int_equal(json_integer_value(json_object_get(j, "attempts")), 2);
    /* The lease is the workers' business. */
    assert_null(json_object_get(j, "worker_id"));
    assert_null(json_object_get(j, "lease_expires_at"));
    json_decref(j);
}

static void
test_operation_models__event_to_json_parses_data(void **state)
{
    static const struct {
        const char *data;
        const char *want; /* the "data" member, compact */
    } cases[] = {
        {"{\"from\":\"stopped\",\"to\":\"running\"}", "{\"from\":\"stopped\",\"to\":\"running\"}"},
        {"", "null"},
        {"[1,2]", "null"},
        {"42", "null"},
        {"{\"cut\":", "null"},
    };
    struct vm_event e;
    json_t *j;
    char *text;
    size_t i;

    (void)state;
    memset(&e, 0, sizeof(e));
    strcpy(e.id, OP_ID);
    strcpy(e.vm_id, VM_ID);
    strcpy(e.owner_id, OWNER);
    e.at = T0;
    e.type = VM_EVENT_STATE_CHANGE;
    strcpy(e.message, "VM started");
    for (i = 0; i < ST_ARRAY_LEN(cases); i++) {
        snprintf(e.data, sizeof(e.data), "%s", cases[i].data);
        j = vm_event_to_json(&e);
        assert_non_null(j);
        text =
            json_dumps(json_object_get(j, "data"), JSON_SORT_KEYS | JSON_COMPACT | JSON_ENCODE_ANY);
        assert_string_equal(text, cases[i].want);
        free(text);
        assert_string_equal(json_string_value(json_object_get(j, "id")), OP_ID);
        assert_string_equal(json_string_value(json_object_get(j, "vm_id")), VM_ID);
        assert_string_equal(json_string_value(json_object_get(j, "at")), "2023-11-14T22:13:20Z");
        assert_string_equal(json_string_value(json_object_get(j, "type")), "STATE_CHANGE");
        assert_string_equal(json_string_value(json_object_get(j, "message")), "VM started");
        assert_int_equal(json_object_size(j), 6);
        json_decref(j);
    }
}

static void
test_operation_models__idem_key_rule(void **state)
{
    char key[ST_IDEM_KEY_BUF + 1];

    (void)state;
    assert_true(idem_key_valid("a"));
    assert_true(idem_key_valid("!~0123-abc_XYZ/+=.:"));
    assert_false(idem_key_valid(NULL));
    assert_false(idem_key_valid(""));
    assert_false(idem_key_valid("has space"));
    assert_false(idem_key_valid("tab\there"));
    assert_false(idem_key_valid("del\x7f"));
    assert_false(idem_key_valid("caf\xc3\xa9"));

    memset(key, 'k', ST_IDEM_KEY_MAX);
    key[ST_IDEM_KEY_MAX] = '\0';
    assert_true(idem_key_valid(key));
    key[ST_IDEM_KEY_MAX] = 'k';
    key[ST_IDEM_KEY_MAX + 1] = '\0';
    assert_false(idem_key_valid(key));
}

static void
test_operation_models__release_frees_and_zeroes(void **state)
{
    struct op_list ops = {.items = calloc(2, sizeof(struct operation)), .count = 2, .more = true};
    struct vm_event_list events = {
        .items = calloc(1, sizeof(struct vm_event)), .count = 1, .more = true};
    struct idem_record rec = {.status = 201};
    struct idem_record zero;

    (void)state;
    rec.body = st_xstrdup("{}");
    rec.location = st_xstrdup("/v1/operations/x");
    strcpy(rec.key, "k");
    op_list_release(&ops);
    assert_null(ops.items);
    assert_int_equal(ops.count, 0);
    assert_false(ops.more);
    vm_event_list_release(&events);
    assert_null(events.items);
    assert_int_equal(events.count, 0);
    idem_record_release(&rec);
    memset(&zero, 0, sizeof(zero));
    assert_memory_equal(&rec, &zero, sizeof(rec));

    /* NULL-safe, and safe twice. */
    idem_record_release(&rec);
    op_list_release(NULL);
    vm_event_list_release(NULL);
    idem_record_release(NULL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_operation_models__names_round_trip),
        cmocka_unit_test(test_operation_models__queued_operation_to_json),
        cmocka_unit_test(test_operation_models__failed_operation_to_json),
        cmocka_unit_test(test_operation_models__event_to_json_parses_data),
        cmocka_unit_test(test_operation_models__idem_key_rule),
        cmocka_unit_test(test_operation_models__release_frees_and_zeroes),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
