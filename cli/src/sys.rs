//! System calls the commands share: memfds, pidfds, /proc, and (from the uapi crate's
//! `sys`, the one userspace layer the tests use too) mappings and the udmabuf ioctls.
//! Thin wrappers that return `nix::Result`; the commands add the context and turn errnos
//! into advice.

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, SealFlag};
use nix::libc;
use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use udmabuf_live_uapi as uapi;

pub use uapi::sys::{
    dma_buf_sync, dmabuf_size, info as live_info, page_size, pfns as live_pfns, sync as live_sync, verify as live_verify,
    Mapping, DMA_BUF_SYNC_END, DMA_BUF_SYNC_READ, DMA_BUF_SYNC_START,
};

/// The huge page size `create --hugetlb` uses (MFD_HUGE_2MB).
pub const HUGE_PAGE: u64 = 2 << 20;

pub fn pidfd_open(pid: i32) -> nix::Result<OwnedFd> {
    // SAFETY: plain system call with integer arguments.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    Errno::result(r).map(|fd| {
        // SAFETY: a new fd that nothing else owns.
        unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
    })
}

/// Duplicate fd `fd` of the process behind `pidfd` into this one (close-on-exec).
pub fn pidfd_getfd(pidfd: RawFd, fd: i32) -> nix::Result<OwnedFd> {
    // SAFETY: plain system call with integer arguments.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) };
    Errno::result(r).map(|fd| {
        // SAFETY: a new fd that nothing else owns.
        unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
    })
}

pub fn get_seals(fd: &impl AsRawFd) -> nix::Result<SealFlag> {
    fcntl(fd.as_raw_fd(), FcntlArg::F_GET_SEALS).map(SealFlag::from_bits_truncate)
}

pub fn add_seals(fd: &impl AsRawFd, seals: SealFlag) -> nix::Result<()> {
    fcntl(fd.as_raw_fd(), FcntlArg::F_ADD_SEALS(seals)).map(drop)
}

/// Seal names as `fcntl(2)` spells them.
pub fn seal_names(s: SealFlag) -> Vec<&'static str> {
    let all = [
        (SealFlag::F_SEAL_SEAL, "seal"),
        (SealFlag::F_SEAL_SHRINK, "shrink"),
        (SealFlag::F_SEAL_GROW, "grow"),
        (SealFlag::F_SEAL_WRITE, "write"),
        (SealFlag::F_SEAL_FUTURE_WRITE, "future_write"),
    ];
    all.iter().filter(|(f, _)| s.contains(*f)).map(|(_, n)| *n).collect()
}

pub fn clear_cloexec(fd: &impl AsRawFd) -> nix::Result<()> {
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::empty())).map(drop)
}

/// Size of a file (st_size; for a dma-buf, lseek(SEEK_END) is the portable way).
pub fn file_size(fd: &impl AsRawFd) -> nix::Result<u64> {
    nix::sys::stat::fstat(fd.as_raw_fd()).map(|st| st.st_size as u64)
}

/// `key:\tvalue` lines of a /proc/PID/fdinfo file.
pub fn parse_fdinfo(text: &str) -> BTreeMap<String, String> {
    text.lines().filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())).collect()
}

pub fn fdinfo(pid: &str, fd: &str) -> Option<BTreeMap<String, String>> {
    std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok().map(|t| parse_fdinfo(&t))
}

/// The exporter name of a dma-buf fd of this process, `None` if it is no dma-buf.
pub fn dmabuf_exporter(fd: &impl AsRawFd) -> Option<String> {
    fdinfo("self", &fd.as_raw_fd().to_string())?.remove("exp_name")
}

/// What /proc says fd `fd` of `pid` is, for error messages.
pub fn fd_target(pid: i32, fd: i32) -> String {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| format!("unknown: {e}"))
}

pub const CAP_IPC_LOCK: u32 = 14;
pub const CAP_SYS_ADMIN: u32 = 21;

/// Capability `cap` is in this process's effective set (/proc/self/status `CapEff`;
/// root counts as having all when that cannot be read).
pub fn has_cap(cap: u32) -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return nix::unistd::geteuid().is_root() };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .map_or_else(|| nix::unistd::geteuid().is_root(), |caps| caps & (1 << cap) != 0)
}

/// Effective capabilities include CAP_SYS_ADMIN (what the PFNS ioctl and a /proc/self/pagemap
/// with real PFNs need).
pub fn privileged() -> bool {
    has_cap(CAP_SYS_ADMIN)
}

/// The PFNs behind `pages` base pages of this process from `addr`, from
/// /proc/self/pagemap (bit 63: present; bits 0-54: PFN, zero unless CAP_SYS_ADMIN).
/// `None` for a page that is not present.
pub fn pagemap_pfns(addr: usize, pages: u64) -> std::io::Result<Vec<Option<u64>>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open("/proc/self/pagemap")?;
    let first = addr as u64 / page_size();
    let mut raw = vec![0u8; pages as usize * 8];
    let mut done = 0;
    while done < raw.len() {
        let n = f.read_at(&mut raw[done..], first * 8 + done as u64)?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "short read of /proc/self/pagemap"));
        }
        done += n;
    }
    Ok(raw
        .chunks_exact(8)
        .map(|c| {
            let e = u64::from_ne_bytes(c.try_into().unwrap());
            (e >> 63 == 1).then_some(e & ((1 << 55) - 1))
        })
        .collect())
}

/// UDMABUF_CREATE of `size` bytes of `memfd` from offset 0; the dma-buf is close-on-exec.
pub fn udmabuf_create(dev: &impl AsRawFd, memfd: &impl AsRawFd, size: u64) -> nix::Result<OwnedFd> {
    let arg = uapi::UdmabufCreate { memfd: memfd.as_raw_fd() as u32, flags: uapi::UDMABUF_FLAGS_CLOEXEC, offset: 0, size };
    uapi::sys::create(dev, &arg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The format of dma_buf_show_fdinfo() (drivers/dma-buf/dma-buf.c, 7.2) after the
    /// generic fdinfo lines.
    #[test]
    fn fdinfo_of_a_dmabuf() {
        let text = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t1042\nsize:\t4194304\ncount:\t1\nexp_name:\tudmabuf_live\n";
        let m = parse_fdinfo(text);
        assert_eq!(m["exp_name"], "udmabuf_live");
        assert_eq!(m["size"], "4194304");
        assert_eq!(m["ino"], "1042");
        assert_eq!(m["count"], "1");
        assert!(!m.contains_key("name"));
    }

    #[test]
    fn seal_names_in_order() {
        assert_eq!(seal_names(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_SEAL), ["seal", "shrink"]);
        assert!(seal_names(SealFlag::empty()).is_empty());
    }
}
