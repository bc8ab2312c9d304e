//! Live updates: after a hole punch the dma-buf follows its memfd.

use super::common::*;
use super::{cases, Suite};
use crate::ktap::{CaseResult, Outcome};
use anyhow::{ensure, Context, Result};
use nix::errno::Errno;
use std::os::fd::{AsRawFd, OwnedFd};
use udmabuf_live_uapi::*;

pub fn suite() -> Suite {
    Suite { name: "live", cases: cases![punch_write_sync_shmem] }
}

nix::ioctl_readwrite_bad!(ioctl_info, UDMABUF_LIVE_INFO, UdmabufLiveInfo);
nix::ioctl_write_ptr_bad!(ioctl_sync, UDMABUF_LIVE_SYNC, UdmabufLiveSync);
nix::ioctl_readwrite_bad!(ioctl_verify, UDMABUF_LIVE_VERIFY, UdmabufLiveVerify);

pub fn info(dev: &OwnedFd, dmabuf: &OwnedFd) -> Result<UdmabufLiveInfo, Errno> {
    let mut a = UdmabufLiveInfo { dmabuf_fd: dmabuf.as_raw_fd() as u32, ..Default::default() };
    // SAFETY: valid argument struct for the call.
    unsafe { ioctl_info(dev.as_raw_fd(), &mut a) }.map(|_| a)
}

pub fn sync(dev: &OwnedFd, dmabuf: &OwnedFd, timeout_ms: u32) -> Result<(), Errno> {
    let a = UdmabufLiveSync { dmabuf_fd: dmabuf.as_raw_fd() as u32, timeout_ms };
    // SAFETY: valid argument struct for the call.
    unsafe { ioctl_sync(dev.as_raw_fd(), &a) }.map(drop)
}

pub fn verify(dev: &OwnedFd, dmabuf: &OwnedFd) -> Result<UdmabufLiveVerify, Errno> {
    let mut a = UdmabufLiveVerify { dmabuf_fd: dmabuf.as_raw_fd() as u32, ..Default::default() };
    // SAFETY: valid argument struct for the call.
    unsafe { ioctl_verify(dev.as_raw_fd(), &mut a) }.map(|_| a)
}

pub fn punch(memfd: &OwnedFd, off: u64, len: u64) -> Result<()> {
    nix::fcntl::fallocate(
        memfd.as_raw_fd(),
        nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
        off as i64,
        len as i64,
    )
    .context("fallocate(PUNCH_HOLE)")?;
    Ok(())
}

fn punch_write_sync_shmem() -> CaseResult {
    let size = 64 * page_size();
    let dev = open_device(&test_device())?;
    let memfd = memfd(Backing::Shmem, size)?;
    let map = Mapping::shared(&memfd, size)?;
    map.write(0, &pattern(1, size));
    let buf = create(dev.as_fd_borrow(), &memfd, 0, size, 0).context("create")?;
    let bmap = Mapping::shared(&buf, size)?;
    expect_bytes("before punch", &bmap.read(0, size), &pattern(1, size))?;
    let v = verify(&dev, &buf)?;
    ensure!(v.matching == 64, "verify before: {v:?}");
    punch(&memfd, 4 * page_size(), 2 * page_size())?;
    map.write(0, &pattern(2, size));
    sync(&dev, &buf, 1000).context("SYNC")?;
    let v = verify(&dev, &buf)?;
    ensure!(v.matching == 64 && v.stale == 0 && v.holes == 0, "verify after: {v:?}");
    expect_bytes("dma-buf after punch+write", &bmap.read(0, size), &pattern(2, size))?;
    let i = info(&dev, &buf)?;
    ensure!(i.updates >= 1 && i.generation >= 1 && i.pages_swapped == 2, "info: {i:?}");
    Ok(Outcome::Pass)
}

trait BorrowFd {
    fn as_fd_borrow(&self) -> std::os::fd::BorrowedFd<'_>;
}
impl BorrowFd for OwnedFd {
    fn as_fd_borrow(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.as_fd()
    }
}
