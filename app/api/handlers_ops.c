#include "api/handlers.h"

#include <string.h>

#include "services/op_service.h"
#include "services/reconcile_service.h"

void
handle_operations_get(struct api_call *call)
{
    struct operation op;
    struct st_error err;
    int64_t wait_ms;

    memset(&err, 0, sizeof(err));
    if (api_wait_param(call, &wait_ms, &err) < 0 ||
        api_wait_operation(call, call->match->ids[0], wait_ms, &op, &err) < 0) {
        api_fail(call, &err);
        return;
    }
    http_response_json(call->resp, 200, operation_to_json(&op));
    api_etag(call, op.revision);
}

void
handle_operations_list(struct api_call *call)
{
    const char *status = http_query_get(call->query, "status");
    struct op_filter filter;
    struct op_list list;
    struct st_error err;
    json_t *items;
    size_t i;

    memset(&filter, 0, sizeof(filter));
    memset(&err, 0, sizeof(err));
    if (api_paging(call, &filter.limit, filter.marker, &err) < 0 ||
        api_uuid_param(call, "target_id", filter.target_id, &err) < 0)
        goto fail;
    if (status) {
        if (op_status_parse(status, &filter.status) < 0) {
            st_error_set(&err, ST_ERR_INVALID, "status '%.64s' is not an operation status", status);
            goto fail;
        }
        filter.has_status = true;
    }
    if (op_service_list(&call->app->op_svc, api_scope(call), &filter, &list, &err) < 0)
        goto fail;
    items = json_array();
    for (i = 0; i < list.count; i++)
        json_array_append_new(items, operation_to_json(&list.items[i]));
    api_list_reply(call, items, list.more && list.count ? list.items[list.count - 1].id : NULL);
    op_list_release(&list);
    return;
fail:
    api_fail(call, &err);
}

void
handle_vms_events(struct api_call *call)
{
    struct vm_event_filter filter;
    struct vm_event_list list;
    struct st_error err;
    json_t *items;
    size_t i;

    memset(&filter, 0, sizeof(filter));
    memset(&err, 0, sizeof(err));
    if (api_paging(call, &filter.limit, filter.marker, &err) < 0 ||
        op_service_events(&call->app->op_svc, api_scope(call), call->match->ids[0], &filter, &list,
                          &err) < 0) {
        api_fail(call, &err);
        return;
    }
    items = json_array();
    for (i = 0; i < list.count; i++)
        json_array_append_new(items, vm_event_to_json(&list.items[i]));
    api_list_reply(call, items, list.more && list.count ? list.items[list.count - 1].id : NULL);
    vm_event_list_release(&list);
}

static void
orphans_reply(struct api_call *call, const struct orphan_list *list, bool dry_run, bool collected)
{
    json_t *items = json_array();
    json_t *doc;
    size_t i;

    for (i = 0; i < list->count; i++)
        json_array_append_new(items, orphan_to_json(&list->items[i]));
    doc = json_pack("{s:o, s:I}", "items", items, "count", (json_int_t)list->count);
    if (collected)
        json_object_set_new(doc, "dry_run", json_boolean(dry_run));
    http_response_json(call->resp, 200, doc);
}

void
handle_orphans_list(struct api_call *call)
{
    struct orphan_list list;
    struct st_error err;

    memset(&err, 0, sizeof(err));
    if (reconcile_find_orphans(&call->app->reconcile_svc, &list, &err) < 0) {
        api_fail(call, &err);
        return;
    }
    orphans_reply(call, &list, false, false);
    orphan_list_release(&list);
}

void
handle_orphans_collect(struct api_call *call)
{
    const char *dry = http_query_get(call->query, "dry_run");
    struct orphan_list list;
    struct st_error err;
    bool dry_run = false;

    memset(&err, 0, sizeof(err));
    if (dry && strcmp(dry, "true") != 0 && strcmp(dry, "false") != 0) {
        st_error_set(&err, ST_ERR_INVALID, "dry_run '%.32s' is not true or false", dry);
        api_fail(call, &err);
        return;
    }
    dry_run = dry && strcmp(dry, "true") == 0;
    if (reconcile_collect(&call->app->reconcile_svc, dry_run, &list, &err) < 0) {
        api_fail(call, &err);
        return;
    }
    orphans_reply(call, &list, dry_run, true);
    orphan_list_release(&list);
}
