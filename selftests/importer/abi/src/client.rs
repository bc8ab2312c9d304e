//! The userspace side of the importer's ABI (feature `std`): an open file of
//! `/dev/ulive-importer` and its ioctls, one typed method each, returning `nix::Result`.
//! Callers add their context (the tests, `udmabuf-ctl hold`, `udmabuf-ctl bench`).

use crate::abi::*;
use nix::errno::Errno;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

/// ioctl(2) with a typed argument, for the methods below and for tests that pass
/// requests the module must refuse (unknown commands, bad user pointers).
///
/// # Safety
/// `arg` is null (for a request without argument) or points at a live `T` that is the
/// argument type of `req`; any user pointer inside it points at memory the kernel may
/// write as much as the request says (or is one the kernel must refuse with EFAULT).
pub unsafe fn ioctl<T>(fd: RawFd, req: u32, arg: *mut T) -> nix::Result<i32> {
    // SAFETY: the caller's contract, above.
    Errno::result(unsafe { nix::libc::ioctl(fd, req as _, arg) })
}

/// An open file of the importer device. Closing it (drop) vunmaps, unmaps, detaches and
/// drops the dma-buf reference, as DETACH does.
pub struct Importer(File);

impl Importer {
    /// Open the device node at `path` read-write.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map(Self)
    }

    /// An importer file the caller opened.
    pub fn from_file(file: File) -> Self {
        Self(file)
    }

    /// The open importer file itself.
    pub fn into_file(self) -> File {
        self.0
    }

    pub fn raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// ATTACH to the dma-buf `dmabuf`, statically or dynamically.
    pub fn attach(&self, dmabuf: RawFd, dynamic: bool) -> nix::Result<()> {
        self.attach_raw(dmabuf, dynamic as u32)
    }

    /// ATTACH with the `dynamic` field as given (so that bad values can be passed).
    pub fn attach_raw(&self, dmabuf: RawFd, dynamic: u32) -> nix::Result<()> {
        let mut a = ImporterAttach {
            dmabuf_fd: dmabuf,
            dynamic,
        };
        // SAFETY: the argument type of IMPORTER_ATTACH, live for the call; user pointers
        // come from slices of the right length.
        unsafe { ioctl(self.raw_fd(), IMPORTER_ATTACH, &mut a) }.map(drop)
    }

    /// MAP: a fresh `dma_buf_map_attachment`.
    pub fn map(&self) -> nix::Result<ImporterMap> {
        let mut m = ImporterMap::default();
        // SAFETY: the argument type of IMPORTER_MAP, live for the call; user pointers
        // come from slices of the right length.
        unsafe { ioctl(self.raw_fd(), IMPORTER_MAP, &mut m) }.map(|_| m)
    }

    /// READ through the DMA mapping; returns the bytes copied.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> nix::Result<usize> {
        let mut r = ImporterRead {
            offset: offset as u64,
            len: buf.len() as u64,
            user_ptr: buf.as_mut_ptr() as u64,
        };
        // SAFETY: the argument type of IMPORTER_READ, live for the call; user pointers
        // come from slices of the right length.
        unsafe { ioctl(self.raw_fd(), IMPORTER_READ, &mut r) }.map(|n| n as usize)
    }

    pub fn stats(&self) -> nix::Result<ImporterStats> {
        let mut s = ImporterStats::default();
        // SAFETY: the argument type of IMPORTER_STATS, live for the call; user pointers
        // come from slices of the right length.
        unsafe { ioctl(self.raw_fd(), IMPORTER_STATS, &mut s) }.map(|_| s)
    }

    pub fn detach(&self) -> nix::Result<()> {
        // SAFETY: the argument type of IMPORTER_DETACH, live for the call; user pointers
        // come from slices of the right length.
        unsafe { ioctl(self.raw_fd(), IMPORTER_DETACH, std::ptr::null_mut::<u8>()) }.map(drop)
    }

    /// PFNS of pages `first_page..` into `out` (`flags`: 0, IMPORTER_PFNS_DMA or
    /// IMPORTER_PFNS_PINNED); returns how many the module wrote.
    pub fn pfns(&self, first_page: u64, out: &mut [u64], flags: u32) -> nix::Result<usize> {
        let mut p = ImporterPfns {
            first_page,
            count: out.len() as u64,
            user_ptr: out.as_mut_ptr() as u64,
            flags,
            reserved: 0,
        };
        // SAFETY: `user_ptr` is `out`, which has room for `count` u64s.
        unsafe { self.pfns_req(&mut p) }
    }

    /// PFNS with a request as given (so that bad ones can be passed).
    ///
    /// # Safety
    /// The module writes at most `count` u64s to `user_ptr`: it must point at that many
    /// writable u64s, or be an address the kernel refuses (EFAULT), or the request must be
    /// one the module refuses before writing.
    pub unsafe fn pfns_req(&self, req: &mut ImporterPfns) -> nix::Result<usize> {
        // SAFETY: the argument type of IMPORTER_PFNS, live for the call; user pointers
        // come from slices of the right length.
        unsafe { ioctl(self.raw_fd(), IMPORTER_PFNS, req) }.map(|n| n as usize)
    }

    pub fn vmap(&self) -> nix::Result<()> {
        // SAFETY: the argument type of IMPORTER_VMAP, live for the call; user pointers
        // come from slices of the right length.
        unsafe { ioctl(self.raw_fd(), IMPORTER_VMAP, std::ptr::null_mut::<u8>()) }.map(drop)
    }

    pub fn vunmap(&self) -> nix::Result<()> {
        // SAFETY: the argument type of IMPORTER_VUNMAP, live for the call; user pointers
        // come from slices of the right length.
        unsafe { ioctl(self.raw_fd(), IMPORTER_VUNMAP, std::ptr::null_mut::<u8>()) }.map(drop)
    }

    /// VREAD through the vmap; returns the bytes copied.
    pub fn vread(&self, offset: usize, buf: &mut [u8]) -> nix::Result<usize> {
        let mut r = ImporterRead {
            offset: offset as u64,
            len: buf.len() as u64,
            user_ptr: buf.as_mut_ptr() as u64,
        };
        // SAFETY: the argument type of IMPORTER_VREAD, live for the call; user pointers
        // come from slices of the right length.
        unsafe { ioctl(self.raw_fd(), IMPORTER_VREAD, &mut r) }.map(|n| n as usize)
    }
}
