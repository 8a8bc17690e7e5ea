#include "services/token.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "models/user.h"
#include "util/mem.h"
#include "util/secret.h"

/* Every decoded part fits: base64url turns 4 characters into 3 bytes. */
#define TOKEN_PART_BUF (TOKEN_MAX_LEN / 4 * 3 + 3)
/* How much of a refused algorithm name a message repeats. */
#define TOKEN_ALG_SHOWN 16

struct token_role {
    const char *name;
    unsigned bit;
};

static const struct token_role token_roles[] = {
    {"user", USER_ROLE_USER},
    {"admin", USER_ROLE_ADMIN},
};

/* The three parts of a token, borrowed from it. */
struct token_parts {
    const char *header, *payload, *sig;
    size_t header_len, payload_len, sig_len;
};

static int
token_refuse(struct st_error *err, const char *msg)
{
    st_error_set(err, ST_ERR_UNAUTHENTICATED, "%s", msg);
    return -1;
}

static char *
token_dump(const json_t *j)
{
    return j ? json_dumps(j, JSON_COMPACT) : NULL;
}

/* base64url(a) into a fresh string. */
static char *
token_b64(const void *bin, size_t n)
{
    size_t len = secret_b64url_encoded_len(n);
    char *s = st_xcalloc(len + 1, 1);

    secret_b64url_encode(bin, n, s, len + 1);
    return s;
}

static int
token_claims_check(const struct token_claims *c, struct st_error *err)
{
    if (!st_uuid_valid(c->sub) || !st_uuid_valid(c->jti))
        return st_error_set(err, ST_ERR_INTERNAL, "token claims need a UUID sub and jti");
    if (c->roles & ~(USER_ROLE_USER | USER_ROLE_ADMIN))
        return st_error_set(err, ST_ERR_INTERNAL, "token claims hold unknown role bits 0x%x",
                            c->roles);
    if (c->iat < 0 || c->exp <= c->iat)
        return st_error_set(err, ST_ERR_INTERNAL,
                            "token claims need 0 <= iat < exp, got iat %" PRId64
                            " and exp %" PRId64,
                            c->iat, c->exp);
    return 0;
}

/* "header.payload" as JSON text, each part base64url-encoded; NULL when out of memory. */
static char *
token_signing_input(const struct keyring_key *key, const struct token_claims *c)
{
    json_t *header, *payload;
    char *header_text, *payload_text, *header_b64 = NULL, *payload_b64 = NULL, *input = NULL;

    header = json_pack("{s:s, s:s, s:s}", "alg", "HS256", "typ", "JWT", "kid", key->kid);
    payload =
        json_pack("{s:s, s:o, s:I, s:I, s:s}", "sub", c->sub, "roles", user_roles_to_json(c->roles),
                  "iat", (json_int_t)c->iat, "exp", (json_int_t)c->exp, "jti", c->jti);
    header_text = token_dump(header);
    payload_text = token_dump(payload);
    if (header_text && payload_text) {
        header_b64 = token_b64(header_text, strlen(header_text));
        payload_b64 = token_b64(payload_text, strlen(payload_text));
        input = st_xasprintf("%s.%s", header_b64, payload_b64);
    }
    free(header_b64);
    free(payload_b64);
    free(header_text);
    free(payload_text);
    json_decref(header);
    json_decref(payload);
    return input;
}

int
token_issue(const struct keyring *ring, const struct token_claims *c, char **out,
            struct st_error *err)
{
    const struct keyring_key *key = keyring_current(ring);
    unsigned char mac[SECRET_HMAC_BYTES];
    ST_AUTOFREE char *input = NULL;
    ST_AUTOFREE char *sig = NULL;

    if (!key)
        return st_error_set(err, ST_ERR_INTERNAL, "the key ring has no current key");
    if (token_claims_check(c, err) < 0)
        return -1;
    input = token_signing_input(key, c);
    if (!input)
        return st_error_set(err, ST_ERR_INTERNAL, "out of memory while building a token");
    secret_hmac_sha256(key->key, sizeof(key->key), input, strlen(input), mac);
    sig = token_b64(mac, sizeof(mac));
    *out = st_xasprintf("%s.%s", input, sig);
    return 0;
}

static int
token_split(const char *token, struct token_parts *p, struct st_error *err)
{
    size_t len;
    const char *dot1, *dot2;

    if (!token || !token[0])
        return token_refuse(err, "no token given");
    len = strnlen(token, TOKEN_MAX_LEN + 1);
    if (len > TOKEN_MAX_LEN) {
        st_error_set(err, ST_ERR_UNAUTHENTICATED, "token is too long: at most %d bytes",
                     TOKEN_MAX_LEN);
        return -1;
    }
    dot1 = memchr(token, '.', len);
    dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
    if (!dot2 || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)))
        return token_refuse(err, "token must have three parts separated by '.'");
    p->header = token;
    p->header_len = (size_t)(dot1 - token);
    p->payload = dot1 + 1;
    p->payload_len = (size_t)(dot2 - p->payload);
    p->sig = dot2 + 1;
    p->sig_len = len - (size_t)(p->sig - token);
    return 0;
}

/* Decode one base64url part holding a JSON object; NULL (with @err) otherwise. */
static json_t *
token_part_object(const char *part, size_t len, const char *what, struct st_error *err)
{
    char buf[TOKEN_PART_BUF];
    size_t n = 0;
    json_t *j;

    if (secret_b64url_decode(part, len, buf, sizeof(buf), &n) < 0) {
        st_error_set(err, ST_ERR_UNAUTHENTICATED, "token %s is not valid base64url", what);
        return NULL;
    }
    /* Two "alg" members could mean different things to different parsers. */
    j = json_loadb(buf, n, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        st_error_set(err, ST_ERR_UNAUTHENTICATED, "token %s is not a JSON object", what);
        return NULL;
    }
    return j;
}

/* A string member without embedded NULs, or NULL. */
static const char *
token_str(const json_t *obj, const char *name)
{
    const json_t *v = json_object_get(obj, name);

    if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
        return NULL;
    return json_string_value(v);
}

/* The algorithm name, cut short and stripped to harmless characters, for a message. */
static void
token_alg_shown(const char *alg, char out[TOKEN_ALG_SHOWN + 4])
{
    size_t i;

    for (i = 0; i < TOKEN_ALG_SHOWN && alg[i]; i++) {
        char c = alg[i];
        bool plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                     c == '-' || c == '_' || c == '.';

        out[i] = plain ? c : '?';
    }
    if (alg[i])
        memcpy(out + i, "...", 4);
    else
        out[i] = '\0';
}

/* The header's verdict: the key it names, if it asks for nothing we refuse. */
static const struct keyring_key *
token_header_key(const struct keyring *ring, const json_t *header, struct st_error *err)
{
    char shown[TOKEN_ALG_SHOWN + 4];
    const struct keyring_key *key;
    const char *alg = token_str(header, "alg");
    const char *typ = token_str(header, "typ");
    const char *kid = token_str(header, "kid");

    if (!alg) {
        token_refuse(err, "token header names no algorithm");
        return NULL;
    }
    if (strcmp(alg, "HS256") != 0) {
        token_alg_shown(alg, shown);
        st_error_set(err, ST_ERR_UNAUTHENTICATED,
                     "token algorithm '%s' is not accepted: only HS256 is", shown);
        return NULL;
    }
    /* RFC 7515 4.1.11: extensions we do not understand must not be ignored. */
    if (json_object_get(header, "crit")) {
        token_refuse(err, "token header has critical extensions, which are not supported");
        return NULL;
    }
    if (json_object_get(header, "typ") && (!typ || strcasecmp(typ, "JWT") != 0)) {
        token_refuse(err, "token type must be 'JWT'");
        return NULL;
    }
    if (!kid) {
        token_refuse(err, "token header names no key");
        return NULL;
    }
    key = keyring_find(ring, kid);
    if (!key)
        token_refuse(err, "token was signed with an unknown key");
    return key;
}

static int
token_check_mac(const struct keyring_key *key, const char *token, const struct token_parts *p,
                struct st_error *err)
{
    unsigned char want[SECRET_HMAC_BYTES], got[SECRET_HMAC_BYTES];
    size_t n = 0;

    if (secret_b64url_decode(p->sig, p->sig_len, got, sizeof(got), &n) < 0 || n != sizeof(got))
        return token_refuse(err, "token signature does not match");
    secret_hmac_sha256(key->key, sizeof(key->key), token, p->header_len + 1 + p->payload_len, want);
    if (!secret_equal(want, got, sizeof(want)))
        return token_refuse(err, "token signature does not match");
    return 0;
}

static int
token_roles_parse(const json_t *payload, unsigned *out, struct st_error *err)
{
    const json_t *roles = json_object_get(payload, "roles");
    unsigned bits = 0;
    size_t i, r;

    if (!json_is_array(roles))
        return token_refuse(err, "token roles must be an array of role names");
    for (i = 0; i < json_array_size(roles); i++) {
        const json_t *v = json_array_get(roles, i);
        /* "admin\u0000x" must not pass for "admin". */
        const char *name =
            json_is_string(v) && strlen(json_string_value(v)) == json_string_length(v)
                ? json_string_value(v)
                : NULL;

        for (r = 0; name && r < ST_ARRAY_LEN(token_roles); r++) {
            if (strcmp(name, token_roles[r].name) == 0)
                break;
        }
        if (!name || r == ST_ARRAY_LEN(token_roles) || (bits & token_roles[r].bit))
            return token_refuse(err, "token roles must be an array of role names");
        bits |= token_roles[r].bit;
    }
    /* Every user holds the user role, whether or not the token says so. */
    *out = bits | USER_ROLE_USER;
    return 0;
}

/* The members of the payload, each with the type it must have. */
static int
token_claims_read(const json_t *payload, struct token_claims *c, int64_t *nbf, struct st_error *err)
{
    const char *sub = token_str(payload, "sub");
    const char *jti = token_str(payload, "jti");
    const json_t *iat = json_object_get(payload, "iat");
    const json_t *exp = json_object_get(payload, "exp");
    const json_t *nbf_v = json_object_get(payload, "nbf");
    size_t i;

    if (!sub || !st_uuid_valid(sub))
        return token_refuse(err, "token subject is not a user id");
    if (!json_is_integer(exp))
        return token_refuse(err, "token has no expiry time ('exp')");
    if (!json_is_integer(iat))
        return token_refuse(err, "token has no issue time ('iat')");
    if (nbf_v && !json_is_integer(nbf_v))
        return token_refuse(err, "token 'nbf' must be an integer");
    if (!jti || !st_uuid_valid(jti))
        return token_refuse(err, "token has no id ('jti')");
    if (token_roles_parse(payload, &c->roles, err) < 0)
        return -1;
    for (i = 0; i < ST_ID_LEN; i++) {
        c->sub[i] = (char)((sub[i] >= 'A' && sub[i] <= 'F') ? sub[i] - 'A' + 'a' : sub[i]);
        c->jti[i] = (char)((jti[i] >= 'A' && jti[i] <= 'F') ? jti[i] - 'A' + 'a' : jti[i]);
    }
    c->sub[ST_ID_LEN] = c->jti[ST_ID_LEN] = '\0';
    c->iat = json_integer_value(iat);
    c->exp = json_integer_value(exp);
    *nbf = nbf_v ? json_integer_value(nbf_v) : INT64_MIN;
    return 0;
}

static int
token_claims_timely(const struct keyring_key *key, const struct token_claims *c, int64_t nbf,
                    int64_t now_s, int64_t leeway_s, struct st_error *err)
{
    int64_t earliest, latest;

    if (leeway_s < 0)
        leeway_s = 0;
    if (__builtin_sub_overflow(now_s, leeway_s, &earliest))
        earliest = INT64_MIN;
    if (__builtin_add_overflow(now_s, leeway_s, &latest))
        latest = INT64_MAX;
    if (c->exp < earliest)
        return token_refuse(err, "token has expired");
    if (c->iat > latest || nbf > latest)
        return token_refuse(err, "token is not valid yet");
    /*
     * A retired key signs nothing new: a later token means a stolen key or
     * a ring that stayed stale.  Processes re-read the ring within a second
     * of a rotation, so the leeway covers what they signed meanwhile.
     */
    if (key->retired_at != 0 && c->iat > key->retired_at / 1000 + leeway_s)
        return token_refuse(err, "token was issued after its key was retired");
    return 0;
}

int
token_verify(const struct keyring *ring, const char *token, int64_t now_s, int64_t leeway_s,
             struct token_claims *out, struct st_error *err)
{
    const struct keyring_key *key;
    struct token_parts parts;
    struct token_claims c;
    json_t *header, *payload;
    int64_t nbf = 0;
    int rc;

    if (token_split(token, &parts, err) < 0)
        return -1;
    header = token_part_object(parts.header, parts.header_len, "header", err);
    if (!header)
        return -1;
    key = token_header_key(ring, header, err);
    json_decref(header);
    if (!key || token_check_mac(key, token, &parts, err) < 0)
        return -1;
    /* Only now is the payload ours to read. */
    payload = token_part_object(parts.payload, parts.payload_len, "payload", err);
    if (!payload)
        return -1;
    memset(&c, 0, sizeof(c));
    rc = token_claims_read(payload, &c, &nbf, err);
    json_decref(payload);
    if (rc < 0 || token_claims_timely(key, &c, nbf, now_s, leeway_s, err) < 0)
        return -1;
    *out = c;
    return 0;
}
