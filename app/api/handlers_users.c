#include "api/handlers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "services/audit_service.h"
#include "services/user_service.h"
#include "util/mem.h"

/* The user a /v1/users/{id}... or /v1/users/me... route names. */
static const char *
named_user(const struct api_call *call)
{
    return call->match->n_ids > 0 ? call->match->ids[0] : call->who->user_id;
}

static json_t *
user_doc(const struct api_call *call, const struct user *user)
{
    struct quota q = user_service_quota_of(&call->app->user_svc, user);

    return user_to_json(user, &q);
}

void
handle_auth_tokens(struct api_call *call)
{
    struct login_req req;
    struct st_error err;
    char *token = NULL;
    int64_t expires_at = 0, retry_after = 0;
    char when[ST_TIME_BUF];
    char num[24];

    memset(&req, 0, sizeof(req));
    memset(&err, 0, sizeof(err));
    if (login_req_decode(call->body, &req, &err) < 0 ||
        user_service_login(&call->app->user_svc, &req, st_now_ms(), &token, &expires_at,
                           &retry_after, &err) < 0) {
        api_fail(call, &err);
        if (err.code == ST_ERR_THROTTLED) {
            snprintf(num, sizeof(num), "%lld", (long long)retry_after);
            http_response_header(call->resp, "Retry-After", num);
        }
        return;
    }
    st_time_format(expires_at * 1000, when);
    http_response_json(call->resp, 200,
                       json_pack("{s:s, s:s, s:s, s:I}", "token", token, "token_type", "Bearer",
                                 "expires_at", when, "expires_in",
                                 (json_int_t)(expires_at - st_now_ms() / 1000)));
    free(token);
}

void
handle_users_create(struct api_call *call)
{
    struct user_create_req req;
    struct st_error err;
    struct user user;

    memset(&req, 0, sizeof(req));
    memset(&err, 0, sizeof(err));
    if (user_service_may_register(&call->app->user_svc, call->who, &err) < 0 ||
        user_create_req_decode(call->body, &req, &err) < 0 ||
        user_service_register(&call->app->user_svc, call->who, &req, &user, &err) < 0) {
        api_fail(call, &err);
        return;
    }
    api_created(call, "/v1/users", user.id, user_doc(call, &user));
}

void
handle_users_list(struct api_call *call)
{
    struct user_filter filter;
    struct user_list list;
    struct st_error err;
    json_t *items;
    size_t i;

    memset(&filter, 0, sizeof(filter));
    memset(&list, 0, sizeof(list));
    memset(&err, 0, sizeof(err));
    if (api_paging(call, &filter.limit, filter.marker, &err) < 0 ||
        user_service_list(&call->app->user_svc, call->who, &filter, &list, &err) < 0) {
        api_fail(call, &err);
        return;
    }
    items = json_array();
    for (i = 0; i < list.count; i++)
        json_array_append_new(items, user_doc(call, &list.items[i]));
    api_list_reply(call, items, list.more && list.count ? list.items[list.count - 1].id : NULL);
    user_list_release(&list);
}

void
handle_users_get(struct api_call *call)
{
    struct st_error err;
    struct user user;

    memset(&err, 0, sizeof(err));
    if (user_service_get(&call->app->user_svc, call->who, named_user(call), &user, &err) < 0) {
        api_fail(call, &err);
        return;
    }
    http_response_json(call->resp, 200, user_doc(call, &user));
    api_etag(call, user.revision);
}

void
handle_users_patch(struct api_call *call)
{
    struct user_patch_req req;
    struct st_error err;
    struct user user;
    uint64_t expect;

    memset(&req, 0, sizeof(req));
    memset(&err, 0, sizeof(err));
    if (user_patch_req_decode(call->body, &req, &err) < 0 ||
        api_if_match(call, &expect, &err) < 0 ||
        user_service_update(&call->app->user_svc, call->who, named_user(call), &req, expect, &user,
                            &err) < 0) {
        api_fail(call, &err);
        return;
    }
    memcpy(call->target_id, user.id, ST_ID_BUF);
    http_response_json(call->resp, 200, user_doc(call, &user));
    api_etag(call, user.revision);
}

void
handle_users_quota(struct api_call *call)
{
    struct quota_usage usage;
    struct quota limits;
    struct st_error err;
    struct user user;

    memset(&err, 0, sizeof(err));
    /* Visible only to the user and to admins, like the user itself. */
    if (user_service_get(&call->app->user_svc, call->who, named_user(call), &user, &err) < 0 ||
        user_service_quota(&call->app->user_svc, user.id, &limits, &usage, &err) < 0) {
        api_fail(call, &err);
        return;
    }
    http_response_json(call->resp, 200,
                       json_pack("{s:s, s:o, s:o}", "user_id", user.id, "limits",
                                 quota_to_json(&limits), "usage", quota_usage_to_json(&usage)));
}

void
handle_api_keys_create(struct api_call *call)
{
    static const char *const fields[] = {"name"};
    char name[ST_NAME_BUF];
    struct api_key key;
    struct st_error err;
    char *secret = NULL;
    json_t *doc;
    char *location;
    int rc;

    memset(&err, 0, sizeof(err));
    if (st_json_check_object(call->body, fields, ST_ARRAY_LEN(fields), &err) < 0 ||
        (rc = st_json_get_name(call->body, "name", name, &err)) < 0)
        goto fail;
    if (rc == 0) {
        st_error_set(&err, ST_ERR_INVALID, "field 'name' is required");
        goto fail;
    }
    if (user_service_key_create(&call->app->user_svc, call->who, name, &key, &secret, &err) < 0)
        goto fail;
    doc = api_key_to_json(&key);
    /* The key itself is in this answer and nowhere else, ever. */
    json_object_set_new(doc, "key", json_string(secret));
    free(secret);
    location = st_xasprintf("/v1/users/me/api-keys/%s", key.id);
    http_response_json(call->resp, 201, doc);
    http_response_header(call->resp, "Location", location);
    http_response_header(call->resp, "Cache-Control", "no-store");
    free(location);
    return;
fail:
    api_fail(call, &err);
}

void
handle_api_keys_list(struct api_call *call)
{
    struct api_key_list list;
    struct st_error err;
    json_t *items;
    size_t i;

    memset(&err, 0, sizeof(err));
    if (user_service_key_list(&call->app->user_svc, call->who, &list, &err) < 0) {
        api_fail(call, &err);
        return;
    }
    items = json_array();
    for (i = 0; i < list.count; i++)
        json_array_append_new(items, api_key_to_json(&list.items[i]));
    api_list_reply(call, items, NULL);
    api_key_list_release(&list);
}

void
handle_api_keys_delete(struct api_call *call)
{
    struct st_error err;

    memset(&err, 0, sizeof(err));
    if (user_service_key_delete(&call->app->user_svc, call->who, call->match->ids[0], &err) < 0) {
        api_fail(call, &err);
        return;
    }
    http_response_empty(call->resp, 204);
}

void
handle_audit_list(struct api_call *call)
{
    struct audit_filter filter;
    struct audit_list list;
    struct st_error err;
    json_t *items;
    size_t i;

    memset(&filter, 0, sizeof(filter));
    memset(&list, 0, sizeof(list));
    memset(&err, 0, sizeof(err));
    if (api_paging(call, &filter.limit, filter.marker, &err) < 0 ||
        api_uuid_param(call, "user_id", filter.user_id, &err) < 0 ||
        api_uuid_param(call, "target_id", filter.target_id, &err) < 0 ||
        audit_service_list(&call->app->audit_svc, &filter, &list, &err) < 0) {
        api_fail(call, &err);
        return;
    }
    items = json_array();
    for (i = 0; i < list.count; i++)
        json_array_append_new(items, audit_entry_to_json(&list.items[i]));
    api_list_reply(call, items, list.more && list.count ? list.items[list.count - 1].id : NULL);
    audit_list_release(&list);
}
