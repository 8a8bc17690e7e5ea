/*
 * storage_names.c - what every storage backend's list_volumes() hands out
 * is freed the same way, so the helper lives beside the interface.
 */
#include "repositories/storage.h"

#include <stdlib.h>

void
storage_names_free(char **names, size_t n)
{
    size_t i;

    if (!names)
        return;
    for (i = 0; i < n; i++)
        free(names[i]);
    free(names);
}
