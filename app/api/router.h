/*
 * router.h - a static table of routes: method + pattern -> handler.
 *
 * Patterns are absolute paths whose segments are literals or `{id}`; an
 * {id} segment matches only a canonical UUID (captured in lower case), so
 * an id that cannot exist routes nowhere (404).  Empty segments (double or
 * trailing slashes) never match.
 */
#ifndef STRATUS_API_ROUTER_H
#define STRATUS_API_ROUTER_H

#include <stddef.h>

#include "util/ids.h"

#define ROUTER_MAX_IDS 2
#define ROUTER_ALLOW_BUF 64

struct api_call;
typedef void (*route_handler)(struct api_call *call);

/* What the dispatcher checks about the body before the handler runs. */
enum route_body {
    ROUTE_BODY_NONE = 0, /* any body is ignored (GET, DELETE) */
    ROUTE_BODY_REQUIRED, /* a JSON object must be sent (creates, PATCH) */
    ROUTE_BODY_EMPTY,    /* nothing, or exactly {} (actions) */
};

/* Who may call a route; the dispatcher checks it before anything else. */
enum route_auth {
    ROUTE_AUTH_USER = 0, /* any authenticated, active user */
    ROUTE_AUTH_ADMIN,    /* admins only (403 for others) */
    ROUTE_AUTH_OPTIONAL, /* anyone; the caller is known when credentials are sent */
    ROUTE_AUTH_NONE,     /* anyone; credentials are not even looked at */
};

struct route {
    const char *method;
    const char *pattern;
    route_handler handler;
    enum route_body body;
    const char *const *params; /* allowed query parameters, NULL-terminated; NULL = none */
    enum route_auth auth;
};

enum router_result {
    ROUTER_FOUND = 0,
    ROUTER_NOT_FOUND,          /* no pattern matches the path */
    ROUTER_METHOD_NOT_ALLOWED, /* a pattern matches, but not with this method */
};

struct route_match {
    const struct route *route;           /* set when ROUTER_FOUND */
    char ids[ROUTER_MAX_IDS][ST_ID_BUF]; /* {id} captures in order */
    size_t n_ids;
    char allow[ROUTER_ALLOW_BUF]; /* "GET, POST" when ROUTER_METHOD_NOT_ALLOWED */
};

enum router_result router_match(const struct route *routes, size_t n_routes, const char *method,
                                const char *path, struct route_match *out);

#endif
