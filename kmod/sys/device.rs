// SPDX-License-Identifier: GPL-2.0
//! The misc device as a DMA-mapping target, held with the kernel's own counted device
//! reference (`ARef<Device>`, from `miscdev::Misc::device`).

use super::ffi;
use kernel::{bindings, device::Device, error::to_result, prelude::*, sync::aref::ARef};

/// The `struct device` behind `dev`.
fn raw(dev: &Device) -> *mut bindings::device {
    // `Device` is a transparent wrapper of `struct device`.
    core::ptr::from_ref(dev).cast_mut().cast()
}

/// Give the misc device a 64-bit DMA mask: it DMA-maps for CPU access
/// (begin/end_cpu_access), as upstream's does. Once, at registration, not at every CREATE.
pub(crate) fn set_dma_mask_64(dev: &Device) -> Result {
    // SAFETY: `dev` is a live device (a reference to it is held for the call).
    to_result(unsafe { ffi::ulive_dma_set_mask_64(raw(dev)) })
}

/// `dev` as a DMA-mapping target.
pub(crate) fn dma_device(dev: &ARef<Device>) -> super::sgt::DmaDevice {
    // INVARIANT: the owner of the ARef keeps the device valid while tables made for it
    // live (the buffer drops its mapped tables before its device reference).
    super::sgt::DmaDevice(core::ptr::NonNull::from(dev.as_ref()).cast())
}
