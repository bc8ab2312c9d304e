//! Many live updates on one buffer: ROUNDS rounds of punch one page (a page chosen from
//! a fixed seed, punched by fallocate or MADV_REMOVE), write a round-specific page
//! through the memfd mapping, SYNC, and check every round that both mappings show the
//! whole expected content and VERIFY finds every page matching. At the end INFO must
//! count exactly one update and one swapped page per round (none lost, none extra) and
//! the buffer must hold the memfd's pages. The time taken is reported.
//!
//! Then every kind of user at once on one buffer: a thread punching and rewriting pages,
//! one calling SYNC/VERIFY/INFO, one doing CPU access (DMA_BUF_IOCTL_SYNC and reads of
//! the dma-buf mmap), one importing statically and dynamically, one vmapping. No call
//! may fail other than SYNC's ETIMEDOUT while pinned; once they stop, SYNC must succeed
//! and the buffer must equal the memfd (lockdep and hangs are judged from the console).

use super::common::*;
use super::importer_client::{Attach, Importer};
use super::live_util::*;
use super::{cases, Require, Suite};
use crate::ktap::{out, CaseResult};
use anyhow::{bail, ensure, Context, Result};
use nix::errno::Errno;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

pub fn suite() -> Suite {
    Suite::new(
        "live-stress",
        cases![punch_write_sync_rounds, concurrent_users],
    )
    .requires(&[Require::LiveDevice])
}

const ROUNDS: u64 = 1000;
const PAGES: u64 = 64;
const SEED: u64 = 0x0dd_ba11_5eed;

/// The page written in round `round` at page `page`: its first 16 bytes name both, so
/// no two rounds write the same page content.
fn round_page(round: u64, page: u64) -> Vec<u8> {
    let mut v: Vec<u8> = (0..ps())
        .map(|i| (i as u8).wrapping_mul(13) ^ (round as u8).wrapping_mul(29) ^ page as u8)
        .collect();
    v[..8].copy_from_slice(&round.to_le_bytes());
    v[8..16].copy_from_slice(&page.to_le_bytes());
    v
}

fn punch_write_sync_rounds() -> CaseResult {
    let size = PAGES * ps();
    let dev = open_device(&test_device())?;
    let memfd = memfd(Backing::Shmem, size)?;
    let map = map_shared(&memfd, size)?;
    let mut model = pattern(50, size);
    map.write(0, &model);
    let buf = create(dev.as_fd(), &memfd, 0, size, 0).context("UDMABUF_CREATE")?;
    let bmap = map_shared(&buf, size)?;
    let before = info(&dev, &buf)?;
    let mut rng = XorShift::new(SEED);
    let t0 = Instant::now();
    let mut done = 0;
    let r: Result<()> = (|| {
        for round in 0..ROUNDS {
            let page = rng.below(PAGES);
            let how = if rng.next() & 1 == 0 {
                Punch::Fallocate
            } else {
                Punch::MadvRemove
            };
            let at = |what: &str| format!("round {round} (page {page}, {how:?}): {what}");
            make_hole(how, &memfd, &map, page * ps(), ps()).with_context(|| at("punch"))?;
            let data = round_page(round, page);
            map.write(page * ps(), &data);
            model[(page * ps()) as usize..((page + 1) * ps()) as usize].copy_from_slice(&data);
            sync(&dev, &buf, 1000).with_context(|| at("SYNC"))?;
            expect_all_matching(&at("VERIFY"), &dev, &buf, PAGES)?;
            expect_bytes(&at("dma-buf mmap"), &bmap.read(0, size), &model)?;
            expect_bytes(&at("memfd mmap"), &map.read(0, size), &model)?;
            done += 1;
        }
        Ok(())
    })();
    let secs = t0.elapsed().as_secs_f64();
    out(&format!(
        "    # live-stress: {done}/{ROUNDS} rounds passed in {secs:.2} s ({:.2} ms/round)",
        secs * 1000.0 / done.max(1) as f64
    ));
    r?;
    let after = info(&dev, &buf)?;
    expect_state(
        &format!("after {ROUNDS} rounds"),
        &after,
        WATCHED,
        PENDING | STALE,
    )?;
    expect_progress(
        &format!("{ROUNDS} rounds"),
        &before,
        &after,
        ROUNDS..=ROUNDS,
        ROUNDS,
    )?;
    expect_pfns(
        &format!("after {ROUNDS} rounds"),
        &dev,
        &buf,
        0,
        &mapped_pfns(&map, 0, PAGES)?,
    )?;
    Ok(())
}

const PUNCHES: u64 = 2000;

/// Apply `f` until `stop`, counting the rounds; the first error stops everyone.
fn until_stopped(
    stop: &AtomicBool,
    count: &AtomicU64,
    mut f: impl FnMut(u64) -> Result<()>,
) -> Result<()> {
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        if let Err(e) = f(i) {
            stop.store(true, Ordering::Relaxed);
            return Err(e);
        }
        i += 1;
        count.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

fn concurrent_users() -> CaseResult {
    let size = PAGES * ps();
    let w = watched(Backing::Shmem, size, 60)?;
    let bmap = map_shared(&w.buf, size)?;
    let (maddr, baddr) = (w.map.addr(), bmap.addr());
    let stop = AtomicBool::new(false);
    let counts: [AtomicU64; 5] = Default::default();
    let end_einval = AtomicU64::new(0);
    let t0 = Instant::now();
    let results: Vec<(&str, Result<()>)> = std::thread::scope(|s| {
        let (dev, buf, memfd, stop, counts, end_einval) =
            (&w.dev, &w.buf, &w.memfd, &stop, &counts, &end_einval);
        let puncher = s.spawn(move || -> Result<()> {
            let mut rng = XorShift::new(SEED ^ 1);
            let r = (|| {
                for round in 0..PUNCHES {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let page = rng.below(PAGES);
                    if rng.next() & 1 == 0 {
                        punch(memfd, page * ps(), ps())?;
                    } else {
                        // SAFETY: one page inside the live memfd mapping.
                        let r = unsafe {
                            nix::libc::madvise(
                                (maddr + (page * ps()) as usize) as *mut _,
                                ps() as usize,
                                nix::libc::MADV_REMOVE,
                            )
                        };
                        Errno::result(r).context("madvise(MADV_REMOVE)")?;
                    }
                    let data = round_page(round, page);
                    // SAFETY: one page inside the live memfd mapping.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            data.as_ptr(),
                            (maddr + (page * ps()) as usize) as *mut u8,
                            data.len(),
                        )
                    };
                    counts[0].fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })();
            stop.store(true, Ordering::Relaxed);
            r
        });
        let syncer = s.spawn(move || {
            until_stopped(stop, &counts[1], |_| {
                match sync_raw(dev, fdnum(buf), 20) {
                    Ok(()) | Err(Errno::ETIMEDOUT) => {}
                    Err(e) => bail!("SYNC: {e}"),
                }
                verify(dev, buf)?;
                info(dev, buf)?;
                Ok(())
            })
        });
        let cpu = s.spawn(move || {
            until_stopped(stop, &counts[2], |i| {
                dmabuf_sync(buf, SYNC_START | SYNC_RW).context("DMA_BUF_IOCTL_SYNC START")?;
                let off = (i % PAGES) * ps();
                // SAFETY: a read inside the live dma-buf mapping.
                let _ = unsafe { std::ptr::read_volatile((baddr + off as usize) as *const u64) };
                // An update inside the bracket must not make END fail (it once did,
                // with EINVAL: live/cpu_access_bracket_across_update).
                match dmabuf_sync(buf, SYNC_END | SYNC_RW) {
                    Ok(()) => {}
                    Err(Errno::EINVAL) => {
                        end_einval.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => bail!("DMA_BUF_IOCTL_SYNC END: {e}"),
                }
                Ok(())
            })
        });
        let importer = s.spawn(move || {
            let imp = Importer::open()?;
            until_stopped(stop, &counts[3], |i| {
                let how = if i % 2 == 0 {
                    Attach::Static
                } else {
                    Attach::Dynamic
                };
                imp.import(buf, how)
                    .with_context(|| format!("{how:?} import"))?;
                imp.view(PAGES)
                    .with_context(|| format!("{how:?} import: PFNs"))?;
                imp.release()
                    .with_context(|| format!("{how:?} import: release"))?;
                Ok(())
            })
        });
        let vmapper = s.spawn(move || {
            let imp = Importer::open()?;
            until_stopped(stop, &counts[4], |_| {
                imp.import_vmap(buf).context("vmap")?;
                imp.vread_all(0, ps()).context("read through the vmap")?;
                imp.release().context("vunmap")?;
                Ok(())
            })
        });
        let join = |h: std::thread::ScopedJoinHandle<'_, Result<()>>| {
            h.join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("panicked")))
        };
        vec![
            ("puncher", join(puncher)),
            ("SYNC/VERIFY/INFO", join(syncer)),
            ("CPU access", join(cpu)),
            ("importer", join(importer)),
            ("vmap", join(vmapper)),
        ]
    });
    let n: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    out(&format!(
        "    # concurrent users: {} punches, {} SYNC/VERIFY/INFO, {} CPU accesses ({} ENDs failed with EINVAL), \
         {} imports, {} vmaps in {:.2} s",
        n[0],
        n[1],
        n[2],
        end_einval.load(Ordering::Relaxed),
        n[3],
        n[4],
        t0.elapsed().as_secs_f64()
    ));
    for (who, r) in results {
        r.with_context(|| format!("{who} thread"))?;
    }
    anyhow::ensure!(n[0] == PUNCHES, "only {} of {PUNCHES} punches done", n[0]);
    w.sync(2000).context("SYNC once every user stopped")?;
    ensure!(
        end_einval.load(Ordering::Relaxed) == 0,
        "DMA_BUF_IOCTL_SYNC END failed with EINVAL after an update"
    );
    expect_state(
        "once every user stopped",
        &w.info()?,
        WATCHED,
        STALE | PENDING | VMAPPED,
    )?;
    expect_all_matching("once every user stopped", &w.dev, &w.buf, PAGES)?;
    expect_bytes(
        "dma-buf mmap once every user stopped",
        &bmap.read(0, size),
        &w.map.read(0, size),
    )?;
    w.expect_pfns_mapped("once every user stopped", PAGES)?;
    Ok(())
}
