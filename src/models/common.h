/*
 * common.h - limits and helpers shared by every model.
 */
#ifndef STRATUS_MODELS_COMMON_H
#define STRATUS_MODELS_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"
#include "util/ids.h"

/* Names match ^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$ */
#define ST_NAME_MAX 63
#define ST_NAME_BUF 64

#define ST_VCPUS_MIN 1
#define ST_VCPUS_MAX 128
#define ST_MEMORY_MIB_MIN 16
#define ST_MEMORY_MIB_MAX (4u * 1024 * 1024) /* 4 TiB */
#define ST_DISK_GIB_MIN 1
#define ST_DISK_GIB_MAX 65536

#define ST_FAULT_BUF 512
#define ST_PATH_BUF 4096

/* List paging: ?limit= defaults to 100, at most 1000. */
#define ST_LIST_LIMIT_DEFAULT 100
#define ST_LIST_LIMIT_MAX 1000

/* True when name matches the name pattern above. */
bool st_name_valid(const char *name);

/*
 * Validate a name read from field @field; on failure fill @err with
 * ST_ERR_INVALID and a message that names the field and says why.
 */
int st_name_check(const char *field, const char *name, struct st_error *err);

/*
 * If-Match: 0 when @expect is 0 (none, or "*") or the revision @have the
 * row is at; else -1 with ST_ERR_PRECONDITION naming the @noun ("VM",
 * "user", ...) @id and both revisions.
 */
int st_revision_check(const char *noun, const char *id, uint64_t have, uint64_t expect,
                      struct st_error *err);

/*
 * Helpers for the models' *_decode functions, so every request body gets
 * the same checks and the same messages.  Each fills @err with
 * ST_ERR_INVALID and a message naming @field on failure.
 *
 * The getters return 1 and write *out when the member is present and valid,
 * 0 when it is absent (*out untouched), -1 when it is present but wrong
 * (JSON null counts as present and wrong).
 */
struct json_t;

/* @body must be an object whose member names are all in @known[0..n_known). */
int st_json_check_object(const struct json_t *body, const char *const *known, size_t n_known,
                         struct st_error *err);
/* A JSON integer (not a real, not a boolean) within [min, max]. */
int st_json_get_uint(const struct json_t *body, const char *field, unsigned min, unsigned max,
                     unsigned *out, struct st_error *err);
/* A string of 1..max_len bytes without NUL; out_size must exceed max_len. */
int st_json_get_string(const struct json_t *body, const char *field, size_t max_len, char *out,
                       size_t out_size, struct st_error *err);
/* A string passing st_name_check(). */
int st_json_get_name(const struct json_t *body, const char *field, char out[ST_NAME_BUF],
                     struct st_error *err);
/* A canonical UUID, written out in lower case. */
int st_json_get_uuid(const struct json_t *body, const char *field, char out[ST_ID_BUF],
                     struct st_error *err);
/* A string equal to one of @names[0..n); *out is its index. */
int st_json_get_enum(const struct json_t *body, const char *field, const char *const *names,
                     size_t n, int *out, struct st_error *err);

#endif
