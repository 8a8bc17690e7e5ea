#include "api/handlers.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "api/waitgate.h"
#include "util/mem.h"
#include "util/secret.h"

static const char *const paging_params[] = {"limit", "marker", NULL};
static const char *const owned_list_params[] = {"limit", "marker", "owner_id", NULL};
static const char *const vm_list_params[] = {"limit", "marker", "status", "name", "owner_id", NULL};
static const char *const audit_params[] = {"limit", "marker", "user_id", "target_id", NULL};
static const char *const op_list_params[] = {"limit", "marker", "target_id", "status", NULL};
static const char *const op_get_params[] = {"wait", NULL};
static const char *const action_params[] = {"wait", NULL};
static const char *const collect_params[] = {"dry_run", NULL};

#define USER ROUTE_AUTH_USER
#define ADMIN ROUTE_AUTH_ADMIN
#define ACTION(name)                                                                               \
    {                                                                                              \
        "POST", "/v1/vms/{id}/" name, handle_vms_action, ROUTE_BODY_EMPTY, action_params, USER     \
    }

const struct route api_routes[] = {
    {"GET", "/v1/vms", handle_vms_list, ROUTE_BODY_NONE, vm_list_params, USER},
    {"POST", "/v1/vms", handle_vms_create, ROUTE_BODY_REQUIRED, NULL, USER},
    {"GET", "/v1/vms/{id}", handle_vms_get, ROUTE_BODY_NONE, NULL, USER},
    {"PATCH", "/v1/vms/{id}", handle_vms_patch, ROUTE_BODY_REQUIRED, NULL, USER},
    {"DELETE", "/v1/vms/{id}", handle_vms_delete, ROUTE_BODY_NONE, NULL, USER},
    ACTION("start"),
    ACTION("stop"),
    ACTION("reboot"),
    ACTION("force-stop"),
    ACTION("pause"),
    ACTION("resume"),
    {"GET", "/v1/vms/{id}/events", handle_vms_events, ROUTE_BODY_NONE, paging_params, USER},
    {"GET", "/v1/operations", handle_operations_list, ROUTE_BODY_NONE, op_list_params, USER},
    {"GET", "/v1/operations/{id}", handle_operations_get, ROUTE_BODY_NONE, op_get_params, USER},
    {"GET", "/v1/admin/orphans", handle_orphans_list, ROUTE_BODY_NONE, NULL, ADMIN},
    {"POST", "/v1/admin/orphans/collect", handle_orphans_collect, ROUTE_BODY_EMPTY, collect_params,
     ADMIN},
    {"GET", "/v1/images", handle_images_list, ROUTE_BODY_NONE, owned_list_params, USER},
    {"POST", "/v1/images", handle_images_create, ROUTE_BODY_REQUIRED, NULL, USER},
    {"GET", "/v1/images/{id}", handle_images_get, ROUTE_BODY_NONE, NULL, USER},
    {"DELETE", "/v1/images/{id}", handle_images_delete, ROUTE_BODY_NONE, NULL, USER},
    {"GET", "/v1/flavors", handle_flavors_list, ROUTE_BODY_NONE, paging_params, USER},
    {"POST", "/v1/flavors", handle_flavors_create, ROUTE_BODY_REQUIRED, NULL, ADMIN},
    {"GET", "/v1/flavors/{id}", handle_flavors_get, ROUTE_BODY_NONE, NULL, USER},
    {"DELETE", "/v1/flavors/{id}", handle_flavors_delete, ROUTE_BODY_NONE, NULL, ADMIN},
    {"POST", "/v1/auth/tokens", handle_auth_tokens, ROUTE_BODY_REQUIRED, NULL, ROUTE_AUTH_NONE},
    {"POST", "/v1/users", handle_users_create, ROUTE_BODY_REQUIRED, NULL, ROUTE_AUTH_OPTIONAL},
    {"GET", "/v1/users", handle_users_list, ROUTE_BODY_NONE, paging_params, ADMIN},
    {"GET", "/v1/users/me", handle_users_get, ROUTE_BODY_NONE, NULL, USER},
    {"PATCH", "/v1/users/me", handle_users_patch, ROUTE_BODY_REQUIRED, NULL, USER},
    {"GET", "/v1/users/me/quota", handle_users_quota, ROUTE_BODY_NONE, NULL, USER},
    {"GET", "/v1/users/{id}", handle_users_get, ROUTE_BODY_NONE, NULL, USER},
    {"PATCH", "/v1/users/{id}", handle_users_patch, ROUTE_BODY_REQUIRED, NULL, USER},
    {"GET", "/v1/users/{id}/quota", handle_users_quota, ROUTE_BODY_NONE, NULL, USER},
    {"POST", "/v1/users/me/api-keys", handle_api_keys_create, ROUTE_BODY_REQUIRED, NULL, USER},
    {"GET", "/v1/users/me/api-keys", handle_api_keys_list, ROUTE_BODY_NONE, NULL, USER},
    {"DELETE", "/v1/users/me/api-keys/{id}", handle_api_keys_delete, ROUTE_BODY_NONE, NULL, USER},
    {"GET", "/v1/audit", handle_audit_list, ROUTE_BODY_NONE, audit_params, ADMIN},
    {"GET", "/v1/health", handle_health, ROUTE_BODY_NONE, NULL, ROUTE_AUTH_NONE},
    {"GET", "/v1/version", handle_version, ROUTE_BODY_NONE, NULL, ROUTE_AUTH_NONE},
};

#undef USER
#undef ADMIN

const size_t api_routes_count = ST_ARRAY_LEN(api_routes);

void
api_fail(struct api_call *call, const struct st_error *err)
{
    http_problem(call->resp, call->req->request_id, err, NULL);
}

const char *
api_scope(const struct api_call *call)
{
    if (!call->who)
        BUG("an owner scope was asked for on a route without a caller");
    return principal_is_admin(call->who) ? NULL : call->who->user_id;
}

int
api_list_scope(const struct api_call *call, char out[ST_ID_BUF], const char **scope,
               struct st_error *err)
{
    const char *owner = http_query_get(call->query, "owner_id");
    size_t i;

    *scope = api_scope(call);
    if (!owner)
        return 0;
    if (!principal_is_admin(call->who))
        return st_error_set(err, ST_ERR_FORBIDDEN, "only an admin may filter by owner_id");
    if (!st_uuid_valid(owner))
        return st_error_set(err, ST_ERR_INVALID, "owner_id '%.64s' is not a UUID", owner);
    for (i = 0; i < ST_ID_BUF; i++)
        out[i] = (char)tolower((unsigned char)owner[i]);
    *scope = out;
    return 0;
}

int
api_uuid_param(const struct api_call *call, const char *name, char out[ST_ID_BUF],
               struct st_error *err)
{
    const char *v = http_query_get(call->query, name);
    size_t i;

    out[0] = '\0';
    if (!v)
        return 0;
    if (!st_uuid_valid(v))
        return st_error_set(err, ST_ERR_INVALID, "%s '%.64s' is not a UUID", name, v);
    for (i = 0; i < ST_ID_BUF; i++)
        out[i] = (char)tolower((unsigned char)v[i]);
    return 0;
}

int
api_wait_param(const struct api_call *call, int64_t *out, struct st_error *err)
{
    const char *v = http_query_get(call->query, "wait");
    unsigned n = 0;
    size_t i;

    *out = 0;
    if (!v)
        return 0;
    for (i = 0; v[i]; i++) {
        if (!isdigit((unsigned char)v[i]) || i >= 2)
            return st_error_set(err, ST_ERR_INVALID, "wait '%.32s' is not an integer in 0..60", v);
        n = n * 10 + (unsigned)(v[i] - '0');
    }
    if (i == 0 || n > 60)
        return st_error_set(err, ST_ERR_INVALID, "wait '%.32s' is not an integer in 0..60", v);
    *out = (int64_t)n * 1000;
    return 0;
}

int
api_wait_operation(struct api_call *call, const char *id, int64_t wait_ms, struct operation *out,
                   struct st_error *err)
{
    bool admitted = wait_ms > 0 && waitgate_enter();
    int rc;

    if (wait_ms > 0 && !admitted) {
        /* Every waiting place is taken: the state now, and when to look again. */
        http_response_header(call->resp, "Retry-After", "1");
        wait_ms = 0;
    }
    rc = op_service_get(&call->app->op_svc, api_scope(call), id, wait_ms, out, err);
    if (admitted)
        waitgate_leave();
    return rc;
}

int
api_if_match(const struct api_call *call, uint64_t *expect, struct st_error *err)
{
    const char *v = call->req->if_match;
    unsigned long long n = 0;
    size_t i, len;

    *expect = 0;
    if (!v)
        return 0;
    while (*v == ' ' || *v == '\t')
        v++;
    len = strlen(v);
    while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
        len--;
    if (len == 1 && v[0] == '*')
        return 0;
    if (len < 3 || len > 22 || v[0] != '"' || v[len - 1] != '"')
        goto bad;
    for (i = 1; i < len - 1; i++) {
        if (!isdigit((unsigned char)v[i]))
            goto bad;
        n = n * 10 + (unsigned long long)(v[i] - '0');
    }
    if (n == 0)
        goto bad;
    *expect = n;
    return 0;
bad:
    return st_error_set(err, ST_ERR_INVALID,
                        "If-Match must be * or one entity tag as ETag gives it, like \"3\"; "
                        "got '%.64s'",
                        call->req->if_match);
}

void
api_etag(struct api_call *call, uint64_t revision)
{
    char tag[32];

    snprintf(tag, sizeof(tag), "\"%llu\"", (unsigned long long)revision);
    http_response_header(call->resp, "ETag", tag);
}

/* The credential of "Authorization: Bearer <credential>", or NULL when malformed. */
static const char *
bearer_credential(const char *header)
{
    static const char scheme[] = "Bearer ";
    const char *p;

    if (strncasecmp(header, scheme, sizeof(scheme) - 1) != 0)
        return NULL;
    p = header + sizeof(scheme) - 1;
    while (*p == ' ')
        p++;
    return *p ? p : NULL;
}

/* Who is calling, by the route's rule; 0 when the request may go on. */
static int
authenticate(struct api_call *call, const struct route *route, struct principal *who,
             struct st_error *err)
{
    const char *header = call->req->authorization;
    const char *credential;

    if (route->auth == ROUTE_AUTH_NONE)
        return 0;
    if (!header || !*header) {
        if (route->auth == ROUTE_AUTH_OPTIONAL)
            return 0;
        return st_error_set(err, ST_ERR_UNAUTHENTICATED,
                            "this route needs credentials: send 'Authorization: Bearer <token>'");
    }
    credential = bearer_credential(header);
    if (!credential)
        return st_error_set(err, ST_ERR_UNAUTHENTICATED,
                            "the Authorization header must be 'Bearer <token or API key>'");
    if (user_service_authenticate(&call->app->user_svc, credential, st_now_ms(), who, err) < 0)
        return -1;
    call->who = who;
    if (route->auth == ROUTE_AUTH_ADMIN && !principal_is_admin(who))
        return st_error_set(err, ST_ERR_FORBIDDEN, "only an admin may %s %s", route->method,
                            route->pattern);
    return 0;
}

static int
parse_limit(const char *s, unsigned *out, struct st_error *err)
{
    unsigned long v = 0;
    size_t i;

    for (i = 0; s[i]; i++) {
        if (!isdigit((unsigned char)s[i]) || i >= 4)
            goto bad;
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    if (i == 0 || v < 1 || v > ST_LIST_LIMIT_MAX)
        goto bad;
    *out = (unsigned)v;
    return 0;
bad:
    return st_error_set(err, ST_ERR_INVALID, "limit '%.32s' is not an integer in 1..%d", s,
                        ST_LIST_LIMIT_MAX);
}

int
api_paging(const struct api_call *call, unsigned *limit, char marker[ST_ID_BUF],
           struct st_error *err)
{
    const char *l = http_query_get(call->query, "limit");
    const char *m = http_query_get(call->query, "marker");
    size_t i;

    *limit = ST_LIST_LIMIT_DEFAULT;
    marker[0] = '\0';
    if (l && parse_limit(l, limit, err) < 0)
        return -1;
    if (m) {
        if (!st_uuid_valid(m))
            return st_error_set(err, ST_ERR_INVALID, "marker '%.64s' is not a UUID", m);
        for (i = 0; i < ST_ID_BUF; i++)
            marker[i] = (char)tolower((unsigned char)m[i]);
    }
    return 0;
}

void
api_created(struct api_call *call, const char *collection, const char *id, json_t *doc)
{
    char *location = st_xasprintf("%s/%s", collection, id);

    http_response_json(call->resp, 201, doc);
    http_response_header(call->resp, "Location", location);
    free(location);
}

void
api_list_reply(struct api_call *call, json_t *items, const char *next_marker)
{
    json_t *doc = json_object();

    json_object_set_new(doc, "items", items);
    json_object_set_new(doc, "next_marker", next_marker ? json_string(next_marker) : json_null());
    http_response_json(call->resp, 200, doc);
}

/* Body rules of @route; on success *out is the parsed object or NULL. */
static int
parse_body(const struct http_request *req, const struct route *route, json_t **out,
           struct st_error *err)
{
    json_error_t jerr;
    json_t *doc;

    *out = NULL;
    if (route->body == ROUTE_BODY_NONE)
        return 0;
    if (req->body_len == 0) {
        if (route->body == ROUTE_BODY_REQUIRED)
            return st_error_set(err, ST_ERR_INVALID, "request body is required");
        return 0;
    }
    doc = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc)
        return st_error_set(err, ST_ERR_INVALID,
                            "request body is not valid JSON: %s (line %d, column %d, byte %d)",
                            jerr.text, jerr.line, jerr.column, jerr.position);
    if (!json_is_object(doc)) {
        json_decref(doc);
        return st_error_set(err, ST_ERR_INVALID, "request body must be a JSON object");
    }
    if (route->body == ROUTE_BODY_EMPTY && json_object_size(doc) > 0) {
        st_error_set(err, ST_ERR_INVALID, "this action takes no members, got '%.64s'",
                     json_object_iter_key(json_object_iter(doc)));
        json_decref(doc);
        return -1;
    }
    *out = doc;
    return 0;
}

/* Everything before the handler; 0 when the handler should run. */
static int
prepare(struct api_call *call, struct route_match *match, struct principal *who,
        struct http_query *query, json_t **body)
{
    const struct http_request *req = call->req;
    struct app *app = call->app;
    struct st_error err;
    char *detail;

    memset(&err, 0, sizeof(err));
    if (req->content_length > app->cfg.max_body_bytes || req->body_len > app->cfg.max_body_bytes) {
        detail =
            st_xasprintf("request body of %llu bytes exceeds the limit of %lu bytes",
                         req->content_length > req->body_len ? req->content_length
                                                             : (unsigned long long)req->body_len,
                         app->cfg.max_body_bytes);
        http_problem_status(call->resp, req->request_id, 413, detail);
        free(detail);
        return -1;
    }
    switch (router_match(api_routes, api_routes_count, req->method, req->path, match)) {
    case ROUTER_FOUND:
        break;
    case ROUTER_NOT_FOUND:
        st_error_set(&err, ST_ERR_NOT_FOUND, "no resource at '%.200s'", req->path);
        api_fail(call, &err);
        return -1;
    case ROUTER_METHOD_NOT_ALLOWED:
        detail = st_xasprintf("method '%.16s' is not allowed here; allowed: %s", req->method,
                              match->allow);
        http_problem_status(call->resp, req->request_id, 405, detail);
        http_response_header(call->resp, "Allow", match->allow);
        free(detail);
        return -1;
    }
    if (authenticate(call, match->route, who, &err) < 0) {
        api_fail(call, &err);
        return -1;
    }
    if (http_query_parse(req->query, query, &err) < 0 ||
        http_query_check(query,
                         match->route->params ? match->route->params : (const char *const[]){NULL},
                         &err) < 0) {
        api_fail(call, &err);
        return -1;
    }
    if (match->route->body != ROUTE_BODY_NONE && req->body_len > 0 &&
        !http_content_type_is_json(req->content_type)) {
        detail = st_xasprintf("Content-Type must be application/json, got '%.64s'",
                              req->content_type ? req->content_type : "");
        http_problem_status(call->resp, req->request_id, 415, detail);
        free(detail);
        return -1;
    }
    if (parse_body(req, match->route, body, &err) < 0) {
        api_fail(call, &err);
        return -1;
    }
    return 0;
}

/* A duplicate waits at most this long (and never past wait_max_s) for the first's answer. */
#define IDEM_WAIT_MS 15000
#define IDEM_POLL_MS 100

/* SHA-256 of what makes two requests the same request. */
static void
idem_hash(const struct http_request *req, char out[ST_HASH_HEX_BUF])
{
    char *head = st_xasprintf("%s %s?%s\n", req->method, req->path, req->query);
    size_t hlen = strlen(head);
    char *all = st_xcalloc(hlen + req->body_len + 1, 1);

    memcpy(all, head, hlen);
    if (req->body_len)
        memcpy(all + hlen, req->body, req->body_len);
    secret_sha256_hex(all, hlen + req->body_len, out);
    free(all);
    free(head);
}

/* Answer with what the first request with this key got. */
static void
idem_replay(struct api_call *call, const struct idem_record *rec)
{
    struct http_response *resp = call->resp;

    resp->status = rec->status;
    resp->content_type = rec->status >= 400 ? "application/problem+json" : "application/json";
    free(resp->body);
    resp->body = rec->body ? st_xstrdup(rec->body) : NULL;
    resp->body_len = rec->body ? strlen(rec->body) : 0;
    if (!resp->body)
        resp->content_type = NULL;
    if (rec->location)
        http_response_header(resp, "Location", rec->location);
    http_response_header(resp, "Idempotent-Replayed", "true");
}

/*
 * The wait of a duplicate for the first request's answer: it holds one of
 * the pool's waiting places for at most min(IDEM_WAIT_MS, wait_max_s).
 * Returns with *res still IDEM_IN_PROGRESS when the answer did not come
 * (or no place was free: then Retry-After is set).
 */
static int
idem_wait(struct api_call *call, const char *hash, enum idem_begin_result *res,
          struct idem_record *rec, struct st_error *err)
{
    const struct http_request *req = call->req;
    int64_t bound = (int64_t)call->app->cfg.wait_max_s * 1000;
    int64_t deadline;
    int rc = 0;

    if (!waitgate_enter()) {
        http_response_header(call->resp, "Retry-After", "1");
        return 0;
    }
    deadline = st_monotonic_ms() + (bound < IDEM_WAIT_MS ? bound : IDEM_WAIT_MS);
    while (*res == IDEM_IN_PROGRESS && st_monotonic_ms() < deadline) {
        st_sleep_ms(IDEM_POLL_MS);
        idem_record_release(rec);
        rc = idem_service_begin(&call->app->idem_svc, call->who->user_id, req->idempotency_key,
                                hash, res, rec, err);
        if (rc < 0)
            break;
    }
    waitgate_leave();
    if (*res == IDEM_IN_PROGRESS)
        http_response_header(call->resp, "Retry-After", "1");
    return rc;
}

/*
 * An Idempotency-Key on a POST: 1 when the request was answered here (a
 * replay, a reused key, a duplicate still running), 0 when the handler
 * should run and idem_end() store its answer.
 */
static int
idem_start(struct api_call *call, bool *recorded)
{
    const struct http_request *req = call->req;
    enum idem_begin_result res = IDEM_NEW;
    char hash[ST_HASH_HEX_BUF];
    struct st_error err = {0};
    struct idem_record rec;
    char *detail;

    *recorded = false;
    if (!req->idempotency_key || strcmp(req->method, "POST") != 0 || !call->who)
        return 0;
    if (!idem_key_valid(req->idempotency_key)) {
        st_error_set(&err, ST_ERR_INVALID,
                     "Idempotency-Key must be 1 to 255 printable characters without spaces");
        api_fail(call, &err);
        return 1;
    }
    idem_hash(req, hash);
    if (idem_service_begin(&call->app->idem_svc, call->who->user_id, req->idempotency_key, hash,
                           &res, &rec, &err) < 0 ||
        (res == IDEM_IN_PROGRESS && idem_wait(call, hash, &res, &rec, &err) < 0)) {
        idem_record_release(&rec);
        api_fail(call, &err);
        return 1;
    }
    switch (res) {
    case IDEM_NEW:
        idem_record_release(&rec);
        *recorded = true;
        return 0;
    case IDEM_DONE:
        idem_replay(call, &rec);
        break;
    case IDEM_MISMATCH:
        detail = st_xasprintf("Idempotency-Key '%.64s' was used with a different request",
                              req->idempotency_key);
        http_problem_status(call->resp, req->request_id, 422, detail);
        free(detail);
        break;
    case IDEM_IN_PROGRESS:
        st_error_set(&err, ST_ERR_CONFLICT,
                     "a request with Idempotency-Key '%.64s' is still being served: retry",
                     req->idempotency_key);
        api_fail(call, &err);
        break;
    }
    idem_record_release(&rec);
    return 1;
}

/* Keep the answer for retries; a 5xx is forgotten so that a retry runs again. */
static void
idem_end(struct api_call *call)
{
    const struct http_response *resp = call->resp;
    struct st_error err = {0};

    if (idem_service_finish(&call->app->idem_svc, call->who->user_id, call->req->idempotency_key,
                            resp->status, resp->body, http_response_get_header(resp, "Location"),
                            &err) < 0)
        api_log(API_LOG_ERROR, "idempotency record of request %s not stored: %s",
                call->req->request_id, err.msg);
}

static bool
method_mutates(const char *method)
{
    return strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0;
}

/* The id a create answered with: the last segment of its Location. */
static void
target_from_location(const struct http_response *resp, char out[ST_ID_BUF])
{
    const char *loc = http_response_get_header(resp, "Location");
    const char *last = loc ? strrchr(loc, '/') : NULL;

    if (last && st_uuid_valid(last + 1))
        memcpy(out, last + 1, ST_ID_BUF);
}

/*
 * Append the finished request to the audit log.  It has happened already,
 * so a log that cannot be written is reported loudly, not answered.
 */
static void
audit(struct api_call *call, const struct route_match *match)
{
    const struct http_request *req = call->req;
    struct st_error err = {0};
    struct audit_entry e;

    memset(&e, 0, sizeof(e));
    if (call->who)
        memcpy(e.user_id, call->who->user_id, ST_ID_BUF);
    st_strlcpy(e.method, req->method, sizeof(e.method));
    st_strlcpy(e.route, req->path, sizeof(e.route));
    if (call->target_id[0])
        memcpy(e.target_id, call->target_id, ST_ID_BUF);
    else if (match->route && match->n_ids > 0)
        memcpy(e.target_id, match->ids[match->n_ids - 1], ST_ID_BUF);
    else
        target_from_location(call->resp, e.target_id);
    e.status = call->resp->status;
    st_strlcpy(e.request_id, req->request_id, sizeof(e.request_id));
    st_strlcpy(e.client_addr, req->client_addr ? req->client_addr : "", sizeof(e.client_addr));
    if (audit_service_record(&call->app->audit_svc, &e, &err) < 0)
        api_log(API_LOG_ERROR, "audit entry for %s %s (request %s) not written: %s", e.method,
                e.route, e.request_id, err.msg);
}

void
api_dispatch(struct app *app, const struct http_request *req, struct http_response *resp)
{
    struct api_call call = {.app = app, .req = req, .resp = resp};
    struct http_query query = {NULL, 0};
    struct route_match match;
    struct principal who;
    struct st_error err;
    json_t *body = NULL;
    bool idem = false;

    memset(&err, 0, sizeof(err));
    memset(&match, 0, sizeof(match));
    if (!app->pools_ready && app_ensure_pools(app, &err) < 0)
        api_log(API_LOG_DEBUG, "storage pools still not ready: %s", err.msg);
    /* Before any route: a login must sign with the key that is current now. */
    app_refresh_keys(app);
    if (prepare(&call, &match, &who, &query, &body) == 0 && idem_start(&call, &idem) == 0) {
        call.match = &match;
        call.body = body;
        call.query = &query;
        match.route->handler(&call);
        if (resp->status == 500 && !resp->body) {
            st_error_set(&err, ST_ERR_INTERNAL, "the handler set no response");
            api_fail(&call, &err);
        }
        if (idem)
            idem_end(&call);
    }
    if (method_mutates(req->method))
        audit(&call, &match);
    http_response_header(resp, "X-Request-Id", req->request_id);
    json_decref(body);
    http_query_release(&query);
}
