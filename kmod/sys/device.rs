// SPDX-License-Identifier: GPL-2.0
//! A counted reference to a `struct device`, for DMA mapping on behalf of the CPU.

use core::ptr::NonNull;
use kernel::{bindings, prelude::*};

/// A `struct device` we hold a reference on.
///
/// # Invariants
/// `ptr` points to a live device on which this object owns one `get_device` reference.
pub(crate) struct DeviceRef {
    ptr: NonNull<bindings::device>,
}

// SAFETY: device references may be taken and dropped on any thread.
unsafe impl Send for DeviceRef {}
// SAFETY: the wrapper only hands out the pointer; the device itself is thread safe.
unsafe impl Sync for DeviceRef {}

impl DeviceRef {
    /// The device of a registered misc device (its DMA mask is set at registration).
    pub(crate) fn of_misc(misc: *mut bindings::miscdevice) -> Result<Self> {
        // SAFETY: `misc` comes from a live `MiscDeviceRegistration`, whose `this_device`
        // is set by misc_register() and stays valid until deregistration.
        let dev = unsafe { (*misc).this_device };
        let ptr = NonNull::new(dev).ok_or(ENODEV)?;
        // SAFETY: `dev` is valid; the reference is released in `Drop`.
        unsafe { bindings::get_device(dev) };
        // INVARIANT: we took a reference just above.
        Ok(Self { ptr })
    }
}

impl Drop for DeviceRef {
    fn drop(&mut self) {
        // SAFETY: by the type invariant we own one reference.
        unsafe { bindings::put_device(self.ptr.as_ptr()) };
    }
}

impl DeviceRef {
    /// The device as a DMA-mapping target.
    pub(crate) fn dma_device(&self) -> super::sgt::DmaDevice {
        // INVARIANT: the reference we hold keeps the device valid while we live; the
        // owner drops its mapped tables before this reference.
        super::sgt::DmaDevice(self.ptr)
    }
}
