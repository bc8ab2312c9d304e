// SPDX-License-Identifier: GPL-2.0
//! The worker side of live updates: re-fault what the memfd replaced, then swap it in
//! and tell the importers (`notifier -> worker -> importers`).
//!
//! 1. `refault`: for each page to check, compare the page we hold with the memfd's
//!    page-cache page; re-fault the differing ones with `memfd_pin_folios` (which also
//!    allocates pages for holes, charged to the creator's memory cgroup). Under the
//!    memfd's inode lock, so it runs after `shmem_fallocate` has finished truncating
//!    (the notifier fires in its unmap step, before the truncation, with that lock held
//!    for write), and after checking the seals: once the memfd is write-sealed the
//!    buffer takes no new page from it (INFO: SEALED).
//! 2. `swap`, under the dma-buf reservation lock: if a static importer pins the buffer
//!    or a vmap is active, the new pages wait in `State::deferred` (the buffer is
//!    stale) until the last unpin/vunmap. Otherwise `apply`: invalidate importer
//!    mappings, swap the pages and bump the generation, zap the CPU mmaps of the changed
//!    pages, wait (bounded) for the reservation fences, then unpin the old pages, or
//!    keep them (`State::retired`) while an importer mapping made from them lives.
//!
//! Every error path puts the taken marks back (or asks for a full check), so a failed
//! update stays PENDING and is retried; it never reports a stale buffer as current.

use crate::buffer::{byte_bounds, Buffer, NewPage, Range, State};
use crate::dirty::Bits;
use crate::sys::{
    dmabuf::ResvLocked, folio::PinnedPages, memfd::FolioScratch, memlock::MemlockCharge, PAGE_SHIFT,
};
use core::sync::atomic::Ordering;
use kernel::{
    prelude::*,
    sync::{Arc, CondVarTimeoutResult, MutexGuard},
    workqueue::WorkItem,
};

/// How long an update waits for the fences of the reservation object before it keeps
/// the old pages until release instead: bounded, so that SYNC and close() never wait
/// behind a fence that does not signal.
const FENCE_TIMEOUT_MS: u32 = 2000;

/// How often the worker tries an update before it leaves it pending.
const UPDATE_TRIES: u32 = 10;
/// Pause after the first failed try; doubled after each one.
const RETRY_FIRST_PAUSE_MS: u32 = 2;

/// What an update did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Nothing had changed.
    Clean,
    /// New pages were swapped in.
    Applied,
    /// New pages wait for the last pin or vmap to go.
    Deferred,
    /// The memfd is write-sealed: the buffer no longer takes pages from it.
    Sealed,
    /// The dma-buf is gone.
    Released,
}

/// How much of the buffer an update compares with its memfds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// The pages the notifiers marked.
    Marked,
    /// Every page, but a range whose memfd's change counter has not moved since it was
    /// last compared is skipped without a page-cache walk (shmem).
    All,
    /// Every page, walked: after a failure or a race the counter's record may not hold.
    Every,
}

/// How `refault` takes the inode locks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum InodeLock {
    /// Wait for them (worker, SYNC, CPU access: nothing of ours is held).
    Wait,
    /// Only if free at once (under the reservation lock, which ranks after them):
    /// `EAGAIN` otherwise.
    Try,
}

/// What an update puts at each page index it changes: a new page pinned for the
/// buffer, or nothing (a hole the lazy policy leaves unpopulated). Each page is charged
/// to the buffer's memlock account: what is still in the list when it drops is unpinned
/// and uncharged, and a page taken out becomes one the buffer holds (with its charge).
pub(crate) struct Changes<'a> {
    list: KVVec<(usize, NewPage)>,
    memlock: Option<&'a MemlockCharge>,
}

/// The pages (not the holes) among `entries`.
fn pinned<'b>(entries: impl Iterator<Item = &'b (usize, NewPage)>) -> usize {
    entries.filter(|(_, p)| p.is_some()).count()
}

impl<'a> Changes<'a> {
    pub(crate) fn new(memlock: Option<&'a MemlockCharge>) -> Self {
        Self {
            list: KVVec::new(),
            memlock,
        }
    }

    pub(crate) fn with_capacity(memlock: Option<&'a MemlockCharge>, n: usize) -> Result<Self> {
        Ok(Self {
            list: KVVec::with_capacity(n, GFP_KERNEL)?,
            memlock,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Add an already charged page (or a hole); the room must have been reserved.
    pub(crate) fn push_within_capacity(
        &mut self,
        index: usize,
        page: NewPage,
    ) -> core::result::Result<(), NewPage> {
        self.list
            .push_within_capacity((index, page))
            .map_err(|e| e.0 .1)
    }

    /// The entries, leaving the list (and what its drop uncharges) empty.
    pub(crate) fn take_all(&mut self) -> KVVec<(usize, NewPage)> {
        core::mem::take(&mut self.list)
    }

    /// Drop the entries `keep` rejects (unpinning and uncharging their pages).
    fn retain(&mut self, mut keep: impl FnMut(usize, &NewPage) -> bool) {
        let before = pinned(self.list.iter());
        self.list.retain(|(index, page)| keep(*index, page));
        self.uncharge(before - pinned(self.list.iter()));
    }

    /// Give back the charge of `n` pages this list held and dropped itself.
    pub(crate) fn uncharge(&self, n: usize) {
        if let Some(m) = self.memlock {
            m.uncharge(n);
        }
    }

    /// The page indices, in order.
    fn indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.list.iter().map(|(index, _)| *index)
    }

    /// Record that buffer pages `run` become unpopulated (lazy policy).
    fn push_holes(&mut self, run: core::ops::Range<usize>) -> Result {
        self.list.reserve(run.len(), GFP_KERNEL)?;
        for index in run {
            // Room was reserved above.
            let _ = self.list.push_within_capacity((index, None));
        }
        Ok(())
    }

    /// Pin the memfd's current pages for buffer pages `run` of `range`, charging them
    /// first; `memfd_pin_folios` allocates pages for holes. No buffer lock is held while
    /// pinning.
    fn pin_run(
        &mut self,
        range: &Range,
        run: core::ops::Range<usize>,
        scratch: &mut FolioScratch,
    ) -> Result {
        let offset = range.file_offset(run.start);
        let len = (run.len() << PAGE_SHIFT) as u64;
        let bounds = byte_bounds(offset, len)?;
        self.list.reserve(run.len(), GFP_KERNEL)?;
        let mut pages = PinnedPages::with_capacity(run.len())?;
        if let Some(m) = self.memlock {
            m.charge(run.len())?;
        }
        let pinned = range.file.pin_into(bounds, scratch, &mut pages, run.len());
        // What is not kept is not held: give its charge back (on error `pages` drops).
        let kept = if pinned.is_ok() { pages.len() } else { 0 };
        self.uncharge(run.len() - kept);
        pinned?;
        for (index, page) in run.zip(pages.into_iter()) {
            // Room was reserved above.
            let _ = self.list.push_within_capacity((index, Some(page)));
        }
        Ok(())
    }
}

impl Drop for Changes<'_> {
    fn drop(&mut self) {
        self.uncharge(pinned(self.list.iter()));
    }
}

impl WorkItem for Buffer {
    type Pointer = Arc<Buffer>;

    fn run(this: Arc<Buffer>) {
        // An unwatched buffer whose memfd some process maps (a map or a CPU fault asked
        // for this): watch the mappings there are now, then check every page, since
        // punches before the re-arm were not seen.
        let mut full = false;
        if this.rewatch_wanted() {
            if let Err(e) = this.rewatch() {
                pr_warn!(
                    "buffer {}: watching the memfd's mappings failed: {:?}\n",
                    this.id,
                    e
                );
            }
            full = true;
        }
        // A failure leaves the pages marked (or a full check requested). Most failures
        // are transient: memfd_pin_folios() fails with ENOMEM for a hugetlb hole while a
        // fault on the memfd's own mapping is filling it (measured: for up to ~30 ms
        // under TCG). So retry with a doubling pause (about 1 s in all), then leave it
        // to the next notifier, SYNC, map or CPU access. The buffer keeps its old, still
        // pinned, pages meanwhile (INFO: PENDING).
        let mut pause = RETRY_FIRST_PAUSE_MS;
        for attempt in 1..=UPDATE_TRIES {
            // Under the eager policy every page is brought in now (also the ones a lazy
            // update left unpopulated before the policy changed).
            let eager = crate::sys::params::repopulate() == crate::sys::params::Repopulate::Eager;
            let result = this.update(full, eager).and_then(|o| {
                if eager {
                    this.populate(None).map(|()| o)
                } else {
                    Ok(o)
                }
            });
            match result {
                Ok(_) => return,
                Err(e) if attempt == UPDATE_TRIES => {
                    pr_warn!(
                        "buffer {}: page update failed {} times, left pending: {:?}\n",
                        this.id,
                        attempt,
                        e
                    );
                }
                Err(_) => {
                    if !this.retry_pause(pause) {
                        return;
                    }
                    pause *= 2;
                }
            }
        }
    }
}

impl Buffer {
    /// Sleep `ms` between two tries of the worker; `false` if the dma-buf was released
    /// meanwhile. Release waits for the worker (its reference keeps the memfd open), so
    /// it cuts the pause short rather than wait out up to half a second of it.
    fn retry_pause(&self, ms: u32) -> bool {
        let mut state = self.state.lock();
        // A kworker takes no signals: an error here is a timeout as well.
        let _ = self.wait_applied(&mut state, ms, |s| s.released);
        !state.released
    }

    /// Wait on `applied` (with `state` held) until `done` holds or `timeout_ms` pass:
    /// `Ok(true)` if it holds, `Ok(false)` on timeout, `ERESTARTSYS` on a signal.
    fn wait_applied(
        &self,
        state: &mut MutexGuard<'_, State>,
        timeout_ms: u32,
        done: impl Fn(&State) -> bool,
    ) -> Result<bool> {
        let mut left = kernel::time::msecs_to_jiffies(timeout_ms);
        while !done(state) {
            if left == 0 {
                return Ok(false);
            }
            left = match self.applied.wait_interruptible_timeout(state, left) {
                CondVarTimeoutResult::Timeout => 0,
                CondVarTimeoutResult::Woken { jiffies } => jiffies,
                CondVarTimeoutResult::Signal { .. } => return Err(ERESTARTSYS),
            };
        }
        Ok(true)
    }

    /// Bring the buffer in step with its memfds. `full` checks every page instead of
    /// the ones the notifiers marked. `fill`: a page the memfd lost gets a new one at
    /// once (eager policy, or a caller that needs every page); otherwise it is left
    /// unpopulated. Used by the worker, SYNC and CPU access; takes the slot lock, then
    /// inode locks, then the reservation lock.
    pub(crate) fn update(&self, full: bool, fill: bool) -> Result<Outcome> {
        self.slot.with(|dmabuf| {
            let Some(dmabuf) = dmabuf else {
                return Ok(Outcome::Released);
            };
            if self.sealed() {
                return Ok(Outcome::Sealed);
            }
            // Nothing to do (a worker queued by a punch whose marks a SYNC or a map has
            // already applied): do not count as an update in flight, which INFO would show
            // as PENDING on a current buffer. A mark that comes after this stays marked
            // (PENDING) and queues the worker again.
            if !full && !self.tracker.marked() && !self.resync_requested() {
                return Ok(Outcome::Clean);
            }
            let taken = self.tracker.take()?;
            crate::sys::params::test_delay();
            let scope = match (self.take_resync(), full) {
                (true, _) => Scope::Every,
                (false, true) => Scope::All,
                (false, false) => Scope::Marked,
            };
            let full = scope != Scope::Marked;
            let result = self
                .refault(taken.bits(), scope, InodeLock::Wait, fill)
                .and_then(|changes| {
                    if changes.is_empty() {
                        return Ok(Outcome::Clean);
                    }
                    let resv = dmabuf.lock();
                    self.swap(&resv, changes)
                });
            self.settle_result(result, &taken, full)
        })
    }

    /// The lazy check, from a callback that already holds the reservation lock (map,
    /// first pin, vmap): before pages are handed out, apply what is pending (marks, an
    /// update in flight, pages nobody watches). It can only try the inode locks (they
    /// rank before the reservation lock); if one is taken (a punch, a write or a seal
    /// in progress) the pages are handed out as they are, which orders this map before
    /// that operation, and the worker is asked for a full check.
    pub(crate) fn update_locked(&self, resv: &ResvLocked<'_>) -> Result<Outcome> {
        if self.sealed() {
            return Ok(Outcome::Sealed);
        }
        if self.tracker.watched() && !self.tracker.pending() && !self.resync_requested() {
            return Ok(Outcome::Clean);
        }
        let taken = self.tracker.take()?;
        let scope = if self.take_resync() {
            Scope::Every
        } else {
            Scope::All
        };
        let result = self
            .refault(taken.bits(), scope, InodeLock::Try, true)
            .and_then(|changes| {
                if changes.is_empty() {
                    return Ok(Outcome::Clean);
                }
                self.swap(resv, changes)
            });
        match self.settle_result(result, &taken, true) {
            Err(e) if e == EAGAIN => {
                self.tracker.kick();
                Ok(Outcome::Clean)
            }
            other => other,
        }
    }

    /// The end of every update: on failure put the marks back and ask for a full check
    /// if this one was, so that the buffer stays PENDING and the update is retried.
    fn settle_result(
        &self,
        result: Result<Outcome>,
        taken: &crate::notifier::Taken<'_>,
        full: bool,
    ) -> Result<Outcome> {
        match result {
            Err(_) if self.sealed() => Ok(Outcome::Sealed),
            Err(e) => {
                taken.restore();
                if full || !self.tracker.watched() {
                    self.request_resync();
                }
                Err(e)
            }
            ok => ok,
        }
    }

    /// Find the pages whose memfd page changed and pin the new ones: the `marked`
    /// pages, or every page (`full`). Where the memfd has a hole, a new page is
    /// allocated only if `fill`; otherwise the page is let go (unpopulated).
    fn refault(
        &self,
        marked: &Bits,
        scope: Scope,
        lock: InodeLock,
        fill: bool,
    ) -> Result<Changes<'_>> {
        // The common case of an unwatched map: nothing marked, no memfd changed.
        if scope == Scope::All && !marked.any() && self.ranges.iter().all(|r| !r.may_have_changed())
        {
            return Ok(Changes::new(self.memlock.as_ref()));
        }
        let all = if scope != Scope::Marked {
            Some(Bits::all(self.nr_pages)?)
        } else {
            None
        };
        let todo = all.as_ref().unwrap_or(marked);
        let mut changes = Changes::new(self.memlock.as_ref());
        if !todo.any() {
            return Ok(changes);
        }
        // New pages for holes are the creator's, not the kworker's (root) cgroup's.
        let _memcg = self.memcg.as_ref().map(|m| m.enter());
        let mut scratch = FolioScratch::new();
        let mut diff = KVVec::new();
        let mut holes = KVVec::new();
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
            // Nothing of the range left its memfd since it was last compared, and no
            // notifier marked it: no walk (an unwatched map costs what upstream's does).
            // A punch still removing pages has not moved the counter yet: this check
            // then orders itself before that punch, as a map before it would.
            let marked_here = marked
                .runs()
                .any(|r| r.start < pages.end && r.end > pages.start);
            if scope == Scope::All && !marked_here && !range.may_have_changed() {
                continue;
            }
            let inode = match lock {
                InodeLock::Wait => range.file.lock_shared(),
                InodeLock::Try => range.file.try_lock_shared().ok_or(EAGAIN)?,
            };
            // The seal rules of CREATE hold for every page the buffer ever takes.
            if !crate::buffer::seals_allow(inode.seals()) {
                self.set_sealed();
                return Err(EPERM);
            }
            // Stable under the inode lock: what the walk below makes current.
            let version = range.file.version();
            let whole = runs.peek().is_some_and(|r| *r == pages);
            for run in runs {
                // Which pages of the run left the memfd: one page-cache walk.
                let words = run.len().div_ceil(64);
                diff.clear();
                diff.resize(words, 0u64, GFP_KERNEL)?;
                holes.clear();
                holes.resize(words, 0u64, GFP_KERNEL)?;
                let counts = {
                    let state = self.state.lock();
                    let bits = Some((&mut diff[..], &mut holes[..]));
                    range.file.diff(
                        range.file_offset(run.start),
                        &state.pages,
                        run.clone(),
                        bits,
                    )?
                };
                if counts.stale + counts.holes == 0 {
                    continue;
                }
                let clip = |sub: core::ops::Range<usize>| {
                    run.start + sub.start..(run.start + sub.end).min(run.end)
                };
                if !fill {
                    // Lazy: the holes stay holes; the pages the memfd has again are taken.
                    for (d, h) in diff.iter_mut().zip(holes.iter()) {
                        *d &= !*h;
                    }
                    for sub in crate::dirty::runs(&holes) {
                        changes.push_holes(clip(sub))?;
                    }
                }
                for sub in crate::dirty::runs(&diff) {
                    changes.pin_run(range, clip(sub), &mut scratch)?;
                }
            }
            // A full walk of the range (its pages are now current, or pinned in
            // `changes`; an install that fails asks for a `Scope::Every` check).
            if whole && scope != Scope::Marked {
                range.compared(version);
            }
            drop(inode);
        }
        Ok(changes)
    }
}

impl Buffer {
    /// Apply `changes` now, or defer them while a static importer pins the buffer or a
    /// vmap is active (their users may not see pages change under them). Pages the
    /// buffer already holds (another update got there first) are dropped.
    pub(crate) fn swap(&self, resv: &ResvLocked<'_>, mut changes: Changes<'_>) -> Result<Outcome> {
        if crate::sys::params::test_fail_swap() {
            return Err(ENOMEM);
        }
        {
            let mut state = self.state.lock();
            // The pages were pinned under the inode lock, which is not held any more: a
            // punch since then (its marks then wait for the next update), or another
            // update that got there first, makes some of them pages not to install.
            let mut gone = false;
            changes.retain(|index, page| {
                // A hole stays right whatever the memfd got since: an unpopulated page
                // takes the memfd's page when it is needed.
                let current = page
                    .as_ref()
                    .is_none_or(|page| self.holds_current(index, page));
                gone |= !current;
                current && !state.holds(index, page)
            });
            if gone {
                // Marks of a punch that the lazy check consumed may be gone: look again.
                self.request_resync();
                self.tracker.kick();
            }
            if changes.is_empty() {
                return Ok(Outcome::Clean);
            }
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
            state.take_deferred(self.memlock.as_ref())?
        };
        self.apply(resv, changes)
    }

    /// Swap in `changes`, in the order that keeps every user safe.
    fn apply(&self, resv: &ResvLocked<'_>, mut changes: Changes<'_>) -> Result<Outcome> {
        // Allocate before changing anything: on failure the new pins are dropped and
        // the buffer still holds its old pages.
        let mut old = Changes::with_capacity(self.memlock.as_ref(), changes.len())?;
        self.state
            .lock()
            .retired
            .reserve(changes.len(), GFP_KERNEL)?;
        // 1. Dynamic importers drop their mappings (they map again, seeing new pages).
        resv.invalidate_mappings();
        // 2. Swap, and start a new generation in the same step: a mapping made from
        //    the old pages carries an older generation than any made from the new.
        let generation = {
            let mut state = self.state.lock();
            for (index, page) in changes.take_all() {
                let prev = match state.pages.replace(index, page) {
                    Ok(prev) => prev,
                    Err(new) => new, // no such index (never): drop the new page instead
                };
                // Cannot fail: capacity reserved above. (An empty `prev`, a page that
                // was unpopulated, is kept too: its index is zapped below.)
                let _ = old.push_within_capacity(index, prev);
            }
            // The CPU-access table maps old pages; the next begin_cpu_access rebuilds it.
            state.cpu_sgt = None;
            self.counters.generation.fetch_add(1, Ordering::AcqRel)
        };
        // 3. Zap CPU mmaps of the changed pages: the next access faults in the new page.
        for run in index_runs(old.indices()) {
            resv.zap_cpu_mappings(run.start << PAGE_SHIFT, run.len() << PAGE_SHIFT);
        }
        // 4. Let DMA already queued against the old pages finish (bounded).
        let idle = resv.wait_idle(FENCE_TIMEOUT_MS).unwrap_or(false);
        if !idle {
            pr_warn!(
                "buffer {}: fences still busy after {} ms; old pages kept until release\n",
                self.id,
                FENCE_TIMEOUT_MS
            );
        }
        // 5. Unpin the old pages, unless an importer's mapping made from them lives.
        let swapped = old.len() as u64;
        {
            let mut state = self.state.lock();
            state.retire(
                if idle { generation } else { u64::MAX },
                old.take_all(),
                self.memlock.as_ref(),
            );
        }
        drop(old);
        self.counters.updates.fetch_add(1, Ordering::Relaxed);
        self.counters
            .pages_swapped
            .fetch_add(swapped, Ordering::Relaxed);
        self.applied.notify_all();
        Ok(Outcome::Applied)
    }
}

/// How often `populate` pins again when pages it pinned left the memfd before they
/// went in (a punch racing with it).
const POPULATE_TRIES: u32 = 8;

impl Buffer {
    /// Is `page` still the memfd's page for buffer page `index`?
    fn holds_current(&self, index: usize, page: &crate::sys::folio::PinnedPage) -> bool {
        self.ranges
            .iter()
            .find(|r| r.pages().contains(&index))
            .is_some_and(|r| r.file.holds_page(r.file_offset(index), page))
    }

    /// Bring in the pages the lazy policy left unpopulated, because they are needed now:
    /// every one of them (`only` = `None`: map, first pin, vmap, CPU access, SYNC, the
    /// eager policy) or those of one memfd folio (a CPU fault on page `only`: that page,
    /// or for hugetlbfs the huge page it is part of, which the memfd allocates whole
    /// anyway). Each gets the memfd's page there, which
    /// `memfd_pin_folios` allocates if the memfd has a hole too, charged to the creator's
    /// memory cgroup. Needs no lock: filling an empty slot changes nothing an importer
    /// or a CPU mapping holds (neither can map an unpopulated page).
    pub(crate) fn populate(&self, only: Option<usize>) -> Result {
        for _ in 0..POPULATE_TRIES {
            let missing = {
                let state = self.state.lock();
                match only {
                    Some(i) if state.pages.is_missing(i) => {
                        let mut v = KVVec::with_capacity(1, GFP_KERNEL)?;
                        // Cannot fail: capacity reserved above.
                        let _ = v.push_within_capacity(self.folio_window(i));
                        v
                    }
                    Some(_) => return Ok(()),
                    None if state.pages.missing() == 0 => return Ok(()),
                    None => missing_runs(&state.pages)?,
                }
            };
            let _memcg = self.memcg.as_ref().map(|m| m.enter());
            let mut scratch = FolioScratch::new();
            let mut changes = Changes::new(self.memlock.as_ref());
            for run in missing.iter() {
                for range in self.ranges.iter() {
                    let pages = range.pages();
                    let sub = run.start.max(pages.start)..run.end.min(pages.end);
                    if sub.start < sub.end {
                        changes.pin_run(range, sub, &mut scratch)?;
                    }
                }
            }
            let mut state = self.state.lock();
            changes.retain(|index, page| {
                state.pages.is_missing(index)
                    && page.as_ref().is_some_and(|p| self.holds_current(index, p))
            });
            for (index, page) in changes.take_all() {
                // An index taken from the array: never out of range.
                let _ = state.pages.replace(index, page);
            }
            let done = match only {
                Some(i) => !state.pages.is_missing(i),
                None => state.pages.missing() == 0,
            };
            if done {
                return Ok(());
            }
        }
        Err(EAGAIN)
    }
}

impl Buffer {
    /// The buffer pages that share page `index`'s memfd folio (clipped to its range).
    fn folio_window(&self, index: usize) -> core::ops::Range<usize> {
        let Some(r) = self.ranges.iter().find(|r| r.pages().contains(&index)) else {
            return index..index + 1;
        };
        let granule = (r.file.granule() >> PAGE_SHIFT).max(1) as usize;
        let in_file = (r.file_offset(index) >> PAGE_SHIFT) as usize;
        let start = index - (in_file % granule).min(index - r.first_page);
        start..(start + granule).min(r.pages().end)
    }
}

/// The runs of unpopulated slots of `pages`.
fn missing_runs(pages: &PinnedPages) -> Result<KVVec<core::ops::Range<usize>>> {
    let mut runs = KVVec::new();
    let mut i = 0;
    while i < pages.len() {
        if !pages.is_missing(i) {
            i += 1;
            continue;
        }
        let start = i;
        while i < pages.len() && pages.is_missing(i) {
            i += 1;
        }
        runs.push(start..i, GFP_KERNEL)?;
    }
    Ok(runs)
}

/// Maximal runs of consecutive values in increasing `indices`.
fn index_runs(
    indices: impl Iterator<Item = usize>,
) -> impl Iterator<Item = core::ops::Range<usize>> {
    let mut indices = indices.peekable();
    core::iter::from_fn(move || {
        let start = indices.next()?;
        let mut end = start + 1;
        while indices.next_if_eq(&end).is_some() {
            end += 1;
        }
        Some(start..end)
    })
}

impl Buffer {
    /// UDMABUF_LIVE_SYNC: apply everything pending now (checking every page when some
    /// are not watched) and populate every page, then wait up to `timeout_ms` for
    /// deferred pages to go in.
    /// EPERM once the memfd is write-sealed (the buffer no longer follows it).
    pub(crate) fn sync(&self, timeout_ms: u32) -> Result {
        // Watch the mappings that appeared since the buffer became unwatched; the
        // punches before were not seen, so every page is checked.
        let full = !self.tracker.watched();
        // A failed re-arm leaves the buffer unwatched: the lazy checks still hold.
        let _ = self.rewatch();
        if self.update(full, true)? == Outcome::Sealed {
            return Err(EPERM);
        }
        let mut state = self.state.lock();
        if !self.wait_applied(&mut state, timeout_ms, |s| s.deferred_count == 0)? {
            return Err(ETIMEDOUT);
        }
        drop(state);
        // SYNC is a point of need: the unpopulated pages come in (also the holes a
        // deferred update just left).
        self.populate(None)
    }
}

// KUnit tests (CONFIG_KUNIT kernels; the guest's `kunit` suite reports them).
#[kunit_tests(udmabuf_live_index_runs)]
mod tests {
    use super::index_runs;
    use core::iter::once;

    #[test]
    fn no_indices() {
        assert!(index_runs(core::iter::empty()).next().is_none());
    }

    #[test]
    fn single_and_consecutive() {
        assert!(index_runs([5].into_iter()).eq(once(5..6)));
        assert!(index_runs([0, 1, 2, 3].into_iter()).eq(once(0..4)));
        assert!(index_runs([63, 64, 65].into_iter()).eq(once(63..66)));
    }

    #[test]
    fn gaps_split_runs() {
        assert!(index_runs([1, 2, 3, 7, 8, 10].into_iter()).eq([1..4, 7..9, 10..11]));
        assert!(index_runs([0, 2, 4].into_iter()).eq([0..1, 2..3, 4..5]));
    }
}
