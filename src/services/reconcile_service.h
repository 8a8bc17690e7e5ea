/*
 * reconcile_service.h - keeping the rows and what libvirt has in step:
 * orphans (a domain or a disk of this installation with no row), rows whose
 * domain vanished, creates and deletes that no operation carries any more,
 * and guests that changed state on their own.
 *
 * Listings run hypervisor and storage first and the rows last: a create
 * writes its row before its disk and domain, so whatever the first lists
 * hold without a row in the last is not being made right now.
 */
#ifndef STRATUS_SERVICES_RECONCILE_SERVICE_H
#define STRATUS_SERVICES_RECONCILE_SERVICE_H

#include "repositories/hypervisor.h"
#include "repositories/idem_repo.h"
#include "repositories/storage.h"
#include "services/op_service.h"

enum orphan_kind {
    ORPHAN_DOMAIN = 0,
    ORPHAN_DISK,
};

struct orphan {
    enum orphan_kind kind;
    char id[ST_ID_BUF];       /* the VM id it names */
    char name[ST_NAME_BUF];   /* the domain's or the volume's name */
    char owner_id[ST_ID_BUF]; /* from the domain's metadata; "" for disks */
};

struct orphan_list {
    struct orphan *items;
    size_t count;
};
void orphan_list_release(struct orphan_list *list);
/* {"kind": "domain"|"disk", "vm_id", "name", "owner_id"} */
json_t *orphan_to_json(const struct orphan *o);

struct reconcile_report {
    size_t orphan_domains;
    size_t orphan_disks;
    size_t vanished;      /* rows newly found without their domain */
    size_t requeued;      /* creates and deletes given a new operation */
    size_t events_pruned; /* past the retention */
    size_t keys_pruned;   /* expired idempotency keys */
};

/* Borrowed dependencies. */
struct reconcile_service {
    struct vm_repo *vms;
    struct op_repo *ops;
    struct event_repo *events;
    struct idem_repo *idem; /* expired idempotency records are pruned with each pass */
    struct op_service *op_svc;
    struct hypervisor *hv;
    struct storage *storage;
    const char *instance;  /* only this installation's domains can be orphans */
    const char *disk_pool; /* where root disks live */
    int64_t event_retention_ms;
    int64_t
        stale_ms; /* a creating/deleting row untouched this long with no operation is requeued */
    /*
     * Optional (NULL: nothing is said): told, for a debug log, of each row
     * left alone because it changed between its read and the write; the
     * next pass sees it as it is then.
     */
    void (*debug)(const char *msg);
};

/* Orphans now; free with orphan_list_release(). */
int reconcile_find_orphans(struct reconcile_service *svc, struct orphan_list *out,
                           struct st_error *err);

/*
 * Remove the orphans (destroy and undefine domains, delete volumes); with
 * @dry_run only say what would go.  *out lists them either way.
 */
int reconcile_collect(struct reconcile_service *svc, bool dry_run, struct orphan_list *out,
                      struct st_error *err);

/* One pass of everything in the header comment except collecting orphans. */
int reconcile_run(struct reconcile_service *svc, struct reconcile_report *out,
                  struct st_error *err);

/*
 * A lifecycle event from the hypervisor: a VM with no operation under way
 * whose stored status no longer matches gets the new one and an event.
 */
int reconcile_on_event(struct reconcile_service *svc, const char *id, enum hv_event event,
                       struct st_error *err);

#endif
