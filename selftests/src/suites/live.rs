//! Live updates on watched buffers: the creator maps its memfds, so the module's mmu
//! notifiers see a punch (fallocate or MADV_REMOVE) and the worker swaps the new pages
//! in. After new bytes are written through the memfd mappings and SYNC returns, a user
//! checks: the dma-buf mmap shows the new bytes, VERIFY finds every page matching, INFO
//! moved by exactly the punched pages, and PFNS equals the PFN /proc/self/pagemap shows
//! for the memfd mapping, for every page (punched pages moved, the others did not).

use super::common::*;
use super::live_util::*;
use super::{case_fns, cases, Require, Suite};
use crate::ktap::CaseResult;
use anyhow::{ensure, Context, Result};
use std::ops::RangeInclusive;
use std::os::fd::{AsFd, OwnedFd};
use udmabuf_live_uapi::*;

pub fn suite() -> Suite {
    Suite::new(
        "live",
        cases![
            punch_write_sync_shmem,
            punch_write_sync_hugetlb,
            disjoint_holes,
            hole_across_entries_one_memfd,
            hole_across_entries_reversed,
            hole_across_entries_two_memfds,
            hole_across_shmem_and_hugetlb_entries,
            hole_in_aliased_entries,
            madvise_remove_shmem,
            madvise_remove_hugetlb,
            punch_outside_the_buffer_changes_nothing,
            hole_left_unwritten_shmem,
            hole_left_unwritten_hugetlb,
            hugetlb_partial_punch,
            cpu_access_bracket_across_update,
        ],
    )
    .requires(&[Require::LiveDevice])
}

/// A buffer made of memfd ranges and holes punched into those memfds.
struct Layout {
    /// The memfds: backing and size. Each is mapped whole by the creator.
    memfds: Vec<(Backing, u64)>,
    /// The dma-buf's entries in order: (memfd index, offset, size).
    items: Vec<(usize, u64, u64)>,
    /// The holes: (memfd index, offset, length).
    holes: Vec<(usize, u64, u64)>,
    how: Punch,
    /// How many updates the punches may take (one per notifier callback at most).
    updates: RangeInclusive<u64>,
    backing: u32,
}

impl Layout {
    fn size(&self) -> u64 {
        self.items.iter().map(|i| i.2).sum()
    }

    /// Is dma-buf page `page` inside a hole?
    fn punched(&self, page: u64) -> bool {
        let mut first = 0;
        for &(m, off, size) in &self.items {
            let n = size / ps();
            if page < first + n {
                let foff = off + (page - first) * ps();
                return self
                    .holes
                    .iter()
                    .any(|&(hm, ho, hl)| hm == m && foff >= ho && foff < ho + hl);
            }
            first += n;
        }
        false
    }

    /// Where dma-buf page `page` lives: (memfd index, byte offset in it).
    fn source(&self, page: u64) -> (usize, u64) {
        let mut first = 0;
        for &(m, off, size) in &self.items {
            let n = size / ps();
            if page < first + n {
                return (m, off + (page - first) * ps());
            }
            first += n;
        }
        panic!("page {page} past the buffer");
    }

    /// What the dma-buf must show: the memfd ranges, read through the memfd mappings.
    fn content(&self, maps: &[Mapping]) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.size() as usize);
        for &(m, off, size) in &self.items {
            v.extend_from_slice(&maps[m].read(off, size));
        }
        v
    }

    /// The PFNs the dma-buf must hold: pagemap of the memfd mappings, range by range.
    fn mapped_pfns(&self, maps: &[Mapping]) -> Result<Vec<u64>> {
        let mut v = Vec::new();
        for &(m, off, size) in &self.items {
            v.extend(mapped_pfns(&maps[m], off, size / ps())?);
        }
        Ok(v)
    }

    fn run(&self) -> Result<()> {
        let size = self.size();
        let pages = size / ps();
        let dev = open_device(&test_device())?;
        let fds: Vec<OwnedFd> = self
            .memfds
            .iter()
            .map(|&(k, s)| memfd(k, s))
            .collect::<Result<_>>()?;
        let maps: Vec<Mapping> = fds
            .iter()
            .zip(&self.memfds)
            .map(|(fd, &(_, s))| map_shared(fd, s))
            .collect::<Result<_>>()?;
        for (i, (map, &(_, s))) in maps.iter().zip(&self.memfds).enumerate() {
            map.write(0, &pattern(10 + i as u8, s));
        }
        let items: Vec<_> = self
            .items
            .iter()
            .map(|&(m, off, s)| item(&fds[m], off, s))
            .collect();
        let buf = if items.len() == 1 {
            create(dev.as_fd(), &fds[0], self.items[0].1, self.items[0].2, 0)
                .context("UDMABUF_CREATE")?
        } else {
            create_list(dev.as_fd(), 0, &items).context("UDMABUF_CREATE_LIST")?
        };
        let bmap = map_shared(&buf, size)?;

        let before = info(&dev, &buf)?;
        ensure!(
            before.size == size
                && before.backing == self.backing
                && before.ranges == items.len() as u32,
            "INFO after create: {before:?}, expected size {size}, backing {}, {} ranges",
            self.backing,
            items.len()
        );
        // Each entry overlaps exactly one mapping (its memfd's, mapped whole): one notifier each.
        ensure!(
            before.notifiers == items.len() as u32,
            "INFO after create: {} notifiers, expected one per entry ({}): {before:?}",
            before.notifiers,
            items.len()
        );
        ensure!(
            before.generation == 0
                && before.updates == 0
                && before.pages_swapped == 0
                && before.pins == 0,
            "INFO after create: counters not zero: {before:?}"
        );
        expect_state("after create", &before, WATCHED, PENDING | STALE | VMAPPED)?;
        expect_bytes(
            "dma-buf before the punch",
            &bmap.read(0, size),
            &self.content(&maps),
        )?;
        expect_all_matching("before the punch", &dev, &buf, pages)?;
        let old_pfns = expect_pfns("before the punch", &dev, &buf, 0, &self.mapped_pfns(&maps)?)?;

        for &(m, off, len) in &self.holes {
            make_hole(self.how, &fds[m], &maps[m], off, len)?;
        }
        for (i, (map, &(_, s))) in maps.iter().zip(&self.memfds).enumerate() {
            map.write(0, &pattern(20 + i as u8, s));
        }
        sync(&dev, &buf, 1000)?;

        let after = info(&dev, &buf)?;
        expect_state(
            "after punch + write + SYNC",
            &after,
            WATCHED,
            PENDING | STALE | VMAPPED,
        )?;
        let punched = (0..pages).filter(|&p| self.punched(p)).count() as u64;
        expect_progress(
            "punch + write + SYNC",
            &before,
            &after,
            self.updates.clone(),
            punched,
        )?;
        let want = self.content(&maps);
        expect_bytes(
            "dma-buf mmap after punch + write + SYNC",
            &bmap.read(0, size),
            &want,
        )?;
        expect_all_matching("after SYNC", &dev, &buf, pages)?;
        let new_pfns = expect_pfns("after SYNC", &dev, &buf, 0, &self.mapped_pfns(&maps)?)?;
        expect_moved("after SYNC", &old_pfns, &new_pfns, |i| {
            self.punched(i as u64)
        })?;

        // The swapped-in pages are the memfd's own: a write through the dma-buf mmap is
        // seen through the memfd mapping.
        let page = (0..pages).find(|&p| self.punched(p)).unwrap_or(0);
        let (m, foff) = self.source(page);
        let marker = pattern(30, ps());
        bmap.write(page * ps(), &marker);
        expect_bytes(
            &format!("memfd {m} at {foff:#x} after writing dma-buf page {page} through its mmap"),
            &maps[m].read(foff, ps()),
            &marker,
        )?;
        expect_all_matching("after writing through the dma-buf", &dev, &buf, pages)?;
        Ok(())
    }
}

fn run(l: Layout) -> CaseResult {
    l.run()?;
    Ok(())
}

const SHMEM: u32 = UDMABUF_LIVE_BACKING_SHMEM;
const HUGETLB: u32 = UDMABUF_LIVE_BACKING_HUGETLB;
const MIXED: u32 = UDMABUF_LIVE_BACKING_MIXED;

/// Two pages punched in a 64-page shmem buffer: one notifier callback, one update.
fn punch_write_sync_shmem() -> CaseResult {
    run(Layout {
        memfds: vec![(Backing::Shmem, 64 * ps())],
        items: vec![(0, 0, 64 * ps())],
        holes: vec![(0, 4 * ps(), 2 * ps())],
        how: Punch::Fallocate,
        updates: 1..=1,
        backing: SHMEM,
    })
}

/// hugetlb punches are huge-page granular: one whole 2 MiB page (512 base pages) of two.
fn punch_write_sync_hugetlb() -> CaseResult {
    run(Layout {
        memfds: vec![(Backing::Hugetlb, 2 * HUGE_PAGE)],
        items: vec![(0, 0, 2 * HUGE_PAGE)],
        holes: vec![(0, HUGE_PAGE, HUGE_PAGE)],
        how: Punch::Fallocate,
        updates: 1..=1,
        backing: HUGETLB,
    })
}

/// Four separate holes (first, middle, last pages) before one SYNC.
fn disjoint_holes() -> CaseResult {
    run(Layout {
        memfds: vec![(Backing::Shmem, 64 * ps())],
        items: vec![(0, 0, 64 * ps())],
        holes: vec![
            (0, 0, ps()),
            (0, 10 * ps(), 3 * ps()),
            (0, 40 * ps(), ps()),
            (0, 63 * ps(), ps()),
        ],
        how: Punch::Fallocate,
        updates: 1..=4,
        backing: SHMEM,
    })
}

/// Two entries over consecutive halves of one memfd; one punch across the seam.
fn hole_across_entries_one_memfd() -> CaseResult {
    run(Layout {
        memfds: vec![(Backing::Shmem, 32 * ps())],
        items: vec![(0, 0, 16 * ps()), (0, 16 * ps(), 16 * ps())],
        holes: vec![(0, 14 * ps(), 4 * ps())],
        how: Punch::Fallocate,
        updates: 1..=2,
        backing: SHMEM,
    })
}

/// The halves in reverse order: the dma-buf's pages 14..18 are the memfd's last two
/// and first two pages.
fn hole_across_entries_reversed() -> CaseResult {
    run(Layout {
        memfds: vec![(Backing::Shmem, 32 * ps())],
        items: vec![(0, 16 * ps(), 16 * ps()), (0, 0, 16 * ps())],
        holes: vec![(0, 30 * ps(), 2 * ps()), (0, 0, 2 * ps())],
        how: Punch::Fallocate,
        updates: 1..=2,
        backing: SHMEM,
    })
}

/// Two memfds adjacent in the dma-buf; the hole is the end of one and the start of the
/// other.
fn hole_across_entries_two_memfds() -> CaseResult {
    run(Layout {
        memfds: vec![(Backing::Shmem, 8 * ps()), (Backing::Shmem, 8 * ps())],
        items: vec![(0, 0, 8 * ps()), (1, 0, 8 * ps())],
        holes: vec![(0, 6 * ps(), 2 * ps()), (1, 0, 2 * ps())],
        how: Punch::Fallocate,
        updates: 1..=2,
        backing: SHMEM,
    })
}

/// A hugetlb entry then a shmem entry; the hole is the whole huge page and the first
/// shmem pages.
fn hole_across_shmem_and_hugetlb_entries() -> CaseResult {
    run(Layout {
        memfds: vec![
            (Backing::Hugetlb, 2 * HUGE_PAGE),
            (Backing::Shmem, 16 * ps()),
        ],
        items: vec![(0, HUGE_PAGE, HUGE_PAGE), (1, 0, 16 * ps())],
        holes: vec![(0, HUGE_PAGE, HUGE_PAGE), (1, 0, 2 * ps())],
        how: Punch::Fallocate,
        updates: 1..=2,
        backing: MIXED,
    })
}

/// The same memfd pages twice in one dma-buf: both copies follow the punch.
fn hole_in_aliased_entries() -> CaseResult {
    run(Layout {
        memfds: vec![(Backing::Shmem, 8 * ps())],
        items: vec![(0, 0, 8 * ps()), (0, 0, 8 * ps())],
        holes: vec![(0, 2 * ps(), ps())],
        how: Punch::Fallocate,
        updates: 1..=2,
        backing: SHMEM,
    })
}

/// madvise(MADV_REMOVE) on the memfd mapping instead of fallocate.
fn madvise_remove_shmem() -> CaseResult {
    run(Layout {
        memfds: vec![(Backing::Shmem, 64 * ps())],
        items: vec![(0, 0, 64 * ps())],
        holes: vec![(0, 4 * ps(), 2 * ps())],
        how: Punch::MadvRemove,
        updates: 1..=1,
        backing: SHMEM,
    })
}

fn madvise_remove_hugetlb() -> CaseResult {
    run(Layout {
        memfds: vec![(Backing::Hugetlb, 2 * HUGE_PAGE)],
        items: vec![(0, 0, 2 * HUGE_PAGE)],
        holes: vec![(0, 0, HUGE_PAGE)],
        how: Punch::MadvRemove,
        updates: 1..=1,
        backing: HUGETLB,
    })
}

/// The buffer covers memfd pages 8..24 of 32, all mapped: punches of pages 0..4 and
/// 28..32 must leave the buffer alone (no update, same PFNs); a punch of page 10 then
/// swaps exactly dma-buf page 2.
fn punch_outside_the_buffer_changes_nothing() -> CaseResult {
    let (pages, first) = (16, 8);
    let dev = open_device(&test_device())?;
    let memfd = memfd(Backing::Shmem, 32 * ps())?;
    let map = map_shared(&memfd, 32 * ps())?;
    map.write(0, &pattern(1, 32 * ps()));
    let buf =
        create(dev.as_fd(), &memfd, first * ps(), pages * ps(), 0).context("UDMABUF_CREATE")?;
    let bmap = map_shared(&buf, pages * ps())?;
    let before = info(&dev, &buf)?;
    let old = expect_pfns(
        "after create",
        &dev,
        &buf,
        0,
        &mapped_pfns(&map, first * ps(), pages)?,
    )?;
    punch(&memfd, 0, 4 * ps())?;
    punch(&memfd, 28 * ps(), 4 * ps())?;
    map.write(0, &pattern(2, 32 * ps()));
    sync(&dev, &buf, 1000)?;
    expect_progress(
        "punches outside the buffer",
        &before,
        &info(&dev, &buf)?,
        0..=0,
        0,
    )?;
    let now = expect_pfns(
        "after punches outside",
        &dev,
        &buf,
        0,
        &mapped_pfns(&map, first * ps(), pages)?,
    )?;
    expect_moved("after punches outside", &old, &now, |_| false)?;
    let want = |m: &Mapping| m.read(first * ps(), pages * ps());
    expect_bytes(
        "dma-buf after punches outside",
        &bmap.read(0, pages * ps()),
        &want(&map),
    )?;
    punch(&memfd, 10 * ps(), ps())?;
    map.write(0, &pattern(3, 32 * ps()));
    sync(&dev, &buf, 1000)?;
    expect_progress(
        "a punch of memfd page 10",
        &before,
        &info(&dev, &buf)?,
        1..=1,
        1,
    )?;
    let new = expect_pfns(
        "after the punch inside",
        &dev,
        &buf,
        0,
        &mapped_pfns(&map, first * ps(), pages)?,
    )?;
    expect_moved("after the punch inside", &old, &new, |i| i == 2)?;
    expect_bytes(
        "dma-buf after the punch inside",
        &bmap.read(0, pages * ps()),
        &want(&map),
    )?;
    expect_all_matching("after the punch inside", &dev, &buf, pages)?;
    Ok(())
}

/// A hole nobody writes: the update fills it with a page that must be the memfd's own
/// (in its page cache), zero-filled; a later write through the memfd mapping reaches
/// the buffer without another update. With hugetlb the pool's free and reserved counts
/// must be back where they were once everything is closed.
fn hole_left_unwritten(kind: Backing) -> Result<()> {
    let pool = hugepage_pool()?;
    {
        let g = kind.granule();
        let size = 4 * g;
        let pages = size / ps();
        let hole = (g, g); // the second granule
        let dev = open_device(&test_device())?;
        let memfd = memfd(kind, size)?;
        let map = map_shared(&memfd, size)?;
        map.write(0, &pattern(1, size));
        let buf = create(dev.as_fd(), &memfd, 0, size, 0).context("UDMABUF_CREATE")?;
        let bmap = map_shared(&buf, size)?;
        let before = info(&dev, &buf)?;
        punch(&memfd, hole.0, hole.1)?;
        sync(&dev, &buf, 1000)?;
        let after = info(&dev, &buf)?;
        expect_progress(
            "punch + SYNC, hole left unwritten",
            &before,
            &after,
            1..=1,
            hole.1 / ps(),
        )?;
        expect_all_matching("after SYNC over an unwritten hole", &dev, &buf, pages)?;
        let mut want = pattern(1, size);
        want[hole.0 as usize..(hole.0 + hole.1) as usize].fill(0);
        expect_bytes(
            "dma-buf mmap over an unwritten hole",
            &bmap.read(0, size),
            &want,
        )?;
        expect_bytes(
            "memfd mapping over an unwritten hole",
            &map.read(0, size),
            &want,
        )?;
        expect_pfns(
            "the filled hole is the memfd's page",
            &dev,
            &buf,
            0,
            &mapped_pfns(&map, 0, pages)?,
        )?;
        expect_written_in_place(&dev, &buf, &map, &bmap, &after, &pattern(2, size), 1000)?;
    }
    if kind == Backing::Hugetlb {
        expect_hugepage_pool("after closing everything", pool)?;
    }
    Ok(())
}

case_fns! {
    hole_left_unwritten_shmem => hole_left_unwritten(Backing::Shmem);
    hole_left_unwritten_hugetlb => hole_left_unwritten(Backing::Hugetlb);
}

/// hugetlb punches are huge-page granular: a punch from 8 KiB before the end of huge
/// page 0 to 8 KiB into huge page 2 zeroes those bytes in place (same pages, no update
/// for them) and replaces huge page 1 whole (512 pages swapped, left unwritten: zeroes).
fn hugetlb_partial_punch() -> CaseResult {
    let size = 3 * HUGE_PAGE;
    let pages = size / ps();
    let (start, end) = (HUGE_PAGE - 2 * ps(), 2 * HUGE_PAGE + 2 * ps());
    let w = watched(Backing::Hugetlb, size, 1)?;
    let bmap = map_shared(&w.buf, size)?;
    let before = w.info()?;
    let old = w.expect_pfns_mapped("after create", pages)?;
    punch(&w.memfd, start, end - start)?;
    w.sync(1000)?;
    expect_progress(
        "a punch over 1 whole and 2 partial huge pages",
        &before,
        &w.info()?,
        1..=1,
        HUGE_PAGE / ps(),
    )?;
    let mut want = pattern(1, size);
    want[start as usize..end as usize].fill(0);
    expect_bytes("memfd after the punch", &w.map.read(0, size), &want)?;
    expect_bytes("dma-buf mmap after the punch", &bmap.read(0, size), &want)?;
    expect_all_matching("after the punch", &w.dev, &w.buf, pages)?;
    let new = w.expect_pfns_mapped("after the punch", pages)?;
    let hp = HUGE_PAGE / ps();
    expect_moved("after the punch", &old, &new, |i| {
        (hp..2 * hp).contains(&(i as u64))
    })?;
    Ok(())
}

/// A CPU access bracket (DMA_BUF_IOCTL_SYNC START ... END) with an update applied inside
/// it: END must still succeed, as it does on the built-in udmabuf, and the mmap shows
/// the new bytes.
fn cpu_access_bracket_across_update() -> CaseResult {
    let size = 16 * ps();
    let w = watched(Backing::Shmem, size, 1)?;
    let bmap = map_shared(&w.buf, size)?;
    let before = w.info()?;
    dmabuf_sync(&w.buf, SYNC_START | SYNC_RW).context("DMA_BUF_IOCTL_SYNC START")?;
    punch(&w.memfd, 3 * ps(), ps())?;
    w.map.write(0, &pattern(2, size));
    w.sync(1000)?;
    expect_progress(
        "punch + SYNC inside a CPU access bracket",
        &before,
        &w.info()?,
        1..=1,
        1,
    )?;
    expect_pattern("dma-buf mmap inside the bracket", &bmap, 2, size)?;
    dmabuf_sync(&w.buf, SYNC_END | SYNC_RW)
        .context("DMA_BUF_IOCTL_SYNC END after an update inside the bracket")?;
    // And a bracket after the update works as before.
    dmabuf_sync(&w.buf, SYNC_START | SYNC_RW)
        .context("DMA_BUF_IOCTL_SYNC START after the update")?;
    dmabuf_sync(&w.buf, SYNC_END | SYNC_RW).context("DMA_BUF_IOCTL_SYNC END after the update")?;
    Ok(())
}
