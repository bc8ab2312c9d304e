//! One file per subcommand. Each turns its clap arguments into a checked request, does
//! the work, and prints text or one line of JSON.
pub mod bench;
pub mod bench_cells;
pub mod bench_floor;
pub mod bench_live;
pub mod bench_param;
pub mod bench_profile;
pub mod bench_vmm;
pub mod completions;
pub mod create;
pub mod hold;
pub mod info;
pub mod list;
pub mod man;
pub mod present;
pub mod punch;
pub mod read;
pub mod status;
pub mod sync;
pub mod verify;
pub mod write;

use crate::exit::CtlError;
use crate::handle::{Handle, Resolved};
use crate::sys;
use anyhow::{Context, Result};
use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use udmabuf_live_uapi::UdmabufLiveInfo;

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

/// `offset .. offset + len` must lie inside a memfd of `size` bytes.
pub fn check_range(what: &str, offset: u64, len: u64, size: u64) -> Result<()> {
    check_range_of(what, "memfd", offset, len, size)
}

/// `offset .. offset + len` must lie inside `file` (`memfd`, `dma-buf`) of `size` bytes.
pub fn check_range_of(what: &str, file: &str, offset: u64, len: u64, size: u64) -> Result<()> {
    if offset >= size {
        return Err(CtlError::Usage(format!(
            "{what}: --offset {offset} is at or past the end of the {file} ({size} bytes): nothing to do"
        ))
        .into());
    }
    if len == 0 {
        return Err(CtlError::Usage(format!("{what}: --len is 0")).into());
    }
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(CtlError::Usage(format!("{what}: {offset}+{len} reaches past the end of the {file} ({size} bytes)")).into()),
    }
}

/// udmabuf-live's device for a handle's dma-buf, found from its exporter: `None` for
/// another exporter's buffer. An explicit `--device` is used unless sysfs says it is
/// another driver's node (then a warning says it is ignored).
pub fn live_node(override_: Option<&Path>, exporter: &str) -> Option<PathBuf> {
    if exporter != udmabuf_live_uapi::MODULE_NAME {
        return None;
    }
    let default = crate::device::node_for_exporter(exporter)?;
    match override_ {
        None => Some(default),
        Some(p) => {
            let module = crate::device::module_of_node(Path::new(crate::device::SYSFS), p);
            if module == udmabuf_live_uapi::MODULE_NAME {
                Some(p.to_owned())
            } else {
                eprintln!(
                    "udmabuf-ctl: warning: ignoring --device {}: it is {module}'s node, and the buffer's exporter is {exporter}; using {}",
                    p.display(),
                    default.display()
                );
                Some(default)
            }
        }
    }
}

/// Resolve a handle, open udmabuf-live's device if the buffer is one of its own, and check
/// that the memfd backs the dma-buf (exit 8 if not). The device is `None` for other
/// exporters' buffers, and when it cannot be opened (`need_live` makes that an error).
pub fn resolve(handle: &Handle, device: Option<&Path>, memfd_offset: u64) -> Result<(Resolved, Option<(File, UdmabufLiveInfo)>)> {
    let r = handle.resolve()?;
    let live = match live_node(device, &r.exporter) {
        Some(node) => Some(open_live(&node, &r.dmabuf)?),
        None => None,
    };
    r.check_backing(memfd_offset, live.as_ref().map(|(f, _)| f))?;
    Ok((r, live))
}

/// Resolve a handle of one of udmabuf-live's own buffers (INFO, SYNC): the handle, the
/// device and INFO, or exit 9 for another exporter's buffer.
pub fn resolve_live(handle: &Handle, device: Option<&Path>) -> Result<(Resolved, File, UdmabufLiveInfo)> {
    let (r, live) = resolve(handle, device, 0)?;
    let Some((dev, info)) = live else {
        return Err(CtlError::NotLive(format!(
            "not a udmabuf-live buffer: the dma-buf's exporter is '{}', not {} (INFO, SYNC, VERIFY and PFNS are udmabuf-live ioctls)",
            if r.exporter.is_empty() { "unknown" } else { &r.exporter },
            udmabuf_live_uapi::MODULE_NAME
        ))
        .into());
    };
    Ok((r, dev, info))
}

/// Open udmabuf-live's device and make sure `dmabuf` is one of its buffers (the INFO
/// ioctl answers EINVAL for any other exporter's dma-buf). Returns the device and INFO.
pub fn open_live(device: &Path, dmabuf: &std::os::fd::OwnedFd) -> Result<(File, UdmabufLiveInfo)> {
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
            Err(CtlError::NotLive(format!(
                "not a udmabuf-live buffer: {why} (INFO, SYNC, VERIFY and PFNS are udmabuf-live ioctls)"
            ))
            .into())
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("UDMABUF_LIVE_INFO on {}", device.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_messages() {
        let e = check_range("write", 40 << 10, 0, 40 << 10).unwrap_err();
        assert!(format!("{e}").contains("at or past the end of the memfd"), "{e}");
        assert_eq!(crate::exit::code_of(&e), crate::exit::USAGE);
        let e = check_range("punch", 0, 0, 4096).unwrap_err();
        assert!(format!("{e}").contains("--len is 0"), "{e}");
        assert!(check_range("punch", 4096, 8192, 8192).is_err());
        assert!(check_range("punch", 0, 8192, 8192).is_ok());
    }

    #[test]
    fn live_device_comes_from_the_exporter() {
        assert_eq!(live_node(None, "udmabuf"), None);
        assert_eq!(live_node(None, "udmabuf_live").unwrap(), Path::new("/dev/udmabuf-live"));
        // A node that is not a char device: its name decides; udmabuf's is ignored.
        assert_eq!(live_node(Some(Path::new("/nonexistent/udmabuf")), "udmabuf_live").unwrap(), Path::new("/dev/udmabuf-live"));
        assert_eq!(live_node(Some(Path::new("/x/udmabuf-live")), "udmabuf_live").unwrap(), Path::new("/x/udmabuf-live"));
    }
}
