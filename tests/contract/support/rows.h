/*
 * rows.h - sample rows for the contract tests: every member a repository
 * stores is set, so that a row read back can be compared whole.
 */
#ifndef STRATUS_TESTS_CONTRACT_ROWS_H
#define STRATUS_TESTS_CONTRACT_ROWS_H

#include <stdint.h>

#include "models/flavor.h"
#include "models/image.h"
#include "models/user.h"
#include "models/vm.h"

/* A VM of @owner on @image_id, being created (step row), with a fresh id. */
struct vm make_vm(const char *owner, const char *name, const char *image_id, int64_t created_at);
/* An active raw image of @owner, with sizes above 32 bits. */
struct image make_image(const char *owner, const char *name, int64_t created_at);
/* A flavor of @owner. */
struct flavor make_flavor(const char *owner, const char *name, int64_t created_at);
/* An active user; @id NULL makes a fresh one. */
struct user make_user(const char *id, const char *email, int64_t created_at);
/* An API key of @user_id; @name "" is a key without a name. */
struct api_key make_key(const char *user_id, const char *name, const char *prefix,
                        int64_t created_at);

#endif
