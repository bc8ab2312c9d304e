/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * udmabuf-live userspace ABI: the C view of uapi/src/abi.rs (the one definition).
 * The first part is upstream <linux/udmabuf.h>, unchanged, so code written for
 * /dev/udmabuf works on /dev/udmabuf-live. uapi/tests/c_header.rs checks that this
 * header and the Rust crate agree on sizes, offsets and ioctl numbers.
 */
#ifndef _UAPI_LINUX_UDMABUF_LIVE_H
#define _UAPI_LINUX_UDMABUF_LIVE_H

#include <linux/types.h>
#include <linux/ioctl.h>

#define UDMABUF_LIVE_DEVICE "/dev/udmabuf-live"

#ifndef _UAPI_LINUX_UDMABUF_H /* upstream definitions, unless <linux/udmabuf.h> came first */
#define _UAPI_LINUX_UDMABUF_H

#define UDMABUF_FLAGS_CLOEXEC	0x01

struct udmabuf_create {
	__u32 memfd;
	__u32 flags;
	__u64 offset;
	__u64 size;
};

struct udmabuf_create_item {
	__u32 memfd;
	__u32 __pad;
	__u64 offset;
	__u64 size;
};

struct udmabuf_create_list {
	__u32 flags;
	__u32 count;
	struct udmabuf_create_item list[];
};

#define UDMABUF_CREATE       _IOW('u', 0x42, struct udmabuf_create)
#define UDMABUF_CREATE_LIST  _IOW('u', 0x43, struct udmabuf_create_list)

#endif /* _UAPI_LINUX_UDMABUF_H */

/*
 * udmabuf-live extensions. Each takes a dma-buf fd created by /dev/udmabuf-live; any
 * other fd gets EINVAL (EBADF if it is not open).
 */

#define UDMABUF_LIVE_BACKING_SHMEM	1
#define UDMABUF_LIVE_BACKING_HUGETLB	2
#define UDMABUF_LIVE_BACKING_MIXED	3

/* Invalidations were seen and not applied yet. */
#define UDMABUF_LIVE_STATE_PENDING	(1U << 0)
/* New pages wait for the last static pin or vmap to go; users still see the old ones. */
#define UDMABUF_LIVE_STATE_STALE	(1U << 1)
/* Every page is watched by an mmu notifier (otherwise checked at map/CPU access/SYNC). */
#define UDMABUF_LIVE_STATE_WATCHED	(1U << 2)
/* A kernel vmap of the buffer is active. */
#define UDMABUF_LIVE_STATE_VMAPPED	(1U << 3)
/* The memfd was write-sealed after create: no more live updates; SYNC fails with EPERM. */
#define UDMABUF_LIVE_STATE_SEALED	(1U << 4)
/* Old pages are still pinned for an importer mapping made before the last update. */
#define UDMABUF_LIVE_STATE_RETIRED	(1U << 5)

struct udmabuf_live_info {
	__u32 dmabuf_fd;	/* in */
	__u32 backing;		/* UDMABUF_LIVE_BACKING_* */
	__u64 size;		/* bytes */
	__u64 generation;	/* bumped by every applied update */
	__u64 updates;		/* updates applied */
	__u64 pages_swapped;	/* pages swapped in over the buffer's life */
	__u32 state;		/* UDMABUF_LIVE_STATE_* */
	__u32 pins;		/* pins held by static importers */
	__u32 notifiers;	/* mappings watched now, in every process */
	__u32 ranges;		/* memfd ranges */
	__u32 repopulate;	/* UDMABUF_LIVE_REPOPULATE_* (module policy now) */
	__u32 __pad;
	__u64 unpopulated;	/* pages the memfd lost that nothing needed since */
};

#define UDMABUF_LIVE_REPOPULATE_EAGER	0	/* a lost page gets a new one at once */
#define UDMABUF_LIVE_REPOPULATE_LAZY	1	/* ... when something first needs it */

/* Apply pending updates; wait up to timeout_ms for deferred ones (ETIMEDOUT). */
struct udmabuf_live_sync {
	__u32 dmabuf_fd;
	__u32 timeout_ms;
};

/* Compare every held page with the memfd's page cache, allocating nothing. */
struct udmabuf_live_verify {
	__u32 dmabuf_fd;	/* in */
	__u32 __pad;
	__u64 pages;		/* pages checked */
	__u64 matching;		/* identical to the memfd's page */
	__u64 stale;		/* the memfd holds another page there */
	__u64 holes;		/* the memfd has a hole there */
	__u64 first_mismatch;	/* byte offset, or ~0ULL if all match */
	__u64 unpopulated;	/* not populated over a memfd hole (coherent) */
};

/* CAP_SYS_ADMIN: PFNs of pages [first_page, first_page + count) as __u64s at pfns. */
struct udmabuf_live_pfns {
	__u32 dmabuf_fd;
	__u32 __pad;
	__u64 first_page;
	__u64 count;
	__u64 pfns;		/* user pointer to count __u64s */
};

#define UDMABUF_LIVE_INFO    _IOWR('u', 0x50, struct udmabuf_live_info)
#define UDMABUF_LIVE_SYNC    _IOW('u', 0x51, struct udmabuf_live_sync)
#define UDMABUF_LIVE_VERIFY  _IOWR('u', 0x52, struct udmabuf_live_verify)
#define UDMABUF_LIVE_PFNS    _IOW('u', 0x53, struct udmabuf_live_pfns)

#endif /* _UAPI_LINUX_UDMABUF_LIVE_H */
