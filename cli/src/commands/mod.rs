//! One file per subcommand. Each turns its clap arguments into a checked request, does
//! the work, and prints text or one line of JSON.
pub mod bench;
pub mod bench_live;
pub mod completions;
pub mod create;
pub mod info;
pub mod list;
pub mod man;
pub mod punch;
pub mod status;
pub mod sync;
pub mod verify;
pub mod write;

use crate::exit::CtlError;
use crate::sys;
use anyhow::{Context, Result};
use std::os::fd::AsFd;

/// HUGETLBFS_MAGIC (include/uapi/linux/magic.h).
const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

/// Is this memfd backed by hugetlbfs?
pub fn is_hugetlb(fd: &impl AsFd) -> bool {
    nix::sys::statfs::fstatfs(fd).is_ok_and(|s| s.filesystem_type().0 == HUGETLBFS_MAGIC)
}

/// Size of the memfd behind a handle.
pub fn memfd_size(fd: &impl std::os::fd::AsRawFd) -> Result<u64> {
    sys::file_size(fd).context("fstat of the memfd")
}

/// `offset .. offset + len` must lie inside a file of `size` bytes.
pub fn check_range(what: &str, offset: u64, len: u64, size: u64) -> Result<()> {
    if len == 0 {
        return Err(CtlError::Usage(format!("{what}: the length is 0")).into());
    }
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(CtlError::Usage(format!(
            "{what}: {offset}+{len} reaches past the end of the memfd ({size} bytes)"
        ))
        .into()),
    }
}

/// Open udmabuf-live's device and make sure `dmabuf` is one of its buffers (the INFO
/// ioctl answers EINVAL for any other exporter's dma-buf). Returns the device and INFO.
pub fn open_live(
    device: &std::path::Path,
    dmabuf: &std::os::fd::OwnedFd,
) -> Result<(std::fs::File, udmabuf_live_uapi::UdmabufLiveInfo)> {
    let dev = crate::device::open(device)?;
    match sys::live_info(&dev, dmabuf) {
        Ok(i) => Ok((dev, i)),
        Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOTTY) => {
            let exporter = sys::dmabuf_exporter(dmabuf).unwrap_or_else(|| "unknown".into());
            let why = if exporter == udmabuf_live_uapi::MODULE_NAME {
                format!("{} is not udmabuf-live's device (use /dev/{})", device.display(), udmabuf_live_uapi::DEVICE_NAME)
            } else {
                format!("the dma-buf's exporter is '{exporter}', not {}", udmabuf_live_uapi::MODULE_NAME)
            };
            Err(CtlError::NotLive(format!("not a udmabuf-live buffer: {why} (INFO, SYNC, VERIFY and PFNS are udmabuf-live ioctls)"))
                .into())
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("UDMABUF_LIVE_INFO on {}", device.display()))),
    }
}
