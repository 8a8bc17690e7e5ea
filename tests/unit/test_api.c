/*
 * test_api.c - the whole handler stack, without FastCGI: requests built as
 * struct http_request go through api_dispatch() into a real app (SQLite in
 * a temp dir, libvirt's test:///default driver).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/app.h"
#include "common/config.h"
#include "api/handlers.h"
#include "api/http.h"
#include "support/tmpdir.h"
#include "util/mem.h"

#define MISSING_ID "7d1e9c2a-3b4f-4a5e-9c6d-0e1f2a3b4c5d"
#define MAX_BODY 16384

#define AUTH_BUF 1024
#define ADMIN_EMAIL "root@example.test"
#define USER_EMAIL "alice@example.test"
#define OTHER_EMAIL "bob@example.test"
#define TEST_PASSWORD "correct horse battery"

struct api_fx {
    char dir[64];
    struct app app;
    char image_id[ST_ID_BUF];
    char flavor_id[ST_ID_BUF];
    char admin_auth[AUTH_BUF]; /* "Bearer <token>" of an admin */
    const char *auth;          /* what send_raw() sends: admin_auth unless a test says otherwise */
    const char *idem_key;      /* an Idempotency-Key to send, or NULL */
    const char *if_match;      /* an If-Match to send, or NULL */
};

/* One exchange; resp and doc are released by reply_release(). */
struct reply {
    struct http_request req;
    struct http_response resp;
    json_t *doc;
};

static int
write_config(const struct api_fx *fx, char *path, size_t n)
{
    FILE *f;
    long pid = (long)getpid();

    snprintf(path, n, "%s/api.conf", fx->dir);
    f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f,
            "libvirt_uri = test:///default\n"
            "virt_type = qemu\n"
            "workers = 1\n"
            "state_dir = %s\n"
            "database = sqlite://%s/stratus.db\n"
            "pool_images = tapi-%ld-images\n"
            "pool_default = tapi-%ld-default\n"
            "pool_snapshots = tapi-%ld-snapshots\n"
            "max_body_bytes = %d\n"
            "password_hash = min\n"
            "quota_max_vms = 1000\n"
            "quota_max_vcpus = 1000\n"
            "stop_timeout_s = 1\n",
            fx->dir, fx->dir, pid, pid, pid, MAX_BODY);
    return fclose(f);
}

/* Make a user (an admin when @admin) and write "Bearer <their token>" to @auth. */
static int
login_as(struct api_fx *fx, const char *email, bool admin, char *auth, size_t n,
         struct st_error *err)
{
    struct login_req req;
    struct user user;
    char *token = NULL;
    int64_t exp, retry;

    if (user_service_create(&fx->app.user_svc, email, TEST_PASSWORD, admin, &user, err) < 0)
        return -1;
    memset(&req, 0, sizeof(req));
    snprintf(req.email, sizeof(req.email), "%s", email);
    snprintf(req.password, sizeof(req.password), "%s", TEST_PASSWORD);
    if (user_service_login(&fx->app.user_svc, &req, st_now_ms(), &token, &exp, &retry, err) < 0)
        return -1;
    snprintf(auth, n, "Bearer %s", token);
    free(token);
    return 0;
}

static int
setup(void **state)
{
    struct api_fx *fx = calloc(1, sizeof(*fx));
    struct api_config cfg;
    struct st_error err = {0};
    char path[128];

    if (!fx)
        return -1;
    if (tmpdir_make(fx->dir, sizeof(fx->dir), "stratus-test-api", &err) < 0 ||
        write_config(fx, path, sizeof(path)) < 0 || api_config_load(&cfg, path, &err) < 0 ||
        app_open(&fx->app, &cfg, &err) < 0) {
        fprintf(stderr, "setup: %s\n", err.msg);
        tmpdir_remove(fx->dir);
        free(fx);
        return -1;
    }
    if (login_as(fx, ADMIN_EMAIL, true, fx->admin_auth, sizeof(fx->admin_auth), &err) < 0) {
        fprintf(stderr, "setup: %s\n", err.msg);
        app_close(&fx->app);
        tmpdir_remove(fx->dir);
        free(fx);
        return -1;
    }
    fx->auth = fx->admin_auth;
    if (!fx->app.pools_ready) {
        fprintf(stderr, "setup: pools not ready\n");
        app_close(&fx->app);
        tmpdir_remove(fx->dir);
        free(fx);
        return -1;
    }
    *state = fx;
    return 0;
}

static int
teardown(void **state)
{
    struct api_fx *fx = *state;

    app_close(&fx->app);
    tmpdir_remove(fx->dir);
    free(fx);
    return 0;
}

static void
reply_release(struct reply *r)
{
    json_decref(r->doc);
    http_response_release(&r->resp);
    http_request_release(&r->req);
}

/* Send a request; the body (may hold NULs) is @len bytes, or strlen when len is -1. */
static int
send_raw(struct api_fx *fx, const char *method, const char *uri, const char *ctype,
         const char *body, long len, struct reply *r)
{
    size_t n = body ? (len < 0 ? strlen(body) : (size_t)len) : 0;

    memset(r, 0, sizeof(*r));
    http_request_init(&r->req, method, uri, ctype, body, n);
    http_request_set_auth(&r->req, fx->auth, "127.0.0.1");
    http_request_set_idempotency_key(&r->req, fx->idem_key);
    http_request_set_if_match(&r->req, fx->if_match);
    http_response_init(&r->resp);
    api_dispatch(&fx->app, &r->req, &r->resp);
    if (r->resp.body)
        r->doc = json_loadb(r->resp.body, r->resp.body_len, 0, NULL);
    return r->resp.status;
}

static int
send_json(struct api_fx *fx, const char *method, const char *uri, const char *body, struct reply *r)
{
    return send_raw(fx, method, uri, body ? "application/json" : NULL, body, -1, r);
}

/* Do every queued operation, as stratus-worker would. */
static void
run_ops(struct api_fx *fx)
{
    struct st_error err = {0};
    bool worked = true;
    int n = 0;

    while (worked) {
        if (op_service_work_one(&fx->app.op_svc, "test-worker", &worked, &err) < 0)
            fail_msg("worker: %s", err.msg);
        if (++n > 100)
            fail_msg("operations keep coming");
    }
}

static const char *
member(const struct reply *r, const char *key)
{
    return json_string_value(json_object_get(r->doc, key));
}

/* Check @r is a problem document for @status, naming the request id. */
static void
assert_problem(const struct reply *r, int status)
{
    if (r->resp.status != status || !r->doc)
        fail_msg("want a %d problem, got %d: %s", status, r->resp.status,
                 r->resp.body ? r->resp.body : "(no body)");
    assert_string_equal(r->resp.content_type, "application/problem+json");
    assert_int_equal(json_integer_value(json_object_get(r->doc, "status")), status);
    assert_non_null(member(r, "title"));
    assert_non_null(member(r, "detail"));
    assert_non_null(strstr(member(r, "type"), "https://stratus.dev/problems/"));
    assert_string_equal(member(r, "request_id"), r->req.request_id);
    assert_string_equal(http_response_get_header(&r->resp, "X-Request-Id"), r->req.request_id);
}

static void
make_image_and_flavor(struct api_fx *fx)
{
    char path[160], body[400];
    struct reply r;
    int fd;

    snprintf(path, sizeof(path), "%s/import/base.raw", fx->dir);
    fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 1024 * 1024), 0);
    close(fd);
    snprintf(body, sizeof(body), "{\"name\":\"base\",\"source_path\":\"%s\",\"format\":\"raw\"}",
             path);
    if (send_json(fx, "POST", "/v1/images", body, &r) != 201)
        fail_msg("image create: %d %s", r.resp.status, r.resp.body);
    snprintf(fx->image_id, sizeof(fx->image_id), "%s", member(&r, "id"));
    reply_release(&r);

    if (send_json(fx, "POST", "/v1/flavors",
                  "{\"name\":\"small\",\"vcpus\":1,\"memory_mib\":64,\"disk_gib\":1}", &r) != 201)
        fail_msg("flavor create: %d %s", r.resp.status, r.resp.body);
    snprintf(fx->flavor_id, sizeof(fx->flavor_id), "%s", member(&r, "id"));
    reply_release(&r);
}

/* Register the test image as the caller of @auth. */
static void
make_image_as(struct api_fx *fx, const char *auth)
{
    const char *saved = fx->auth;
    char path[160], body[400];
    struct reply r;
    int fd;

    fx->auth = auth;
    snprintf(path, sizeof(path), "%s/import/mine.raw", fx->dir);
    fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 1024 * 1024), 0);
    close(fd);
    snprintf(body, sizeof(body), "{\"name\":\"mine\",\"source_path\":\"%s\",\"format\":\"raw\"}",
             path);
    if (send_json(fx, "POST", "/v1/images", body, &r) != 201)
        fail_msg("image create: %d %s", r.resp.status, r.resp.body);
    snprintf(fx->image_id, sizeof(fx->image_id), "%s", member(&r, "id"));
    reply_release(&r);
    fx->auth = saved;
}

static void
expect_vm_status(struct api_fx *fx, const char *method, const char *uri, const char *status)
{
    struct reply r;

    if (send_raw(fx, method, uri, NULL, NULL, 0, &r) != 200)
        fail_msg("%s %s: %d %s", method, uri, r.resp.status, r.resp.body);
    assert_string_equal(r.resp.content_type, "application/json");
    assert_string_equal(member(&r, "status"), status);
    reply_release(&r);
}

/* POST @location/@action: 202 with its operation, which the worker then does. */
static void
act(struct api_fx *fx, const char *location, const char *action)
{
    char uri[200], kind[64];
    struct reply r;

    snprintf(uri, sizeof(uri), "%s/%s", location, action);
    snprintf(kind, sizeof(kind), "vm.%s", action);
    if (send_json(fx, "POST", uri, NULL, &r) != 202)
        fail_msg("POST %s: %d %s", uri, r.resp.status, r.resp.body);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(r.doc, "operation"), "kind")), kind);
    assert_non_null(http_response_get_header(&r.resp, "ETag"));
    assert_non_null(strstr(http_response_get_header(&r.resp, "Location"), "/v1/operations/"));
    reply_release(&r);
    run_ops(fx);
}

/* A route pattern with every {id} replaced by @id. */
static void
route_uri(const char *pattern, const char *id, char *out, size_t n)
{
    const char *p = pattern;
    size_t o = 0;

    while (*p && o + 1 < n) {
        if (strncmp(p, "{id}", 4) == 0) {
            o += (size_t)snprintf(out + o, n - o, "%s", id);
            p += 4;
        } else {
            out[o++] = *p++;
        }
    }
    out[o < n ? o : n - 1] = '\0';
}

static void
test_api__every_route_needs_credentials(void **state)
{
    static const char *const bad[] = {NULL, "Basic dXNlcjpwdw==", "Bearer ", "Bearer x.y.z",
                                      "Bearer stk_AAAAAAAA_nope"};
    struct api_fx *fx = *state;
    char uri[160];
    struct reply r;
    size_t i, j;

    for (i = 0; i < api_routes_count; i++) {
        const struct route *rt = &api_routes[i];

        route_uri(rt->pattern, MISSING_ID, uri, sizeof(uri));
        for (j = 0; j < ST_ARRAY_LEN(bad); j++) {
            int want = rt->auth == ROUTE_AUTH_NONE ? 0 : 401;

            if (rt->auth == ROUTE_AUTH_OPTIONAL && !bad[j])
                want = 401; /* registration is closed: anonymous is refused too */
            fx->auth = bad[j];
            send_json(fx, rt->method, uri, rt->body == ROUTE_BODY_REQUIRED ? "{}" : NULL, &r);
            if (want == 401) {
                assert_problem(&r, 401);
                assert_non_null(
                    strstr(http_response_get_header(&r.resp, "WWW-Authenticate"), "Bearer"));
            } else if (r.resp.status == 401) {
                fail_msg("%s %s answered 401 though it is open", rt->method, uri);
            }
            reply_release(&r);
        }
    }
    fx->auth = fx->admin_auth;
}

static void
test_api__admin_only_routes(void **state)
{
    struct api_fx *fx = *state;
    char user_auth[AUTH_BUF];
    struct st_error err = {0};
    struct reply r;

    assert_int_equal(login_as(fx, USER_EMAIL, false, user_auth, sizeof(user_auth), &err), 0);
    fx->auth = user_auth;
    assert_int_equal(send_json(fx, "GET", "/v1/users", NULL, &r), 403);
    reply_release(&r);
    assert_int_equal(send_json(fx, "GET", "/v1/audit", NULL, &r), 403);
    reply_release(&r);
    assert_int_equal(send_json(fx, "POST", "/v1/flavors",
                               "{\"name\":\"x\",\"vcpus\":1,\"memory_mib\":64,\"disk_gib\":1}", &r),
                     403);
    reply_release(&r);
    assert_int_equal(send_json(fx, "GET", "/v1/vms?owner_id=" MISSING_ID, NULL, &r), 403);
    reply_release(&r);
    assert_int_equal(send_json(fx, "GET", "/v1/users/me", NULL, &r), 200);
    assert_string_equal(member(&r, "email"), USER_EMAIL);
    assert_null(json_object_get(r.doc, "password_hash"));
    reply_release(&r);
    fx->auth = fx->admin_auth;
    assert_int_equal(send_json(fx, "GET", "/v1/users", NULL, &r), 200);
    assert_int_equal(json_array_size(json_object_get(r.doc, "items")), 2);
    reply_release(&r);
}

static void
test_api__tenants_are_isolated(void **state)
{
    struct api_fx *fx = *state;
    char a_auth[AUTH_BUF], b_auth[AUTH_BUF], uri[160], body[300], vm_id[ST_ID_BUF];
    struct st_error err = {0};
    struct reply r, missing;
    static const char *const actions[] = {"start",      "stop",  "reboot",
                                          "force-stop", "pause", "resume"};
    size_t i;

    assert_int_equal(login_as(fx, USER_EMAIL, false, a_auth, sizeof(a_auth), &err), 0);
    assert_int_equal(login_as(fx, OTHER_EMAIL, false, b_auth, sizeof(b_auth), &err), 0);
    fx->auth = a_auth;
    make_image_as(fx, a_auth);
    snprintf(body, sizeof(body),
             "{\"name\":\"a-vm\",\"image_id\":\"%s\",\"vcpus\":1,\"memory_mib\":64,\"disk_gib\":1}",
             fx->image_id);
    if (send_json(fx, "POST", "/v1/vms", body, &r) != 202)
        fail_msg("create: %d %s", r.resp.status, r.resp.body);
    snprintf(vm_id, sizeof(vm_id), "%s", member(&r, "id"));
    reply_release(&r);
    run_ops(fx);

    fx->auth = b_auth;
    snprintf(uri, sizeof(uri), "/v1/vms/%s", vm_id);
    send_json(fx, "GET", "/v1/vms/" MISSING_ID, NULL, &missing);
    assert_int_equal(send_json(fx, "GET", uri, NULL, &r), 404);
    assert_string_equal(member(&r, "type"), member(&missing, "type"));
    reply_release(&r);
    reply_release(&missing);
    assert_int_equal(send_json(fx, "PATCH", uri, "{\"name\":\"stolen\"}", &r), 404);
    reply_release(&r);
    for (i = 0; i < ST_ARRAY_LEN(actions); i++) {
        snprintf(uri, sizeof(uri), "/v1/vms/%s/%s", vm_id, actions[i]);
        assert_int_equal(send_json(fx, "POST", uri, NULL, &r), 404);
        reply_release(&r);
    }
    snprintf(uri, sizeof(uri), "/v1/images/%s", fx->image_id);
    assert_int_equal(send_json(fx, "GET", uri, NULL, &r), 404);
    reply_release(&r);
    assert_int_equal(send_json(fx, "DELETE", uri, NULL, &r), 404);
    reply_release(&r);
    assert_int_equal(send_json(fx, "GET", "/v1/vms", NULL, &r), 200);
    assert_int_equal(json_array_size(json_object_get(r.doc, "items")), 0);
    reply_release(&r);
    snprintf(uri, sizeof(uri), "/v1/vms/%s", vm_id);
    assert_int_equal(send_json(fx, "DELETE", uri, NULL, &r), 404);
    reply_release(&r);

    /* Unchanged for its owner; the admin sees it and may delete it. */
    fx->auth = a_auth;
    assert_int_equal(send_json(fx, "GET", uri, NULL, &r), 200);
    assert_string_equal(member(&r, "name"), "a-vm");
    assert_string_equal(member(&r, "status"), "running");
    reply_release(&r);
    fx->auth = fx->admin_auth;
    assert_int_equal(send_json(fx, "DELETE", uri, NULL, &r), 202);
    reply_release(&r);
    run_ops(fx);
    assert_int_equal(send_json(fx, "GET", uri, NULL, &r), 404);
    reply_release(&r);
}

static void
test_api__quota_is_a_403_naming_the_limit(void **state)
{
    struct api_fx *fx = *state;
    char a_auth[AUTH_BUF], uri[160], body[300];
    struct st_error err = {0};
    struct reply r;
    struct user me;

    assert_int_equal(login_as(fx, USER_EMAIL, false, a_auth, sizeof(a_auth), &err), 0);
    assert_int_equal(user_repo_get_by_email(&fx->app.store.users, USER_EMAIL, &me, &err), 0);
    snprintf(uri, sizeof(uri), "/v1/users/%s", me.id);
    assert_int_equal(send_json(fx, "PATCH", uri, "{\"quota\":{\"max_vms\":1}}", &r), 200);
    reply_release(&r);
    make_image_as(fx, a_auth);
    fx->auth = a_auth;
    snprintf(body, sizeof(body),
             "{\"name\":\"one\",\"image_id\":\"%s\",\"vcpus\":1,\"memory_mib\":64,\"disk_gib\":1}",
             fx->image_id);
    assert_int_equal(send_json(fx, "POST", "/v1/vms", body, &r), 202);
    reply_release(&r);
    run_ops(fx);
    snprintf(body, sizeof(body),
             "{\"name\":\"two\",\"image_id\":\"%s\",\"vcpus\":1,\"memory_mib\":64,\"disk_gib\":1}",
             fx->image_id);
    send_json(fx, "POST", "/v1/vms", body, &r);
    assert_problem(&r, 403);
    assert_string_equal(member(&r, "type"), "https://stratus.dev/problems/quota_exceeded");
    assert_string_equal(member(&r, "quota"), "max_vms");
    assert_int_equal(json_integer_value(json_object_get(r.doc, "limit")), 1);
    assert_int_equal(json_integer_value(json_object_get(r.doc, "in_use")), 1);
    reply_release(&r);
    assert_int_equal(send_json(fx, "GET", "/v1/users/me/quota", NULL, &r), 200);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(r.doc, "usage"), "vms")),
                     1);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(r.doc, "limits"), "max_vms")), 1);
    reply_release(&r);

    /* A resize counts too: past max_vcpus it is refused and nothing changes. */
    fx->auth = fx->admin_auth;
    snprintf(uri, sizeof(uri), "/v1/users/%s", me.id);
    assert_int_equal(send_json(fx, "PATCH", uri, "{\"quota\":{\"max_vcpus\":2}}", &r), 200);
    reply_release(&r);
    fx->auth = a_auth;
    assert_int_equal(send_json(fx, "GET", "/v1/vms", NULL, &r), 200);
    snprintf(uri, sizeof(uri), "/v1/vms/%s/stop",
             json_string_value(
                 json_object_get(json_array_get(json_object_get(r.doc, "items"), 0), "id")));
    reply_release(&r);
    assert_int_equal(send_json(fx, "POST", uri, NULL, &r), 202);
    reply_release(&r);
    run_ops(fx);
    *strrchr(uri, '/') = '\0';
    send_json(fx, "PATCH", uri, "{\"vcpus\":3}", &r);
    assert_problem(&r, 403);
    assert_string_equal(member(&r, "quota"), "max_vcpus");
    assert_int_equal(json_integer_value(json_object_get(r.doc, "requested")), 3);
    reply_release(&r);
    assert_int_equal(send_json(fx, "GET", uri, NULL, &r), 200);
    assert_int_equal(json_integer_value(json_object_get(r.doc, "vcpus")), 1);
    reply_release(&r);
    /* The sizes are stored at once; the worker redefines the domain. */
    assert_int_equal(send_json(fx, "PATCH", uri, "{\"vcpus\":2}", &r), 202);
    assert_int_equal(json_integer_value(json_object_get(r.doc, "vcpus")), 2);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(r.doc, "operation"), "kind")),
        "vm.resize");
    reply_release(&r);
    run_ops(fx);
    fx->auth = fx->admin_auth;
}

static void
test_api__mutations_are_audited(void **state)
{
    struct api_fx *fx = *state;
    struct audit_verdict v;
    struct st_error err = {0};
    struct reply r;
    json_t *items;
    size_t i, n;

    make_image_and_flavor(fx);
    fx->auth = NULL;
    send_json(fx, "POST", "/v1/flavors", "{}", &r); /* 401: audited too */
    reply_release(&r);
    fx->auth = fx->admin_auth;
    assert_int_equal(send_json(fx, "GET", "/v1/audit?target_id=", NULL, &r), 400);
    reply_release(&r);
    assert_int_equal(send_json(fx, "GET", "/v1/audit", NULL, &r), 200);
    items = json_object_get(r.doc, "items");
    n = json_array_size(items);
    assert_true(n >= 3);
    for (i = 0; i < n; i++) {
        json_t *e = json_array_get(items, i);

        assert_int_equal(json_integer_value(json_object_get(e, "seq")), (json_int_t)i + 1);
        if (i > 0)
            assert_string_equal(
                json_string_value(json_object_get(e, "prev_hash")),
                json_string_value(json_object_get(json_array_get(items, i - 1), "hash")));
    }
    /* The image and flavor creates name what they made; the 401 names nobody. */
    assert_string_equal(json_string_value(json_object_get(json_array_get(items, 0), "target_id")),
                        fx->image_id);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(items, 2), "status")), 401);
    assert_true(json_is_null(json_object_get(json_array_get(items, 2), "user_id")));
    reply_release(&r);
    assert_int_equal(audit_service_verify(&fx->app.audit_svc, &v, &err), 0);
    assert_int_equal(v.broken_seq, 0);
    assert_true(v.entries >= 3);
}

static void
test_api__idempotency_keys(void **state)
{
    struct api_fx *fx = *state;
    char body[300], other[300], id[ST_ID_BUF], first_rid[80];
    struct reply r;

    make_image_and_flavor(fx);
    snprintf(body, sizeof(body), "{\"name\":\"once\",\"image_id\":\"%s\",\"flavor_id\":\"%s\"}",
             fx->image_id, fx->flavor_id);
    snprintf(other, sizeof(other), "{\"name\":\"twice\",\"image_id\":\"%s\",\"flavor_id\":\"%s\"}",
             fx->image_id, fx->flavor_id);
    fx->idem_key = "create-once-1";
    assert_int_equal(send_json(fx, "POST", "/v1/vms", body, &r), 202);
    snprintf(id, sizeof(id), "%s", member(&r, "id"));
    reply_release(&r);
    /* The retry gets the same answer, and no second VM. */
    assert_int_equal(send_json(fx, "POST", "/v1/vms", body, &r), 202);
    assert_string_equal(member(&r, "id"), id);
    assert_string_equal(http_response_get_header(&r.resp, "Idempotent-Replayed"), "true");
    assert_non_null(http_response_get_header(&r.resp, "Location"));
    reply_release(&r);
    /* The same key with another body is refused. */
    send_json(fx, "POST", "/v1/vms", other, &r);
    assert_problem(&r, 422);
    reply_release(&r);
    fx->idem_key = "has space";
    send_json(fx, "POST", "/v1/vms", other, &r);
    assert_problem(&r, 400);
    reply_release(&r);
    fx->idem_key = NULL;
    run_ops(fx);
    assert_int_equal(send_json(fx, "GET", "/v1/vms", NULL, &r), 200);
    assert_int_equal(json_array_size(json_object_get(r.doc, "items")), 1);
    reply_release(&r);
    /* A failure is remembered as well: the retry of a refused request is refused alike. */
    fx->idem_key = "bad-one";
    assert_int_equal(send_json(fx, "POST", "/v1/vms", "{\"name\":\"x\"}", &r), 400);
    snprintf(first_rid, sizeof(first_rid), "%s", member(&r, "request_id"));
    reply_release(&r);
    /* The very answer of the first one, its request_id too. */
    assert_int_equal(send_json(fx, "POST", "/v1/vms", "{\"name\":\"x\"}", &r), 400);
    assert_string_equal(r.resp.content_type, "application/problem+json");
    assert_string_equal(member(&r, "request_id"), first_rid);
    assert_string_equal(http_response_get_header(&r.resp, "Idempotent-Replayed"), "true");
    reply_release(&r);
    fx->idem_key = NULL;
}

static void
test_api__vm_lifecycle(void **state)
{
    struct api_fx *fx = *state;
    char body[300], uri[160], vm_id[ST_ID_BUF], location[64], op_uri[80], etag[32], stale[32];
    static const struct {
        const char *action;
        const char *status;
    } steps[] = {
        {"stop", "stopped"},   {"start", "running"},  {"pause", "paused"},
        {"resume", "running"}, {"reboot", "running"}, {"force-stop", "stopped"},
        {"start", "running"},
    };
    struct reply r;
    size_t i;

    make_image_and_flavor(fx);
    snprintf(body, sizeof(body), "{\"name\":\"web-01\",\"image_id\":\"%s\",\"flavor_id\":\"%s\"}",
             fx->image_id, fx->flavor_id);
    if (send_json(fx, "POST", "/v1/vms", body, &r) != 202)
        fail_msg("vm create: %d %s", r.resp.status, r.resp.body);
    snprintf(vm_id, sizeof(vm_id), "%s", member(&r, "id"));
    snprintf(location, sizeof(location), "/v1/vms/%s", vm_id);
    /* Accepted: the VM is being made; the operation says how far it is. */
    assert_string_equal(member(&r, "status"), "creating");
    assert_string_equal(member(&r, "name"), "web-01");
    snprintf(op_uri, sizeof(op_uri), "/v1/operations/%s",
             json_string_value(json_object_get(json_object_get(r.doc, "operation"), "id")));
    assert_string_equal(http_response_get_header(&r.resp, "Location"), op_uri);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(r.doc, "operation"), "status")),
        "queued");
    reply_release(&r);
    /* Waiting on a queued operation that nobody works on returns it unfinished. */
    snprintf(uri, sizeof(uri), "%s?wait=1", op_uri);
    assert_int_equal(send_json(fx, "GET", uri, NULL, &r), 200);
    assert_string_equal(member(&r, "status"), "queued");
    reply_release(&r);
    run_ops(fx);
    assert_int_equal(send_json(fx, "GET", op_uri, NULL, &r), 200);
    assert_string_equal(member(&r, "status"), "succeeded");
    assert_string_equal(member(&r, "kind"), "vm.create");
    assert_string_equal(member(&r, "target_id"), vm_id);
    reply_release(&r);
    snprintf(uri, sizeof(uri), "/v1/operations?target_id=%s&status=succeeded", vm_id);
    assert_int_equal(send_json(fx, "GET", uri, NULL, &r), 200);
    assert_int_equal(json_array_size(json_object_get(r.doc, "items")), 1);
    reply_release(&r);
    assert_int_equal(send_json(fx, "GET", location, NULL, &r), 200);
    assert_string_equal(member(&r, "status"), "running");
    reply_release(&r);

    assert_int_equal(send_json(fx, "GET", "/v1/vms", NULL, &r), 200);
    assert_int_equal(json_array_size(json_object_get(r.doc, "items")), 1);
    assert_true(json_is_null(json_object_get(r.doc, "next_marker")));
    reply_release(&r);
    assert_int_equal(send_json(fx, "GET", "/v1/vms?status=running&name=web-01&limit=5", NULL, &r),
                     200);
    assert_int_equal(json_array_size(json_object_get(r.doc, "items")), 1);
    reply_release(&r);
    assert_int_equal(send_json(fx, "GET", "/v1/vms?status=paused", NULL, &r), 200);
    assert_int_equal(json_array_size(json_object_get(r.doc, "items")), 0);
    reply_release(&r);

    expect_vm_status(fx, "GET", location, "running");
    for (i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        act(fx, location, steps[i].action);
        expect_vm_status(fx, "GET", location, steps[i].status);
    }
    /* An action accepts {} too, and a wrong state is a conflict. */
    snprintf(uri, sizeof(uri), "%s/resume", location);
    assert_int_equal(send_json(fx, "POST", uri, "{}", &r), 409);
    assert_problem(&r, 409);
    reply_release(&r);

    /* If-Match: a stale revision changes nothing; the current one goes through. */
    assert_int_equal(send_json(fx, "GET", location, NULL, &r), 200);
    snprintf(etag, sizeof(etag), "%s", http_response_get_header(&r.resp, "ETag"));
    snprintf(stale, sizeof(stale), "\"%lld\"",
             (long long)json_integer_value(json_object_get(r.doc, "revision")) - 1);
    reply_release(&r);
    fx->if_match = stale;
    send_json(fx, "PATCH", location, "{\"name\":\"web-02\"}", &r);
    assert_problem(&r, 412);
    reply_release(&r);
    snprintf(uri, sizeof(uri), "%s/stop", location);
    send_json(fx, "POST", uri, NULL, &r);
    assert_problem(&r, 412);
    reply_release(&r);
    send_json(fx, "DELETE", location, NULL, &r);
    assert_problem(&r, 412);
    reply_release(&r);
    fx->if_match = "3 apples";
    send_json(fx, "PATCH", location, "{\"name\":\"web-02\"}", &r);
    assert_problem(&r, 400);
    reply_release(&r);
    fx->if_match = etag;
    assert_int_equal(send_json(fx, "PATCH", location, "{\"name\":\"web-02\"}", &r), 200);
    assert_string_equal(member(&r, "name"), "web-02");
    assert_string_not_equal(http_response_get_header(&r.resp, "ETag"), etag);
    reply_release(&r);
    fx->if_match = NULL;

    /* The image is in use. */
    snprintf(uri, sizeof(uri), "/v1/images/%s", fx->image_id);
    assert_int_equal(send_json(fx, "DELETE", uri, NULL, &r), 409);
    reply_release(&r);

    assert_int_equal(send_json(fx, "DELETE", location, NULL, &r), 202);
    assert_string_equal(member(&r, "status"), "deleting");
    reply_release(&r);
    /* One operation per VM at a time. */
    assert_int_equal(send_json(fx, "DELETE", location, NULL, &r), 409);
    reply_release(&r);
    run_ops(fx);
    assert_int_equal(send_json(fx, "GET", location, NULL, &r), 404);
    assert_problem(&r, 404);
    reply_release(&r);
    /* Its history outlives it. */
    snprintf(uri, sizeof(uri), "%s/events", location);
    assert_int_equal(send_json(fx, "GET", uri, NULL, &r), 200);
    assert_true(json_array_size(json_object_get(r.doc, "items")) >= 4);
    reply_release(&r);
    snprintf(uri, sizeof(uri), "/v1/images/%s", fx->image_id);

    assert_int_equal(send_json(fx, "GET", uri, NULL, &r), 200);
    assert_string_equal(member(&r, "id"), fx->image_id);
    reply_release(&r);
    assert_int_equal(send_json(fx, "DELETE", uri, NULL, &r), 204);
    reply_release(&r);
    snprintf(uri, sizeof(uri), "/v1/flavors/%s", fx->flavor_id);
    assert_int_equal(send_json(fx, "GET", uri, NULL, &r), 200);
    reply_release(&r);
    assert_int_equal(send_json(fx, "DELETE", uri, NULL, &r), 204);
    reply_release(&r);
    assert_int_equal(send_json(fx, "GET", uri, NULL, &r), 404);
    reply_release(&r);
}

static void
test_api__list_paging(void **state)
{
    struct api_fx *fx = *state;
    char body[200], uri[128], marker[ST_ID_BUF];
    struct reply r;
    int i;

    for (i = 0; i < 3; i++) {
        snprintf(body, sizeof(body),
                 "{\"name\":\"f%d\",\"vcpus\":1,\"memory_mib\":64,\"disk_gib\":1}", i);
        assert_int_equal(send_json(fx, "POST", "/v1/flavors", body, &r), 201);
        reply_release(&r);
    }
    assert_int_equal(send_json(fx, "GET", "/v1/flavors?limit=2", NULL, &r), 200);
    assert_int_equal(json_array_size(json_object_get(r.doc, "items")), 2);
    assert_non_null(member(&r, "next_marker"));
    snprintf(marker, sizeof(marker), "%s", member(&r, "next_marker"));
    reply_release(&r);
    snprintf(uri, sizeof(uri), "/v1/flavors?limit=2&marker=%s", marker);
    assert_int_equal(send_json(fx, "GET", uri, NULL, &r), 200);
    assert_int_equal(json_array_size(json_object_get(r.doc, "items")), 1);
    assert_true(json_is_null(json_object_get(r.doc, "next_marker")));
    reply_release(&r);
    assert_int_equal(send_json(fx, "GET", "/v1/images", NULL, &r), 200);
    assert_int_equal(json_array_size(json_object_get(r.doc, "items")), 0);
    reply_release(&r);
}

struct bad_case {
    const char *method;
    const char *uri;
    const char *ctype;
    const char *body;
    long len;   /* -1: strlen(body) */
    int status; /* 0: any 4xx (the decision belongs to a model or service) */
};

#define JSON "application/json"
#define VM_URI "/v1/vms/" MISSING_ID
#define VM_BODY(extra) "{\"name\":\"ok\",\"vcpus\":1,\"memory_mib\":64,\"disk_gib\":1" extra "}"
#define VM_SIZED(field, value)                                                                     \
    "{\"name\":\"ok\",\"image_id\":\"" MISSING_ID "\"," field ":" value "}"

static void
run_bad_case(struct api_fx *fx, const struct bad_case *c, size_t i)
{
    struct reply r;
    int status = send_raw(fx, c->method, c->uri, c->ctype, c->body, c->len, &r);

    if (status < 400 || status > 499 || (c->status && status != c->status))
        fail_msg("case %zu (%s %s %.60s): want %d, got %d: %s", i, c->method, c->uri,
                 c->body ? c->body : "", c->status, status, r.resp.body ? r.resp.body : "");
    assert_problem(&r, status);
    reply_release(&r);
}

static void
test_api__malformed_requests(void **state)
{
    static char long_name[10 * 1024 + 64];
    static char long_body[MAX_BODY + 2];
    static const char nul_body[] = "{\"name\":\"a\0b\",\"vcpus\":1}";
    static const char nul_member[] = "{\"name\":\"a\\u0000b\",\"vcpus\":1,\"memory_mib\":64,"
                                     "\"disk_gib\":1,\"image_id\":\"" MISSING_ID "\"}";
    const struct bad_case cases[] = {
        /* bodies that are not JSON objects */
        {"POST", "/v1/vms", JSON, "{", -1, 400},
        {"POST", "/v1/vms", JSON, "[1,2]", -1, 400},
        {"POST", "/v1/vms", JSON, "\"name\"", -1, 400},
        {"POST", "/v1/vms", JSON, "null", -1, 400},
        {"POST", "/v1/vms", JSON, "", -1, 400},
        {"POST", "/v1/vms", NULL, NULL, 0, 400},
        {"POST", "/v1/vms", JSON, "{\"name\":\"a\",\"name\":\"b\"}", -1, 400},
        {"POST", "/v1/vms", JSON, "{\"name\":\"a\"} trailing", -1, 400},
        {"POST", "/v1/vms", JSON, nul_body, sizeof(nul_body) - 1, 400},
        {"POST", "/v1/vms", JSON, "{\"name\":\"\xff\xfe\"}", -1, 400},
        {"POST", "/v1/vms", "application/json; charset=utf-8", "{bad", -1, 400},
        /* bad names */
        {"POST", "/v1/vms", JSON, VM_SIZED("\"name2\"", "1"), -1, 400},
        {"POST", "/v1/flavors", JSON,
         "{\"name\":\"x<y\",\"vcpus\":1,\"memory_mib\":64,\"disk_gib\":1}", -1, 400},
        {"POST", "/v1/flavors", JSON,
         "{\"name\":\"x'y\",\"vcpus\":1,\"memory_mib\":64,\"disk_gib\":1}", -1, 400},
        {"POST", "/v1/flavors", JSON,
         "{\"name\":\"../etc\",\"vcpus\":1,\"memory_mib\":64,\"disk_gib\":1}", -1, 400},
        {"POST", "/v1/flavors", JSON,
         "{\"name\":\"\",\"vcpus\":1,\"memory_mib\":64,\"disk_gib\":1}", -1, 400},
        {"POST", "/v1/vms", JSON, nul_member, -1, 400},
        {"POST", "/v1/flavors", JSON, long_name, -1, 400},
        /* wrong types and numbers */
        {"POST", "/v1/vms", JSON, VM_SIZED("\"vcpus\"", "\"two\""), -1, 400},
        {"POST", "/v1/vms", JSON, VM_SIZED("\"vcpus\"", "-1"), -1, 400},
        {"POST", "/v1/vms", JSON, VM_SIZED("\"vcpus\"", "99999999999999999999"), -1, 400},
        {"POST", "/v1/vms", JSON, VM_SIZED("\"vcpus\"", "1e400"), -1, 400},
        {"POST", "/v1/vms", JSON, VM_SIZED("\"vcpus\"", "4294967297"), -1, 400},
        {"POST", "/v1/vms", JSON, VM_SIZED("\"memory_mib\"", "1.5"), -1, 400},
        {"POST", "/v1/vms", JSON, VM_SIZED("\"disk_gib\"", "-10"), -1, 400},
        {"POST", "/v1/vms", JSON, VM_SIZED("\"vcpus\"", "true"), -1, 400},
        {"POST", "/v1/vms", JSON, VM_SIZED("\"vcpus\"", "null"), -1, 400},
        {"POST", "/v1/vms", JSON, VM_BODY(",\"image_id\":\"not-a-uuid\""), -1, 400},
        {"POST", "/v1/vms", JSON, VM_BODY(",\"image_id\":\"" MISSING_ID "\",\"color\":\"red\""), -1,
         400},
        {"POST", "/v1/vms", JSON, VM_BODY(",\"image_id\":\"" MISSING_ID "\""), -1, 0},
        {"POST", "/v1/flavors", JSON,
         "{\"name\":\"f\",\"vcpus\":0,\"memory_mib\":64,\"disk_gib\":1}", -1, 400},
        {"POST", "/v1/flavors", JSON,
         "{\"name\":\"f\",\"vcpus\":1,\"memory_mib\":64,\"disk_gib\":-1}", -1, 400},
        {"POST", "/v1/images", JSON,
         "{\"name\":\"i\",\"source_path\":\"/etc/passwd\",\"format\":\"raw\"}", -1, 0},
        {"POST", "/v1/images", JSON,
         "{\"name\":\"i\",\"source_path\":\"../../etc/passwd\",\"format\":\"raw\"}", -1, 0},
        {"POST", "/v1/images", JSON, "{\"name\":\"i\",\"source_path\":\"x\",\"format\":\"vmdk\"}",
         -1, 400},
        {"PATCH", VM_URI, JSON, "{\"vcpus\":\"many\"}", -1, 400},
        /* content types and sizes */
        {"POST", "/v1/vms", "text/plain", "{}", -1, 415},
        {"POST", "/v1/vms", NULL, "{}", -1, 415},
        {"POST", "/v1/vms", "application/jsonx", "{}", -1, 415},
        {"PATCH", VM_URI, "application/x-www-form-urlencoded", "name=x", -1, 415},
        {"POST", "/v1/flavors", JSON, long_body, -1, 413},
        /* actions take nothing or {} */
        {"POST", VM_URI "/start", JSON, "{\"force\":true}", -1, 400},
        {"POST", VM_URI "/start", JSON, "x", -1, 400},
        {"POST", VM_URI "/start", JSON, "[]", -1, 400},
        /* routes, methods and ids */
        {"GET", "/v1/nothing", NULL, NULL, 0, 404},
        {"GET", "/v1/vms/", NULL, NULL, 0, 404},
        {"GET", "//v1/vms", NULL, NULL, 0, 404},
        {"GET", "/v1//vms", NULL, NULL, 0, 404},
        {"GET", "/", NULL, NULL, 0, 404},
        {"GET", "", NULL, NULL, 0, 404},
        {"GET", "/v1/vms/not-a-uuid", NULL, NULL, 0, 404},
        {"GET", "/v1/vms/../version", NULL, NULL, 0, 404},
        {"GET", "/v1/vms%00", NULL, NULL, 0, 404},
        {"GET", VM_URI, NULL, NULL, 0, 404},
        {"DELETE", VM_URI, NULL, NULL, 0, 404},
        {"POST", VM_URI "/start", NULL, NULL, 0, 404},
        {"GET", "/v1/images/" MISSING_ID, NULL, NULL, 0, 404},
        {"DELETE", "/v1/flavors/" MISSING_ID, NULL, NULL, 0, 404},
        {"PUT", "/v1/vms", NULL, NULL, 0, 405},
        {"DELETE", "/v1/version", NULL, NULL, 0, 405},
        {"HEAD", "/v1/vms", NULL, NULL, 0, 405},
        {"BREW", "/v1/vms", NULL, NULL, 0, 405},
        {"GET", VM_URI "/start", NULL, NULL, 0, 405},
        /* query strings */
        {"GET", "/v1/vms?limit=0", NULL, NULL, 0, 400},
        {"GET", "/v1/vms?limit=1001", NULL, NULL, 0, 400},
        {"GET", "/v1/vms?limit=abc", NULL, NULL, 0, 400},
        {"GET", "/v1/vms?limit=-1", NULL, NULL, 0, 400},
        {"GET", "/v1/vms?limit=", NULL, NULL, 0, 400},
        {"GET", "/v1/vms?limit=99999999999999999999", NULL, NULL, 0, 400},
        {"GET", "/v1/vms?limit=1&limit=2", NULL, NULL, 0, 400},
        {"GET", "/v1/vms?marker=xyz", NULL, NULL, 0, 400},
        {"GET", "/v1/vms?marker=" MISSING_ID, NULL, NULL, 0, 0},
        {"GET", "/v1/vms?status=flying", NULL, NULL, 0, 400},
        {"GET", "/v1/vms?name=%3Cscript%3E", NULL, NULL, 0, 400},
        {"GET", "/v1/vms?foo=bar", NULL, NULL, 0, 400},
        {"GET", "/v1/vms?limit=%zz", NULL, NULL, 0, 400},
        {"GET", "/v1/vms?limit=%4", NULL, NULL, 0, 400},
        {"GET", "/v1/vms?name=a%00b", NULL, NULL, 0, 400},
        {"GET", "/v1/vms?name=%FF", NULL, NULL, 0, 400},
        {"GET", "/v1/images?status=running", NULL, NULL, 0, 400},
        {"GET", "/v1/version?verbose=1", NULL, NULL, 0, 400},
    };
    struct api_fx *fx = *state;
    struct reply r;
    size_t i;

    memset(long_body, ' ', MAX_BODY + 1);
    snprintf(long_name, sizeof(long_name), "{\"name\":\"%0*d\",\"vcpus\":1}", 10 * 1024, 7);
    assert_true(sizeof(cases) / sizeof(cases[0]) >= 40);
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        run_bad_case(fx, &cases[i], i);

    /* A declared length over the limit is refused before any body is read. */
    memset(&r, 0, sizeof(r));
    http_request_init(&r.req, "POST", "/v1/vms", JSON, NULL, 0);
    r.req.content_length = 1ull << 40;
    http_response_init(&r.resp);
    api_dispatch(&fx->app, &r.req, &r.resp);
    r.doc = json_loadb(r.resp.body, r.resp.body_len, 0, NULL);
    assert_problem(&r, 413);
    reply_release(&r);

    /* 405 says what is allowed. */
    assert_int_equal(send_json(fx, "PUT", VM_URI, NULL, &r), 405);
    assert_string_equal(http_response_get_header(&r.resp, "Allow"), "GET, PATCH, DELETE");
    reply_release(&r);

    /* Nothing above left a VM, an image or a flavor behind, and all is well. */
    assert_int_equal(send_json(fx, "GET", "/v1/vms", NULL, &r), 200);
    assert_int_equal(json_array_size(json_object_get(r.doc, "items")), 0);
    reply_release(&r);
    assert_int_equal(send_json(fx, "GET", "/v1/flavors", NULL, &r), 200);
    assert_int_equal(json_array_size(json_object_get(r.doc, "items")), 0);
    reply_release(&r);
    assert_int_equal(send_json(fx, "GET", "/v1/health", NULL, &r), 200);
    assert_string_equal(member(&r, "status"), "ok");
    reply_release(&r);
}

static void
test_api__request_id(void **state)
{
    struct api_fx *fx = *state;
    struct reply r;

    memset(&r, 0, sizeof(r));
    http_request_init(&r.req, "GET", "/v1/nope", NULL, NULL, 0);
    http_request_set_id(&r.req, "client-id_1.2", "nginx0123");
    http_response_init(&r.resp);
    api_dispatch(&fx->app, &r.req, &r.resp);
    r.doc = json_loadb(r.resp.body, r.resp.body_len, 0, NULL);
    assert_problem(&r, 404);
    assert_string_equal(member(&r, "request_id"), "client-id_1.2");
    reply_release(&r);

    /* An unusable client id falls back to the server's, then to a UUID. */
    memset(&r, 0, sizeof(r));
    http_request_init(&r.req, "GET", "/v1/version", NULL, NULL, 0);
    http_request_set_id(&r.req, "bad id\"<>", "nginx0123");
    assert_string_equal(r.req.request_id, "nginx0123");
    http_request_set_id(&r.req, "", NULL);
    assert_true(st_uuid_valid(r.req.request_id));
    http_request_set_id(
        &r.req, "a123456789012345678901234567890123456789012345678901234567890123456789", NULL);
    assert_true(st_uuid_valid(r.req.request_id));
    http_request_release(&r.req);
}

static void
test_api__version_and_health(void **state)
{
    struct api_fx *fx = *state;
    struct reply r;

    assert_int_equal(send_json(fx, "GET", "/v1/version", NULL, &r), 200);
    assert_string_equal(member(&r, "name"), "stratus");
    assert_string_equal(member(&r, "api"), "v1");
    assert_non_null(member(&r, "version"));
    assert_string_equal(http_response_get_header(&r.resp, "X-Request-Id"), r.req.request_id);
    reply_release(&r);
    assert_int_equal(send_json(fx, "GET", "/v1/health", NULL, &r), 200);
    assert_string_equal(member(&r, "database"), "ok");
    assert_string_equal(member(&r, "libvirt"), "ok");
    reply_release(&r);
}

static void
test_api__problem_table(void **state)
{
    static const struct {
        enum st_err_code code;
        int status;
    } rows[] = {
        {ST_ERR_INVALID, 400},         {ST_ERR_NOT_FOUND, 404},   {ST_ERR_CONFLICT, 409},
        {ST_ERR_FORBIDDEN, 403},       {ST_ERR_UNSUPPORTED, 501}, {ST_ERR_UNAVAILABLE, 503},
        {ST_ERR_BACKEND, 502},         {ST_ERR_INTERNAL, 500},    {ST_ERR_OK, 500},
        {ST_ERR_UNAUTHENTICATED, 401}, {ST_ERR_THROTTLED, 429},
    };
    struct http_response resp;
    struct st_error err;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        json_t *doc;

        assert_int_equal(http_status_of(rows[i].code), rows[i].status);
        memset(&err, 0, sizeof(err));
        err.code = rows[i].code;
        snprintf(err.msg, sizeof(err.msg), "broken \xff value");
        http_response_init(&resp);
        http_problem(&resp, "rid", &err, json_pack("{s:s}", "vm_id", "x"));
        doc = json_loadb(resp.body, resp.body_len, 0, NULL);
        assert_non_null(doc);
        assert_int_equal(json_integer_value(json_object_get(doc, "status")), rows[i].status);
        assert_string_equal(json_string_value(json_object_get(doc, "detail")), "broken ? value");
        assert_string_equal(json_string_value(json_object_get(doc, "vm_id")), "x");
        assert_int_equal(http_response_get_header(&resp, "Retry-After") != NULL,
                         rows[i].status == 503);
        assert_int_equal(http_response_get_header(&resp, "WWW-Authenticate") != NULL,
                         rows[i].status == 401);
        json_decref(doc);
        http_response_release(&resp);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_api__vm_lifecycle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_api__list_paging, setup, teardown),
        cmocka_unit_test_setup_teardown(test_api__malformed_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_api__request_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_api__version_and_health, setup, teardown),
        cmocka_unit_test(test_api__problem_table),
        cmocka_unit_test_setup_teardown(test_api__every_route_needs_credentials, setup, teardown),
        cmocka_unit_test_setup_teardown(test_api__admin_only_routes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_api__tenants_are_isolated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_api__quota_is_a_403_naming_the_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_api__mutations_are_audited, setup, teardown),
        cmocka_unit_test_setup_teardown(test_api__idempotency_keys, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
