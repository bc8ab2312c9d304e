// SPDX-License-Identifier: GPL-2.0
//! The ABI of `ulive_importer`, the TEST importer module in `selftests/importer/`. It
//! attaches to any dma-buf fd (ours or the kernel's udmabuf) from its own misc device
//! `/dev/ulive-importer`, maps it the way a device driver would, and reports what it
//! sees. It is a test tool, not part of the udmabuf uapi.
//!
//! Like `uapi/src/abi.rs`, this file is `no_std` and dependency-free: the crate
//! `ulive-importer-abi` (beside it) exports it, and the importer module compiles the same
//! file with a `#[path]` include. It uses the `_IOC` helpers of `uapi/src/abi.rs` through
//! `super::`, so an includer must have `io`, `ior` and `iow` in scope at its parent module.
//!
//! One open file of `/dev/ulive-importer` holds at most one attachment, and at most one
//! kernel vmap of the attached buffer. A test that needs several importers of one buffer
//! opens the device several times. Every ioctl returns 0 on success (READ and VREAD: the
//! number of bytes copied; PFNS: the number of PFNs written) or -1 with errno:
//! - ENXIO: MAP, READ, PFNS, VMAP, VUNMAP, VREAD or DETACH without an attachment;
//!   VUNMAP or VREAD without a vmap;
//! - EBUSY: ATTACH while already attached; VMAP while already vmapped;
//! - EBADF / EINVAL: ATTACH with a closed fd / with an fd that is not a dma-buf, or
//!   with `dynamic` other than 0 or 1;
//! - EINVAL: READ, VREAD or PFNS starting past the end of the buffer; PFNS with unknown
//!   `flags` or non-zero `reserved`; VMAP of an exporter without a vmap op;
//! - EOPNOTSUPP: READ or PFNS (without [`IMPORTER_PFNS_DMA`]) of a table that carries no
//!   struct pages; VMAP of a buffer the exporter maps as I/O memory;
//! - EIO: VMAP when the exporter reports success without an address;
//! - ENOTTY: an unknown command.

use super::{io, ior, iow};

/// Name of the misc device (`/dev/ulive-importer`).
pub const IMPORTER_DEVICE_NAME: &str = "ulive-importer";
/// Kernel module name, as in `/sys/module/<name>`.
pub const IMPORTER_MODULE_NAME: &str = "ulive_importer";

/// ioctl type letter of the importer device.
pub const IMPORTER_IOCTL_TYPE: u8 = b'i';

/// Largest READ the module serves in one call; longer requests are cut to this.
pub const IMPORTER_READ_MAX: u64 = 4 << 20;

/// `ATTACH` argument.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImporterAttach {
    /// A dma-buf fd of the calling process; the importer takes its own reference.
    pub dmabuf_fd: i32,
    /// 1: dynamic attachment (`dma_buf_dynamic_attach` with an `invalidate_mappings`
    /// callback); 0: static attachment (`dma_buf_attach`).
    pub dynamic: u32,
}

/// `MAP` result: the attachment's (new) mapping, as `dma_buf_map_attachment` returned it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImporterMap {
    /// DMA-mapped segments (`sgt->nents`): what a device would be programmed with.
    pub nents: u32,
    /// CPU segments of the table (`sgt->orig_nents`).
    pub orig_nents: u32,
    /// Sum of the DMA segment lengths, in bytes.
    pub bytes: u64,
    /// Duration of the `dma_buf_map_attachment()` call alone, in nanoseconds.
    pub map_ns: u64,
}

/// Largest PFNS the module serves in one call; longer requests are cut to this.
pub const IMPORTER_PFNS_MAX: u64 = 1 << 16;

/// `READ` and `VREAD` argument: copy `len` bytes at `offset` of the buffer, as the
/// importer's mapping (READ) or its vmap (VREAD) sees them, to the user buffer at
/// `user_ptr`. Cut at the end of the buffer and at [`IMPORTER_READ_MAX`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImporterRead {
    pub offset: u64,
    pub len: u64,
    pub user_ptr: u64,
}

/// `PFNS` flag: the PFNs of the DMA addresses (`sg_dma_address`) instead of the CPU
/// pages. They are page frame numbers only where DMA addresses are physical addresses
/// (no IOMMU, no bounce buffering, as in the test guest).
pub const IMPORTER_PFNS_DMA: u32 = 1;

/// `PFNS` flag: instead of PFNs, 1 for each page of the *current* mapping (stale or not:
/// no remap) whose folio is still DMA-pinned (`folio_maybe_dma_pinned`), else 0.
/// ENXIO without a mapping. What an exporter owes an importer whose mapping was
/// invalidated but is not unmapped yet: its pages must not go back to the allocator.
pub const IMPORTER_PFNS_PINNED: u32 = 2;

/// `PFNS` argument: the page frame numbers the attachment's current mapping points at for
/// buffer pages `first_page..first_page + count` (cut at the end of the buffer and at
/// [`IMPORTER_PFNS_MAX`]), written as `u64`s to `user_ptr`. Buffer page `i` is the page
/// that holds byte `i * PAGE_SIZE` of the buffer. Like READ, PFNS maps first when the
/// attachment is unmapped or its mapping was invalidated.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImporterPfns {
    pub first_page: u64,
    pub count: u64,
    pub user_ptr: u64,
    /// 0: the struct pages behind the CPU segments (`page_to_pfn`);
    /// [`IMPORTER_PFNS_DMA`]: the DMA segments' addresses shifted by `PAGE_SHIFT`;
    /// [`IMPORTER_PFNS_PINNED`]: the pin state of the current mapping's pages.
    pub flags: u32,
    /// Must be 0.
    pub reserved: u32,
}

/// `STATS` result, for the current attachment (all zero when detached).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImporterStats {
    /// `invalidate_mappings` callbacks received.
    pub invalidations: u64,
    /// `dma_buf_map_attachment` calls that succeeded.
    pub maps: u64,
    /// Of those, maps that replaced a mapping made stale by an invalidation.
    pub remaps: u64,
    /// Size of the attached dma-buf in bytes.
    pub size: u64,
    /// 1 while attached.
    pub attached: u32,
    /// 1 while a mapping exists (stale or not).
    pub mapped: u32,
    /// 1 when the mapping was invalidated and not yet replaced.
    pub stale: u32,
    /// 1 for a dynamic attachment.
    pub dynamic: u32,
    /// 1 while the file holds a vmap of the buffer.
    pub vmapped: u32,
    /// Always 0.
    pub reserved: u32,
}

/// `_IOW('i', 1, ImporterAttach)`.
pub const IMPORTER_ATTACH: u32 = iow::<ImporterAttach>(IMPORTER_IOCTL_TYPE, 1);
/// `_IOR('i', 2, ImporterMap)`: (re)map; any existing mapping is
/// unmapped first, so every call measures a fresh `dma_buf_map_attachment`.
pub const IMPORTER_MAP: u32 = ior::<ImporterMap>(IMPORTER_IOCTL_TYPE, 2);
/// `_IOW('i', 3, ImporterRead)`: maps first if unmapped or stale.
pub const IMPORTER_READ: u32 = iow::<ImporterRead>(IMPORTER_IOCTL_TYPE, 3);
/// `_IOR('i', 4, ImporterStats)`.
pub const IMPORTER_STATS: u32 = ior::<ImporterStats>(IMPORTER_IOCTL_TYPE, 4);
/// `_IO('i', 5)`: vunmap, unmap, detach and drop the dma-buf reference (closing does
/// the same).
pub const IMPORTER_DETACH: u32 = io(IMPORTER_IOCTL_TYPE, 5);
/// `_IOW('i', 6, ImporterPfns)`: maps first if unmapped or stale.
pub const IMPORTER_PFNS: u32 = iow::<ImporterPfns>(IMPORTER_IOCTL_TYPE, 6);
/// `_IO('i', 7)`: `dma_buf_vmap` the attached buffer (whole, in kernel address space), as
/// a driver that reads its imports with the CPU does. The exporter keeps the vmapped
/// pages until VUNMAP, DETACH or close.
pub const IMPORTER_VMAP: u32 = io(IMPORTER_IOCTL_TYPE, 7);
/// `_IO('i', 8)`: `dma_buf_vunmap` the file's vmap.
pub const IMPORTER_VUNMAP: u32 = io(IMPORTER_IOCTL_TYPE, 8);
/// `_IOW('i', 9, ImporterRead)`: copy bytes through the vmap (no CPU-access bracket: it
/// shows the vmapped pages as they are).
pub const IMPORTER_VREAD: u32 = iow::<ImporterRead>(IMPORTER_IOCTL_TYPE, 9);
