// SPDX-License-Identifier: GPL-2.0
//! The unsafe layer: thin safe wrappers over the C APIs the importer uses. Nothing above
//! this module contains `unsafe`.
//!
//! - `device`:  the importer's `struct device` as a DMA-mapping target.
//! - `dmabuf`:  a dma-buf reference, a static or dynamic attachment, the reservation
//!   lock, and the mapping (DMA segments, CPU pages) and vmap made under it.
//! - `miscdev`: the misc device registration (with `fops.owner`) and per-file state:
//!   the module's `kmod/sys/miscdev.rs`, compiled here too.

pub(crate) mod device;
pub(crate) mod dmabuf;
#[path = "../../../kmod/sys/miscdev.rs"]
pub(crate) mod miscdev;

/// `PAGE_SHIFT` and `PAGE_SIZE` of the running kernel.
pub(crate) const PAGE_SHIFT: u32 = kernel::bindings::PAGE_SHIFT;
pub(crate) const PAGE_SIZE: usize = 1 << PAGE_SHIFT;

use crate::abi::{ImporterAttach, ImporterMap, ImporterPfns, ImporterRead, ImporterStats};
use kernel::transmute::{AsBytes, FromBytes};

// SAFETY: the ABI structs are `repr(C)` and made only of integers, without padding
// (checked by abi/tests/importer_abi.rs): every bit pattern is valid.
unsafe impl FromBytes for ImporterAttach {}
// SAFETY: as above.
unsafe impl FromBytes for ImporterRead {}
// SAFETY: as above.
unsafe impl FromBytes for ImporterPfns {}
// SAFETY: as above; no padding, so every byte is initialised.
unsafe impl AsBytes for ImporterMap {}
// SAFETY: as above.
unsafe impl AsBytes for ImporterStats {}
