#include "util/ids.h"

#include <ctype.h>
#include <errno.h>
#include <string.h>
#include <time.h>
#include <uuid/uuid.h>

void
st_uuid_generate(char out[ST_ID_BUF])
{
    uuid_t u;

    uuid_generate_random(u);
    uuid_unparse_lower(u, out);
}

bool
st_uuid_valid(const char *s)
{
    size_t i;

    if (!s || strlen(s) != ST_ID_LEN)
        return false;
    for (i = 0; i < ST_ID_LEN; i++) {
        bool dash = (i == 8 || i == 13 || i == 18 || i == 23);

        if (dash ? s[i] != '-' : !isxdigit((unsigned char)s[i]))
            return false;
    }
    return true;
}

int64_t
st_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
st_monotonic_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
st_time_format(int64_t ms, char out[ST_TIME_BUF])
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;

    gmtime_r(&secs, &tm);
    strftime(out, ST_TIME_BUF, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void
st_sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

int64_t
st_monotonic_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
