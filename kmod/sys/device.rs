// SPDX-License-Identifier: GPL-2.0
//! The misc device as a DMA-mapping target, held with the kernel's own counted device
//! reference (`ARef<Device>`).

use kernel::{bindings, device::Device, prelude::*, sync::aref::ARef};

/// The device of a registered misc device, with a reference (its DMA mask is set at
/// registration).
pub(crate) fn of_misc(misc: *mut bindings::miscdevice) -> Result<ARef<Device>> {
    // SAFETY: `misc` comes from a live `MiscRegistration`, whose `this_device` is set by
    // misc_register() and stays valid until deregistration.
    let dev = unsafe { (*misc).this_device };
    if dev.is_null() {
        return Err(ENODEV);
    }
    // SAFETY: `dev` is a valid, non-null device; `get_device` takes the reference the
    // returned ARef owns.
    Ok(unsafe { Device::get_device(dev) })
}

/// `dev` as a DMA-mapping target.
pub(crate) fn dma_device(dev: &ARef<Device>) -> super::sgt::DmaDevice {
    // INVARIANT: the owner of the ARef keeps the device valid while tables made for it
    // live (the buffer drops its mapped tables before its device reference).
    super::sgt::DmaDevice(core::ptr::NonNull::from(dev.as_ref()).cast())
}
