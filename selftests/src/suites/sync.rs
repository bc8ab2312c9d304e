//! DMA_BUF_IOCTL_SYNC on udmabuf buffers: users bracket CPU access with START/END and a
//! direction. The dma-buf core refuses flags outside RW|END and a missing direction
//! (EINVAL) before the exporter sees them; upstream udmabuf's end_cpu_access refuses an
//! END that no START preceded (EINVAL: it has no sg table yet). A drop-in must match.

use super::common::*;
use super::{cases, Suite};
use crate::ktap::CaseResult;
use anyhow::{Context, Result};
use nix::errno::Errno;
use std::os::fd::{AsFd, BorrowedFd};

pub fn suite() -> Suite {
    Suite::new(
        "dmabuf-sync",
        cases![
            start_end_each_direction_shmem,
            start_end_each_direction_hugetlb,
            start_end_list_buffer,
            sync_brackets_cpu_writes,
            repeated_start_then_end,
            invalid_flags_einval,
            end_before_start_einval,
        ],
    )
}

const DIRECTIONS: [(&str, u64); 3] = [("READ", SYNC_READ), ("WRITE", SYNC_WRITE), ("RW", SYNC_RW)];

fn start_end(what: &str, fd: &impl std::os::fd::AsRawFd) -> Result<()> {
    for (name, dir) in DIRECTIONS {
        dmabuf_sync(fd, SYNC_START | dir).with_context(|| format!("{what}: SYNC_START|{name}"))?;
        dmabuf_sync(fd, SYNC_END | dir).with_context(|| format!("{what}: SYNC_END|{name}"))?;
    }
    Ok(())
}

fn start_end_each_direction_shmem() -> CaseResult {
    let b = filled_buffer(Backing::Shmem, 8 * ps(), 1, 0)?;
    start_end("shmem buffer", &b.dmabuf)?;
    Ok(())
}

fn start_end_each_direction_hugetlb() -> CaseResult {
    let b = filled_buffer(Backing::Hugetlb, 2 * HUGE_PAGE, 1, 0)?;
    start_end("hugetlb buffer", &b.dmabuf)?;
    Ok(())
}

fn start_end_list_buffer() -> CaseResult {
    let dev = open_device(&test_device())?;
    let a = memfd(Backing::Shmem, 4 * ps())?;
    let h = memfd(Backing::Hugetlb, HUGE_PAGE)?;
    let buf = create_list(
        dev.as_fd(),
        0,
        &[
            item(&a, ps(), 2 * ps()),
            item(&h, HUGE_PAGE - ps(), ps()),
            item(&a, 0, ps()),
        ],
    )
    .context("mixed list")?;
    start_end("list buffer", &buf)?;
    Ok(())
}

/// The documented usage: START|WRITE, write through the mapping, END|WRITE; then
/// START|READ, read, END|READ. The memfd sees the writes.
fn sync_brackets_cpu_writes() -> CaseResult {
    let size = 8 * ps();
    let b = filled_buffer(Backing::Shmem, size, 1, 0)?;
    let view = map_shared(&b.dmabuf, size)?;
    dmabuf_sync(&b.dmabuf, SYNC_START | SYNC_WRITE).context("SYNC_START|WRITE")?;
    view.write(0, &pattern(7, size));
    dmabuf_sync(&b.dmabuf, SYNC_END | SYNC_WRITE).context("SYNC_END|WRITE")?;
    expect_bytes(
        "memfd after a bracketed write",
        &read_memfd(&b.memfd, size, 0, size)?,
        &pattern(7, size),
    )?;
    fill_memfd(&b.memfd, size, 0, &pattern(8, size))?;
    dmabuf_sync(&b.dmabuf, SYNC_START | SYNC_READ).context("SYNC_START|READ")?;
    let got = view.read(0, size);
    dmabuf_sync(&b.dmabuf, SYNC_END | SYNC_READ).context("SYNC_END|READ")?;
    expect_bytes(
        "bracketed read after a memfd write",
        &got,
        &pattern(8, size),
    )?;
    Ok(())
}

/// START may be repeated (and with another direction) before END.
fn repeated_start_then_end() -> CaseResult {
    let b = filled_buffer(Backing::Shmem, 2 * ps(), 1, 0)?;
    dmabuf_sync(&b.dmabuf, SYNC_START | SYNC_READ).context("first START|READ")?;
    dmabuf_sync(&b.dmabuf, SYNC_START | SYNC_RW).context("second START|RW")?;
    dmabuf_sync(&b.dmabuf, SYNC_END | SYNC_RW).context("END|RW")?;
    dmabuf_sync(&b.dmabuf, SYNC_END | SYNC_READ).context("END|READ")?;
    Ok(())
}

fn sync_attempt(
    flags: u64,
    start_first: bool,
) -> impl Fn(BorrowedFd<'_>) -> Result<Result<(), Errno>> {
    move |d| {
        let m = memfd(Backing::Shmem, 2 * ps())?;
        let buf = create(d, &m, 0, 2 * ps(), 0).context("making the buffer")?;
        if start_first {
            dmabuf_sync(&buf, SYNC_START | SYNC_RW).context("the valid SYNC_START|RW before")?;
        }
        Ok(dmabuf_sync(&buf, flags))
    }
}

fn invalid_flags_einval() -> CaseResult {
    for (what, flags) in [
        ("START with no direction (0)", SYNC_START),
        ("END with no direction", SYNC_END),
        ("unknown bit 3", SYNC_START | SYNC_RW | 1 << 3),
        ("unknown bit 63", SYNC_END | SYNC_READ | 1 << 63),
        ("all bits", u64::MAX),
    ] {
        expect_errno(
            &format!("SYNC {what} ({flags:#x})"),
            Errno::EINVAL,
            sync_attempt(flags, true),
        )?;
    }
    Ok(())
}

/// Upstream quirk kept for parity: END before any START is refused.
fn end_before_start_einval() -> CaseResult {
    for (name, dir) in DIRECTIONS {
        expect_errno(
            &format!("SYNC_END|{name} on a fresh buffer"),
            Errno::EINVAL,
            sync_attempt(SYNC_END | dir, false),
        )?;
    }
    Ok(())
}
