//! The live-update half of `udmabuf-ctl bench` (issue targets in BENCHMARKS.md):
//! - update: after a 4 KiB hole in a 64 MiB shmem buffer whose memfd the process keeps
//!   mapped (so notifiers watch it), the time from the punch until SYNC returns; against
//!   today's workaround with the built-in driver: close the dma-buf and create a new
//!   64 MiB one over the same memfd.
//! - scaling: the same update in a 16 MiB and a 256 MiB buffer (`size_limit_mb` is raised
//!   to 256 meanwhile): its cost must follow the hole, not the buffer.

use super::bench::{Pair, Summary};
use super::bench_param;
use crate::sys::{self, Mapping};
use crate::units::MIB;
use anyhow::{ensure, Context, Result};
use nix::fcntl::{fallocate, FallocateFlags};
use serde::Serialize;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Instant;

#[derive(Debug, Serialize)]
pub struct LiveReport {
    /// Ours: punch 4 KiB + SYNC in 64 MiB; built-in: close + create of 64 MiB.
    pub update_vs_recreate: Pair,
    /// How many times faster ours is (built-in median / ours median).
    pub speedup_median: f64,
    pub update_16_mib: Summary,
    pub update_256_mib: Summary,
    /// 256 MiB median / 16 MiB median.
    pub scaling_median: f64,
}

/// A shmem memfd of `size` bytes with every page written, kept mapped.
fn mapped_memfd(size: u64) -> Result<(OwnedFd, Mapping)> {
    let fd = super::bench::memfd_for(false, size)?;
    let map = Mapping::new(&fd, size, true).context("mmap of the memfd")?;
    map.fault_in();
    Ok((fd, map))
}

pub(crate) fn punch_page(memfd: &OwnedFd, page: u64) -> Result<()> {
    let ps = sys::page_size();
    fallocate(
        memfd.as_raw_fd(),
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        (page * ps) as i64,
        ps as i64,
    )
    .context("fallocate(PUNCH_HOLE)")?;
    Ok(())
}

/// `iterations` timed punch+SYNC rounds on a `size` buffer of ours; a different page
/// each round, and afterwards the buffer must still match its memfd.
fn updates(dev: &File, size: u64, iterations: u32) -> Result<Vec<u64>> {
    let (memfd, map) = mapped_memfd(size)?;
    let buf = sys::udmabuf_create(dev, &memfd, size).with_context(|| format!("create {} MiB", size / MIB))?;
    let pages = size / sys::page_size();
    let mut out = Vec::with_capacity(iterations as usize);
    for i in 0..super::bench::WARMUP + iterations {
        let page = (u64::from(i) * 7919) % pages;
        let start = Instant::now();
        punch_page(&memfd, page)?;
        sys::live_sync(dev, &buf, 10_000).context("SYNC")?;
        let ns = start.elapsed().as_nanos() as u64;
        if i >= super::bench::WARMUP {
            out.push(ns);
        }
    }
    let v = sys::live_verify(dev, &buf).context("VERIFY")?;
    ensure!(v.matching == v.pages, "after {} updates the buffer does not match its memfd: {v:?}", out.len());
    drop(map);
    Ok(out)
}

/// The built-in's workaround: drop the dma-buf and create a new one, `iterations` times.
fn recreates(dev: &File, size: u64, iterations: u32) -> Result<Vec<u64>> {
    let (memfd, _map) = mapped_memfd(size)?;
    let mut buf = sys::udmabuf_create(dev, &memfd, size).context("create (built-in)")?;
    let mut out = Vec::with_capacity(iterations as usize);
    for i in 0..super::bench::WARMUP + iterations {
        let start = Instant::now();
        drop(buf);
        buf = sys::udmabuf_create(dev, &memfd, size).context("re-create (built-in)")?;
        let ns = start.elapsed().as_nanos() as u64;
        if i >= super::bench::WARMUP {
            out.push(ns);
        }
    }
    Ok(out)
}

pub fn run(ours: &File, builtin: &File, iterations: u32) -> Result<LiveReport> {
    let update = updates(ours, 64 * MIB, iterations).context("live update, 64 MiB")?;
    let recreate = recreates(builtin, 64 * MIB, iterations).context("re-create, 64 MiB")?;
    let update_vs_recreate = Pair::new(&update, &recreate)?;
    let _limit = bench_param::Override::set("size_limit_mb", "256")?;
    let small = Summary::of(&updates(ours, 16 * MIB, iterations).context("live update, 16 MiB")?).context("no samples")?;
    let large = Summary::of(&updates(ours, 256 * MIB, iterations).context("live update, 256 MiB")?).context("no samples")?;
    Ok(LiveReport {
        speedup_median: update_vs_recreate.builtin.median_ns as f64 / update_vs_recreate.ours.median_ns.max(1) as f64,
        update_vs_recreate,
        scaling_median: large.median_ns as f64 / small.median_ns.max(1) as f64,
        update_16_mib: small,
        update_256_mib: large,
    })
}
