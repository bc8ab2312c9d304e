// SPDX-License-Identifier: GPL-2.0
//! The worker side of live updates: re-fault what the memfd replaced, then swap it in
//! and tell the importers (`notifier -> worker -> importers`).
//!
//! 1. `refault`: for each page to check, compare the page we hold with the memfd's
//!    page-cache page; re-fault the differing ones with `memfd_pin_folios` (which also
//!    allocates pages for holes). The worker does this under the memfd's inode lock, so
//!    it runs after `shmem_fallocate` has finished truncating (the notifier fires in its
//!    unmap step, before the truncation, with that lock held for write).
//! 2. `swap`, under the dma-buf reservation lock: if a static importer pins the buffer
//!    or a vmap is active, the new pages wait in `State::deferred` (the buffer is
//!    stale) until the last unpin/vunmap. Otherwise `apply`: invalidate importer
//!    mappings, swap the pages, zap the CPU mmaps of the changed pages, wait for the
//!    reservation fences, unpin the old pages, bump the generation.

use crate::buffer::{byte_bounds, Buffer};
use crate::notifier::Bits;
use crate::sys::{
    dmabuf::ResvLocked,
    folio::{PinnedPage, PinnedPages},
    memfd::FolioScratch,
    PAGE_SHIFT,
};
use core::sync::atomic::Ordering;
use kernel::{prelude::*, sync::Arc, workqueue::WorkItem};

/// What an update did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Nothing had changed.
    Clean,
    /// New pages were swapped in.
    Applied,
    /// New pages wait for the last pin or vmap to go.
    Deferred,
    /// The dma-buf is gone.
    Released,
}

/// New pages to install: (page index, new page).
type Changes = KVVec<(usize, PinnedPage)>;

impl WorkItem for Buffer {
    type Pointer = Arc<Buffer>;

    fn run(this: Arc<Buffer>) {
        // A failure leaves the pages marked: the next notifier, SYNC, map or CPU access
        // retries. The buffer keeps its old, still pinned, pages meanwhile.
        if let Err(e) = this.update(false) {
            pr_warn!("udmabuf-live: deferred page update failed: {:?}\n", e);
        }
    }
}

impl Buffer {
    /// Bring the buffer in step with its memfds. `full` checks every page instead of
    /// the ones the notifiers marked. Used by the worker, SYNC and CPU access; takes
    /// the slot lock, then inode locks, then the reservation lock.
    pub(crate) fn update(&self, full: bool) -> Result<Outcome> {
        self.slot.with(|dmabuf| {
            let Some(dmabuf) = dmabuf else { return Ok(Outcome::Released) };
            let changes = self.refault(full, true)?;
            if changes.is_empty() {
                return Ok(Outcome::Clean);
            }
            let resv = dmabuf.lock();
            self.swap(&resv, changes)
        })
    }

    /// The lazy check, from a callback that already holds the reservation lock (map,
    /// first pin), for buffers no notifier fully watches: every page is compared with
    /// the page cache. There is no inode lock here (it ranks before the reservation
    /// lock), so a punch in progress may be seen half done. Watched buffers are left to
    /// the worker, which takes the inode lock and so sees a punch only once it is
    /// complete; marked pages are handed back to it for the same reason.
    pub(crate) fn update_locked(&self, resv: &ResvLocked<'_>) -> Result<Outcome> {
        if self.tracker.watched() {
            return Ok(Outcome::Clean);
        }
        let changes = self.refault(true, false)?;
        if changes.is_empty() {
            return Ok(Outcome::Clean);
        }
        self.swap(resv, changes)
    }

    /// Find the pages whose memfd page changed and pin the new ones: the pages the
    /// notifiers marked, or every page (`full`). Without `lock_inode` the marked pages
    /// stay marked for the worker, whose check under the inode lock is the one that
    /// counts for a punch in progress.
    fn refault(&self, full: bool, lock_inode: bool) -> Result<Changes> {
        let marked = self.tracker.take()?;
        let all = if full { Some(Bits::all(self.nr_pages)?) } else { None };
        let todo = all.as_ref().unwrap_or(&marked);
        let mut changes = KVVec::new();
        let result = if todo.any() { self.refault_marked(todo, lock_inode, &mut changes) } else { Ok(()) };
        if result.is_err() || !lock_inode {
            self.tracker.restore(&marked);
        }
        result.map(|()| changes)
    }

    fn refault_marked(&self, todo: &Bits, lock_inode: bool, changes: &mut Changes) -> Result {
        let mut scratch = FolioScratch::new();
        let mut diff = KVVec::new();
        for range in self.ranges.iter() {
            let pages = range.pages();
            let mut runs = todo
                .runs()
                .map(|r| r.start.max(pages.start)..r.end.min(pages.end))
                .filter(|r| r.start < r.end)
                .peekable();
            if runs.peek().is_none() {
                continue;
            }
            let _inode = lock_inode.then(|| range.file.lock_shared());
            for run in runs {
                // Which pages of the run left the memfd: one page-cache walk.
                diff.clear();
                diff.resize(run.len().div_ceil(64), 0u64, GFP_KERNEL)?;
                let counts = {
                    let state = self.state.lock();
                    range.file.diff(range.file_offset(run.start), &state.pages, run.clone(), Some(&mut diff))?
                };
                if counts.stale + counts.holes == 0 {
                    continue;
                }
                for sub in crate::bitruns::runs(&diff) {
                    let sub = run.start + sub.start..(run.start + sub.end).min(run.end);
                    self.pin_run(range, sub, &mut scratch, changes)?;
                }
            }
        }
        Ok(())
    }

    /// Pin the memfd's current pages for buffer pages `run`: these are the new pages.
    /// No buffer lock is held while pinning (it may allocate pages for holes).
    fn pin_run(
        &self,
        range: &crate::buffer::Range,
        run: core::ops::Range<usize>,
        scratch: &mut FolioScratch,
        changes: &mut Changes,
    ) -> Result {
        let offset = range.file_offset(run.start);
        let len = (run.len() << PAGE_SHIFT) as u64;
        let bounds = byte_bounds(offset, len)?;
        changes.reserve(run.len(), GFP_KERNEL)?;
        let mut pages = PinnedPages::with_capacity(run.len())?;
        range.file.pin_into(bounds, scratch, &mut pages, run.len())?;
        for (index, page) in run.zip(pages.into_iter()) {
            // Room was reserved above.
            let _ = changes.push_within_capacity((index, page));
        }
        Ok(())
    }
}

impl Buffer {
    /// Apply `changes` now, or defer them while a static importer pins the buffer or a
    /// vmap is active (their users may not see pages change under them).
    pub(crate) fn swap(&self, resv: &ResvLocked<'_>, changes: Changes) -> Result<Outcome> {
        {
            let mut state = self.state.lock();
            if state.pins > 0 || state.vmap.is_some() {
                state.defer(self.nr_pages, changes)?;
                return Ok(Outcome::Deferred);
            }
        }
        self.apply(resv, changes)
    }

    /// Apply the deferred pages once the last pin and vmap are gone (unpin, vunmap).
    pub(crate) fn apply_deferred(&self, resv: &ResvLocked<'_>) -> Result<Outcome> {
        let changes = {
            let mut state = self.state.lock();
            if state.pins > 0 || state.vmap.is_some() || state.deferred_count == 0 {
                return Ok(Outcome::Clean);
            }
            state.take_deferred()?
        };
        self.apply(resv, changes)
    }

    /// Swap in `changes`, in the order that keeps every user safe.
    fn apply(&self, resv: &ResvLocked<'_>, changes: Changes) -> Result<Outcome> {
        // Allocate before changing anything: on failure the new pins are dropped and
        // the buffer still holds its old pages.
        let mut old = KVVec::with_capacity(changes.len(), GFP_KERNEL)?;
        // 1. Dynamic importers drop their mappings (they map again, seeing new pages).
        resv.invalidate_mappings();
        {
            let mut state = self.state.lock();
            for (index, page) in changes {
                if let Ok(prev) = state.pages.replace(index, page) {
                    // Cannot fail: capacity reserved above.
                    let _ = old.push_within_capacity((index, prev));
                }
            }
            // The CPU-access table maps old pages; the next begin_cpu_access rebuilds it.
            state.cpu_sgt = None;
        }
        // 2. Zap CPU mmaps of the changed pages: the next access faults in the new page.
        let mut k = 0;
        while k < old.len() {
            let start = old[k].0;
            let mut end = start + 1;
            while k + 1 < old.len() && old[k + 1].0 == end {
                k += 1;
                end += 1;
            }
            resv.zap_cpu_mappings(start << PAGE_SHIFT, (end - start) << PAGE_SHIFT);
            k += 1;
        }
        // 3. Let DMA already queued against the old pages finish.
        resv.wait_idle()?;
        // 4. Nothing can reach the old pages any more: unpin them.
        let swapped = old.len() as u64;
        drop(old);
        // 5. A new generation of the buffer.
        self.counters.generation.fetch_add(1, Ordering::AcqRel);
        self.counters.updates.fetch_add(1, Ordering::Relaxed);
        self.counters.pages_swapped.fetch_add(swapped, Ordering::Relaxed);
        self.applied.notify_all();
        Ok(Outcome::Applied)
    }
}

impl crate::buffer::State {
    /// Keep `changes` for later; a newer page for the same index replaces an older one.
    fn defer(&mut self, nr_pages: usize, changes: Changes) -> Result {
        if self.deferred.is_empty() {
            self.deferred.reserve(nr_pages, GFP_KERNEL)?;
            for _ in 0..nr_pages {
                // Cannot fail: capacity reserved above.
                let _ = self.deferred.push_within_capacity(None);
            }
        }
        for (index, page) in changes {
            if let Some(slot) = self.deferred.get_mut(index) {
                if slot.replace(page).is_none() {
                    self.deferred_count += 1;
                }
            }
        }
        Ok(())
    }

    fn take_deferred(&mut self) -> Result<Changes> {
        let mut changes = KVVec::with_capacity(self.deferred_count, GFP_KERNEL)?;
        for (index, slot) in self.deferred.iter_mut().enumerate() {
            if let Some(page) = slot.take() {
                // Cannot fail: deferred_count entries are Some.
                let _ = changes.push_within_capacity((index, page));
            }
        }
        self.deferred_count = 0;
        Ok(changes)
    }
}

impl Buffer {
    /// UDMABUF_LIVE_SYNC: apply everything pending now (checking every page when some
    /// are not watched), then wait up to `timeout_ms` for deferred pages to go in.
    pub(crate) fn sync(&self, timeout_ms: u32) -> Result {
        let full = !self.tracker.watched();
        self.update(full)?;
        let mut left = kernel::time::msecs_to_jiffies(timeout_ms);
        let mut state = self.state.lock();
        while state.deferred_count > 0 {
            if left == 0 {
                return Err(ETIMEDOUT);
            }
            left = match self.applied.wait_interruptible_timeout(&mut state, left) {
                kernel::sync::CondVarTimeoutResult::Timeout => 0,
                kernel::sync::CondVarTimeoutResult::Woken { jiffies } => jiffies,
                kernel::sync::CondVarTimeoutResult::Signal { .. } => return Err(ERESTARTSYS),
            };
        }
        Ok(())
    }
}
