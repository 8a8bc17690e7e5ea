/*
 * keyring.h - the HMAC keys that sign tokens, kept in one file.
 *
 * The file lives in the state directory, mode 0600, one key a line:
 *
 *     # comment
 *     <kid> <key> <created_ms> <retired_ms>
 *
 * <kid> is 16 lower-case hex digits naming the key in a token's header,
 * <key> its 32 bytes in unpadded base64url, the times milliseconds since
 * the epoch.  Exactly one key has retired_ms 0: the current key, the one
 * that signs.  Retired keys still verify the tokens they signed before
 * they were retired, until a rotation prunes them.
 *
 * The file is only ever replaced whole (a temp file in the same directory,
 * fsync, then link() or rename()), so a reader sees the old ring or the new
 * one, never half of either.  Rotations from several processes are
 * serialized by flock() on "<path>.lock".
 *
 * All functions return 0 or -1 with @err filled; *out is written only on
 * success.  File system failures are ST_ERR_INTERNAL with errno as the
 * native code.
 */
#ifndef STRATUS_UTIL_KEYRING_H
#define STRATUS_UTIL_KEYRING_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

#define KEYRING_MAX 8
#define KEYRING_KEY_BYTES 32
#define KEYRING_KID_LEN 16
#define KEYRING_KID_BUF 17

struct keyring_key {
    char kid[KEYRING_KID_BUF];
    unsigned char key[KEYRING_KEY_BYTES];
    int64_t created_at; /* ms */
    int64_t retired_at; /* ms; 0 = the current (signing) key */
};

/* keys[0..count), in file order; the current key may be anywhere. */
struct keyring {
    struct keyring_key keys[KEYRING_MAX];
    size_t count;
};

/*
 * Read the ring at @path.  ST_ERR_NOT_FOUND when the file does not exist;
 * ST_ERR_FORBIDDEN "'<path>' must be mode 0600" when group or others may
 * read or write it, or it is not a regular file; ST_ERR_INVALID
 * "<path>:<line>: ..." for a line that is not a key, and naming the file
 * when it holds no key, more than KEYRING_MAX keys, or not exactly one
 * current key.
 */
int keyring_load(const char *path, struct keyring *out, struct st_error *err);

/*
 * keyring_load(), but when the file does not exist create it with one fresh
 * key.  Safe to call from several processes at once: the file is published
 * with link(), which only the first creator wins, and everyone then loads
 * the winner's file, so all end up with the same single key.
 */
int keyring_ensure(const char *path, struct keyring *out, struct st_error *err);

/*
 * Under the lock, load @path, retire the current key at @now_ms, drop the
 * retired keys with retired_at + keep_retired_ms < now_ms, add a fresh
 * current key (dropping the oldest retired key first if the ring is full),
 * write the file back and return the new ring.  The key retired now is
 * kept however small @keep_retired_ms is: tokens it signed a moment ago
 * must still verify.  @now_ms must be positive (0 would mark the retired
 * key current) and @keep_retired_ms not negative, else ST_ERR_INVALID;
 * ST_ERR_NOT_FOUND when there is no file to rotate (see keyring_ensure()).
 */
int keyring_rotate(const char *path, int64_t now_ms, int64_t keep_retired_ms, struct keyring *out,
                   struct st_error *err);

/* The current key of @r; NULL only for a ring that keyring_load() would refuse. */
const struct keyring_key *keyring_current(const struct keyring *r);

/* The key named @kid in @r, or NULL. */
const struct keyring_key *keyring_find(const struct keyring *r, const char *kid);

#endif
