/*
 * handlers.h - the route table of API v1 and what every handler shares.
 *
 * api_dispatch() does everything that is the same for every route (body
 * limit, routing, 404/405, query string, content type, JSON parsing and
 * the request id); a handler validates what is left, calls one service
 * and encodes the reply.  Handlers never fail silently: every path sets a
 * response.
 */
#ifndef STRATUS_API_HANDLERS_H
#define STRATUS_API_HANDLERS_H

#include <jansson.h>

#include "common/app.h"
#include "api/http.h"
#include "api/router.h"

/* One request on its way through a handler.  Everything is borrowed. */
struct api_call {
    struct app *app;
    const struct http_request *req;
    struct http_response *resp;
    const struct route_match *match;
    const json_t *body;             /* the parsed JSON object, or NULL */
    const struct http_query *query; /* decoded; only allowed names remain */
    const struct principal *who;    /* the caller; NULL only on routes open to anyone */
    char target_id[ST_ID_BUF];      /* what a mutating request acted on, for the audit log */
};

/*
 * Answer one request.  @resp must be initialised (http_response_init) and
 * is released by the caller.  Never fails: every outcome is a response.
 */
void api_dispatch(struct app *app, const struct http_request *req, struct http_response *resp);

/* The route table (for tests and documentation). */
extern const struct route api_routes[];
extern const size_t api_routes_count;

/* Shared helpers. */
void api_fail(struct api_call *call, const struct st_error *err);
/*
 * The owner scope of the caller's reads and writes: their own id, or NULL
 * (every owner) for an admin.
 */
const char *api_scope(const struct api_call *call);
/*
 * The scope of a list: as api_scope(), narrowed to ?owner_id= for an admin
 * (the parameter is an admin's alone: ST_ERR_FORBIDDEN for others).
 * @out holds the owner id when one is returned.
 */
int api_list_scope(const struct api_call *call, char out[ST_ID_BUF], const char **scope,
                   struct st_error *err);
/* ?limit= and ?marker= into *limit and marker (lower case; "" when absent). */
int api_paging(const struct api_call *call, unsigned *limit, char marker[ST_ID_BUF],
               struct st_error *err);
/* An optional UUID query parameter @name into @out (lower case; "" when absent). */
int api_uuid_param(const struct api_call *call, const char *name, char out[ST_ID_BUF],
                   struct st_error *err);
/* 201 with Location: @collection/@id and @doc as the body (stolen). */
void api_created(struct api_call *call, const char *collection, const char *id, json_t *doc);
/* {"items": @items (stolen), "next_marker": @last_id or null} */
void api_list_reply(struct api_call *call, json_t *items, const char *next_marker);
/* ?wait=N seconds (0..60) into *out milliseconds; 0 when absent. */
int api_wait_param(const struct api_call *call, int64_t *out, struct st_error *err);
/*
 * Operation @id within the caller's scope, after waiting up to @wait_ms
 * (the service cuts it to wait_max_s) for it to end.  The wait holds one
 * of the pool's max_waiting_requests places; when none is free the answer
 * is the operation as it is now, with Retry-After set on the response.
 */
int api_wait_operation(struct api_call *call, const char *id, int64_t wait_ms,
                       struct operation *out, struct st_error *err);
/*
 * The revision If-Match names: 0 when the header is absent or "*" (any),
 * else the number of its one strong entity tag ("3").  Anything else is
 * ST_ERR_INVALID.
 */
int api_if_match(const struct api_call *call, uint64_t *expect, struct st_error *err);
/* ETag: "<revision>" on the response. */
void api_etag(struct api_call *call, uint64_t revision);

void handle_vms_list(struct api_call *call);
void handle_vms_create(struct api_call *call);
void handle_vms_get(struct api_call *call);
void handle_vms_patch(struct api_call *call);
void handle_vms_delete(struct api_call *call);
void handle_vms_action(struct api_call *call);

void handle_images_list(struct api_call *call);
void handle_images_create(struct api_call *call);
void handle_images_get(struct api_call *call);
void handle_images_delete(struct api_call *call);

void handle_flavors_list(struct api_call *call);
void handle_flavors_create(struct api_call *call);
void handle_flavors_get(struct api_call *call);
void handle_flavors_delete(struct api_call *call);

void handle_auth_tokens(struct api_call *call);
void handle_users_create(struct api_call *call);
void handle_users_list(struct api_call *call);
void handle_users_get(struct api_call *call);
void handle_users_patch(struct api_call *call);
void handle_users_quota(struct api_call *call);
void handle_api_keys_create(struct api_call *call);
void handle_api_keys_list(struct api_call *call);
void handle_api_keys_delete(struct api_call *call);
void handle_audit_list(struct api_call *call);

void handle_operations_list(struct api_call *call);
void handle_operations_get(struct api_call *call);
void handle_vms_events(struct api_call *call);
void handle_orphans_list(struct api_call *call);
void handle_orphans_collect(struct api_call *call);

void handle_health(struct api_call *call);
void handle_version(struct api_call *call);

#endif
