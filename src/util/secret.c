#include "util/secret.h"

#include <sodium.h>
#include <string.h>

#include "util/mem.h"

_Static_assert(SECRET_PWHASH_BUF == crypto_pwhash_STRBYTES, "pwhash buffer size");
_Static_assert(SECRET_HMAC_BYTES == crypto_auth_hmacsha256_BYTES, "HMAC size");
_Static_assert(SECRET_SHA256_BYTES == crypto_hash_sha256_BYTES, "SHA-256 size");

static const char secret_b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static const char *const secret_pwhash_names[] = {
    [SECRET_PWHASH_MIN] = "min",
    [SECRET_PWHASH_INTERACTIVE] = "interactive",
    [SECRET_PWHASH_MODERATE] = "moderate",
};

int
secret_init(struct st_error *err)
{
    /* 0: initialized now, 1: already initialized, -1: failed. */
    if (sodium_init() < 0)
        return st_error_set(err, ST_ERR_INTERNAL, "libsodium cannot be initialized");
    return 0;
}

/*
 * sodium_init() picks the fastest implementations and opens the random
 * source; callers that cannot report an error come through here.
 */
static void
secret_ready(void)
{
    if (sodium_init() < 0)
        BUG("libsodium cannot be initialized");
}

void
secret_random(void *buf, size_t n)
{
    secret_ready();
    randombytes_buf(buf, n);
}

void
secret_random_token(char *out, size_t n_chars)
{
    unsigned char chunk[64];
    size_t i = 0, j;

    secret_ready();
    while (i < n_chars) {
        size_t take = n_chars - i < sizeof(chunk) ? n_chars - i : sizeof(chunk);

        randombytes_buf(chunk, take);
        /* 64 divides 256: the low six bits of a uniform byte are uniform. */
        for (j = 0; j < take; j++)
            out[i++] = secret_b64url_alphabet[chunk[j] & 0x3f];
    }
    out[n_chars] = '\0';
    sodium_memzero(chunk, sizeof(chunk));
}

size_t
secret_b64url_encoded_len(size_t n)
{
    size_t rest = n % 3;

    if (n / 3 > (SIZE_MAX - 3) / 4)
        BUG("secret_b64url_encoded_len: input too large");
    return n / 3 * 4 + (rest ? rest + 1 : 0);
}

void
secret_b64url_encode(const void *bin, size_t n, char *out, size_t out_size)
{
    if (out_size < secret_b64url_encoded_len(n) + 1)
        BUG("secret_b64url_encode: output buffer too small");
    sodium_bin2base64(out, out_size, bin, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

int
secret_b64url_decode(const char *s, size_t len, void *out, size_t out_size, size_t *out_len)
{
    /*
     * With no characters to ignore and no end pointer, libsodium refuses
     * any byte outside the alphabet (including '=' and NUL), input it cannot
     * consume completely, and non-canonical trailing bits.
     */
    return sodium_base642bin(out, out_size, s, len, NULL, out_len, NULL,
                             sodium_base64_VARIANT_URLSAFE_NO_PADDING) == 0
               ? 0
               : -1;
}

void
secret_sha256_hex(const void *data, size_t n, char out[SECRET_SHA256_HEX_BUF])
{
    unsigned char digest[crypto_hash_sha256_BYTES];

    secret_ready();
    crypto_hash_sha256(digest, data, n);
    sodium_bin2hex(out, SECRET_SHA256_HEX_BUF, digest, sizeof(digest));
}

void
secret_hmac_sha256(const void *key, size_t key_len, const void *msg, size_t n,
                   unsigned char out[SECRET_HMAC_BYTES])
{
    crypto_auth_hmacsha256_state st;

    secret_ready();
    /* The streaming API takes a key of any length (longer ones are hashed first). */
    crypto_auth_hmacsha256_init(&st, key, key_len);
    crypto_auth_hmacsha256_update(&st, msg, n);
    crypto_auth_hmacsha256_final(&st, out);
    /* The state holds the padded key. */
    sodium_memzero(&st, sizeof(st));
}

bool
secret_equal(const void *a, const void *b, size_t n)
{
    return sodium_memcmp(a, b, n) == 0;
}

int
secret_pwhash_limits_parse(const char *name, enum secret_pwhash_limits *out)
{
    size_t i;

    if (!name)
        return -1;
    for (i = 0; i < ST_ARRAY_LEN(secret_pwhash_names); i++) {
        if (strcmp(name, secret_pwhash_names[i]) == 0) {
            *out = (enum secret_pwhash_limits)i;
            return 0;
        }
    }
    return -1;
}

const char *
secret_pwhash_limits_name(enum secret_pwhash_limits lim)
{
    if ((size_t)lim >= ST_ARRAY_LEN(secret_pwhash_names))
        return "unknown";
    return secret_pwhash_names[lim];
}

static void
secret_pwhash_cost(enum secret_pwhash_limits lim, unsigned long long *ops, size_t *mem)
{
    switch (lim) {
    case SECRET_PWHASH_MIN:
        *ops = crypto_pwhash_OPSLIMIT_MIN;
        *mem = crypto_pwhash_MEMLIMIT_MIN;
        return;
    case SECRET_PWHASH_INTERACTIVE:
        *ops = crypto_pwhash_OPSLIMIT_INTERACTIVE;
        *mem = crypto_pwhash_MEMLIMIT_INTERACTIVE;
        return;
    case SECRET_PWHASH_MODERATE:
        *ops = crypto_pwhash_OPSLIMIT_MODERATE;
        *mem = crypto_pwhash_MEMLIMIT_MODERATE;
        return;
    }
    BUG("secret_pwhash_cost: unknown limits");
}

int
secret_password_hash(const char *password, enum secret_pwhash_limits lim,
                     char out[SECRET_PWHASH_BUF], struct st_error *err)
{
    char hash[SECRET_PWHASH_BUF];
    unsigned long long ops;
    size_t mem;

    secret_ready();
    secret_pwhash_cost(lim, &ops, &mem);
    /* Fails only when the memory cannot be allocated (or for absurd lengths). */
    if (crypto_pwhash_str_alg(hash, password, strlen(password), ops, mem,
                              crypto_pwhash_ALG_ARGON2ID13) != 0)
        return st_error_set(err, ST_ERR_INTERNAL,
                            "cannot hash the password: out of memory (the '%s' cost needs %zu KiB)",
                            secret_pwhash_limits_name(lim), mem / 1024);
    memcpy(out, hash, sizeof(hash));
    return 0;
}

bool
secret_password_verify(const char *hash, const char *password)
{
    secret_ready();
    /* libsodium reads the hash as a C string: never past our buffer. */
    if (!hash || !password || strnlen(hash, SECRET_PWHASH_BUF) >= SECRET_PWHASH_BUF)
        return false;
    return crypto_pwhash_str_verify(hash, password, strlen(password)) == 0;
}
