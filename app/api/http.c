#include "api/http.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/ids.h"
#include "util/mem.h"

/*
 * The one table from error codes to HTTP.  Rows with ST_ERR_OK are
 * transport problems that no service reports.  The slug of a code row is
 * st_err_code_name() of its code, so the type URI names the code.
 */
static const struct problem_kind {
    enum st_err_code code;
    int status;
    const char *slug;
    const char *title;
} problem_kinds[] = {
    {ST_ERR_INVALID, 400, "invalid", "Invalid request"},
    {ST_ERR_NOT_FOUND, 404, "not_found", "Not found"},
    {ST_ERR_CONFLICT, 409, "conflict", "Conflict"},
    {ST_ERR_FORBIDDEN, 403, "forbidden", "Forbidden"},
    {ST_ERR_UNSUPPORTED, 501, "unsupported", "Not supported"},
    {ST_ERR_UNAVAILABLE, 503, "unavailable", "Service unavailable"},
    {ST_ERR_BACKEND, 502, "backend", "Backend failure"},
    {ST_ERR_INTERNAL, 500, "internal", "Internal error"},
    {ST_ERR_UNAUTHENTICATED, 401, "unauthenticated", "Unauthorized"},
    {ST_ERR_THROTTLED, 429, "throttled", "Too many requests"},
    {ST_ERR_STALE, 409, "stale", "Changed meanwhile"},
    {ST_ERR_PRECONDITION, 412, "precondition_failed", "Precondition failed"},
    {ST_ERR_OK, 405, "method_not_allowed", "Method not allowed"},
    {ST_ERR_OK, 413, "payload_too_large", "Payload too large"},
    {ST_ERR_OK, 415, "unsupported_media_type", "Unsupported media type"},
    {ST_ERR_OK, 422, "idempotency_key_reused", "Idempotency key reused"},
};

static const struct problem_kind *
kind_of_code(enum st_err_code code)
{
    size_t i;

    for (i = 0; i < ST_ARRAY_LEN(problem_kinds); i++)
        if (problem_kinds[i].code == code && code != ST_ERR_OK)
            return &problem_kinds[i];
    /* A failure without a code is our bug: answer as internal. */
    return kind_of_code(ST_ERR_INTERNAL);
}

static const struct problem_kind *
kind_of_status(int status)
{
    size_t i;

    for (i = 0; i < ST_ARRAY_LEN(problem_kinds); i++)
        if (problem_kinds[i].status == status)
            return &problem_kinds[i];
    return kind_of_code(ST_ERR_INTERNAL);
}

int
http_status_of(enum st_err_code code)
{
    return kind_of_code(code)->status;
}

const char *
http_reason(int status)
{
    static const struct {
        int status;
        const char *reason;
    } reasons[] = {
        {200, "OK"},
        {201, "Created"},
        {204, "No Content"},
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {405, "Method Not Allowed"},
        {409, "Conflict"},
        {413, "Content Too Large"},
        {202, "Accepted"},
        {415, "Unsupported Media Type"},
        {422, "Unprocessable Content"},
        {429, "Too Many Requests"},
        {500, "Internal Server Error"},
        {501, "Not Implemented"},
        {502, "Bad Gateway"},
        {503, "Service Unavailable"},
    };
    size_t i;

    for (i = 0; i < ST_ARRAY_LEN(reasons); i++)
        if (reasons[i].status == status)
            return reasons[i].reason;
    return "Unknown";
}

void
http_request_init(struct http_request *req, const char *method, const char *uri,
                  const char *content_type, const char *body, size_t body_len)
{
    const char *q;

    memset(req, 0, sizeof(*req));
    uri = uri ? uri : "";
    q = strchr(uri, '?');
    req->method = st_xstrdup(method);
    req->path = q ? strndup(uri, (size_t)(q - uri)) : st_xstrdup(uri);
    if (!req->path)
        BUG("out of memory");
    req->query = st_xstrdup(q ? q + 1 : "");
    req->content_type = content_type ? st_xstrdup(content_type) : NULL;
    if (body) {
        req->body = st_xcalloc(body_len + 1, 1);
        memcpy(req->body, body, body_len);
        req->body_len = body_len;
    }
    req->content_length = body_len;
    http_request_set_id(req, NULL, NULL);
}

void
http_request_release(struct http_request *req)
{
    if (!req)
        return;
    free(req->method);
    free(req->path);
    free(req->query);
    free(req->content_type);
    free(req->body);
    free(req->authorization);
    free(req->client_addr);
    free(req->idempotency_key);
    free(req->if_match);
    memset(req, 0, sizeof(*req));
}

void
http_request_set_idempotency_key(struct http_request *req, const char *key)
{
    free(req->idempotency_key);
    req->idempotency_key = key ? st_xstrdup(key) : NULL;
}

void
http_request_set_if_match(struct http_request *req, const char *value)
{
    free(req->if_match);
    req->if_match = value ? st_xstrdup(value) : NULL;
}

void
http_request_set_auth(struct http_request *req, const char *authorization, const char *client_addr)
{
    free(req->authorization);
    free(req->client_addr);
    req->authorization = authorization ? st_xstrdup(authorization) : NULL;
    req->client_addr = client_addr ? st_xstrdup(client_addr) : NULL;
}

bool
http_request_id_valid(const char *s)
{
    size_t i;

    if (!s || !*s)
        return false;
    for (i = 0; s[i]; i++) {
        if (i >= HTTP_REQUEST_ID_MAX)
            return false;
        if (!isalnum((unsigned char)s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-')
            return false;
    }
    return true;
}

void
http_request_set_id(struct http_request *req, const char *x_request_id, const char *server_id)
{
    char uuid[ST_ID_BUF];

    if (http_request_id_valid(x_request_id)) {
        st_strlcpy(req->request_id, x_request_id, sizeof(req->request_id));
    } else if (http_request_id_valid(server_id)) {
        st_strlcpy(req->request_id, server_id, sizeof(req->request_id));
    } else {
        st_uuid_generate(uuid);
        st_strlcpy(req->request_id, uuid, sizeof(req->request_id));
    }
}

void
http_response_init(struct http_response *resp)
{
    memset(resp, 0, sizeof(*resp));
    resp->status = 500;
}

void
http_response_release(struct http_response *resp)
{
    size_t i;

    if (!resp)
        return;
    for (i = 0; i < resp->n_headers; i++) {
        free(resp->headers[i].name);
        free(resp->headers[i].value);
    }
    free(resp->body);
    memset(resp, 0, sizeof(*resp));
}

void
http_response_header(struct http_response *resp, const char *name, const char *value)
{
    size_t i;

    for (i = 0; i < resp->n_headers; i++) {
        if (strcasecmp(resp->headers[i].name, name) == 0) {
            free(resp->headers[i].value);
            resp->headers[i].value = st_xstrdup(value);
            return;
        }
    }
    if (resp->n_headers == HTTP_MAX_HEADERS)
        BUG("too many response headers");
    resp->headers[resp->n_headers].name = st_xstrdup(name);
    resp->headers[resp->n_headers].value = st_xstrdup(value);
    resp->n_headers++;
}

const char *
http_response_get_header(const struct http_response *resp, const char *name)
{
    size_t i;

    for (i = 0; i < resp->n_headers; i++)
        if (strcasecmp(resp->headers[i].name, name) == 0)
            return resp->headers[i].value;
    return NULL;
}

static void
set_body(struct http_response *resp, int status, const char *content_type, json_t *doc)
{
    static const char fallback[] =
        "{\"type\":\"" HTTP_PROBLEM_TYPE_BASE
        "internal\",\"title\":\"Internal error\",\"status\":500,\"detail\":\"cannot encode the response\"}";
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;

    json_decref(doc);
    free(resp->body);
    if (!text) {
        status = 500;
        content_type = "application/problem+json";
        text = st_xstrdup(fallback);
    }
    resp->status = status;
    resp->content_type = content_type;
    resp->body = text;
    resp->body_len = strlen(text);
}

void
http_response_json(struct http_response *resp, int status, json_t *doc)
{
    set_body(resp, status, "application/json", doc);
}

void
http_response_empty(struct http_response *resp, int status)
{
    free(resp->body);
    resp->body = NULL;
    resp->body_len = 0;
    resp->content_type = NULL;
    resp->status = status;
}

json_t *
http_json_string(const char *s)
{
    json_t *str = json_string(s ? s : "");
    char *copy;
    size_t i;

    if (str)
        return str;
    /* Not UTF-8 (a quoted query value, a cut message): keep the ASCII. */
    copy = st_xstrdup(s);
    for (i = 0; copy[i]; i++)
        if ((unsigned char)copy[i] >= 0x80)
            copy[i] = '?';
    str = json_string(copy);
    free(copy);
    return str;
}

static void
problem(struct http_response *resp, const struct problem_kind *kind, const char *request_id,
        const char *detail, json_t *extra)
{
    json_t *doc = json_object();
    char *type = st_xasprintf(HTTP_PROBLEM_TYPE_BASE "%s", kind->slug);

    json_object_set_new(doc, "type", json_string(type));
    json_object_set_new(doc, "title", json_string(kind->title));
    json_object_set_new(doc, "status", json_integer(kind->status));
    json_object_set_new(doc, "detail", http_json_string(detail));
    json_object_set_new(doc, "request_id", http_json_string(request_id));
    if (extra) {
        if (json_is_string(json_object_get(extra, "type")))
            json_object_set(doc, "type", json_object_get(extra, "type"));
        json_object_update_missing(doc, extra);
    }
    json_decref(extra);
    free(type);
    set_body(resp, kind->status, "application/problem+json", doc);
    if (kind->status == 503)
        http_response_header(resp, "Retry-After", "5");
    if (kind->status == 401)
        http_response_header(resp, "WWW-Authenticate", "Bearer realm=\"stratus\"");
}

void
http_problem(struct http_response *resp, const char *request_id, const struct st_error *err,
             json_t *extra)
{
    const struct problem_kind *kind = kind_of_code(err->code);

    problem(resp, kind, request_id, err->msg[0] ? err->msg : kind->title, extra);
}

void
http_problem_status(struct http_response *resp, const char *request_id, int status,
                    const char *detail)
{
    problem(resp, kind_of_status(status), request_id, detail, NULL);
}

static int
hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decode @n bytes of @s into a new string, or NULL with @err filled. */
static char *
percent_decode(const char *s, size_t n, struct st_error *err)
{
    char *out = st_xcalloc(n + 1, 1);
    size_t i, o = 0;

    for (i = 0; i < n; i++) {
        int hi, lo;

        if (s[i] == '+') {
            out[o++] = ' ';
            continue;
        }
        if (s[i] != '%') {
            out[o++] = s[i];
            continue;
        }
        hi = i + 2 < n ? hex_value(s[i + 1]) : -1;
        lo = i + 2 < n ? hex_value(s[i + 2]) : -1;
        if (hi < 0 || lo < 0) {
            free(out);
            st_error_set(err, ST_ERR_INVALID, "query string has a bad percent escape at '%.8s'",
                         s + i);
            return NULL;
        }
        if (hi == 0 && lo == 0) {
            free(out);
            st_error_set(err, ST_ERR_INVALID, "query string contains an encoded NUL (%%00)");
            return NULL;
        }
        out[o++] = (char)(hi * 16 + lo);
        i += 2;
    }
    out[o] = '\0';
    return out;
}

int
http_query_parse(const char *raw, struct http_query *out, struct st_error *err)
{
    struct http_query q = {NULL, 0};
    const char *p = raw ? raw : "";

    while (*p) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        size_t nlen = eq ? (size_t)(eq - p) : len;
        struct http_param param;

        if (len > 0) {
            if (q.count == HTTP_MAX_QUERY_PARAMS) {
                st_error_set(err, ST_ERR_INVALID, "query string has more than %d parameters",
                             HTTP_MAX_QUERY_PARAMS);
                goto fail;
            }
            param.name = percent_decode(p, nlen, err);
            param.value = param.name
                              ? percent_decode(eq ? eq + 1 : p + len, eq ? len - nlen - 1 : 0, err)
                              : NULL;
            if (!param.value) {
                free(param.name);
                goto fail;
            }
            if (http_query_get(&q, param.name)) {
                st_error_set(err, ST_ERR_INVALID, "query parameter '%.64s' is given more than once",
                             param.name);
                free(param.name);
                free(param.value);
                goto fail;
            }
            q.params = realloc(q.params, (q.count + 1) * sizeof(*q.params));
            if (!q.params)
                BUG("out of memory");
            q.params[q.count++] = param;
        }
        p += len;
        if (*p == '&')
            p++;
    }
    *out = q;
    return 0;
fail:
    http_query_release(&q);
    return -1;
}

void
http_query_release(struct http_query *q)
{
    size_t i;

    if (!q)
        return;
    for (i = 0; i < q->count; i++) {
        free(q->params[i].name);
        free(q->params[i].value);
    }
    free(q->params);
    q->params = NULL;
    q->count = 0;
}

const char *
http_query_get(const struct http_query *q, const char *name)
{
    size_t i;

    for (i = 0; i < q->count; i++)
        if (strcmp(q->params[i].name, name) == 0)
            return q->params[i].value;
    return NULL;
}

int
http_query_check(const struct http_query *q, const char *const *allowed, struct st_error *err)
{
    size_t i, j;

    for (i = 0; i < q->count; i++) {
        bool known = false;

        for (j = 0; allowed[j] && !known; j++)
            known = strcmp(q->params[i].name, allowed[j]) == 0;
        if (!known)
            return st_error_set(err, ST_ERR_INVALID, "unknown query parameter '%.64s'",
                                q->params[i].name);
    }
    return 0;
}

bool
http_content_type_is_json(const char *content_type)
{
    const char *p = content_type;
    static const char json[] = "application/json";

    if (!p)
        return false;
    while (*p == ' ' || *p == '\t')
        p++;
    if (strncasecmp(p, json, sizeof(json) - 1) != 0)
        return false;
    p += sizeof(json) - 1;
    while (*p == ' ' || *p == '\t')
        p++;
    return *p == '\0' || *p == ';';
}
