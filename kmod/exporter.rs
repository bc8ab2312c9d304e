// SPDX-License-Identifier: GPL-2.0
//! The dma-buf exporter ops of a [`Buffer`]: what importers, CPU mmaps and vmaps see.
//! Every op reads the page array under `Buffer::state`. Before pages are handed out
//! (map, first pin, first vmap, CPU access) a pending, in-flight or lazy update is
//! applied, so an importer never starts on pages that have left the memfd. A mapping
//! carries the generation it was made in: old pages an update replaced stay pinned
//! until the last mapping made from them is unmapped.

use crate::buffer::{Buffer, State};
use crate::sys::{
    dmabuf::{Attachment, DmaBufOps, DmaBufSlot, Exporter, ResvLocked},
    folio::PinnedPages,
    sgt::{Direction, MappedSgTable},
    vm::{Fault, FaultResult, VMap, VMapAddr},
    wq,
};
use core::sync::atomic::Ordering;
use kernel::prelude::*;

impl Buffer {
    /// The CPU-access table, built for the current pages if an update dropped it.
    fn cpu_table<'a>(&self, state: &'a mut State, dir: Direction) -> Result<&'a MappedSgTable> {
        if state.cpu_sgt.is_none() {
            state.cpu_sgt = Some(MappedSgTable::new(
                &state.pages,
                crate::sys::device::dma_device(&self.misc_dev),
                dir,
            )?);
        }
        state.cpu_sgt.as_ref().ok_or(EINVAL)
    }
}

impl Buffer {
    /// The cache maintenance of begin (`begin`) or end_cpu_access over every page. The
    /// pages are populated first (CPU access is a point of need), and the reservation
    /// lock is held from there to the sync, so that no update empties a page in between.
    fn cpu_sync(&self, dir: Direction, begin: bool) -> Result {
        self.slot.with(|dmabuf| {
            let dmabuf = dmabuf.ok_or(EINVAL)?;
            let _resv = dmabuf.lock();
            {
                let mut state = self.state.lock();
                // As upstream: end fails with EINVAL only if CPU access never began.
                if !begin && state.cpu_dir.is_none() {
                    return Err(EINVAL);
                }
                if begin {
                    state.cpu_dir.get_or_insert(dir);
                }
            }
            self.populate(None)?;
            let mut state = self.state.lock();
            let first_dir = state.cpu_dir.ok_or(EINVAL)?;
            let table = self.cpu_table(&mut state, first_dir)?;
            if begin {
                table.sync_for_cpu(dir);
            } else {
                table.sync_for_device(dir);
            }
            Ok(())
        })
    }
}

/// The ops table of our dma-bufs (a static: its address tells them apart).
static BUFFER_OPS: DmaBufOps = DmaBufOps::of::<Buffer>();

impl Exporter for Buffer {
    const OPS: &'static DmaBufOps = &BUFFER_OPS;

    fn slot(&self) -> &DmaBufSlot {
        &self.slot
    }

    fn release(&self) {
        // Take the notifiers down (waiting for a callback in flight) so that nothing
        // queues work for a dma-buf that is going; only then drop the tracker's
        // reference to the buffer (Tracker invariant), which breaks the cycle.
        self.notifiers.lock().close();
        drop(self.tracker.detach());
        self.registry.remove(self);
    }

    fn pin(&self, resv: &ResvLocked<'_>, _att: &Attachment<'_>) -> Result {
        if self.state.lock().pins == 0 {
            // The first static importer must start on current pages (lazy check), all
            // of them present.
            self.update_locked(resv)?;
            self.populate(None)?;
        }
        self.state.lock().pins += 1;
        Ok(())
    }

    fn unpin(&self, resv: &ResvLocked<'_>, _att: &Attachment<'_>) {
        {
            let mut state = self.state.lock();
            state.pins = state.pins.saturating_sub(1);
        }
        if let Err(e) = self.apply_deferred(resv) {
            pr_warn!(
                "buffer {}: applying deferred pages at unpin failed: {:?}\n",
                self.id,
                e
            );
        }
    }

    fn map(
        &self,
        resv: &ResvLocked<'_>,
        att: &Attachment<'_>,
        dir: Direction,
    ) -> Result<MappedSgTable> {
        let dev = att.device()?;
        if self.state.lock().pins == 0 {
            self.update_locked(resv)?;
        }
        // The importer is about to use every page: bring in the unpopulated ones.
        self.populate(None)?;
        if self.rewatch_wanted() {
            // Re-arming takes mmap locks, which rank before the reservation lock.
            self.tracker.kick();
        }
        let mut state = self.state.lock();
        // Read with the pages, under the same lock as `apply` swaps both.
        let generation = self.counters.generation.load(Ordering::Acquire);
        let mut sgt = MappedSgTable::new(&state.pages, dev, dir)?;
        sgt.set_tag(generation);
        state.live_maps.add(generation)?;
        self.counters.maps.fetch_add(1, Ordering::Relaxed);
        self.counters
            .last_map_segments
            .store(sgt.dma_segments() as u64, Ordering::Relaxed);
        Ok(sgt)
    }

    fn unmap(&self, _resv: &ResvLocked<'_>, _att: &Attachment<'_>, sgt: MappedSgTable) {
        let generation = sgt.tag();
        // The device is done with the pages once its mapping is gone.
        drop(sgt);
        self.state
            .lock()
            .map_gone(generation, self.memlock.as_ref());
    }

    fn begin_cpu_access(&self, dir: Direction) -> Result {
        // `pending` covers an update in flight: its pages are not in yet. Taking the
        // inode lock here (in update) is safe for in-kernel callers too: 7.2's callers
        // (drm_gem_fb_begin_cpu_access, the heaps' own) do not hold mmap_lock, and the
        // kernel's order is i_rwsem before mmap_lock (mm/filemap.c), which we keep.
        if !self.tracker.watched() || self.tracker.pending() || self.resync_requested() {
            self.update(!self.tracker.watched(), true)?;
        }
        self.cpu_sync(dir, true)
    }

    fn end_cpu_access(&self, dir: Direction) -> Result {
        self.cpu_sync(dir, false)
    }

    fn released(&self) {
        // A worker queued before the notifiers went finds the slot empty and returns; a
        // worker pausing between tries is woken to stop. Wait for it: the reference it
        // holds keeps the memfd open, so without the wait closing the memfd right after
        // the dma-buf would free its pages only later, where upstream frees them at once
        // (its kselftest relies on that).
        self.state.lock().released = true;
        self.applied.notify_all();
        wq::flush(&self.work);
        // Nothing can reach the pages any more (no importer, mmap or vmap holds the
        // dma-buf, and the slot is empty, so no update runs): unpin them now.
        let mut state = self.state.lock();
        state.cpu_sgt = None;
        state.vmap = None;
        state.deferred = KVVec::new();
        state.deferred_count = 0;
        state.retired = KVVec::new();
        state.pages = PinnedPages::empty();
    }

    fn mmap(&self, shared: bool) -> Result {
        // Private mappings would COW pages that are not ours to copy.
        if shared {
            Ok(())
        } else {
            Err(EINVAL)
        }
    }

    fn fault(&self, fault: &Fault) -> FaultResult {
        let pgoff = fault.pgoff();
        if pgoff >= self.nr_pages {
            return FaultResult::SIGBUS;
        }
        if self.rewatch_wanted() {
            // Re-arming takes mmap locks; this one is held: ask the worker.
            self.tracker.kick();
        }
        // A page the lazy policy left unpopulated: bring in this one only.
        if self.populate(Some(pgoff)).is_err() {
            return FaultResult::OOM;
        }
        let state = self.state.lock();
        if state.pages.is_missing(pgoff) {
            // An update emptied it again meanwhile: the access faults once more.
            return FaultResult::RETRY;
        }
        let ret = fault.insert(pgoff, &state.pages, pgoff);
        if ret.is_error() {
            return ret;
        }
        // Pre-fault what follows, as upstream does for a fresh mapping (a buffer is
        // usually read whole), but only up to the first page that is mapped already or
        // not populated: after an update zapped a few pages, a fault costs what those
        // pages cost, not the whole mapping. A failure is not fatal; the access itself
        // faults again.
        for other in pgoff + 1..fault.vma_pgoffs().end.min(self.nr_pages) {
            if state.pages.is_missing(other)
                || fault.is_mapped(other)
                || fault.insert(other, &state.pages, other).is_error()
            {
                break;
            }
        }
        ret
    }

    fn vmap(&self, resv: &ResvLocked<'_>) -> Result<VMapAddr> {
        if self.state.lock().vmap.is_some() {
            return Err(EBUSY);
        }
        // The vmap fixes the pages until vunmap: start it on current ones, all present.
        if self.state.lock().pins == 0 {
            self.update_locked(resv)?;
        }
        self.populate(None)?;
        let mut state = self.state.lock();
        if state.vmap.is_some() {
            return Err(EBUSY);
        }
        let vmap = VMap::new(&state.pages)?;
        let addr = vmap.addr();
        state.vmap = Some(vmap);
        Ok(addr)
    }

    fn vunmap(&self, resv: &ResvLocked<'_>, addr: VMapAddr) {
        {
            let mut state = self.state.lock();
            if state.vmap.as_ref().map(VMap::addr) == Some(addr) {
                state.vmap = None;
            }
        }
        if let Err(e) = self.apply_deferred(resv) {
            pr_warn!(
                "buffer {}: applying deferred pages at vunmap failed: {:?}\n",
                self.id,
                e
            );
        }
    }
}
