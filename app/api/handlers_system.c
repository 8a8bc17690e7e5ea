#include "api/handlers.h"

#include <stdio.h>
#include <string.h>

#ifndef STRATUS_VERSION
#define STRATUS_VERSION "0.0.0"
#endif

void
handle_health(struct api_call *call)
{
    struct st_error db_err, lv_err, err;
    bool db_ok, lv_ok;

    memset(&db_err, 0, sizeof(db_err));
    memset(&lv_err, 0, sizeof(lv_err));
    memset(&err, 0, sizeof(err));
    db_ok = store_ping(&call->app->store, &db_err) == 0;
    lv_ok = hypervisor_ping(&call->app->hv, &lv_err) == 0;
    if (db_ok && lv_ok) {
        http_response_json(
            call->resp, 200,
            json_pack("{s:s, s:s, s:s}", "status", "ok", "database", "ok", "libvirt", "ok"));
        return;
    }
    /* Whatever failed, the service as a whole is unavailable: 503. */
    st_error_set(&err, ST_ERR_UNAVAILABLE, "%s%s%s%s%s",
                 db_ok ? "" : "database: ", db_ok ? "" : db_err.msg, !db_ok && !lv_ok ? "; " : "",
                 lv_ok ? "" : "libvirt: ", lv_ok ? "" : lv_err.msg);
    http_problem(call->resp, call->req->request_id, &err,
                 json_pack("{s:s, s:s}", "database", db_ok ? "ok" : "error", "libvirt",
                           lv_ok ? "ok" : "error"));
}

void
handle_version(struct api_call *call)
{
    http_response_json(
        call->resp, 200,
        json_pack("{s:s, s:s, s:s}", "name", "stratus", "version", STRATUS_VERSION, "api", "v1"));
}
