// SPDX-License-Identifier: GPL-2.0
//! Pinned pages, and the page array of a buffer.
//!
//! `memfd_pin_folios` pins each folio once. A buffer holds one pin per *page* instead
//! (`folio_add_pins` adds the rest), so that a single page can be swapped out of a large
//! folio later and its pin dropped on its own.

use super::ffi;
use core::ptr::NonNull;
use kernel::{bindings, ffi::c_ulong, prelude::*};

/// One pin on the folio of a page, owned together with the page.
///
/// # Invariants
/// `page` is a valid page; this object owns one `FOLL_PIN` pin on its folio.
#[repr(transparent)]
pub(crate) struct PinnedPage {
    page: NonNull<bindings::page>,
}

// SAFETY: a pin can be dropped (unpin_user_page) from any thread.
unsafe impl Send for PinnedPage {}
// SAFETY: shared access only reads the page's identity and PFN.
unsafe impl Sync for PinnedPage {}

impl PinnedPage {
    /// Is this the same page as `other` (two pins on one page)?
    pub(crate) fn same_page(&self, other: &PinnedPage) -> bool {
        self.page == other.page
    }

    pub(super) fn as_ptr(&self) -> *mut bindings::page {
        self.page.as_ptr()
    }

    pub(crate) fn pfn(&self) -> usize {
        // SAFETY: the page is valid (pinned) by the type invariant.
        unsafe { ffi::ulive_page_to_pfn(self.page.as_ptr()) as usize }
    }
}

impl Drop for PinnedPage {
    fn drop(&mut self) {
        // SAFETY: by the type invariant we own one pin on the page's folio.
        unsafe { bindings::unpin_user_page(self.page.as_ptr()) };
    }
}

/// The pages of a buffer, in dma-buf order, each holding its own pin; a slot may be
/// empty (unpopulated: the memfd lost the page and nothing has needed it since).
///
/// # Invariants
/// Every element is a pinned page or `None`; the vector is laid out as an array of
/// `struct page *` (`Option<PinnedPage>` is a nullable page pointer), which C may read.
/// `missing` is the number of `None` elements.
///
/// While `as_appended` is set, the array is exactly as `append_pinned_folios` built it,
/// one segment per call (`seams` holds the first index of each segment after the
/// first): within a segment, each folio's pages follow each other in order from the
/// first one taken up to the folio's end or the segment's end.
pub(crate) struct PinnedPages {
    pages: KVVec<Option<PinnedPage>>,
    missing: usize,
    /// Some appended folio gave more than one page (hugetlb): unpinning then goes by
    /// folio, not by page. Only a hint for speed.
    large: bool,
    /// No entry was replaced since the appends (see the invariant).
    as_appended: bool,
    /// First index of every segment after the first; no allocation for one segment.
    seams: KVec<usize>,
}

impl PinnedPages {
    /// An empty set with room for `nr_pages` pages (no allocation later while appending).
    pub(crate) fn with_capacity(nr_pages: usize) -> Result<Self> {
        Ok(Self::from_vec(KVVec::with_capacity(nr_pages, GFP_KERNEL)?))
    }

    /// No pages (used once a buffer is released).
    pub(crate) fn empty() -> Self {
        Self::from_vec(KVVec::new())
    }

    fn from_vec(pages: KVVec<Option<PinnedPage>>) -> Self {
        // INVARIANT: no entries yet.
        Self {
            pages,
            missing: 0,
            large: false,
            as_appended: true,
            seams: KVec::new(),
        }
    }

    /// Take over the `n` folios at `folios`, each pinned once by `memfd_pin_folios`,
    /// and append up to `want` of their pages, from byte `first_offset` of the first
    /// folio on, each with its own pin. All the folio pins are consumed, also on error.
    /// Returns how many pages were appended.
    ///
    /// # Safety
    /// `folios` holds `n` valid folios on each of which the caller owns one pin, which
    /// it hands over.
    pub(super) unsafe fn append_pinned_folios(
        &mut self,
        folios: *mut *mut bindings::folio,
        n: usize,
        first_offset: usize,
        want: usize,
    ) -> Result<usize> {
        let start = self.pages.len();
        // A failed push only costs the fast unpin (it would miss this seam).
        if start != 0 && self.as_appended && self.seams.push(start, GFP_KERNEL).is_err() {
            self.as_appended = false;
        }
        let spare = self.pages.spare_capacity_mut();
        let room = spare.len().min(want);
        let mut err = 0;
        // SAFETY: the caller hands over one pin on each of the `n` folios; `spare` has
        // room for `room` entries and PinnedPage is a transparent page pointer, so the
        // helper may store page pointers there; `err` is a valid out-pointer.
        let count = unsafe {
            ffi::ulive_folios_take_pages(
                folios,
                n as c_ulong,
                first_offset as c_ulong,
                room as c_ulong,
                spare.as_mut_ptr().cast(),
                &mut err,
            )
        } as usize;
        // SAFETY: the helper initialised `count` (<= room) entries after the current
        // length, each owning one pin on its page's folio (INVARIANT of PinnedPages).
        unsafe { self.pages.inc_len(count.min(room)) };
        self.large |= count > n;
        kernel::error::to_result(err)?;
        Ok(count)
    }

    pub(crate) fn len(&self) -> usize {
        self.pages.len()
    }

    /// The pages, in order, each with its pin (the worker pairs them with indices).
    pub(crate) fn into_iter(mut self) -> impl Iterator<Item = PinnedPage> {
        // `self` is left empty: its drop unpins nothing; the iterator owns the pins.
        self.missing = 0;
        core::mem::take(&mut self.pages).into_iter().flatten()
    }

    /// Page frame number of page `index` (`None` if out of range or unpopulated).
    pub(crate) fn pfn(&self, index: usize) -> Option<usize> {
        self.get(index).map(PinnedPage::pfn)
    }

    /// Put `new` (a page, or nothing) at `index` and return what it replaces (the caller
    /// drops the old pin once nothing can reach the old page any more); `Err(new)` for
    /// an index out of range.
    pub(crate) fn replace(
        &mut self,
        index: usize,
        new: Option<PinnedPage>,
    ) -> core::result::Result<Option<PinnedPage>, Option<PinnedPage>> {
        let Some(slot) = self.pages.get_mut(index) else {
            return Err(new);
        };
        self.as_appended = false;
        let filled = new.is_some();
        let old = core::mem::replace(slot, new);
        // INVARIANT: `missing` follows the slot from empty to full or back.
        match (old.is_some(), filled) {
            (true, false) => self.missing += 1,
            (false, true) => self.missing -= 1,
            _ => {}
        }
        Ok(old)
    }

    /// The page at `index`, if populated.
    pub(crate) fn get(&self, index: usize) -> Option<&PinnedPage> {
        self.pages.get(index).and_then(Option::as_ref)
    }

    /// Is slot `index` empty (unpopulated)?
    pub(crate) fn is_missing(&self, index: usize) -> bool {
        self.pages.get(index).is_some_and(Option::is_none)
    }

    /// How many slots are empty.
    pub(crate) fn missing(&self) -> usize {
        self.missing
    }

    /// Raw page array for C functions that only read it: NULL entries for empty slots,
    /// so callers that need every page (sg tables, vm_map_ram) check
    /// [`Self::missing`] first.
    pub(super) fn raw_pages(&self) -> *mut *mut bindings::page {
        self.pages.as_ptr().cast::<*mut bindings::page>().cast_mut()
    }
}

impl Drop for PinnedPages {
    fn drop(&mut self) {
        if self.missing > 0 {
            // The C unpinners want every entry to be a page: close the gaps first.
            self.pages.retain(|p| p.is_some());
            self.as_appended = false;
        }
        let (raw, len, cap) = core::mem::take(&mut self.pages).into_raw_parts();
        let raw = raw.cast::<*mut bindings::page>();
        // SAFETY: every entry owns one pin on its page's folio (type invariant; the empty
        // slots were removed above); all three
        // functions drop one pin per entry, with one atomic operation per run of entries
        // in the same folio. ulive_unpin_appended() relies on the array being as appended
        // (`as_appended`, with `seams` as the segment starts: type invariant); `seams` is
        // an array of `usize`, which is `unsigned long` in C.
        unsafe {
            match (self.large, self.as_appended) {
                (true, true) => ffi::ulive_unpin_appended(
                    raw,
                    len as c_ulong,
                    self.seams.as_ptr().cast(),
                    self.seams.len() as c_ulong,
                ),
                (true, false) => ffi::ulive_unpin_pages(raw, len as c_ulong),
                (false, _) => bindings::unpin_user_pages(raw, len as c_ulong),
            }
        };
        // SAFETY: the raw parts of the vector taken above, with a length of 0: the array
        // is freed and its entries, whose pins were dropped above, are not dropped again.
        drop(unsafe { KVVec::from_raw_parts(raw.cast::<Option<PinnedPage>>(), 0, cap) });
    }
}
