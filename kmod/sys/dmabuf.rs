// SPDX-License-Identifier: GPL-2.0
//! Exporting dma-bufs. The driver implements [`Exporter`]; this file builds the
//! `dma_buf_ops` table whose C callbacks forward to it, and owns the `priv` pointer
//! (an `Arc<T>` released by the `release` op).

use super::sgt::{Direction, DmaDevice, MappedSgTable};
use super::vm::{Fault, FaultResult, VMapAddr, VmOps};
use crate::ffi;
use core::ptr::NonNull;
use kernel::{bindings, error::from_result, ffi::c_int, prelude::*, sync::Arc};

/// What the dma-buf core asks of an exporter. Locking, as the core calls it (7.2):
/// `pin`, `unpin`, `map`, `unmap`, `vmap`, `vunmap` run with the reservation lock
/// held; `attach`, `detach`, `begin/end_cpu_access`, `mmap` and `fault` without it.
pub(crate) trait Exporter: Send + Sync + Sized + 'static {
    fn pin(&self, att: &Attachment<'_>) -> Result;
    fn unpin(&self, att: &Attachment<'_>);
    fn map(&self, att: &Attachment<'_>, dir: Direction) -> Result<MappedSgTable>;
    fn unmap(&self, _att: &Attachment<'_>, sgt: MappedSgTable) {
        drop(sgt);
    }
    fn begin_cpu_access(&self, dir: Direction) -> Result;
    fn end_cpu_access(&self, dir: Direction) -> Result;
    /// May this mmap go ahead? `shared` tells whether it is a MAP_SHARED mapping.
    fn mmap(&self, shared: bool) -> Result;
    fn fault(&self, fault: &Fault) -> FaultResult;
    fn vmap(&self) -> Result<VMapAddr>;
    fn vunmap(&self, addr: VMapAddr);
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

    /// True for importers that handle `invalidate_mappings` (they never pin).
    pub(crate) fn is_dynamic(&self) -> bool {
        // As dma_buf_attachment_is_dynamic() (static in dma-buf.c): importer ops exist.
        !self.raw.importer_ops.is_null()
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
        info.exp_name = c"udmabuf_live".as_ptr().cast();
        // SAFETY: returns THIS_MODULE of this module; no preconditions.
        info.owner = unsafe { ffi::ulive_this_module() };
        info.ops = &Vtable::<T>::OPS;
        info.size = size;
        info.flags = bindings::O_RDWR as c_int;
        info.priv_ = priv_ as *mut _;
        // SAFETY: `info` is fully initialised and its ops table is 'static.
        let ptr = unsafe { bindings::dma_buf_export(&info) };
        match kernel::error::from_err_ptr(ptr) {
            // SAFETY: dma_buf_export succeeded; it returned a non-null dma-buf.
            // INVARIANT: a new dma-buf comes with one file reference, now ours.
            Ok(p) => Ok(Self { ptr: unsafe { NonNull::new_unchecked(p) } }),
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
        let flags = if cloexec { bindings::O_CLOEXEC as c_int } else { 0 };
        // SAFETY: `ptr` is a live dma-buf (type invariant).
        let fd = unsafe { bindings::dma_buf_fd(self.ptr.as_ptr(), flags) };
        if fd < 0 {
            return Err(Error::from_errno(fd)); // `self` drops the reference
        }
        core::mem::forget(self); // the fd owns the reference now
        Ok(fd)
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
unsafe fn attachment<'a, T: Exporter>(ptr: *mut bindings::dma_buf_attachment) -> (&'a T, Attachment<'a>) {
    // SAFETY: guaranteed by the caller.
    let raw = unsafe { &*ptr };
    // SAFETY: the attachment's dma-buf is ours and alive while attached.
    (unsafe { exporter::<T>(raw.dmabuf) }, Attachment { raw })
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
        ops.begin_cpu_access = Some(Self::begin_cpu_access);
        ops.end_cpu_access = Some(Self::end_cpu_access);
        ops.mmap = Some(Self::mmap);
        ops.vmap = Some(Self::vmap);
        ops.vunmap = Some(Self::vunmap);
        ops
    };

    unsafe extern "C" fn pin(att: *mut bindings::dma_buf_attachment) -> c_int {
        // SAFETY: the core passes a live attachment to one of our dma-bufs.
        let (exp, att) = unsafe { attachment::<T>(att) };
        from_result(|| exp.pin(&att).map(|()| 0))
    }

    unsafe extern "C" fn unpin(att: *mut bindings::dma_buf_attachment) {
        // SAFETY: the core passes a live attachment to one of our dma-bufs.
        let (exp, att) = unsafe { attachment::<T>(att) };
        exp.unpin(&att);
    }

    unsafe extern "C" fn map_dma_buf(
        att: *mut bindings::dma_buf_attachment,
        dir: bindings::dma_data_direction,
    ) -> *mut bindings::sg_table {
        // SAFETY: the core passes a live attachment to one of our dma-bufs.
        let (exp, att) = unsafe { attachment::<T>(att) };
        match exp.map(&att, Direction::from_raw(dir)) {
            Ok(sgt) => sgt.into_raw(),
            Err(e) => e.to_ptr(),
        }
    }

    unsafe extern "C" fn unmap_dma_buf(
        att: *mut bindings::dma_buf_attachment,
        sgt: *mut bindings::sg_table,
        dir: bindings::dma_data_direction,
    ) {
        // SAFETY: the core passes a live attachment to one of our dma-bufs.
        let (exp, att) = unsafe { attachment::<T>(att) };
        let Ok(dev) = att.device() else { return };
        // SAFETY: `sgt` is a table our map_dma_buf made for this attachment and `dir`.
        if let Some(sgt) = unsafe { MappedSgTable::from_raw(sgt, dev, Direction::from_raw(dir)) } {
            exp.unmap(&att, sgt);
        }
    }

    unsafe extern "C" fn release(dmabuf: *mut bindings::dma_buf) {
        // SAFETY: `priv_` is the Arc<T> installed at export; release is the last
        // callback, so the reference is given back exactly once.
        drop(unsafe { Arc::from_raw((*dmabuf).priv_ as *const T) });
    }

    unsafe extern "C" fn begin_cpu_access(dmabuf: *mut bindings::dma_buf, dir: bindings::dma_data_direction) -> c_int {
        // SAFETY: the core passes one of our live dma-bufs.
        let exp = unsafe { exporter::<T>(dmabuf) };
        from_result(|| exp.begin_cpu_access(Direction::from_raw(dir)).map(|()| 0))
    }

    unsafe extern "C" fn end_cpu_access(dmabuf: *mut bindings::dma_buf, dir: bindings::dma_data_direction) -> c_int {
        // SAFETY: the core passes one of our live dma-bufs.
        let exp = unsafe { exporter::<T>(dmabuf) };
        from_result(|| exp.end_cpu_access(Direction::from_raw(dir)).map(|()| 0))
    }

    unsafe extern "C" fn mmap(dmabuf: *mut bindings::dma_buf, vma: *mut bindings::vm_area_struct) -> c_int {
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

    unsafe extern "C" fn vmap(dmabuf: *mut bindings::dma_buf, map: *mut bindings::iosys_map) -> c_int {
        // SAFETY: the core passes one of our live dma-bufs, with its resv held.
        let exp = unsafe { exporter::<T>(dmabuf) };
        from_result(|| {
            let addr = exp.vmap()?;
            // SAFETY: `map` is the core's out-parameter for this call.
            unsafe { ffi::ulive_iosys_map_set_vaddr(map, addr.0) };
            Ok(0)
        })
    }

    unsafe extern "C" fn vunmap(dmabuf: *mut bindings::dma_buf, map: *mut bindings::iosys_map) {
        // SAFETY: the core passes one of our live dma-bufs and the map vmap filled in.
        let (exp, addr) = unsafe { (exporter::<T>(dmabuf), ffi::ulive_iosys_map_vaddr(map)) };
        exp.vunmap(VMapAddr(addr));
    }
}
