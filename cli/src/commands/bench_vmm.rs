//! The measurements behind the VMM cells of `udmabuf-ctl bench` (the cells and their
//! targets: bench_cells.rs; run under each policy by bench_floor.rs):
//! - fault cost: after a 4 KiB punch (and a write through the memfd) in a 64 MiB shmem
//!   buffer, the time until the new byte is visible through a CPU mmap of the dma-buf
//!   that covers the whole buffer, against the same through a one-page mmap. Target
//!   <= 1.5x: the fault after an update must cost what the hole costs.
//! - memory return: a 64 MiB buffer nobody maps, MADV_REMOVE of 32 MiB: how much
//!   memory comes back (MemAvailable plus the per-CPU free lists) and how many of the
//!   memfd's blocks go, under each repopulation policy of ours and on the built-in
//!   driver, whose old pages stay pinned.

use super::bench_floor::Policy;
use crate::sys::{self, Mapping};
use crate::units::MIB;
use anyhow::{ensure, Context, Result};
use serde::Serialize;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

#[derive(Debug, Serialize)]
pub struct MemoryReturn {
    /// `ours, lazy`, `ours, eager` or `built-in`.
    pub driver: String,
    /// Memory that came back (MemAvailable + per-CPU free lists), KiB.
    pub returned_kib: i64,
    /// Blocks the memfd lost, KiB.
    pub memfd_blocks_dropped_kib: i64,
}

/// Memory free now: MemAvailable plus the pages on the per-CPU free lists, which
/// MemAvailable leaves out (bytes; [`udmabuf_live_uapi::sys::free_memory`]).
fn free_memory() -> Result<i64> {
    Ok(i64::try_from(udmabuf_live_uapi::sys::free_memory().context("MemAvailable and the per-CPU free lists")?)?)
}

fn blocks(fd: &OwnedFd) -> Result<i64> {
    Ok(nix::sys::stat::fstat(fd.as_raw_fd()).context("fstat of the memfd")?.st_blocks * 512)
}

/// `iterations` rounds: punch one page of a 64 MiB buffer, write a new byte through the
/// memfd, and time until a CPU mapping of the dma-buf (`whole`: all 64 MiB, faulted in
/// beforehand; else one page at the punched offset) reads it.
pub(crate) fn fault_rounds(dev: &File, whole: bool, iterations: u32) -> Result<Vec<u64>> {
    let size = 64 * MIB;
    let ps = sys::page_size();
    let memfd = super::bench::memfd_for(false, size)?;
    let map = Mapping::new(&memfd, size, true).context("mmap of the memfd")?;
    map.fault_in();
    let buf = sys::udmabuf_create(dev, &memfd, size).context("create 64 MiB")?;
    let pages = size / ps;
    let whole_map = if whole { Some(Mapping::new(&buf, size, true).context("mmap of the dma-buf")?) } else { None };
    if let Some(m) = &whole_map {
        m.fault_in();
    }
    let mut out = Vec::with_capacity(iterations as usize);
    for i in 0..super::bench::WARMUP + iterations {
        let page = (u64::from(i) * 7919) % pages;
        let one =
            if whole { None } else { Some(Mapping::new_at(&buf, ps, page * ps, true).context("one-page mmap of the dma-buf")?) };
        if let Some(m) = &one {
            m.fault_in();
        }
        let (view, at) = match (&whole_map, &one) {
            (Some(m), _) => (m, (page * ps) as usize),
            (None, Some(m)) => (m, 0),
            (None, None) => unreachable!("one of the two mappings exists"),
        };
        let byte = (i % 200) as u8 + 1;
        let start = Instant::now();
        super::bench_live::punch_page(&memfd, page)?;
        map.write_byte((page * ps) as usize, byte);
        let deadline = start + Duration::from_secs(10);
        while view.read_byte(at) != byte {
            ensure!(Instant::now() < deadline, "the new byte of page {page} was not visible within 10 s");
            std::hint::spin_loop();
        }
        let ns = start.elapsed().as_nanos() as u64;
        if i >= super::bench::WARMUP {
            out.push(ns);
        }
    }
    Ok(out)
}

/// The 32 MiB balloon punch on `dev`; `policy` sets ours first.
pub(crate) fn memory_return(dev: &File, driver: &str, policy: Option<&str>) -> Result<MemoryReturn> {
    let _policy = Policy::set(policy)?;
    let size = 64 * MIB;
    let memfd = super::bench::memfd_for(false, size)?;
    let map = Mapping::new(&memfd, size, true).context("mmap of the memfd")?;
    map.fault_in();
    let buf = sys::udmabuf_create(dev, &memfd, size).context("create 64 MiB")?;
    let (free0, blocks0) = (free_memory()?, blocks(&memfd)?);
    let before = policy.map(|_| sys::live_info(dev, &buf)).transpose().context("INFO")?;
    map.madvise_remove(0, 32 * MIB as usize).context("madvise(MADV_REMOVE)")?;
    // Ours: until the worker has applied the update; the built-in does nothing.
    let t0 = Instant::now();
    while let Some(b) = &before {
        let i = sys::live_info(dev, &buf).context("INFO")?;
        if i.updates > b.updates && i.state & udmabuf_live_uapi::UDMABUF_LIVE_STATE_PENDING == 0 {
            break;
        }
        ensure!(t0.elapsed() < Duration::from_secs(10), "no update within 10 s of the punch");
        std::thread::sleep(Duration::from_millis(2));
    }
    if before.is_none() {
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(MemoryReturn {
        driver: driver.to_owned(),
        returned_kib: (free_memory()? - free0) / 1024,
        memfd_blocks_dropped_kib: (blocks0 - blocks(&memfd)?) / 1024,
    })
}
