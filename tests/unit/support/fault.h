/*
 * fault.h - fault-injecting, call-counting wrappers around real
 * implementations of hypervisor.h, storage.h and vm_repo.h.
 *
 * A wrapper is itself a struct hypervisor (struct storage, struct vm_repo):
 * hand `&w.iface` to the code under test.  Every call is counted per
 * method and forwarded to the real implementation, unless a planned fault
 * matches it:
 *
 *   fault_hypervisor_fail(&w, FAULT_HV_START, 1, ST_ERR_BACKEND);
 *
 * makes the next start call fail with ST_ERR_BACKEND (the real start is not
 * called); nth = 2 would let the next one through and fail the one after.
 * fault_*_skip() makes the call return 0 without forwarding, as a guest that
 * ignores an ACPI request would; use it only on methods without
 * out-parameters.  Each planned fault fires once.
 *
 * Optional methods are forwarded through the interface's wrappers, so a
 * real implementation without one gives ST_ERR_UNSUPPORTED through the
 * wrapper just as it does directly (the call is still counted).  watch()
 * hands the callback straight to the real backend: events do not pass
 * through the wrapper.
 *
 * The wrapper borrows the real implementation: closing the wrapper does
 * nothing; close the real one yourself.  A wrapper must not move in memory
 * while in use (iface.self points at it).
 */
#ifndef STRATUS_TESTS_FAULT_H
#define STRATUS_TESTS_FAULT_H

#include <stdbool.h>

#include "repositories/hypervisor.h"
#include "repositories/storage.h"
#include "repositories/vm_repo.h"

#define FAULT_RULES_MAX 16
#define FAULT_METHODS_MAX 16

struct fault_rule {
    int method;
    unsigned at; /* fires on this value of the method's call counter */
    enum st_err_code code;
    bool skip; /* return 0 without forwarding instead of failing */
    bool used;
};

struct fault_plan {
    unsigned calls[FAULT_METHODS_MAX];
    struct fault_rule rules[FAULT_RULES_MAX];
    unsigned nrules;
};

enum fault_hv_method {
    FAULT_HV_DEFINE = 0,
    FAULT_HV_START,
    FAULT_HV_SHUTDOWN,
    FAULT_HV_DESTROY,
    FAULT_HV_REBOOT,
    FAULT_HV_SUSPEND,
    FAULT_HV_RESUME,
    FAULT_HV_UNDEFINE,
    FAULT_HV_STATE,
    FAULT_HV_LIST_ALL,
    FAULT_HV_PING,
    FAULT_HV_LIST_META,
    FAULT_HV_WATCH,
};

enum fault_storage_method {
    FAULT_ST_ENSURE_POOL = 0,
    FAULT_ST_CLONE_OVERLAY,
    FAULT_ST_IMPORT,
    FAULT_ST_REMOVE,
    FAULT_ST_INFO,
    FAULT_ST_LIST_VOLUMES,
};

enum fault_vm_repo_method {
    FAULT_VR_INSERT = 0,
    FAULT_VR_GET,
    FAULT_VR_LIST,
    FAULT_VR_UPDATE,
    FAULT_VR_REMOVE,
    FAULT_VR_COUNT_BY_IMAGE,
    FAULT_VR_INSERT_WITHIN_QUOTA,
    FAULT_VR_USAGE,
    FAULT_VR_UPDATE_WITHIN_QUOTA,
};

struct fault_hypervisor {
    struct hypervisor iface; /* give this to the code under test */
    struct hypervisor *real; /* borrowed */
    struct fault_plan plan;
};

struct fault_storage {
    struct storage iface;
    struct storage *real;
    struct fault_plan plan;
};

struct fault_vm_repo {
    struct vm_repo iface;
    struct vm_repo *real;
    struct fault_plan plan;
};

void fault_hypervisor_init(struct fault_hypervisor *w, struct hypervisor *real);
/* Fail the nth call of @method from now on (nth >= 1) with @code. */
void fault_hypervisor_fail(struct fault_hypervisor *w, enum fault_hv_method method, unsigned nth,
                           enum st_err_code code);
void fault_hypervisor_skip(struct fault_hypervisor *w, enum fault_hv_method method, unsigned nth);
/* Calls of @method since init or the last reset. */
unsigned fault_hypervisor_calls(const struct fault_hypervisor *w, enum fault_hv_method method);
/* Zero the counters and forget planned faults. */
void fault_hypervisor_reset(struct fault_hypervisor *w);

void fault_storage_init(struct fault_storage *w, struct storage *real);
void fault_storage_fail(struct fault_storage *w, enum fault_storage_method method, unsigned nth,
                        enum st_err_code code);
unsigned fault_storage_calls(const struct fault_storage *w, enum fault_storage_method method);
void fault_storage_reset(struct fault_storage *w);

void fault_vm_repo_init(struct fault_vm_repo *w, struct vm_repo *real);
void fault_vm_repo_fail(struct fault_vm_repo *w, enum fault_vm_repo_method method, unsigned nth,
                        enum st_err_code code);
unsigned fault_vm_repo_calls(const struct fault_vm_repo *w, enum fault_vm_repo_method method);
void fault_vm_repo_reset(struct fault_vm_repo *w);

#endif
