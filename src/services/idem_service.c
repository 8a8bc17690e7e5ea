#include "services/idem_service.h"

#include <string.h>

#include "util/ids.h"

int
idem_service_begin(struct idem_service *svc, const char *owner, const char *key, const char *hash,
                   enum idem_begin_result *result, struct idem_record *out, struct st_error *err)
{
    int64_t now = st_now_ms();

    memset(out, 0, sizeof(*out));
    if (idem_repo_begin(svc->records, owner, key, hash, now, now + svc->ttl_ms, result, out, err) <
        0)
        return -1;
    if (*result != IDEM_IN_PROGRESS || out->created_at >= now - svc->abandoned_ms)
        return 0;
    /* Its first request will never be answered: take the key over. */
    idem_record_release(out);
    if (idem_repo_forget(svc->records, owner, key, err) < 0)
        return -1;
    return idem_repo_begin(svc->records, owner, key, hash, now, now + svc->ttl_ms, result, out,
                           err);
}

int
idem_service_finish(struct idem_service *svc, const char *owner, const char *key, int status,
                    const char *body, const char *location, struct st_error *err)
{
    if (status >= 500)
        return idem_repo_forget(svc->records, owner, key, err);
    return idem_repo_finish(svc->records, owner, key, status, body, location, err);
}
