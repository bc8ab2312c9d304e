// SPDX-License-Identifier: GPL-2.0
//! The udmabuf-live ABI. Dependency-free and `no_std`: compiled by cargo as part of the
//! `udmabuf-live-uapi` crate and by Kbuild as a module of the kernel crate, so both
//! sides use one definition. `include/linux/udmabuf_live.h` is its C twin.
//!
//! The first part is upstream udmabuf (include/uapi/linux/udmabuf.h), bit for bit, so
//! that `/dev/udmabuf-live` is a drop-in replacement for `/dev/udmabuf`.

/// Name of the misc device the module registers (`/dev/udmabuf-live`).
pub const DEVICE_NAME: &str = "udmabuf-live";
/// Kernel module name, as in `/sys/module/<name>`.
pub const MODULE_NAME: &str = "udmabuf_live";

/// ioctl type letter shared with upstream udmabuf.
pub const UDMABUF_IOCTL_TYPE: u8 = b'u';

/// `flags`: create the dma-buf fd with O_CLOEXEC.
pub const UDMABUF_FLAGS_CLOEXEC: u32 = 0x01;

/// `UDMABUF_CREATE` argument: one memfd range.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdmabufCreate {
    pub memfd: u32,
    pub flags: u32,
    pub offset: u64,
    pub size: u64,
}

/// One entry of `UDMABUF_CREATE_LIST`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdmabufCreateItem {
    pub memfd: u32,
    pub __pad: u32,
    pub offset: u64,
    pub size: u64,
}

/// `UDMABUF_CREATE_LIST` header; `count` items follow it directly.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdmabufCreateList {
    pub flags: u32,
    pub count: u32,
}

const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = 8;
const IOC_SIZESHIFT: u32 = 16;
const IOC_DIRSHIFT: u32 = 30;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// `_IOC(dir, type, nr, size)` as in include/uapi/asm-generic/ioctl.h.
pub const fn ioc(dir: u32, ty: u8, nr: u8, size: usize) -> u32 {
    (dir << IOC_DIRSHIFT)
        | ((ty as u32) << IOC_TYPESHIFT)
        | ((nr as u32) << IOC_NRSHIFT)
        | ((size as u32) << IOC_SIZESHIFT)
}
/// `_IO(type, nr)`.
pub const fn io(ty: u8, nr: u8) -> u32 {
    ioc(0, ty, nr, 0)
}
/// `_IOR(type, nr, T)`.
pub const fn ior<T>(ty: u8, nr: u8) -> u32 {
    ioc(IOC_READ, ty, nr, core::mem::size_of::<T>())
}
/// `_IOW(type, nr, T)`.
pub const fn iow<T>(ty: u8, nr: u8) -> u32 {
    ioc(IOC_WRITE, ty, nr, core::mem::size_of::<T>())
}
/// `_IOWR(type, nr, T)`.
pub const fn iowr<T>(ty: u8, nr: u8) -> u32 {
    ioc(IOC_READ | IOC_WRITE, ty, nr, core::mem::size_of::<T>())
}

/// `_IOW('u', 0x42, struct udmabuf_create)`.
pub const UDMABUF_CREATE: u32 = iow::<UdmabufCreate>(UDMABUF_IOCTL_TYPE, 0x42);
/// `_IOW('u', 0x43, struct udmabuf_create_list)`.
pub const UDMABUF_CREATE_LIST: u32 = iow::<UdmabufCreateList>(UDMABUF_IOCTL_TYPE, 0x43);

// ---- udmabuf-live extensions -------------------------------------------------------
// Each takes a dma-buf fd created by /dev/udmabuf-live; any other fd gets EINVAL
// (EBADF if it is not open at all).

/// `UdmabufLiveInfo::backing`: every range is shmem.
pub const UDMABUF_LIVE_BACKING_SHMEM: u32 = 1;
/// `UdmabufLiveInfo::backing`: every range is hugetlbfs.
pub const UDMABUF_LIVE_BACKING_HUGETLB: u32 = 2;
/// `UdmabufLiveInfo::backing`: the ranges mix shmem and hugetlbfs.
pub const UDMABUF_LIVE_BACKING_MIXED: u32 = 3;

/// `UdmabufLiveInfo::state`: invalidations were seen and not yet applied.
pub const UDMABUF_LIVE_STATE_PENDING: u32 = 1 << 0;
/// `UdmabufLiveInfo::state`: new pages are waiting for the last pin or vmap to go; the
/// importers and mmaps still see the old ones.
pub const UDMABUF_LIVE_STATE_STALE: u32 = 1 << 1;
/// `UdmabufLiveInfo::state`: every page is watched by an mmu notifier (otherwise the
/// unwatched part is checked lazily at map, CPU access and SYNC).
pub const UDMABUF_LIVE_STATE_WATCHED: u32 = 1 << 2;
/// `UdmabufLiveInfo::state`: a kernel vmap of the buffer is active.
pub const UDMABUF_LIVE_STATE_VMAPPED: u32 = 1 << 3;
/// `UdmabufLiveInfo::state`: the memfd was write-sealed (F_SEAL_WRITE or
/// F_SEAL_FUTURE_WRITE) after create. The buffer keeps the pages it has and takes no
/// new page from the memfd: no more live updates, and SYNC fails with EPERM.
pub const UDMABUF_LIVE_STATE_SEALED: u32 = 1 << 4;
/// `UdmabufLiveInfo::state`: old pages an update replaced are still pinned, because an
/// importer mapping made from them has not been unmapped yet.
pub const UDMABUF_LIVE_STATE_RETIRED: u32 = 1 << 5;

/// `UDMABUF_LIVE_INFO`: the state of a buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdmabufLiveInfo {
    /// In: the dma-buf fd.
    pub dmabuf_fd: u32,
    /// Out: `UDMABUF_LIVE_BACKING_*`.
    pub backing: u32,
    /// Out: size in bytes.
    pub size: u64,
    /// Out: bumped by every applied update.
    pub generation: u64,
    /// Out: number of updates applied.
    pub updates: u64,
    /// Out: number of pages swapped in, over the buffer's life.
    pub pages_swapped: u64,
    /// Out: `UDMABUF_LIVE_STATE_*` bits.
    pub state: u32,
    /// Out: pins held by static importers.
    pub pins: u32,
    /// Out: mappings of the memfd ranges watched by an mmu notifier now, in every
    /// process.
    pub notifiers: u32,
    /// Out: number of memfd ranges.
    pub ranges: u32,
    /// Out: the module's repopulation policy now (`UDMABUF_LIVE_REPOPULATE_*`).
    pub repopulate: u32,
    pub __pad: u32,
    /// Out: pages not populated: the memfd lost them and nothing has needed them since
    /// (lazy policy). Each comes in, as the memfd's page there, when first needed.
    pub unpopulated: u64,
}

/// `UdmabufLiveInfo::repopulate`: a page the memfd lost gets a new one at once.
pub const UDMABUF_LIVE_REPOPULATE_EAGER: u32 = 0;
/// `UdmabufLiveInfo::repopulate`: it stays unpopulated until something needs it.
pub const UDMABUF_LIVE_REPOPULATE_LAZY: u32 = 1;

/// `UDMABUF_LIVE_SYNC`: apply every pending update, waiting up to `timeout_ms` for a
/// deferred one (pinned or vmapped buffer). ETIMEDOUT if still stale by then; EPERM if
/// the memfd was write-sealed after create (`UDMABUF_LIVE_STATE_SEALED`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdmabufLiveSync {
    pub dmabuf_fd: u32,
    /// Milliseconds to wait for deferred updates; 0 does not wait.
    pub timeout_ms: u32,
}

/// `UDMABUF_LIVE_VERIFY`: compare every held page with the memfd's page cache, without
/// allocating anything.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdmabufLiveVerify {
    /// In: the dma-buf fd.
    pub dmabuf_fd: u32,
    pub __pad: u32,
    /// Out: pages checked (the whole buffer).
    pub pages: u64,
    /// Out: pages identical to the memfd's page.
    pub matching: u64,
    /// Out: pages the memfd has replaced with another page.
    pub stale: u64,
    /// Out: pages whose memfd offset is a hole now.
    pub holes: u64,
    /// Out: byte offset in the dma-buf of the first page that does not match, or
    /// `u64::MAX` if all match.
    pub first_mismatch: u64,
    /// Out: pages not populated over a hole of the memfd (counted as coherent: both
    /// read as zeros, and the memfd's page comes in when one is needed).
    pub unpopulated: u64,
}

/// `UDMABUF_LIVE_PFNS` (CAP_SYS_ADMIN): the PFNs of pages `first_page ..
/// first_page + count`, written as `u64`s to the user buffer at `pfns`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdmabufLivePfns {
    pub dmabuf_fd: u32,
    pub __pad: u32,
    pub first_page: u64,
    pub count: u64,
    /// User pointer to `count` u64s.
    pub pfns: u64,
}

/// `_IOWR('u', 0x50, struct udmabuf_live_info)`.
pub const UDMABUF_LIVE_INFO: u32 = iowr::<UdmabufLiveInfo>(UDMABUF_IOCTL_TYPE, 0x50);
/// `_IOW('u', 0x51, struct udmabuf_live_sync)`.
pub const UDMABUF_LIVE_SYNC: u32 = iow::<UdmabufLiveSync>(UDMABUF_IOCTL_TYPE, 0x51);
/// `_IOWR('u', 0x52, struct udmabuf_live_verify)`.
pub const UDMABUF_LIVE_VERIFY: u32 = iowr::<UdmabufLiveVerify>(UDMABUF_IOCTL_TYPE, 0x52);
/// `_IOW('u', 0x53, struct udmabuf_live_pfns)`.
pub const UDMABUF_LIVE_PFNS: u32 = iow::<UdmabufLivePfns>(UDMABUF_IOCTL_TYPE, 0x53);
