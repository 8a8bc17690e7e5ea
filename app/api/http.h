/*
 * http.h - requests and responses without a transport.
 *
 * The FastCGI glue fills a struct http_request and writes out a struct
 * http_response; handlers and tests see only these.  This is also the one
 * place that maps enum st_err_code to an HTTP status and an RFC 9457
 * problem document.
 */
#ifndef STRATUS_API_HTTP_H
#define STRATUS_API_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "util/err.h"

#define HTTP_REQUEST_ID_MAX 64
#define HTTP_MAX_HEADERS 8
#define HTTP_MAX_QUERY_PARAMS 32
#define HTTP_PROBLEM_TYPE_BASE "https://stratus.dev/problems/"

/* One request; every pointer is owned.  Release with http_request_release(). */
struct http_request {
    char *method;       /* as received: "GET", ... */
    char *path;         /* raw path, before any '?' */
    char *query;        /* raw query string without the '?'; "" when none */
    char *content_type; /* NULL when absent */
    char *body;         /* NUL-terminated copy (NULs may occur inside); NULL when none */
    size_t body_len;
    /* Declared length; when larger than the limit the body is not read. */
    unsigned long long content_length;
    char request_id[HTTP_REQUEST_ID_MAX + 1];
    char *authorization;   /* the Authorization header; NULL when absent */
    char *client_addr;     /* the peer as nginx saw it; NULL when unknown */
    char *idempotency_key; /* the Idempotency-Key header; NULL when absent */
    char *if_match;        /* the If-Match header; NULL when absent */
};

/*
 * Fill @req from a method, a request URI ("/v1/vms?limit=5"), an optional
 * content type and an optional body (copied; content_length = @body_len).
 * A fresh request id is generated; see http_request_set_id().
 */
void http_request_init(struct http_request *req, const char *method, const char *uri,
                       const char *content_type, const char *body, size_t body_len);
void http_request_release(struct http_request *req);

/* Set (copy) the Authorization header and the client address; NULL clears. */
void http_request_set_auth(struct http_request *req, const char *authorization,
                           const char *client_addr);
/* Set (copy) the Idempotency-Key header; NULL clears. */
void http_request_set_idempotency_key(struct http_request *req, const char *key);
/* Set (copy) the If-Match header; NULL clears. */
void http_request_set_if_match(struct http_request *req, const char *value);

/* True for 1..64 characters of [A-Za-z0-9._-]. */
bool http_request_id_valid(const char *s);

/*
 * Choose the request id: @x_request_id (the client's header) when valid,
 * else @server_id (nginx's $request_id) when valid, else a fresh UUID.
 * Either may be NULL.
 */
void http_request_set_id(struct http_request *req, const char *x_request_id, const char *server_id);

struct http_header {
    char *name;
    char *value;
};

/* One response; owned members.  Release with http_response_release(). */
struct http_response {
    int status;
    const char *content_type; /* a literal; NULL when there is no body */
    char *body;
    size_t body_len;
    struct http_header headers[HTTP_MAX_HEADERS];
    size_t n_headers;
};

void http_response_init(struct http_response *resp);
void http_response_release(struct http_response *resp);
/* Add (or replace) a header; both strings are copied. */
void http_response_header(struct http_response *resp, const char *name, const char *value);
/* NULL when absent. */
const char *http_response_get_header(const struct http_response *resp, const char *name);
/* A JSON body (application/json); steals @doc. */
void http_response_json(struct http_response *resp, int status, json_t *doc);
/* No body (204 and the like). */
void http_response_empty(struct http_response *resp, int status);

/* The status of an error code (ST_ERR_INVALID -> 400, ...). */
int http_status_of(enum st_err_code code);
/* "Not Found", ...; "Unknown" for statuses we never send. */
const char *http_reason(int status);

/*
 * A problem document for @err: type, title, status, detail (the error's
 * message), request_id, plus the members of @extra (stolen; may be NULL);
 * a "type" in @extra replaces the code's own.  503 also gets Retry-After,
 * 401 a WWW-Authenticate challenge.
 */
void http_problem(struct http_response *resp, const char *request_id, const struct st_error *err,
                  json_t *extra);
/* The same for statuses that have no error code (405, 413, 415). */
void http_problem_status(struct http_response *resp, const char *request_id, int status,
                         const char *detail);

/* A JSON string for @s; bytes that are not UTF-8 become '?'.  New reference. */
json_t *http_json_string(const char *s);

struct http_param {
    char *name;
    char *value;
};

/* A decoded query string.  Release with http_query_release(). */
struct http_query {
    struct http_param *params;
    size_t count;
};

/*
 * Split and percent-decode @raw ('+' is a space).  Refuses bad escapes,
 * encoded NULs, repeated names and more than HTTP_MAX_QUERY_PARAMS
 * parameters with ST_ERR_INVALID.
 */
int http_query_parse(const char *raw, struct http_query *out, struct st_error *err);
void http_query_release(struct http_query *q);
/* Value of @name or NULL. */
const char *http_query_get(const struct http_query *q, const char *name);
/* ST_ERR_INVALID naming the first parameter not in NULL-terminated @allowed. */
int http_query_check(const struct http_query *q, const char *const *allowed, struct st_error *err);

/* application/json, any case, parameters allowed. */
bool http_content_type_is_json(const char *content_type);

#endif
