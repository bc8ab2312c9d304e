// SPDX-License-Identifier: GPL-2.0
//! The misc device registration, with per-open-file state.
//!
//! Why not `kernel::miscdevice`: in 7.2 its `file_operations` has no `owner`, so the
//! module could be unloaded while `/dev/ulive-importer` is open (an attachment holds
//! our `invalidate_mappings` callback, so that would be a use after free in the
//! exporter). With `.owner = THIS_MODULE` the VFS holds a module reference for every
//! open file.

use super::device::DeviceRef;
use crate::ffi;
use core::marker::PhantomPinned;
use kernel::{
    bindings,
    error::{from_result, to_result},
    ffi::{c_int, c_long, c_uint, c_ulong},
    prelude::*,
    types::{ForeignOwnable, Opaque},
};

/// The state of one open file of the device.
pub(crate) trait MiscFile: Send + Sync + Sized + 'static {
    /// A new open file; `dev` is the device behind `/dev/NAME` (64-bit DMA mask).
    fn open(dev: DeviceRef) -> impl PinInit<Self, Error>;
    /// An ioctl on this file. Returns the (non-negative) value the syscall returns.
    fn ioctl(this: Pin<&Self>, cmd: u32, arg: usize) -> Result<isize>;
}

/// A misc device whose file operations belong to this module. Each open file owns a
/// `Pin<KBox<T>>` in `file->private_data`, dropped on release.
///
/// # Invariants
/// `misc` is registered with `misc_register()` and points at `fops`, from a successful
/// `register` until drop, which deregisters it exactly once. Its `this_device` has a
/// 64-bit DMA mask.
#[pin_data(PinnedDrop)]
pub(crate) struct MiscRegistration<T: MiscFile> {
    #[pin]
    fops: Opaque<bindings::file_operations>,
    #[pin]
    misc: Opaque<bindings::miscdevice>,
    #[pin]
    _pin: PhantomPinned,
    _file: core::marker::PhantomData<T>,
}

// SAFETY: registration and deregistration may happen on different threads.
unsafe impl<T: MiscFile> Send for MiscRegistration<T> {}
// SAFETY: `&self` gives access to nothing but the registered device.
unsafe impl<T: MiscFile> Sync for MiscRegistration<T> {}

impl<T: MiscFile> MiscRegistration<T> {
    pub(crate) fn register(name: &'static CStr) -> impl PinInit<Self, Error> {
        try_pin_init!(&this in Self {
            fops <- Opaque::ffi_init(|slot: *mut bindings::file_operations| {
                let mut fops: bindings::file_operations = pin_init::zeroed();
                // SAFETY: returns THIS_MODULE; no preconditions.
                fops.owner = unsafe { ffi::ulimp_this_module() };
                fops.open = Some(Self::open);
                fops.release = Some(Self::release);
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
                // SAFETY: `slot` is a filled, pinned miscdevice.
                to_result(unsafe { bindings::misc_register(slot) })?;
                // SAFETY: misc_register() succeeded and set `this_device`, valid until
                // misc_deregister().
                let ret = unsafe { ffi::ulimp_dma_set_mask_64((*slot).this_device) };
                if let Err(e) = to_result(ret) {
                    // SAFETY: registered just above; the error means drop never runs.
                    unsafe { bindings::misc_deregister(slot) };
                    return Err(e);
                }
                // INVARIANT: registered with our fops, with a 64-bit DMA mask.
                Ok(())
            }),
            _pin: PhantomPinned,
            _file: core::marker::PhantomData,
        })
    }

    /// # Safety
    /// Called by the VFS only, for a file being opened on this misc device.
    unsafe extern "C" fn open(_inode: *mut bindings::inode, file: *mut bindings::file) -> c_int {
        // SAFETY: misc_open() stored our miscdevice in private_data before calling us.
        let misc = unsafe { (*file).private_data }.cast::<bindings::miscdevice>();
        from_result(|| {
            // SAFETY: the miscdevice is registered (the open file pins this module and so
            // the registration); its `this_device` is live until deregistration.
            let dev = unsafe { DeviceRef::get((*misc).this_device)? };
            let state = KBox::pin_init(T::open(dev), GFP_KERNEL)?;
            // SAFETY: `file` is being opened; nobody else uses private_data yet. Release
            // takes the state back.
            unsafe { (*file).private_data = state.into_foreign() };
            Ok(0)
        })
    }

    /// # Safety
    /// Called by the VFS only, once, for a file opened on this misc device.
    unsafe extern "C" fn release(_inode: *mut bindings::inode, file: *mut bindings::file) -> c_int {
        // SAFETY: `open` stored a `Pin<KBox<T>>` in private_data; release is the last
        // file operation, so it is taken back exactly once.
        drop(unsafe { <Pin<KBox<T>> as ForeignOwnable>::from_foreign((*file).private_data) });
        0
    }

    /// # Safety
    /// Called by the VFS only, with a file opened on this misc device.
    unsafe extern "C" fn ioctl(file: *mut bindings::file, cmd: c_uint, arg: c_ulong) -> c_long {
        // SAFETY: `open` stored a `Pin<KBox<T>>` in private_data; it stays until release,
        // which cannot run concurrently with an ioctl on the same file.
        let this = unsafe { <Pin<KBox<T>> as ForeignOwnable>::borrow((*file).private_data) };
        match T::ioctl(this, cmd, arg) {
            Ok(v) => v as c_long,
            Err(e) => e.to_errno() as c_long,
        }
    }
}

#[pinned_drop]
impl<T: MiscFile> PinnedDrop for MiscRegistration<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: registered by the type invariant; deregistered once, here.
        unsafe { bindings::misc_deregister(self.misc.get()) };
    }
}
