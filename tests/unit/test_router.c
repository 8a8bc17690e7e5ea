/*
 * test_router.c - route matching, {id} capture, 404 and 405 with Allow.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "api/handlers.h"
#include "api/router.h"

#define ID1 "0b6f2a3e-55e1-4d0c-9a39-3f1e2d4c5b6a"
#define ID2 "1c7a3b4f-66f2-4e1d-8b4a-4a2f3e5d6c7b"

static void
handler_a(struct api_call *call)
{
    (void)call;
}

static void
handler_b(struct api_call *call)
{
    (void)call;
}

static const struct route table[] = {
    {"GET", "/things", handler_a, ROUTE_BODY_NONE, NULL, ROUTE_AUTH_USER},
    {"POST", "/things", handler_b, ROUTE_BODY_REQUIRED, NULL, ROUTE_AUTH_USER},
    {"GET", "/things/{id}", handler_a, ROUTE_BODY_NONE, NULL, ROUTE_AUTH_USER},
    {"DELETE", "/things/{id}", handler_b, ROUTE_BODY_NONE, NULL, ROUTE_AUTH_USER},
    {"POST", "/things/{id}/parts/{id}", handler_b, ROUTE_BODY_EMPTY, NULL, ROUTE_AUTH_USER},
};

#define N_TABLE (sizeof(table) / sizeof(table[0]))

static void
test_router__matches_literal(void **state)
{
    struct route_match m;

    (void)state;
    assert_int_equal(router_match(table, N_TABLE, "GET", "/things", &m), ROUTER_FOUND);
    assert_ptr_equal(m.route, &table[0]);
    assert_int_equal(m.n_ids, 0);
    assert_int_equal(router_match(table, N_TABLE, "POST", "/things", &m), ROUTER_FOUND);
    assert_ptr_equal(m.route, &table[1]);
}

static void
test_router__captures_ids(void **state)
{
    struct route_match m;

    (void)state;
    assert_int_equal(router_match(table, N_TABLE, "GET", "/things/" ID1, &m), ROUTER_FOUND);
    assert_ptr_equal(m.route, &table[2]);
    assert_int_equal(m.n_ids, 1);
    assert_string_equal(m.ids[0], ID1);

    assert_int_equal(router_match(table, N_TABLE, "POST", "/things/" ID1 "/parts/" ID2, &m),
                     ROUTER_FOUND);
    assert_ptr_equal(m.route, &table[4]);
    assert_int_equal(m.n_ids, 2);
    assert_string_equal(m.ids[0], ID1);
    assert_string_equal(m.ids[1], ID2);

    /* Upper case is the same UUID; the capture is canonical lower case. */
    assert_int_equal(
        router_match(table, N_TABLE, "GET", "/things/0B6F2A3E-55E1-4D0C-9A39-3F1E2D4C5B6A", &m),
        ROUTER_FOUND);
    assert_string_equal(m.ids[0], ID1);
}

static void
test_router__not_found(void **state)
{
    static const char *const paths[] = {
        "",
        "/",
        "things",
        "/things/",
        "//things",
        "/things//",
        "/thingsx",
        "/thing",
        "/things/not-a-uuid",
        "/things/" ID1 "x",
        "/things/0b6f2a3e_55e1-4d0c-9a39-3f1e2d4c5b6a",
        "/things/0b6f2a3e-55e1-4d0c-9a39-3f1e2d4c5b6",
        "/things/" ID1 "/",
        "/things/" ID1 "/parts",
        "/things/" ID1 "/parts/" ID2 "/more",
        "/things/%30b6f2a3e-55e1-4d0c-9a39-3f1e2d4c5b6a",
    };
    struct route_match m;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        if (router_match(table, N_TABLE, "GET", paths[i], &m) != ROUTER_NOT_FOUND)
            fail_msg("'%s' should route nowhere", paths[i]);
        assert_null(m.route);
    }
}

static void
test_router__method_not_allowed_lists_allow(void **state)
{
    struct route_match m;

    (void)state;
    assert_int_equal(router_match(table, N_TABLE, "PUT", "/things", &m), ROUTER_METHOD_NOT_ALLOWED);
    assert_null(m.route);
    assert_string_equal(m.allow, "GET, POST");
    assert_int_equal(router_match(table, N_TABLE, "PATCH", "/things/" ID1, &m),
                     ROUTER_METHOD_NOT_ALLOWED);
    assert_string_equal(m.allow, "GET, DELETE");
    assert_int_equal(router_match(table, N_TABLE, "get", "/things", &m), ROUTER_METHOD_NOT_ALLOWED);
}

static void
test_router__api_table(void **state)
{
    struct route_match m;
    size_t i;

    (void)state;
    /* Every route reaches itself, with its ids filled in. */
    for (i = 0; i < api_routes_count; i++) {
        char path[256];
        const char *p = api_routes[i].pattern;
        size_t o = 0;

        while (*p) {
            if (strncmp(p, "{id}", 4) == 0) {
                o += (size_t)snprintf(path + o, sizeof(path) - o, "%s", ID1);
                p += 4;
            } else {
                path[o++] = *p++;
            }
        }
        path[o] = '\0';
        assert_int_equal(router_match(api_routes, api_routes_count, api_routes[i].method, path, &m),
                         ROUTER_FOUND);
        assert_ptr_equal(m.route, &api_routes[i]);
    }
    assert_int_equal(router_match(api_routes, api_routes_count, "GET", "/v1/vms", &m),
                     ROUTER_FOUND);
    assert_ptr_equal(m.route->handler, handle_vms_list);
    assert_int_equal(
        router_match(api_routes, api_routes_count, "POST", "/v1/vms/" ID1 "/force-stop", &m),
        ROUTER_FOUND);
    assert_ptr_equal(m.route->handler, handle_vms_action);
    assert_int_equal(router_match(api_routes, api_routes_count, "PUT", "/v1/vms/" ID1, &m),
                     ROUTER_METHOD_NOT_ALLOWED);
    assert_string_equal(m.allow, "GET, PATCH, DELETE");
    assert_int_equal(router_match(api_routes, api_routes_count, "GET", "/v1/vms/" ID1 "/start", &m),
                     ROUTER_METHOD_NOT_ALLOWED);
    assert_string_equal(m.allow, "POST");
    assert_int_equal(
        router_match(api_routes, api_routes_count, "GET", "/v1/vms/" ID1 "/explode", &m),
        ROUTER_NOT_FOUND);
    assert_int_equal(router_match(api_routes, api_routes_count, "DELETE", "/v1/version", &m),
                     ROUTER_METHOD_NOT_ALLOWED);
    assert_string_equal(m.allow, "GET");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_router__matches_literal),
        cmocka_unit_test(test_router__captures_ids),
        cmocka_unit_test(test_router__not_found),
        cmocka_unit_test(test_router__method_not_allowed_lists_allow),
        cmocka_unit_test(test_router__api_table),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
