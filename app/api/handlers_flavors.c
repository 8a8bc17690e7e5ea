#include "api/handlers.h"

#include <string.h>

#include "services/flavor_service.h"

void
handle_flavors_list(struct api_call *call)
{
    struct flavor_filter filter;
    struct flavor_list list;
    struct st_error err;
    json_t *items;
    size_t i;

    memset(&filter, 0, sizeof(filter));
    memset(&list, 0, sizeof(list));
    memset(&err, 0, sizeof(err));
    if (api_paging(call, &filter.limit, filter.marker, &err) < 0 ||
        flavor_service_list(&call->app->flavor_svc, NULL, &filter, &list, &err) < 0) {
        api_fail(call, &err);
        return;
    }
    items = json_array();
    for (i = 0; i < list.count; i++)
        json_array_append_new(items, flavor_to_json(&list.items[i]));
    api_list_reply(call, items, list.more && list.count ? list.items[list.count - 1].id : NULL);
    flavor_list_release(&list);
}

void
handle_flavors_create(struct api_call *call)
{
    struct flavor_create_req req;
    struct st_error err;
    struct flavor flavor;

    memset(&req, 0, sizeof(req));
    memset(&err, 0, sizeof(err));
    if (flavor_create_req_decode(call->body, &req, &err) < 0 ||
        flavor_service_create(&call->app->flavor_svc, call->who->user_id, &req, &flavor, &err) <
            0) {
        api_fail(call, &err);
        return;
    }
    api_created(call, "/v1/flavors", flavor.id, flavor_to_json(&flavor));
}

void
handle_flavors_get(struct api_call *call)
{
    struct st_error err;
    struct flavor flavor;

    memset(&err, 0, sizeof(err));
    if (flavor_service_get(&call->app->flavor_svc, NULL, call->match->ids[0], &flavor, &err) < 0) {
        api_fail(call, &err);
        return;
    }
    http_response_json(call->resp, 200, flavor_to_json(&flavor));
    api_etag(call, flavor.revision);
}

void
handle_flavors_delete(struct api_call *call)
{
    struct st_error err;
    uint64_t expect;

    memset(&err, 0, sizeof(err));
    if (api_if_match(call, &expect, &err) < 0 ||
        flavor_service_delete(&call->app->flavor_svc, NULL, call->match->ids[0], expect, &err) <
            0) {
        api_fail(call, &err);
        return;
    }
    http_response_empty(call->resp, 204);
}
