// SPDX-License-Identifier: GPL-2.0
//! Scatter-gather tables built from a buffer's pinned pages and DMA-mapped for a device.

use super::ffi;
use super::folio::PinnedPages;
use super::PAGE_SHIFT;
use core::ptr::NonNull;
use kernel::{bindings, error::to_result, prelude::*};

/// Direction of a DMA mapping or CPU access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Direction(bindings::dma_data_direction);

impl Direction {
    pub(crate) fn from_raw(raw: bindings::dma_data_direction) -> Self {
        Self(raw)
    }
    pub(crate) fn raw(self) -> bindings::dma_data_direction {
        self.0
    }
}

/// A device to DMA-map for: an attachment's device, or the misc device for CPU access.
///
/// # Invariants
/// `0` is a valid device for as long as any [`MappedSgTable`] made for it lives: the
/// dma-buf core keeps an attachment's device until detach, after every unmap, and the
/// misc device is held by an `ARef<Device>` in the buffer.
#[derive(Clone, Copy)]
pub(crate) struct DmaDevice(pub(super) NonNull<bindings::device>);

/// An `sg_table` with a word of the owner's beside it, so that a table handed to the
/// dma-buf core comes back (unmap_dma_buf) with what the owner recorded at map time.
#[repr(C)]
struct TaggedTable {
    /// First, so a pointer to the table is a pointer to the whole.
    table: bindings::sg_table,
    tag: u64,
}

/// An `sg_table` allocated here, filled from pinned pages (physically contiguous pages
/// merged into one segment) and DMA-mapped for a device.
///
/// # Invariants
/// `sgt` is the `table` of a KBox'ed [`TaggedTable`], filled and DMA-mapped for `dev`
/// and `dir`, owned by us.
pub(crate) struct MappedSgTable {
    sgt: NonNull<bindings::sg_table>,
    dev: DmaDevice,
    dir: Direction,
}

// SAFETY: the table is exclusively owned; mapping/unmapping is allowed from any thread.
unsafe impl Send for MappedSgTable {}
// SAFETY: shared access only syncs caches, which the DMA API allows concurrently.
unsafe impl Sync for MappedSgTable {}

impl MappedSgTable {
    /// Build and map a table over every page of `pages`. DMA_ATTR_SKIP_CPU_SYNC, as
    /// upstream: CPU cache maintenance goes through begin/end_cpu_access. Every page must
    /// be populated (`ENOMEM` otherwise: the caller could not bring them in).
    pub(crate) fn new(pages: &PinnedPages, dev: DmaDevice, dir: Direction) -> Result<Self> {
        if pages.missing() != 0 {
            return Err(ENOMEM);
        }
        let n = u32::try_from(pages.len()).map_err(|_| EINVAL)?;
        let table = KBox::new(
            TaggedTable {
                table: pin_init::zeroed(),
                tag: 0,
            },
            GFP_KERNEL,
        )?;
        let sgt = KBox::into_raw(table).cast::<bindings::sg_table>();
        // SAFETY: `dev` is valid by the DmaDevice invariant.
        let max_segment = unsafe { ffi::ulive_dma_max_segment(dev.0.as_ptr()) };
        // SAFETY: `sgt` is a zeroed table we own; the page array holds `n` valid pages
        // (PinnedPages invariant, none missing: checked above) that the C code only reads.
        let ret = unsafe {
            bindings::sg_alloc_table_from_pages_segment(
                sgt,
                pages.raw_pages(),
                n,
                0,
                (n as kernel::ffi::c_ulong) << PAGE_SHIFT,
                max_segment,
                bindings::GFP_KERNEL,
            )
        };
        if let Err(e) = to_result(ret) {
            // SAFETY: `sgt` came from KBox::into_raw above and nothing else holds it.
            drop(unsafe { KBox::from_raw(sgt.cast::<TaggedTable>()) });
            return Err(e);
        }
        // SAFETY: the table is filled and `dev` is valid.
        let ret = unsafe {
            bindings::dma_map_sgtable(
                dev.0.as_ptr(),
                sgt,
                dir.raw(),
                bindings::DMA_ATTR_SKIP_CPU_SYNC as kernel::ffi::c_ulong,
            )
        };
        if let Err(e) = to_result(ret) {
            // SAFETY: the table was allocated by sg_alloc_table_from_pages_segment and
            // the box by KBox::into_raw; neither is used afterwards.
            unsafe {
                bindings::sg_free_table(sgt);
                drop(KBox::from_raw(sgt.cast::<TaggedTable>()));
            }
            return Err(e);
        }
        // SAFETY: KBox::into_raw never returns null.
        let sgt = unsafe { NonNull::new_unchecked(sgt) };
        // INVARIANT: allocated, filled and mapped above.
        Ok(Self { sgt, dev, dir })
    }

    /// The owner's word kept with the table (0 until set).
    pub(crate) fn tag(&self) -> u64 {
        // SAFETY: `sgt` is the first field of a live TaggedTable (type invariant).
        unsafe { (*self.sgt.as_ptr().cast::<TaggedTable>()).tag }
    }

    /// Keep `tag` with the table until it comes back.
    pub(crate) fn set_tag(&mut self, tag: u64) {
        // SAFETY: as in `tag`; `&mut self` owns the table.
        unsafe { (*self.sgt.as_ptr().cast::<TaggedTable>()).tag = tag };
    }

    /// Number of DMA segments after mapping (what an importer walks).
    pub(crate) fn dma_segments(&self) -> usize {
        // SAFETY: the table is valid by the type invariant.
        unsafe { ffi::ulive_sgtable_dma_nents(self.sgt.as_ptr()) as usize }
    }

    pub(crate) fn sync_for_cpu(&self, dir: Direction) {
        // SAFETY: the table is mapped for `dev` by the type invariant.
        unsafe {
            ffi::ulive_dma_sync_sgtable_for_cpu(self.dev.0.as_ptr(), self.sgt.as_ptr(), dir.raw())
        };
    }

    pub(crate) fn sync_for_device(&self, dir: Direction) {
        // SAFETY: the table is mapped for `dev` by the type invariant.
        unsafe {
            ffi::ulive_dma_sync_sgtable_for_device(
                self.dev.0.as_ptr(),
                self.sgt.as_ptr(),
                dir.raw(),
            )
        };
    }

    /// Hand the table to the dma-buf core (map_dma_buf); it comes back in unmap_dma_buf.
    pub(super) fn into_raw(self) -> *mut bindings::sg_table {
        let p = self.sgt.as_ptr();
        core::mem::forget(self);
        p
    }

    /// # Safety
    /// `sgt` must come from [`Self::into_raw`] of a table mapped for `dev` and `dir`.
    pub(super) unsafe fn from_raw(
        sgt: *mut bindings::sg_table,
        dev: DmaDevice,
        dir: Direction,
    ) -> Option<Self> {
        Some(Self {
            sgt: NonNull::new(sgt)?,
            dev,
            dir,
        })
    }
}

impl Drop for MappedSgTable {
    fn drop(&mut self) {
        let sgt = self.sgt.as_ptr();
        // SAFETY: by the type invariant the table is mapped for `dev`/`dir`, and is the
        // first field of a KBox'ed TaggedTable; it is unmapped, freed and never used again.
        unsafe {
            bindings::dma_unmap_sgtable(
                self.dev.0.as_ptr(),
                sgt,
                self.dir.raw(),
                bindings::DMA_ATTR_SKIP_CPU_SYNC as kernel::ffi::c_ulong,
            );
            bindings::sg_free_table(sgt);
            drop(KBox::from_raw(sgt.cast::<TaggedTable>()));
        }
    }
}
