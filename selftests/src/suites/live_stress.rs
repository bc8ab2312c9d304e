//! Many live updates on one buffer: ROUNDS rounds of punch one page (a page chosen from
//! a fixed seed, punched by fallocate or MADV_REMOVE), write a round-specific page
//! through the memfd mapping, SYNC, and check every round that both mappings show the
//! whole expected content and VERIFY finds every page matching. At the end INFO must
//! count exactly one update and one swapped page per round (none lost, none extra) and
//! the buffer must hold the memfd's pages. The time taken is reported.

use super::common::*;
use super::live_util::*;
use super::{cases, Suite};
use crate::ktap::{out, CaseResult, Outcome};
use anyhow::{Context, Result};
use std::os::fd::AsFd;
use std::time::Instant;

pub fn suite() -> Suite {
    Suite { name: "live-stress", cases: cases![punch_write_sync_rounds] }
}

const ROUNDS: u64 = 1000;
const PAGES: u64 = 64;
const SEED: u64 = 0x0dd_ba11_5eed;

/// The page written in round `round` at page `page`: its first 16 bytes name both, so
/// no two rounds write the same page content.
fn round_page(round: u64, page: u64) -> Vec<u8> {
    let mut v: Vec<u8> = (0..ps()).map(|i| (i as u8).wrapping_mul(13) ^ (round as u8).wrapping_mul(29) ^ page as u8).collect();
    v[..8].copy_from_slice(&round.to_le_bytes());
    v[8..16].copy_from_slice(&page.to_le_bytes());
    v
}

fn punch_write_sync_rounds() -> CaseResult {
    if let Some(o) = precondition() {
        return Ok(o);
    }
    let size = PAGES * ps();
    let dev = open_device(&test_device())?;
    let memfd = memfd(Backing::Shmem, size)?;
    let map = Mapping::shared(&memfd, size)?;
    let mut model = pattern(50, size);
    map.write(0, &model);
    let buf = create(dev.as_fd(), &memfd, 0, size, 0).context("UDMABUF_CREATE")?;
    let bmap = Mapping::shared(&buf, size)?;
    let before = info(&dev, &buf)?;
    let mut rng = Rng::new(SEED);
    let t0 = Instant::now();
    let mut done = 0;
    let r: Result<()> = (|| {
        for round in 0..ROUNDS {
            let page = rng.below(PAGES);
            let how = if rng.next() & 1 == 0 { Punch::Fallocate } else { Punch::MadvRemove };
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
    expect_state(&format!("after {ROUNDS} rounds"), &after, WATCHED, PENDING | STALE)?;
    expect_progress(&format!("{ROUNDS} rounds"), &before, &after, ROUNDS..=ROUNDS, ROUNDS)?;
    expect_pfns(&format!("after {ROUNDS} rounds"), &dev, &buf, 0, &mapped_pfns(&map, 0, PAGES)?)?;
    Ok(Outcome::Pass)
}
