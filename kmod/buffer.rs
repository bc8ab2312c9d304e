// SPDX-License-Identifier: GPL-2.0
//! A udmabuf-live buffer: the pinned pages of one or more memfd ranges, exported as a
//! dma-buf. `create` is the whole UDMABUF_CREATE(_LIST) path after the ioctl has copied
//! the request in; `exporter.rs` answers the dma-buf core for the buffer afterwards.
//!
//! Locks owned here (see the lock order in udmabuf_live_main.rs):
//! - `Buffer::state` ("udmabuf_live_buffer_state"): the page array and the mappings
//!   built from it. Taken under the dma-buf reservation lock (map, vmap, pin) and under
//!   mmap_lock (fault); never held while copying to or from user memory.

use crate::ffi;
use crate::sys::{
    device::DeviceRef,
    dmabuf::ExportedDmaBuf,
    folio::PinnedPages,
    memfd::{Backing, MemFile},
    sgt::MappedSgTable,
    vm::VMap,
    PAGE_SHIFT, PAGE_SIZE,
};
use crate::uapi::UdmabufCreateItem;
use kernel::{bindings, new_mutex, prelude::*, sync::{Arc, Mutex}};

/// Seals a memfd must have: it may not shrink under the buffer.
const SEALS_WANTED: u32 = bindings::F_SEAL_SHRINK;
/// Seals a memfd may not have: the buffer's users write through it.
const SEALS_DENIED: u32 = bindings::F_SEAL_WRITE | bindings::F_SEAL_FUTURE_WRITE;

/// Upstream answers an fd that is not an open memfd with EBADFD (not EBADF).
fn ebadfd() -> Error {
    Error::from_errno(-(bindings::EBADFD as i32))
}

/// Mutable state of a buffer, under `Buffer::state`.
pub(crate) struct State {
    /// The buffer's pages in dma-buf order, and the folio pins behind them.
    pub(crate) pages: PinnedPages,
    /// Mapping for the misc device used by begin/end_cpu_access (as upstream's ubuf->sg).
    pub(crate) cpu_sgt: Option<MappedSgTable>,
    /// The kernel mapping while a vmap is active (the dma-buf core counts vmap users).
    pub(crate) vmap: Option<VMap>,
    /// Pins by static importers (dma_buf_pin); their pages may not change meanwhile.
    pub(crate) pins: usize,
}

#[pin_data]
pub(crate) struct Buffer {
    /// Size in pages; fixed for the buffer's life.
    pub(crate) nr_pages: usize,
    /// What backs the buffer; `None` when the ranges mix shmem and hugetlb.
    pub(crate) backing: Option<Backing>,
    #[pin]
    pub(crate) state: Mutex<State>,
    /// The misc device, for CPU-access DMA syncs. Declared after `state` so that the
    /// tables in `state` are unmapped before this reference goes.
    pub(crate) misc_dev: DeviceRef,
}

/// Validate a create request, pin its pages and export them as a dma-buf fd. The
/// checks, their order and their errnos follow upstream udmabuf_create() (7.2).
pub(crate) fn create(misc_dev: DeviceRef, items: &[UdmabufCreateItem], cloexec: bool) -> Result<i32> {
    let limit_pages = (ffi::size_limit_mb() as i64 as u64).saturating_mul(1 << 20) >> PAGE_SHIFT;
    let mut total: u64 = 0;
    let mut max_item_pages: u64 = 0;
    for item in items {
        if item.offset % PAGE_SIZE as u64 != 0 || item.size % PAGE_SIZE as u64 != 0 {
            return Err(EINVAL);
        }
        let n = item.size >> PAGE_SHIFT;
        total = total.checked_add(n).ok_or(EINVAL)?;
        if total > limit_pages {
            return Err(EINVAL);
        }
        max_item_pages = max_item_pages.max(n);
    }
    if total == 0 {
        return Err(EINVAL);
    }
    let nr_pages = usize::try_from(total).map_err(|_| EINVAL)?;
    let mut pages = PinnedPages::with_capacity(nr_pages)?;
    let mut scratch = KVVec::from_elem(core::ptr::null_mut(), max_item_pages as usize, GFP_KERNEL)?;
    let mut backing = None;
    for (i, item) in items.iter().enumerate() {
        let kind = pin_item(item, &mut pages, &mut scratch)?;
        backing = if i == 0 || backing == Some(kind) { Some(kind) } else { None };
    }
    drop(scratch);

    let buffer = Arc::pin_init(
        try_pin_init!(Buffer {
            nr_pages,
            backing,
            state <- new_mutex!(State { pages, cpu_sgt: None, vmap: None, pins: 0 }, "udmabuf_live_buffer_state"),
            misc_dev,
        }),
        GFP_KERNEL,
    )?;
    ExportedDmaBuf::export(buffer, nr_pages << PAGE_SHIFT)?.into_fd(cloexec)
}

/// Pin the pages of one memfd range, checking the file and its seals under the inode
/// lock (memfd_add_seals takes it for write).
fn pin_item(item: &UdmabufCreateItem, pages: &mut PinnedPages, scratch: &mut KVVec<*mut bindings::folio>) -> Result<Backing> {
    let file = MemFile::get(item.memfd).ok_or_else(ebadfd)?;
    let locked = file.lock_shared();
    let backing = file.backing().ok_or_else(ebadfd)?;
    let seals = locked.seals().ok_or_else(ebadfd)?;
    if seals & SEALS_WANTED != SEALS_WANTED || seals & SEALS_DENIED != 0 {
        return Err(EINVAL);
    }
    // memfd_pin_folios takes loff_t bounds: offsets past i64 or a wrapping end are
    // invalid there, so they are here too.
    let start = i64::try_from(item.offset).map_err(|_| EINVAL)?;
    let end = i64::try_from(item.size).ok().and_then(|s| start.checked_add(s)).and_then(|e| e.checked_sub(1)).ok_or(EINVAL)?;
    let mut want = (item.size >> PAGE_SHIFT) as usize;
    locked.pin_folios(start, end, scratch, |pin, offset| {
        want -= pages.append(pin, offset, want)?;
        Ok(())
    })?;
    if want != 0 {
        return Err(EINVAL);
    }
    Ok(backing)
}
