// SPDX-License-Identifier: GPL-2.0
//! The unsafe layer: thin safe wrappers over the C APIs the driver uses, as rust/kernel is
//! for nova-core. Nothing above this module contains `unsafe`: the crate root denies it in
//! every other module.
//!
//! - `ffi`:    the declarations of the C glue (private to this layer).
//! - `params`: the module parameters.
//! - `memfd`:  `MemFile` (an fget() reference), the inode lock, seals, `memfd_pin_folios`.
//! - `memlock`: charging pinned pages to the creating user's RLIMIT_MEMLOCK.
//! - `memcg`:  the creator's memory cgroup, for pages brought in on its behalf.
//! - `folio`:  `PinnedPages`, the page array of a buffer with the folio pins behind it.
//! - `sgt`:    `MappedSgTable`, an sg_table built from pinned pages and DMA-mapped.
//! - `dmabuf`: exporting a dma-buf whose ops call an [`dmabuf::Exporter`] implementation.
//! - `vm`:     CPU mappings of a buffer: the mmap fault handler and vmap.
//! - `device`: the misc device's DMA mask, and the device as a DMA-mapping target.
//! - `notifier`: mmu interval notifiers on user mappings of a memfd.
//! - `wq`:     the module's own workqueue.
//! - `miscdev`: the misc device registration (with `fops.owner`, unlike kernel::miscdevice);
//!   the test importer compiles the same file.

pub(crate) mod device;
pub(crate) mod dmabuf;
mod ffi;
pub(crate) mod folio;
pub(crate) mod memcg;
pub(crate) mod memfd;
pub(crate) mod memlock;
pub(crate) mod miscdev;
pub(crate) mod notifier;
pub(crate) mod params;
pub(crate) mod sgt;
pub(crate) mod vm;
pub(crate) mod wq;

/// `PAGE_SIZE` / `PAGE_SHIFT` of the running kernel.
pub(crate) const PAGE_SHIFT: usize = kernel::bindings::PAGE_SHIFT as usize;
pub(crate) const PAGE_SIZE: usize = 1 << PAGE_SHIFT;

use crate::uapi::{
    UdmabufCreate, UdmabufCreateItem, UdmabufCreateList, UdmabufLiveInfo, UdmabufLivePfns,
    UdmabufLiveSync, UdmabufLiveVerify,
};
use kernel::transmute::{AsBytes, FromBytes};

/// Does the calling task have CAP_SYS_ADMIN (in the initial user namespace)?
pub(crate) fn capable_sys_admin() -> bool {
    // SAFETY: capable() has no preconditions.
    unsafe { kernel::bindings::capable(kernel::bindings::CAP_SYS_ADMIN as i32) }
}

// SAFETY: the uapi structs are `repr(C)` and made only of integers, without padding
// (checked against the C header by uapi/tests/c_header.rs): every bit pattern is valid.
unsafe impl FromBytes for UdmabufCreate {}
// SAFETY: as above.
unsafe impl FromBytes for UdmabufCreateItem {}
// SAFETY: as above.
unsafe impl FromBytes for UdmabufCreateList {}
// SAFETY: as above.
unsafe impl FromBytes for UdmabufLiveInfo {}
// SAFETY: as above.
unsafe impl FromBytes for UdmabufLiveSync {}
// SAFETY: as above.
unsafe impl FromBytes for UdmabufLiveVerify {}
// SAFETY: as above.
unsafe impl FromBytes for UdmabufLivePfns {}
// SAFETY: integers only, no padding (see above): every byte is initialised.
unsafe impl AsBytes for UdmabufLiveInfo {}
// SAFETY: as above.
unsafe impl AsBytes for UdmabufLiveVerify {}
