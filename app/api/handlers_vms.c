#include "api/handlers.h"

#include <stdlib.h>
#include <string.h>

#include "services/op_service.h"
#include "services/vm_service.h"
#include "util/mem.h"

/*
 * 202: the VM as it is now with its operation inside, and where to follow
 * the operation.
 */
static void
api_accepted(struct api_call *call, const struct vm *vm, const struct operation *op)
{
    json_t *doc = vm_to_json(vm);
    char *location = st_xasprintf("/v1/operations/%s", op->id);

    json_object_set_new(doc, "operation", operation_to_json(op));
    http_response_json(call->resp, 202, doc);
    http_response_header(call->resp, "Location", location);
    api_etag(call, vm->revision);
    memcpy(call->target_id, vm->id, ST_ID_BUF);
    free(location);
}

/* 403 naming the quota, its limit and the use that a create would pass. */
static void
quota_problem(struct api_call *call, const struct st_error *err, const struct quota_violation *v)
{
    json_t *extra =
        json_pack("{s:s, s:s, s:I, s:I, s:I}", "type", HTTP_PROBLEM_TYPE_BASE "quota_exceeded",
                  "quota", v->quota, "limit", (json_int_t)v->limit, "in_use", (json_int_t)v->in_use,
                  "requested", (json_int_t)v->requested);

    http_problem(call->resp, call->req->request_id, err, extra);
}

void
handle_vms_list(struct api_call *call)
{
    struct vm_filter filter;
    struct vm_list list;
    struct st_error err;
    const char *status, *name, *scope;
    char owner[ST_ID_BUF];
    json_t *items;
    size_t i;

    memset(&filter, 0, sizeof(filter));
    memset(&list, 0, sizeof(list));
    memset(&err, 0, sizeof(err));
    if (api_paging(call, &filter.limit, filter.marker, &err) < 0 ||
        api_list_scope(call, owner, &scope, &err) < 0)
        goto fail;
    status = http_query_get(call->query, "status");
    if (status) {
        if (vm_status_parse(status, &filter.status) < 0) {
            st_error_set(&err, ST_ERR_INVALID, "status '%.64s' is not a VM status", status);
            goto fail;
        }
        filter.has_status = true;
    }
    name = http_query_get(call->query, "name");
    if (name) {
        if (st_name_check("name", name, &err) < 0)
            goto fail;
        memcpy(filter.name, name, strlen(name) + 1);
    }
    if (vm_service_list(&call->app->vm_svc, scope, &filter, &list, &err) < 0)
        goto fail;
    items = json_array();
    for (i = 0; i < list.count; i++)
        json_array_append_new(items, vm_to_json(&list.items[i]));
    /* The store's marker, not the last item: a merge may drop rows. */
    api_list_reply(call, items, list.more && list.next_marker[0] ? list.next_marker : NULL);
    vm_list_release(&list);
    return;
fail:
    api_fail(call, &err);
}

void
handle_vms_create(struct api_call *call)
{
    struct quota_violation violation = {0};
    struct vm_create_req req;
    struct operation op;
    struct st_error err;
    struct vm vm;

    memset(&req, 0, sizeof(req));
    memset(&err, 0, sizeof(err));
    memset(&vm, 0, sizeof(vm));
    /* The creator owns the VM, admins too; their quota applies to them. */
    if (vm_create_req_decode(call->body, &req, &err) < 0 ||
        op_service_create_vm(&call->app->op_svc, call->who->user_id, &req, &vm, &op, &violation,
                             &err) < 0) {
        if (violation.quota)
            quota_problem(call, &err, &violation);
        else
            api_fail(call, &err);
        return;
    }
    api_accepted(call, &vm, &op);
}

void
handle_vms_get(struct api_call *call)
{
    struct st_error err;
    struct vm vm;

    memset(&err, 0, sizeof(err));
    if (vm_service_get(&call->app->vm_svc, api_scope(call), call->match->ids[0], &vm, &err) < 0) {
        api_fail(call, &err);
        return;
    }
    http_response_json(call->resp, 200, vm_to_json(&vm));
    api_etag(call, vm.revision);
}

void
handle_vms_patch(struct api_call *call)
{
    struct quota_violation violation = {0};
    struct vm_patch_req req;
    struct operation op;
    struct st_error err;
    uint64_t expect;
    bool queued = false;
    struct vm vm;

    memset(&req, 0, sizeof(req));
    memset(&err, 0, sizeof(err));
    if (vm_patch_req_decode(call->body, &req, &err) < 0 || api_if_match(call, &expect, &err) < 0 ||
        op_service_patch_vm(&call->app->op_svc, api_scope(call), call->match->ids[0], &req, expect,
                            &vm, &op, &queued, &violation, &err) < 0) {
        if (violation.quota)
            quota_problem(call, &err, &violation);
        else
            api_fail(call, &err);
        return;
    }
    if (queued) {
        api_accepted(call, &vm, &op);
        return;
    }
    http_response_json(call->resp, 200, vm_to_json(&vm));
    api_etag(call, vm.revision);
}

void
handle_vms_delete(struct api_call *call)
{
    struct operation op;
    struct st_error err;
    uint64_t expect;
    struct vm vm;

    memset(&err, 0, sizeof(err));
    if (api_if_match(call, &expect, &err) < 0 ||
        op_service_delete_vm(&call->app->op_svc, api_scope(call), call->match->ids[0], expect, &vm,
                             &op, &err) < 0) {
        api_fail(call, &err);
        return;
    }
    api_accepted(call, &vm, &op);
}

/*
 * ?wait=: the outcome when it comes in time (200 with the VM as it now is
 * and the ended operation), else the 202 of any accepted operation.
 */
static void
action_reply(struct api_call *call, const struct vm *accepted, const struct operation *op,
             int64_t wait_ms)
{
    struct st_error err = {0};
    struct operation now;
    json_t *doc;
    struct vm vm;

    if (wait_ms <= 0 || api_wait_operation(call, op->id, wait_ms, &now, &err) < 0 ||
        !op_status_terminal(now.status) ||
        vm_service_get(&call->app->vm_svc, api_scope(call), accepted->id, &vm, &err) < 0) {
        api_accepted(call, accepted, op);
        return;
    }
    doc = vm_to_json(&vm);
    json_object_set_new(doc, "operation", operation_to_json(&now));
    http_response_json(call->resp, 200, doc);
    api_etag(call, vm.revision);
    memcpy(call->target_id, vm.id, ST_ID_BUF);
}

void
handle_vms_action(struct api_call *call)
{
    /* The action is the last segment of the route's own pattern. */
    const char *name = strrchr(call->match->route->pattern, '/') + 1;
    enum vm_action action;
    struct operation op;
    struct st_error err;
    int64_t wait_ms;
    uint64_t expect;
    struct vm vm;

    memset(&err, 0, sizeof(err));
    if (vm_action_parse(name, &action) < 0) {
        st_error_set(&err, ST_ERR_INTERNAL, "route names unknown action '%s'", name);
        api_fail(call, &err);
        return;
    }
    if (api_wait_param(call, &wait_ms, &err) < 0 || api_if_match(call, &expect, &err) < 0 ||
        op_service_action_vm(&call->app->op_svc, api_scope(call), call->match->ids[0], action,
                             expect, &vm, &op, &err) < 0) {
        api_fail(call, &err);
        return;
    }
    action_reply(call, &vm, &op, wait_ms);
}
