/*
 * operation.h - long work done by stratus-worker (VM create, delete, actions and resize),
 * the events a VM leaves behind, and idempotency records of POST requests.
 */
#ifndef STRATUS_MODELS_OPERATION_H
#define STRATUS_MODELS_OPERATION_H

#include <jansson.h>

#include "models/common.h"

enum op_kind {
    OP_KIND_VM_CREATE = 0,
    OP_KIND_VM_DELETE,
    OP_KIND_VM_START,
    OP_KIND_VM_STOP,
    OP_KIND_VM_FORCE_STOP,
    OP_KIND_VM_REBOOT,
    OP_KIND_VM_PAUSE,
    OP_KIND_VM_RESUME,
    OP_KIND_VM_RESIZE,
};

/* queued -> running -> succeeded | failed; a running one whose lease ran out is taken again. */
enum op_status {
    OP_STATUS_QUEUED = 0,
    OP_STATUS_RUNNING,
    OP_STATUS_SUCCEEDED,
    OP_STATUS_FAILED,
};

#define ST_OP_STEP_BUF 32
#define ST_WORKER_ID_BUF 64

struct operation {
    char id[ST_ID_BUF];
    enum op_kind kind;
    char target_id[ST_ID_BUF]; /* the VM */
    char owner_id[ST_ID_BUF];  /* the VM's owner: operations are scoped like it */
    enum op_status status;
    char step[ST_OP_STEP_BUF]; /* the step being done or last done ("" before the first) */
    char error[ST_FAULT_BUF];  /* "" unless failed */
    int64_t created_at;        /* ms since epoch; 0 = not yet for the next three */
    int64_t started_at;
    int64_t finished_at;
    char worker_id[ST_WORKER_ID_BUF]; /* who holds (or last held) it; "" when never claimed */
    int64_t lease_expires_at;         /* ms; meaningful while running */
    unsigned attempts;                /* claims so far */
    uint64_t revision;                /* bumped by every claim, renewal and finish */
};

struct op_filter {
    char target_id[ST_ID_BUF]; /* "" = any */
    bool has_status;
    enum op_status status;
    char marker[ST_ID_BUF];
    unsigned limit;
};

struct op_list {
    struct operation *items;
    size_t count;
    bool more;
};
void op_list_release(struct op_list *list);

const char *op_kind_name(enum op_kind kind); /* "vm.create", "vm.delete" */
int op_kind_parse(const char *name, enum op_kind *out);
const char *op_status_name(enum op_status status);
int op_status_parse(const char *name, enum op_status *out);
bool op_status_terminal(enum op_status status);

/* {"id","kind","target_id","owner_id","status","step","error","created_at","started_at","finished_at","attempts"}
 */
json_t *operation_to_json(const struct operation *op);

enum vm_event_type {
    VM_EVENT_STATE_CHANGE = 0,
    VM_EVENT_INFO,
    VM_EVENT_WARNING,
    VM_EVENT_ERROR,
};

#define ST_EVENT_MSG_BUF 512
#define ST_EVENT_DATA_BUF 1024

/* One entry of a VM's history; it outlives the VM for the retention period. */
struct vm_event {
    char id[ST_ID_BUF];
    char vm_id[ST_ID_BUF];
    char owner_id[ST_ID_BUF];
    int64_t at;
    enum vm_event_type type;
    char message[ST_EVENT_MSG_BUF];
    char data[ST_EVENT_DATA_BUF]; /* a JSON object as text, or "" */
};

struct vm_event_filter {
    char marker[ST_ID_BUF];
    unsigned limit;
};

struct vm_event_list {
    struct vm_event *items;
    size_t count;
    bool more;
};
void vm_event_list_release(struct vm_event_list *list);

const char *vm_event_type_name(enum vm_event_type type); /* "STATE_CHANGE", ... */
int vm_event_type_parse(const char *name, enum vm_event_type *out);
/* {"id","vm_id","at","type","message","data"}: data is the parsed object, or null. */
json_t *vm_event_to_json(const struct vm_event *e);

/* Idempotency-Key: 1..255 printable ASCII characters (0x21..0x7e). */
#define ST_IDEM_KEY_MAX 255
#define ST_IDEM_KEY_BUF 256
bool idem_key_valid(const char *key);

/* What the first request with a key got, stored to answer its retries. */
struct idem_record {
    char owner_id[ST_ID_BUF];
    char key[ST_IDEM_KEY_BUF];
    char request_hash[65]; /* SHA-256 hex of method, path and body */
    int status;            /* 0 while the first request is still being served */
    char *body;            /* the answer's body (malloc), NULL when none */
    char *location;        /* its Location header (malloc), NULL when none */
    int64_t created_at;
    int64_t expires_at;
};
void idem_record_release(struct idem_record *r);

#endif
