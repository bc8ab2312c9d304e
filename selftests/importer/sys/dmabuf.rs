// SPDX-License-Identifier: GPL-2.0
//! Importing dma-bufs: a reference from an fd, a static or dynamic attachment of our
//! device, the reservation lock, and the mapping and kernel vmap made under it.
//!
//! Locking (7.2 dma-buf convention for importers): `dma_buf_attach`,
//! `dma_buf_dynamic_attach`, `dma_buf_detach`, `dma_buf_get` and `dma_buf_put` are
//! called without the reservation lock; `dma_buf_map_attachment`,
//! `dma_buf_unmap_attachment`, `dma_buf_vmap` and `dma_buf_vunmap` only through
//! [`Locked`], the proof that it is held.

use super::device;
use super::{PAGE_SHIFT, PAGE_SIZE};
use crate::ffi;
use core::marker::PhantomData;
use core::ptr::NonNull;
use kernel::{
    bindings,
    device::Device,
    error::{from_err_ptr, to_result},
    ffi::c_void,
    page::BorrowedPage,
    prelude::*,
    scatterlist::SGTable,
    sync::aref::ARef,
};

fn eopnotsupp() -> Error {
    Error::from_errno(-(bindings::EOPNOTSUPP as i32))
}

/// Every mapping is made for both directions, as a device that reads and writes would.
const DIR: bindings::dma_data_direction = bindings::dma_data_direction_DMA_BIDIRECTIONAL;

/// A reference on a dma-buf, taken from an fd with `dma_buf_get`.
///
/// # Invariants
/// `ptr` is a live dma-buf on which this object owns one (file) reference.
pub(crate) struct DmaBufRef {
    ptr: NonNull<bindings::dma_buf>,
}

// SAFETY: dma-buf references may be used and dropped from any thread.
unsafe impl Send for DmaBufRef {}
// SAFETY: shared access only reads the immutable size or calls thread-safe functions.
unsafe impl Sync for DmaBufRef {}

impl DmaBufRef {
    /// The dma-buf behind `fd` in the current task: EBADF if `fd` is not open, EINVAL if
    /// it is not a dma-buf.
    pub(crate) fn get(fd: i32) -> Result<Self> {
        // SAFETY: dma_buf_get() has no preconditions; it returns an ERR_PTR or a dma-buf
        // with a new reference.
        let ptr = from_err_ptr(unsafe { bindings::dma_buf_get(fd) })?;
        // INVARIANT: on success the reference is ours.
        NonNull::new(ptr).map(|ptr| Self { ptr }).ok_or(EINVAL)
    }

    /// Size in bytes, fixed at export.
    pub(crate) fn size(&self) -> usize {
        // SAFETY: the dma-buf is live (type invariant); `size` never changes after export.
        unsafe { (*self.ptr.as_ptr()).size }
    }
}

impl Drop for DmaBufRef {
    fn drop(&mut self) {
        // SAFETY: we own one reference (type invariant). This may release the dma-buf.
        unsafe { bindings::dma_buf_put(self.ptr.as_ptr()) };
    }
}

/// Receives the exporter's `invalidate_mappings` for a dynamic attachment.
pub(crate) trait InvalidateNotify: Send + Sync + 'static {
    /// The exporter is moving the buffer: the current mapping must be replaced before
    /// its next use. Called with the reservation lock held, possibly from inside the
    /// exporter's own paths: must not sleep, allocate or take the reservation lock.
    fn invalidate_mappings(&self);
}

/// An attachment of our device to a dma-buf, and its mapping if any.
///
/// # Invariants
/// - `attach` is a live attachment of `buf` for `dev`, made in [`Attachment::new`] and
///   detached exactly once, in `drop`.
/// - For a dynamic attachment, `importer_priv` points at `*notify`, which is freed only
///   after the detach (field order).
/// - `mapping`, when set, is a table returned by `dma_buf_map_attachment(attach, DIR)`
///   and not yet unmapped; it is set and cleared only with the reservation lock held.
/// - `vmap`, when set, is a vmap of `buf` (see [`Vmap`]) that this attachment owns; it is
///   set and cleared only with the reservation lock held and with `&mut self`.
pub(crate) struct Attachment<T: InvalidateNotify> {
    attach: NonNull<bindings::dma_buf_attachment>,
    mapping: Option<NonNull<bindings::sg_table>>,
    vmap: Option<Vmap>,
    dynamic: bool,
    notify: Pin<KBox<T>>,
    buf: DmaBufRef,
    dev: ARef<Device>,
}

// SAFETY: the attachment, its table and its vmap are owned; dma-buf calls work from any
// thread.
unsafe impl<T: InvalidateNotify> Send for Attachment<T> {}
// SAFETY: `&self` methods only read flags, reach `notify` (Sync) and read through the
// vmap, which stays mapped while `&self` is borrowed.
unsafe impl<T: InvalidateNotify> Sync for Attachment<T> {}

/// A kernel virtual mapping of a whole dma-buf, made by `dma_buf_vmap`.
///
/// # Invariants
/// `map` was filled by a successful `dma_buf_vmap` of the owning [`Attachment`]'s dma-buf
/// and not yet passed to `dma_buf_vunmap`. It is system memory (`is_iomem` is false), so
/// `vaddr` is its active field, non-null and valid for reads of the dma-buf's size.
struct Vmap {
    map: bindings::iosys_map,
}

impl Vmap {
    fn base(&self) -> *const u8 {
        // SAFETY: `is_iomem` is false (type invariant): `vaddr` is the field in use.
        unsafe { self.map.__bindgen_anon_1.vaddr }
            .cast_const()
            .cast()
    }
}

struct AttachOps<T>(PhantomData<T>);

impl<T: InvalidateNotify> AttachOps<T> {
    /// Peer-to-peer stays off: READ needs the struct pages behind the table.
    const OPS: bindings::dma_buf_attach_ops = bindings::dma_buf_attach_ops {
        allow_peer2peer: false,
        invalidate_mappings: Some(Self::invalidate_mappings),
    };

    /// # Safety
    /// Called by the dma-buf core only, with a live dynamic attachment of ours and the
    /// exporter's reservation lock held.
    unsafe extern "C" fn invalidate_mappings(attach: *mut bindings::dma_buf_attachment) {
        // SAFETY: the core calls this for a live attachment of ours, under its resv lock.
        let (dmabuf, priv_) = unsafe { ((*attach).dmabuf, (*attach).importer_priv) };
        // SAFETY: the dma-buf of a live attachment is live.
        unsafe { ffi::ulimp_dma_buf_assert_locked(dmabuf) };
        // SAFETY: `Attachment::new` set importer_priv to its `notify`, which outlives the
        // attachment (type invariant of `Attachment`).
        let notify = unsafe { &*(priv_ as *const T) };
        notify.invalidate_mappings();
    }
}

impl<T: InvalidateNotify> Attachment<T> {
    /// Attach `dev` to `buf`: dynamically (with `notify` receiving invalidations) or
    /// statically. On failure everything passed in is released.
    pub(crate) fn new(
        buf: DmaBufRef,
        dev: ARef<Device>,
        notify: Pin<KBox<T>>,
        dynamic: bool,
    ) -> Result<Self> {
        let priv_ = core::ptr::from_ref::<T>(&notify)
            .cast_mut()
            .cast::<c_void>();
        let raw = if dynamic {
            // SAFETY: `buf` and `dev` are live; the ops table is 'static and `priv_`
            // points at `notify`, which the new attachment keeps until after detach.
            unsafe {
                bindings::dma_buf_dynamic_attach(
                    buf.ptr.as_ptr(),
                    device::raw(&dev),
                    &AttachOps::<T>::OPS,
                    priv_,
                )
            }
        } else {
            // SAFETY: `buf` and `dev` are live.
            unsafe { bindings::dma_buf_attach(buf.ptr.as_ptr(), device::raw(&dev)) }
        };
        let attach = NonNull::new(from_err_ptr(raw)?).ok_or(ENOMEM)?;
        // INVARIANT: a new attachment of `buf` for `dev`; importer_priv is `notify`.
        Ok(Self {
            attach,
            mapping: None,
            vmap: None,
            dynamic,
            notify,
            buf,
            dev,
        })
    }

    pub(crate) fn notify(&self) -> &T {
        &self.notify
    }

    pub(crate) fn is_dynamic(&self) -> bool {
        self.dynamic
    }

    pub(crate) fn is_mapped(&self) -> bool {
        self.mapping.is_some()
    }

    pub(crate) fn is_vmapped(&self) -> bool {
        self.vmap.is_some()
    }

    pub(crate) fn size(&self) -> usize {
        self.buf.size()
    }

    /// Take the dma-buf's reservation lock; EINTR if a signal arrives meanwhile.
    pub(crate) fn lock(&mut self) -> Result<Locked<'_, T>> {
        // SAFETY: the dma-buf is live (we hold a reference).
        to_result(unsafe { ffi::ulimp_dma_buf_lock_interruptible(self.buf.ptr.as_ptr()) })?;
        // INVARIANT: locked just above.
        Ok(Locked { att: self })
    }

    /// Copy `dst.len()` bytes starting at byte `offset` of the buffer through the vmap
    /// (no reservation lock needed: the vmap stays while `&self` is borrowed). ENXIO
    /// without a vmap, EINVAL if the range leaves the buffer.
    pub(crate) fn vmap_read(&self, offset: usize, dst: &mut [u8]) -> Result {
        let vmap = self.vmap.as_ref().ok_or(ENXIO)?;
        let end = offset.checked_add(dst.len()).ok_or(EINVAL)?;
        if end > self.size() {
            return Err(EINVAL);
        }
        // SAFETY: `base()` is valid for reads of the buffer's size (invariant of `Vmap`)
        // and stays mapped for this borrow: the vmap is only removed through `&mut self`.
        // `offset..end` is inside the buffer, and `dst` is valid for `dst.len()` writes; a
        // kernel vmap and a slice we own cannot overlap. The buffer may be written
        // concurrently by its users, as for any CPU access to a dma-buf; the bytes are
        // copied as plain data and every value is valid.
        unsafe {
            core::ptr::copy_nonoverlapping(vmap.base().add(offset), dst.as_mut_ptr(), dst.len())
        };
        Ok(())
    }

    /// Vunmap and unmap (whichever exist) with the lock held, uninterruptibly: for
    /// teardown.
    fn release_for_teardown(&mut self) {
        if self.mapping.is_none() && self.vmap.is_none() {
            return;
        }
        // SAFETY: the dma-buf is live (we hold a reference).
        unsafe { ffi::ulimp_dma_buf_lock(self.buf.ptr.as_ptr()) };
        // INVARIANT: locked just above; the guard unlocks when it goes out of scope.
        let mut locked = Locked { att: self };
        locked.vunmap();
        locked.unmap();
    }
}

impl<T: InvalidateNotify> Drop for Attachment<T> {
    fn drop(&mut self) {
        self.release_for_teardown();
        // SAFETY: `attach` is a live attachment of `buf` (type invariant), unmapped above,
        // and detached only here. dma_buf_detach takes the resv lock itself.
        unsafe { bindings::dma_buf_detach(self.buf.ptr.as_ptr(), self.attach.as_ptr()) };
        // Then the fields: `notify` is freed, the dma-buf reference and the device
        // reference are dropped, in that order.
    }
}

/// Proof that the reservation lock of an attachment's dma-buf is held; unlocks on drop.
///
/// # Invariants
/// The reservation lock of `att.buf` is held by this task for the guard's lifetime.
pub(crate) struct Locked<'a, T: InvalidateNotify> {
    att: &'a mut Attachment<T>,
}

impl<T: InvalidateNotify> Locked<'_, T> {
    pub(crate) fn notify(&self) -> &T {
        &self.att.notify
    }

    /// The current mapping, if any.
    pub(crate) fn mapping(&self) -> Option<Mapping<'_>> {
        // INVARIANT: the table is mapped and, with the lock held, stays so for the borrow.
        self.att.mapping.map(|sgt| Mapping {
            sgt,
            dev: &self.att.dev,
            _lock: PhantomData,
        })
    }

    /// `dma_buf_map_attachment`; EBUSY if a mapping exists (unmap it first).
    pub(crate) fn map(&mut self) -> Result {
        if self.att.mapping.is_some() {
            return Err(EBUSY);
        }
        // SAFETY: `attach` is live and the resv lock is held (type invariants).
        let sgt = from_err_ptr(unsafe {
            bindings::dma_buf_map_attachment(self.att.attach.as_ptr(), DIR)
        })?;
        // INVARIANT: a table from dma_buf_map_attachment, made with the lock held.
        self.att.mapping = Some(NonNull::new(sgt).ok_or(ENOMEM)?);
        Ok(())
    }

    /// `dma_buf_unmap_attachment` of the current mapping, if any.
    pub(crate) fn unmap(&mut self) {
        if let Some(sgt) = self.att.mapping.take() {
            // SAFETY: `sgt` was returned by dma_buf_map_attachment for `attach` and `DIR`
            // and is unmapped once (it was just taken out); the resv lock is held.
            unsafe {
                bindings::dma_buf_unmap_attachment(self.att.attach.as_ptr(), sgt.as_ptr(), DIR)
            };
        }
    }

    /// `dma_buf_vmap` of the whole buffer, kept until [`Locked::vunmap`] or teardown.
    /// EBUSY if this attachment holds a vmap already; EOPNOTSUPP (after undoing it) if
    /// the exporter maps I/O memory, which cannot be read as plain memory.
    pub(crate) fn vmap(&mut self) -> Result {
        if self.att.vmap.is_some() {
            return Err(EBUSY);
        }
        let buf = self.att.buf.ptr.as_ptr();
        let mut map: bindings::iosys_map = pin_init::zeroed();
        // SAFETY: the dma-buf is live and its resv lock is held (type invariants); `map`
        // is a valid out-parameter.
        to_result(unsafe { bindings::dma_buf_vmap(buf, &mut map) })?;
        if map.is_iomem {
            // SAFETY: `map` was filled by dma_buf_vmap of this dma-buf just above and is
            // vunmapped once, here; the resv lock is held.
            unsafe { bindings::dma_buf_vunmap(buf, &mut map) };
            return Err(eopnotsupp());
        }
        // SAFETY: `is_iomem` is false: `vaddr` is the field in use.
        if unsafe { map.__bindgen_anon_1.vaddr }.is_null() {
            // A broken exporter (success without an address). Not vunmapped: the core's
            // dma_buf_vunmap would BUG on the null address it recorded.
            return Err(EIO);
        }
        // INVARIANT: a successful vmap of `buf` in system memory with a non-null address;
        // dma_buf_vmap maps the whole buffer. Set with the lock held.
        self.att.vmap = Some(Vmap { map });
        Ok(())
    }

    /// `dma_buf_vunmap` of the attachment's vmap, if any.
    pub(crate) fn vunmap(&mut self) {
        if let Some(mut vmap) = self.att.vmap.take() {
            // SAFETY: `vmap.map` was filled by dma_buf_vmap of this dma-buf (invariant of
            // `Vmap`) and is vunmapped once (it was just taken out); the resv lock is held.
            unsafe { bindings::dma_buf_vunmap(self.att.buf.ptr.as_ptr(), &mut vmap.map) };
        }
    }
}

impl<T: InvalidateNotify> Drop for Locked<'_, T> {
    fn drop(&mut self) {
        // SAFETY: the lock is held (type invariant) and released exactly once, here.
        unsafe { ffi::ulimp_dma_buf_unlock(self.att.buf.ptr.as_ptr()) };
    }
}

/// A mapping, borrowed while the reservation lock is held.
///
/// # Invariants
/// `sgt` is a table mapped for `dev` by `dma_buf_map_attachment`; it stays mapped and
/// unmodified for `'a` (the lock is held and the unmap needs `&mut Locked`).
pub(crate) struct Mapping<'a> {
    sgt: NonNull<bindings::sg_table>,
    dev: &'a Device,
    _lock: PhantomData<&'a ()>,
}

impl Mapping<'_> {
    fn raw(&self) -> &bindings::sg_table {
        // SAFETY: the table is valid and not modified while borrowed (type invariant).
        unsafe { self.sgt.as_ref() }
    }

    /// DMA segments (`nents`): what a device would be programmed with.
    pub(crate) fn dma_segments(&self) -> u32 {
        self.raw().nents
    }

    /// CPU segments (`orig_nents`).
    pub(crate) fn cpu_segments(&self) -> u32 {
        self.raw().orig_nents
    }

    /// Sum of the DMA segment lengths.
    pub(crate) fn dma_bytes(&self) -> u64 {
        // SAFETY: the table is valid and unmodified for the borrow (type invariant).
        let table = unsafe { SGTable::from_raw(self.sgt.as_ptr()) };
        table.iter().map(|sg| sg.dma_len()).sum()
    }

    /// Make device writes visible to the CPU before reading (a no-op on coherent x86).
    pub(crate) fn sync_for_cpu(&self) {
        // SAFETY: the table is mapped for `dev` in direction DIR (type invariant).
        unsafe {
            ffi::ulimp_dma_sync_sgtable_for_cpu(device::raw(self.dev), self.sgt.as_ptr(), DIR)
        };
    }

    /// Walk the CPU segments of the table over the buffer bytes `start..end`, calling
    /// `f(at, page, in_page, n)` for each piece of `n` bytes from buffer offset `at` that
    /// stays inside one page: `page` holds it from byte `in_page` on. The page belongs to
    /// the mapped buffer and stays alive for the borrow. EINVAL if the table does not
    /// cover the range, EOPNOTSUPP if it carries no pages.
    fn for_each_cpu_piece(
        &self,
        start: usize,
        end: usize,
        mut f: impl FnMut(usize, NonNull<bindings::page>, usize, usize) -> Result,
    ) -> Result {
        let mut sg = self.raw().sgl;
        let mut seg_start = 0usize; // buffer offset of the current segment
        let mut done = start; // next buffer offset to visit
        for _ in 0..self.cpu_segments() {
            if done >= end || sg.is_null() {
                break;
            }
            // SAFETY: `sg` is one of the table's first `orig_nents` entries, valid for the
            // borrow (type invariant).
            let (sg_off, sg_len) = unsafe { ((*sg).offset as usize, (*sg).length as usize) };
            let seg_end = seg_start + sg_len;
            while done < end && done < seg_end {
                // Position inside the segment, counted from its first page.
                let pos = sg_off + (done - seg_start);
                let in_page = pos % PAGE_SIZE;
                let n = (PAGE_SIZE - in_page).min(seg_end - done).min(end - done);
                // SAFETY: `sg` is a valid entry; `pos / PAGE_SIZE` is inside its length.
                let page =
                    unsafe { ffi::ulimp_sg_page(sg, (pos / PAGE_SIZE) as kernel::ffi::c_ulong) };
                f(done, NonNull::new(page).ok_or_else(eopnotsupp)?, in_page, n)?;
                done += n;
            }
            seg_start = seg_end;
            // SAFETY: `sg` is a valid entry of the table.
            sg = unsafe { ffi::ulimp_sg_next(sg) };
        }
        if done == end {
            Ok(())
        } else {
            Err(EINVAL)
        }
    }

    /// Copy `dst.len()` bytes starting at byte `offset` of the buffer, walking the CPU
    /// segments of the table page by page. EINVAL if the table does not cover the range,
    /// EOPNOTSUPP if it carries no pages.
    pub(crate) fn read(&self, offset: usize, dst: &mut [u8]) -> Result {
        let end = offset.checked_add(dst.len()).ok_or(EINVAL)?;
        self.for_each_cpu_piece(offset, end, |at, page, in_page, n| {
            // SAFETY: the page belongs to the mapped buffer, which the exporter keeps
            // alive while the mapping exists, i.e. for this borrow.
            let page = unsafe { BorrowedPage::from_raw(page) };
            let out = dst.get_mut(at - offset..at - offset + n).ok_or(EINVAL)?;
            // SAFETY: `out` is valid for `n` writable bytes. The buffer may be written
            // concurrently by its users, as for any CPU access to a dma-buf; the bytes are
            // copied as plain data and every value is valid.
            unsafe { page.read_raw(out.as_mut_ptr(), in_page, n) }
        })
    }

    /// The PFN of the CPU page holding byte `i * PAGE_SIZE` of the buffer, for the buffer
    /// pages `i` in `first_page..first_page + out.len()`. EINVAL if the table does not
    /// cover them, EOPNOTSUPP if it carries no pages.
    pub(crate) fn page_pfns(&self, first_page: usize, out: &mut [u64]) -> Result {
        if out.is_empty() {
            return Ok(());
        }
        let last = first_page.checked_add(out.len() - 1).ok_or(EINVAL)?;
        let start = first_page.checked_mul(PAGE_SIZE).ok_or(EINVAL)?;
        // Up to the first byte of the last page: a table ending inside it still covers it.
        let end = last
            .checked_mul(PAGE_SIZE)
            .and_then(|b| b.checked_add(1))
            .ok_or(EINVAL)?;
        self.for_each_cpu_piece(start, end, |at, page, _in_page, n| {
            // A piece stays inside one page and is at most a page long: it holds at most
            // one page-aligned buffer offset.
            let aligned = at.next_multiple_of(PAGE_SIZE);
            if aligned < at + n {
                let slot = out
                    .get_mut(aligned / PAGE_SIZE - first_page)
                    .ok_or(EINVAL)?;
                // SAFETY: `page` is a live page of the mapped buffer (see above).
                *slot = unsafe { ffi::ulimp_page_to_pfn(page.as_ptr()) } as u64;
            }
            Ok(())
        })
    }

    /// For the buffer pages `i` in `first_page..first_page + out.len()`: 1 if the folio
    /// of the CPU page holding byte `i * PAGE_SIZE` is DMA-pinned, else 0. EINVAL if the
    /// table does not cover them, EOPNOTSUPP if it carries no pages.
    pub(crate) fn pages_pinned(&self, first_page: usize, out: &mut [u64]) -> Result {
        self.page_pfns(first_page, out)?;
        for slot in out.iter_mut() {
            // SAFETY: `*slot` is the PFN of a page the table points at: a valid memmap
            // entry, whose flags and counts the helper only reads.
            *slot = u64::from(unsafe { ffi::ulimp_pfn_dma_pinned(*slot as kernel::ffi::c_ulong) });
        }
        Ok(())
    }

    /// The DMA address of byte `i * PAGE_SIZE` of the buffer shifted right by
    /// `PAGE_SHIFT`, for the buffer pages `i` in `first_page..first_page + out.len()`,
    /// walking the DMA segments. EINVAL if they do not cover those pages.
    pub(crate) fn dma_pfns(&self, first_page: usize, out: &mut [u64]) -> Result {
        // SAFETY: the table is valid and unmodified for the borrow (type invariant).
        let table = unsafe { SGTable::from_raw(self.sgt.as_ptr()) };
        let mut seg_start = 0u64; // buffer offset of the current DMA segment
        let mut filled = 0usize;
        for sg in table.iter() {
            if filled == out.len() {
                break;
            }
            let seg_end = seg_start + sg.dma_len();
            while let Some(slot) = out.get_mut(filled) {
                let page = first_page.checked_add(filled).ok_or(EINVAL)?;
                let at = page.checked_mul(PAGE_SIZE).ok_or(EINVAL)? as u64;
                if at >= seg_end {
                    break;
                }
                // Pages are visited in order, so `at` is not before this segment.
                *slot = (sg.dma_address() + (at - seg_start)) >> PAGE_SHIFT;
                filled += 1;
            }
            seg_start = seg_end;
        }
        if filled == out.len() {
            Ok(())
        } else {
            Err(EINVAL)
        }
    }
}
