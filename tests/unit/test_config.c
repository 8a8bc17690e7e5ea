/*
 * test_config.c - stratus-api configuration: defaults, the INI file,
 * environment overrides, refusals, and the virt_type auto rule.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/config.h"

struct cfg_env {
    char dir[64];
    char path[128];
};

static void
clear_env(void)
{
    extern char **environ;
    char **e;
    int again = 1;

    /* unsetenv() reshuffles environ: rescan until nothing is left. */
    while (again) {
        again = 0;
        for (e = environ; *e; e++) {
            if (strncmp(*e, "STRATUS_", 8) == 0) {
                char name[128];
                size_t n = strcspn(*e, "=");

                snprintf(name, sizeof(name), "%.*s", (int)n, *e);
                unsetenv(name);
                again = 1;
                break;
            }
        }
    }
}

static int
setup(void **state)
{
    struct cfg_env *env = calloc(1, sizeof(*env));

    if (!env)
        return -1;
    strcpy(env->dir, "/tmp/stratus-test-config-XXXXXX");
    if (!mkdtemp(env->dir)) {
        free(env);
        return -1;
    }
    snprintf(env->path, sizeof(env->path), "%s/api.conf", env->dir);
    clear_env();
    *state = env;
    return 0;
}

static int
teardown(void **state)
{
    struct cfg_env *env = *state;

    clear_env();
    unlink(env->path);
    rmdir(env->dir);
    free(env);
    return 0;
}

static void
write_file(const struct cfg_env *env, const char *text)
{
    FILE *f = fopen(env->path, "w");

    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void
test_config__defaults(void **state)
{
    struct api_config cfg;
    struct st_error err = {0};
    long cores = sysconf(_SC_NPROCESSORS_ONLN);

    (void)state;
    assert_int_equal(api_config_load(&cfg, NULL, &err), 0);
    assert_string_equal(cfg.socket, "var/run/stratus-api.sock");
    assert_int_equal(cfg.socket_mode, 0660);
    assert_int_equal(cfg.workers, (unsigned)(2 * (cores < 1 ? 1 : cores)));
    assert_int_equal(cfg.max_waiting_requests, cfg.workers / 2);
    assert_int_equal(cfg.wait_max_s, 30);
    assert_string_equal(cfg.database, "var/stratus.db");
    assert_string_equal(cfg.libvirt_uri, "qemu:///system");
    assert_string_equal(cfg.virt_type, "auto");
    assert_true(strcmp(cfg.virt_type_resolved, "kvm") == 0 ||
                strcmp(cfg.virt_type_resolved, "qemu") == 0);
    assert_string_equal(cfg.state_dir, "var");
    assert_string_equal(cfg.pool_images, "stratus-images");
    assert_string_equal(cfg.pool_default, "stratus-default");
    assert_string_equal(cfg.pool_snapshots, "stratus-snapshots");
    assert_string_equal(cfg.pool_images_dir, "var/pools/images");
    assert_string_equal(cfg.pool_default_dir, "var/pools/default");
    assert_string_equal(cfg.pool_snapshots_dir, "var/pools/snapshots");
    assert_string_equal(cfg.console_dir, "var/console");
    assert_string_equal(cfg.import_dir, "var/import");
    assert_string_equal(cfg.token_keys_file, "var/token-keys");
    assert_string_equal(cfg.admin_password_file, "var/admin-password");
    assert_int_equal(cfg.max_body_bytes, 65536);
    assert_int_equal(cfg.stop_timeout_s, 30);
    assert_false(cfg.allow_registration);
    assert_string_equal(cfg.password_hash, "interactive");
    assert_int_equal(cfg.token_ttl_s, 3600);
    assert_int_equal(cfg.login_max_failures, 5);
    assert_int_equal(cfg.login_lockout_s, 900);
    assert_int_equal(cfg.quota_max_vms, 10);
    assert_string_equal(cfg.admin_email, "admin@localhost");
    assert_string_equal(cfg.log_level, "info");
}

static void
test_config__file(void **state)
{
    struct cfg_env *env = *state;
    struct api_config cfg;
    struct st_error err = {0};

    write_file(env, "# stratus\n"
                    "; another comment\n"
                    "\n"
                    "[api]\n"
                    "  socket = /tmp/x.sock  \n"
                    "socket_mode=0600\n"
                    "workers = 3\n"
                    "database = sqlite:///srv/stratus/db.sqlite\n"
                    "libvirt_uri = test:///default\n"
                    "virt_type = qemu\n"
                    "state_dir = \"/srv/my state\"\n"
                    "[pools]\n"
                    "pool_images = img\n"
                    "pool_default_dir = /data/disks\n"
                    "max_body_bytes = 1048576\n"
                    "stop_timeout_s = 5\n"
                    "log_level = debug\n");
    assert_int_equal(api_config_load(&cfg, env->path, &err), 0);
    assert_string_equal(cfg.socket, "/tmp/x.sock");
    assert_int_equal(cfg.socket_mode, 0600);
    assert_int_equal(cfg.workers, 3);
    assert_string_equal(cfg.database, "sqlite:///srv/stratus/db.sqlite");
    assert_string_equal(cfg.libvirt_uri, "test:///default");
    assert_string_equal(cfg.virt_type_resolved, "qemu");
    assert_string_equal(cfg.state_dir, "/srv/my state");
    assert_string_equal(cfg.pool_images, "img");
    /* Given explicitly wins; the others follow state_dir. */
    assert_string_equal(cfg.pool_default_dir, "/data/disks");
    assert_string_equal(cfg.pool_images_dir, "/srv/my state/pools/images");
    assert_string_equal(cfg.import_dir, "/srv/my state/import");
    assert_int_equal(cfg.max_body_bytes, 1048576);
    assert_int_equal(cfg.stop_timeout_s, 5);
    assert_string_equal(cfg.log_level, "debug");

    write_file(env, "database = sqlite://rel/db.sqlite\n");
    assert_int_equal(api_config_load(&cfg, env->path, &err), 0);
    assert_string_equal(cfg.database, "sqlite://rel/db.sqlite");

    write_file(env, "database = postgresql://stratus@db.example/stratus?sslmode=require\n");
    assert_int_equal(api_config_load(&cfg, env->path, &err), 0);
    assert_string_equal(cfg.database, "postgresql://stratus@db.example/stratus?sslmode=require");

    write_file(env, "database = mysql://db.example/stratus\n");
    assert_int_equal(api_config_load(&cfg, env->path, &err), -1);
    assert_int_equal(err.code, ST_ERR_INVALID);

    write_file(env, "stop_timeout_s = 240\n");
    assert_int_equal(api_config_load(&cfg, env->path, &err), 0);
    assert_int_equal(cfg.stop_timeout_s, 240);
}

static void
test_config__env_overrides(void **state)
{
    struct cfg_env *env = *state;
    struct api_config cfg;
    struct st_error err = {0};

    write_file(env, "workers = 3\nlog_level = warn\n");
    setenv("STRATUS_WORKERS", "5", 1);
    setenv("STRATUS_POOL_SNAPSHOTS", "snaps", 1);
    setenv("STRATUS_CONFIG", "/ignored", 1); /* not a key: never an error */
    assert_int_equal(api_config_load(&cfg, env->path, &err), 0);
    assert_int_equal(cfg.workers, 5);
    assert_string_equal(cfg.log_level, "warn");
    assert_string_equal(cfg.pool_snapshots, "snaps");

    setenv("STRATUS_WORKERS", "many", 1);
    assert_int_equal(api_config_load(&cfg, env->path, &err), -1);
    assert_non_null(strstr(err.msg, "STRATUS_WORKERS"));
    assert_non_null(strstr(err.msg, "'many'"));
}

static void
test_config__bad_values(void **state)
{
    static const struct {
        const char *line;
        const char *needle;
    } cases[] = {
        {"workers = -1", "workers '-1'"},
        {"workers = abc", "workers 'abc'"},
        {"workers = 99999", "workers '99999'"},
        {"workers = 4x", "workers '4x'"},
        {"socket_mode = 0999", "socket_mode '0999'"},
        {"socket_mode = 1777", "socket_mode '1777'"},
        {"virt_type = xen", "virt_type 'xen'"},
        {"log_level = verbose", "log_level 'verbose'"},
        {"allow_registration = yes", "allow_registration 'yes' is not true or false"},
        {"password_hash = fast", "password_hash 'fast' is not one of min, interactive, moderate"},
        {"token_ttl_s = 5", "token_ttl_s '5' is not an integer in 60..2592000"},
        {"admin_email = nobody", "admin_email"},
        {"pool_images = bad/name", "pool_images 'bad/name'"},
        {"database = mysql://db/stratus", "database 'mysql://db/stratus'"},
        {"max_body_bytes = 10", "max_body_bytes '10'"},
        {"max_body_bytes = 18446744073709551616", "max_body_bytes"},
        {"stop_timeout_s = 0", "stop_timeout_s '0'"},
        {"max_waiting_requests = -1", "max_waiting_requests '-1' is not an integer in 0..1024"},
        {"max_waiting_requests = half", "max_waiting_requests 'half'"},
        {"max_waiting_requests = 1025", "max_waiting_requests '1025' is not an integer in 0..1024"},
        /* A stop must end before nginx's fastcgi_read_timeout (300 s). */
        {"stop_timeout_s = 241", "stop_timeout_s '241' is not an integer in 1..240"},
        {"socket =", "socket must not be empty"},
        {"no equals sign here", "expected 'key = value'"},
        {"[broken", "section header"},
    };
    struct cfg_env *env = *state;
    struct api_config cfg;
    size_t i;

    memset(&cfg, 0x5a, sizeof(cfg));
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct st_error err = {0};
        char text[256];

        snprintf(text, sizeof(text), "workers = 2\n%s\n", cases[i].line);
        write_file(env, text);
        if (api_config_load(&cfg, env->path, &err) != -1)
            fail_msg("'%s' was accepted", cases[i].line);
        assert_int_equal(err.code, ST_ERR_INVALID);
        if (!strstr(err.msg, cases[i].needle) || !strstr(err.msg, ":2"))
            fail_msg("'%s': message '%s' lacks '%s' or the line", cases[i].line, err.msg,
                     cases[i].needle);
    }
    /* A failed load leaves the struct as it was. */
    assert_int_equal(((unsigned char *)&cfg)[0], 0x5a);
}

static void
test_config__max_waiting_requests(void **state)
{
    static const struct {
        const char *text;
        unsigned want;
    } cases[] = {
        /* Unset or 0: half the workers, at least 1. */
        {"workers = 1\n", 1},
        {"workers = 2\n", 1},
        {"workers = 3\n", 1},
        {"workers = 8\n", 4},
        {"workers = 9\nmax_waiting_requests = 0\n", 4},
        {"workers = 8\nmax_waiting_requests = 3\n", 3},
        {"workers = 2\nmax_waiting_requests = 1\n", 1},
        /* Not capped at the workers: then no wait is ever refused. */
        {"workers = 2\nmax_waiting_requests = 16\n", 16},
        {"workers = 4\nmax_waiting_requests = 1024\n", 1024},
    };
    struct cfg_env *env = *state;
    struct api_config cfg;
    struct st_error err = {0};
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        write_file(env, cases[i].text);
        if (api_config_load(&cfg, env->path, &err) != 0)
            fail_msg("'%s' was refused: %s", cases[i].text, err.msg);
        if (cfg.max_waiting_requests != cases[i].want)
            fail_msg("'%s': max_waiting_requests %u, want %u", cases[i].text,
                     cfg.max_waiting_requests, cases[i].want);
    }

    /* The environment wins over the file, and is checked the same way. */
    write_file(env, "workers = 8\nmax_waiting_requests = 3\n");
    setenv("STRATUS_MAX_WAITING_REQUESTS", "5", 1);
    assert_int_equal(api_config_load(&cfg, env->path, &err), 0);
    assert_int_equal(cfg.max_waiting_requests, 5);
    setenv("STRATUS_MAX_WAITING_REQUESTS", "0", 1);
    assert_int_equal(api_config_load(&cfg, env->path, &err), 0);
    assert_int_equal(cfg.max_waiting_requests, 4);
    setenv("STRATUS_MAX_WAITING_REQUESTS", "2000", 1);
    assert_int_equal(api_config_load(&cfg, env->path, &err), -1);
    assert_int_equal(err.code, ST_ERR_INVALID);
    assert_non_null(strstr(err.msg, "STRATUS_MAX_WAITING_REQUESTS"));
    assert_non_null(strstr(err.msg, "max_waiting_requests '2000'"));
}

static void
test_config__unknown_key(void **state)
{
    struct cfg_env *env = *state;
    struct api_config cfg;
    struct st_error err = {0};
    char where[160];

    write_file(env, "workers = 2\n# fine\nsokcet = /tmp/typo.sock\n");
    assert_int_equal(api_config_load(&cfg, env->path, &err), -1);
    snprintf(where, sizeof(where), "%s:3", env->path);
    assert_non_null(strstr(err.msg, where));
    assert_non_null(strstr(err.msg, "unknown key 'sokcet'"));
}

static void
test_config__missing_file(void **state)
{
    struct cfg_env *env = *state;
    struct api_config cfg;
    struct st_error err = {0};

    assert_int_equal(api_config_load(&cfg, env->path, &err), -1);
    assert_non_null(strstr(err.msg, env->path));
}

static void
test_config__virt_type_auto(void **state)
{
    static const char intel[] = "processor\t: 0\nvendor_id\t: GenuineIntel\n"
                                "flags\t\t: fpu vme de pse vmx ssse3\n\n";
    static const char amd[] = "processor\t: 0\nflags\t\t: fpu svm lahf_lm\n";
    static const char plain[] = "processor\t: 0\nflags\t\t: fpu vme de pse sse2\n";
    static const char tricky[] = "model name\t: vmx svm super cpu\n"
                                 "flags\t\t: fpu vmxnope svmish\n";
    static const char arm[] = "processor\t: 0\nFeatures\t: fp asimd evtstrm\n";

    (void)state;
    assert_string_equal(api_config_resolve_virt_type("auto", intel), "kvm");
    assert_string_equal(api_config_resolve_virt_type("auto", amd), "kvm");
    assert_string_equal(api_config_resolve_virt_type("auto", plain), "qemu");
    assert_string_equal(api_config_resolve_virt_type("auto", tricky), "qemu");
    assert_string_equal(api_config_resolve_virt_type("auto", arm), "qemu");
    assert_string_equal(api_config_resolve_virt_type("auto", ""), "qemu");
    assert_string_equal(api_config_resolve_virt_type("auto", NULL), "qemu");
    /* Explicit choices are kept whatever the CPU says. */
    assert_string_equal(api_config_resolve_virt_type("kvm", plain), "kvm");
    assert_string_equal(api_config_resolve_virt_type("qemu", intel), "qemu");
}

static void
test_config__print(void **state)
{
    struct cfg_env *env = *state;
    struct api_config cfg, again;
    struct st_error err = {0};
    char *text = NULL;
    size_t len = 0;
    FILE *out;

    (void)env;
    setenv("STRATUS_VIRT_TYPE", "qemu", 1);
    assert_int_equal(api_config_load(&cfg, NULL, &err), 0);
    out = open_memstream(&text, &len);
    assert_non_null(out);
    api_config_print(&cfg, out);
    fclose(out);
    assert_non_null(strstr(text, "socket_mode = 0660\n"));
    assert_non_null(strstr(text, "virt_type = qemu\n"));
    assert_non_null(strstr(text, "import_dir = var/import\n"));
    /* What --check-config prints reads back as the same configuration. */
    write_file(env, text);
    free(text);
    assert_int_equal(api_config_load(&again, env->path, &err), 0);
    assert_memory_equal(&cfg, &again, sizeof(cfg));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_config__defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config__file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config__env_overrides, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config__bad_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config__max_waiting_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config__unknown_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config__missing_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config__virt_type_auto, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config__print, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
