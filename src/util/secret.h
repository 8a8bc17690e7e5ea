/*
 * secret.h - the few cryptographic primitives stratus needs, over libsodium.
 *
 * libsodium is the only cryptographic dependency; nothing outside this file
 * includes <sodium.h>, so the choice of primitives is made in one place.
 *
 * secret_init() should be called once during start-up, where a failure can
 * still stop the program.  Every other function also initializes libsodium
 * on first use (sodium_init() is idempotent and thread-safe), so forgetting
 * it is not a correctness problem; a failure there is BUG(), because random
 * numbers cannot be done without.
 */
#ifndef STRATUS_UTIL_SECRET_H
#define STRATUS_UTIL_SECRET_H

#include <stdbool.h>
#include <stddef.h>

#include "util/err.h"

#define SECRET_SHA256_BYTES 32
#define SECRET_SHA256_HEX_BUF 65 /* 64 lower-case hex digits and NUL */
#define SECRET_HMAC_BYTES 32
/* crypto_pwhash_STRBYTES: "$argon2id$v=19$m=...,t=...,p=...$salt$hash" and NUL. */
#define SECRET_PWHASH_BUF 128

/* Initialize libsodium.  Idempotent; ST_ERR_INTERNAL when it cannot start. */
int secret_init(struct st_error *err);

/* Fill buf[0..n) with bytes from the kernel's CSPRNG. */
void secret_random(void *buf, size_t n);

/*
 * Write @n_chars random characters of the url-safe base64 alphabet
 * (A-Z a-z 0-9 '-' '_'), 6 bits of entropy each, and a terminating NUL:
 * @out must hold n_chars + 1 bytes.
 */
void secret_random_token(char *out, size_t n_chars);

/*
 * base64url (RFC 4648 section 5) without '=' padding, as JWTs use it.
 *
 * secret_b64url_encoded_len() is the number of characters the encoding of
 * @n bytes takes, NOT counting the terminating NUL.
 *
 * secret_b64url_encode() writes the encoding and a NUL; @out_size must be at
 * least secret_b64url_encoded_len(n) + 1 (a smaller buffer is a BUG()).
 *
 * secret_b64url_decode() decodes s[0..len) into @out (@out_size bytes) and
 * sets *out_len.  Returns -1 for anything but the canonical unpadded
 * encoding: padding, '+', '/', whitespace, NUL bytes, a length of 4k+1,
 * non-zero trailing bits, or more output than @out_size.  *out_len and the
 * contents of @out are unspecified after a failure.
 */
size_t secret_b64url_encoded_len(size_t n);
void secret_b64url_encode(const void *bin, size_t n, char *out, size_t out_size);
int secret_b64url_decode(const char *s, size_t len, void *out, size_t out_size, size_t *out_len);

/* SHA-256 of data[0..n) as 64 lower-case hex digits and a NUL. */
void secret_sha256_hex(const void *data, size_t n, char out[SECRET_SHA256_HEX_BUF]);

/* HMAC-SHA-256 (RFC 2104) of msg[0..n) under a key of any length. */
void secret_hmac_sha256(const void *key, size_t key_len, const void *msg, size_t n,
                        unsigned char out[SECRET_HMAC_BYTES]);

/*
 * True when a[0..n) equals b[0..n).  The time taken depends on n only, not
 * on where the buffers differ: use it for every comparison of a MAC, a
 * token or a key hash.
 */
bool secret_equal(const void *a, const void *b, size_t n);

/*
 * How much work a password hash costs.  MIN is for tests only (it makes a
 * hash cheap to guess); INTERACTIVE (64 MiB, 2 passes) suits logins on an
 * API server; MODERATE (256 MiB, 3 passes) is stronger and slower.
 */
enum secret_pwhash_limits {
    SECRET_PWHASH_MIN,
    SECRET_PWHASH_INTERACTIVE,
    SECRET_PWHASH_MODERATE,
};

/* "min", "interactive", "moderate" -> *out; -1 (and *out untouched) otherwise. */
int secret_pwhash_limits_parse(const char *name, enum secret_pwhash_limits *out);
/* The name secret_pwhash_limits_parse() accepts; "unknown" for other values. */
const char *secret_pwhash_limits_name(enum secret_pwhash_limits lim);

/*
 * Hash @password with argon2id and a fresh random salt, at the cost of
 * @lim, into @out as a NUL-terminated string that records the algorithm and
 * its parameters ("$argon2id$v=19$m=65536,t=2,p=1$...").  Two hashes of the
 * same password differ.  ST_ERR_INTERNAL when the memory the hash needs
 * cannot be had; @out is written only on success.
 */
int secret_password_hash(const char *password, enum secret_pwhash_limits lim,
                         char out[SECRET_PWHASH_BUF], struct st_error *err);

/*
 * True when @password matches @hash (made by secret_password_hash(), at
 * any cost).  False for a wrong password and for anything that is not such
 * a hash, including a string that is not terminated within
 * SECRET_PWHASH_BUF bytes.  The hash's own parameters set the cost, so
 * @hash must come from our store, never from a client.
 */
bool secret_password_verify(const char *hash, const char *password);

#endif
