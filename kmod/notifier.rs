// SPDX-License-Identifier: GPL-2.0
//! The notifier side of live updates: `notifier -> worker -> importers` starts here.
//!
//! A [`Watch`] is the handler of one mmu interval notifier on a user mapping of a memfd
//! range. When the range is invalidated (a hole punch unmaps it before truncating), it
//! records the affected buffer pages in the buffer's [`Tracker`] and queues the
//! buffer's work item. It runs in the notifier path: no sleeping, no allocation, one spinlock.

use crate::buffer::Buffer;
use crate::dirty::Bits;
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
#[kunit_tests(udmabuf_live_tracker)]
mod tests {
    use super::*;
    use core::iter::once;

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
