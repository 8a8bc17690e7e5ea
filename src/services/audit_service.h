/*
 * audit_service.h - the audit log: every mutating request, chained by hash.
 *
 * Each entry's hash covers the previous entry's hash and every field of
 * its own, so editing, removing or reordering entries breaks the chain at
 * the first entry touched, and audit_service_verify() names it.
 */
#ifndef STRATUS_SERVICES_AUDIT_SERVICE_H
#define STRATUS_SERVICES_AUDIT_SERVICE_H

#include "models/user.h"
#include "repositories/audit_repo.h"

struct audit_service {
    struct audit_repo *log; /* borrowed */
};

/* SHA-256 over prev_hash and the fields of @e, length-prefixed (the chain's hash). */
void audit_entry_hash(const struct audit_entry *e, char out[ST_HASH_HEX_BUF]);

/*
 * Append @e: id and time are set here, the store sets seq and prev_hash,
 * the hash is computed inside the store's transaction.  *e is the stored entry.
 */
int audit_service_record(struct audit_service *svc, struct audit_entry *e, struct st_error *err);

int audit_service_list(struct audit_service *svc, const struct audit_filter *f,
                       struct audit_list *out, struct st_error *err);

/* What audit_service_verify() found. */
struct audit_verdict {
    int64_t entries;    /* entries read */
    int64_t broken_seq; /* 0 when the chain is intact; else the first entry that fails */
    char why[160];      /* what is wrong with it */
};

/* Walk the whole log in order.  -1 only when the store fails; a broken chain is a verdict. */
int audit_service_verify(struct audit_service *svc, struct audit_verdict *out,
                         struct st_error *err);

#endif
