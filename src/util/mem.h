/*
 * mem.h - ownership helpers.
 *
 * `ST_AUTOFREE char *s = ...;` frees s with free() when it leaves scope.
 * `st_steal_ptr(&s)` hands the pointer on and leaves NULL behind, so the
 * cleanup becomes a no-op.  BUG() is the one place a broken invariant goes.
 */
#ifndef STRATUS_UTIL_MEM_H
#define STRATUS_UTIL_MEM_H

#include <stddef.h>

void st_freep(void *pp);
#define ST_AUTOFREE __attribute__((cleanup(st_freep)))

static inline void *
st_steal_ptr_impl(void **pp)
{
    void *p = *pp;
    *pp = NULL;
    return p;
}
#define st_steal_ptr(pp) st_steal_ptr_impl((void **)(pp))

/* Allocation that cannot fail: aborts through BUG() on exhaustion. */
void *st_xcalloc(size_t n, size_t size);
char *st_xstrdup(const char *s);
char *st_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Copy src into dst of size n.  Returns 0, or -1 when src did not fit
 * (dst then holds a truncated, terminated copy).
 */
int st_strlcpy(char *dst, const char *src, size_t n);

void st_bug_at(const char *file, int line, const char *what) __attribute__((noreturn));
#define BUG(what) st_bug_at(__FILE__, __LINE__, (what))

#define ST_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
