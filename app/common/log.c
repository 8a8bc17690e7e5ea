#include "common/log.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/ids.h"

static enum api_log_level min_level = API_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int
api_log_level_parse(const char *name, enum api_log_level *out)
{
    size_t i;

    for (i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *out = (enum api_log_level)i;
            return 0;
        }
    }
    return -1;
}

const char *
api_log_level_name(enum api_log_level level)
{
    if ((unsigned)level < sizeof(level_names) / sizeof(level_names[0]))
        return level_names[level];
    return "error";
}

void
api_log_set_level(enum api_log_level level)
{
    min_level = level;
}

/* Length of the valid UTF-8 sequence at @s, or 0 when it is not one. */
static size_t
utf8_len(const unsigned char *s)
{
    size_t n, i;
    unsigned cp;

    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        n = 2, cp = s[0] & 0x1f;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        n = 3, cp = s[0] & 0x0f;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        n = 4, cp = s[0] & 0x07;
    else
        return 0;
    for (i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    /* Overlong forms, surrogates and values past U+10FFFF are not UTF-8. */
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

void
api_log_json_escape(FILE *out, const char *s)
{
    const unsigned char *p = (const unsigned char *)(s ? s : "");

    while (*p) {
        size_t n;

        if (*p == '"' || *p == '\\') {
            fputc('\\', out);
            fputc(*p++, out);
            continue;
        }
        if (*p < 0x20 || *p == 0x7f) {
            fprintf(out, "\\u%04x", *p++);
            continue;
        }
        n = utf8_len(p);
        if (n == 0) {
            fprintf(out, "\\u%04x", *p++);
            continue;
        }
        fwrite(p, 1, n, out);
        p += n;
    }
}

/* Open a line with ts, level and pid; the caller adds members and ends it. */
static FILE *
line_begin(enum api_log_level level, char **buf, size_t *len)
{
    char ts[ST_TIME_BUF];
    int64_t now = st_now_ms();
    FILE *out = open_memstream(buf, len);

    if (!out)
        return NULL;
    st_time_format(now, ts);
    /* Millisecond precision: RFC 3339 allows the fraction before the Z. */
    ts[strlen(ts) - 1] = '\0';
    fprintf(out, "{\"ts\":\"%s.%03dZ\",\"level\":\"%s\",\"pid\":%ld", ts, (int)(now % 1000),
            api_log_level_name(level), (long)getpid());
    return out;
}

static void
line_end(FILE *out, char **buf, size_t *len)
{
    fputs("}\n", out);
    if (fclose(out) == 0) {
        ssize_t rc = write(STDERR_FILENO, *buf, *len);

        (void)rc;
    }
    free(*buf);
}

void
api_log(enum api_log_level level, const char *fmt, ...)
{
    char *msg = NULL, *buf = NULL;
    size_t len = 0;
    va_list ap;
    FILE *out;
    int rc;

    if (level < min_level)
        return;
    va_start(ap, fmt);
    rc = vasprintf(&msg, fmt, ap);
    va_end(ap);
    if (rc < 0)
        return;
    out = line_begin(level, &buf, &len);
    if (out) {
        fputs(",\"msg\":\"", out);
        api_log_json_escape(out, msg);
        fputc('"', out);
        line_end(out, &buf, &len);
    }
    free(msg);
}

void
api_log_request(const char *request_id, const char *method, const char *path, int status,
                int64_t duration_ms)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *out;

    if (API_LOG_INFO < min_level)
        return;
    out = line_begin(API_LOG_INFO, &buf, &len);
    if (!out)
        return;
    fputs(",\"msg\":\"request\",\"request_id\":\"", out);
    api_log_json_escape(out, request_id);
    fputs("\",\"method\":\"", out);
    api_log_json_escape(out, method);
    fputs("\",\"path\":\"", out);
    api_log_json_escape(out, path);
    fprintf(out, "\",\"status\":%d,\"duration_ms\":%lld", status, (long long)duration_ms);
    line_end(out, &buf, &len);
}
