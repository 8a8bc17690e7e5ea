#include "util/keyring.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/ids.h"
#include "util/mem.h"
#include "util/secret.h"

/* A real ring is under 1 KiB; anything much bigger is not one of ours. */
#define KEYRING_FILE_MAX 16384
#define KEYRING_LINE_MAX 256
#define KEYRING_KEY_B64_LEN 43 /* 32 bytes, unpadded */
/* Eight keys of about 90 bytes each and the header comment. */
#define KEYRING_TEXT_BUF 2048

static const char keyring_header[] =
    "# stratus token signing keys: <kid> <key> <created_ms> <retired_ms>\n"
    "# retired_ms 0 marks the current key.  Keep this file mode 0600.\n";

const struct keyring_key *
keyring_current(const struct keyring *r)
{
    size_t i;

    for (i = 0; i < r->count; i++) {
        if (r->keys[i].retired_at == 0)
            return &r->keys[i];
    }
    return NULL;
}

const struct keyring_key *
keyring_find(const struct keyring *r, const char *kid)
{
    size_t i;

    if (!kid)
        return NULL;
    for (i = 0; i < r->count; i++) {
        if (strcmp(r->keys[i].kid, kid) == 0)
            return &r->keys[i];
    }
    return NULL;
}

static int
keyring_errno(struct st_error *err, const char *what, const char *path)
{
    int e = errno;

    return st_error_set_native(err, ST_ERR_INTERNAL, e, "cannot %s '%s': %s", what, path,
                               strerror(e));
}

/* Read the whole file, refusing it unless only its owner may touch it. */
static int
keyring_read(const char *path, char *buf, size_t size, size_t *len, struct st_error *err)
{
    struct stat st;
    size_t used = 0;
    int fd, rc = -1;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        if (errno == ENOENT)
            return st_error_set_native(err, ST_ERR_NOT_FOUND, ENOENT, "'%s' does not exist", path);
        return keyring_errno(err, "open", path);
    }
    if (fstat(fd, &st) < 0) {
        keyring_errno(err, "stat", path);
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        st_error_set(err, ST_ERR_FORBIDDEN, "'%s' must be mode 0600, but it is not a regular file",
                     path);
        goto out;
    }
    /* The keys sign every token: nobody but the owner may read or replace them. */
    if (st.st_mode & 077) {
        st_error_set(err, ST_ERR_FORBIDDEN, "'%s' must be mode 0600, but it is mode %04o", path,
                     (unsigned)(st.st_mode & 07777));
        goto out;
    }
    for (;;) {
        ssize_t n = read(fd, buf + used, size - used);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            keyring_errno(err, "read", path);
            goto out;
        }
        if (n == 0)
            break;
        used += (size_t)n;
        if (used == size) {
            st_error_set(err, ST_ERR_INVALID,
                         "'%s' is too large to be a key ring: %zu bytes or more", path, size);
            goto out;
        }
    }
    *len = used;
    rc = 0;
out:
    close(fd);
    return rc;
}

static bool
keyring_kid_valid(const char *s)
{
    size_t i;

    for (i = 0; s[i]; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    }
    return i == KEYRING_KID_LEN;
}

/* A decimal number of milliseconds: digits only, no sign, fits int64_t. */
static int
keyring_parse_ms(const char *s, int64_t *out)
{
    int64_t v = 0;
    size_t i;

    if (!s[0])
        return -1;
    for (i = 0; s[i]; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        if (v > (INT64_MAX - (s[i] - '0')) / 10)
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

/* Parse one non-comment line; the key material is never quoted back. */
static int
keyring_parse_line(const char *path, size_t lineno, char *line, struct keyring_key *k,
                   struct st_error *err)
{
    char *field[4];
    char *save = NULL, *tok;
    size_t n = 0, key_len = 0;

    for (tok = strtok_r(line, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)) {
        if (n == ST_ARRAY_LEN(field))
            return st_error_set(
                err, ST_ERR_INVALID,
                "%s:%zu: expected '<kid> <key> <created_ms> <retired_ms>', got more than 4 fields",
                path, lineno);
        field[n++] = tok;
    }
    if (n != ST_ARRAY_LEN(field))
        return st_error_set(
            err, ST_ERR_INVALID,
            "%s:%zu: expected '<kid> <key> <created_ms> <retired_ms>', got %zu fields", path,
            lineno, n);
    if (!keyring_kid_valid(field[0]))
        return st_error_set(err, ST_ERR_INVALID,
                            "%s:%zu: the key id must be %d lower-case hex digits", path, lineno,
                            KEYRING_KID_LEN);
    if (strlen(field[1]) != KEYRING_KEY_B64_LEN ||
        secret_b64url_decode(field[1], KEYRING_KEY_B64_LEN, k->key, sizeof(k->key), &key_len) < 0 ||
        key_len != KEYRING_KEY_BYTES)
        return st_error_set(err, ST_ERR_INVALID,
                            "%s:%zu: the key must be %d bytes in unpadded base64url", path, lineno,
                            KEYRING_KEY_BYTES);
    if (keyring_parse_ms(field[2], &k->created_at) < 0)
        return st_error_set(err, ST_ERR_INVALID,
                            "%s:%zu: created_ms must be a non-negative integer, got '%.24s'", path,
                            lineno, field[2]);
    if (keyring_parse_ms(field[3], &k->retired_at) < 0)
        return st_error_set(err, ST_ERR_INVALID,
                            "%s:%zu: retired_ms must be a non-negative integer, got '%.24s'", path,
                            lineno, field[3]);
    memcpy(k->kid, field[0], KEYRING_KID_BUF);
    return 0;
}

/* The rules that hold for the ring as a whole. */
static int
keyring_check(const char *path, const struct keyring *r, struct st_error *err)
{
    size_t i, current = 0;

    if (r->count == 0)
        return st_error_set(err, ST_ERR_INVALID, "'%s' holds no keys", path);
    for (i = 0; i < r->count; i++)
        current += r->keys[i].retired_at == 0;
    if (current != 1)
        return st_error_set(err, ST_ERR_INVALID,
                            "'%s' must hold exactly one current key (retired_ms 0), found %zu",
                            path, current);
    return 0;
}

/* One line of the file into @r; 1 when it held a key, 0 for a comment or blank. */
static int
keyring_parse_one(const char *path, size_t lineno, char *line, struct keyring *r,
                  struct st_error *err)
{
    char first = line[strspn(line, " \t")];

    if (first == '\0' || first == '#')
        return 0;
    if (r->count == KEYRING_MAX)
        return st_error_set(err, ST_ERR_INVALID, "%s:%zu: more than %d keys", path, lineno,
                            KEYRING_MAX);
    if (keyring_parse_line(path, lineno, line, &r->keys[r->count], err) < 0)
        return -1;
    if (keyring_find(r, r->keys[r->count].kid))
        return st_error_set(err, ST_ERR_INVALID, "%s:%zu: key id '%s' appears twice", path, lineno,
                            r->keys[r->count].kid);
    r->count++;
    return 1;
}

static int
keyring_parse(const char *path, const char *text, size_t len, struct keyring *r,
              struct st_error *err)
{
    char line[KEYRING_LINE_MAX];
    size_t pos = 0, lineno = 0;
    int rc = 0;

    r->count = 0;
    while (rc >= 0 && pos < len) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t line_len = nl ? (size_t)(nl - (text + pos)) : len - pos;

        lineno++;
        if (line_len >= sizeof(line)) {
            rc = st_error_set(err, ST_ERR_INVALID, "%s:%zu: line too long", path, lineno);
            break;
        }
        memcpy(line, text + pos, line_len);
        line[line_len] = '\0';
        pos += line_len + 1;
        if (strlen(line) != line_len)
            rc = st_error_set(err, ST_ERR_INVALID, "%s:%zu: NUL byte in line", path, lineno);
        else
            rc = keyring_parse_one(path, lineno, line, r, err);
    }
    explicit_bzero(line, sizeof(line));
    if (rc < 0)
        return -1;
    return keyring_check(path, r, err);
}

int
keyring_load(const char *path, struct keyring *out, struct st_error *err)
{
    char text[KEYRING_FILE_MAX];
    struct keyring ring;
    size_t len = 0;
    int rc;

    if (keyring_read(path, text, sizeof(text), &len, err) < 0)
        return -1;
    rc = keyring_parse(path, text, len, &ring, err);
    explicit_bzero(text, len);
    if (rc == 0)
        *out = ring;
    explicit_bzero(&ring, sizeof(ring));
    return rc;
}

/* Append a fresh current key with a kid no other key of @r has. */
static void
keyring_add_fresh(struct keyring *r, int64_t now_ms)
{
    struct keyring_key *k = &r->keys[r->count];
    unsigned char id[KEYRING_KID_LEN / 2];
    size_t i;

    if (r->count >= KEYRING_MAX)
        BUG("keyring_add_fresh: ring full");
    do {
        secret_random(id, sizeof(id));
        for (i = 0; i < sizeof(id); i++)
            snprintf(k->kid + 2 * i, 3, "%02x", id[i]);
    } while (keyring_find(r, k->kid));
    secret_random(k->key, sizeof(k->key));
    k->created_at = now_ms;
    k->retired_at = 0;
    r->count++;
}

/* The file's text; @out holds KEYRING_TEXT_BUF bytes. */
static size_t
keyring_format(const struct keyring *r, char *out)
{
    char b64[KEYRING_KEY_B64_LEN + 1];
    size_t used, i;

    used = (size_t)snprintf(out, KEYRING_TEXT_BUF, "%s", keyring_header);
    for (i = 0; i < r->count; i++) {
        const struct keyring_key *k = &r->keys[i];

        secret_b64url_encode(k->key, sizeof(k->key), b64, sizeof(b64));
        used +=
            (size_t)snprintf(out + used, KEYRING_TEXT_BUF - used, "%s %s %" PRId64 " %" PRId64 "\n",
                             k->kid, b64, k->created_at, k->retired_at);
        if (used >= KEYRING_TEXT_BUF)
            BUG("keyring_format: text buffer too small");
    }
    explicit_bzero(b64, sizeof(b64));
    return used;
}

static int
keyring_write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Make the name change of @path durable: fsync its directory. */
static int
keyring_sync_dir(const char *path, struct st_error *err)
{
    char dir[PATH_MAX];
    char *slash;
    int fd, rc;

    if (st_strlcpy(dir, path, sizeof(dir)) < 0)
        return st_error_set(err, ST_ERR_INVALID, "key ring path is too long: '%.64s...'", path);
    slash = strrchr(dir, '/');
    if (!slash)
        st_strlcpy(dir, ".", sizeof(dir));
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return keyring_errno(err, "open the directory", dir);
    rc = fsync(fd);
    if (rc < 0)
        keyring_errno(err, "sync the directory", dir);
    close(fd);
    return rc < 0 ? -1 : 0;
}

/*
 * Write @r to a fresh temp file next to @path (O_EXCL, mode 0600) and
 * fsync it; its name goes to @tmp (PATH_MAX bytes).  The caller publishes
 * it with link() or rename() and removes the name when that fails.
 */
static int
keyring_write_temp(const char *path, const struct keyring *r, char *tmp, struct st_error *err)
{
    char text[KEYRING_TEXT_BUF];
    size_t len;
    int fd, rc = -1;

    if ((size_t)snprintf(tmp, PATH_MAX, "%s.tmp-XXXXXX", path) >= PATH_MAX)
        return st_error_set(err, ST_ERR_INVALID, "key ring path is too long: '%.64s...'", path);
    /* mkostemp() opens with O_CREAT | O_EXCL and mode 0600. */
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0)
        return keyring_errno(err, "create", tmp);
    len = keyring_format(r, text);
    if (fchmod(fd, 0600) < 0)
        keyring_errno(err, "chmod", tmp);
    else if (keyring_write_all(fd, text, len) < 0)
        keyring_errno(err, "write", tmp);
    else if (fsync(fd) < 0)
        keyring_errno(err, "sync", tmp);
    else
        rc = 0;
    explicit_bzero(text, sizeof(text));
    if (close(fd) < 0 && rc == 0)
        rc = keyring_errno(err, "close", tmp);
    if (rc < 0)
        unlink(tmp);
    return rc;
}

/* Create the file with one fresh key unless someone else created it first. */
static int
keyring_create(const char *path, struct st_error *err)
{
    char tmp[PATH_MAX];
    struct keyring ring = {.count = 0};
    int rc;

    keyring_add_fresh(&ring, st_now_ms());
    rc = keyring_write_temp(path, &ring, tmp, err);
    explicit_bzero(&ring, sizeof(ring));
    if (rc < 0)
        return -1;
    /* link() never replaces: of racing creators exactly one wins. */
    if (link(tmp, path) < 0 && errno != EEXIST) {
        keyring_errno(err, "create", path);
        unlink(tmp);
        return -1;
    }
    unlink(tmp);
    return keyring_sync_dir(path, err);
}

int
keyring_ensure(const char *path, struct keyring *out, struct st_error *err)
{
    struct st_error load_err;

    /* Our own error: "absent" must be told from "broken" even when @err is NULL. */
    st_error_clear(&load_err);
    if (keyring_load(path, out, &load_err) == 0)
        return 0;
    if (load_err.code != ST_ERR_NOT_FOUND) {
        if (err)
            *err = load_err;
        return -1;
    }
    if (keyring_create(path, err) < 0)
        return -1;
    return keyring_load(path, out, err);
}

static int
keyring_lock(const char *path, struct st_error *err)
{
    char lock[PATH_MAX];
    int fd;

    /*
     * Not the ring itself: rename() swaps its inode, and a waiter holding
     * a lock on the old inode would not exclude one locking the new.
     */
    if ((size_t)snprintf(lock, sizeof(lock), "%s.lock", path) >= sizeof(lock))
        return st_error_set(err, ST_ERR_INVALID, "key ring path is too long: '%.64s...'", path);
    fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
    if (fd < 0)
        return keyring_errno(err, "open the lock", lock);
    while (flock(fd, LOCK_EX) < 0) {
        if (errno != EINTR) {
            keyring_errno(err, "lock", lock);
            close(fd);
            return -1;
        }
    }
    return fd;
}

/* Retire the current key and prune what has been retired long enough. */
static void
keyring_retire(struct keyring *r, int64_t now_ms, int64_t keep_retired_ms)
{
    size_t i, kept = 0, oldest;

    for (i = 0; i < r->count; i++) {
        struct keyring_key *k = &r->keys[i];

        if (k->retired_at == 0)
            k->retired_at = now_ms;
        /* retired_at + keep < now, without overflow; a key retired "later" stays. */
        else if (k->retired_at < now_ms && now_ms - k->retired_at > keep_retired_ms)
            continue;
        r->keys[kept++] = *k;
    }
    explicit_bzero(&r->keys[kept], (r->count - kept) * sizeof(r->keys[0]));
    r->count = kept;
    if (r->count < KEYRING_MAX)
        return;
    /* Full: make room by dropping the key retired longest ago. */
    oldest = 0;
    for (i = 1; i < r->count; i++) {
        if (r->keys[i].retired_at < r->keys[oldest].retired_at)
            oldest = i;
    }
    memmove(&r->keys[oldest], &r->keys[oldest + 1], (r->count - oldest - 1) * sizeof(r->keys[0]));
    r->count--;
    explicit_bzero(&r->keys[r->count], sizeof(r->keys[0]));
}

int
keyring_rotate(const char *path, int64_t now_ms, int64_t keep_retired_ms, struct keyring *out,
               struct st_error *err)
{
    char tmp[PATH_MAX];
    struct keyring ring;
    int lock, rc = -1;

    if (now_ms <= 0 || keep_retired_ms < 0)
        return st_error_set(
            err, ST_ERR_INVALID,
            "key rotation needs a positive time and a non-negative retention, got %" PRId64
            " and %" PRId64,
            now_ms, keep_retired_ms);
    lock = keyring_lock(path, err);
    if (lock < 0)
        return -1;
    if (keyring_load(path, &ring, err) < 0)
        goto out;
    keyring_retire(&ring, now_ms, keep_retired_ms);
    keyring_add_fresh(&ring, now_ms);
    if (keyring_write_temp(path, &ring, tmp, err) < 0)
        goto out;
    if (rename(tmp, path) < 0) {
        keyring_errno(err, "replace", path);
        unlink(tmp);
        goto out;
    }
    if (keyring_sync_dir(path, err) < 0)
        goto out;
    *out = ring;
    rc = 0;
out:
    explicit_bzero(&ring, sizeof(ring));
    close(lock);
    return rc;
}
