#include "common/config.h"
#include "common/store.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/mem.h"

#define CPUINFO_MAX (4u * 1024 * 1024)
#define STOP_TIMEOUT_MAX_S 240
#define QUOTA_KEY_MAX 1000000000ul

enum key_kind {
    KEY_PATH,     /* non-empty string that fits */
    KEY_STRING,   /* same, used for URIs */
    KEY_POOL,     /* a libvirt pool name: the name pattern */
    KEY_UINT,     /* decimal, min..max */
    KEY_MODE,     /* octal file mode */
    KEY_VIRT,     /* auto|kvm|qemu */
    KEY_LOGLEVEL, /* debug|info|warn|error */
    KEY_DATABASE, /* path, sqlite:///abs or sqlite://rel */
    KEY_BOOL,     /* true|false */
    KEY_PWHASH,   /* min|interactive|moderate */
    KEY_EMAIL,
};

struct key_def {
    const char *name;
    enum key_kind kind;
    size_t offset;
    size_t size;
    unsigned long min, max;
    const char *def; /* NULL: derived from state_dir after everything else */
};

#define STR_KEY(n, k, d)                                                                           \
    {                                                                                              \
#n, k, offsetof(struct api_config, n), sizeof(((struct api_config *)0)->n), 0, 0, d        \
    }
#define NUM_KEY(n, k, lo, hi, d)                                                                   \
    {                                                                                              \
#n, k, offsetof(struct api_config, n), sizeof(((struct api_config *)0)->n), lo, hi, d      \
    }

/* The order here is the order of --check-config. */
static const struct key_def keys[] = {
    STR_KEY(socket, KEY_PATH, "var/run/stratus-api.sock"),
    NUM_KEY(socket_mode, KEY_MODE, 0, 0777, "0660"),
    NUM_KEY(workers, KEY_UINT, 0, API_CONFIG_WORKERS_MAX, "0"),
    STR_KEY(database, KEY_DATABASE, "var/stratus.db"),
    STR_KEY(libvirt_uri, KEY_STRING, "qemu:///system"),
    STR_KEY(virt_type, KEY_VIRT, "auto"),
    STR_KEY(state_dir, KEY_PATH, "var"),
    STR_KEY(pool_images, KEY_POOL, "stratus-images"),
    STR_KEY(pool_default, KEY_POOL, "stratus-default"),
    STR_KEY(pool_snapshots, KEY_POOL, "stratus-snapshots"),
    STR_KEY(pool_images_dir, KEY_PATH, NULL),
    STR_KEY(pool_default_dir, KEY_PATH, NULL),
    STR_KEY(pool_snapshots_dir, KEY_PATH, NULL),
    STR_KEY(console_dir, KEY_PATH, NULL),
    STR_KEY(import_dir, KEY_PATH, NULL),
    NUM_KEY(max_body_bytes, KEY_UINT, 1024, 64ul * 1024 * 1024, "65536"),
    /* Below nginx's fastcgi_read_timeout (300 s), with room for the destroy after it. */
    NUM_KEY(stop_timeout_s, KEY_UINT, 1, STOP_TIMEOUT_MAX_S, "30"),
    STR_KEY(log_level, KEY_LOGLEVEL, "info"),
    STR_KEY(allow_registration, KEY_BOOL, "false"),
    STR_KEY(password_hash, KEY_PWHASH, "interactive"),
    NUM_KEY(token_ttl_s, KEY_UINT, 60, 30u * 86400, "3600"),
    NUM_KEY(token_leeway_s, KEY_UINT, 0, 300, "30"),
    STR_KEY(token_keys_file, KEY_PATH, NULL),
    NUM_KEY(login_max_failures, KEY_UINT, 1, 1000, "5"),
    NUM_KEY(login_window_s, KEY_UINT, 1, 86400, "900"),
    NUM_KEY(login_lockout_s, KEY_UINT, 1, 86400, "900"),
    NUM_KEY(quota_max_vms, KEY_UINT, 0, QUOTA_KEY_MAX, "10"),
    NUM_KEY(quota_max_vcpus, KEY_UINT, 0, QUOTA_KEY_MAX, "32"),
    NUM_KEY(quota_max_memory_mib, KEY_UINT, 0, QUOTA_KEY_MAX, "65536"),
    NUM_KEY(quota_max_disk_gib, KEY_UINT, 0, QUOTA_KEY_MAX, "500"),
    STR_KEY(admin_email, KEY_EMAIL, "admin@localhost"),
    STR_KEY(admin_password_file, KEY_PATH, NULL),
    STR_KEY(instance, KEY_POOL, "stratus"),
    NUM_KEY(worker_concurrency, KEY_UINT, 1, 64, "4"),
    NUM_KEY(lease_s, KEY_UINT, 5, 3600, "30"),
    NUM_KEY(reconcile_interval_s, KEY_UINT, 1, 86400, "60"),
    NUM_KEY(event_retention_days, KEY_UINT, 1, 3650, "30"),
    NUM_KEY(idempotency_ttl_s, KEY_UINT, 60, 7u * 86400, "86400"),
    NUM_KEY(wait_max_s, KEY_UINT, 1, 60, "30"),
    /* 0: half the workers, at least 1 (resolve()). */
    NUM_KEY(max_waiting_requests, KEY_UINT, 0, API_CONFIG_WORKERS_MAX, "0"),
    STR_KEY(test_hooks, KEY_BOOL, "false"),
};

#define N_KEYS ST_ARRAY_LEN(keys)

/* Raw values as read, and where each came from (for messages). */
struct raw_config {
    char *value[N_KEYS];
    char *where[N_KEYS];
};

static void
raw_config_release(struct raw_config *raw)
{
    size_t i;

    for (i = 0; i < N_KEYS; i++) {
        free(raw->value[i]);
        free(raw->where[i]);
    }
}

static int
key_index(const char *name)
{
    size_t i;

    for (i = 0; i < N_KEYS; i++)
        if (strcmp(keys[i].name, name) == 0)
            return (int)i;
    return -1;
}

static void
raw_config_put(struct raw_config *raw, int idx, const char *value, char *where)
{
    free(raw->value[idx]);
    free(raw->where[idx]);
    raw->value[idx] = st_xstrdup(value);
    raw->where[idx] = where;
}

static char *
trim(char *s)
{
    char *end;

    while (isspace((unsigned char)*s))
        s++;
    end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1]))
        *--end = '\0';
    return s;
}

/* One non-comment line of the file; @at is "file:line". */
static int
parse_line(struct raw_config *raw, char *line, const char *at, struct st_error *err)
{
    char *eq, *key, *value;
    size_t vlen;
    int idx;

    if (line[0] == '[') {
        if (line[strlen(line) - 1] != ']')
            return st_error_set(err, ST_ERR_INVALID, "%s: section header '%s' lacks its ']'", at,
                                line);
        return 0;
    }
    eq = strchr(line, '=');
    if (!eq)
        return st_error_set(err, ST_ERR_INVALID, "%s: expected 'key = value', got '%s'", at, line);
    *eq = '\0';
    key = trim(line);
    value = trim(eq + 1);
    idx = key_index(key);
    if (idx < 0)
        return st_error_set(err, ST_ERR_INVALID, "%s: unknown key '%s'", at, key);
    vlen = strlen(value);
    /* Quotes are allowed around values that would otherwise lose spaces. */
    if (vlen >= 2 && value[0] == '"' && value[vlen - 1] == '"') {
        value[vlen - 1] = '\0';
        value++;
    }
    raw_config_put(raw, idx, value, st_xstrdup(at));
    return 0;
}

static int
read_file(struct raw_config *raw, const char *path, struct st_error *err)
{
    FILE *f;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    unsigned lineno = 0;
    int rc = 0;

    f = fopen(path, "re");
    if (!f)
        return st_error_set_native(err, ST_ERR_INVALID, errno, "cannot open config file '%s': %s",
                                   path, strerror(errno));
    while (rc == 0 && (len = getline(&line, &cap, f)) >= 0) {
        char at[ST_PATH_BUF + 16];
        char *text;

        lineno++;
        snprintf(at, sizeof(at), "%s:%u", path, lineno);
        if ((size_t)len != strlen(line)) {
            rc = st_error_set(err, ST_ERR_INVALID, "%s: line contains a NUL byte", at);
            break;
        }
        text = trim(line);
        if (text[0] == '\0' || text[0] == '#' || text[0] == ';')
            continue;
        rc = parse_line(raw, text, at, err);
    }
    if (rc == 0 && ferror(f))
        rc = st_error_set_native(err, ST_ERR_INVALID, errno, "cannot read config file '%s': %s",
                                 path, strerror(errno));
    free(line);
    fclose(f);
    return rc;
}

static void
read_env(struct raw_config *raw)
{
    size_t i, j;

    for (i = 0; i < N_KEYS; i++) {
        char var[64] = "STRATUS_";
        const char *value;

        for (j = 0; keys[i].name[j] && j + 9 < sizeof(var); j++)
            var[8 + j] = (char)toupper((unsigned char)keys[i].name[j]);
        var[8 + j] = '\0';
        value = getenv(var);
        if (value)
            raw_config_put(raw, (int)i, value, st_xstrdup(var));
    }
}

static int
parse_ulong(const char *s, int base, unsigned long *out)
{
    char *end;
    unsigned long v;

    if (!*s || !isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    v = strtoul(s, &end, base);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

static int
set_string(const struct key_def *k, struct api_config *cfg, const char *value, const char *where,
           struct st_error *err)
{
    if (!*value)
        return st_error_set(err, ST_ERR_INVALID, "%s: %s must not be empty", where, k->name);
    if (st_strlcpy((char *)cfg + k->offset, value, k->size) < 0)
        return st_error_set(err, ST_ERR_INVALID, "%s: %s '%.64s...' is longer than %zu bytes",
                            where, k->name, value, k->size - 1);
    return 0;
}

static int
set_number(const struct key_def *k, struct api_config *cfg, const char *value, const char *where,
           struct st_error *err)
{
    unsigned long v;
    int base = k->kind == KEY_MODE ? 8 : 10;

    if (parse_ulong(value, base, &v) < 0 || v < k->min || v > k->max) {
        if (k->kind == KEY_MODE)
            return st_error_set(err, ST_ERR_INVALID,
                                "%s: %s '%s' is not an octal file mode (0000..0777)", where,
                                k->name, value);
        return st_error_set(err, ST_ERR_INVALID, "%s: %s '%s' is not an integer in %lu..%lu", where,
                            k->name, value, k->min, k->max);
    }
    if (k->size == sizeof(unsigned long))
        *(unsigned long *)((char *)cfg + k->offset) = v;
    else
        *(unsigned *)((char *)cfg + k->offset) = (unsigned)v;
    return 0;
}

static int
set_choice(const struct key_def *k, struct api_config *cfg, const char *value, const char *where,
           const char *const *choices, struct st_error *err)
{
    size_t i;

    for (i = 0; choices[i]; i++)
        if (strcmp(value, choices[i]) == 0)
            return set_string(k, cfg, value, where, err);
    return st_error_set(err, ST_ERR_INVALID, "%s: %s '%s' is not one of %s", where, k->name, value,
                        k->kind == KEY_VIRT     ? "auto, kvm, qemu"
                        : k->kind == KEY_PWHASH ? "min, interactive, moderate"
                                                : "debug, info, warn, error");
}

/* Kept as given: the store reads its kind from the scheme (common/store.h). */
static int
set_database(const struct key_def *k, struct api_config *cfg, const char *value, const char *where,
             struct st_error *err)
{
    enum store_kind kind;
    const char *target;

    if (store_parse_url(value, &kind, &target, err) < 0) {
        st_error_prefix(err, "%s", where);
        return -1;
    }
    return set_string(k, cfg, value, where, err);
}

static int
apply_key(const struct key_def *k, struct api_config *cfg, const char *value, const char *where,
          struct st_error *err)
{
    static const char *const virt[] = {"auto", "kvm", "qemu", NULL};
    static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
    static const char *const pwhash[] = {"min", "interactive", "moderate", NULL};

    switch (k->kind) {
    case KEY_PATH:
    case KEY_STRING:
        return set_string(k, cfg, value, where, err);
    case KEY_POOL:
        if (!st_name_valid(value))
            return st_error_set(
                err, ST_ERR_INVALID,
                "%s: %s '%s' is not a valid pool name ([A-Za-z0-9][A-Za-z0-9._-]{0,62})", where,
                k->name, value);
        return set_string(k, cfg, value, where, err);
    case KEY_UINT:
    case KEY_MODE:
        return set_number(k, cfg, value, where, err);
    case KEY_VIRT:
        return set_choice(k, cfg, value, where, virt, err);
    case KEY_LOGLEVEL:
        return set_choice(k, cfg, value, where, levels, err);
    case KEY_DATABASE:
        return set_database(k, cfg, value, where, err);
    case KEY_BOOL:
        if (strcmp(value, "true") != 0 && strcmp(value, "false") != 0)
            return st_error_set(err, ST_ERR_INVALID, "%s: %s '%s' is not true or false", where,
                                k->name, value);
        *(bool *)((char *)cfg + k->offset) = strcmp(value, "true") == 0;
        return 0;
    case KEY_PWHASH:
        return set_choice(k, cfg, value, where, pwhash, err);
    case KEY_EMAIL: {
        char email[ST_EMAIL_BUF];
        struct st_error local = {0};

        if (user_email_normalize(k->name, value, email, &local) < 0)
            return st_error_set(err, ST_ERR_INVALID, "%s: %s", where, local.msg);
        return set_string(k, cfg, email, where, err);
    }
    }
    BUG("unhandled config key kind");
}

/* Defaults that depend on state_dir, filled only where nothing was given. */
static int
derive_dirs(struct api_config *cfg, const struct raw_config *raw, struct st_error *err)
{
    static const struct {
        const char *key;
        const char *sub;
    } derived[] = {
        {"pool_images_dir", "pools/images"},
        {"pool_default_dir", "pools/default"},
        {"pool_snapshots_dir", "pools/snapshots"},
        {"console_dir", "console"},
        {"import_dir", "import"},
        {"token_keys_file", "token-keys"},
        {"admin_password_file", "admin-password"},
    };
    size_t i;

    for (i = 0; i < ST_ARRAY_LEN(derived); i++) {
        int idx = key_index(derived[i].key);
        char *dir = (char *)cfg + keys[idx].offset;
        int n;

        if (raw->value[idx])
            continue;
        n = snprintf(dir, keys[idx].size, "%s/%s", cfg->state_dir, derived[i].sub);
        if (n < 0 || (size_t)n >= keys[idx].size)
            return st_error_set(err, ST_ERR_INVALID, "state_dir '%.64s...' is too long",
                                cfg->state_dir);
    }
    return 0;
}

static char *
read_cpuinfo(void)
{
    FILE *f = fopen("/proc/cpuinfo", "re");
    char *buf;
    size_t n;

    if (!f)
        return NULL;
    buf = st_xcalloc(CPUINFO_MAX + 1, 1);
    n = fread(buf, 1, CPUINFO_MAX, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void
resolve(struct api_config *cfg)
{
    long cores;

    if (cfg->workers == 0) {
        cores = sysconf(_SC_NPROCESSORS_ONLN);
        if (cores < 1)
            cores = 1;
        cfg->workers =
            cores > API_CONFIG_WORKERS_MAX / 2 ? API_CONFIG_WORKERS_MAX : (unsigned)(2 * cores);
    }
    /* The other half keeps serving while the first waits. */
    if (cfg->max_waiting_requests == 0)
        cfg->max_waiting_requests = cfg->workers > 1 ? cfg->workers / 2 : 1;
    if (strcmp(cfg->virt_type, "auto") == 0) {
        char *cpuinfo = read_cpuinfo();

        st_strlcpy(cfg->virt_type_resolved, api_config_resolve_virt_type("auto", cpuinfo),
                   sizeof(cfg->virt_type_resolved));
        free(cpuinfo);
    } else {
        st_strlcpy(cfg->virt_type_resolved, cfg->virt_type, sizeof(cfg->virt_type_resolved));
    }
}

int
api_config_load(struct api_config *cfg, const char *path, struct st_error *err)
{
    struct raw_config raw;
    struct api_config tmp;
    size_t i;
    int rc = 0;

    memset(&raw, 0, sizeof(raw));
    memset(&tmp, 0, sizeof(tmp));
    if (path)
        rc = read_file(&raw, path, err);
    if (rc == 0)
        read_env(&raw);
    for (i = 0; rc == 0 && i < N_KEYS; i++) {
        const char *value = raw.value[i] ? raw.value[i] : keys[i].def;
        const char *where = raw.where[i] ? raw.where[i] : "default";

        if (value)
            rc = apply_key(&keys[i], &tmp, value, where, err);
    }
    if (rc == 0)
        rc = derive_dirs(&tmp, &raw, err);
    if (rc == 0) {
        resolve(&tmp);
        *cfg = tmp;
    }
    raw_config_release(&raw);
    return rc;
}

static bool
has_word(const char *s, size_t n, const char *word)
{
    size_t wlen = strlen(word);
    size_t i = 0;

    while (i < n) {
        size_t start;

        while (i < n && isspace((unsigned char)s[i]))
            i++;
        start = i;
        while (i < n && !isspace((unsigned char)s[i]))
            i++;
        if (i - start == wlen && memcmp(s + start, word, wlen) == 0)
            return true;
    }
    return false;
}

const char *
api_config_resolve_virt_type(const char *configured, const char *cpuinfo)
{
    const char *line = cpuinfo;

    if (strcmp(configured, "kvm") == 0 || strcmp(configured, "qemu") == 0)
        return strcmp(configured, "kvm") == 0 ? "kvm" : "qemu";
    while (line && *line) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        const char *colon = memchr(line, ':', len);

        /* x86 says "flags", some kernels "Features"; only flags carries vmx/svm. */
        if (colon && strncmp(line, "flags", 5) == 0 &&
            (isspace((unsigned char)line[5]) || line[5] == ':')) {
            size_t off = (size_t)(colon + 1 - line);

            if (has_word(colon + 1, len - off, "vmx") || has_word(colon + 1, len - off, "svm"))
                return "kvm";
        }
        line = nl ? nl + 1 : NULL;
    }
    return "qemu";
}

void
api_config_print(const struct api_config *cfg, FILE *out)
{
    size_t i;

    for (i = 0; i < N_KEYS; i++) {
        const struct key_def *k = &keys[i];
        const char *field = (const char *)cfg + k->offset;

        switch (k->kind) {
        case KEY_MODE:
            fprintf(out, "%s = %04o\n", k->name, *(const unsigned *)field);
            break;
        case KEY_UINT:
            if (k->size == sizeof(unsigned long))
                fprintf(out, "%s = %lu\n", k->name, *(const unsigned long *)field);
            else
                fprintf(out, "%s = %u\n", k->name, *(const unsigned *)field);
            break;
        case KEY_VIRT:
            fprintf(out, "%s = %s\n", k->name, cfg->virt_type_resolved);
            break;
        case KEY_BOOL:
            fprintf(out, "%s = %s\n", k->name, *(const bool *)field ? "true" : "false");
            break;
        default:
            fprintf(out, "%s = %s\n", k->name, field);
            break;
        }
    }
}
