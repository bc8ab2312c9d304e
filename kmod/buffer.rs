// SPDX-License-Identifier: GPL-2.0
//! A udmabuf-live buffer: the pinned pages of one or more memfd ranges, exported as a
//! dma-buf. `create` is the whole UDMABUF_CREATE(_LIST) path after the ioctl has copied
//! the request in. Afterwards `exporter.rs` answers the dma-buf core, `notifier.rs`
//! records invalidations and `worker.rs` brings the pages back in step with the memfd.
//!
//! Locks owned here (the global order is in udmabuf_live_main.rs):
//! - `Buffer::state` ("udmabuf_live_buffer_state"): the page array and everything built
//!   from it. Never held while copying from or to user memory.
//! - `Tracker::inner` ("udmabuf_live_dirty", a spinlock, in notifier.rs): pages the
//!   notifiers saw invalidated; the only lock the notifier callback takes. Innermost.
//! - `Buffer::notifiers` ("udmabuf_live_notifiers"): the registered notifiers.
//! - `Buffer::slot` (see sys/dmabuf.rs): the exported dma-buf, for the worker.

use crate::notifier::{BufferTracker, Tracker};
use crate::one_or_many::OneOrMany;
use crate::registry::Registry;
use crate::sys::{
    dmabuf::{DmaBufSlot, ExportedDmaBuf},
    folio::{PinnedPage, PinnedPages},
    memcg::MemCg,
    memfd::{Backing, FolioScratch, MemFile},
    memlock::MemlockCharge,
    params,
    sgt::{Direction, MappedSgTable},
    vm::VMap,
    wq::QueueRef,
    PAGE_SHIFT, PAGE_SIZE,
};
use crate::uapi::UdmabufCreateItem;
use crate::watchers::Watchers;
use crate::worker::Changes;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use kernel::{
    bindings,
    device::Device,
    new_condvar, new_mutex, new_work,
    prelude::*,
    sync::{aref::ARef, Arc, CondVar, Mutex},
    workqueue::Work,
};

/// Seals a memfd must have: it may not shrink under the buffer.
const SEALS_WANTED: u32 = bindings::F_SEAL_SHRINK;
/// Seals a memfd may not have: the buffer's users write through it.
const SEALS_DENIED: u32 = bindings::F_SEAL_WRITE | bindings::F_SEAL_FUTURE_WRITE;

/// May a buffer take pages from a memfd with these seals (`None`: not a memfd)?
pub(crate) fn seals_allow(seals: Option<u32>) -> bool {
    seals.is_some_and(|s| s & SEALS_WANTED == SEALS_WANTED && s & SEALS_DENIED == 0)
}

/// Upstream answers an fd that is not an open memfd with EBADFD (not EBADF).
fn ebadfd() -> Error {
    Error::from_errno(-(bindings::EBADFD as i32))
}

/// One memfd range of a buffer. The file reference is kept so the worker can re-fault.
pub(crate) struct Range {
    pub(crate) file: MemFile,
    /// Byte offset of the range in the memfd.
    pub(crate) offset: u64,
    /// Index of the range's first page in the buffer.
    pub(crate) first_page: usize,
    pub(crate) nr_pages: usize,
    /// The memfd's change counter when every page of the range was last found to be the
    /// memfd's own (`u64::MAX`: never, or no counter): while it reads the same, a full
    /// check can skip the range without walking the page cache.
    pub(crate) compared_at: AtomicU64,
}

impl Range {
    /// Could a page of this range have left the memfd since it was last compared?
    pub(crate) fn may_have_changed(&self) -> bool {
        let seen = self.compared_at.load(Ordering::Acquire);
        seen == u64::MAX || self.file.version() != Some(seen)
    }

    /// Every page was found to be the memfd's own at counter `version`.
    pub(crate) fn compared(&self, version: Option<u64>) {
        self.compared_at
            .store(version.unwrap_or(u64::MAX), Ordering::Release);
    }

    pub(crate) fn pages(&self) -> core::ops::Range<usize> {
        self.first_page..self.first_page + self.nr_pages
    }

    /// Byte offset in the memfd of buffer page `index` (which must be in this range).
    pub(crate) fn file_offset(&self, index: usize) -> u64 {
        self.offset + ((index - self.first_page) << PAGE_SHIFT) as u64
    }
}

/// What an update puts at a page index: the memfd's page there, or nothing (a hole under
/// the lazy policy: the page stays unpopulated until something needs it).
pub(crate) type NewPage = Option<PinnedPage>;

/// Mutable state of a buffer, under `Buffer::state`.
pub(crate) struct State {
    /// The buffer's pages in dma-buf order, each pinned; a slot is empty (unpopulated)
    /// where the lazy policy let a punched page go and nothing has needed it since.
    pub(crate) pages: PinnedPages,
    /// Mapping for the misc device used by begin/end_cpu_access (as upstream's ubuf->sg).
    /// An update drops it (it maps old pages); the next CPU access rebuilds it.
    pub(crate) cpu_sgt: Option<MappedSgTable>,
    /// Direction of the first begin_cpu_access: set once CPU access has started, so an
    /// end_cpu_access after an update still works (upstream fails it only before any
    /// begin).
    pub(crate) cpu_dir: Option<Direction>,
    /// The kernel mapping while a vmap is active (the dma-buf core counts vmap users).
    pub(crate) vmap: Option<VMap>,
    /// Pins by static importers (dma_buf_pin); their pages may not change meanwhile.
    pub(crate) pins: usize,
    /// New pages (or holes) waiting for the last pin or vmap to go, by page index
    /// (empty, or one slot per page once something was deferred).
    pub(crate) deferred: KVVec<Option<NewPage>>,
    /// Number of `Some` slots in `deferred`: the buffer is stale while non-zero.
    pub(crate) deferred_count: usize,
    /// Importer mappings alive, by the generation they were made in.
    pub(crate) live_maps: LiveMaps,
    /// Old pages an update replaced while importer mappings made from them may still be
    /// in use (the 7.2 contract lets a dynamic importer use its mapping until it unmaps,
    /// after invalidate_mappings), with the generation they were replaced in: freed once
    /// no live mapping is that old. `u64::MAX`: fences did not signal, kept until release.
    pub(crate) retired: KVVec<(u64, PinnedPage)>,
    /// The dma-buf is gone: a worker pausing between tries stops (`applied` wakes it).
    pub(crate) released: bool,
}

/// How many importer mappings are alive per generation; a few entries at most.
pub(crate) struct LiveMaps(KVec<(u64, usize)>);

impl LiveMaps {
    pub(crate) fn new() -> Self {
        Self(KVec::new())
    }

    /// Count a mapping made in `generation`. Allocates only for a generation not seen yet.
    pub(crate) fn add(&mut self, generation: u64) -> Result {
        if let Some(e) = self.0.iter_mut().find(|(g, _)| *g == generation) {
            e.1 += 1;
            return Ok(());
        }
        Ok(self.0.push((generation, 1), GFP_KERNEL)?)
    }

    /// A mapping made in `generation` is gone.
    pub(crate) fn remove(&mut self, generation: u64) {
        if let Some(k) = self.0.iter().position(|(g, _)| *g == generation) {
            self.0[k].1 -= 1;
            if self.0[k].1 == 0 {
                self.0.remove(k).ok();
            }
        }
    }

    /// The generation of the oldest live mapping.
    pub(crate) fn oldest(&self) -> Option<u64> {
        self.0.iter().map(|(g, _)| *g).min()
    }
}

impl State {
    /// Does the buffer already hold `page` (or nothing) at `index`, now or deferred?
    pub(crate) fn holds(&self, index: usize, page: &NewPage) -> bool {
        let same = |a: Option<&PinnedPage>| match (a, page) {
            (Some(a), Some(b)) => a.same_page(b),
            (None, None) => true,
            _ => false,
        };
        match self.deferred.get(index) {
            Some(Some(d)) => same(d.as_ref()),
            _ => index < self.pages.len() && same(self.pages.get(index)),
        }
    }

    /// Keep `changes` for later; a newer page for the same index replaces an older one.
    pub(crate) fn defer(&mut self, nr_pages: usize, mut changes: Changes<'_>) -> Result {
        if self.deferred.is_empty() {
            self.deferred.reserve(nr_pages, GFP_KERNEL)?;
            for _ in 0..nr_pages {
                // Cannot fail: capacity reserved above.
                let _ = self.deferred.push_within_capacity(None);
            }
        }
        let mut dropped = 0;
        for (index, page) in changes.take_all() {
            match self.deferred.get_mut(index) {
                Some(slot) => match slot.replace(page) {
                    None => self.deferred_count += 1,
                    Some(older) => dropped += usize::from(older.is_some()),
                },
                None => dropped += usize::from(page.is_some()),
            }
        }
        changes.uncharge(dropped);
        Ok(())
    }

    /// The deferred pages, as changes to apply.
    pub(crate) fn take_deferred<'a>(
        &mut self,
        memlock: Option<&'a MemlockCharge>,
    ) -> Result<Changes<'a>> {
        let mut changes = Changes::with_capacity(memlock, self.deferred_count)?;
        for (index, slot) in self.deferred.iter_mut().enumerate() {
            if let Some(page) = slot.take() {
                // Cannot fail: deferred_count entries are Some.
                let _ = changes.push_within_capacity(index, page);
            }
        }
        self.deferred_count = 0;
        Ok(changes)
    }

    /// Old pages replaced in `generation`: unpin them now if no importer mapping is that
    /// old, else keep them (room reserved by the caller) until it is unmapped.
    pub(crate) fn retire(
        &mut self,
        generation: u64,
        old: KVVec<(usize, NewPage)>,
        memlock: Option<&MemlockCharge>,
    ) {
        let keep =
            generation == u64::MAX || self.live_maps.oldest().is_some_and(|g| g <= generation);
        let mut freed = 0;
        for page in old.into_iter().filter_map(|(_, page)| page) {
            if keep {
                if let Err(kernel::alloc::kvec::PushError((_, page))) =
                    self.retired.push_within_capacity((generation, page))
                {
                    // No room (never: reserved by apply): keeping the pin is the safe side.
                    core::mem::forget(page);
                }
            } else {
                drop(page);
                freed += 1;
            }
        }
        if let Some(m) = memlock {
            m.uncharge(freed);
        }
    }

    /// An importer mapping made in `generation` is gone: free the old pages no live
    /// mapping can still reach.
    pub(crate) fn map_gone(&mut self, generation: u64, memlock: Option<&MemlockCharge>) {
        self.live_maps.remove(generation);
        if self.retired.is_empty() {
            return;
        }
        let oldest = self.live_maps.oldest().unwrap_or(u64::MAX);
        let before = self.retired.len();
        self.retired.retain(|(g, _)| *g >= oldest);
        if let Some(m) = memlock {
            m.uncharge(before - self.retired.len());
        }
    }
}

/// Counters reported by INFO and debugfs.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) generation: AtomicU64,
    pub(crate) updates: AtomicU64,
    pub(crate) pages_swapped: AtomicU64,
    /// Importer mappings made, and the DMA segments of the last one.
    pub(crate) maps: AtomicU64,
    pub(crate) last_map_segments: AtomicU64,
}

#[pin_data]
pub(crate) struct Buffer {
    /// Shown in debugfs.
    pub(crate) id: u64,
    /// The module's list of live buffers; this buffer leaves it at release.
    pub(crate) registry: Arc<Registry>,
    /// Size in pages; fixed for the buffer's life.
    pub(crate) nr_pages: usize,
    /// What backs the buffer; `None` when the ranges mix shmem and hugetlb.
    pub(crate) backing: Option<Backing>,
    pub(crate) ranges: OneOrMany<Range>,
    #[pin]
    pub(crate) state: Mutex<State>,
    /// Signalled whenever an update is applied (SYNC waits on it with `state`).
    #[pin]
    pub(crate) applied: CondVar,
    /// What the notifiers marked, and whether they watch every page.
    pub(crate) tracker: BufferTracker,
    #[pin]
    pub(crate) notifiers: Mutex<Watchers>,
    #[pin]
    pub(crate) slot: DmaBufSlot,
    #[pin]
    pub(crate) work: Work<Buffer>,
    pub(crate) queue: QueueRef,
    pub(crate) counters: Counters,
    /// Set once the memfd was write-sealed after create: the buffer stops taking pages
    /// from it (INFO: SEALED; SYNC: EPERM).
    pub(crate) sealed: AtomicBool,
    /// A full check of every page is due (a lazy check could not take an inode lock, or
    /// an update of unwatched pages failed).
    pub(crate) resync: AtomicBool,
    /// Every page the buffer pins, charged to its creator (`account_memlock`). Declared
    /// after `state`: returned once the pages are unpinned.
    pub(crate) memlock: Option<MemlockCharge>,
    /// The creator's memory cgroup: pages brought in for the buffer are charged there.
    pub(crate) memcg: Option<MemCg>,
    /// The misc device, for CPU-access DMA syncs. Declared after `state` so that the
    /// tables in `state` are unmapped before this reference goes.
    pub(crate) misc_dev: ARef<Device>,
}

impl Buffer {
    pub(crate) fn sealed(&self) -> bool {
        self.sealed.load(Ordering::Acquire)
    }

    pub(crate) fn set_sealed(&self) {
        if !self.sealed.swap(true, Ordering::AcqRel) {
            pr_info!("buffer {}: memfd write-sealed; the buffer keeps its pages and stops following it\n", self.id);
        }
    }

    pub(crate) fn request_resync(&self) {
        self.resync.store(true, Ordering::Release);
    }

    pub(crate) fn resync_requested(&self) -> bool {
        self.resync.load(Ordering::Acquire)
    }

    /// Take a pending full-check request.
    pub(crate) fn take_resync(&self) -> bool {
        self.resync.swap(false, Ordering::AcqRel)
    }
}

kernel::impl_has_work! {
    impl HasWork<Self> for Buffer { self.work }
}

/// Validate a create request, watch its mappings, pin its pages and export it as a
/// dma-buf fd. The checks, their order and their errnos follow upstream
/// udmabuf_create() (7.2).
pub(crate) fn create(
    misc_dev: ARef<Device>,
    queue: QueueRef,
    registry: &Arc<Registry>,
    items: &[UdmabufCreateItem],
    cloexec: bool,
) -> Result<i32> {
    let limit_pages = params::size_limit_bytes() >> PAGE_SHIFT;
    let mut total: u64 = 0;
    for item in items {
        if item.offset % PAGE_SIZE as u64 != 0 || item.size % PAGE_SIZE as u64 != 0 {
            return Err(EINVAL);
        }
        let n = item.size >> PAGE_SHIFT;
        total = total.checked_add(n).ok_or(EINVAL)?;
        if total > limit_pages {
            return Err(EINVAL);
        }
    }
    if total == 0 {
        return Err(EINVAL);
    }
    let nr_pages = usize::try_from(total).map_err(|_| EINVAL)?;
    // Each item is charged after its own checks and before its pages are pinned, so the
    // errnos come in upstream's order and a user over the limit pins nothing more.
    let memlock = if params::account_memlock() {
        Some(MemlockCharge::current_user()?)
    } else {
        None
    };
    let mut pages = PinnedPages::with_capacity(nr_pages)?;
    let mut ranges = OneOrMany::new();
    ranges.reserve(items.len())?;
    let mut scratch = FolioScratch::new();
    let tracker = Arc::pin_init(Tracker::new(nr_pages)?, GFP_KERNEL)?;
    let mut notifiers = Watchers::new();
    let mut backing = None;
    for (i, item) in items.iter().enumerate() {
        let first_page = pages.len();
        let nr = (item.size >> PAGE_SHIFT) as usize;
        let file = MemFile::get(item.memfd).ok_or_else(ebadfd)?;
        let kind = file.backing().ok_or_else(ebadfd)?;
        // Upstream's memfd_pin_folios() refuses these bounds; refuse them before using them.
        let bounds = byte_bounds(item.offset, item.size)?;
        // Watch first, pin second: a punch after the pin is then always seen.
        notifiers.watch_range(&tracker, &file, item.offset, (first_page, nr))?;
        let version = pin_item(
            &file,
            bounds,
            nr,
            &mut pages,
            &mut scratch,
            memlock.as_ref(),
        )?;
        backing = if i == 0 || backing == Some(kind) {
            Some(kind)
        } else {
            None
        };
        let compared_at = AtomicU64::new(version.unwrap_or(u64::MAX));
        ranges.push(Range {
            file,
            offset: item.offset,
            first_page,
            nr_pages: nr,
            compared_at,
        })?;
    }
    drop(scratch);
    // A fresh tracker has counted no gone mapping: one that went during CREATE has.
    tracker.set_covered(notifiers.cover(nr_pages)?, 0);

    let buffer = Arc::pin_init(
        try_pin_init!(Buffer {
            id: registry.next_id(),
            registry: registry.clone(),
            nr_pages,
            backing,
            ranges,
            state <- new_mutex!(
                State {
                    pages,
                    cpu_sgt: None,
                    cpu_dir: None,
                    vmap: None,
                    pins: 0,
                    deferred: KVVec::new(),
                    deferred_count: 0,
                    live_maps: LiveMaps::new(),
                    retired: KVVec::new(),
                    released: false,
                },
                "udmabuf_live_buffer_state"
            ),
            applied <- new_condvar!("udmabuf_live_applied"),
            tracker: BufferTracker::new(tracker),
            notifiers <- new_mutex!(notifiers, "udmabuf_live_notifiers"),
            slot <- DmaBufSlot::new(),
            work <- new_work!("udmabuf_live_buffer_work"),
            queue,
            counters: Counters::default(),
            sealed: AtomicBool::new(false),
            resync: AtomicBool::new(false),
            memlock,
            memcg: MemCg::current(),
            misc_dev,
        }),
        GFP_KERNEL,
    )?;
    // Export first: if anything below fails, dropping the dma-buf runs its release op,
    // which also takes down any notifier already registered.
    let exported = ExportedDmaBuf::export(buffer.clone(), nr_pages << PAGE_SHIFT)?;
    buffer.tracker.attach(&buffer);
    registry.add(buffer)?;
    exported.into_fd(cloexec)
}

/// Pin the `nr` pages at inclusive byte bounds `(start, end)` of a memfd, checking its
/// seals under the inode lock (memfd_add_seals takes it for write). Returns the memfd's
/// change counter the pages are current at.
fn pin_item(
    file: &MemFile,
    bounds: (i64, i64),
    nr: usize,
    pages: &mut PinnedPages,
    scratch: &mut FolioScratch,
    memlock: Option<&MemlockCharge>,
) -> Result<Option<u64>> {
    let locked = file.lock_shared();
    let seals = locked.seals().ok_or_else(ebadfd)?;
    if !seals_allow(Some(seals)) {
        return Err(EINVAL);
    }
    // Stable while the inode lock is held: the pages pinned below are the memfd's at it.
    let version = file.version();
    // Upstream would pin here and fail with ENOMEM: so do we, for the memlock limit.
    if let Some(m) = memlock {
        m.charge(nr)?;
    }
    let before = pages.len();
    let pinned = file.pin_into(bounds, scratch, pages, nr);
    drop(locked);
    if let Some(m) = memlock {
        // What was not appended is not held (the whole charge goes with the buffer).
        m.uncharge(nr - (pages.len() - before));
    }
    if nr - pinned? != 0 {
        return Err(EINVAL);
    }
    Ok(version)
}

/// Inclusive loff_t bounds of `size` bytes at `offset`. memfd_pin_folios takes loff_t
/// bounds: offsets past i64 or a wrapping end are invalid there, so they are here too.
pub(crate) fn byte_bounds(offset: u64, size: u64) -> Result<(i64, i64)> {
    let start = i64::try_from(offset).map_err(|_| EINVAL)?;
    let end = i64::try_from(size)
        .ok()
        .and_then(|s| start.checked_add(s))
        .and_then(|e| e.checked_sub(1));
    Ok((start, end.ok_or(EINVAL)?))
}

// KUnit tests (CONFIG_KUNIT kernels; the guest's `kunit` suite reports them).
#[kunit_tests(udmabuf_live_buffer_checks)]
mod tests {
    use super::*;

    #[test]
    fn byte_bounds_are_inclusive() {
        assert_eq!(byte_bounds(0, 4096).ok(), Some((0, 4095)));
        assert_eq!(byte_bounds(4096, 1).ok(), Some((4096, 4096)));
        assert_eq!(
            byte_bounds(1 << 21, 1 << 21).ok(),
            Some((1 << 21, (1 << 22) - 1))
        );
    }

    #[test]
    fn byte_bounds_at_the_loff_t_limit() {
        let max = i64::MAX as u64;
        // The end (offset + size) must be a loff_t, as a file size is: a range may end
        // at byte i64::MAX - 1, the last byte of the largest file.
        assert_eq!(
            byte_bounds(max - 4096, 4096).ok(),
            Some((i64::MAX - 4096, i64::MAX - 1))
        );
        assert_eq!(
            byte_bounds(max - 1, 1).ok(),
            Some((i64::MAX - 1, i64::MAX - 1))
        );
        // One past it: the end, the offset or the size does not fit.
        assert!(byte_bounds(max - 4095, 4096).is_err());
        assert!(byte_bounds(max, 1).is_err());
        assert!(byte_bounds(max + 1, 1).is_err());
        assert!(byte_bounds(0, u64::MAX).is_err());
        assert!(byte_bounds(u64::MAX, 4096).is_err());
    }

    #[test]
    fn seals_a_buffer_accepts() {
        let (shrink, grow) = (bindings::F_SEAL_SHRINK, bindings::F_SEAL_GROW);
        // Not a memfd, or a memfd that may still shrink: no.
        assert!(!seals_allow(None));
        assert!(!seals_allow(Some(0)));
        assert!(!seals_allow(Some(grow)));
        // Sealed against shrinking, with or without more that keeps it writable: yes.
        assert!(seals_allow(Some(shrink)));
        assert!(seals_allow(Some(shrink | grow)));
        assert!(seals_allow(Some(shrink | bindings::F_SEAL_SEAL)));
        // Sealed against writes, now or in the future: no.
        assert!(!seals_allow(Some(shrink | bindings::F_SEAL_WRITE)));
        assert!(!seals_allow(Some(shrink | bindings::F_SEAL_FUTURE_WRITE)));
    }
}
