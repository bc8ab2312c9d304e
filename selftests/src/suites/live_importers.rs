//! Live updates with importers attached. A static importer pins the buffer (the dma-buf
//! core pins at map) and a vmap maps its pages in the kernel: their pages may not change
//! under them, so the new pages wait ("stale") and go in at the last unpin or vunmap.
//! Meanwhile, as documented, the buffer still holds the old pages: SYNC times out, INFO
//! says STALE, VERIFY counts the punched pages as not matching, and the dma-buf mmap (and
//! the vmap) show the old bytes there. A dynamic importer is never pinned: it is told to
//! drop its mapping and maps the new pages. vgem (7.2) only attaches: no deferral.
//!
//! Static, dynamic and vmap imports come from the tests' own importer, ulive_importer
//! (importer_client.rs; one open importer per holder): vgem in 7.2 never maps an
//! imported dma-buf.

use super::common::*;
use super::importer_client::{Attach, Importer};
use super::live_util::*;
use super::{cases, vgem, Require, Suite};
use crate::ktap::CaseResult;
use anyhow::{bail, ensure, Context, Result};
use nix::errno::Errno;
use std::ops::RangeInclusive;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};
use udmabuf_live_uapi::*;

pub fn suite() -> Suite {
    Suite::new(
        "live-importers",
        cases![
            stale_until_static_importer_releases,
            sync_waits_for_unpin,
            stale_until_vunmap,
            dynamic_importer_remaps_new_pages,
            vgem_attach_does_not_defer,
            stale_until_last_holder_goes,
            repunch_while_stale_hugetlb,
        ],
    )
    .requires(&[Require::LiveDevice])
}

const PAGES: u64 = 32;
const HOLE: (u64, u64) = (8, 2); // first page, count

fn size() -> u64 {
    PAGES * ps()
}

fn in_hole(page: u64) -> bool {
    (HOLE.0..HOLE.0 + HOLE.1).contains(&page)
}

/// What the buffer shows while stale: the new bytes, except the old ones in the hole
/// (the pages outside it are still the memfd's own pages).
fn stale_view() -> Vec<u8> {
    let (old, mut v) = (pattern(1, size()), pattern(2, size()));
    let (a, b) = (
        (HOLE.0 * ps()) as usize,
        ((HOLE.0 + HOLE.1) * ps()) as usize,
    );
    v[a..b].copy_from_slice(&old[a..b]);
    v
}

/// What holds the buffer while it is punched.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Holder {
    StaticImport,
    DynamicImport,
    Vmap,
}

/// A watched shmem buffer, held by the importer, then punched and rewritten.
struct Held {
    dev: OwnedFd,
    _memfd: OwnedFd,
    map: Mapping,
    buf: OwnedFd,
    bmap: Mapping,
    imp: Importer,
    holder: Holder,
    before: UdmabufLiveInfo,
    old_pfns: Vec<u64>,
}

impl Held {
    fn new(holder: Holder) -> Result<Self> {
        let Watched {
            dev,
            memfd,
            map,
            buf,
        } = watched(Backing::Shmem, size(), 1)?;
        let bmap = map_shared(&buf, size())?;
        let imp = Importer::open()?;
        match holder {
            Holder::StaticImport => imp.import(&buf, Attach::Static).context("static import")?,
            Holder::DynamicImport => imp
                .import(&buf, Attach::Dynamic)
                .context("dynamic import")?,
            Holder::Vmap => imp.import_vmap(&buf).context("vmap")?,
        }
        let before = info(&dev, &buf)?;
        let (pins, vmapped) = match holder {
            Holder::StaticImport => (1, 0),
            Holder::DynamicImport => (0, 0),
            Holder::Vmap => (0, VMAPPED),
        };
        ensure!(
            before.pins == pins,
            "INFO while held: pins {}, expected {pins}",
            before.pins
        );
        expect_state(
            "held",
            &before,
            WATCHED | vmapped,
            STALE | PENDING | (VMAPPED & !vmapped),
        )?;
        let old_pfns = expect_pfns(
            "before the punch",
            &dev,
            &buf,
            0,
            &mapped_pfns(&map, 0, PAGES)?,
        )?;
        let held = Self {
            dev,
            _memfd: memfd,
            map,
            buf,
            bmap,
            imp,
            holder,
            before,
            old_pfns,
        };
        held.expect_importer_sees("before the punch", &held.old_pfns, &pattern(1, size()))?;
        punch(&held._memfd, HOLE.0 * ps(), HOLE.1 * ps())?;
        held.map.write(0, &pattern(2, size()));
        Ok(held)
    }

    /// The importer's own view: its DMA mapping's PFNs, or the bytes of its vmap.
    fn expect_importer_sees(&self, what: &str, pfns: &[u64], bytes: &[u8]) -> Result<()> {
        if self.holder == Holder::Vmap {
            let got = self
                .imp
                .vread_all(0, size())
                .context("read through the vmap")?;
            return expect_bytes(&format!("{what}: through the importer's vmap"), &got, bytes);
        }
        let v = self.imp.view(PAGES).context("the importer's PFNs")?;
        if let Some(i) = (0..pfns.len()).find(|&i| v.pfns[i] != pfns[i]) {
            bail!(
                "{what}: the importer's mapping has PFN {:#x} at page {i}, the buffer {:#x}",
                v.pfns[i],
                pfns[i]
            );
        }
        Ok(())
    }

    /// The documented stale state: old pages in the hole, everything else shared.
    fn expect_stale(&self) -> Result<()> {
        for timeout in [0, 50] {
            match sync_raw(&self.dev, fdnum(&self.buf), timeout) {
                Err(Errno::ETIMEDOUT) => {}
                other => {
                    bail!("SYNC (timeout {timeout} ms) while held: {other:?}, expected ETIMEDOUT")
                }
            }
        }
        let i = info(&self.dev, &self.buf)?;
        expect_state("held after a punch", &i, STALE, 0)?;
        expect_progress("while stale (nothing applied)", &self.before, &i, 0..=0, 0)?;
        let v = verify(&self.dev, &self.buf)?;
        ensure!(
            v.stale + v.holes == HOLE.1
                && v.matching == PAGES - HOLE.1
                && v.first_mismatch == HOLE.0 * ps(),
            "VERIFY while stale: {v:?}; expected the {} punched pages from {:#x} not matching",
            HOLE.1,
            HOLE.0 * ps()
        );
        expect_bytes(
            "dma-buf mmap while stale (old bytes in the hole)",
            &self.bmap.read(0, size()),
            &stale_view(),
        )?;
        let now = pfns(&self.dev, &self.buf, 0, PAGES)?;
        ensure!(
            now == self.old_pfns,
            "PFNS changed while the buffer was held"
        );
        self.expect_importer_sees("while stale", &self.old_pfns, &stale_view())?;
        Ok(())
    }

    /// Applied in one update: all matching, new bytes, new PFNs in the hole only.
    fn expect_applied(&self, what: &str) -> Result<Vec<u64>> {
        let i = info(&self.dev, &self.buf)?;
        expect_state(what, &i, WATCHED, STALE | PENDING | VMAPPED)?;
        ensure!(i.pins == 0, "INFO {what}: pins {}, expected 0", i.pins);
        expect_progress(what, &self.before, &i, 1..=1, HOLE.1)?;
        expect_all_matching(what, &self.dev, &self.buf, PAGES)?;
        expect_bytes(
            &format!("dma-buf mmap {what}"),
            &self.bmap.read(0, size()),
            &pattern(2, size()),
        )?;
        let new = expect_pfns(
            what,
            &self.dev,
            &self.buf,
            0,
            &mapped_pfns(&self.map, 0, PAGES)?,
        )?;
        expect_moved(what, &self.old_pfns, &new, |p| in_hole(p as u64))?;
        Ok(new)
    }
}

fn release_then_sync(h: &Held) -> Result<()> {
    h.imp.release().context("release the import")?;
    sync(&h.dev, &h.buf, 1000).context("SYNC after the release")?;
    h.expect_applied("after the release")?;
    Ok(())
}

/// A static import pins: stale until it is released; then SYNC succeeds.
fn stale_until_static_importer_releases() -> CaseResult {
    stale_until_released(Holder::StaticImport)
}

/// A kernel vmap: stale until the vunmap.
fn stale_until_vunmap() -> CaseResult {
    stale_until_released(Holder::Vmap)
}

/// Stale while `holder` holds the buffer; SYNC succeeds once it lets go.
fn stale_until_released(holder: Holder) -> CaseResult {
    let h = Held::new(holder)?;
    h.expect_stale()?;
    release_then_sync(&h)?;
    Ok(())
}

/// SYNC with a long timeout returns once another thread's release applies the pages.
fn sync_waits_for_unpin() -> CaseResult {
    let h = Held::new(Holder::StaticImport)?;
    h.expect_stale()?;
    let delay = Duration::from_millis(300);
    let imp = &h.imp;
    let (waited, released) = std::thread::scope(|s| {
        let t = s.spawn(move || {
            std::thread::sleep(delay);
            imp.release()
        });
        let t0 = Instant::now();
        let r = sync(&h.dev, &h.buf, 10_000);
        (r.map(|()| t0.elapsed()), t.join())
    });
    released
        .map_err(|_| anyhow::anyhow!("release thread panicked"))?
        .context("release in the other thread")?;
    let waited = waited.context("SYNC waiting for the unpin")?;
    ensure!(
        waited >= delay / 2 && waited < Duration::from_secs(9),
        "SYNC returned after {waited:?}; the unpin came after {delay:?}"
    );
    h.expect_applied("after SYNC waited for the unpin")?;
    Ok(())
}

/// A dynamic importer is not pinned: SYNC applies at once, the importer was told to
/// drop its mapping, and mapping again gives it the new pages.
fn dynamic_importer_remaps_new_pages() -> CaseResult {
    let h = Held::new(Holder::DynamicImport)?;
    sync(&h.dev, &h.buf, 0).context("SYNC with a dynamic importer")?;
    let new = h.expect_applied("after SYNC")?;
    let v = h.imp.view(PAGES).context("the importer's PFNs")?;
    ensure!(
        v.invalidations >= 1,
        "the dynamic importer was never told to drop its mapping: {v:?}"
    );
    ensure!(
        v.remaps == 1,
        "the dynamic importer mapped again {} times, expected 1",
        v.remaps
    );
    h.expect_importer_sees("after the update", &new, &pattern(2, size()))?;
    h.imp.release().context("release")?;
    Ok(())
}

/// vgem's PRIME import only attaches (no map, no pin): a punch while vgem holds the
/// buffer is applied at once, and the dma-buf vgem gives back shows the new bytes.
fn vgem_attach_does_not_defer() -> CaseResult {
    let w = watched(Backing::Shmem, size(), 1)?;
    let drm = vgem::open_vgem()?;
    let handle = vgem::fd_to_handle(&drm, &w.buf).context("PRIME_FD_TO_HANDLE")?;
    let before = w.info()?;
    ensure!(
        before.pins == 0,
        "INFO with a vgem import: pins {} (vgem 7.2 does not map imports)",
        before.pins
    );
    punch(&w.memfd, HOLE.0 * ps(), HOLE.1 * ps())?;
    w.map.write(0, &pattern(2, size()));
    w.sync(0).context("SYNC while vgem holds the import")?;
    let after = w.info()?;
    expect_state("after SYNC", &after, WATCHED, STALE | PENDING)?;
    expect_progress(
        "punch + SYNC with vgem attached",
        &before,
        &after,
        1..=1,
        HOLE.1,
    )?;
    expect_all_matching("after SYNC", &w.dev, &w.buf, PAGES)?;
    let back = vgem::handle_to_fd(&drm, handle).context("PRIME_HANDLE_TO_FD")?;
    let view = map_shared(&back, size())?;
    expect_bytes(
        "the dma-buf vgem gives back",
        &view.read(0, size()),
        &pattern(2, size()),
    )?;
    drop(view);
    drop(back);
    vgem::gem_close(&drm, handle).context("GEM_CLOSE")?;
    Ok(())
}

fn expect_sync_timeout(what: &str, dev: &OwnedFd, buf: &OwnedFd) -> Result<()> {
    match sync_raw(dev, fdnum(buf), 0) {
        Err(Errno::ETIMEDOUT) => {}
        other => bail!("SYNC {what}: {other:?}, expected ETIMEDOUT"),
    }
    expect_state(what, &info(dev, buf)?, STALE, 0)
}

fn expect_progress_since(
    what: &str,
    dev: &OwnedFd,
    buf: &OwnedFd,
    before: &UdmabufLiveInfo,
    updates: RangeInclusive<u64>,
    pages: u64,
) -> Result<()> {
    expect_progress(what, before, &info(dev, buf)?, updates, pages)
}

/// Three holders: a static import and a vmap from before the punch, and a second static
/// import made while stale (it starts on the old pages too, like the first). The update
/// waits until the last of them goes, whatever the order.
fn stale_until_last_holder_goes() -> CaseResult {
    let w = watched(Backing::Shmem, size(), 1)?;
    let bmap = map_shared(&w.buf, size())?;
    let (a, v, b) = (Importer::open()?, Importer::open()?, Importer::open()?);
    a.import(&w.buf, Attach::Static)
        .context("first static import")?;
    v.import_vmap(&w.buf).context("vmap")?;
    let before = w.info()?;
    let old = pfns(&w.dev, &w.buf, 0, PAGES)?;
    punch(&w.memfd, HOLE.0 * ps(), HOLE.1 * ps())?;
    w.map.write(0, &pattern(2, size()));
    expect_sync_timeout("held by a static import and a vmap", &w.dev, &w.buf)?;
    b.import(&w.buf, Attach::Static)
        .context("second static import, while stale")?;
    let i = w.info()?;
    ensure!(
        i.pins == 2,
        "INFO with two static imports: pins {}, expected 2",
        i.pins
    );
    let seen = b.view(PAGES).context("PFNs of the second import")?;
    ensure!(
        seen.pfns == old,
        "an import made while stale maps other pages than the first import"
    );
    a.release().context("release the first import")?;
    expect_sync_timeout("still held by an import and a vmap", &w.dev, &w.buf)?;
    v.release().context("vunmap")?;
    expect_sync_timeout("still held by the second import", &w.dev, &w.buf)?;
    expect_bytes(
        "dma-buf mmap while stale",
        &bmap.read(0, size()),
        &stale_view(),
    )?;
    expect_progress_since("while held", &w.dev, &w.buf, &before, 0..=0, 0)?;
    b.release().context("release the second import")?;
    w.sync(1000).context("SYNC after the last holder went")?;
    expect_progress_since(
        "after the last holder went",
        &w.dev,
        &w.buf,
        &before,
        1..=1,
        HOLE.1,
    )?;
    expect_all_matching("after the last holder went", &w.dev, &w.buf, PAGES)?;
    expect_bytes(
        "dma-buf mmap after the last holder went",
        &bmap.read(0, size()),
        &pattern(2, size()),
    )?;
    w.expect_pfns_mapped("after the last holder went", PAGES)?;
    Ok(())
}

/// A huge page punched twice while a static import holds the buffer: the second new
/// page replaces the first in the waiting set (whose pin must be dropped: the pool is
/// checked after closing), and the release applies only the newest one.
fn repunch_while_stale_hugetlb() -> CaseResult {
    let pool = hugepage_pool()?;
    {
        let size = 2 * HUGE_PAGE;
        let pages = size / ps();
        let w = watched(Backing::Hugetlb, size, 1)?;
        let bmap = map_shared(&w.buf, size)?;
        let imp = Importer::open()?;
        imp.import(&w.buf, Attach::Static)
            .context("static import")?;
        let before = w.info()?;
        for round in 0..3u8 {
            punch(&w.memfd, HUGE_PAGE, HUGE_PAGE)?;
            w.map.write(0, &pattern(2 + round, size));
            expect_sync_timeout(&format!("punch {round} while imported"), &w.dev, &w.buf)?;
            let v = verify(&w.dev, &w.buf)?;
            ensure!(
                v.stale + v.holes == pages / 2,
                "VERIFY after punch {round} while imported: {v:?}"
            );
        }
        let mut stale = pattern(4, size);
        stale[HUGE_PAGE as usize..].copy_from_slice(&pattern(1, size)[HUGE_PAGE as usize..]);
        expect_bytes("dma-buf mmap while stale", &bmap.read(0, size), &stale)?;
        imp.release().context("release the import")?;
        w.sync(1000).context("SYNC after the release")?;
        expect_progress_since(
            "after the release",
            &w.dev,
            &w.buf,
            &before,
            1..=1,
            pages / 2,
        )?;
        expect_all_matching("after the release", &w.dev, &w.buf, pages)?;
        expect_pattern("dma-buf mmap after the release", &bmap, 4, size)?;
        w.expect_pfns_mapped("after the release", pages)?;
    }
    expect_hugepage_pool("after closing everything", pool)?;
    Ok(())
}
