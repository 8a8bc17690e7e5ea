/*
 * fcgi.h - FastCGI requests to and from the transport-free http types.
 */
#ifndef STRATUS_API_FCGI_H
#define STRATUS_API_FCGI_H

#include <fcgiapp.h>

#include "api/http.h"

/*
 * Fill @out from the params and stdin of @fr.  The body is read only when
 * CONTENT_LENGTH is at most @max_body (else content_length alone tells the
 * dispatcher to answer 413).  The request id comes from HTTP_X_REQUEST_ID,
 * then REQUEST_ID, else is fresh.  Release @out with http_request_release().
 */
void fcgi_read_request(FCGX_Request *fr, unsigned long max_body, struct http_request *out);

/* Write status, headers and body of @resp to @fr. */
void fcgi_write_response(FCGX_Request *fr, const struct http_response *resp);

#endif
