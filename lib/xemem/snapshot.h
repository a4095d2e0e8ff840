/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * XASM snapshots, producer side: a copy-on-write copy of a shared mapping of
 * this process, taken with userfaultfd write-protection.  The producer keeps
 * writing at once; a page it writes before the background copy reaches it
 * is preserved first, so the snapshot holds the data of the instant
 * snapshot_start() returned.  The producer pays for the pages it writes,
 * not for the size of the range.
 */
#ifndef XEMEM_SNAPSHOT_H
#define XEMEM_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "tessera/tessera.h"

struct snapshot;

/*
 * Snapshots this process's MAP_SHARED mapping [addr, addr + len) (shmem or
 * hugetlb memfds, page aligned) into `dst_fd` (a memfd at least `len` long
 * that holds no pages yet, with pages no larger than the mapping's; byte i
 * of the range goes to offset i).  `uffd_dev` is an open
 * /dev/userfaultfd or -1 (then userfaultfd(2) is tried).  Returns once the
 * range is write-protected; the copy goes on in a library thread, which
 * calls done(arg, result) when it has finished (result 0, or a negative
 * errno).  Writes made through other processes' mappings are not seen.
 */
int snapshot_start(uintptr_t addr, size_t len, int dst_fd, int uffd_dev, void (*done)(void *arg, int result), void *arg,
                   struct snapshot **ret, struct tessera_error *err);
/*
 * Waits for the copy to end, frees everything; returns the copy's result.
 * Not from done() (that runs on the copy thread): -EDEADLK.
 */
int snapshot_finish(struct snapshot *s);
/* Pages preserved so far because the producer wrote them first (each cost it one fault). */
uint64_t snapshot_faults(const struct snapshot *s);

#endif
