/*
 * log.h - one JSON object per line on stderr.
 *
 * Each line is written with a single write(2) so lines from several
 * workers sharing stderr do not interleave.  Every string is escaped;
 * bytes that are not valid UTF-8 are written as \u00XX.
 */
#ifndef STRATUS_COMMON_LOG_H
#define STRATUS_COMMON_LOG_H

#include <stdint.h>
#include <stdio.h>

enum api_log_level {
    API_LOG_DEBUG = 0,
    API_LOG_INFO,
    API_LOG_WARN,
    API_LOG_ERROR,
};

/* 0 and *out for debug|info|warn|error, else -1. */
int api_log_level_parse(const char *name, enum api_log_level *out);
const char *api_log_level_name(enum api_log_level level);

/* Lines below @level are dropped.  Default: info. */
void api_log_set_level(enum api_log_level level);

/* {"ts":..., "level":..., "msg":..., "pid":...} */
void api_log(enum api_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The access line of one request (level info). */
void api_log_request(const char *request_id, const char *method, const char *path, int status,
                     int64_t duration_ms);

/* Write @s as the contents of a JSON string (no quotes) to @out. */
void api_log_json_escape(FILE *out, const char *s);

#endif
