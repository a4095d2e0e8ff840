/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * XPMEM's user-space interface, served by Tessera's XEMEM without a kernel
 * module.  Types, constants and calls match XPMEM's public header, so a
 * program or MPI library built against XPMEM runs on Tessera through its
 * libxpmem.so.0.  Calls return -1 (xpmem_attach: (void *)-1) and set errno
 * on failure.  Limits of the user-space design: see docs/xemem.md.
 */
#ifndef _XPMEM_H
#define _XPMEM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef int64_t xpmem_segid_t; /* from xpmem_make() */
typedef int64_t xpmem_apid_t;  /* from xpmem_get() */

struct xpmem_addr {
        xpmem_apid_t apid; /* the access the memory is reached through */
        off_t offset;      /* offset into the segment (an address for a whole-address-space one) */
};

/* xpmem_make(NULL, XPMEM_MAXADDR_SIZE, ...) exports the whole address space */
#define XPMEM_MAXADDR_SIZE (size_t)(-1L)

#define XPMEM_ERRNO_NOPROC 2004

/* xpmem_get() flags */
#define XPMEM_RDONLY 0x1
#define XPMEM_RDWR   0x2

/* permit_type: permit_value is a file mode (0600-style), cast to void * */
#define XPMEM_PERMIT_MODE 0x1

#define XPMEM_CURRENT_VERSION        0x00026003
#define XPMEM_CURRENT_VERSION_STRING "2.6.3"

int xpmem_version(void);
xpmem_segid_t xpmem_make(void *vaddr, size_t size, int permit_type, void *permit_value);
int xpmem_remove(xpmem_segid_t segid);
xpmem_apid_t xpmem_get(xpmem_segid_t segid, int flags, int permit_type, void *permit_value);
int xpmem_release(xpmem_apid_t apid);
void *xpmem_attach(struct xpmem_addr addr, size_t size, void *vaddr);
int xpmem_detach(void *vaddr);

#ifdef __cplusplus
}
#endif
#endif
