//! Close ordering. A dma-buf owns references on its pages, so it stays whole when the
//! memfd (or the device fd) is closed first; and the memfd does not depend on the
//! dma-buf, so it keeps working when the dma-buf goes first. A mapping outlives both fds.

use super::common::*;
use super::{case_fns, cases, Suite};
use crate::ktap::CaseResult;
use anyhow::{ensure, Context};
use std::os::fd::AsFd;

pub fn suite() -> Suite {
    Suite::new(
        "close-order",
        cases![
            memfd_closed_first_shmem,
            memfd_closed_first_hugetlb,
            dmabuf_closed_first,
            device_closed_first,
            mapping_outlives_both_fds,
        ],
    )
}

/// Close the memfd (and unmap it), then map the dma-buf: the content is still there, and
/// writes through the dma-buf still work.
fn memfd_closed_first(kind: Backing, size: u64) -> CaseResult {
    let b = filled_buffer(kind, size, 30, 0)?;
    let Buffer { dmabuf, memfd, .. } = b;
    drop(memfd);
    ensure!(
        dmabuf_size(&dmabuf)? == size,
        "size changed after closing the memfd"
    );
    let view = map_shared(&dmabuf, size).context("mmap the dma-buf after closing the memfd")?;
    expect_pattern("content after closing the memfd", &view, 30, size)?;
    view.write(0, &pattern(31, size));
    expect_pattern("write through the orphaned dma-buf", &view, 31, size)?;
    dmabuf_sync(&dmabuf, SYNC_START | SYNC_RW).context("SYNC_START after closing the memfd")?;
    dmabuf_sync(&dmabuf, SYNC_END | SYNC_RW).context("SYNC_END after closing the memfd")?;
    Ok(())
}

case_fns! {
    memfd_closed_first_shmem => memfd_closed_first(Backing::Shmem, 16 * ps());
    memfd_closed_first_hugetlb => memfd_closed_first(Backing::Hugetlb, 2 * HUGE_PAGE);
}

/// Close the dma-buf: the memfd keeps its content, can be resized (grow) and written, and
/// a new buffer can be made from it and sees the new content.
fn dmabuf_closed_first() -> CaseResult {
    let size = 8 * ps();
    let b = filled_buffer(Backing::Shmem, size, 32, 0)?;
    let Buffer { dmabuf, memfd, .. } = b;
    {
        let view = map_shared(&dmabuf, size)?;
        view.write(0, &pattern(33, size));
    }
    drop(dmabuf);
    expect_bytes(
        "memfd after closing the dma-buf",
        &read_memfd(&memfd, size, 0, size)?,
        &pattern(33, size),
    )?;
    nix::unistd::ftruncate(&memfd, (2 * size) as i64)
        .context("grow the memfd after closing the dma-buf")?;
    fill_memfd(&memfd, 2 * size, 0, &pattern(34, 2 * size))?;
    let dev = open_device(&test_device())?;
    let again =
        create(dev.as_fd(), &memfd, size, size, 0).context("new buffer from the same memfd")?;
    let view = map_shared(&again, size)?;
    expect_bytes(
        "new buffer",
        &view.read(0, size),
        &pattern(34, 2 * size)[size as usize..],
    )?;
    Ok(())
}

/// The device fd is only needed for the ioctl: buffers live on after it is closed.
fn device_closed_first() -> CaseResult {
    let size = 4 * ps();
    let m = memfd(Backing::Shmem, size)?;
    fill_memfd(&m, size, 0, &pattern(35, size))?;
    let dev = open_device(&test_device())?;
    let buf = create(dev.as_fd(), &m, 0, size, 0).context("UDMABUF_CREATE")?;
    drop(dev);
    let view = map_shared(&buf, size).context("mmap after closing the device")?;
    expect_pattern("content after closing the device", &view, 35, size)?;
    Ok(())
}

/// A mapping of the dma-buf keeps it alive after both fds are closed, and still aliases
/// the memfd pages (checked through a memfd mapping made before the close).
fn mapping_outlives_both_fds() -> CaseResult {
    let size = 8 * ps();
    let b = filled_buffer(Backing::Shmem, size, 36, 0)?;
    let view = map_shared(&b.dmabuf, size)?;
    let mview = map_shared(&b.memfd, size)?;
    drop(b);
    expect_pattern("dma-buf mapping after closing both fds", &view, 36, size)?;
    mview.write(0, &pattern(37, size));
    expect_pattern(
        "memfd write seen through the dma-buf mapping",
        &view,
        37,
        size,
    )?;
    Ok(())
}
