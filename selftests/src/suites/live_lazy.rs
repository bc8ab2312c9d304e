//! Live updates without notifier coverage ("not watched"): the creator never mapped the
//! memfd (it wrote it with pwrite), or unmapped it since, or mapped only part of it. No
//! notifier sees the punch, so nothing happens until the buffer is used: begin_cpu_access
//! (DMA_BUF_IOCTL_SYNC), map_dma_buf and the first pin (an import) and SYNC compare
//! every page with the memfd and swap in what changed. Before that VERIFY reports the
//! replaced pages as stale.

use super::common::*;
use super::importer_client::{Attach, Importer};
use super::live_util::*;
use super::{case_fns, cases, Require, Suite};
use crate::ktap::CaseResult;
use anyhow::{ensure, Context, Result};
use std::os::fd::{AsFd, OwnedFd};
use udmabuf_live_uapi::*;

pub fn suite() -> Suite {
    Suite::new(
        "live-lazy",
        cases![
            cpu_access_resyncs,
            sync_ioctl_resyncs,
            static_import_resyncs,
            dynamic_import_resyncs,
            sync_ioctl_resyncs_hugetlb,
            unmapped_since_create,
            mremap_rearms_watching,
            mprotect_keeps_watching,
            partially_mapped,
            unwritten_hole_shmem,
            unwritten_hole_hugetlb,
            unwritten_hole_dynamic_import_shmem,
            unwritten_hole_dynamic_import_hugetlb,
            unwritten_hole_static_import_hugetlb,
            punch_between_two_maps,
        ],
    )
    .requires(&[Require::LiveDevice])
}

const PAGES: u64 = 32;

/// A shmem buffer whose memfd was never mapped by its creator.
struct Lazy {
    dev: OwnedFd,
    memfd: OwnedFd,
    buf: OwnedFd,
    bmap: Mapping,
    before: UdmabufLiveInfo,
}

impl Lazy {
    fn size() -> u64 {
        PAGES * ps()
    }

    /// memfd written with pwrite(pattern(seed)), dma-buf created and mapped.
    fn new(seed: u8) -> Result<Self> {
        let size = Self::size();
        let dev = open_device(&test_device())?;
        let memfd = memfd(Backing::Shmem, size)?;
        pwrite(&memfd, 0, &pattern(seed, size))?;
        let buf = create(dev.as_fd(), &memfd, 0, size, 0).context("UDMABUF_CREATE")?;
        let before = info(&dev, &buf)?;
        expect_state(
            "created from an unmapped memfd",
            &before,
            0,
            WATCHED | PENDING | STALE,
        )?;
        ensure!(
            before.notifiers == 0,
            "created from an unmapped memfd: {} notifiers, expected 0",
            before.notifiers
        );
        let bmap = map_shared(&buf, size)?;
        expect_pattern("dma-buf after create", &bmap, seed, size)?;
        expect_all_matching("after create", &dev, &buf, PAGES)?;
        Ok(Self {
            dev,
            memfd,
            buf,
            bmap,
            before,
        })
    }

    /// Punch `holes` (page index, count) and pwrite pattern(seed) over the whole memfd.
    /// Nothing watches: VERIFY must now see exactly the punched pages as replaced, and
    /// no update may have happened yet.
    fn punch_and_write(&self, holes: &[(u64, u64)], seed: u8) -> Result<u64> {
        for &(p, n) in holes {
            punch(&self.memfd, p * ps(), n * ps())?;
        }
        pwrite(&self.memfd, 0, &pattern(seed, Self::size()))?;
        let punched: u64 = holes.iter().map(|h| h.1).sum();
        let v = verify(&self.dev, &self.buf)?;
        let first = holes.iter().map(|h| h.0).min().unwrap_or(0) * ps();
        ensure!(
            v.stale == punched && v.holes == 0 && v.matching == PAGES - punched && v.first_mismatch == first,
            "VERIFY after an unwatched punch + pwrite: {v:?}; expected {punched} stale pages, the first at {first:#x}"
        );
        let i = info(&self.dev, &self.buf)?;
        expect_progress(
            "unwatched punch, before any resync",
            &self.before,
            &i,
            0..=0,
            0,
        )?;
        Ok(punched)
    }

    /// After the resync: the mmap shows pattern(seed), VERIFY all matching, one update of
    /// `punched` pages, and the buffer holds the memfd's pages (checked through a mapping
    /// made now, which the next INFO watches).
    fn expect_resynced(&self, what: &str, seed: u8, punched: u64) -> Result<()> {
        let size = Self::size();
        expect_bytes(
            &format!("dma-buf mmap after {what}"),
            &self.bmap.read(0, size),
            &pattern(seed, size),
        )?;
        expect_all_matching(&format!("after {what}"), &self.dev, &self.buf, PAGES)?;
        let i = info(&self.dev, &self.buf)?;
        expect_progress(what, &self.before, &i, 1..=1, punched)?;
        let map = map_shared(&self.memfd, size)?;
        expect_pattern("memfd mapping", &map, seed, size)?;
        expect_pfns(
            &format!("after {what}"),
            &self.dev,
            &self.buf,
            0,
            &mapped_pfns(&map, 0, PAGES)?,
        )?;
        // INFO is a sync point: it puts a notifier on the mapping made since.
        let i = info(&self.dev, &self.buf)?;
        expect_state(
            &format!("after {what} and a late mapping (INFO re-arms)"),
            &i,
            WATCHED,
            STALE,
        )?;
        ensure!(
            i.notifiers == 1,
            "after a late mapping: INFO notifiers {}, expected 1",
            i.notifiers
        );
        Ok(())
    }
}

/// DMA_BUF_IOCTL_SYNC START alone brings the dma-buf in step; END completes the access.
fn cpu_access_resyncs() -> CaseResult {
    let l = Lazy::new(1)?;
    let punched = l.punch_and_write(&[(4, 2), (20, 1)], 2)?;
    dmabuf_sync(&l.buf, SYNC_START | SYNC_RW).context("DMA_BUF_IOCTL_SYNC START")?;
    l.expect_resynced("DMA_BUF_IOCTL_SYNC START", 2, punched)?;
    dmabuf_sync(&l.buf, SYNC_END | SYNC_RW).context("DMA_BUF_IOCTL_SYNC END")?;
    expect_all_matching("after DMA_BUF_IOCTL_SYNC END", &l.dev, &l.buf, PAGES)?;
    Ok(())
}

/// UDMABUF_LIVE_SYNC checks every page of an unwatched buffer.
fn sync_ioctl_resyncs() -> CaseResult {
    let l = Lazy::new(3)?;
    let punched = l.punch_and_write(&[(0, 1), (9, 3), (31, 1)], 4)?;
    sync(&l.dev, &l.buf, 0)?;
    l.expect_resynced("UDMABUF_LIVE_SYNC", 4, punched)?;
    Ok(())
}

/// An import after an unwatched punch starts on the new pages: a static import through
/// the first pin, a dynamic one through map_dma_buf. The importer's DMA mapping then
/// points at the memfd's pages.
fn import_resyncs(how: Attach) -> CaseResult {
    let l = Lazy::new(5)?;
    let punched = l.punch_and_write(&[(7, 2)], 6)?;
    let imp = Importer::open()?;
    imp.import(&l.buf, how)
        .with_context(|| format!("{how:?} import"))?;
    let pins = u32::from(how == Attach::Static);
    let i = info(&l.dev, &l.buf)?;
    ensure!(
        i.pins == pins,
        "INFO after a {how:?} import: pins {}, expected {pins}",
        i.pins
    );
    l.expect_resynced(&format!("a {how:?} import"), 6, punched)?;
    let view = imp.view(PAGES).context("the importer's PFNs")?;
    let want = pfns(&l.dev, &l.buf, 0, PAGES)?;
    ensure!(
        view.pfns == want,
        "the importer maps other pages than the buffer holds"
    );
    imp.release().context("release the import")?;
    let i = info(&l.dev, &l.buf)?;
    ensure!(
        i.pins == 0,
        "INFO after the release: pins {}, expected 0",
        i.pins
    );
    expect_all_matching("after the release", &l.dev, &l.buf, PAGES)?;
    Ok(())
}

case_fns! {
    static_import_resyncs => import_resyncs(Attach::Static);
    dynamic_import_resyncs => import_resyncs(Attach::Dynamic);
}

/// hugetlbfs has no pwrite: the creator maps, writes and unmaps before create, then
/// writes the new bytes through a mapping made after create (which is not watched).
fn sync_ioctl_resyncs_hugetlb() -> CaseResult {
    let size = 2 * HUGE_PAGE;
    let pages = size / ps();
    let dev = open_device(&test_device())?;
    let memfd = memfd(Backing::Hugetlb, size)?;
    fill_memfd(&memfd, size, 0, &pattern(7, size))?;
    let buf = create(dev.as_fd(), &memfd, 0, size, 0).context("UDMABUF_CREATE")?;
    let before = info(&dev, &buf)?;
    expect_state(
        "created from an unmapped hugetlb memfd",
        &before,
        0,
        WATCHED,
    )?;
    let bmap = map_shared(&buf, size)?;
    punch(&memfd, 0, HUGE_PAGE)?;
    let map = map_shared(&memfd, size)?;
    map.write(0, &pattern(8, size));
    let v = verify(&dev, &buf)?;
    ensure!(
        v.stale == pages / 2 && v.matching == pages / 2 && v.first_mismatch == 0,
        "VERIFY before SYNC: {v:?}"
    );
    sync(&dev, &buf, 0)?;
    expect_current("after SYNC", &dev, &buf, &bmap, &pattern(8, size))?;
    expect_progress("SYNC", &before, &info(&dev, &buf)?, 1..=1, pages / 2)?;
    expect_pfns("after SYNC", &dev, &buf, 0, &mapped_pfns(&map, 0, pages)?)?;
    Ok(())
}

/// Created with the memfd mapped (watched), then munmapped: no longer watched, and SYNC
/// finds a later punch.
fn unmapped_since_create() -> CaseResult {
    let size = PAGES * ps();
    let Watched {
        dev,
        memfd,
        map,
        buf,
    } = watched(Backing::Shmem, size, 9)?;
    let before = info(&dev, &buf)?;
    expect_state("created with the memfd mapped", &before, WATCHED, 0)?;
    drop(map);
    expect_state("after munmap of the memfd", &info(&dev, &buf)?, 0, WATCHED)?;
    let bmap = map_shared(&buf, size)?;
    punch(&memfd, 12 * ps(), 2 * ps())?;
    pwrite(&memfd, 0, &pattern(10, size))?;
    sync(&dev, &buf, 0)?;
    expect_current("after SYNC", &dev, &buf, &bmap, &pattern(10, size))?;
    expect_progress(
        "SYNC after munmap + punch",
        &before,
        &info(&dev, &buf)?,
        1..=1,
        2,
    )?;
    Ok(())
}

/// Moving the watched mapping (mremap) unmaps the watched range; the next sync point
/// (INFO here) watches the mapping at its new address, and a punch made afterwards is
/// applied without a SYNC.
fn mremap_rearms_watching() -> CaseResult {
    let size = PAGES * ps();
    let Watched {
        dev,
        memfd,
        map,
        buf,
    } = watched(Backing::Shmem, size, 15)?;
    let before = info(&dev, &buf)?;
    expect_state("created with the memfd mapped", &before, WATCHED, 0)?;
    // Move the mapping onto a reserved address (same size: without MREMAP_FIXED the
    // kernel would leave it in place); the old range is unmapped, the new one unwatched.
    use nix::libc;
    // SAFETY: a fresh anonymous reservation, replaced by the move below.
    let target = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size as usize,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    ensure!(
        target != libc::MAP_FAILED,
        "mmap of the target range: {}",
        nix::errno::Errno::last()
    );
    // SAFETY: moves a mapping we own onto our reservation; `map` is forgotten below and
    // the moved mapping unmapped at the end.
    let moved = unsafe {
        libc::mremap(
            map.addr() as *mut libc::c_void,
            size as usize,
            size as usize,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            target,
        )
    };
    ensure!(
        moved == target,
        "mremap(MREMAP_FIXED): {:?} ({})",
        moved,
        nix::errno::Errno::last()
    );
    std::mem::forget(map);
    let result = (|| -> Result<()> {
        let i = info(&dev, &buf)?;
        expect_state(
            "after mremap of the memfd mapping (INFO re-arms)",
            &i,
            WATCHED,
            0,
        )?;
        ensure!(
            i.notifiers == 1,
            "after mremap: INFO notifiers {}, expected the moved mapping",
            i.notifiers
        );
        let bmap = map_shared(&buf, size)?;
        punch(&memfd, 3 * ps(), 2 * ps())?;
        pwrite(&memfd, 0, &pattern(16, size))?;
        let t0 = std::time::Instant::now();
        while info(&dev, &buf)?.updates == before.updates
            && t0.elapsed() < std::time::Duration::from_secs(10)
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        expect_progress(
            "mremap + punch, no SYNC",
            &before,
            &info(&dev, &buf)?,
            1..=1,
            2,
        )?;
        sync(&dev, &buf, 0)?;
        expect_current("after SYNC", &dev, &buf, &bmap, &pattern(16, size))?;
        Ok(())
    })();
    // SAFETY: unmaps the moved mapping, which nothing else refers to.
    unsafe { libc::munmap(moved, size as usize) };
    result?;
    Ok(())
}

/// mprotect changes protections but unmaps nothing: still watched, and a punch through
/// the read-only mapping's file is applied by the worker.
fn mprotect_keeps_watching() -> CaseResult {
    let size = PAGES * ps();
    let w = watched(Backing::Shmem, size, 17)?;
    let before = w.info()?;
    // SAFETY: changes the protection of a mapping we own; it is only read below.
    let r = unsafe {
        nix::libc::mprotect(
            w.map.addr() as *mut nix::libc::c_void,
            size as usize,
            nix::libc::PROT_READ,
        )
    };
    nix::errno::Errno::result(r).context("mprotect(PROT_READ)")?;
    expect_state(
        "after mprotect of the memfd mapping",
        &w.info()?,
        WATCHED,
        0,
    )?;
    let bmap = map_shared(&w.buf, size)?;
    punch(&w.memfd, 6 * ps(), ps())?;
    pwrite(&w.memfd, 0, &pattern(18, size))?;
    w.sync(0)?;
    expect_pattern("dma-buf mmap after SYNC", &bmap, 18, size)?;
    expect_pattern("read-only memfd mapping", &w.map, 18, size)?;
    expect_all_matching("after SYNC", &w.dev, &w.buf, PAGES)?;
    expect_progress("punch + SYNC after mprotect", &before, &w.info()?, 1..=1, 1)?;
    expect_state("after SYNC", &w.info()?, WATCHED, STALE | PENDING)?;
    Ok(())
}

/// Only the first half of the memfd is mapped at create: not watched. A punch in each
/// half; SYNC brings both in (the watched half may already have gone in by the worker).
fn partially_mapped() -> CaseResult {
    let size = PAGES * ps();
    let dev = open_device(&test_device())?;
    let memfd = memfd(Backing::Shmem, size)?;
    pwrite(&memfd, 0, &pattern(11, size))?;
    let half = map_shared(&memfd, size / 2)?;
    let buf = create(dev.as_fd(), &memfd, 0, size, 0).context("UDMABUF_CREATE")?;
    let before = info(&dev, &buf)?;
    expect_state("created with half of the memfd mapped", &before, 0, WATCHED)?;
    ensure!(
        before.notifiers == 1,
        "half mapped: {} notifiers, expected 1",
        before.notifiers
    );
    let bmap = map_shared(&buf, size)?;
    punch(&memfd, 4 * ps(), ps())?;
    punch(&memfd, 24 * ps(), ps())?;
    pwrite(&memfd, 0, &pattern(12, size))?;
    sync(&dev, &buf, 0)?;
    expect_current("after SYNC", &dev, &buf, &bmap, &pattern(12, size))?;
    expect_progress(
        "SYNC after punches in both halves",
        &before,
        &info(&dev, &buf)?,
        1..=2,
        2,
    )?;
    drop(half);
    Ok(())
}

/// An unwatched punch left as a hole: VERIFY counts holes (not stale pages) until SYNC
/// or an import (map_dma_buf or the first pin, under the reservation lock) fills them
/// from the memfd; the filled page is the memfd's own (a later write to the
/// memfd reaches the buffer without another update); with hugetlb the pool's free and
/// reserved counts are back once everything is closed.
fn unwritten_hole(kind: Backing, via: Option<Attach>) -> Result<()> {
    let pool = hugepage_pool()?;
    {
        let g = kind.granule();
        let size = 4 * g;
        let pages = size / ps();
        let dev = open_device(&test_device())?;
        let memfd = memfd(kind, size)?;
        fill_memfd(&memfd, size, 0, &pattern(13, size))?;
        let buf = create(dev.as_fd(), &memfd, 0, size, 0).context("UDMABUF_CREATE")?;
        let before = info(&dev, &buf)?;
        expect_state("created from an unmapped memfd", &before, 0, WATCHED)?;
        let bmap = map_shared(&buf, size)?;
        punch(&memfd, 2 * g, g)?;
        let v = verify(&dev, &buf)?;
        ensure!(
            v.holes == g / ps() && v.stale == 0 && v.first_mismatch == 2 * g,
            "VERIFY over an unwatched, unwritten hole: {v:?}; expected {} holes from {:#x}",
            g / ps(),
            2 * g
        );
        let imp = Importer::open()?;
        let imported = match via {
            None => {
                sync(&dev, &buf, 0)?;
                false
            }
            Some(how) => {
                imp.import(&buf, how)
                    .with_context(|| format!("{how:?} import"))?;
                true
            }
        };
        let after = info(&dev, &buf)?;
        expect_progress(
            "the resync of an unwritten hole",
            &before,
            &after,
            1..=1,
            g / ps(),
        )?;
        expect_all_matching("after SYNC", &dev, &buf, pages)?;
        let mut want = pattern(13, size);
        want[(2 * g) as usize..(3 * g) as usize].fill(0);
        expect_bytes("dma-buf mmap after SYNC", &bmap.read(0, size), &want)?;
        let map = map_shared(&memfd, size)?;
        expect_bytes("memfd after SYNC", &map.read(0, size), &want)?;
        expect_pfns(
            "the filled hole is the memfd's page",
            &dev,
            &buf,
            0,
            &mapped_pfns(&map, 0, pages)?,
        )?;
        expect_written_in_place(&dev, &buf, &map, &bmap, &after, &pattern(14, size), 0)?;
        if imported {
            let view = imp.view(pages).context("the importer's PFNs")?;
            ensure!(
                view.pfns == pfns(&dev, &buf, 0, pages)?,
                "the importer maps other pages than the buffer holds"
            );
            imp.release().context("release the import")?;
        }
    }
    if kind == Backing::Hugetlb {
        expect_hugepage_pool("after closing everything", pool)?;
    }
    Ok(())
}

case_fns! {
    unwritten_hole_shmem => unwritten_hole(Backing::Shmem, None);
    unwritten_hole_hugetlb => unwritten_hole(Backing::Hugetlb, None);
    unwritten_hole_dynamic_import_shmem =>
        unwritten_hole(Backing::Shmem, Some(Attach::Dynamic));
    unwritten_hole_dynamic_import_hugetlb =>
        unwritten_hole(Backing::Hugetlb, Some(Attach::Dynamic));
    unwritten_hole_static_import_hugetlb =>
        unwritten_hole(Backing::Hugetlb, Some(Attach::Static));
}

/// Two maps of a dynamic import with nothing between them but one punch and a pwrite:
/// the second must map the new pages, whatever shortcut skips the walk when nothing
/// changed (the memfd's change counter), and a third map with nothing changed must keep
/// them.
fn punch_between_two_maps() -> CaseResult {
    let l = Lazy::new(5)?;
    let imp = Importer::open()?;
    imp.import(&l.buf, Attach::Dynamic)
        .context("dynamic import")?;
    let first = imp.view(PAGES).context("first map")?;
    ensure!(
        first.pfns == pfns(&l.dev, &l.buf, 0, PAGES)?,
        "the first map is not of the buffer's pages"
    );
    let punched = l.punch_and_write(&[(3, 1), (20, 4)], 6)?;
    imp.map().context("second map")?;
    let map = map_shared(&l.memfd, Lazy::size())?;
    expect_bytes(
        "the memfd after the punch and pwrite",
        &map.read(0, Lazy::size()),
        &pattern(6, Lazy::size()),
    )?;
    let memfd_pfns = mapped_pfns(&map, 0, PAGES)?;
    let second = imp.view(PAGES).context("PFNs of the second map")?;
    ensure!(
        second.pfns == memfd_pfns,
        "the second map, after a punch, is not of the memfd's pages"
    );
    expect_progress(
        "a punch between two maps",
        &l.before,
        &info(&l.dev, &l.buf)?,
        1..=1,
        punched,
    )?;
    imp.map().context("third map")?;
    let third = imp.view(PAGES).context("PFNs of the third map")?;
    ensure!(
        third.pfns == memfd_pfns,
        "a third map with nothing changed moved pages"
    );
    expect_progress(
        "a third map with nothing changed",
        &l.before,
        &info(&l.dev, &l.buf)?,
        1..=1,
        punched,
    )?;
    imp.release().context("release")?;
    Ok(())
}
