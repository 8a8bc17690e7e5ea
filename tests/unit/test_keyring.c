/*
 * test_keyring.c - the token signing keys in their file: creation, mode
 * checks, parse errors, rotation and concurrent creators.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "support/tmpdir.h"
#include "util/keyring.h"
#include "util/mem.h"
#include "util/secret.h"

#define T0 1700000000000LL
#define HOUR_MS (3600LL * 1000)
/* 32 zero bytes in unpadded base64url. */
#define ZERO_KEY "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

struct ctx {
    char dir[256];
    char path[300];
};

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
    struct ctx *c = st_xcalloc(1, sizeof(*c));
    struct st_error err;

    st_error_clear(&err);
    if (secret_init(&err) < 0 || tmpdir_make(c->dir, sizeof(c->dir), "stratus-keyring", &err) < 0) {
        free(c);
        return -1;
    }
    snprintf(c->path, sizeof(c->path), "%s/token-keys", c->dir);
    *state = c;
    return 0;
}

static int
teardown(void **state)
{
    struct ctx *c = *state;

    tmpdir_remove(c->dir);
    free(c);
    return 0;
}

static void
write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f;

    unlink(path);
    f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, mode), 0);
}

static size_t
current_count(const struct keyring *r)
{
    size_t i, n = 0;

    for (i = 0; i < r->count; i++)
        n += r->keys[i].retired_at == 0;
    return n;
}

static void
test_keyring__ensure_creates_a_private_file_once(void **state)
{
    struct ctx *c = *state;
    struct keyring a, b;
    struct st_error err;
    struct stat st;

    st_error_clear(&err);
    assert_err(keyring_load(c->path, &a, &err), err, ST_ERR_NOT_FOUND, "does not exist");
    assert_ok(keyring_ensure(c->path, &a, &err), err);
    assert_int_equal(a.count, 1);
    assert_non_null(keyring_current(&a));
    assert_int_equal(strlen(a.keys[0].kid), KEYRING_KID_LEN);
    assert_int_equal(stat(c->path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);

    assert_ok(keyring_ensure(c->path, &b, &err), err);
    assert_int_equal(b.count, 1);
    assert_string_equal(b.keys[0].kid, a.keys[0].kid);
    assert_memory_equal(b.keys[0].key, a.keys[0].key, KEYRING_KEY_BYTES);
    assert_true(keyring_find(&b, a.keys[0].kid) == &b.keys[0]);
    assert_null(keyring_find(&b, "0000000000000000"));
    assert_null(keyring_find(&b, NULL));
}

static void
test_keyring__file_open_to_others_is_refused(void **state)
{
    struct ctx *c = *state;
    struct keyring r;
    struct st_error err;

    st_error_clear(&err);
    assert_ok(keyring_ensure(c->path, &r, &err), err);
    assert_int_equal(chmod(c->path, 0644), 0);
    assert_err(keyring_load(c->path, &r, &err), err, ST_ERR_FORBIDDEN, "' must be mode 0600");
    assert_non_null(strstr(err.msg, c->path));
    /* ensure must not paper over it by creating a new ring. */
    assert_err(keyring_ensure(c->path, &r, &err), err, ST_ERR_FORBIDDEN, "must be mode 0600");
    assert_int_equal(chmod(c->path, 0620), 0);
    assert_err(keyring_load(c->path, &r, &err), err, ST_ERR_FORBIDDEN, "must be mode 0600");
    assert_int_equal(chmod(c->path, 0604), 0);
    assert_err(keyring_load(c->path, &r, &err), err, ST_ERR_FORBIDDEN, "must be mode 0600");
    assert_int_equal(chmod(c->path, 0400), 0);
    assert_ok(keyring_load(c->path, &r, &err), err);
    /* A directory is not a ring either. */
    assert_err(keyring_load(c->dir, &r, &err), err, ST_ERR_FORBIDDEN, "not a regular file");
}

struct bad_file {
    const char *text;
    const char *frag; /* after "<path>" */
};

static const struct bad_file bad_files[] = {
    {"", "' holds no keys"},
    {"# only a comment\n\n", "' holds no keys"},
    {"0123456789abcdef " ZERO_KEY " 1\n",
     ":1: expected '<kid> <key> <created_ms> <retired_ms>', got 3 fields"},
    {"# c\n0123456789abcdef " ZERO_KEY " 1 0 9\n",
     ":2: expected '<kid> <key> <created_ms> <retired_ms>', got more than 4 fields"},
    {"0123456789ABCDEF " ZERO_KEY " 1 0\n", ":1: the key id must be 16 lower-case hex digits"},
    {"0123456789abcde " ZERO_KEY " 1 0\n", ":1: the key id must be 16"},
    {"0123456789abcdef AAAA 1 0\n", ":1: the key must be 32 bytes in unpadded base64url"},
    {"0123456789abcdef " ZERO_KEY "= 1 0\n", ":1: the key must be 32 bytes"},
    {"0123456789abcdef AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA+ 1 0\n", ":1: the key must be"},
    {"\n\n0123456789abcdef " ZERO_KEY " -1 0\n", ":3: created_ms must be a non-negative integer"},
    {"0123456789abcdef " ZERO_KEY " 1 x\n", ":1: retired_ms must be a non-negative integer"},
    {"0123456789abcdef " ZERO_KEY " 1 99999999999999999999\n", ":1: retired_ms must be"},
    {"0123456789abcdef " ZERO_KEY " 1 5\n",
     "' must hold exactly one current key (retired_ms 0), found 0"},
    {"0123456789abcdef " ZERO_KEY " 1 0\n1123456789abcdef " ZERO_KEY " 1 0\n",
     "' must hold exactly one current key (retired_ms 0), found 2"},
    {"0123456789abcdef " ZERO_KEY " 1 0\n0123456789abcdef " ZERO_KEY " 1 5\n",
     ":2: key id '0123456789abcdef' appears twice"},
};

static void
test_keyring__malformed_lines_name_path_and_line(void **state)
{
    struct ctx *c = *state;
    struct keyring r;
    struct st_error err;
    char want[512];
    size_t i;

    for (i = 0; i < ST_ARRAY_LEN(bad_files); i++) {
        write_file(c->path, bad_files[i].text, 0600);
        st_error_clear(&err);
        snprintf(want, sizeof(want), "%s%s", c->path, bad_files[i].frag);
        if (keyring_load(c->path, &r, &err) != -1 || err.code != ST_ERR_INVALID ||
            !strstr(err.msg, want))
            fail_msg("case %zu: want \"%s\", got %s: %s", i, want, st_err_code_name(err.code),
                     err.msg);
        /* The key material never shows up in a message. */
        assert_null(strstr(err.msg, ZERO_KEY));
    }
}

static void
test_keyring__more_than_eight_keys_is_refused(void **state)
{
    struct ctx *c = *state;
    char text[2048] = "";
    struct keyring r;
    struct st_error err;
    int i;

    for (i = 0; i < KEYRING_MAX + 1; i++) {
        char line[128];

        snprintf(line, sizeof(line), "%016x %s 1 %d\n", i, ZERO_KEY, i);
        strcat(text, line);
    }
    write_file(c->path, text, 0600);
    st_error_clear(&err);
    assert_err(keyring_load(c->path, &r, &err), err, ST_ERR_INVALID, ":9: more than 8 keys");
}

static void
test_keyring__hand_written_file_loads(void **state)
{
    struct ctx *c = *state;
    struct keyring r;
    struct st_error err;
    static const unsigned char zero[KEYRING_KEY_BYTES];

    write_file(c->path,
               "# keys\n  \n\t0123456789abcdef\t" ZERO_KEY " 1700000000000 1700000001000\n"
               "fedcba9876543210 " ZERO_KEY "  1700000001000 0",
               0600);
    st_error_clear(&err);
    assert_ok(keyring_load(c->path, &r, &err), err);
    assert_int_equal(r.count, 2);
    assert_string_equal(r.keys[0].kid, "0123456789abcdef");
    assert_int_equal(r.keys[0].created_at, 1700000000000LL);
    assert_int_equal(r.keys[0].retired_at, 1700000001000LL);
    assert_memory_equal(r.keys[0].key, zero, sizeof(zero));
    assert_string_equal(keyring_current(&r)->kid, "fedcba9876543210");
}

static void
test_keyring__rotate_keeps_exactly_one_current_key(void **state)
{
    struct ctx *c = *state;
    struct keyring first, r, again;
    struct st_error err;
    char old_kid[KEYRING_KID_BUF];

    st_error_clear(&err);
    assert_err(keyring_rotate(c->path, T0, HOUR_MS, &r, &err), err, ST_ERR_NOT_FOUND,
               "does not exist");
    assert_ok(keyring_ensure(c->path, &first, &err), err);
    strcpy(old_kid, keyring_current(&first)->kid);

    assert_ok(keyring_rotate(c->path, T0, HOUR_MS, &r, &err), err);
    assert_int_equal(r.count, 2);
    assert_int_equal(current_count(&r), 1);
    assert_string_not_equal(keyring_current(&r)->kid, old_kid);
    assert_int_equal(keyring_find(&r, old_kid)->retired_at, T0);
    assert_memory_equal(keyring_find(&r, old_kid)->key, keyring_current(&first)->key,
                        KEYRING_KEY_BYTES);
    assert_int_equal(keyring_current(&r)->created_at, T0);

    /* The file says the same, and is still private. */
    assert_ok(keyring_load(c->path, &again, &err), err);
    assert_int_equal(again.count, 2);
    assert_string_equal(keyring_current(&again)->kid, keyring_current(&r)->kid);

    /* Within the retention the old key stays; past it, it goes. */
    assert_ok(keyring_rotate(c->path, T0 + HOUR_MS, HOUR_MS, &r, &err), err);
    assert_int_equal(r.count, 3);
    assert_non_null(keyring_find(&r, old_kid));
    assert_ok(keyring_rotate(c->path, T0 + HOUR_MS + 1, HOUR_MS, &r, &err), err);
    assert_int_equal(r.count, 3);
    assert_null(keyring_find(&r, old_kid));
    assert_int_equal(current_count(&r), 1);

    /* Even without retention the key retired now is kept. */
    assert_ok(keyring_rotate(c->path, T0 + 10 * HOUR_MS, 0, &r, &err), err);
    assert_int_equal(r.count, 2);
    assert_int_equal(current_count(&r), 1);

    assert_err(keyring_rotate(c->path, -1, HOUR_MS, &r, &err), err, ST_ERR_INVALID,
               "key rotation needs");
    assert_err(keyring_rotate(c->path, T0, -1, &r, &err), err, ST_ERR_INVALID,
               "key rotation needs");
}

static void
test_keyring__rotate_on_a_full_ring_drops_the_oldest_retired(void **state)
{
    struct ctx *c = *state;
    struct keyring r;
    struct st_error err;
    char first_retired[KEYRING_KID_BUF];
    int i;

    st_error_clear(&err);
    assert_ok(keyring_ensure(c->path, &r, &err), err);
    strcpy(first_retired, keyring_current(&r)->kid);
    for (i = 1; i < KEYRING_MAX; i++)
        assert_ok(keyring_rotate(c->path, T0 + i, 24 * HOUR_MS, &r, &err), err);
    assert_int_equal(r.count, KEYRING_MAX);
    assert_non_null(keyring_find(&r, first_retired));
    assert_ok(keyring_rotate(c->path, T0 + KEYRING_MAX, 24 * HOUR_MS, &r, &err), err);
    assert_int_equal(r.count, KEYRING_MAX);
    assert_null(keyring_find(&r, first_retired));
    assert_int_equal(current_count(&r), 1);
}

/* Several processes racing to create the ring all get the same single key. */
static void
test_keyring__concurrent_ensure_agrees_on_one_key(void **state)
{
    enum { N = 8 };
    struct ctx *c = *state;
    char got[N][KEYRING_KID_BUF + 1];
    struct keyring r;
    struct st_error err;
    pid_t pids[N];
    int fds[N][2];
    int i, status;

    for (i = 0; i < N; i++) {
        assert_int_equal(pipe(fds[i]), 0);
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            struct keyring mine;
            struct st_error e;
            ssize_t w;

            st_error_clear(&e);
            if (keyring_ensure(c->path, &mine, &e) < 0)
                _exit(1);
            w = write(fds[i][1], mine.keys[0].kid, KEYRING_KID_LEN);
            _exit(w == KEYRING_KID_LEN && mine.count == 1 ? 0 : 2);
        }
        close(fds[i][1]);
    }
    for (i = 0; i < N; i++) {
        ssize_t n = read(fds[i][0], got[i], KEYRING_KID_LEN);

        close(fds[i][0]);
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        assert_int_equal(n, KEYRING_KID_LEN);
        got[i][KEYRING_KID_LEN] = '\0';
    }
    st_error_clear(&err);
    assert_ok(keyring_load(c->path, &r, &err), err);
    assert_int_equal(r.count, 1);
    for (i = 0; i < N; i++)
        assert_string_equal(got[i], r.keys[0].kid);
}

/* Concurrent rotations are serialized: none is lost. */
static void
test_keyring__concurrent_rotations_are_serialized(void **state)
{
    enum { N = 6 };
    struct ctx *c = *state;
    struct keyring r;
    struct st_error err;
    pid_t pids[N];
    int i, status;

    st_error_clear(&err);
    assert_ok(keyring_ensure(c->path, &r, &err), err);
    for (i = 0; i < N; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            struct keyring mine;
            struct st_error e;

            st_error_clear(&e);
            _exit(keyring_rotate(c->path, T0 + i, 24 * HOUR_MS, &mine, &e) < 0 ? 1 : 0);
        }
    }
    for (i = 0; i < N; i++) {
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    assert_ok(keyring_load(c->path, &r, &err), err);
    assert_int_equal(r.count, N + 1);
    assert_int_equal(current_count(&r), 1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_keyring__ensure_creates_a_private_file_once, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_keyring__file_open_to_others_is_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_keyring__malformed_lines_name_path_and_line, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_keyring__more_than_eight_keys_is_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_keyring__hand_written_file_loads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keyring__rotate_keeps_exactly_one_current_key, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_keyring__rotate_on_a_full_ring_drops_the_oldest_retired, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keyring__concurrent_ensure_agrees_on_one_key, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_keyring__concurrent_rotations_are_serialized, setup,
                                        teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
