//! The userspace side of the ABI (feature `std`): the udmabuf ioctls (CREATE, CREATE_LIST)
//! and udmabuf-live's own (INFO, SYNC, VERIFY, PFNS), `DMA_BUF_IOCTL_SYNC`, shared
//! mappings and the page size. Thin and typed: every call returns `nix::Result`, and the
//! callers (the CLI, the tests) add their context and advice.
//!
//! Each ioctl has a `_raw` form taking the dma-buf's fd number as the ABI carries it (a
//! `u32`), so that the tests can pass numbers that are not open, and a form taking an fd.

use crate::abi::*;
use nix::errno::Errno;
use nix::libc;
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use std::ffi::c_void;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::vec;
use std::vec::Vec;

/// Size of a base page.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as u64 }
}

/// The fd number of `fd` as the uapi structs carry it.
pub fn fdnum(fd: &impl AsRawFd) -> u32 {
    fd.as_raw_fd() as u32
}

/// Size of a dma-buf as users learn it: lseek(SEEK_END).
pub fn dmabuf_size(fd: &impl AsRawFd) -> nix::Result<u64> {
    nix::unistd::lseek(fd.as_raw_fd(), 0, nix::unistd::Whence::SeekEnd).map(|o| o as u64)
}

/// Memory free now, in bytes: MemAvailable (/proc/meminfo) plus the pages free on the
/// per-CPU lists (/proc/zoneinfo `count:`), which MemAvailable leaves out: a freed page
/// may wait there, so without them the figure depends on how full those lists happen to
/// be. What a punch gives back shows as a rise of this figure.
pub fn free_memory() -> std::io::Result<u64> {
    use std::io::{Error, ErrorKind};
    let meminfo = std::fs::read_to_string("/proc/meminfo")
        .map_err(|e| Error::new(e.kind(), std::format!("read /proc/meminfo: {e}")))?;
    let avail_kib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| Error::new(ErrorKind::InvalidData, "no MemAvailable in /proc/meminfo"))?;
    let zoneinfo = std::fs::read_to_string("/proc/zoneinfo")
        .map_err(|e| Error::new(e.kind(), std::format!("read /proc/zoneinfo: {e}")))?;
    let pcp: u64 = zoneinfo
        .lines()
        .filter_map(|l| l.trim().strip_prefix("count:"))
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .sum();
    Ok(avail_kib * 1024 + pcp * page_size())
}

// ---- UDMABUF_CREATE and UDMABUF_CREATE_LIST ------------------------------------------

nix::ioctl_write_ptr_bad!(ioctl_create, UDMABUF_CREATE, UdmabufCreate);
nix::ioctl_write_ptr_bad!(ioctl_create_list, UDMABUF_CREATE_LIST, UdmabufCreateList);

/// The fd an fd-returning ioctl handed back.
pub fn own(r: nix::Result<libc::c_int>) -> nix::Result<OwnedFd> {
    // SAFETY: on success these ioctls return a new fd that nothing else owns.
    r.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// UDMABUF_CREATE with the argument as given (a raw memfd number, any flags).
pub fn create(dev: &impl AsRawFd, arg: &UdmabufCreate) -> nix::Result<OwnedFd> {
    // SAFETY: `arg` is a valid udmabuf_create for the duration of the call.
    own(unsafe { ioctl_create(dev.as_raw_fd(), arg) })
}

/// One CREATE_LIST entry over `memfd[offset..offset + size]`.
pub fn item(memfd: &impl AsRawFd, offset: u64, size: u64) -> UdmabufCreateItem {
    UdmabufCreateItem {
        memfd: fdnum(memfd),
        __pad: 0,
        offset,
        size,
    }
}

/// The CREATE_LIST argument: the header directly followed by the entries, in one
/// 8-byte-aligned allocation.
pub struct ListArg {
    words: Vec<u64>,
}

impl ListArg {
    pub fn new(flags: u32, count: u32, items: &[UdmabufCreateItem]) -> Self {
        let hdr = core::mem::size_of::<UdmabufCreateList>();
        let isz = core::mem::size_of::<UdmabufCreateItem>();
        let bytes = hdr + core::mem::size_of_val(items);
        let mut words = vec![0u64; bytes.div_ceil(8)];
        let base = words.as_mut_ptr() as *mut u8;
        // SAFETY: the buffer holds the header plus every entry; both types are plain
        // repr(C) data with 8-byte alignment at most, and every offset is a multiple of 8.
        unsafe {
            base.cast::<UdmabufCreateList>()
                .write(UdmabufCreateList { flags, count });
            for (i, it) in items.iter().enumerate() {
                base.add(hdr + i * isz)
                    .cast::<UdmabufCreateItem>()
                    .write(*it);
            }
        }
        Self { words }
    }

    pub fn as_ptr(&self) -> *const UdmabufCreateList {
        self.words.as_ptr().cast()
    }
}

/// UDMABUF_CREATE_LIST with a `count` that may differ from the entries passed (callers
/// pass a larger one only when the kernel must refuse it before reading the entries).
pub fn create_list_count(
    dev: &impl AsRawFd,
    flags: u32,
    count: u32,
    items: &[UdmabufCreateItem],
) -> nix::Result<OwnedFd> {
    let arg = ListArg::new(flags, count, items);
    // SAFETY: `arg` holds a header and `items.len()` entries; a larger `count` is the
    // caller's test of the kernel's bound check, which happens before any entry is read.
    own(unsafe { ioctl_create_list(dev.as_raw_fd(), arg.as_ptr()) })
}

/// UDMABUF_CREATE_LIST of `items`.
pub fn create_list(
    dev: &impl AsRawFd,
    flags: u32,
    items: &[UdmabufCreateItem],
) -> nix::Result<OwnedFd> {
    create_list_count(dev, flags, items.len() as u32, items)
}

// ---- the udmabuf-live ioctls ---------------------------------------------------------

nix::ioctl_readwrite_bad!(ioctl_info, UDMABUF_LIVE_INFO, UdmabufLiveInfo);
nix::ioctl_write_ptr_bad!(ioctl_sync, UDMABUF_LIVE_SYNC, UdmabufLiveSync);
nix::ioctl_readwrite_bad!(ioctl_verify, UDMABUF_LIVE_VERIFY, UdmabufLiveVerify);
nix::ioctl_write_ptr_bad!(ioctl_pfns, UDMABUF_LIVE_PFNS, UdmabufLivePfns);

/// UDMABUF_LIVE_INFO on the dma-buf numbered `fd`.
pub fn info_raw(dev: &impl AsRawFd, fd: u32) -> nix::Result<UdmabufLiveInfo> {
    let mut a = UdmabufLiveInfo {
        dmabuf_fd: fd,
        ..Default::default()
    };
    // SAFETY: `a` is a valid udmabuf_live_info for the duration of the call.
    unsafe { ioctl_info(dev.as_raw_fd(), &mut a) }.map(|_| a)
}

/// UDMABUF_LIVE_SYNC on the dma-buf numbered `fd`.
pub fn sync_raw(dev: &impl AsRawFd, fd: u32, timeout_ms: u32) -> nix::Result<()> {
    let a = UdmabufLiveSync {
        dmabuf_fd: fd,
        timeout_ms,
    };
    // SAFETY: `a` is a valid udmabuf_live_sync for the duration of the call.
    unsafe { ioctl_sync(dev.as_raw_fd(), &a) }.map(drop)
}

/// UDMABUF_LIVE_VERIFY on the dma-buf numbered `fd`.
pub fn verify_raw(dev: &impl AsRawFd, fd: u32) -> nix::Result<UdmabufLiveVerify> {
    let mut a = UdmabufLiveVerify {
        dmabuf_fd: fd,
        ..Default::default()
    };
    // SAFETY: `a` is a valid udmabuf_live_verify for the duration of the call.
    unsafe { ioctl_verify(dev.as_raw_fd(), &mut a) }.map(|_| a)
}

/// UDMABUF_LIVE_PFNS with a raw output address (so bad ones can be passed).
///
/// # Safety
/// `out` must be null, or point to writable memory for whatever the kernel may write
/// there (`count` u64s if it accepts the request).
pub unsafe fn pfns_raw(
    dev: &impl AsRawFd,
    fd: u32,
    first_page: u64,
    count: u64,
    out: u64,
) -> nix::Result<()> {
    let a = UdmabufLivePfns {
        dmabuf_fd: fd,
        __pad: 0,
        first_page,
        count,
        pfns: out,
    };
    // SAFETY: `a` is a valid udmabuf_live_pfns; the output is the caller's contract.
    unsafe { ioctl_pfns(dev.as_raw_fd(), &a) }.map(drop)
}

/// INFO of `dmabuf`.
pub fn info(dev: &impl AsRawFd, dmabuf: &impl AsRawFd) -> nix::Result<UdmabufLiveInfo> {
    info_raw(dev, fdnum(dmabuf))
}

/// SYNC of `dmabuf`, waiting up to `timeout_ms` for deferred updates.
pub fn sync(dev: &impl AsRawFd, dmabuf: &impl AsRawFd, timeout_ms: u32) -> nix::Result<()> {
    sync_raw(dev, fdnum(dmabuf), timeout_ms)
}

/// VERIFY of `dmabuf`.
pub fn verify(dev: &impl AsRawFd, dmabuf: &impl AsRawFd) -> nix::Result<UdmabufLiveVerify> {
    verify_raw(dev, fdnum(dmabuf))
}

/// PFNs of pages `first .. first + out.len()` of `dmabuf` (CAP_SYS_ADMIN).
pub fn pfns(
    dev: &impl AsRawFd,
    dmabuf: &impl AsRawFd,
    first: u64,
    out: &mut [u64],
) -> nix::Result<()> {
    // SAFETY: `out` has room for the `out.len()` u64s asked for.
    unsafe {
        pfns_raw(
            dev,
            fdnum(dmabuf),
            first,
            out.len() as u64,
            out.as_mut_ptr() as u64,
        )
    }
}

// ---- DMA_BUF_IOCTL_SYNC (include/uapi/linux/dma-buf.h) -------------------------------

pub const DMA_BUF_SYNC_READ: u64 = 1;
pub const DMA_BUF_SYNC_WRITE: u64 = 2;
pub const DMA_BUF_SYNC_RW: u64 = DMA_BUF_SYNC_READ | DMA_BUF_SYNC_WRITE;
pub const DMA_BUF_SYNC_START: u64 = 0;
pub const DMA_BUF_SYNC_END: u64 = 1 << 2;

/// `struct dma_buf_sync`.
#[repr(C)]
pub struct DmaBufSync {
    pub flags: u64,
}
nix::ioctl_write_ptr!(ioctl_dma_buf_sync, b'b', 0, DmaBufSync);

/// DMA_BUF_IOCTL_SYNC: bracket CPU access to a mapping of the dma-buf `fd`.
pub fn dma_buf_sync(fd: &impl AsRawFd, flags: u64) -> nix::Result<()> {
    let a = DmaBufSync { flags };
    // SAFETY: `a` is a valid dma_buf_sync for the duration of the call.
    unsafe { ioctl_dma_buf_sync(fd.as_raw_fd(), &a) }.map(drop)
}

// ---- mappings ------------------------------------------------------------------------

/// An mmap, unmapped on drop. Accesses copy through raw pointers: other mappings of the
/// same pages (in this process or another) change it behind our back, so Rust references
/// never point into it.
pub struct Mapping {
    ptr: NonNull<c_void>,
    len: usize,
}

impl Mapping {
    /// mmap `len` bytes of `fd` from byte `offset` (a page boundary).
    pub fn map(
        fd: impl AsFd,
        len: u64,
        offset: u64,
        writable: bool,
        shared: bool,
    ) -> nix::Result<Self> {
        let length = NonZeroUsize::new(usize::try_from(len).map_err(|_| Errno::EINVAL)?)
            .ok_or(Errno::EINVAL)?;
        let offset = i64::try_from(offset).map_err(|_| Errno::EINVAL)?;
        let prot = if writable {
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE
        } else {
            ProtFlags::PROT_READ
        };
        let flags = if shared {
            MapFlags::MAP_SHARED
        } else {
            MapFlags::MAP_PRIVATE
        };
        // SAFETY: a fresh mapping at an address the kernel picks; Rust references never
        // point into it (all accesses are raw copies).
        let ptr = unsafe { mmap(None, length, prot, flags, fd, offset) }?;
        Ok(Self {
            ptr,
            len: length.get(),
        })
    }

    /// A shared mapping of `len` bytes of `fd` from offset 0.
    pub fn new(fd: impl AsFd, len: u64, writable: bool) -> nix::Result<Self> {
        Self::map(fd, len, 0, writable, true)
    }

    /// A shared mapping of `len` bytes of `fd` from byte `offset` (a page boundary).
    pub fn new_at(fd: impl AsFd, len: u64, offset: u64, writable: bool) -> nix::Result<Self> {
        Self::map(fd, len, offset, writable, true)
    }

    /// A read-write mapping, MAP_SHARED or MAP_PRIVATE.
    pub fn read_write(fd: impl AsFd, len: u64, offset: u64, shared: bool) -> nix::Result<Self> {
        Self::map(fd, len, offset, true, shared)
    }

    /// The user address the mapping starts at (for /proc/self/pagemap and madvise).
    pub fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn at(&self, off: usize) -> *mut u8 {
        // SAFETY: callers check `off` against the length of this live mapping first.
        unsafe { self.ptr.as_ptr().cast::<u8>().add(off) }
    }

    /// One byte at `off`, read as the CPU sees it now (volatile: for polling).
    pub fn read_byte(&self, off: usize) -> u8 {
        assert!(off < self.len, "read past the mapping");
        // SAFETY: in bounds of a live, readable mapping.
        unsafe { std::ptr::read_volatile(self.at(off)) }
    }

    /// Store one byte at `off` (volatile).
    pub fn write_byte(&self, off: usize, byte: u8) {
        assert!(off < self.len, "write past the mapping");
        // SAFETY: in bounds of a live mapping; writable mappings only (see `write`).
        unsafe { std::ptr::write_volatile(self.at(off), byte) }
    }

    /// madvise(MADV_REMOVE) of `len` bytes from `off`: punches the file behind them.
    pub fn madvise_remove(&self, off: usize, len: usize) -> nix::Result<()> {
        assert!(
            off.checked_add(len).is_some_and(|e| e <= self.len),
            "madvise past the mapping"
        );
        // SAFETY: the range lies in our live mapping; MADV_REMOVE only frees the file's
        // pages behind it, which later reads see as zeros.
        Errno::result(unsafe { libc::madvise(self.at(off).cast(), len, libc::MADV_REMOVE) })
            .map(drop)
    }

    /// Copy `buf.len()` bytes from `off` into `buf`.
    pub fn read_into(&self, off: u64, buf: &mut [u8]) {
        assert!(
            off.checked_add(buf.len() as u64)
                .is_some_and(|e| e <= self.len as u64),
            "read past the mapping"
        );
        // SAFETY: in bounds of a live mapping (checked above).
        unsafe {
            std::ptr::copy_nonoverlapping(self.at(off as usize), buf.as_mut_ptr(), buf.len())
        };
    }

    /// `len` bytes from `off`, copied out.
    pub fn read(&self, off: u64, len: u64) -> Vec<u8> {
        let mut v = vec![0u8; len as usize];
        self.read_into(off, &mut v);
        v
    }

    /// Copy `data` to `off`.
    pub fn write(&self, off: u64, data: &[u8]) {
        assert!(
            off.checked_add(data.len() as u64)
                .is_some_and(|e| e <= self.len as u64),
            "write past the mapping"
        );
        // SAFETY: in bounds of a live mapping (checked above); writable mappings only
        // (a read-only one faults, which is a bug of the caller, not memory unsafety).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.at(off as usize), data.len()) };
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
        unsafe { std::ptr::read_volatile(self.at(off as usize)) };
    }

    /// Touch one byte of every base page so each one is faulted in.
    pub fn fault_in(&self) {
        for off in (0..self.len).step_by(page_size() as usize) {
            // SAFETY: in bounds of a live, readable mapping.
            unsafe { std::ptr::read_volatile(self.at(off)) };
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `map` mapped; nothing refers into it any more.
        let _ = unsafe { munmap(self.ptr, self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CREATE_LIST argument is the kernel's layout: header, then 24-byte entries.
    #[test]
    fn list_arg_layout() {
        let items = [
            UdmabufCreateItem {
                memfd: 7,
                __pad: 0,
                offset: 0x1000,
                size: 0x2000,
            },
            UdmabufCreateItem {
                memfd: 9,
                __pad: 1,
                offset: 0x3000,
                size: 0x4000,
            },
        ];
        let arg = ListArg::new(UDMABUF_FLAGS_CLOEXEC, 2, &items);
        // SAFETY: ListArg holds 8 + 2 * 24 bytes.
        let bytes = unsafe { std::slice::from_raw_parts(arg.as_ptr().cast::<u8>(), 8 + 2 * 24) };
        let u32_at = |o: usize| u32::from_ne_bytes(bytes[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_ne_bytes(bytes[o..o + 8].try_into().unwrap());
        assert_eq!((u32_at(0), u32_at(4)), (UDMABUF_FLAGS_CLOEXEC, 2));
        assert_eq!(
            (u32_at(8), u32_at(12), u64_at(16), u64_at(24)),
            (7, 0, 0x1000, 0x2000)
        );
        assert_eq!(
            (u32_at(32), u32_at(36), u64_at(40), u64_at(48)),
            (9, 1, 0x3000, 0x4000)
        );
    }
}
