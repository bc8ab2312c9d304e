// SPDX-License-Identifier: GPL-2.0
//! The importer's own `struct device` (its misc device's, held as the kernel's counted
//! `ARef<Device>`), the device it attaches to dma-bufs and DMA-maps them for.

use crate::ffi;
use kernel::{bindings, device::Device, error::to_result, prelude::*};

/// The `struct device` behind `dev`.
pub(super) fn raw(dev: &Device) -> *mut bindings::device {
    // `Device` is a transparent wrapper of `struct device`.
    core::ptr::from_ref(dev).cast_mut().cast()
}

/// Make `dev` a DMA-mapping target: a 64-bit mask and segments of any size.
pub(crate) fn set_up_dma(dev: &Device) -> Result {
    // SAFETY: `dev` is a live device (a reference to it is held for the call).
    to_result(unsafe { ffi::ulimp_dma_set_mask_64(raw(dev)) })
}
