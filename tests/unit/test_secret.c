/*
 * test_secret.c - the libsodium wrappers: password hashes, base64url,
 * SHA-256 and HMAC against published vectors, constant-time comparison.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "util/secret.h"

static int
setup(void **state)
{
    struct st_error err;

    (void)state;
    st_error_clear(&err);
    if (secret_init(&err) < 0 || secret_init(&err) < 0)
        return -1;
    return 0;
}

static void
hex(const unsigned char *bin, size_t n, char *out)
{
    size_t i;

    for (i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", bin[i]);
}

static void
test_secret__password_verifies_only_with_the_right_password(void **state)
{
    char hash[SECRET_PWHASH_BUF];
    struct st_error err;

    (void)state;
    st_error_clear(&err);
    assert_int_equal(secret_password_hash("correct horse battery", SECRET_PWHASH_MIN, hash, &err),
                     0);
    assert_true(secret_password_verify(hash, "correct horse battery"));
    assert_false(secret_password_verify(hash, "correct horse batterY"));
    assert_false(secret_password_verify(hash, "correct horse battery "));
    assert_false(secret_password_verify(hash, ""));
}

static void
test_secret__password_hash_is_salted_argon2id(void **state)
{
    char a[SECRET_PWHASH_BUF], b[SECRET_PWHASH_BUF];
    struct st_error err;

    (void)state;
    st_error_clear(&err);
    assert_int_equal(secret_password_hash("same password", SECRET_PWHASH_MIN, a, &err), 0);
    assert_int_equal(secret_password_hash("same password", SECRET_PWHASH_MIN, b, &err), 0);
    assert_int_equal(strncmp(a, "$argon2id$", 10), 0);
    assert_int_equal(strncmp(b, "$argon2id$", 10), 0);
    assert_string_not_equal(a, b);
    assert_true(secret_password_verify(a, "same password"));
    assert_true(secret_password_verify(b, "same password"));
}

static void
test_secret__interactive_cost_is_recorded_in_the_hash(void **state)
{
    char hash[SECRET_PWHASH_BUF];
    struct st_error err;

    (void)state;
    st_error_clear(&err);
    assert_int_equal(secret_password_hash("pw", SECRET_PWHASH_INTERACTIVE, hash, &err), 0);
    assert_non_null(strstr(hash, "$m=65536,t=2,p=1$"));
    assert_true(secret_password_verify(hash, "pw"));
}

static void
test_secret__malformed_hash_is_refused(void **state)
{
    static const char *const bad[] = {
        "",
        "x",
        "$argon2id$",
        "$argon2id$v=19$m=8,t=1,p=1$",
        "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$!!!!",
        "$2y$10$abcdefghijklmnopqrstuuJk3v8l2.3s3m1yW4o2o6nQZ0Y1nB3e",
    };
    char hash[SECRET_PWHASH_BUF], unterminated[SECRET_PWHASH_BUF];
    struct st_error err;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(secret_password_verify(bad[i], "password"));
    assert_false(secret_password_verify(NULL, "password"));

    st_error_clear(&err);
    assert_int_equal(secret_password_hash("password", SECRET_PWHASH_MIN, hash, &err), 0);
    /* One changed character of the digest. */
    hash[strlen(hash) - 1] = hash[strlen(hash) - 1] == 'A' ? 'B' : 'A';
    assert_false(secret_password_verify(hash, "password"));
    /* No terminator within the buffer: refused without reading past it. */
    memset(unterminated, 'a', sizeof(unterminated));
    assert_false(secret_password_verify(unterminated, "password"));
}

static void
test_secret__pwhash_limits_names_round_trip(void **state)
{
    enum secret_pwhash_limits lim = SECRET_PWHASH_MODERATE;

    (void)state;
    assert_int_equal(secret_pwhash_limits_parse("min", &lim), 0);
    assert_int_equal(lim, SECRET_PWHASH_MIN);
    assert_int_equal(secret_pwhash_limits_parse("interactive", &lim), 0);
    assert_int_equal(lim, SECRET_PWHASH_INTERACTIVE);
    assert_int_equal(secret_pwhash_limits_parse("moderate", &lim), 0);
    assert_int_equal(lim, SECRET_PWHASH_MODERATE);
    assert_int_equal(secret_pwhash_limits_parse("Moderate", &lim), -1);
    assert_int_equal(secret_pwhash_limits_parse("sensitive", &lim), -1);
    assert_int_equal(secret_pwhash_limits_parse("", &lim), -1);
    assert_int_equal(secret_pwhash_limits_parse(NULL, &lim), -1);
    assert_int_equal(lim, SECRET_PWHASH_MODERATE);
    assert_string_equal(secret_pwhash_limits_name(SECRET_PWHASH_MIN), "min");
    assert_string_equal(secret_pwhash_limits_name(SECRET_PWHASH_INTERACTIVE), "interactive");
    assert_string_equal(secret_pwhash_limits_name(SECRET_PWHASH_MODERATE), "moderate");
    assert_string_equal(secret_pwhash_limits_name((enum secret_pwhash_limits)42), "unknown");
}

static void
test_secret__b64url_round_trips_every_length(void **state)
{
    unsigned char bin[64], back[64];
    char text[128];
    size_t n, len, out_len;

    (void)state;
    for (n = 0; n <= sizeof(bin); n++) {
        secret_random(bin, n);
        len = secret_b64url_encoded_len(n);
        secret_b64url_encode(bin, n, text, len + 1);
        assert_int_equal(strlen(text), len);
        assert_null(strchr(text, '='));
        assert_null(strchr(text, '+'));
        assert_null(strchr(text, '/'));
        out_len = 999;
        assert_int_equal(secret_b64url_decode(text, len, back, sizeof(back), &out_len), 0);
        assert_int_equal(out_len, n);
        assert_memory_equal(back, bin, n);
    }
    /* RFC 4648 section 10, without padding and in the url-safe alphabet. */
    secret_b64url_encode("foob", 4, text, sizeof(text));
    assert_string_equal(text, "Zm9vYg");
    secret_b64url_encode("\xfb\xff", 2, text, sizeof(text));
    assert_string_equal(text, "-_8");
    assert_int_equal(secret_b64url_encoded_len(0), 0);
    assert_int_equal(secret_b64url_encoded_len(1), 2);
    assert_int_equal(secret_b64url_encoded_len(2), 3);
    assert_int_equal(secret_b64url_encoded_len(3), 4);
    assert_int_equal(secret_b64url_encoded_len(32), 43);
}

static void
test_secret__b64url_garbage_is_refused(void **state)
{
    static const char *const bad[] = {
        "Zm9vYg==", /* padding */
        "Zm9vYg=",  "+_8",      "/_8",      "-_8=",
        "Zm9v Yg",  " Zm9vYg",  "Zm9vYg\n", "Z", /* 4k+1 characters cannot be */
        "Zm9vY",    "Zm9vYh",                    /* non-zero trailing bits */
        "Zm9v!g",   "\xc3\xa9",
    };
    unsigned char out[64];
    size_t i, n;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (secret_b64url_decode(bad[i], strlen(bad[i]), out, sizeof(out), &n) != -1)
            fail_msg("'%s' was accepted", bad[i]);
    }
    /* A NUL inside the given length. */
    assert_int_equal(secret_b64url_decode("Zm\0vYg", 6, out, sizeof(out), &n), -1);
    /* More bytes than the buffer holds. */
    assert_int_equal(secret_b64url_decode("Zm9vYmFy", 8, out, 5, &n), -1);
    assert_int_equal(secret_b64url_decode("Zm9vYmFy", 8, out, 6, &n), 0);
    assert_int_equal(n, 6);
    /* Nothing decodes to nothing. */
    assert_int_equal(secret_b64url_decode("", 0, out, sizeof(out), &n), 0);
    assert_int_equal(n, 0);
}

static void
test_secret__b64url_decode_survives_random_input(void **state)
{
    unsigned char in[97], out[80];
    size_t i, n;

    (void)state;
    for (i = 0; i < 2000; i++) {
        secret_random(in, sizeof(in));
        /* Any result is fine; a crash or an overrun (under ASan) is not. */
        (void)secret_b64url_decode((const char *)in, i % sizeof(in), out, sizeof(out), &n);
    }
}

static void
test_secret__sha256_of_abc(void **state)
{
    char out[SECRET_SHA256_HEX_BUF];

    (void)state;
    secret_sha256_hex("abc", 3, out);
    assert_string_equal(out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    secret_sha256_hex("", 0, out);
    assert_string_equal(out, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static void
test_secret__hmac_matches_rfc4231(void **state)
{
    unsigned char key[131], mac[SECRET_HMAC_BYTES];
    char text[2 * SECRET_HMAC_BYTES + 1];
    const char *msg;

    (void)state;
    /* Test case 1: a 20-byte key. */
    memset(key, 0x0b, 20);
    secret_hmac_sha256(key, 20, "Hi There", 8, mac);
    hex(mac, sizeof(mac), text);
    assert_string_equal(text, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    /* Test case 2: a key shorter than the block. */
    msg = "what do ya want for nothing?";
    secret_hmac_sha256("Jefe", 4, msg, strlen(msg), mac);
    hex(mac, sizeof(mac), text);
    assert_string_equal(text, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    /* Test case 6: a key longer than the block, hashed first. */
    memset(key, 0xaa, sizeof(key));
    msg = "Test Using Larger Than Block-Size Key - Hash Key First";
    secret_hmac_sha256(key, sizeof(key), msg, strlen(msg), mac);
    hex(mac, sizeof(mac), text);
    assert_string_equal(text, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

static void
test_secret__equal_compares_every_byte(void **state)
{
    unsigned char a[32], b[32];

    (void)state;
    secret_random(a, sizeof(a));
    memcpy(b, a, sizeof(b));
    assert_true(secret_equal(a, b, sizeof(a)));
    b[31] ^= 1;
    assert_false(secret_equal(a, b, sizeof(a)));
    b[31] ^= 1;
    b[0] ^= 0x80;
    assert_false(secret_equal(a, b, sizeof(a)));
    assert_true(secret_equal(a, b, 0));
}

static void
test_secret__random_token_uses_the_url_safe_alphabet(void **state)
{
    char a[201], b[201];
    size_t i;

    (void)state;
    memset(a, '*', sizeof(a));
    secret_random_token(a, 200);
    secret_random_token(b, 200);
    assert_int_equal(strlen(a), 200);
    assert_string_not_equal(a, b);
    for (i = 0; i < 200; i++) {
        if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", a[i]))
            fail_msg("character %zu is %#x", i, (unsigned)(unsigned char)a[i]);
    }
    secret_random_token(a, 0);
    assert_string_equal(a, "");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_secret__password_verifies_only_with_the_right_password),
        cmocka_unit_test(test_secret__password_hash_is_salted_argon2id),
        cmocka_unit_test(test_secret__interactive_cost_is_recorded_in_the_hash),
        cmocka_unit_test(test_secret__malformed_hash_is_refused),
        cmocka_unit_test(test_secret__pwhash_limits_names_round_trip),
        cmocka_unit_test(test_secret__b64url_round_trips_every_length),
        cmocka_unit_test(test_secret__b64url_garbage_is_refused),
        cmocka_unit_test(test_secret__b64url_decode_survives_random_input),
        cmocka_unit_test(test_secret__sha256_of_abc),
        cmocka_unit_test(test_secret__hmac_matches_rfc4231),
        cmocka_unit_test(test_secret__equal_compares_every_byte),
        cmocka_unit_test(test_secret__random_token_uses_the_url_safe_alphabet),
    };

    return cmocka_run_group_tests(tests, setup, NULL);
}
