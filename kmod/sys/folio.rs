// SPDX-License-Identifier: GPL-2.0
//! Pinned folios and the page array of a buffer.

use super::PAGE_SIZE;
use crate::ffi;
use core::ptr::NonNull;
use kernel::{bindings, prelude::*};

/// One `FOLL_PIN` reference on a folio, as taken by `memfd_pin_folios`.
///
/// # Invariants
/// `folio` is a valid folio on which this object owns exactly one pin.
pub(crate) struct PinnedFolio {
    folio: NonNull<bindings::folio>,
}

// SAFETY: a pin can be dropped (unpin_folio) from any thread.
unsafe impl Send for PinnedFolio {}
// SAFETY: shared access only reads immutable folio properties.
unsafe impl Sync for PinnedFolio {}

impl PinnedFolio {
    /// # Safety
    /// `folio` must be non-null and pinned once on behalf of the caller, who hands that
    /// pin over to the returned object.
    pub(crate) unsafe fn from_pinned(folio: *mut bindings::folio) -> Self {
        // SAFETY: the caller guarantees a non-null folio.
        Self { folio: unsafe { NonNull::new_unchecked(folio) } }
    }

    /// Size of the folio in bytes (4 KiB, or 2 MiB for a hugetlb folio, ...).
    pub(crate) fn size(&self) -> usize {
        // SAFETY: the folio is valid (pinned) by the type invariant.
        unsafe { ffi::ulive_folio_size(self.folio.as_ptr()) }
    }

    fn page(&self, n: usize) -> *mut bindings::page {
        // SAFETY: the folio is pinned; callers keep `n` below size() / PAGE_SIZE.
        unsafe { ffi::ulive_folio_page(self.folio.as_ptr(), n as _) }
    }
}

impl Drop for PinnedFolio {
    fn drop(&mut self) {
        // SAFETY: by the type invariant we own one pin.
        unsafe { bindings::unpin_folio(self.folio.as_ptr()) };
    }
}

/// The pages of a buffer, in dma-buf order, with the folio pins that keep them alive.
///
/// # Invariants
/// Every pointer in `pages` is a page of a folio in `pins`; so every page stays valid
/// for as long as this object holds it.
pub(crate) struct PinnedPages {
    pages: KVVec<*mut bindings::page>,
    pins: KVVec<PinnedFolio>,
}

// SAFETY: the raw page pointers are plain data kept valid by `pins` (see invariants).
unsafe impl Send for PinnedPages {}
// SAFETY: as above; shared access only reads.
unsafe impl Sync for PinnedPages {}

impl PinnedPages {
    /// An empty set with room for `nr_pages` pages (no allocation later while appending).
    pub(crate) fn with_capacity(nr_pages: usize) -> Result<Self> {
        Ok(Self {
            pages: KVVec::with_capacity(nr_pages, GFP_KERNEL)?,
            pins: KVVec::with_capacity(nr_pages, GFP_KERNEL)?,
        })
    }

    /// Take over `pin` and append up to `want` of its pages, starting at byte `offset`
    /// inside the folio. Returns how many pages were appended.
    pub(crate) fn append(&mut self, pin: PinnedFolio, offset: usize, want: usize) -> Result<usize> {
        let first = offset / PAGE_SIZE;
        let count = (pin.size() / PAGE_SIZE).saturating_sub(first).min(want);
        if self.pages.len() + count > self.pages.capacity() || self.pins.len() == self.pins.capacity() {
            return Err(EINVAL);
        }
        for i in first..first + count {
            // Cannot fail: capacity was checked above.
            self.pages.push_within_capacity(pin.page(i)).map_err(|_| ENOMEM)?;
        }
        // INVARIANT: the pages pushed above belong to `pin`, which we now keep (room for
        // it was checked above, so the push cannot fail and drop it).
        self.pins.push_within_capacity(pin).map_err(|_| ENOMEM)?;
        Ok(count)
    }

    pub(crate) fn len(&self) -> usize {
        self.pages.len()
    }

    /// Page frame number of page `index`.
    pub(crate) fn pfn(&self, index: usize) -> Option<usize> {
        let page = *self.pages.get(index)?;
        // SAFETY: the page is valid by the type invariant.
        Some(unsafe { ffi::ulive_page_to_pfn(page) } as usize)
    }

    /// Number of distinct folio pins held.
    pub(crate) fn nr_folios(&self) -> usize {
        self.pins.len()
    }

    /// Raw page array for C functions that only read it (sg tables, vm_map_ram).
    pub(super) fn raw_pages(&self) -> *mut *mut bindings::page {
        self.pages.as_ptr().cast_mut()
    }
}
