/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libxpmem: XPMEM's calls and conventions (-1 and errno) on top of libxemem. */
#include <errno.h>
#include <stdint.h>
#include <unistd.h>

#include "tessera/xemem.h"
#include "xpmem.h"

/* XPMEM's convention: -1 and errno, never a negative errno as the value. */
static int64_t to_errno(int64_t r)
{
        if (r >= 0)
                return r;
        errno = (int)-r;
        return -1;
}

static int permit_mode(int permit_type, void *permit_value, unsigned *mode)
{
        uintptr_t v = (uintptr_t)permit_value;
        if (permit_type != XPMEM_PERMIT_MODE || v > 0777)
                return -EINVAL;
        *mode = (unsigned)v;
        return 0;
}

int xpmem_version(void)
{
        return XPMEM_CURRENT_VERSION;
}

xpmem_segid_t xpmem_make(void *vaddr, size_t size, int permit_type, void *permit_value)
{
        unsigned mode;
        long ps = sysconf(_SC_PAGESIZE);
        if (permit_mode(permit_type, permit_value, &mode) < 0)
                return to_errno(-EINVAL);
        if (size == XPMEM_MAXADDR_SIZE) {
                if (vaddr)
                        return to_errno(-EINVAL);
                return to_errno(xemem_make(NULL, XEMEM_WHOLE_ADDRESS_SPACE, NULL, mode));
        }
        /* XPMEM exports whole pages only */
        if (size == 0 || (uintptr_t)vaddr % (uintptr_t)ps || size % (size_t)ps)
                return to_errno(-EINVAL);
        return to_errno(xemem_make(vaddr, size, NULL, mode));
}

int xpmem_remove(xpmem_segid_t segid)
{
        return (int)to_errno(xemem_remove(segid));
}

xpmem_apid_t xpmem_get(xpmem_segid_t segid, int flags, int permit_type, void *permit_value)
{
        if (permit_type != XPMEM_PERMIT_MODE || (flags != XPMEM_RDONLY && flags != XPMEM_RDWR))
                return to_errno(-EINVAL);
        return to_errno(xemem_get(segid, flags == XPMEM_RDWR ? XEMEM_RDWR : XEMEM_RDONLY));
}

int xpmem_release(xpmem_apid_t apid)
{
        return (int)to_errno(xemem_release(apid));
}

void *xpmem_attach(struct xpmem_addr addr, size_t size, void *vaddr)
{
        if (addr.offset < 0) {
                errno = EINVAL;
                return (void *)-1;
        }
        void *at = vaddr;
        int r = xemem_attach(addr.apid, (uint64_t)addr.offset, size, &at);
        if (r < 0) {
                errno = -r;
                return (void *)-1;
        }
        return at;
}

int xpmem_detach(void *vaddr)
{
        return (int)to_errno(xemem_detach(vaddr));
}
