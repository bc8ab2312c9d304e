// SPDX-License-Identifier: GPL-2.0
//! The notifier side of live updates: `notifier -> worker -> importers` starts here.
//!
//! A [`Watch`] is the handler of one mmu interval notifier on a user mapping of a memfd
//! range. When the range is invalidated (a hole punch unmaps it before truncating), it
//! records the affected buffer pages in the buffer's [`Tracker`] and queues the
//! buffer's work item. It runs in the notifier path: no sleeping, no allocation, one spinlock.

use crate::buffer::Buffer;
use crate::sys::{
    notifier::{InvalidateHandler, SeqToken},
    PAGE_SIZE,
};
use core::ops::Range;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use kernel::{
    new_spinlock,
    prelude::*,
    sync::{Arc, SpinLock},
};

/// Bitmap words held inline, without an allocation of their own: 4 MiB of pages.
const INLINE_WORDS: usize = 16;

/// The words of a [`Bits`]: inline for a small buffer (then the tracker is one
/// allocation), on the heap beyond.
enum Words {
    Inline([u64; INLINE_WORDS], usize),
    Heap(KVVec<u64>),
}

impl Words {
    /// `n` zeroed words.
    fn zeroed(n: usize) -> Result<Self> {
        Ok(if n <= INLINE_WORDS {
            Self::Inline([0; INLINE_WORDS], n)
        } else {
            Self::Heap(KVVec::from_elem(0u64, n, GFP_KERNEL)?)
        })
    }

    fn as_slice(&self) -> &[u64] {
        match self {
            Self::Inline(w, n) => w.get(..*n).unwrap_or(&[]),
            Self::Heap(v) => v,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [u64] {
        match self {
            Self::Inline(w, n) => w.get_mut(..*n).unwrap_or(&mut []),
            Self::Heap(v) => v,
        }
    }
}

/// A bitmap of buffer pages to re-check. `words` covers bit `64 * base` on; only the
/// words in `lo..hi` can be non-zero (an empty window means nothing is marked), so
/// scanning and taking cost the marked window, not the buffer.
pub(crate) struct Bits {
    words: Words,
    base: usize,
    lo: usize,
    hi: usize,
}

impl Bits {
    /// A cleared bitmap of `n` words from word `base` on.
    fn zeroed(n: usize, base: usize) -> Result<Self> {
        Ok(Self {
            words: Words::zeroed(n)?,
            base,
            lo: 0,
            hi: 0,
        })
    }

    /// A cleared bitmap for an `nr_pages` buffer.
    fn new(nr_pages: usize) -> Result<Self> {
        Self::zeroed(nr_pages.div_ceil(64), 0)
    }

    /// Every page of an `nr_pages` buffer marked.
    pub(crate) fn all(nr_pages: usize) -> Result<Self> {
        let mut bits = Self::new(nr_pages)?;
        bits.set_range(0..nr_pages);
        Ok(bits)
    }

    /// OR `mask` into word `w` (relative to `base`) and widen the marked window.
    fn or_word(&mut self, w: usize, mask: u64) {
        let Some(word) = self.words.as_mut_slice().get_mut(w) else {
            return;
        };
        if mask == 0 {
            return;
        }
        *word |= mask;
        (self.lo, self.hi) = if self.lo == self.hi {
            (w, w + 1)
        } else {
            (self.lo.min(w), self.hi.max(w + 1))
        };
    }

    /// Mark `pages`, a word at a time (this runs in the notifier callback).
    fn set_range(&mut self, pages: Range<usize>) {
        let (start, end) = (pages.start.max(self.base * 64), pages.end);
        let mut i = start;
        while i < end {
            let bit = i % 64;
            let n = (64 - bit).min(end - i);
            let mask = if n == 64 {
                !0
            } else {
                ((1u64 << n) - 1) << bit
            };
            self.or_word(i / 64 - self.base, mask);
            i += n;
        }
    }

    /// The marked pages as maximal runs `[start, end)` (see `bitruns.rs`).
    pub(crate) fn runs(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        let first = (self.base + self.lo) * 64;
        let words = self.words.as_slice().get(self.lo..self.hi).unwrap_or(&[]);
        crate::bitruns::runs(words).map(move |r| first + r.start..first + r.end)
    }

    pub(crate) fn any(&self) -> bool {
        self.lo < self.hi
    }

    /// The words that may hold marks, as word numbers (word `w` holds bits `64 * w` on);
    /// empty when nothing is marked.
    fn window(&self) -> Range<usize> {
        self.base + self.lo..self.base + self.hi
    }

    /// A cleared bitmap covering the words `window`, for [`Bits::take_into`].
    fn for_window(window: Range<usize>) -> Result<Self> {
        Self::zeroed(window.len(), window.start)
    }

    /// Move the marks of the words `into` covers into `into` (made by
    /// [`Bits::for_window`] from an earlier [`Bits::window`], still cleared). The window
    /// may have grown since it was read: marks outside `into`'s words stay here.
    fn take_into(&mut self, into: &mut Bits) {
        let Some(lo) = into.base.checked_sub(self.base) else {
            return;
        };
        let hi = lo + into.words.as_slice().len();
        let (from, to) = (self.lo.max(lo), self.hi.min(hi));
        for w in from..to {
            let Some(word) = self.words.as_mut_slice().get_mut(w).map(core::mem::take) else {
                break;
            };
            into.or_word(w - lo, word);
        }
        if self.lo >= from && self.hi <= to {
            (self.lo, self.hi) = (0, 0); // all taken
        }
    }

    /// Mark again every page marked in `taken` (taken from this bitmap by
    /// [`Bits::take_into`]); marks made since stay.
    fn restore_from(&mut self, taken: &Bits) {
        for (i, &t) in taken.words.as_slice().iter().enumerate() {
            if let Some(w) = (taken.base + i).checked_sub(self.base) {
                self.or_word(w, t);
            }
        }
    }
}

/// What the notifiers of one buffer record, shared by their callbacks and the buffer.
///
/// The notifiers are registered before the pages are pinned, so that a punch between
/// the pin and the registration cannot go unseen; the buffer does not exist yet then.
/// Marks made meanwhile wait here until [`Tracker::attach`] hands the buffer over.
///
/// # Invariants
/// `owner` is set from export until the release op has removed every notifier, so a
/// callback's clone of it is never the last reference to the buffer.
#[pin_data]
pub(crate) struct Tracker {
    /// Lock "udmabuf_live_dirty": the only lock a notifier callback takes.
    #[pin]
    inner: SpinLock<Marked>,
    /// True while mmu notifiers watch every page; otherwise the lazy checks run.
    watched: AtomicBool,
    /// Invalidations seen (debugfs).
    invalidations: AtomicU64,
    /// Updates that took marks and have not installed (or put back) their pages yet:
    /// raised before the marks are taken, so that "nothing marked and nothing in
    /// flight" really means the buffer is current. See [`Taken`].
    in_flight: AtomicUsize,
}

struct Marked {
    /// Pages invalidated since the worker last looked.
    bits: Bits,
    /// Watched mappings that went away (munmap, mremap, exec, exit), ever: a re-arm
    /// that counted them before it looked may only then report every page watched.
    unmaps: u64,
    /// The buffer whose worker to queue; `None` before export and after release.
    owner: Option<Arc<Buffer>>,
}

impl Tracker {
    pub(crate) fn new(nr_pages: usize) -> Result<impl PinInit<Self>> {
        let bits = Bits::new(nr_pages)?;
        Ok(pin_init!(Self {
            inner <- new_spinlock!(Marked { bits, unmaps: 0, owner: None }, "udmabuf_live_dirty"),
            watched: AtomicBool::new(false),
            invalidations: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }))
    }

    /// From now on invalidations queue `buffer`'s worker; queue it now if pages were
    /// marked before.
    fn attach(&self, buffer: &Arc<Buffer>) {
        let pending = {
            let mut inner = self.inner.lock();
            inner.owner = Some(buffer.clone());
            inner.bits.any()
        };
        if pending {
            let _ = buffer.queue.get().enqueue(buffer.clone());
        }
    }

    /// Queue the buffer's worker (for marks a caller could not handle itself).
    fn kick(&self) {
        let owner = self.inner.lock().owner.clone();
        if let Some(buffer) = owner {
            let _ = buffer.queue.get().enqueue(buffer.clone());
        }
    }

    /// Drop the reference to the buffer. Only once no notifier can call back any more
    /// (see the type invariant).
    fn detach(&self) -> Option<Arc<Buffer>> {
        self.inner.lock().owner.take()
    }

    /// Whether the notifiers see every punch of every page (all pages covered by a
    /// mapping that is still there).
    fn watched(&self) -> bool {
        self.watched.load(Ordering::Acquire)
    }

    /// The count of watched mappings gone so far (see [`Tracker::set_covered`]).
    pub(crate) fn unmaps(&self) -> u64 {
        self.inner.lock().unmaps
    }

    /// Record whether the live notifiers cover every page, as a re-arm found after
    /// reading [`Tracker::unmaps`] as `seen`: if a mapping went away since, it stays
    /// unwatched (and the next sync point looks again).
    pub(crate) fn set_covered(&self, covered: bool, seen: u64) {
        let inner = self.inner.lock();
        self.watched
            .store(covered && inner.unmaps == seen, Ordering::Release);
    }

    /// Take the marked pages, leaving none marked. Allocates (the marked window only,
    /// outside the spinlock): never from the notifier.
    fn take(&self) -> Result<Bits> {
        let window = self.inner.lock().bits.window();
        let mut taken = Bits::for_window(window)?;
        self.inner.lock().bits.take_into(&mut taken);
        Ok(taken)
    }

    /// Put back pages taken by [`Self::take`] that could not be handled.
    fn restore(&self, taken: &Bits) {
        self.inner.lock().bits.restore_from(taken);
    }

    fn pending(&self) -> bool {
        self.inner.lock().bits.any()
    }
}

/// A buffer's tracker. Every buffer has one, also when nothing maps its memfd at
/// create: a mapping may appear later and be watched then (see `watchers.rs`).
pub(crate) struct BufferTracker(Arc<Tracker>);

impl BufferTracker {
    pub(crate) fn new(tracker: Arc<Tracker>) -> Self {
        Self(tracker)
    }

    /// The tracker, for new notifiers.
    pub(crate) fn get(&self) -> &Arc<Tracker> {
        &self.0
    }

    /// See [`Tracker::unmaps`].
    pub(crate) fn unmaps(&self) -> u64 {
        self.0.unmaps()
    }

    /// See [`Tracker::set_covered`].
    pub(crate) fn set_covered(&self, covered: bool, seen: u64) {
        self.0.set_covered(covered, seen);
    }

    /// See [`Tracker::attach`].
    pub(crate) fn attach(&self, buffer: &Arc<Buffer>) {
        self.0.attach(buffer);
    }

    /// See [`Tracker::detach`].
    pub(crate) fn detach(&self) -> Option<Arc<Buffer>> {
        self.0.detach()
    }

    /// See [`Tracker::watched`].
    pub(crate) fn watched(&self) -> bool {
        self.0.watched()
    }

    /// Take the marked pages for an update, which is in flight until the [`Taken`]
    /// drops. See [`Tracker::take`].
    pub(crate) fn take(&self) -> Result<Taken<'_>> {
        let t = &*self.0;
        t.in_flight.fetch_add(1, Ordering::AcqRel);
        match t.take() {
            Ok(bits) => Ok(Taken { bits, tracker: t }),
            Err(e) => {
                t.in_flight.fetch_sub(1, Ordering::AcqRel);
                Err(e)
            }
        }
    }

    /// Pages are marked (an update has not taken them yet).
    pub(crate) fn marked(&self) -> bool {
        self.0.pending()
    }

    /// Marks wait, or an update that took some has not finished: the buffer may not be
    /// current. See [`Tracker::pending`].
    pub(crate) fn pending(&self) -> bool {
        self.0.pending() || self.0.in_flight.load(Ordering::Acquire) > 0
    }

    /// See [`Tracker::kick`].
    pub(crate) fn kick(&self) {
        self.0.kick();
    }

    /// Invalidations the notifiers saw (debugfs).
    pub(crate) fn invalidations(&self) -> u64 {
        self.0.invalidations.load(Ordering::Relaxed)
    }
}

/// Marks taken by one update. The update is in flight (see `Tracker::in_flight`) until
/// this drops; an update that could not install its pages puts the marks back first.
pub(crate) struct Taken<'a> {
    bits: Bits,
    tracker: &'a Tracker,
}

impl Taken<'_> {
    pub(crate) fn bits(&self) -> &Bits {
        &self.bits
    }

    /// Put the marks back: the pages are still to be checked.
    pub(crate) fn restore(&self) {
        self.tracker.restore(&self.bits);
    }
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        self.tracker.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Handler of one notifier: user addresses from `va_start` of one process show buffer
/// pages `pages` (of a range ending at `end_page`).
pub(crate) struct Watch {
    tracker: Arc<Tracker>,
    /// End of the buffer pages this notifier's range shows.
    end_page: usize,
    va_start: usize,
    /// The buffer pages the watched mapping shows.
    pages: Range<usize>,
    /// The watched address space (its mm_struct, kept by the notifier), for telling
    /// mappings apart; never dereferenced.
    mm_id: usize,
    /// Cleared when the mapping goes away (munmap, mremap, exec, exit).
    alive: AtomicBool,
}

impl Watch {
    pub(crate) fn new(
        tracker: Arc<Tracker>,
        end_page: usize,
        va_start: usize,
        pages: Range<usize>,
        mm_id: usize,
    ) -> Self {
        Self {
            tracker,
            end_page,
            va_start,
            pages,
            mm_id,
            alive: AtomicBool::new(true),
        }
    }

    /// Is the watched mapping still there?
    pub(crate) fn alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Does this notifier watch the mapping at `va` of `mm_id` that shows `pages`?
    pub(crate) fn watches(&self, mm_id: usize, va: usize, pages: &Range<usize>) -> bool {
        self.alive() && self.mm_id == mm_id && self.va_start == va && self.pages == *pages
    }

    /// The buffer pages this notifier watches.
    pub(crate) fn pages(&self) -> Range<usize> {
        self.pages.clone()
    }

    /// The buffer pages an invalidation of user addresses `va` touches: every page any
    /// byte of `va` falls in, up to the end of the range. `None` for an empty `va` or
    /// one that starts below the watched mapping.
    fn pages_of(&self, va: &Range<usize>) -> Option<Range<usize>> {
        if va.start >= va.end || va.start < self.va_start {
            return None;
        }
        let first = self.pages.start + (va.start - self.va_start) / PAGE_SIZE;
        let last = self.pages.start + (va.end - self.va_start).div_ceil(PAGE_SIZE);
        Some(first..last.min(self.end_page))
    }
}

impl InvalidateHandler for Watch {
    fn invalidate(&self, va: Range<usize>, unmapping: bool, seq: &SeqToken<'_>) {
        let tracker = &self.tracker;
        let mut inner = tracker.inner.lock();
        seq.set_seq();
        if let Some(pages) = self.pages_of(&va) {
            inner.bits.set_range(pages);
        }
        if unmapping {
            // This mapping is going away: later punches through it will not be seen,
            // until a re-arm finds the mappings there are then.
            self.alive.store(false, Ordering::Release);
            inner.unmaps = inner.unmaps.wrapping_add(1);
            tracker.watched.store(false, Ordering::Release);
        }
        // Cloning an Arc allocates nothing; by the Tracker invariant it is not the last.
        let owner = inner.owner.clone();
        drop(inner);
        tracker.invalidations.fetch_add(1, Ordering::Relaxed);
        if let Some(buffer) = owner {
            // If already queued, the clone is dropped again (not the last reference).
            let _ = buffer.queue.get().enqueue(buffer.clone());
        }
    }
}

// KUnit runs these when the module loads on a kernel with CONFIG_KUNIT (the macro gates
// the whole module on it); the guest's `kunit` suite reports their results.
#[kunit_tests(udmabuf_live_dirty_bitmap)]
mod tests {
    use super::*;
    use core::iter::once;

    #[test]
    fn empty_bitmap_marks_nothing() -> Result {
        for nr_pages in [0, 1, 64, 200] {
            let bits = Bits::new(nr_pages)?;
            assert!(!bits.any());
            assert!(bits.runs().next().is_none());
            assert!(bits.window().is_empty());
        }
        Ok(())
    }

    #[test]
    fn one_page_at_word_boundaries() -> Result {
        for page in [0, 1, 62, 63, 64, 65, 127, 128, 199] {
            let mut bits = Bits::new(200)?;
            bits.set_range(page..page + 1);
            assert!(bits.any());
            assert!(bits.runs().eq(once(page..page + 1)));
            assert_eq!(bits.window(), page / 64..page / 64 + 1);
        }
        Ok(())
    }

    #[test]
    fn ranges_across_word_boundaries() -> Result {
        for pages in [63..65, 63..66, 64..128, 60..130, 0..192, 1..191] {
            let mut bits = Bits::new(192)?;
            bits.set_range(pages.clone());
            assert!(bits.runs().eq(once(pages.clone())));
            assert_eq!(bits.window(), pages.start / 64..pages.end.div_ceil(64));
        }
        Ok(())
    }

    #[test]
    fn adjacent_marks_merge_and_gaps_stay() -> Result {
        let mut bits = Bits::new(300)?;
        bits.set_range(10..20);
        bits.set_range(20..64);
        bits.set_range(64..65);
        bits.set_range(70..71);
        bits.set_range(255..300);
        assert!(bits.runs().eq([10..65, 70..71, 255..300]));
        // Marking again changes nothing.
        bits.set_range(12..13);
        assert!(bits.runs().eq([10..65, 70..71, 255..300]));
        Ok(())
    }

    #[test]
    fn all_marks_exactly_the_buffer() -> Result {
        // 1024 pages are the last inline bitmap (16 words), 1025 the first on the heap.
        for nr_pages in [1, 63, 64, 65, 127, 128, 130, 1024, 1025, 4097] {
            let bits = Bits::all(nr_pages)?;
            assert!(bits.any());
            assert!(bits.runs().eq(once(0..nr_pages)));
            assert_eq!(bits.window(), 0..nr_pages.div_ceil(64));
        }
        assert!(matches!(Bits::all(1024)?.words, Words::Inline(..)));
        assert!(matches!(Bits::all(1025)?.words, Words::Heap(_)));
        Ok(())
    }

    #[test]
    fn last_partial_word() -> Result {
        let mut bits = Bits::new(130)?;
        bits.set_range(128..130);
        assert!(bits.runs().eq(once(128..130)));
        assert_eq!(bits.window(), 2..3);
        Ok(())
    }

    #[test]
    fn marks_past_the_words_are_dropped() -> Result {
        // Callers clip to the buffer; what lies beyond the last word is not written.
        let mut bits = Bits::new(64)?;
        bits.set_range(100..200);
        assert!(!bits.any());
        bits.set_range(60..200);
        assert!(bits.runs().eq(once(60..64)));
        Ok(())
    }

    #[test]
    fn take_returns_the_marks_and_clears_them() -> Result {
        let mut bits = Bits::new(1100)?;
        for pages in [3..5, 63..66, 640..650, 1099..1100] {
            bits.set_range(pages);
        }
        let mut taken = Bits::for_window(bits.window())?;
        bits.take_into(&mut taken);
        assert!(taken.runs().eq([3..5, 63..66, 640..650, 1099..1100]));
        assert!(!bits.any());
        assert!(bits.runs().next().is_none());
        // Taking again finds nothing.
        let mut again = Bits::for_window(bits.window())?;
        bits.take_into(&mut again);
        assert!(!again.any());
        Ok(())
    }

    #[test]
    fn take_of_a_window_far_from_page_zero() -> Result {
        let mut bits = Bits::new(1100)?;
        bits.set_range(640..650);
        let window = bits.window();
        assert_eq!(window, 10..11);
        let mut taken = Bits::for_window(window)?;
        bits.take_into(&mut taken);
        // One word, numbered from word 10: the runs are still buffer pages.
        assert_eq!(taken.words.as_slice().len(), 1);
        assert!(taken.runs().eq(once(640..650)));
        assert!(!bits.any());
        Ok(())
    }

    #[test]
    fn marks_outside_the_window_read_stay() -> Result {
        let mut bits = Bits::new(300)?;
        bits.set_range(5..6);
        let mut taken = Bits::for_window(bits.window())?;
        // A notifier marks more pages between reading the window and taking.
        bits.set_range(200..201);
        bits.set_range(7..8);
        bits.take_into(&mut taken);
        assert!(taken.runs().eq([5..6, 7..8]));
        assert!(bits.runs().eq(once(200..201)));
        assert!(bits.any());
        Ok(())
    }

    #[test]
    fn restore_puts_back_what_was_taken() -> Result {
        let mut bits = Bits::new(300)?;
        bits.set_range(0..1);
        bits.set_range(63..65);
        bits.set_range(299..300);
        let mut taken = Bits::for_window(bits.window())?;
        bits.take_into(&mut taken);
        assert!(!bits.any());
        bits.restore_from(&taken);
        assert!(bits.runs().eq([0..1, 63..65, 299..300]));
        assert_eq!(bits.window(), 0..5);
        Ok(())
    }

    #[test]
    fn marks_between_take_and_restore_survive() -> Result {
        let mut bits = Bits::new(300)?;
        bits.set_range(64..66);
        let mut taken = Bits::for_window(bits.window())?;
        bits.take_into(&mut taken);
        // New invalidations while the update runs, inside and outside the taken words.
        bits.set_range(66..67);
        bits.set_range(250..251);
        bits.restore_from(&taken);
        assert!(bits.runs().eq([64..67, 250..251]));
        Ok(())
    }

    #[test]
    fn tracker_take_restore_and_in_flight() -> Result {
        let tracker = BufferTracker::new(Arc::pin_init(Tracker::new(256)?, GFP_KERNEL)?);
        assert!(!tracker.pending());
        tracker.get().inner.lock().bits.set_range(100..103);
        assert!(tracker.pending());
        let taken = tracker.take()?;
        assert!(taken.bits().runs().eq(once(100..103)));
        // Nothing marked, but an update holds marks: still pending.
        assert!(!tracker.get().pending());
        assert!(tracker.pending());
        tracker.get().inner.lock().bits.set_range(0..1);
        taken.restore();
        drop(taken);
        assert!(tracker.get().inner.lock().bits.runs().eq([0..1, 100..103]));
        // An update that installs its pages drops its marks without restoring them.
        drop(tracker.take()?);
        assert!(!tracker.pending());
        Ok(())
    }

    #[test]
    fn invalidated_addresses_to_pages() -> Result {
        const VA: usize = 0x7f00_0000_0000;
        let tracker = Arc::pin_init(Tracker::new(64)?, GFP_KERNEL)?;
        // A mapping at VA shows buffer pages 8..40 of a range ending at page 32.
        let watch = Watch::new(tracker, 32, VA, 8..40, 1);
        let page = |n: usize| VA + n * PAGE_SIZE;
        assert_eq!(watch.pages_of(&(page(0)..page(1))), Some(8..9));
        // Any byte of a page marks the whole page.
        assert_eq!(watch.pages_of(&(page(0) + 100..page(0) + 200)), Some(8..9));
        assert_eq!(watch.pages_of(&(page(1) - 1..page(1) + 1)), Some(8..10));
        assert_eq!(watch.pages_of(&(page(3)..page(5))), Some(11..13));
        // Clipped at the end of the range.
        assert_eq!(watch.pages_of(&(page(20)..page(40))), Some(28..32));
        // Empty, or below the mapping: nothing.
        assert_eq!(watch.pages_of(&(page(2)..page(2))), None);
        assert_eq!(watch.pages_of(&(VA - PAGE_SIZE..page(1))), None);
        Ok(())
    }
}
