// SPDX-License-Identifier: GPL-2.0
//! Which mappings of a buffer's memfd ranges have a notifier: every mapping, in every
//! process, not only the creator's (a VMM's guest RAM is mapped by vhost-user back-ends
//! too), and again after the mappings change.
//!
//! - At CREATE, `watch_range` puts a notifier on each mapping of each range.
//! - A notifier whose mapping goes away (munmap, mremap, exec, exit) clears its `alive`
//!   flag and the buffer's WATCHED state in its callback; it cannot remove itself there.
//! - Whenever the module gets control for an unwatched buffer (SYNC, INFO, and the worker,
//!   which a map or a CPU fault asks to), `Buffer::rewatch` drops the dead notifiers,
//!   puts one on each mapping that appeared since, and sets WATCHED again if the live ones
//!   cover every page. Until then the lazy checks keep the buffer coherent.
//!
//! Lock "udmabuf_live_notifiers" (`Buffer::notifiers`) ranks before the mmap_lock of any
//! process (registering a notifier may take it for write) and is never taken under a
//! lock of ours. A notifier holds its mm_struct (mmgrab), not the address space: a
//! process that exits while the buffer lives frees its memory at once.

use crate::buffer::Buffer;
use crate::notifier::{Tracker, Watch};
use crate::one_or_many::OneOrMany;
use crate::sys::{memfd::MemFile, notifier::IntervalNotifier, PAGE_SHIFT};
use kernel::{prelude::*, sync::Arc};

/// The notifiers of a buffer (one, over one mapping, without a list allocation).
pub(crate) struct Watchers {
    list: OneOrMany<Pin<KBox<IntervalNotifier<Watch>>>>,
    /// Set by the release op: no notifier may be added any more.
    closed: bool,
}

impl Watchers {
    pub(crate) fn new() -> Self {
        Self {
            list: OneOrMany::new(),
            closed: false,
        }
    }

    /// Notifiers whose mapping is still there (INFO: watched mappings).
    pub(crate) fn live(&self) -> usize {
        self.list.iter().filter(|n| n.handler().alive()).count()
    }

    /// The release op: take every notifier down (waiting for callbacks in flight) and
    /// refuse new ones.
    pub(crate) fn close(&mut self) {
        self.closed = true;
        self.list = OneOrMany::new();
    }

    /// Put a notifier on every mapping, in any process, of the `nr` pages at byte
    /// `offset` of `file`, which are buffer pages from `first_page` on, unless one
    /// already watches it. Runs without any lock of ours but this list's: registering the
    /// first notifier of a process takes its mmap lock, under which hugetlbfs takes the
    /// inode lock.
    pub(crate) fn watch_range(
        &mut self,
        tracker: &Arc<Tracker>,
        file: &MemFile,
        offset: u64,
        (first_page, nr): (usize, usize),
    ) -> Result {
        let len = (nr << PAGE_SHIFT) as u64;
        let maps = file.mappings(offset, len)?;
        self.list.reserve(maps.len())?;
        crate::sys::params::test_delay();
        for m in maps.iter() {
            let first = first_page + ((m.offset - offset) >> PAGE_SHIFT) as usize;
            let pages = first..first + (m.len >> PAGE_SHIFT);
            let mm_id = m.mm.as_raw() as usize;
            if self
                .list
                .iter()
                .any(|n| n.handler().watches(mm_id, m.va, &pages))
            {
                continue;
            }
            let watch = Watch::new(tracker.clone(), first_page + nr, m.va, pages, mm_id);
            let notifier = IntervalNotifier::register(&m.mm, m.va, m.len, watch)?;
            notifier.wait_live();
            // The mapping was found before the notifier went in: a munmap, MAP_FIXED or
            // mremap in between went unseen. Only a mapping still in place is watched.
            if !file.still_mapped(m) {
                continue;
            }
            // Cannot fail: room reserved above.
            let _ = self.list.push(notifier);
        }
        Ok(())
    }

    /// Do the live notifiers cover buffer pages `0..nr_pages` without a gap?
    pub(crate) fn cover(&self, nr_pages: usize) -> Result<bool> {
        // One notifier (a buffer over one mapping, the common case): nothing to sort.
        if let [n] = &self.list[..] {
            let pages = n.handler().pages();
            return Ok(n.handler().alive() && pages.start == 0 && pages.end >= nr_pages);
        }
        let mut spans = KVec::with_capacity(self.list.len(), GFP_KERNEL)?;
        for n in self.list.iter().filter(|n| n.handler().alive()) {
            // Cannot fail: capacity reserved above.
            let _ = spans.push_within_capacity(n.handler().pages());
        }
        spans.sort_unstable_by_key(|r| r.start);
        let mut reached = 0;
        for r in spans.iter() {
            if r.start > reached {
                return Ok(false);
            }
            reached = reached.max(r.end);
        }
        Ok(reached >= nr_pages)
    }

    /// Drop the notifiers whose mapping went away (waiting for their callbacks).
    fn prune(&mut self) {
        self.list.retain(|n| n.handler().alive());
    }
}

impl Buffer {
    /// Re-arm: if the buffer is not watched, drop the dead notifiers, watch the
    /// mappings that appeared since, and set WATCHED again if every page is covered.
    /// The caller then checks every page (punches in between were not seen). Process
    /// context, no lock of ours held.
    pub(crate) fn rewatch(&self) -> Result {
        if self.tracker.watched() {
            return Ok(());
        }
        let tracker = self.tracker.get();
        let mut watchers = self.notifiers.lock();
        if watchers.closed {
            return Ok(());
        }
        let seen = self.tracker.unmaps();
        // A dead notifier keeps its process's mm_struct: let it go now.
        watchers.prune();
        for r in self.ranges.iter().filter(|r| r.file.is_mapped()) {
            watchers.watch_range(tracker, &r.file, r.offset, (r.first_page, r.nr_pages))?;
        }
        let covered = watchers.cover(self.nr_pages)?;
        self.tracker.set_covered(covered, seen);
        Ok(())
    }

    /// Could a re-arm find something to watch (the buffer is unwatched and some process
    /// maps one of its memfds)? Cheap: for a map or a fault, which then ask the worker.
    pub(crate) fn rewatch_wanted(&self) -> bool {
        !self.tracker.watched() && self.ranges.iter().any(|r| r.file.is_mapped())
    }
}
