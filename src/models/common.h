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

#endif
