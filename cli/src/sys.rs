//! System calls the commands share: memfds, mappings, the udmabuf ioctls, pidfds,
//! /proc. Thin wrappers that return `nix::Result`; the commands add the context and
//! turn errnos into advice.

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, SealFlag};
use nix::libc;
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use std::collections::BTreeMap;
use std::ffi::c_void;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use udmabuf_live_uapi as uapi;

/// Size of a base page.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as u64 }
}

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

pub fn dmabuf_size(fd: &impl AsRawFd) -> nix::Result<u64> {
    nix::unistd::lseek(fd.as_raw_fd(), 0, nix::unistd::Whence::SeekEnd).map(|o| o as u64)
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

/// A shared mapping, unmapped on drop. Accesses copy through raw pointers: other
/// mappings of the same pages (in this process or another) change it behind our back.
pub struct Mapping {
    ptr: NonNull<c_void>,
    len: usize,
}

impl Mapping {
    pub fn new(fd: impl AsFd, len: u64, writable: bool) -> nix::Result<Self> {
        let length = NonZeroUsize::new(usize::try_from(len).map_err(|_| Errno::EINVAL)?).ok_or(Errno::EINVAL)?;
        let prot = if writable { ProtFlags::PROT_READ | ProtFlags::PROT_WRITE } else { ProtFlags::PROT_READ };
        // SAFETY: a fresh mapping at an address the kernel picks; Rust references never
        // point into it (all accesses are raw copies).
        let ptr = unsafe { mmap(None, length, prot, MapFlags::MAP_SHARED, fd, 0) }?;
        Ok(Self { ptr, len: length.get() })
    }

    /// `len` bytes of `fd` from byte `offset` (a page boundary), shared.
    pub fn new_at(fd: impl AsFd, len: u64, offset: u64, writable: bool) -> nix::Result<Self> {
        let length = NonZeroUsize::new(usize::try_from(len).map_err(|_| Errno::EINVAL)?).ok_or(Errno::EINVAL)?;
        let offset = i64::try_from(offset).map_err(|_| Errno::EINVAL)?;
        let prot = if writable { ProtFlags::PROT_READ | ProtFlags::PROT_WRITE } else { ProtFlags::PROT_READ };
        // SAFETY: as in `new`.
        let ptr = unsafe { mmap(None, length, prot, MapFlags::MAP_SHARED, fd, offset) }?;
        Ok(Self { ptr, len: length.get() })
    }

    pub fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    /// One byte at `off`, read as the CPU sees it now (volatile: for polling).
    pub fn read_byte(&self, off: usize) -> u8 {
        assert!(off < self.len, "read past the mapping");
        // SAFETY: in bounds of a live, readable mapping.
        unsafe { std::ptr::read_volatile(self.ptr.as_ptr().cast::<u8>().add(off)) }
    }

    /// Store one byte at `off` (volatile).
    pub fn write_byte(&self, off: usize, byte: u8) {
        assert!(off < self.len, "write past the mapping");
        // SAFETY: in bounds of a live mapping; writable mappings only (see `write`).
        unsafe { std::ptr::write_volatile(self.ptr.as_ptr().cast::<u8>().add(off), byte) }
    }

    /// madvise(MADV_REMOVE) of `len` bytes from `off`: punches the file behind them.
    pub fn madvise_remove(&self, off: usize, len: usize) -> nix::Result<()> {
        assert!(off.checked_add(len).is_some_and(|e| e <= self.len), "madvise past the mapping");
        // SAFETY: the range lies in our live mapping; MADV_REMOVE only frees the file's
        // pages behind it, which later reads see as zeros.
        Errno::result(unsafe { libc::madvise(self.ptr.as_ptr().cast::<u8>().add(off).cast(), len, libc::MADV_REMOVE) }).map(drop)
    }

    pub fn read(&self, off: u64, buf: &mut [u8]) {
        assert!(off.checked_add(buf.len() as u64).is_some_and(|e| e <= self.len as u64), "read past the mapping");
        // SAFETY: in bounds of a live mapping (checked above).
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.as_ptr().cast::<u8>().add(off as usize), buf.as_mut_ptr(), buf.len()) };
    }

    pub fn write(&self, off: u64, data: &[u8]) {
        assert!(off.checked_add(data.len() as u64).is_some_and(|e| e <= self.len as u64), "write past the mapping");
        // SAFETY: in bounds of a live mapping (checked above); writable mappings only
        // (a read-only one faults, which is a bug of the caller, not memory unsafety).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().cast::<u8>().add(off as usize), data.len()) };
    }

    /// Which base pages of the mapping are in the file's page cache (mincore(2)); looking
    /// does not fault anything in.
    pub fn resident(&self) -> nix::Result<Vec<bool>> {
        let pages = self.len.div_ceil(page_size() as usize);
        let mut vec = vec![0u8; pages];
        // SAFETY: the range is our live mapping; `vec` has one byte per page of it.
        Errno::result(unsafe { libc::mincore(self.ptr.as_ptr(), self.len, vec.as_mut_ptr()) })?;
        Ok(vec.iter().map(|b| b & 1 != 0).collect())
    }

    /// Read one byte of the page at `off` so it is mapped (present in the page tables).
    pub fn touch(&self, off: u64) {
        assert!(off < self.len as u64, "touch past the mapping");
        // SAFETY: in bounds of a live, readable mapping.
        unsafe { std::ptr::read_volatile(self.ptr.as_ptr().cast::<u8>().add(off as usize)) };
    }

    /// Touch one byte of every base page so each one is faulted in.
    pub fn fault_in(&self) {
        let ps = page_size() as usize;
        let base = self.ptr.as_ptr().cast::<u8>();
        for off in (0..self.len).step_by(ps) {
            // SAFETY: in bounds of a live, readable mapping.
            unsafe { std::ptr::read_volatile(base.add(off)) };
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped; nothing refers into it any more.
        let _ = unsafe { munmap(self.ptr, self.len) };
    }
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

// ---- the udmabuf ioctls ------------------------------------------------------------

nix::ioctl_write_ptr_bad!(ioctl_create, uapi::UDMABUF_CREATE, uapi::UdmabufCreate);
nix::ioctl_readwrite_bad!(ioctl_info, uapi::UDMABUF_LIVE_INFO, uapi::UdmabufLiveInfo);
nix::ioctl_write_ptr_bad!(ioctl_sync, uapi::UDMABUF_LIVE_SYNC, uapi::UdmabufLiveSync);
nix::ioctl_readwrite_bad!(ioctl_verify, uapi::UDMABUF_LIVE_VERIFY, uapi::UdmabufLiveVerify);
nix::ioctl_write_ptr_bad!(ioctl_pfns, uapi::UDMABUF_LIVE_PFNS, uapi::UdmabufLivePfns);

/// UDMABUF_CREATE of `size` bytes of `memfd` from offset 0; the dma-buf is close-on-exec.
pub fn udmabuf_create(dev: &impl AsRawFd, memfd: &impl AsRawFd, size: u64) -> nix::Result<OwnedFd> {
    let arg = uapi::UdmabufCreate { memfd: memfd.as_raw_fd() as u32, flags: uapi::UDMABUF_FLAGS_CLOEXEC, offset: 0, size };
    // SAFETY: `arg` is a valid udmabuf_create for the duration of the call.
    let fd = unsafe { ioctl_create(dev.as_raw_fd(), &arg) }?;
    // SAFETY: on success the ioctl returns a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn live_info(dev: &impl AsRawFd, dmabuf: &impl AsRawFd) -> nix::Result<uapi::UdmabufLiveInfo> {
    let mut a = uapi::UdmabufLiveInfo { dmabuf_fd: dmabuf.as_raw_fd() as u32, ..Default::default() };
    // SAFETY: valid argument struct for the call.
    unsafe { ioctl_info(dev.as_raw_fd(), &mut a) }.map(|_| a)
}

pub fn live_sync(dev: &impl AsRawFd, dmabuf: &impl AsRawFd, timeout_ms: u32) -> nix::Result<()> {
    let a = uapi::UdmabufLiveSync { dmabuf_fd: dmabuf.as_raw_fd() as u32, timeout_ms };
    // SAFETY: valid argument struct for the call.
    unsafe { ioctl_sync(dev.as_raw_fd(), &a) }.map(drop)
}

pub fn live_verify(dev: &impl AsRawFd, dmabuf: &impl AsRawFd) -> nix::Result<uapi::UdmabufLiveVerify> {
    let mut a = uapi::UdmabufLiveVerify { dmabuf_fd: dmabuf.as_raw_fd() as u32, ..Default::default() };
    // SAFETY: valid argument struct for the call.
    unsafe { ioctl_verify(dev.as_raw_fd(), &mut a) }.map(|_| a)
}

/// PFNs of pages `first .. first + out.len()` of a udmabuf-live buffer (CAP_SYS_ADMIN).
pub fn live_pfns(dev: &impl AsRawFd, dmabuf: &impl AsRawFd, first: u64, out: &mut [u64]) -> nix::Result<()> {
    let a = uapi::UdmabufLivePfns {
        dmabuf_fd: dmabuf.as_raw_fd() as u32,
        __pad: 0,
        first_page: first,
        count: out.len() as u64,
        pfns: out.as_mut_ptr() as u64,
    };
    // SAFETY: `pfns` points to `count` writable u64s for the duration of the call.
    unsafe { ioctl_pfns(dev.as_raw_fd(), &a) }.map(drop)
}

// DMA_BUF_IOCTL_SYNC (include/uapi/linux/dma-buf.h): bracket CPU access to a mapping.
pub const DMA_BUF_SYNC_READ: u64 = 1;
pub const DMA_BUF_SYNC_START: u64 = 0;
pub const DMA_BUF_SYNC_END: u64 = 1 << 2;

#[repr(C)]
pub struct DmaBufSync {
    pub flags: u64,
}
nix::ioctl_write_ptr!(ioctl_dma_buf_sync, b'b', 0, DmaBufSync);

pub fn dma_buf_sync(fd: &impl AsRawFd, flags: u64) -> nix::Result<()> {
    let a = DmaBufSync { flags };
    // SAFETY: valid argument struct for the call.
    unsafe { ioctl_dma_buf_sync(fd.as_raw_fd(), &a) }.map(drop)
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
