#include "api/router.h"

#include <ctype.h>
#include <string.h>

#include "util/mem.h"

/*
 * Match @path against @pattern; captures go to @m.  Both are compared
 * segment by segment so "/v1/vms" never matches "/v1/vmsx".
 */
static bool
pattern_matches(const char *pattern, const char *path, struct route_match *m)
{
    size_t n_ids = 0;

    while (*pattern && *path) {
        const char *pend, *send;
        size_t plen, slen;

        if (*pattern != '/' || *path != '/')
            return false;
        pattern++;
        path++;
        pend = strchrnul(pattern, '/');
        send = strchrnul(path, '/');
        plen = (size_t)(pend - pattern);
        slen = (size_t)(send - path);
        if (slen == 0)
            return false;
        if (plen == 4 && memcmp(pattern, "{id}", 4) == 0) {
            char id[ST_ID_BUF];
            size_t i;

            if (slen != ST_ID_LEN || n_ids == ROUTER_MAX_IDS)
                return false;
            for (i = 0; i < ST_ID_LEN; i++)
                id[i] = (char)tolower((unsigned char)path[i]);
            id[ST_ID_LEN] = '\0';
            if (!st_uuid_valid(id))
                return false;
            memcpy(m->ids[n_ids++], id, ST_ID_BUF);
        } else if (plen != slen || memcmp(pattern, path, plen) != 0) {
            return false;
        }
        pattern = pend;
        path = send;
    }
    if (*pattern || *path)
        return false;
    m->n_ids = n_ids;
    return true;
}

static void
allow_add(char *allow, const char *method)
{
    char *p = strstr(allow, method);
    size_t mlen = strlen(method);

    /* Already listed (as a whole word)? */
    while (p) {
        if ((p == allow || p[-1] == ' ') && (p[mlen] == '\0' || p[mlen] == ','))
            return;
        p = strstr(p + 1, method);
    }
    if (*allow)
        strncat(allow, ", ", ROUTER_ALLOW_BUF - strlen(allow) - 1);
    strncat(allow, method, ROUTER_ALLOW_BUF - strlen(allow) - 1);
}

enum router_result
router_match(const struct route *routes, size_t n_routes, const char *method, const char *path,
             struct route_match *out)
{
    struct route_match m;
    bool path_known = false;
    size_t i;

    memset(&m, 0, sizeof(m));
    for (i = 0; i < n_routes; i++) {
        struct route_match cand;

        memset(&cand, 0, sizeof(cand));
        if (!pattern_matches(routes[i].pattern, path, &cand))
            continue;
        if (strcmp(routes[i].method, method) == 0) {
            cand.route = &routes[i];
            *out = cand;
            return ROUTER_FOUND;
        }
        path_known = true;
        allow_add(m.allow, routes[i].method);
    }
    *out = m;
    return path_known ? ROUTER_METHOD_NOT_ALLOWED : ROUTER_NOT_FOUND;
}
