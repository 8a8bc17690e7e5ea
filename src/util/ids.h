/*
 * ids.h - identifiers and clocks.
 */
#ifndef STRATUS_UTIL_IDS_H
#define STRATUS_UTIL_IDS_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

#define ST_ID_LEN 36   /* "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx" */
#define ST_ID_BUF 37   /* with the terminating NUL */
#define ST_TIME_BUF 32 /* "2026-11-23T18:43:51Z" and some room */

/* Write a fresh random UUIDv4 in lower case into out. */
void st_uuid_generate(char out[ST_ID_BUF]);

/* True when s is a canonical UUID (36 chars, hex and dashes, any case). */
bool st_uuid_valid(const char *s);

/* Milliseconds since the Unix epoch (wall clock). */
int64_t st_now_ms(void);

/* Milliseconds from a monotonic clock, for timeouts. */
int64_t st_monotonic_ms(void);

/* Nanoseconds from a monotonic clock, for measurements. */
int64_t st_monotonic_ns(void);

/* Sleep for ms milliseconds (restarting after signals). */
void st_sleep_ms(int64_t ms);

/* Format ms since epoch as RFC 3339 UTC, second resolution ("...Z"). */
void st_time_format(int64_t ms, char out[ST_TIME_BUF]);

#endif
