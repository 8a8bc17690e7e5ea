/*
 * stratus-api: the FastCGI API server.
 *
 *   stratus-api [-c FILE] [--check-config]
 *
 * The config file comes from -c or STRATUS_CONFIG; without either only the
 * defaults and STRATUS_* variables apply.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/config.h"
#include "common/log.h"
#include "api/master.h"

#ifndef STRATUS_VERSION
#define STRATUS_VERSION "0.0.0"
#endif

static void
usage(FILE *out)
{
    fputs("usage: stratus-api [-c FILE] [--check-config] [--version]\n", out);
}

int
main(int argc, char **argv)
{
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, 'C'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = getenv("STRATUS_CONFIG");
    struct api_config cfg;
    struct st_error err = {0};
    enum api_log_level level;
    int check = 0, opt;

    while ((opt = getopt_long(argc, argv, "c:h", options, NULL)) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 'C':
            check = 1;
            break;
        case 'V':
            puts(STRATUS_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 2;
    }
    if (path && !*path)
        path = NULL;
    if (api_config_load(&cfg, path, &err) < 0) {
        fprintf(stderr, "stratus-api: %s\n", err.msg);
        return 1;
    }
    if (check) {
        api_config_print(&cfg, stdout);
        return 0;
    }
    if (api_log_level_parse(cfg.log_level, &level) == 0)
        api_log_set_level(level);
    return master_run(path, &cfg);
}
