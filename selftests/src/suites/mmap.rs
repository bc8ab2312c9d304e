//! The content of a buffer as users see it through mmap: a dma-buf over memfd pages is
//! those very pages, so writes through the memfd show through the dma-buf mapping and
//! writes through the dma-buf show in the memfd, at the offsets the ranges say. Upstream
//! refuses MAP_PRIVATE mappings (mmap_udmabuf: EINVAL without VM_SHARED) and the dma-buf
//! core refuses mappings past the end (EINVAL).

use super::common::*;
use super::{case_fns, cases, Suite};
use crate::ktap::CaseResult;
use anyhow::{Context, Result};
use nix::errno::Errno;
use std::os::fd::AsFd;

pub fn suite() -> Suite {
    Suite::new(
        "mmap",
        cases![
            memfd_content_visible_shmem,
            memfd_content_visible_hugetlb,
            dmabuf_writes_reach_memfd_shmem,
            dmabuf_writes_reach_memfd_hugetlb,
            pwrite_on_memfd_visible,
            partial_range_maps_right_pages,
            mapping_at_page_offset,
            list_entries_at_their_offsets,
            list_pages_reversed,
            list_same_page_twice_aliases,
            private_mapping_refused,
            mapping_past_end_refused,
            fallocated_pages_read_as_zero,
        ],
    )
}

/// Content written before the create, then again after it, through a memfd mapping.
fn memfd_content_visible(kind: Backing, size: u64) -> CaseResult {
    let b = filled_buffer(kind, size, 1, 0)?;
    let view = map_shared(&b.dmabuf, size).context("mmap the dma-buf")?;
    expect_pattern("content written before the create", &view, 1, size)?;
    fill_memfd(&b.memfd, size, 0, &pattern(2, size))?;
    expect_pattern("content written after the create", &view, 2, size)?;
    // A fresh mapping of the dma-buf sees the same.
    let again = map_shared(&b.dmabuf, size).context("mmap the dma-buf again")?;
    expect_pattern("second dma-buf mapping", &again, 2, size)?;
    Ok(())
}

case_fns! {
    memfd_content_visible_shmem => memfd_content_visible(Backing::Shmem, 16 * ps());
    memfd_content_visible_hugetlb => memfd_content_visible(Backing::Hugetlb, 2 * HUGE_PAGE);
}

fn dmabuf_writes_reach_memfd(kind: Backing, size: u64) -> CaseResult {
    let b = filled_buffer(kind, size, 1, 0)?;
    let view = map_shared(&b.dmabuf, size).context("mmap the dma-buf")?;
    view.write(0, &pattern(3, size));
    expect_bytes(
        "memfd mapping after dma-buf writes",
        &read_memfd(&b.memfd, size, 0, size)?,
        &pattern(3, size),
    )?;
    if kind == Backing::Shmem {
        let mut got = vec![0u8; size as usize];
        let n = nix::sys::uio::pread(&b.memfd, &mut got, 0).context("pread the memfd")?;
        expect_bytes(
            "pread of the memfd after dma-buf writes",
            &got[..n],
            &pattern(3, size),
        )?;
    }
    Ok(())
}

case_fns! {
    dmabuf_writes_reach_memfd_shmem => dmabuf_writes_reach_memfd(Backing::Shmem, 16 * ps());
    dmabuf_writes_reach_memfd_hugetlb => dmabuf_writes_reach_memfd(Backing::Hugetlb, 2 * HUGE_PAGE);
}

/// write(2) on a shmem memfd goes to the same page cache pages.
fn pwrite_on_memfd_visible() -> CaseResult {
    let size = 4 * ps();
    let b = filled_buffer(Backing::Shmem, size, 1, 0)?;
    let view = map_shared(&b.dmabuf, size)?;
    let data = pattern(4, 2 * ps());
    let n = nix::sys::uio::pwrite(&b.memfd, &data, ps() as i64).context("pwrite the memfd")?;
    anyhow::ensure!(n == data.len(), "short pwrite");
    let mut want = pattern(1, size);
    want[ps() as usize..3 * ps() as usize].copy_from_slice(&data);
    expect_bytes(
        "dma-buf after pwrite on the memfd",
        &view.read(0, size),
        &want,
    )?;
    Ok(())
}

/// A buffer over part of a memfd starts at its offset (shmem, and hugetlb across a huge
/// page boundary).
fn partial_range_maps_right_pages() -> CaseResult {
    let dev = open_device(&test_device())?;
    for (kind, msize, off, len) in [
        (Backing::Shmem, 8 * ps(), 2 * ps(), 3 * ps()),
        (
            Backing::Hugetlb,
            2 * HUGE_PAGE,
            HUGE_PAGE - 2 * ps(),
            5 * ps(),
        ),
    ] {
        let m = memfd(kind, msize)?;
        let content = pattern(5, msize);
        fill_memfd(&m, msize, 0, &content)?;
        let buf = create(dev.as_fd(), &m, off, len, 0)
            .with_context(|| format!("{kind:?} [{off:#x}, +{len:#x})"))?;
        let view = map_shared(&buf, len)?;
        expect_bytes(
            &format!("{kind:?} range at {off:#x}"),
            &view.read(0, len),
            &content[off as usize..(off + len) as usize],
        )?;
    }
    Ok(())
}

/// mmap of the dma-buf at a non-zero page offset starts at that page of the buffer.
fn mapping_at_page_offset() -> CaseResult {
    let size = 8 * ps();
    let b = filled_buffer(Backing::Shmem, size, 6, 0)?;
    let view = Mapping::read_write(&b.dmabuf, 3 * ps(), 4 * ps(), true)
        .context("mmap 3 pages at page 4")?;
    expect_bytes(
        "mapping at page 4",
        &view.read(0, 3 * ps()),
        &pattern(6, size)[4 * ps() as usize..7 * ps() as usize],
    )?;
    Ok(())
}

/// Expected dma-buf content of a list: each entry's memfd bytes, in list order.
struct Source {
    fd: std::os::fd::OwnedFd,
    size: u64,
    content: Vec<u8>,
}

fn source(kind: Backing, size: u64, seed: u8) -> Result<Source> {
    let fd = memfd(kind, size)?;
    let content = pattern(seed, size);
    fill_memfd(&fd, size, 0, &content)?;
    Ok(Source { fd, size, content })
}

fn check_list(what: &str, srcs: &[&Source], entries: &[(usize, u64, u64)]) -> Result<()> {
    let dev = open_device(&test_device())?;
    let items: Vec<_> = entries
        .iter()
        .map(|&(s, off, len)| item(&srcs[s].fd, off, len))
        .collect();
    let buf =
        create_list(dev.as_fd(), 0, &items).with_context(|| format!("{what}: CREATE_LIST"))?;
    let total: u64 = entries.iter().map(|e| e.2).sum();
    let view = map_shared(&buf, total)?;
    let mut at = 0;
    for (i, &(s, off, len)) in entries.iter().enumerate() {
        let want = &srcs[s].content[off as usize..(off + len) as usize];
        expect_bytes(
            &format!("{what}: entry {i} at dma-buf offset {at:#x}"),
            &view.read(at, len),
            want,
        )?;
        at += len;
    }
    // And writes through the memfds after the create show at the same places.
    for (n, s) in srcs.iter().enumerate() {
        fill_memfd(&s.fd, s.size, 0, &pattern(100 + n as u8, s.size))?;
    }
    let mut at = 0;
    for (i, &(s, off, len)) in entries.iter().enumerate() {
        let want = &pattern(100 + s as u8, srcs[s].size)[off as usize..(off + len) as usize];
        expect_bytes(
            &format!("{what}: entry {i} after rewriting its memfd"),
            &view.read(at, len),
            want,
        )?;
        at += len;
    }
    Ok(())
}

fn list_entries_at_their_offsets() -> CaseResult {
    let a = source(Backing::Shmem, 4 * ps(), 10)?;
    let h = source(Backing::Hugetlb, 2 * HUGE_PAGE, 11)?;
    let b = source(Backing::Shmem, 16 * ps(), 12)?;
    let entries = [
        (0, 0, 2 * ps()),
        (1, HUGE_PAGE - ps(), 3 * ps()),
        (2, 5 * ps(), ps()),
        (0, 3 * ps(), ps()),
        (1, 0, HUGE_PAGE),
        (2, 8 * ps(), 8 * ps()),
    ];
    check_list("mixed list", &[&a, &h, &b], &entries)?;
    Ok(())
}

/// 64 one-page entries in reverse page order: the order of the list, not of the memfd.
fn list_pages_reversed() -> CaseResult {
    let a = source(Backing::Shmem, 64 * ps(), 13)?;
    let entries: Vec<_> = (0..64).rev().map(|p| (0, p * ps(), ps())).collect();
    check_list("reversed pages", &[&a], &entries)?;
    Ok(())
}

/// The same memfd page in two entries is one page: a write through one dma-buf offset is
/// read back at the other.
fn list_same_page_twice_aliases() -> CaseResult {
    let dev = open_device(&test_device())?;
    let a = source(Backing::Shmem, 2 * ps(), 14)?;
    let buf = create_list(
        dev.as_fd(),
        0,
        &[
            item(&a.fd, ps(), ps()),
            item(&a.fd, 0, ps()),
            item(&a.fd, ps(), ps()),
        ],
    )
    .context("CREATE_LIST with page 1 twice")?;
    let view = map_shared(&buf, 3 * ps())?;
    let data = pattern(15, ps());
    view.write(0, &data);
    expect_bytes(
        "entry 2 after writing entry 0 (same memfd page)",
        &view.read(2 * ps(), ps()),
        &data,
    )?;
    expect_bytes(
        "memfd page 1",
        &read_memfd(&a.fd, a.size, ps(), ps())?,
        &data,
    )?;
    expect_bytes(
        "entry 1 (memfd page 0) untouched",
        &view.read(ps(), ps()),
        &a.content[..ps() as usize],
    )?;
    Ok(())
}

fn private_mapping_refused() -> CaseResult {
    let attempt = |kind: Backing| {
        move |d: std::os::fd::BorrowedFd<'_>| -> Result<Result<Mapping, Errno>> {
            let m = memfd(kind, kind.granule())?;
            let buf = create(d, &m, 0, kind.granule(), 0).context("making the buffer")?;
            Ok(Mapping::read_write(&buf, kind.granule(), 0, false))
        }
    };
    expect_errno(
        "MAP_PRIVATE of a shmem dma-buf",
        Errno::EINVAL,
        attempt(Backing::Shmem),
    )?;
    expect_errno(
        "MAP_PRIVATE of a hugetlb dma-buf",
        Errno::EINVAL,
        attempt(Backing::Hugetlb),
    )?;
    Ok(())
}

fn mapping_past_end_refused() -> CaseResult {
    let attempt = |len: u64, off: u64| {
        move |d: std::os::fd::BorrowedFd<'_>| -> Result<Result<Mapping, Errno>> {
            let m = memfd(Backing::Shmem, 4 * ps())?;
            let buf = create(d, &m, 0, 4 * ps(), 0).context("making the buffer")?;
            Ok(Mapping::read_write(&buf, len, off, true))
        }
    };
    expect_errno(
        "4-page buffer, map 5 pages",
        Errno::EINVAL,
        attempt(5 * ps(), 0),
    )?;
    expect_errno(
        "4-page buffer, map 2 pages at page 3",
        Errno::EINVAL,
        attempt(2 * ps(), 3 * ps()),
    )?;
    expect_errno(
        "4-page buffer, map 1 page at page 4",
        Errno::EINVAL,
        attempt(ps(), 4 * ps()),
    )?;
    Ok(())
}

/// shmem leaves the pages fallocate() allocates uninitialised (!uptodate) until the
/// first read or fault clears them, and memfd_pin_folios() pins them as they are. A
/// dma-buf over such a memfd must show zeros, as the memfd itself does, not the bytes
/// of whoever used the pages before. The pages are first filled with a pattern in
/// another memfd and freed, so a leak would show that pattern (the page allocator hands
/// recently freed pages out first). The built-in driver is not held to this: what it
/// shows is reported.
fn fallocated_pages_read_as_zero() -> CaseResult {
    let size = 256 * ps();
    let dev = open_device(&test_device())?;
    let mut leaked = 0;
    for round in 0..4u8 {
        {
            let dirty = memfd(Backing::Shmem, size)?;
            fill_memfd(&dirty, size, 0, &vec![0xa5 ^ round; size as usize])?;
        }
        let fd = memfd(Backing::Shmem, size)?;
        nix::fcntl::fallocate(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            nix::fcntl::FallocateFlags::empty(),
            0,
            size as i64,
        )
        .context("fallocate the memfd")?;
        let dmabuf = create(dev.as_fd(), &fd, 0, size, 0)
            .map_err(|e| anyhow::anyhow!("CREATE over a fallocated memfd: {e}"))?;
        let view = map_shared(&dmabuf, size).context("mmap the dma-buf")?;
        let got = view.read(0, size);
        leaked += got.iter().filter(|&&b| b != 0).count();
        expect_bytes(
            "the memfd itself",
            &read_memfd(&fd, size, 0, size)?,
            &vec![0u8; size as usize],
        )?;
    }
    if leaked == 0 {
        return Ok(());
    }
    if test_device() == REFERENCE_DEVICE {
        skip!(
            "the built-in driver shows {leaked} non-zero bytes of uninitialised fallocated pages (it pins !uptodate folios as they are)"
        );
    }
    anyhow::bail!("{leaked} bytes of the dma-buf over fallocated memfds were not zero: a previous user's data")
}
