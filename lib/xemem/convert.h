/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Export in place: turns a range of the calling process's own memory
 * (malloc'd, static, stack, mmap'd) into memfd-backed MAP_SHARED pages at
 * the same addresses, so another process can map the very same pages.
 * The process's other threads are stopped while a range is copied and
 * remapped, so no write of theirs is lost.
 */
#ifndef XEMEM_CONVERT_H
#define XEMEM_CONVERT_H

#include <stddef.h>
#include <stdint.h>

#include "tessera/tessera.h"

/* A stretch of the range backed by one memfd. */
struct xemem_piece {
        uintptr_t addr;     /* where it is mapped in this process */
        size_t len;         /* bytes, a multiple of the page size */
        int fd;             /* the memfd: owned by this module, valid while the piece is mapped */
        uint64_t fd_offset; /* offset of `addr` in the memfd */
        uint64_t ino;       /* the memfd's inode number, so tesserad can check what it fetched */
        int prot;           /* the exporter's protection (PROT_READ/PROT_WRITE) */
};

/*
 * Makes every page of [addr, addr + len) shared and returns the pieces
 * covering it, in address order (*ret: malloc'd array the caller frees;
 * the fds stay owned by this module).  Pages already converted by an
 * earlier call are reused, not copied again, so earlier attachers keep
 * seeing the same memory.  `addr` and `len` must be page aligned.
 * Thread-safe.  Fails (leaving the range as it was) on unmapped holes
 * (-EFAULT) and on mappings that cannot be shared (-EINVAL: shared file
 * mappings other than this module's, device and special mappings).
 */
int convert_range(uintptr_t addr, size_t len, struct xemem_piece **ret, size_t *n_ret, struct tessera_error *err);

/* Closes the memfds of pieces whose mapping is gone (unmapped or replaced); returns how many. */
size_t convert_gc(void);

#endif
