/*
 * tmpdir.h - private scratch directories for tests.
 *
 * tmpdir_make() makes "/tmp/<prefix>-XXXXXX" with mkdtemp() and opens it to
 * others (0755): a libvirt daemon running as another user must be able to
 * reach the pools and logs placed in it.  tmpdir_remove() deletes it and
 * everything below it.
 *
 * Linked into programs without cmocka too: no cmocka calls here.
 */
#ifndef STRATUS_TESTS_TMPDIR_H
#define STRATUS_TESTS_TMPDIR_H

#include <stddef.h>

#include "util/err.h"

/* Make the directory into @dir (@size bytes); 0, or -1 with @err filled. */
int tmpdir_make(char *dir, size_t size, const char *prefix, struct st_error *err);

/* Remove @dir recursively, without following links; errors are ignored.  "" is a no-op. */
void tmpdir_remove(const char *dir);

#endif
