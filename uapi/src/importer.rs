// SPDX-License-Identifier: GPL-2.0
//! The ABI of `ulive_importer`, the TEST importer module in `selftests/importer/`. It
//! attaches to any dma-buf fd (ours or the kernel's udmabuf) from its own misc device
//! `/dev/ulive-importer`, maps it the way a device driver would, and reports what it
//! sees. It is a test tool, not part of the udmabuf uapi.
//!
//! Like `abi.rs`, this file is `no_std` and dependency-free: the crate exports it as
//! `udmabuf_live_uapi::importer`, and the importer module compiles the same file with a
//! `#[path]` include. It uses the `_IOC` helpers of `abi.rs` through `super::`, so an
//! includer must have `io`, `ior` and `iow` in scope at its parent module.
//!
//! One open file of `/dev/ulive-importer` holds at most one attachment. Every ioctl
//! returns 0 on success (READ: the number of bytes copied) or -1 with errno:
//! - ENXIO: MAP, READ or DETACH without an attachment;
//! - EBUSY: ATTACH while already attached;
//! - EBADF / EINVAL: ATTACH with a closed fd / with an fd that is not a dma-buf, or
//!   with `dynamic` other than 0 or 1;
//! - EINVAL: READ starting past the end of the buffer;
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

/// `READ` argument: copy `len` bytes at `offset` of the buffer, as the importer's
/// mapping sees them, to the user buffer at `user_ptr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImporterRead {
    pub offset: u64,
    pub len: u64,
    pub user_ptr: u64,
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
/// `_IO('i', 5)`: unmap, detach and drop the dma-buf reference (closing does the same).
pub const IMPORTER_DETACH: u32 = io(IMPORTER_IOCTL_TYPE, 5);
