#include "support/tmpdir.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int
tmpdir_make(char *dir, size_t size, const char *prefix, struct st_error *err)
{
    if ((size_t)snprintf(dir, size, "/tmp/%s-XXXXXX", prefix) >= size) {
        dir[0] = '\0';
        return st_error_set(err, ST_ERR_INTERNAL, "temp dir prefix '%s' is too long", prefix);
    }
    if (!mkdtemp(dir)) {
        st_error_set_native(err, ST_ERR_INTERNAL, errno, "cannot create '%s': %s", dir,
                            strerror(errno));
        dir[0] = '\0';
        return -1;
    }
    if (chmod(dir, 0755) < 0) {
        st_error_set_native(err, ST_ERR_INTERNAL, errno, "cannot open up '%s': %s", dir,
                            strerror(errno));
        tmpdir_remove(dir);
        dir[0] = '\0';
        return -1;
    }
    return 0;
}

static int
remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void
tmpdir_remove(const char *dir)
{
    if (dir && dir[0])
        nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}
