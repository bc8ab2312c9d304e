// SPDX-License-Identifier: GPL-2.0
//! Exporting dma-bufs. The driver implements [`Exporter`]; this file builds the
//! `dma_buf_ops` table whose C callbacks forward to it, and owns the `priv` pointer
//! (an `Arc<T>` released by the `release` op).

use super::ffi;
use super::sgt::{Direction, DmaDevice, MappedSgTable};
use super::vm::{Fault, FaultResult, VMapAddr, VmOps};
use core::marker::PhantomData;
use core::ptr::NonNull;
use kernel::{
    bindings,
    error::from_result,
    error::to_result,
    ffi::c_int,
    new_mutex,
    prelude::*,
    sync::{Arc, Mutex},
};

/// What the dma-buf core asks of an exporter. Locking, as the core calls it (7.2):
/// `pin`, `unpin`, `map`, `unmap`, `vmap`, `vunmap` run with the reservation lock
/// held (they get a [`ResvLocked`] to prove it); `begin/end_cpu_access`, `mmap`,
/// `fault` and `release` without it.
pub(crate) trait Exporter: Send + Sync + Sized + 'static {
    /// The ops table of this exporter type: a `static` made with [`DmaBufOps::of`].
    /// Our dma-bufs are told apart from others by its address, and only a static has
    /// exactly one.
    const OPS: &'static DmaBufOps;
    /// Where the exported dma-buf is published for code that runs outside the core's
    /// callbacks (a worker). Filled at export, emptied at release.
    fn slot(&self) -> &DmaBufSlot;
    /// The dma-buf is being freed: drop what could still call into it. Runs before
    /// the slot is emptied and the exporter's `Arc` is dropped.
    fn release(&self);
    /// The slot is empty now (no worker can be using the dma-buf): free what only the
    /// dma-buf needed. Runs right before the exporter's `Arc` is dropped.
    fn released(&self) {}
    fn pin(&self, resv: &ResvLocked<'_>, att: &Attachment<'_>) -> Result;
    fn unpin(&self, resv: &ResvLocked<'_>, att: &Attachment<'_>);
    fn map(
        &self,
        resv: &ResvLocked<'_>,
        att: &Attachment<'_>,
        dir: Direction,
    ) -> Result<MappedSgTable>;
    fn unmap(&self, _resv: &ResvLocked<'_>, _att: &Attachment<'_>, sgt: MappedSgTable) {
        drop(sgt);
    }
    fn begin_cpu_access(&self, dir: Direction) -> Result;
    fn end_cpu_access(&self, dir: Direction) -> Result;
    /// May this mmap go ahead? `shared` tells whether it is a MAP_SHARED mapping.
    fn mmap(&self, shared: bool) -> Result;
    fn fault(&self, fault: &Fault) -> FaultResult;
    fn vmap(&self, resv: &ResvLocked<'_>) -> Result<VMapAddr>;
    fn vunmap(&self, resv: &ResvLocked<'_>, addr: VMapAddr);
}

/// Proof that the reservation lock of one of our dma-bufs is held, and what may be done
/// under it.
///
/// # Invariants
/// `dmabuf` is live and its reservation lock is held for `'a`.
pub(crate) struct ResvLocked<'a> {
    dmabuf: NonNull<bindings::dma_buf>,
    _lock: PhantomData<&'a ()>,
}

impl ResvLocked<'_> {
    /// # Safety
    /// `dmabuf` must be live with its reservation lock held while the result is used.
    unsafe fn new(dmabuf: *mut bindings::dma_buf) -> Self {
        // SAFETY: live per the contract; lockdep checks the claim.
        unsafe { ffi::ulive_dma_buf_assert_locked(dmabuf) };
        // SAFETY: non-null per the contract.
        let dmabuf = unsafe { NonNull::new_unchecked(dmabuf) };
        Self {
            dmabuf,
            _lock: PhantomData,
        }
    }

    /// Tell dynamic importers their mappings are invalid (they unmap and map again).
    pub(crate) fn invalidate_mappings(&self) {
        // SAFETY: live with its reservation lock held (type invariant), as required.
        unsafe { bindings::dma_buf_invalidate_mappings(self.dmabuf.as_ptr()) };
    }

    /// Zap CPU mmaps of the dma-buf over bytes `start..start+len`: the next access
    /// faults and maps whatever page the buffer holds then.
    pub(crate) fn zap_cpu_mappings(&self, start: usize, len: usize) {
        // SAFETY: the dma-buf and its file are live (type invariant).
        unsafe { ffi::ulive_dma_buf_zap(self.dmabuf.as_ptr(), start as i64, len as i64) };
    }

    /// Wait up to `timeout_ms` until every fence on the reservation object has
    /// signalled: `Ok(true)` when idle, `Ok(false)` on timeout.
    pub(crate) fn wait_idle(&self, timeout_ms: u32) -> Result<bool> {
        let jiffies = kernel::time::msecs_to_jiffies(timeout_ms);
        // SAFETY: live (type invariant); waiting under the resv lock is allowed.
        let r = unsafe {
            bindings::dma_resv_wait_timeout(
                (*self.dmabuf.as_ptr()).resv,
                bindings::dma_resv_usage_DMA_RESV_USAGE_BOOKKEEP,
                false,
                jiffies,
            )
        };
        if r < 0 {
            to_result(r as i32).map(|()| false)
        } else {
            Ok(r > 0)
        }
    }
}

/// A dma-buf of ours, reachable from outside the core's callbacks while published.
///
/// # Invariants
/// `dmabuf` is live while it is in a [`DmaBufSlot`]: the release op empties the slot
/// (waiting for its users) before the dma-buf is freed.
pub(crate) struct DmaBufHandle {
    dmabuf: NonNull<bindings::dma_buf>,
}

// SAFETY: the handle is a pointer to a thread-safe kernel object.
unsafe impl Send for DmaBufHandle {}

impl DmaBufHandle {
    /// Take the reservation lock (uninterruptibly, no ww context: a single object).
    pub(crate) fn lock(&self) -> ResvGuard<'_> {
        // SAFETY: live by the type invariant, so its `resv` is valid; no ww context.
        unsafe { bindings::dma_resv_lock((*self.dmabuf.as_ptr()).resv, core::ptr::null_mut()) };
        // SAFETY: locked just above, until the guard drops.
        let locked = unsafe { ResvLocked::new(self.dmabuf.as_ptr()) };
        ResvGuard { locked }
    }
}

/// Holds the reservation lock of a dma-buf; unlocks on drop.
pub(crate) struct ResvGuard<'a> {
    locked: ResvLocked<'a>,
}

impl<'a> core::ops::Deref for ResvGuard<'a> {
    type Target = ResvLocked<'a>;
    fn deref(&self) -> &ResvLocked<'a> {
        &self.locked
    }
}

impl Drop for ResvGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: we hold the lock (taken in DmaBufHandle::lock) of this live dma-buf's
        // `resv`.
        unsafe { bindings::dma_resv_unlock((*self.locked.dmabuf.as_ptr()).resv) };
    }
}

/// Where an exporter finds its own dma-buf from a worker or an ioctl. Lock:
/// "udmabuf_live_dmabuf_slot", taken before the reservation lock.
#[pin_data]
pub(crate) struct DmaBufSlot {
    #[pin]
    inner: Mutex<Option<DmaBufHandle>>,
}

impl DmaBufSlot {
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self { inner <- new_mutex!(None, "udmabuf_live_dmabuf_slot") })
    }

    /// Run `f` with the dma-buf if it is still published. Release waits meanwhile.
    pub(crate) fn with<R>(&self, f: impl FnOnce(Option<&DmaBufHandle>) -> R) -> R {
        let guard = self.inner.lock();
        f(guard.as_ref())
    }
}

/// An importer's attachment, borrowed for the duration of a callback.
pub(crate) struct Attachment<'a> {
    raw: &'a bindings::dma_buf_attachment,
}

impl Attachment<'_> {
    /// The importing device, to DMA-map for.
    pub(crate) fn device(&self) -> Result<DmaDevice> {
        // INVARIANT: the core keeps the device of an attachment until detach, and every
        // mapping made for it is unmapped before that.
        NonNull::new(self.raw.dev).map(DmaDevice).ok_or(EINVAL)
    }
}

/// A dma-buf we exported, holding one reference (the file of the dma-buf).
///
/// # Invariants
/// `ptr` is a live dma-buf on which we own one file reference.
pub(crate) struct ExportedDmaBuf {
    ptr: NonNull<bindings::dma_buf>,
}

impl ExportedDmaBuf {
    /// Export `data` as a dma-buf of `size` bytes. The dma-buf owns `data` from here
    /// on and drops it in its `release` op; it also holds a reference on this module.
    pub(crate) fn export<T: Exporter>(data: Arc<T>, size: usize) -> Result<Self> {
        let priv_ = Arc::into_raw(data);
        let mut info: bindings::dma_buf_export_info = pin_init::zeroed();
        info.exp_name = c"udmabuf_live".as_char_ptr();
        // SAFETY: returns THIS_MODULE of this module; no preconditions.
        info.owner = unsafe { ffi::ulive_this_module() };
        info.ops = &T::OPS.0;
        info.size = size;
        info.flags = bindings::O_RDWR as c_int;
        info.priv_ = priv_ as *mut _;
        // SAFETY: `info` is fully initialised and its ops table is 'static.
        let ptr = unsafe { bindings::dma_buf_export(&info) };
        match kernel::error::from_err_ptr(ptr) {
            Ok(p) => {
                // SAFETY: dma_buf_export succeeded; it returned a non-null dma-buf.
                let ptr = unsafe { NonNull::new_unchecked(p) };
                // SAFETY: `priv_` is the exporter, alive until the release op.
                let exp = unsafe { &*priv_ };
                // INVARIANT (DmaBufHandle): emptied by the release op before the free.
                *exp.slot().inner.lock() = Some(DmaBufHandle { dmabuf: ptr });
                // INVARIANT: a new dma-buf comes with one file reference, now ours.
                Ok(Self { ptr })
            }
            Err(e) => {
                // SAFETY: export failed, so the core did not keep `priv_`: take it back.
                drop(unsafe { Arc::from_raw(priv_) });
                Err(e)
            }
        }
    }

    /// Install the dma-buf in a new fd of the current process; the fd takes our
    /// reference. On failure the reference is dropped, which releases the buffer.
    pub(crate) fn into_fd(self, cloexec: bool) -> Result<i32> {
        let flags = if cloexec {
            bindings::O_CLOEXEC as c_int
        } else {
            0
        };
        // SAFETY: `ptr` is a live dma-buf (type invariant).
        let fd = unsafe { bindings::dma_buf_fd(self.ptr.as_ptr(), flags) };
        if fd < 0 {
            return Err(Error::from_errno(fd)); // `self` drops the reference
        }
        core::mem::forget(self); // the fd owns the reference now
        Ok(fd)
    }
}

/// A dma-buf looked up by fd for an ioctl, holding a file reference meanwhile.
///
/// # Invariants
/// `ptr` is a live dma-buf exported by `export::<T>`, on which we own one reference.
pub(crate) struct DmaBufRef<T: Exporter> {
    ptr: NonNull<bindings::dma_buf>,
    _t: PhantomData<T>,
}

impl<T: Exporter> DmaBufRef<T> {
    /// The dma-buf behind `fd`; EBADF for a closed fd, EINVAL for a file that is not a
    /// dma-buf of this exporter type.
    pub(crate) fn from_fd(fd: i32) -> Result<Self> {
        // SAFETY: dma_buf_get() has no preconditions; it returns a reference or ERR_PTR.
        let ptr = kernel::error::from_err_ptr(unsafe { bindings::dma_buf_get(fd) })?;
        let ptr = NonNull::new(ptr).ok_or(EINVAL)?;
        // SAFETY: `ptr` is a live dma-buf (we hold a reference).
        if !core::ptr::eq(unsafe { (*ptr.as_ptr()).ops }, &raw const T::OPS.0) {
            // SAFETY: drop the reference dma_buf_get() took.
            unsafe { bindings::dma_buf_put(ptr.as_ptr()) };
            return Err(EINVAL);
        }
        // INVARIANT: ours (same ops table) and referenced.
        Ok(Self {
            ptr,
            _t: PhantomData,
        })
    }

    pub(crate) fn exporter(&self) -> &T {
        // SAFETY: a live dma-buf of ours (type invariant).
        unsafe { exporter::<T>(self.ptr.as_ptr()) }
    }
}

impl<T: Exporter> Drop for DmaBufRef<T> {
    fn drop(&mut self) {
        // SAFETY: we own one reference (type invariant).
        unsafe { bindings::dma_buf_put(self.ptr.as_ptr()) };
    }
}

impl Drop for ExportedDmaBuf {
    fn drop(&mut self) {
        // SAFETY: we own one reference (type invariant).
        unsafe { bindings::dma_buf_put(self.ptr.as_ptr()) };
    }
}

/// Recover the exporter from a dma-buf of ours.
///
/// # Safety
/// `dmabuf` must be a live dma-buf exported by [`ExportedDmaBuf::export::<T>`].
unsafe fn exporter<'a, T: Exporter>(dmabuf: *mut bindings::dma_buf) -> &'a T {
    // SAFETY: per the contract `priv_` is the Arc<T> installed at export, released only
    // by the `release` op, after every other callback.
    unsafe { &*((*dmabuf).priv_ as *const T) }
}

/// # Safety
/// `ptr` must be a live attachment to a dma-buf exported by `export::<T>`.
unsafe fn attachment<'a, T: Exporter>(
    ptr: *mut bindings::dma_buf_attachment,
) -> (&'a T, Attachment<'a>) {
    // SAFETY: guaranteed by the caller.
    let raw = unsafe { &*ptr };
    // SAFETY: the attachment's dma-buf is ours and alive while attached.
    (unsafe { exporter::<T>(raw.dmabuf) }, Attachment { raw })
}

/// A `dma_buf_ops` table for exporter type `T`, to be put in a `static`.
pub(crate) struct DmaBufOps(bindings::dma_buf_ops);

// SAFETY: the table holds only function pointers and is never written after init.
unsafe impl Sync for DmaBufOps {}

impl DmaBufOps {
    /// The table whose callbacks forward to `T`'s [`Exporter`] methods.
    pub(crate) const fn of<T: Exporter>() -> Self {
        Self(Vtable::<T>::OPS)
    }
}

struct Vtable<T>(core::marker::PhantomData<T>);

impl<T: Exporter> Vtable<T> {
    const OPS: bindings::dma_buf_ops = {
        let mut ops: bindings::dma_buf_ops = pin_init::zeroed();
        ops.pin = Some(Self::pin);
        ops.unpin = Some(Self::unpin);
        ops.map_dma_buf = Some(Self::map_dma_buf);
        ops.unmap_dma_buf = Some(Self::unmap_dma_buf);
        ops.release = Some(Self::release);
        ops.begin_cpu_access = Some(Self::cpu_access::<true>);
        ops.end_cpu_access = Some(Self::cpu_access::<false>);
        ops.mmap = Some(Self::mmap);
        ops.vmap = Some(Self::vmap);
        ops.vunmap = Some(Self::vunmap);
        ops
    };

    /// # Safety
    /// Called by the dma-buf core only, with a live attachment to one of our dma-bufs and
    /// its reservation lock held.
    unsafe extern "C" fn pin(att: *mut bindings::dma_buf_attachment) -> c_int {
        // SAFETY: the core passes a live attachment to one of our dma-bufs.
        let (exp, att) = unsafe { attachment::<T>(att) };
        // SAFETY: the core calls pin with the reservation lock held.
        let resv = unsafe { ResvLocked::new(att.raw.dmabuf) };
        from_result(|| exp.pin(&resv, &att).map(|()| 0))
    }

    /// # Safety
    /// Called by the dma-buf core only, with a live attachment to one of our dma-bufs and
    /// its reservation lock held.
    unsafe extern "C" fn unpin(att: *mut bindings::dma_buf_attachment) {
        // SAFETY: the core passes a live attachment to one of our dma-bufs.
        let (exp, att) = unsafe { attachment::<T>(att) };
        // SAFETY: the core calls unpin with the reservation lock held.
        let resv = unsafe { ResvLocked::new(att.raw.dmabuf) };
        exp.unpin(&resv, &att);
    }

    /// # Safety
    /// Called by the dma-buf core only, with a live attachment to one of our dma-bufs and
    /// its reservation lock held.
    unsafe extern "C" fn map_dma_buf(
        att: *mut bindings::dma_buf_attachment,
        dir: bindings::dma_data_direction,
    ) -> *mut bindings::sg_table {
        // SAFETY: the core passes a live attachment to one of our dma-bufs.
        let (exp, att) = unsafe { attachment::<T>(att) };
        // SAFETY: 7.2 always calls map_dma_buf with the reservation lock held.
        let resv = unsafe { ResvLocked::new(att.raw.dmabuf) };
        match exp.map(&resv, &att, Direction::from_raw(dir)) {
            Ok(sgt) => sgt.into_raw(),
            Err(e) => e.to_ptr(),
        }
    }

    /// # Safety
    /// Called by the dma-buf core only, with a live attachment to one of our dma-bufs and
    /// its reservation lock held.
    unsafe extern "C" fn unmap_dma_buf(
        att: *mut bindings::dma_buf_attachment,
        sgt: *mut bindings::sg_table,
        dir: bindings::dma_data_direction,
    ) {
        // SAFETY: the core passes a live attachment to one of our dma-bufs.
        let (exp, att) = unsafe { attachment::<T>(att) };
        let Ok(dev) = att.device() else { return };
        // SAFETY: 7.2 always calls unmap_dma_buf with the reservation lock held.
        let resv = unsafe { ResvLocked::new(att.raw.dmabuf) };
        // SAFETY: `sgt` is a table our map_dma_buf made for this attachment and `dir`.
        if let Some(sgt) = unsafe { MappedSgTable::from_raw(sgt, dev, Direction::from_raw(dir)) } {
            exp.unmap(&resv, &att, sgt);
        }
    }

    /// # Safety
    /// Called by the dma-buf core only, once, as the last callback of one of our dma-bufs.
    unsafe extern "C" fn release(dmabuf: *mut bindings::dma_buf) {
        // SAFETY: the core passes one of our dma-bufs, still live during release.
        let exp = unsafe { exporter::<T>(dmabuf) };
        exp.release();
        // INVARIANT (DmaBufHandle): unpublished before the dma-buf is freed; waits for a
        // worker that is using it.
        *exp.slot().inner.lock() = None;
        exp.released();
        // SAFETY: `priv_` is the Arc<T> installed at export; release is the last
        // callback, so the reference is given back exactly once.
        drop(unsafe { Arc::from_raw((*dmabuf).priv_ as *const T) });
    }

    /// `begin_cpu_access` (`BEGIN`) and `end_cpu_access`.
    ///
    /// # Safety
    /// Called by the dma-buf core only, with one of our live dma-bufs.
    unsafe extern "C" fn cpu_access<const BEGIN: bool>(
        dmabuf: *mut bindings::dma_buf,
        dir: bindings::dma_data_direction,
    ) -> c_int {
        // SAFETY: the core passes one of our live dma-bufs.
        let exp = unsafe { exporter::<T>(dmabuf) };
        let dir = Direction::from_raw(dir);
        from_result(|| {
            if BEGIN {
                exp.begin_cpu_access(dir)
            } else {
                exp.end_cpu_access(dir)
            }
            .map(|()| 0)
        })
    }

    /// # Safety
    /// Called by the dma-buf core only, with one of our live dma-bufs.
    unsafe extern "C" fn mmap(
        dmabuf: *mut bindings::dma_buf,
        vma: *mut bindings::vm_area_struct,
    ) -> c_int {
        // SAFETY: the core passes one of our live dma-bufs and the VMA being created
        // (it has already checked that the VMA fits inside the buffer).
        let exp = unsafe { exporter::<T>(dmabuf) };
        // SAFETY: `vma` is valid during the mmap call.
        let shared = unsafe { ffi::ulive_vma_is_shared(vma) };
        from_result(|| {
            exp.mmap(shared)?;
            // SAFETY: the VMA is being set up; the ops table is 'static and `priv_` stays
            // valid while the VMA exists because the VMA holds the dma-buf's file.
            unsafe { ffi::ulive_vma_set_pfnmap(vma, &VmOps::<T>::OPS, (*dmabuf).priv_) };
            Ok(0)
        })
    }

    /// # Safety
    /// Called by the dma-buf core only, with one of our live dma-bufs.
    unsafe extern "C" fn vmap(
        dmabuf: *mut bindings::dma_buf,
        map: *mut bindings::iosys_map,
    ) -> c_int {
        // SAFETY: the core passes one of our live dma-bufs, with its resv held.
        let (exp, resv) = unsafe { (exporter::<T>(dmabuf), ResvLocked::new(dmabuf)) };
        from_result(|| {
            let addr = exp.vmap(&resv)?;
            // SAFETY: `map` is the core's out-parameter for this call.
            unsafe { ffi::ulive_iosys_map_set_vaddr(map, addr.0) };
            Ok(0)
        })
    }

    /// # Safety
    /// Called by the dma-buf core only, with one of our live dma-bufs.
    unsafe extern "C" fn vunmap(dmabuf: *mut bindings::dma_buf, map: *mut bindings::iosys_map) {
        // SAFETY: the core passes one of our live dma-bufs, with its resv held, and the
        // map vmap filled in.
        let (exp, resv, addr) = unsafe {
            (
                exporter::<T>(dmabuf),
                ResvLocked::new(dmabuf),
                ffi::ulive_iosys_map_vaddr(map),
            )
        };
        exp.vunmap(&resv, VMapAddr(addr));
    }
}
