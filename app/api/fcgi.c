#include "api/fcgi.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/mem.h"

/* Declared length; garbage counts as no body, since nginx always sends digits. */
static unsigned long long
content_length(const char *s)
{
    unsigned long long v;
    char *end;

    if (!s || !isdigit((unsigned char)*s))
        return 0;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (*end)
        return 0;
    if (errno == ERANGE)
        return ~0ull;
    return v;
}

/* REQUEST_URI is the raw target (nginx: $request_uri), so // and %2F survive to the router. */
static char *
request_uri(FCGX_Request *fr)
{
    const char *uri = FCGX_GetParam("REQUEST_URI", fr->envp);
    const char *script, *info, *query;

    if (uri && *uri)
        return st_xstrdup(uri);
    script = FCGX_GetParam("SCRIPT_NAME", fr->envp);
    info = FCGX_GetParam("PATH_INFO", fr->envp);
    query = FCGX_GetParam("QUERY_STRING", fr->envp);
    return st_xasprintf("%s%s%s%s", script ? script : "", info ? info : "",
                        query && *query ? "?" : "", query && *query ? query : "");
}

void
fcgi_read_request(FCGX_Request *fr, unsigned long max_body, struct http_request *out)
{
    const char *method = FCGX_GetParam("REQUEST_METHOD", fr->envp);
    const char *ctype = FCGX_GetParam("CONTENT_TYPE", fr->envp);
    unsigned long long declared = content_length(FCGX_GetParam("CONTENT_LENGTH", fr->envp));
    char *uri = request_uri(fr);
    char *body = NULL;
    size_t got = 0;

    if (declared > 0 && declared <= max_body) {
        body = st_xcalloc((size_t)declared + 1, 1);
        while (got < declared) {
            int n = FCGX_GetStr(body + got, (int)(declared - got), fr->in);

            if (n <= 0)
                break;
            got += (size_t)n;
        }
    }
    http_request_init(out, method ? method : "GET", uri, ctype && *ctype ? ctype : NULL, body, got);
    out->content_length = declared;
    http_request_set_id(out, FCGX_GetParam("HTTP_X_REQUEST_ID", fr->envp),
                        FCGX_GetParam("REQUEST_ID", fr->envp));
    http_request_set_auth(out, FCGX_GetParam("HTTP_AUTHORIZATION", fr->envp),
                          FCGX_GetParam("REMOTE_ADDR", fr->envp));
    http_request_set_idempotency_key(out, FCGX_GetParam("HTTP_IDEMPOTENCY_KEY", fr->envp));
    http_request_set_if_match(out, FCGX_GetParam("HTTP_IF_MATCH", fr->envp));
    free(body);
    free(uri);
}

/* libfcgi's own printf lacks %zu, so each line is formatted here first. */
static void
put_line(FCGX_Stream *out, const char *name, const char *value)
{
    char *line = st_xasprintf("%s: %s\r\n", name, value);

    FCGX_PutS(line, out);
    free(line);
}

void
fcgi_write_response(FCGX_Request *fr, const struct http_response *resp)
{
    char buf[64];
    size_t i;

    snprintf(buf, sizeof(buf), "%d %s", resp->status, http_reason(resp->status));
    put_line(fr->out, "Status", buf);
    if (resp->content_type)
        put_line(fr->out, "Content-Type", resp->content_type);
    snprintf(buf, sizeof(buf), "%zu", resp->body_len);
    put_line(fr->out, "Content-Length", buf);
    for (i = 0; i < resp->n_headers; i++)
        put_line(fr->out, resp->headers[i].name, resp->headers[i].value);
    FCGX_PutS("\r\n", fr->out);
    if (resp->body_len)
        FCGX_PutStr(resp->body, (int)resp->body_len, fr->out);
}
