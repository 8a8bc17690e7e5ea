#include "services/audit_service.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/mem.h"
#include "util/secret.h"

#define AUDIT_VERIFY_PAGE 500

/* Append "<len>:<value>;" so that no two different entries hash the same text. */
static void
put_field(char **buf, const char *value)
{
    char *next = st_xasprintf("%s%zu:%s;", *buf, strlen(value), value);

    free(*buf);
    *buf = next;
}

static void
put_number(char **buf, int64_t v)
{
    char num[24];

    snprintf(num, sizeof(num), "%" PRId64, v);
    put_field(buf, num);
}

void
audit_entry_hash(const struct audit_entry *e, char out[ST_HASH_HEX_BUF])
{
    char *buf = st_xstrdup("stratus-audit-v1;");

    put_field(&buf, e->prev_hash);
    put_number(&buf, e->seq);
    put_field(&buf, e->id);
    put_number(&buf, e->at);
    put_field(&buf, e->user_id);
    put_field(&buf, e->method);
    put_field(&buf, e->route);
    put_field(&buf, e->target_id);
    put_number(&buf, e->status);
    put_field(&buf, e->request_id);
    put_field(&buf, e->client_addr);
    secret_sha256_hex(buf, strlen(buf), out);
    free(buf);
}

int
audit_service_record(struct audit_service *svc, struct audit_entry *e, struct st_error *err)
{
    st_uuid_generate(e->id);
    e->at = st_now_ms();
    return audit_repo_append(svc->log, e, audit_entry_hash, err);
}

int
audit_service_list(struct audit_service *svc, const struct audit_filter *f, struct audit_list *out,
                   struct st_error *err)
{
    return audit_repo_list(svc->log, f, out, err);
}

/* Check one entry against the one before it; false with out->why set when broken. */
static bool
audit_link_ok(const struct audit_entry *e, int64_t prev_seq, const char *prev_hash,
              struct audit_verdict *out)
{
    char hash[ST_HASH_HEX_BUF];

    if (e->seq != prev_seq + 1) {
        snprintf(out->why, sizeof(out->why),
                 "entry %" PRId64 " follows %" PRId64 ": entries missing", e->seq, prev_seq);
        return false;
    }
    if (strcmp(e->prev_hash, prev_hash) != 0) {
        snprintf(out->why, sizeof(out->why),
                 "its prev_hash does not match the hash of entry %" PRId64, prev_seq);
        return false;
    }
    audit_entry_hash(e, hash);
    if (strcmp(hash, e->hash) != 0) {
        snprintf(out->why, sizeof(out->why), "its hash does not match its contents");
        return false;
    }
    return true;
}

int
audit_service_verify(struct audit_service *svc, struct audit_verdict *out, struct st_error *err)
{
    char prev_hash[ST_HASH_HEX_BUF] = "";
    struct audit_verdict v;
    int64_t prev_seq = 0;
    struct audit_list page;
    size_t i;

    memset(&v, 0, sizeof(v));
    for (;;) {
        if (audit_repo_scan(svc->log, prev_seq, AUDIT_VERIFY_PAGE, &page, err) < 0)
            return -1;
        for (i = 0; i < page.count && !v.broken_seq; i++) {
            const struct audit_entry *e = &page.items[i];

            v.entries++;
            if (!audit_link_ok(e, prev_seq, prev_hash, &v))
                v.broken_seq = e->seq;
            prev_seq = e->seq;
            memcpy(prev_hash, e->hash, sizeof(prev_hash));
        }
        audit_list_release(&page);
        if (v.broken_seq || i < AUDIT_VERIFY_PAGE)
            break;
    }
    *out = v;
    return 0;
}
