#include "models/operation.h"

#include <stdlib.h>
#include <string.h>

#include "util/mem.h"

static const char *const op_kind_names[] = {
    [OP_KIND_VM_CREATE] = "vm.create",         [OP_KIND_VM_DELETE] = "vm.delete",
    [OP_KIND_VM_START] = "vm.start",           [OP_KIND_VM_STOP] = "vm.stop",
    [OP_KIND_VM_FORCE_STOP] = "vm.force-stop", [OP_KIND_VM_REBOOT] = "vm.reboot",
    [OP_KIND_VM_PAUSE] = "vm.pause",           [OP_KIND_VM_RESUME] = "vm.resume",
    [OP_KIND_VM_RESIZE] = "vm.resize",
};

static const char *const op_status_names[] = {
    [OP_STATUS_QUEUED] = "queued",
    [OP_STATUS_RUNNING] = "running",
    [OP_STATUS_SUCCEEDED] = "succeeded",
    [OP_STATUS_FAILED] = "failed",
};

static const char *const vm_event_type_names[] = {
    [VM_EVENT_STATE_CHANGE] = "STATE_CHANGE",
    [VM_EVENT_INFO] = "INFO",
    [VM_EVENT_WARNING] = "WARNING",
    [VM_EVENT_ERROR] = "ERROR",
};

/* The index of @name in @names[0..n), or -1; NULL names nothing. */
static int
operation_name_index(const char *const *names, size_t n, const char *name)
{
    size_t i;

    if (!name)
        return -1;
    for (i = 0; i < n; i++)
        if (strcmp(name, names[i]) == 0)
            return (int)i;
    return -1;
}

void
op_list_release(struct op_list *list)
{
    if (!list)
        return;
    free(list->items);
    memset(list, 0, sizeof(*list));
}

const char *
op_kind_name(enum op_kind kind)
{
    if ((size_t)kind >= ST_ARRAY_LEN(op_kind_names))
        return "unknown";
    return op_kind_names[kind];
}

int
op_kind_parse(const char *name, enum op_kind *out)
{
    int i = operation_name_index(op_kind_names, ST_ARRAY_LEN(op_kind_names), name);

    if (i < 0)
        return -1;
    *out = (enum op_kind)i;
    return 0;
}

const char *
op_status_name(enum op_status status)
{
    if ((size_t)status >= ST_ARRAY_LEN(op_status_names))
        return "unknown";
    return op_status_names[status];
}

int
op_status_parse(const char *name, enum op_status *out)
{
    int i = operation_name_index(op_status_names, ST_ARRAY_LEN(op_status_names), name);

    if (i < 0)
        return -1;
    *out = (enum op_status)i;
    return 0;
}

bool
op_status_terminal(enum op_status status)
{
    return status == OP_STATUS_SUCCEEDED || status == OP_STATUS_FAILED;
}

/*
 * Text from a backend (an error, an event message) may have been cut in
 * the middle of a UTF-8 sequence when it was stored; jansson refuses such
 * strings, so fall back to its ASCII part rather than lose the whole
 * document.  "" is null when @empty_is_null.
 */
static json_t *
operation_text_to_json(const char *s, bool empty_is_null)
{
    char ascii[ST_EVENT_MSG_BUF];
    json_t *j;
    size_t i;

    if (!s[0] && empty_is_null)
        return json_null();
    j = json_string(s);
    if (j)
        return j;
    for (i = 0; s[i] && i + 1 < sizeof(ascii); i++)
        ascii[i] = ((unsigned char)s[i] < 0x80) ? s[i] : '?';
    ascii[i] = '\0';
    return json_string(ascii);
}

/* RFC 3339 for a time in ms since epoch; 0 ("not yet") is null. */
static json_t *
operation_time_to_json(int64_t ms)
{
    char buf[ST_TIME_BUF];

    if (ms == 0)
        return json_null();
    st_time_format(ms, buf);
    return json_string(buf);
}

json_t *
operation_to_json(const struct operation *op)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:o, s:o, s:o, s:o, s:I}", "id", op->id,
                     "kind", op_kind_name(op->kind), "target_id", op->target_id, "owner_id",
                     op->owner_id, "status", op_status_name(op->status), "step",
                     operation_text_to_json(op->step, true), "error",
                     operation_text_to_json(op->error, true), "created_at",
                     operation_time_to_json(op->created_at), "started_at",
                     operation_time_to_json(op->started_at), "finished_at",
                     operation_time_to_json(op->finished_at), "attempts", (json_int_t)op->attempts);
}

void
vm_event_list_release(struct vm_event_list *list)
{
    if (!list)
        return;
    free(list->items);
    memset(list, 0, sizeof(*list));
}

const char *
vm_event_type_name(enum vm_event_type type)
{
    if ((size_t)type >= ST_ARRAY_LEN(vm_event_type_names))
        return "unknown";
    return vm_event_type_names[type];
}

int
vm_event_type_parse(const char *name, enum vm_event_type *out)
{
    int i = operation_name_index(vm_event_type_names, ST_ARRAY_LEN(vm_event_type_names), name);

    if (i < 0)
        return -1;
    *out = (enum vm_event_type)i;
    return 0;
}

/* The event's data as the object it holds; null when there is none or it is not one. */
static json_t *
vm_event_data_to_json(const char *data)
{
    json_t *j;

    if (!data[0])
        return json_null();
    j = json_loads(data, 0, NULL);
    if (json_is_object(j))
        return j;
    json_decref(j);
    return json_null();
}

json_t *
vm_event_to_json(const struct vm_event *e)
{
    return json_pack("{s:s, s:s, s:o, s:s, s:o, s:o}", "id", e->id, "vm_id", e->vm_id, "at",
                     operation_time_to_json(e->at), "type", vm_event_type_name(e->type), "message",
                     operation_text_to_json(e->message, false), "data",
                     vm_event_data_to_json(e->data));
}

bool
idem_key_valid(const char *key)
{
    size_t i;

    if (!key || !key[0])
        return false;
    for (i = 0; key[i]; i++) {
        if (i >= ST_IDEM_KEY_MAX)
            return false;
        if ((unsigned char)key[i] < 0x21 || (unsigned char)key[i] > 0x7e)
            return false;
    }
    return true;
}

void
idem_record_release(struct idem_record *r)
{
    if (!r)
        return;
    free(r->body);
    free(r->location);
    memset(r, 0, sizeof(*r));
}
