// SPDX-License-Identifier: GPL-2.0
//! The misc device registration. One source for the module and the test importer
//! (selftests/importer compiles this file too, with `#[path]`, as both compile
//! `uapi/src/abi.rs`): it uses nothing but the `kernel` crate.
//!
//! Why not `kernel::miscdevice`: in 7.2 its `file_operations` has no `owner`, so the
//! module could be unloaded while its device is open, and an ioctl (or the importer's
//! `invalidate_mappings`, which an attachment keeps) would then run freed code. Upstream
//! udmabuf sets `.owner = THIS_MODULE`, which makes the VFS hold a module reference for
//! every open file; this registration does the same.
//!
//! A device either keeps state per open file (the importer: its attachment) or has its
//! files share the device (the module: `MiscDevice::File = ()`, nothing allocated at
//! open).

use core::marker::PhantomPinned;
use kernel::{
    bindings,
    device::Device,
    error::{from_result, to_result},
    ffi::{c_int, c_long, c_uint, c_ulong},
    prelude::*,
    sync::aref::ARef,
    types::{ForeignOwnable, Opaque},
    ThisModule,
};

/// What a misc device does: the registration's handler, shared by every open file.
pub(crate) trait MiscDevice: Send + Sync + Sized + 'static {
    /// The state of one open file, kept in `file->private_data` from open to release
    /// (`()`: the files have none of their own).
    type File: ForeignOwnable + Send + Sync;

    /// Set the device up, once, right after `misc_register()` (a DMA mask, ...); an
    /// error undoes the registration.
    fn registered(dev: &Device) -> Result;

    /// A file is being opened on the device.
    fn open(&self, misc: &Misc) -> Result<Self::File>;

    /// An ioctl on an open file. Returns the (non-negative) value the syscall returns.
    fn ioctl(
        &self,
        file: <Self::File as ForeignOwnable>::Borrowed<'_>,
        misc: &Misc,
        cmd: u32,
        arg: usize,
    ) -> Result<isize>;
}

/// The registered misc device, as a file operation sees it.
///
/// # Invariants
/// `0` is a registered miscdevice, valid for the duration of the file operation.
pub(crate) struct Misc(*mut bindings::miscdevice);

impl Misc {
    /// A counted reference to the device behind `/dev/NAME` (set up by
    /// [`MiscDevice::registered`]).
    pub(crate) fn device(&self) -> Result<ARef<Device>> {
        // SAFETY: the miscdevice is registered (type invariant), so `this_device` was set
        // by misc_register() and stays valid until deregistration.
        let dev = unsafe { (*self.0).this_device };
        if dev.is_null() {
            return Err(ENODEV);
        }
        // SAFETY: `dev` is a valid, non-null device; `get_device` takes the reference the
        // returned ARef owns.
        Ok(unsafe { Device::get_device(dev) })
    }
}

/// A misc device whose file operations belong to this module.
///
/// # Invariants
/// `misc` is registered with `misc_register()` and points at `fops`, from a successful
/// `register` until drop, which deregisters it exactly once. `fops.owner` is the module
/// that made the registration. [`MiscDevice::registered`] succeeded on its device.
#[pin_data(PinnedDrop)]
pub(crate) struct MiscRegistration<T: MiscDevice> {
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
unsafe impl<T: MiscDevice> Send for MiscRegistration<T> {}
// SAFETY: `&self` only reaches the handler (Sync) and the registered device.
unsafe impl<T: MiscDevice> Sync for MiscRegistration<T> {}

impl<T: MiscDevice> MiscRegistration<T> {
    /// Register `/dev/NAME` with `handler`; `module` (the caller's, from its init) owns
    /// the file operations.
    pub(crate) fn register(
        name: &'static CStr,
        handler: T,
        module: &'static ThisModule,
    ) -> impl PinInit<Self, Error> {
        try_pin_init!(&this in Self {
            handler,
            fops <- Opaque::ffi_init(|slot: *mut bindings::file_operations| {
                let mut fops: bindings::file_operations = pin_init::zeroed();
                fops.owner = module.as_ptr();
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
                // SAFETY: `slot` is a filled, pinned miscdevice; drop deregisters it.
                to_result(unsafe { bindings::misc_register(slot) })?;
                // SAFETY: misc_register() succeeded, so `this_device` is a live device
                // until misc_deregister().
                let dev = unsafe { Device::from_raw((*slot).this_device) };
                if let Err(e) = T::registered(dev) {
                    // SAFETY: registered just above and not yet published to anyone; on
                    // this error drop never runs.
                    unsafe { bindings::misc_deregister(slot) };
                    return Err(e);
                }
                // INVARIANT: the device is registered with our fops and set up.
                Ok(())
            }),
            _pin: PhantomPinned,
        })
    }

    /// The registration whose device `file` is open on.
    ///
    /// # Safety
    /// `file` is a file opened on a registration of this type, not yet released.
    unsafe fn of_file<'a>(file: *mut bindings::file) -> &'a Self {
        // SAFETY: misc_open() replaced the file's operations with the miscdevice's, our
        // `fops` field (caller: the file is open on this registration).
        let fops = unsafe { (*file).f_op }.cast::<Opaque<bindings::file_operations>>();
        // SAFETY: `fops` is the `fops` field of a live registration: the open file holds
        // a reference on the module (fops.owner), so the registration is not dropped
        // before the file is released.
        unsafe { &*kernel::container_of!(fops, Self, fops) }
    }

    /// # Safety
    /// Called by the VFS only, for a file being opened on this misc device.
    unsafe extern "C" fn open(_inode: *mut bindings::inode, file: *mut bindings::file) -> c_int {
        // SAFETY: the VFS opens `file` on our device (function contract).
        let this = unsafe { Self::of_file(file) };
        // INVARIANT: the registration is live while its file is being opened.
        let misc = Misc(this.misc.get());
        from_result(|| {
            let state = this.handler.open(&misc)?;
            // SAFETY: `file` is being opened: nothing else uses private_data (misc_open()
            // stored the miscdevice there, which nothing reads after this). Release takes
            // the state back.
            unsafe { (*file).private_data = state.into_foreign() };
            Ok(0)
        })
    }

    /// # Safety
    /// Called by the VFS only, once, for a file opened on this misc device.
    unsafe extern "C" fn release(_inode: *mut bindings::inode, file: *mut bindings::file) -> c_int {
        // SAFETY: `open` stored a `T::File` in private_data; release is the last file
        // operation, so it is taken back exactly once.
        drop(unsafe { T::File::from_foreign((*file).private_data) });
        0
    }

    /// # Safety
    /// Called by the VFS only, with a file opened on this misc device.
    unsafe extern "C" fn ioctl(file: *mut bindings::file, cmd: c_uint, arg: c_ulong) -> c_long {
        // SAFETY: the VFS calls us for a file open on our device (function contract).
        let this = unsafe { Self::of_file(file) };
        // SAFETY: `open` stored a `T::File` in private_data; it stays until release,
        // which cannot run concurrently with an ioctl on the same file.
        let state = unsafe { T::File::borrow((*file).private_data) };
        // INVARIANT: the registration is live while its file is open (see `of_file`).
        let misc = Misc(this.misc.get());
        match this.handler.ioctl(state, &misc, cmd, arg) {
            Ok(v) => v as c_long,
            Err(e) => e.to_errno() as c_long,
        }
    }
}

#[pinned_drop]
impl<T: MiscDevice> PinnedDrop for MiscRegistration<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: registered by the type invariant; deregistered once, here.
        unsafe { bindings::misc_deregister(self.misc.get()) };
    }
}
