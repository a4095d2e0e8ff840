/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libxemem: memory shared between processes of different enclaves (and the
 * host), found by a node-wide name, zero-copy, on a stock kernel.
 *
 * A process exports a range of its own memory (malloc'd, static, stack or
 * mmap'd: the library makes it shareable in place), other processes look it
 * up by name, ask tesserad for access (checked against the segment's owner
 * and mode every time) and map it.  Every call returns a negative errno on
 * failure; xemem_error() then gives the message for the calling thread.
 *
 * tesserad is found at $TESSERA_XEMEM_SOCKET, else XEMEM_DEFAULT_SOCKET
 * (inside an enclave that path is provided by Tessera).
 */
#ifndef TESSERA_XEMEM_H
#define TESSERA_XEMEM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define XEMEM_DEFAULT_SOCKET "/run/tessera/xemem/xemem.sock"
#define XEMEM_NAME_MAX       127

typedef int64_t xemem_segid_t; /* > 0 */
typedef int64_t xemem_apid_t;  /* > 0 */

/* xemem_get flags */
#define XEMEM_RDONLY 0x1
#define XEMEM_RDWR   0x2

/* xemem_make size that means "my whole address space", converted on demand at attach */
#define XEMEM_WHOLE_ADDRESS_SPACE ((size_t)-1)

/*
 * Exports [addr, addr + size) under `name` (NULL: no name, found by id only)
 * with `mode` (0600-style: owner, group, other read/write bits).  The range
 * is rounded out to whole pages.  From now on those pages are shared with
 * every attacher: after fork() parent and child share them too.
 * Returns the segment id, or a negative errno.
 */
xemem_segid_t xemem_make(void *addr, size_t size, const char *name, unsigned mode);
/* Ends an export: the name disappears; current attachers keep their mappings. */
int xemem_remove(xemem_segid_t segid);

/* Finds a segment by name; -ENOENT when there is none the caller may see. */
xemem_segid_t xemem_lookup(const char *name);

/* Asks for access (XEMEM_RDONLY or XEMEM_RDWR); returns an access id. */
xemem_apid_t xemem_get(xemem_segid_t segid, int flags);
int xemem_release(xemem_apid_t apid);

/*
 * Maps [offset, offset + size) of the segment.  *addr in: NULL, or the
 * address to map at (MAP_FIXED semantics); out: where the byte at `offset`
 * is.  An offset inside a page is allowed: the pages around it are mapped.
 */
int xemem_attach(xemem_apid_t apid, uint64_t offset, size_t size, void **addr);
/* Unmaps an attachment, given any address returned by xemem_attach. */
int xemem_detach(void *addr);

/*
 * XASM: a new segment holding the data of `segid` as it is at this instant,
 * copy-on-write.  Only the exporter may snapshot; the exporter keeps
 * writing at once.  The snapshot has no name and the source's mode.
 */
xemem_segid_t xemem_snapshot(xemem_segid_t segid);

/* The message of the calling thread's last failure ("" when none). */
const char *xemem_error(void);

#ifdef __cplusplus
}
#endif
#endif
