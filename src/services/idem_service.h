/*
 * idem_service.h - Idempotency-Key: a retried POST gets the answer its
 * first attempt got, instead of doing the work twice.
 *
 * The HTTP layer hashes what makes two requests the same (method, path,
 * query, body), calls begin() before the handler and finish() after it;
 * waiting for a duplicate still being served is the caller's (it holds an
 * API worker, so the caller bounds it).
 */
#ifndef STRATUS_SERVICES_IDEM_SERVICE_H
#define STRATUS_SERVICES_IDEM_SERVICE_H

#include "repositories/idem_repo.h"

struct idem_service {
    struct idem_repo *records; /* borrowed */
    int64_t ttl_ms;            /* how long an answer is kept for retries */
    /*
     * A first request still unanswered this long after it began never will
     * be (the worker serving it died): its key is free again.
     */
    int64_t abandoned_ms;
};

/*
 * Begin (@owner, @key) for a request hashed @hash: IDEM_NEW when the
 * caller should serve it (then call idem_service_finish()); IDEM_DONE with
 * *out the stored answer; IDEM_MISMATCH when the key was used with another
 * request; IDEM_IN_PROGRESS while the first is served.  *out is released
 * with idem_record_release() in every case.
 */
int idem_service_begin(struct idem_service *svc, const char *owner, const char *key,
                       const char *hash, enum idem_begin_result *result, struct idem_record *out,
                       struct st_error *err);

/*
 * Keep the answer (@status, @body and @location may be NULL) for retries;
 * a 5xx is forgotten instead, so that a retry runs the request again.
 */
int idem_service_finish(struct idem_service *svc, const char *owner, const char *key, int status,
                        const char *body, const char *location, struct st_error *err);

#endif
