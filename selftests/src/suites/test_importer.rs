//! The tests' own dma-buf importer (selftests/importer/, /dev/ulive-test-importer).
//! vgem in 7.2 only attaches on PRIME import (drm_gem_shmem_prime_import_no_map): it
//! never maps, pins or vmaps a dma-buf. This importer does, as drivers do: a static
//! import (the core pins the buffer at map), a dynamic import (invalidate_mappings,
//! never pinned; maps again after an invalidation) and a kernel vmap. It reports the
//! PFNs its DMA mapping points at, and reads through its vmap.

use anyhow::{Context, Result};
use nix::errno::Errno;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};

pub const DEVICE: &str = "/dev/ulive-test-importer";
pub const MODULE_PATH: &str = "/lib/modules/ulive_test_importer.ko";

#[repr(C)]
#[derive(Default)]
struct UtiImport {
    fd: i32,
    flags: u32,
    id: u32,
    pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct UtiPfns {
    id: u32,
    pad: u32,
    count: u64,
    pfns: u64,
    invalidations: u64,
    remaps: u64,
}

#[repr(C)]
struct UtiVread {
    id: u32,
    pad: u32,
    offset: u64,
    len: u64,
    buf: u64,
}

const UTI_IMPORT_DYNAMIC: u32 = 1;

nix::ioctl_readwrite!(uti_import, b'T', 0x01, UtiImport);
nix::ioctl_readwrite!(uti_pfns, b'T', 0x02, UtiPfns);
nix::ioctl_write_ptr!(uti_release, b'T', 0x03, u32);
nix::ioctl_readwrite!(uti_vmap, b'T', 0x04, UtiImport);
nix::ioctl_write_ptr!(uti_vread, b'T', 0x05, UtiVread);

/// How an import attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    /// No importer ops: the dma-buf core pins the buffer while it is mapped.
    Static,
    /// With invalidate_mappings: never pinned; told when the pages move.
    Dynamic,
}

/// What the importer's mapping showed: its PFNs and its invalidation history.
#[derive(Debug)]
pub struct ImporterView {
    pub pfns: Vec<u64>,
    pub invalidations: u64,
    pub remaps: u64,
}

/// An open importer; every import still held is released when it is dropped.
pub struct Importer {
    fd: OwnedFd,
}

impl Importer {
    /// Open the importer device, loading its module first if needed.
    pub fn open() -> Result<Self> {
        if !std::path::Path::new(DEVICE).exists() {
            let f = std::fs::File::open(MODULE_PATH)
                .with_context(|| format!("open {MODULE_PATH} (the test importer: make test-importer builds it)"))?;
            match nix::kmod::finit_module(&f, &CString::default(), nix::kmod::ModuleInitFlags::empty()) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e).with_context(|| format!("finit_module({MODULE_PATH})")),
            }
        }
        let f = std::fs::OpenOptions::new().read(true).write(true).open(DEVICE).with_context(|| format!("open {DEVICE}"))?;
        Ok(Self { fd: f.into() })
    }

    /// Attach to the dma-buf and map it for DMA; returns the import's id.
    pub fn import(&self, dmabuf: &impl AsRawFd, how: Attach) -> Result<u32, Errno> {
        let flags = if how == Attach::Dynamic { UTI_IMPORT_DYNAMIC } else { 0 };
        let mut a = UtiImport { fd: dmabuf.as_raw_fd(), flags, ..Default::default() };
        // SAFETY: `a` is a valid uti_import.
        unsafe { uti_import(self.fd.as_raw_fd(), &mut a) }?;
        Ok(a.id)
    }

    /// vmap the dma-buf in the kernel; returns the vmap's id.
    pub fn vmap(&self, dmabuf: &impl AsRawFd) -> Result<u32, Errno> {
        let mut a = UtiImport { fd: dmabuf.as_raw_fd(), ..Default::default() };
        // SAFETY: `a` is a valid uti_import.
        unsafe { uti_vmap(self.fd.as_raw_fd(), &mut a) }?;
        Ok(a.id)
    }

    /// The PFNs of the first `count` pages of an import's DMA mapping (a dynamic import
    /// that was invalidated maps again first).
    pub fn view(&self, id: u32, count: u64) -> Result<ImporterView, Errno> {
        let mut pfns = vec![0u64; count as usize];
        let mut a = UtiPfns { id, count, pfns: pfns.as_mut_ptr() as u64, ..Default::default() };
        // SAFETY: `a` is a valid uti_pfns whose output has room for `count` u64s.
        unsafe { uti_pfns(self.fd.as_raw_fd(), &mut a) }?;
        Ok(ImporterView { pfns, invalidations: a.invalidations, remaps: a.remaps })
    }

    /// Read `len` bytes at `offset` through a vmap.
    pub fn vread(&self, id: u32, offset: u64, len: u64) -> Result<Vec<u8>, Errno> {
        let mut v = vec![0u8; len as usize];
        let a = UtiVread { id, pad: 0, offset, len, buf: v.as_mut_ptr() as u64 };
        // SAFETY: `a` is a valid uti_vread whose buffer has room for `len` bytes.
        unsafe { uti_vread(self.fd.as_raw_fd(), &a) }?;
        Ok(v)
    }

    /// Unmap and detach an import (unpinning a static one), or vunmap a vmap.
    pub fn release(&self, id: u32) -> Result<(), Errno> {
        // SAFETY: a valid u32 argument.
        unsafe { uti_release(self.fd.as_raw_fd(), &id) }.map(drop)
    }
}
