// SPDX-License-Identifier: GPL-2.0
//! A counted reference to the importer's own `struct device`, the device it attaches
//! to dma-bufs and DMA-maps them for.

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
    /// Take a reference on `dev`.
    ///
    /// # Safety
    /// `dev` must be null or point to a live device.
    pub(super) unsafe fn get(dev: *mut bindings::device) -> Result<Self> {
        let ptr = NonNull::new(dev).ok_or(ENODEV)?;
        // SAFETY: `dev` is a live device (caller); the reference is released in `Drop`.
        unsafe { bindings::get_device(dev) };
        // INVARIANT: we took a reference just above.
        Ok(Self { ptr })
    }

    /// Another reference on the same device.
    pub(crate) fn clone_ref(&self) -> Self {
        // SAFETY: the device is live: we hold a reference on it (type invariant).
        unsafe { bindings::get_device(self.ptr.as_ptr()) };
        // INVARIANT: we took a reference just above.
        Self { ptr: self.ptr }
    }

    pub(super) fn as_ptr(&self) -> *mut bindings::device {
        self.ptr.as_ptr()
    }
}

impl Drop for DeviceRef {
    fn drop(&mut self) {
        // SAFETY: by the type invariant we own one reference.
        unsafe { bindings::put_device(self.ptr.as_ptr()) };
    }
}
