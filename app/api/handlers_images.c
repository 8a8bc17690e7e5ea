#include "api/handlers.h"

#include <string.h>

#include "services/image_service.h"

void
handle_images_list(struct api_call *call)
{
    struct image_filter filter;
    struct image_list list;
    struct st_error err;
    const char *scope;
    char owner[ST_ID_BUF];
    json_t *items;
    size_t i;

    memset(&filter, 0, sizeof(filter));
    memset(&list, 0, sizeof(list));
    memset(&err, 0, sizeof(err));
    if (api_paging(call, &filter.limit, filter.marker, &err) < 0 ||
        api_list_scope(call, owner, &scope, &err) < 0 ||
        image_service_list(&call->app->image_svc, scope, &filter, &list, &err) < 0) {
        api_fail(call, &err);
        return;
    }
    items = json_array();
    for (i = 0; i < list.count; i++)
        json_array_append_new(items, image_to_json(&list.items[i]));
    api_list_reply(call, items, list.more && list.count ? list.items[list.count - 1].id : NULL);
    image_list_release(&list);
}

void
handle_images_create(struct api_call *call)
{
    struct image_create_req req;
    struct st_error err;
    struct image image;

    memset(&req, 0, sizeof(req));
    memset(&err, 0, sizeof(err));
    if (image_create_req_decode(call->body, &req, &err) < 0 ||
        image_service_register_as(&call->app->image_svc, call->who->user_id,
                                  principal_is_admin(call->who), &req, &image, &err) < 0) {
        api_fail(call, &err);
        return;
    }
    api_created(call, "/v1/images", image.id, image_to_json(&image));
}

void
handle_images_get(struct api_call *call)
{
    struct st_error err;
    struct image image;

    memset(&err, 0, sizeof(err));
    if (image_service_get(&call->app->image_svc, api_scope(call), call->match->ids[0], &image,
                          &err) < 0) {
        api_fail(call, &err);
        return;
    }
    http_response_json(call->resp, 200, image_to_json(&image));
    api_etag(call, image.revision);
}

void
handle_images_delete(struct api_call *call)
{
    struct st_error err;
    uint64_t expect;

    memset(&err, 0, sizeof(err));
    if (api_if_match(call, &expect, &err) < 0 ||
        image_service_delete(&call->app->image_svc, api_scope(call), call->match->ids[0], expect,
                             &err) < 0) {
        api_fail(call, &err);
        return;
    }
    http_response_empty(call->resp, 204);
}
