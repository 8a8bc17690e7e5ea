#include "util/mem.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void
st_freep(void *pp)
{
    void **p = pp;

    free(*p);
    *p = NULL;
}

void *
st_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);

    if (!p)
        BUG("out of memory");
    return p;
}

char *
st_xstrdup(const char *s)
{
    char *p = strdup(s ? s : "");

    if (!p)
        BUG("out of memory");
    return p;
}

char *
st_xasprintf(const char *fmt, ...)
{
    va_list ap;
    char *p = NULL;
    int rc;

    va_start(ap, fmt);
    rc = vasprintf(&p, fmt, ap);
    va_end(ap);
    if (rc < 0)
        BUG("out of memory");
    return p;
}

int
st_strlcpy(char *dst, const char *src, size_t n)
{
    size_t len = strlen(src);

    if (n == 0)
        return -1;
    if (len >= n) {
        memcpy(dst, src, n - 1);
        dst[n - 1] = '\0';
        return -1;
    }
    memcpy(dst, src, len + 1);
    return 0;
}

void
st_bug_at(const char *file, int line, const char *what)
{
    fprintf(stderr, "{\"level\":\"fatal\",\"msg\":\"BUG: %s\",\"file\":\"%s\",\"line\":%d}\n", what,
            file, line);
    abort();
}
