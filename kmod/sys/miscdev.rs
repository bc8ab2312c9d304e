// SPDX-License-Identifier: GPL-2.0
//! The misc device registration.
//!
//! Why not `kernel::miscdevice`: in 7.2 its `file_operations` has no `owner`, so the
//! module could be unloaded while `/dev/udmabuf-live` is open and an ioctl would then run
//! freed code. Upstream udmabuf sets `.owner = THIS_MODULE`, which makes the VFS hold a
//! module reference for every open file; this registration does the same.

use super::ffi;
use core::marker::PhantomPinned;
use kernel::{
    bindings,
    error::to_result,
    ffi::{c_long, c_uint, c_ulong},
    prelude::*,
    types::Opaque,
};

/// Answers the ioctls of a misc device; shared by every open file.
pub(crate) trait IoctlHandler: Send + Sync + Sized + 'static {
    fn ioctl(&self, misc: &Misc, cmd: u32, arg: usize) -> Result<isize>;
}

/// The registered misc device, as an ioctl sees it.
///
/// # Invariants
/// `0` is a registered miscdevice, valid for the duration of the ioctl.
pub(crate) struct Misc(*mut bindings::miscdevice);

impl Misc {
    /// A counted reference to the device behind `/dev/NAME` (64-bit DMA mask, set at
    /// registration).
    pub(crate) fn device(&self) -> Result<kernel::sync::aref::ARef<kernel::device::Device>> {
        super::device::of_misc(self.0)
    }
}

/// A misc device whose file operations belong to this module.
///
/// # Invariants
/// `misc` is registered with `misc_register()` and points at `fops`, from a successful
/// `register` until drop, which deregisters it exactly once.
#[pin_data(PinnedDrop)]
pub(crate) struct MiscRegistration<T: IoctlHandler> {
    handler: T,
    #[pin]
    fops: Opaque<bindings::file_operations>,
    #[pin]
    misc: Opaque<bindings::miscdevice>,
    #[pin]
    _pin: PhantomPinned,
}

// SAFETY: registration and deregistration may happen on different threads; the handler
// is Send + Sync.
unsafe impl<T: IoctlHandler> Send for MiscRegistration<T> {}
// SAFETY: `&self` only reaches the handler (Sync) and the registered device.
unsafe impl<T: IoctlHandler> Sync for MiscRegistration<T> {}

impl<T: IoctlHandler> MiscRegistration<T> {
    pub(crate) fn register(name: &'static CStr, handler: T) -> impl PinInit<Self, Error> {
        try_pin_init!(&this in Self {
            handler,
            fops <- Opaque::ffi_init(|slot: *mut bindings::file_operations| {
                let mut fops: bindings::file_operations = pin_init::zeroed();
                // SAFETY: returns THIS_MODULE; no preconditions.
                fops.owner = unsafe { ffi::ulive_this_module() };
                fops.unlocked_ioctl = Some(Self::ioctl);
                #[cfg(CONFIG_COMPAT)]
                {
                    fops.compat_ioctl = Some(bindings::compat_ptr_ioctl);
                }
                // SAFETY: the initializer may write the slot.
                unsafe { slot.write(fops) };
            }),
            misc <- Opaque::try_ffi_init(move |slot: *mut bindings::miscdevice| {
                let mut misc: bindings::miscdevice = pin_init::zeroed();
                misc.minor = bindings::MISC_DYNAMIC_MINOR as kernel::ffi::c_int;
                misc.name = name.as_char_ptr();
                // SAFETY: `this` is the pinned struct being initialised; `fops` was
                // initialised above and lives (pinned) as long as the registration.
                misc.fops = unsafe { Opaque::cast_into(&raw const (*this.as_ptr()).fops) };
                // SAFETY: the initializer may write the slot.
                unsafe { slot.write(misc) };
                // SAFETY: `slot` is a filled, pinned miscdevice; drop deregisters it.
                to_result(unsafe { bindings::misc_register(slot) })?;
                // The device DMA-maps for CPU access (begin/end_cpu_access), as upstream's
                // does: give it a 64-bit mask once, here, not at every CREATE.
                // SAFETY: misc_register() succeeded, so `this_device` is a live device.
                if let Err(e) = to_result(unsafe { ffi::ulive_dma_set_mask_64((*slot).this_device) }) {
                    // SAFETY: registered just above and not yet published to anyone.
                    unsafe { bindings::misc_deregister(slot) };
                    return Err(e);
                }
                // INVARIANT: the device is registered with our fops.
                Ok(())
            }),
            _pin: PhantomPinned,
        })
    }

    /// # Safety
    /// Called by the VFS only, with a file opened on this misc device.
    unsafe extern "C" fn ioctl(file: *mut bindings::file, cmd: c_uint, arg: c_ulong) -> c_long {
        // SAFETY: misc_open() stored our miscdevice in private_data before any ioctl.
        let misc = unsafe { (*file).private_data } as *const Opaque<bindings::miscdevice>;
        // SAFETY: `misc` is the `misc` field of a live registration: the open file holds a
        // module reference (fops.owner), so the registration cannot be dropped meanwhile.
        let this = unsafe { &*kernel::container_of!(misc, Self, misc) };
        // INVARIANT: the registration is live (see above).
        match this.handler.ioctl(&Misc(this.misc.get()), cmd, arg) {
            Ok(v) => v as c_long,
            Err(e) => e.to_errno() as c_long,
        }
    }
}

#[pinned_drop]
impl<T: IoctlHandler> PinnedDrop for MiscRegistration<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: registered by the type invariant; deregistered once, here.
        unsafe { bindings::misc_deregister(self.misc.get()) };
    }
}
