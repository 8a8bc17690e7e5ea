/*
 * test_token.c - issuing and verifying HS256 JWTs: round trips, every way
 * a token can be wrong, clock leeway and key rotation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "models/user.h"
#include "services/token.h"
#include "support/tmpdir.h"
#include "util/keyring.h"
#include "util/mem.h"
#include "util/secret.h"

#define NOW 1700000000LL
#define LEEWAY 30
#define SUB "11111111-2222-4333-8444-555555555555"
#define JTI "99999999-8888-4777-8666-555555555555"
#define KID "00000000000000a1"

#define assert_ok(call, e)                                                                         \
    do {                                                                                           \
        if ((call) < 0)                                                                            \
            fail_msg("%s failed: %s: %s", #call, st_err_code_name((e).code), (e).msg);             \
    } while (0)

#define assert_err(call, e, want_code, needle)                                                     \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != -1 || (e).code != (want_code) || !strstr((e).msg, (needle)))                    \
            fail_msg("%s: want -1 %s containing \"%s\", got %d %s: %s", #call,                     \
                     st_err_code_name(want_code), (needle), rc_, st_err_code_name((e).code),       \
                     (e).msg);                                                                     \
    } while (0)

static int
setup(void **state)
{
    struct st_error err;

    (void)state;
    st_error_clear(&err);
    return secret_init(&err);
}

/* A ring of one current key named @kid with random key bytes. */
static void
ring_one(struct keyring *r, const char *kid)
{
    memset(r, 0, sizeof(*r));
    strcpy(r->keys[0].kid, kid);
    secret_random(r->keys[0].key, KEYRING_KEY_BYTES);
    r->keys[0].created_at = (NOW - 86400) * 1000;
    r->count = 1;
}

static struct token_claims
claims_at(int64_t iat, int64_t exp)
{
    struct token_claims c;

    memset(&c, 0, sizeof(c));
    strcpy(c.sub, SUB);
    strcpy(c.jti, JTI);
    c.roles = USER_ROLE_USER | USER_ROLE_ADMIN;
    c.iat = iat;
    c.exp = exp;
    return c;
}

static char *
issue(const struct keyring *r, const struct token_claims *c)
{
    struct st_error err;
    char *tok = NULL;

    st_error_clear(&err);
    assert_ok(token_issue(r, c, &tok, &err), err);
    assert_non_null(tok);
    return tok;
}

static char *
b64(const char *text)
{
    size_t n = strlen(text), len = secret_b64url_encoded_len(n);
    char *s = st_xcalloc(len + 1, 1);

    secret_b64url_encode(text, n, s, len + 1);
    return s;
}

/* A token made by hand from raw JSON, signed with @key (or with @sig when given). */
static char *
forge(const char *header, const char *payload, const unsigned char *key, const char *sig)
{
    char *h = b64(header), *p = b64(payload);
    char *input = st_xasprintf("%s.%s", h, p);
    unsigned char mac[SECRET_HMAC_BYTES];
    char mac_text[64];
    char *tok;

    if (!sig) {
        secret_hmac_sha256(key, KEYRING_KEY_BYTES, input, strlen(input), mac);
        secret_b64url_encode(mac, sizeof(mac), mac_text, sizeof(mac_text));
        sig = mac_text;
    }
    tok = st_xasprintf("%s.%s", input, sig);
    free(h);
    free(p);
    free(input);
    return tok;
}

static const char good_payload[] = "{\"sub\":\"" SUB "\",\"roles\":[\"user\"],\"iat\":1700000000,"
                                   "\"exp\":1700003600,\"jti\":\"" JTI "\"}";
static const char good_header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"" KID "\"}";

static void
expect_refused(const struct keyring *r, const char *tok, const char *frag)
{
    struct token_claims out, pristine;
    struct st_error err;

    memset(&out, 0x5A, sizeof(out));
    memcpy(&pristine, &out, sizeof(out));
    st_error_clear(&err);
    if (token_verify(r, tok, NOW, LEEWAY, &out, &err) != -1 || err.code != ST_ERR_UNAUTHENTICATED ||
        !strstr(err.msg, frag))
        fail_msg("token %.120s\n  want unauthenticated \"%s\", got %s: %s", tok ? tok : "(null)",
                 frag, st_err_code_name(err.code), err.msg);
    assert_memory_equal(&out, &pristine, sizeof(out));
    /* Messages are short and never carry the token back. */
    assert_true(strlen(err.msg) < 120);
    if (tok && strlen(tok) > 16)
        assert_null(strstr(err.msg, tok));
}

static void
test_token__round_trip(void **state)
{
    struct keyring r;
    struct token_claims c = claims_at(NOW, NOW + 3600), out;
    struct st_error err;
    char *tok, *dot, *header_text;
    char buf[256];
    size_t n;
    json_t *header;

    (void)state;
    ring_one(&r, KID);
    tok = issue(&r, &c);
    st_error_clear(&err);
    assert_ok(token_verify(&r, tok, NOW, LEEWAY, &out, &err), err);
    assert_string_equal(out.sub, SUB);
    assert_string_equal(out.jti, JTI);
    assert_int_equal(out.roles, USER_ROLE_USER | USER_ROLE_ADMIN);
    assert_int_equal(out.iat, NOW);
    assert_int_equal(out.exp, NOW + 3600);

    /* The header is exactly what RFC 7519 clients expect. */
    dot = strchr(tok, '.');
    assert_int_equal(secret_b64url_decode(tok, (size_t)(dot - tok), buf, sizeof(buf), &n), 0);
    header = json_loadb(buf, n, 0, NULL);
    assert_non_null(header);
    header_text = json_dumps(header, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(header_text, "{\"alg\":\"HS256\",\"kid\":\"" KID "\",\"typ\":\"JWT\"}");
    free(header_text);
    json_decref(header);
    free(tok);

    /* A plain user's roles come back as just that. */
    c.roles = USER_ROLE_USER;
    tok = issue(&r, &c);
    assert_ok(token_verify(&r, tok, NOW, LEEWAY, &out, &err), err);
    assert_int_equal(out.roles, USER_ROLE_USER);
    free(tok);

    /* A hand-made token of the same shape verifies too. */
    tok = forge(good_header, good_payload, r.keys[0].key, NULL);
    assert_ok(token_verify(&r, tok, NOW, LEEWAY, &out, &err), err);
    free(tok);
}

static void
test_token__tampered_token_is_refused(void **state)
{
    struct keyring r;
    struct token_claims c = claims_at(NOW, NOW + 3600);
    char *tok, *payload, *sig;
    size_t i;

    (void)state;
    ring_one(&r, KID);
    tok = issue(&r, &c);
    payload = strchr(tok, '.') + 1;
    sig = strchr(payload, '.') + 1;
    /* Every single character of the payload. */
    for (i = 0; payload + i < sig - 1; i++) {
        char was = payload[i];

        payload[i] = was == 'A' ? 'B' : 'A';
        expect_refused(&r, tok, "token signature does not match");
        payload[i] = was;
    }
    sig[3] = sig[3] == 'A' ? 'B' : 'A';
    expect_refused(&r, tok, "token signature does not match");
    free(tok);

    /* A cut signature. */
    tok = issue(&r, &c);
    tok[strlen(tok) - 4] = '\0';
    expect_refused(&r, tok, "token signature does not match");
    free(tok);
}

static void
test_token__wrong_key_with_the_same_kid_is_refused(void **state)
{
    struct keyring mine, theirs;
    struct token_claims c = claims_at(NOW, NOW + 3600);
    char *tok;

    (void)state;
    ring_one(&mine, KID);
    ring_one(&theirs, KID);
    tok = issue(&theirs, &c);
    expect_refused(&mine, tok, "token signature does not match");
    free(tok);
}

static void
test_token__alg_none_is_refused(void **state)
{
    struct keyring r;
    char *tok;

    (void)state;
    ring_one(&r, KID);
    tok = forge("{\"alg\":\"none\",\"typ\":\"JWT\"}", good_payload, NULL, "");
    expect_refused(&r, tok, "token algorithm 'none' is not accepted");
    free(tok);
    tok = forge("{\"alg\":\"none\",\"typ\":\"JWT\",\"kid\":\"" KID "\"}", good_payload, NULL, "");
    expect_refused(&r, tok, "token algorithm 'none' is not accepted");
    free(tok);
    /* A signature that would match under HS256 changes nothing. */
    tok = forge("{\"alg\":\"none\",\"typ\":\"JWT\",\"kid\":\"" KID "\"}", good_payload,
                r.keys[0].key, NULL);
    expect_refused(&r, tok, "token algorithm 'none' is not accepted");
    free(tok);
    tok = forge("{\"alg\":\"None\",\"kid\":\"" KID "\"}", good_payload, r.keys[0].key, NULL);
    expect_refused(&r, tok, "token algorithm 'None' is not accepted");
    free(tok);
    tok = forge("{\"alg\":\"hs256\",\"kid\":\"" KID "\"}", good_payload, r.keys[0].key, NULL);
    expect_refused(&r, tok, "token algorithm 'hs256' is not accepted");
    free(tok);
    tok = forge("{\"typ\":\"JWT\",\"kid\":\"" KID "\"}", good_payload, r.keys[0].key, NULL);
    expect_refused(&r, tok, "token header names no algorithm");
    free(tok);
    tok = forge("{\"alg\":null,\"kid\":\"" KID "\"}", good_payload, r.keys[0].key, NULL);
    expect_refused(&r, tok, "token header names no algorithm");
    free(tok);
    tok = forge("{\"alg\":[\"HS256\"],\"kid\":\"" KID "\"}", good_payload, r.keys[0].key, NULL);
    expect_refused(&r, tok, "token header names no algorithm");
    free(tok);
    tok =
        forge("{\"alg\":\"HS256\\u0000\",\"kid\":\"" KID "\"}", good_payload, r.keys[0].key, NULL);
    expect_refused(&r, tok, "token header");
    free(tok);
    /* Two algs: which one a parser believes must not matter. */
    tok = forge("{\"alg\":\"HS256\",\"alg\":\"none\",\"kid\":\"" KID "\"}", good_payload,
                r.keys[0].key, NULL);
    expect_refused(&r, tok, "token header is not a JSON object");
    free(tok);
}

static void
test_token__other_algorithms_are_refused(void **state)
{
    struct keyring r;
    char *tok;

    (void)state;
    ring_one(&r, KID);
    tok = forge("{\"alg\":\"HS512\",\"typ\":\"JWT\",\"kid\":\"" KID "\"}", good_payload,
                r.keys[0].key, NULL);
    expect_refused(&r, tok, "token algorithm 'HS512' is not accepted");
    free(tok);
    tok = forge("{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\"" KID "\"}", good_payload,
                r.keys[0].key, NULL);
    expect_refused(&r, tok, "token algorithm 'RS256' is not accepted");
    free(tok);
    /* What a refused name looks like in the message is tamed. */
    tok = forge("{\"alg\":\"x'\\n<script>aaaaaaaaaaaaaaaaaaaaa\",\"kid\":\"" KID "\"}",
                good_payload, r.keys[0].key, NULL);
    expect_refused(&r, tok, "token algorithm 'x???script?aaaaa...' is not accepted");
    free(tok);
}

static void
test_token__odd_headers_are_refused(void **state)
{
    struct keyring r;
    char *tok;

    (void)state;
    ring_one(&r, KID);
    tok = forge("{\"alg\":\"HS256\",\"kid\":\"" KID "\",\"crit\":[\"exp\"]}", good_payload,
                r.keys[0].key, NULL);
    expect_refused(&r, tok, "critical extensions");
    free(tok);
    tok = forge("{\"alg\":\"HS256\",\"typ\":\"JWE\",\"kid\":\"" KID "\"}", good_payload,
                r.keys[0].key, NULL);
    expect_refused(&r, tok, "token type must be 'JWT'");
    free(tok);
    tok = forge("{\"alg\":\"HS256\"}", good_payload, r.keys[0].key, NULL);
    expect_refused(&r, tok, "token header names no key");
    free(tok);
    tok = forge("[\"HS256\"]", good_payload, r.keys[0].key, NULL);
    expect_refused(&r, tok, "token header is not a JSON object");
    free(tok);
    tok = forge("{\"alg\":\"HS256\",\"kid\":\"" KID "\"", good_payload, r.keys[0].key, NULL);
    expect_refused(&r, tok, "token header is not a JSON object");
    free(tok);
    /* Lower-case "jwt" is fine (RFC 7519 5.1 says compare without case). */
    tok = forge("{\"alg\":\"HS256\",\"typ\":\"jwt\",\"kid\":\"" KID "\"}", good_payload,
                r.keys[0].key, NULL);
    {
        struct token_claims out;
        struct st_error err;

        st_error_clear(&err);
        assert_ok(token_verify(&r, tok, NOW, LEEWAY, &out, &err), err);
    }
    free(tok);
}

static void
test_token__unknown_kid_is_refused(void **state)
{
    struct keyring mine, theirs;
    struct token_claims c = claims_at(NOW, NOW + 3600);
    char *tok;

    (void)state;
    ring_one(&mine, KID);
    ring_one(&theirs, "00000000000000b2");
    tok = issue(&theirs, &c);
    expect_refused(&mine, tok, "token was signed with an unknown key");
    free(tok);
}

static void
test_token__expired_is_refused(void **state)
{
    struct keyring r;
    struct token_claims c = claims_at(NOW - 7200, NOW - LEEWAY - 1);
    char *tok;

    (void)state;
    ring_one(&r, KID);
    tok = issue(&r, &c);
    expect_refused(&r, tok, "token has expired");
    free(tok);
}

static void
test_token__not_yet_valid_is_refused(void **state)
{
    struct keyring r;
    struct token_claims c = claims_at(NOW + LEEWAY + 1, NOW + 3600);
    char *tok;

    (void)state;
    ring_one(&r, KID);
    tok = issue(&r, &c);
    expect_refused(&r, tok, "token is not valid yet");
    free(tok);
    /* nbf, when present, counts the same way. */
    tok = forge(good_header,
                "{\"sub\":\"" SUB "\",\"roles\":[\"user\"],\"iat\":1700000000,"
                "\"nbf\":1700000031,\"exp\":1700003600,\"jti\":\"" JTI "\"}",
                r.keys[0].key, NULL);
    expect_refused(&r, tok, "token is not valid yet");
    free(tok);
}

static void
test_token__within_leeway_is_accepted(void **state)
{
    struct keyring r;
    struct token_claims c, out;
    struct st_error err;
    char *tok;

    (void)state;
    ring_one(&r, KID);
    st_error_clear(&err);
    /* Expired, but only just: exp + leeway == now. */
    c = claims_at(NOW - 3600, NOW - LEEWAY);
    tok = issue(&r, &c);
    assert_ok(token_verify(&r, tok, NOW, LEEWAY, &out, &err), err);
    assert_err(token_verify(&r, tok, NOW, 0, &out, &err), err, ST_ERR_UNAUTHENTICATED,
               "token has expired");
    /* A negative leeway counts as none, never as extra strictness or slack. */
    assert_err(token_verify(&r, tok, NOW, -1000, &out, &err), err, ST_ERR_UNAUTHENTICATED,
               "token has expired");
    free(tok);
    /* Issued by a clock slightly ahead of ours. */
    c = claims_at(NOW + LEEWAY, NOW + 3600);
    tok = issue(&r, &c);
    assert_ok(token_verify(&r, tok, NOW, LEEWAY, &out, &err), err);
    assert_int_equal(out.iat, NOW + LEEWAY);
    free(tok);
    /* Absurd leeways do not overflow. */
    c = claims_at(NOW, NOW + 1);
    tok = issue(&r, &c);
    assert_ok(token_verify(&r, tok, NOW, INT64_MAX, &out, &err), err);
    assert_ok(token_verify(&r, tok, INT64_MAX - 5, INT64_MAX, &out, &err), err);
    assert_err(token_verify(&r, tok, INT64_MIN + 5, INT64_MAX, &out, &err), err,
               ST_ERR_UNAUTHENTICATED, "token is not valid yet");
    free(tok);
}

static void
test_token__bad_claims_are_refused(void **state)
{
    static const struct {
        const char *payload;
        const char *frag;
    } cases[] = {
        {"{\"roles\":[\"user\"],\"iat\":1700000000,\"exp\":1700003600,\"jti\":\"" JTI "\"}",
         "token subject is not a user id"},
        {"{\"sub\":\"admin\",\"roles\":[\"user\"],\"iat\":1700000000,\"exp\":1700003600,\"jti\":"
         "\"" JTI "\"}",
         "token subject is not a user id"},
        {"{\"sub\":\"" SUB "\",\"roles\":[\"user\"],\"iat\":1700000000,\"jti\":\"" JTI "\"}",
         "token has no expiry time"},
        {"{\"sub\":\"" SUB "\",\"roles\":[\"user\"],\"iat\":1700000000,\"exp\":\"1700003600\","
         "\"jti\":\"" JTI "\"}",
         "token has no expiry time"},
        {"{\"sub\":\"" SUB "\",\"roles\":[\"user\"],\"iat\":1700000000,\"exp\":1700003600.5,"
         "\"jti\":\"" JTI "\"}",
         "token has no expiry time"},
        {"{\"sub\":\"" SUB "\",\"roles\":[\"user\"],\"exp\":1700003600,\"jti\":\"" JTI "\"}",
         "token has no issue time"},
        {"{\"sub\":\"" SUB "\",\"roles\":[\"user\"],\"iat\":1700000000,\"exp\":1700003600,\"nbf\":"
         "true,\"jti\":\"" JTI "\"}",
         "token 'nbf' must be an integer"},
        {"{\"sub\":\"" SUB "\",\"roles\":[\"user\"],\"iat\":1700000000,\"exp\":1700003600}",
         "token has no id"},
        {"{\"sub\":\"" SUB "\",\"iat\":1700000000,\"exp\":1700003600,\"jti\":\"" JTI "\"}",
         "token roles must be an array of role names"},
        {"{\"sub\":\"" SUB "\",\"roles\":\"admin\",\"iat\":1700000000,\"exp\":1700003600,\"jti\":"
         "\"" JTI "\"}",
         "token roles must be an array of role names"},
        {"{\"sub\":\"" SUB "\",\"roles\":[\"root\"],\"iat\":1700000000,\"exp\":1700003600,\"jti\":"
         "\"" JTI "\"}",
         "token roles must be an array of role names"},
        {"{\"sub\":\"" SUB "\",\"roles\":[\"user\",1],\"iat\":1700000000,\"exp\":1700003600,"
         "\"jti\":\"" JTI "\"}",
         "token roles must be an array of role names"},
        {"{\"sub\":\"" SUB "\",\"roles\":[\"admin\",\"admin\"],\"iat\":1700000000,\"exp\":"
         "1700003600,\"jti\":\"" JTI "\"}",
         "token roles must be an array of role names"},
        {"[1,2,3]", "token payload is not a JSON object"},
        {"not json", "token payload is not a JSON object"},
    };
    struct keyring r;
    size_t i;

    (void)state;
    ring_one(&r, KID);
    for (i = 0; i < ST_ARRAY_LEN(cases); i++) {
        char *tok = forge(good_header, cases[i].payload, r.keys[0].key, NULL);

        expect_refused(&r, tok, cases[i].frag);
        free(tok);
    }
}

static void
test_token__rotation_keeps_old_tokens_until_the_key_is_pruned(void **state)
{
    char dir[256], path[300];
    struct keyring first, rotated, stale, pruned;
    struct token_claims c = claims_at(NOW - 10, NOW + 86400), out;
    struct st_error err;
    char *old_tok, *new_tok, *late_tok;
    int64_t rotated_at = NOW * 1000;

    (void)state;
    st_error_clear(&err);
    assert_ok(tmpdir_make(dir, sizeof(dir), "stratus-token", &err), err);
    snprintf(path, sizeof(path), "%s/token-keys", dir);
    assert_ok(keyring_ensure(path, &first, &err), err);
    old_tok = issue(&first, &c);

    assert_ok(keyring_rotate(path, rotated_at, 3600 * 1000, &rotated, &err), err);
    assert_ok(token_verify(&rotated, old_tok, NOW, LEEWAY, &out, &err), err);
    c = claims_at(NOW, NOW + 86400);
    new_tok = issue(&rotated, &c);
    assert_ok(token_verify(&rotated, new_tok, NOW, LEEWAY, &out, &err), err);
    assert_err(token_verify(&first, new_tok, NOW, LEEWAY, &out, &err), err, ST_ERR_UNAUTHENTICATED,
               "token was signed with an unknown key");

    /* Signed by a ring a second stale (a worker not yet re-read): within the leeway. */
    stale = first;
    c = claims_at(rotated_at / 1000 + 1, NOW + 86400);
    late_tok = issue(&stale, &c);
    assert_ok(token_verify(&rotated, late_tok, rotated_at / 1000 + 1, LEEWAY, &out, &err), err);
    free(late_tok);

    /* A process still holding the old ring long after the rotation: refused. */
    c = claims_at(NOW + 60, NOW + 86400);
    late_tok = issue(&stale, &c);
    assert_err(token_verify(&rotated, late_tok, NOW + 60, LEEWAY, &out, &err), err,
               ST_ERR_UNAUTHENTICATED, "token was issued after its key was retired");

    /* Two hours on, with an hour's retention: the old key is gone. */
    assert_ok(keyring_rotate(path, rotated_at + 2 * 3600 * 1000, 3600 * 1000, &pruned, &err), err);
    assert_int_equal(pruned.count, 2);
    assert_err(token_verify(&pruned, old_tok, NOW + 7200, LEEWAY, &out, &err), err,
               ST_ERR_UNAUTHENTICATED, "token was signed with an unknown key");
    assert_ok(token_verify(&pruned, new_tok, NOW + 7200, LEEWAY, &out, &err), err);
    free(old_tok);
    free(new_tok);
    free(late_tok);
    tmpdir_remove(dir);
}

static void
test_token__garbage_is_refused_without_a_crash(void **state)
{
    static const char *const garbage[] = {
        "",
        ".",
        "..",
        "...",
        "a",
        "a.b",
        "a.b.c.d",
        "!!!.???.***",
        "eyJhbGciOiJIUzI1NiJ9",
        "eyJhbGciOiJIUzI1NiJ9.",
        "eyJhbGciOiJIUzI1NiJ9..",
        "eyJhbGciOiJIUzI1NiJ9=.e30.AAAA",
        "e30.e30.",
        "Bearer abc.def.ghi",
        "\xff\xfe.\x01\x02.\x7f",
    };
    struct keyring r;
    char *big;
    size_t i;

    (void)state;
    ring_one(&r, KID);
    for (i = 0; i < ST_ARRAY_LEN(garbage); i++)
        expect_refused(&r, garbage[i], "token");
    expect_refused(&r, NULL, "no token given");
    expect_refused(&r, "", "no token given");
    expect_refused(&r, "..", "token header is not a JSON object");
    expect_refused(&r, "a.b", "token must have three parts");
    expect_refused(&r, "!!!.???.***", "token header is not valid base64url");

    big = st_xcalloc(5001, 1);
    memset(big, 'A', 5000);
    expect_refused(&r, big, "token is too long: at most 4096 bytes");
    big[100] = big[200] = '.';
    expect_refused(&r, big, "token is too long");
    /* Exactly the limit is decoded (and refused for its content). */
    big[4096] = '\0';
    expect_refused(&r, big, "token header is not a JSON object");
    free(big);

    /* Random bytes with two dots, many times over. */
    for (i = 0; i < 500; i++) {
        char buf[200];

        secret_random(buf, sizeof(buf) - 1);
        buf[sizeof(buf) - 1] = '\0';
        buf[i % 50 + 1] = '.';
        buf[i % 50 + 60] = '.';
        {
            struct token_claims out;
            struct st_error err;

            st_error_clear(&err);
            assert_int_equal(token_verify(&r, buf, NOW, LEEWAY, &out, &err), -1);
            assert_int_equal(err.code, ST_ERR_UNAUTHENTICATED);
        }
    }
}

static void
test_token__issue_refuses_bad_claims(void **state)
{
    struct keyring r, empty;
    struct token_claims c;
    struct st_error err;
    char *tok = NULL;

    (void)state;
    ring_one(&r, KID);
    memset(&empty, 0, sizeof(empty));
    st_error_clear(&err);
    c = claims_at(NOW, NOW + 60);
    assert_err(token_issue(&empty, &c, &tok, &err), err, ST_ERR_INTERNAL, "no current key");
    strcpy(c.sub, "nobody");
    assert_err(token_issue(&r, &c, &tok, &err), err, ST_ERR_INTERNAL, "UUID sub and jti");
    c = claims_at(NOW, NOW + 60);
    c.jti[0] = '\0';
    assert_err(token_issue(&r, &c, &tok, &err), err, ST_ERR_INTERNAL, "UUID sub and jti");
    c = claims_at(NOW, NOW);
    assert_err(token_issue(&r, &c, &tok, &err), err, ST_ERR_INTERNAL, "iat < exp");
    c = claims_at(NOW, NOW + 60);
    c.roles = 0x80;
    assert_err(token_issue(&r, &c, &tok, &err), err, ST_ERR_INTERNAL, "unknown role bits");
    assert_null(tok);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token__round_trip),
        cmocka_unit_test(test_token__tampered_token_is_refused),
        cmocka_unit_test(test_token__wrong_key_with_the_same_kid_is_refused),
        cmocka_unit_test(test_token__alg_none_is_refused),
        cmocka_unit_test(test_token__other_algorithms_are_refused),
        cmocka_unit_test(test_token__odd_headers_are_refused),
        cmocka_unit_test(test_token__unknown_kid_is_refused),
        cmocka_unit_test(test_token__expired_is_refused),
        cmocka_unit_test(test_token__not_yet_valid_is_refused),
        cmocka_unit_test(test_token__within_leeway_is_accepted),
        cmocka_unit_test(test_token__bad_claims_are_refused),
        cmocka_unit_test(test_token__rotation_keeps_old_tokens_until_the_key_is_pruned),
        cmocka_unit_test(test_token__garbage_is_refused_without_a_crash),
        cmocka_unit_test(test_token__issue_refuses_bad_claims),
    };

    return cmocka_run_group_tests(tests, setup, NULL);
}
