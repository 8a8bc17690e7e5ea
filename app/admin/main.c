/*
 * stratus-admin: what an operator does by hand, on the machine itself.
 *
 *   stratus-admin [-c FILE] bootstrap
 *   stratus-admin [-c FILE] user create --email E [--admin] [--password-stdin]
 *   stratus-admin [-c FILE] user reset-password --email E [--password-stdin]
 *   stratus-admin [-c FILE] audit verify
 *   stratus-admin [-c FILE] token rotate-key
 *   stratus-admin db copy --from URL --to URL
 *
 * It opens the same database and key file as stratus-api (same config:
 * -c or STRATUS_CONFIG, then STRATUS_* variables), never libvirt.  db copy
 * opens the two databases it is given instead (sqlite://..., postgresql://...).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/app.h"
#include "common/config.h"
#include "util/mem.h"

#define PASSWORD_CHARS 20

struct admin_opts {
    const char *email;
    bool admin;
    bool password_stdin;
    const char *from;
    const char *to;
};

static void
usage(FILE *out)
{
    fputs("usage: stratus-admin [-c FILE] bootstrap\n"
          "       stratus-admin [-c FILE] user create --email E [--admin] [--password-stdin]\n"
          "       stratus-admin [-c FILE] user reset-password --email E [--password-stdin]\n"
          "       stratus-admin [-c FILE] audit verify\n"
          "       stratus-admin [-c FILE] token rotate-key\n"
          "       stratus-admin db copy --from URL --to URL\n",
          out);
}

static int
fail(const struct st_error *err)
{
    fprintf(stderr, "stratus-admin: %s\n", err->msg);
    return 1;
}

/* A password from the first line of stdin, or a fresh random one (then *generated). */
static int
get_password(const struct admin_opts *o, char out[ST_PASSWORD_BUF], bool *generated,
             struct st_error *err)
{
    size_t len;

    *generated = !o->password_stdin;
    if (!o->password_stdin) {
        secret_random_token(out, PASSWORD_CHARS);
        return 0;
    }
    if (!fgets(out, ST_PASSWORD_BUF, stdin))
        return st_error_set(err, ST_ERR_INVALID, "no password on standard input");
    len = strlen(out);
    if (len && out[len - 1] == '\n')
        out[--len] = '\0';
    return 0;
}

/* Write @password to @path, readable by root alone. */
static int
write_secret_file(const char *path, const char *password, struct st_error *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    size_t len = strlen(password);
    int rc = 0;

    if (fd < 0)
        return st_error_set_native(err, ST_ERR_INTERNAL, errno, "cannot write '%s': %s", path,
                                   strerror(errno));
    if (fchmod(fd, 0600) < 0 || write(fd, password, len) != (ssize_t)len ||
        write(fd, "\n", 1) != 1 || fsync(fd) < 0)
        rc = st_error_set_native(err, ST_ERR_INTERNAL, errno, "cannot write '%s': %s", path,
                                 strerror(errno));
    close(fd);
    return rc;
}

/* Make the configured admin when no active admin exists; quiet otherwise. */
static int
cmd_bootstrap(struct app *app)
{
    char password[ST_PASSWORD_BUF];
    struct st_error err = {0};
    struct user user;
    size_t admins;

    if (user_service_count_admins(&app->user_svc, &admins, &err) < 0)
        return fail(&err);
    if (admins > 0)
        return 0;
    secret_random_token(password, PASSWORD_CHARS);
    if (user_service_create(&app->user_svc, app->cfg.admin_email, password, true, &user, &err) <
            0 ||
        write_secret_file(app->cfg.admin_password_file, password, &err) < 0)
        return fail(&err);
    printf("stratus-admin: created admin '%s' with password %s (also in %s)\n", user.email,
           password, app->cfg.admin_password_file);
    return 0;
}

static int
cmd_user(struct app *app, const char *verb, const struct admin_opts *o)
{
    char password[ST_PASSWORD_BUF];
    struct st_error err = {0};
    struct user user;
    bool generated;

    if (!o->email) {
        fputs("stratus-admin: --email is required\n", stderr);
        return 2;
    }
    if (get_password(o, password, &generated, &err) < 0)
        return fail(&err);
    if (strcmp(verb, "create") == 0) {
        if (user_service_create(&app->user_svc, o->email, password, o->admin, &user, &err) < 0)
            return fail(&err);
        printf("stratus-admin: created %s '%s' (id %s)\n", o->admin ? "admin" : "user", user.email,
               user.id);
    } else if (strcmp(verb, "reset-password") == 0) {
        if (user_service_reset_password(&app->user_svc, o->email, password, &err) < 0)
            return fail(&err);
        printf("stratus-admin: password of '%s' reset\n", o->email);
    } else {
        usage(stderr);
        return 2;
    }
    if (generated)
        printf("password: %s\n", password);
    return 0;
}

static int
cmd_audit_verify(struct app *app)
{
    struct st_error err = {0};
    struct audit_verdict v;

    if (audit_service_verify(&app->audit_svc, &v, &err) < 0)
        return fail(&err);
    if (v.broken_seq) {
        printf("audit: chain broken at entry %lld: %s (%lld entries read)\n",
               (long long)v.broken_seq, v.why, (long long)v.entries);
        return 1;
    }
    printf("audit: %lld entries, chain intact\n", (long long)v.entries);
    return 0;
}

static int
cmd_rotate_key(struct app *app)
{
    struct st_error err = {0};
    /* A retired key verifies the tokens it signed until the last of them expires. */
    int64_t keep_ms = ((int64_t)app->cfg.token_ttl_s + app->cfg.token_leeway_s) * 1000;
    struct keyring ring;

    if (keyring_rotate(app->cfg.token_keys_file, st_now_ms(), keep_ms, &ring, &err) < 0)
        return fail(&err);
    printf("token: signing key is now '%s'; %zu key(s) in %s\n", keyring_current(&ring)->kid,
           ring.count, app->cfg.token_keys_file);
    return 0;
}

/*
 * Copy a stopped installation's database into an empty one (migrated to the
 * same version on open), then check it.  URLs are never printed: they may
 * hold a password.
 */
static int
cmd_db_copy(const struct admin_opts *o)
{
    struct st_error err = {0};
    struct store from;
    struct store to;
    int rc;

    if (!o->from || !o->to) {
        fputs("stratus-admin: db copy needs --from URL and --to URL\n", stderr);
        return 2;
    }
    if (strcmp(o->from, o->to) == 0) {
        fputs("stratus-admin: --from and --to name the same database\n", stderr);
        return 2;
    }
    if (store_open(&from, o->from, &err) < 0) {
        st_error_prefix(&err, "source");
        return fail(&err);
    }
    if (store_open(&to, o->to, &err) < 0) {
        st_error_prefix(&err, "target");
        store_close(&from);
        return fail(&err);
    }
    printf("db copy: %s -> %s\n", store_kind_name(from.kind), store_kind_name(to.kind));
    rc = store_copy(&from, &to, stdout, &err);
    store_close(&to);
    store_close(&from);
    if (rc < 0)
        return fail(&err);
    puts("db copy: done");
    return 0;
}

static int
run(struct app *app, int argc, char **argv, const struct admin_opts *o)
{
    const char *what = argv[0];
    const char *verb = argc > 1 ? argv[1] : "";

    if (strcmp(what, "bootstrap") == 0 && argc == 1)
        return cmd_bootstrap(app);
    if (strcmp(what, "user") == 0 && argc == 2)
        return cmd_user(app, verb, o);
    if (strcmp(what, "audit") == 0 && argc == 2 && strcmp(verb, "verify") == 0)
        return cmd_audit_verify(app);
    if (strcmp(what, "token") == 0 && argc == 2 && strcmp(verb, "rotate-key") == 0)
        return cmd_rotate_key(app);
    usage(stderr);
    return 2;
}

int
main(int argc, char **argv)
{
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'}, {"email", required_argument, NULL, 'e'},
        {"admin", no_argument, NULL, 'a'},        {"password-stdin", no_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},         {"from", required_argument, NULL, 'f'},
        {"to", required_argument, NULL, 't'},     {NULL, 0, NULL, 0},
    };
    const char *path = getenv("STRATUS_CONFIG");
    struct admin_opts o = {NULL, false, false, NULL, NULL};
    struct st_error err = {0};
    struct api_config cfg;
    struct app app;
    int opt, rc;

    while ((opt = getopt_long(argc, argv, "c:h", options, NULL)) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 'e':
            o.email = optarg;
            break;
        case 'a':
            o.admin = true;
            break;
        case 'p':
            o.password_stdin = true;
            break;
        case 'f':
            o.from = optarg;
            break;
        case 't':
            o.to = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    /* db copy opens the two databases it names, not the configured one. */
    if (strcmp(argv[optind], "db") == 0) {
        if (argc - optind == 2 && strcmp(argv[optind + 1], "copy") == 0)
            return cmd_db_copy(&o);
        usage(stderr);
        return 2;
    }
    if (path && !*path)
        path = NULL;
    if (api_config_load(&cfg, path, &err) < 0 || app_open_store(&app, &cfg, &err) < 0)
        return fail(&err);
    rc = run(&app, argc - optind, argv + optind, &o);
    app_close(&app);
    return rc;
}
