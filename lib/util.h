/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Small helpers every part uses: cleanup attributes, file writes, numbers. */
#ifndef TESSERA_UTIL_H
#define TESSERA_UTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "tessera/tessera.h"

#define _cleanup_(f) __attribute__((cleanup(f)))

static inline void freep(void *p)
{
        free(*(void **)p);
}
static inline void closep(int *fd)
{
        if (*fd >= 0)
                close(*fd);
}
static inline void fclosep(FILE **f)
{
        if (*f)
                fclose(*f);
}
#define _cleanup_free_   _cleanup_(freep)
#define _cleanup_close_  _cleanup_(closep)
#define _cleanup_fclose_ _cleanup_(fclosep)

/* Hand ownership out of a cleanup-attributed local. */
#define TAKE_FD(fd)                                                                                                    \
        ({                                                                                                             \
                int _fd_ = (fd);                                                                                       \
                (fd) = -1;                                                                                             \
                _fd_;                                                                                                  \
        })
#define TAKE_PTR(p)                                                                                                    \
        ({                                                                                                             \
                __typeof__(p) _p_ = (p);                                                                               \
                (p) = NULL;                                                                                            \
                _p_;                                                                                                   \
        })

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))
#define STREQ(a, b)   (strcmp((a), (b)) == 0)

/*
 * Writes `value` to `path` (relative to `dirfd`) in one write(2), as kernel
 * control files want.  The error names the file.
 */
int write_file_at(int dirfd, const char *path, const char *value, struct tessera_error *err);
/* Reads at most size-1 bytes, NUL-terminates, strips one trailing newline; returns the length. */
int read_file_at(int dirfd, const char *path, char *buf, size_t size, struct tessera_error *err);

/* Strict decimal parse of a whole string; -EINVAL or -ERANGE. */
int parse_uint64(const char *s, uint64_t max, uint64_t *ret);
/* "4096", "128K", "128M", "1G", "2T" (binary units, optional trailing "B" or "iB"). */
int parse_size(const char *s, uint64_t *ret);
/* 134217728 -> "128M"; exact units when the value divides, else one decimal. */
void format_size(uint64_t bytes, char *buf, size_t n);
/* A name for an enclave, application or segment: [A-Za-z0-9][A-Za-z0-9_.-]{0,62}. */
bool name_is_valid(const char *s);

uint64_t now_ns(void); /* CLOCK_MONOTONIC */
int mkdir_p(const char *path, mode_t mode, struct tessera_error *err);

#endif
