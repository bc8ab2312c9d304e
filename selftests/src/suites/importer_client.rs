//! The userspace side of the tests' dma-buf importer, `ulive_importer`
//! (`selftests/importer/`, `/dev/ulive-importer`, ABI in `selftests/importer/abi/` (crate `ulive-importer-abi`)).
//!
//! vgem in 7.2 only attaches on PRIME import (drm_gem_shmem_prime_import_no_map): it
//! never maps, pins or vmaps a dma-buf. This importer does, as drivers do: a static
//! attachment (the dma-buf core pins the buffer at map), a dynamic one
//! (invalidate_mappings, never pinned; maps again after an invalidation) and a kernel
//! vmap. One open file holds one attachment (and at most one vmap of it), so every
//! holder of a buffer is its own [`Importer`], as every importing driver has its own.
//!
//! The `importer` suite drives the ioctls one by one; the live suites use the helpers
//! ([`Importer::import`], [`Importer::import_vmap`], [`Importer::view`],
//! [`Importer::vread_all`], [`Importer::release`]).

use anyhow::{ensure, Context, Result};
use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use ulive_importer_abi::{client, IMPORTER_DEVICE_NAME, IMPORTER_MODULE_NAME, IMPORTER_PFNS_DMA};

pub fn device_path() -> String {
    format!("/dev/{IMPORTER_DEVICE_NAME}")
}

/// Whether `ulive_importer` is loaded.
pub fn loaded() -> bool {
    Path::new("/sys/module").join(IMPORTER_MODULE_NAME).exists()
}

/// Load the module from its `.ko` (crate::util::module_dirs; already loaded is fine). No
/// file to load is a missing precondition: the case skips.
pub fn load() -> Result<()> {
    crate::util::insmod(IMPORTER_MODULE_NAME)
        .context("load ulive_importer ('make importer' builds it)")
}

/// Load the module unless it is loaded; true if this call loaded it (the caller then
/// unloads it with [`unload`] when done).
pub fn ensure_loaded() -> Result<bool> {
    if loaded() {
        return Ok(false);
    }
    load()?;
    Ok(true)
}

/// Unload the module (every importer file must be closed).
pub fn unload() -> Result<()> {
    let name = CString::new(IMPORTER_MODULE_NAME)?;
    nix::kmod::delete_module(&name, nix::kmod::DeleteModuleFlags::O_NONBLOCK)
        .context("delete_module(ulive_importer)")?;
    Ok(())
}

/// How an import attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    /// No importer ops: the dma-buf core pins the buffer while it is mapped.
    Static,
    /// With invalidate_mappings: never pinned; told when the pages move.
    Dynamic,
}

/// What an importer's mapping showed: its PFNs and its invalidation history.
#[derive(Debug)]
pub struct ImporterView {
    pub pfns: Vec<u64>,
    pub invalidations: u64,
    pub remaps: u64,
}

/// An open file of `/dev/ulive-importer` (the ioctls, one by one, are those of
/// [`ulive_importer_abi::client::Importer`], reached through `Deref`). Closing it (drop)
/// vunmaps, unmaps, detaches and drops the dma-buf reference, as DETACH does.
pub struct Importer(client::Importer);

impl std::ops::Deref for Importer {
    type Target = client::Importer;

    fn deref(&self) -> &client::Importer {
        &self.0
    }
}

impl Importer {
    /// Open the device, loading the module first if its node is missing (the `importer`
    /// suite unloads it at its end; the live suites come later).
    pub fn open() -> Result<Self> {
        let path = device_path();
        if !Path::new(&path).exists() {
            load()?;
        }
        Ok(Self(
            client::Importer::open(Path::new(&path)).with_context(|| format!("open {path}"))?,
        ))
    }

    /// The open importer file itself (the fuzzer passes it where a dma-buf is expected).
    pub fn into_file(self) -> File {
        self.0.into_file()
    }

    // ---- what the live suites do with it ----

    /// Attach to `dmabuf` and map it for DMA, as a driver's import does: a static import
    /// pins the buffer (at the map), a dynamic one is told when its pages move. A map that
    /// fails detaches again.
    pub fn import(&self, dmabuf: &impl AsRawFd, how: Attach) -> Result<()> {
        self.attach(dmabuf.as_raw_fd(), how == Attach::Dynamic)
            .context("ATTACH")?;
        if let Err(e) = self.map() {
            let _ = self.detach();
            return Err(e).context("MAP");
        }
        Ok(())
    }

    /// A kernel vmap of `dmabuf`: a static attachment that is never mapped (so nothing is
    /// pinned), and VMAP. A VMAP that fails detaches again.
    pub fn import_vmap(&self, dmabuf: &impl AsRawFd) -> Result<()> {
        self.attach(dmabuf.as_raw_fd(), false).context("ATTACH")?;
        if let Err(e) = self.vmap() {
            let _ = self.detach();
            return Err(e).context("VMAP");
        }
        Ok(())
    }

    /// The PFNs of the first `count` pages of the import's DMA mapping (the DMA addresses
    /// a device would be given: physical in the test guest, which has no IOMMU), with
    /// its invalidation history. A dynamic import whose mapping was invalidated maps
    /// again first.
    pub fn view(&self, count: u64) -> Result<ImporterView> {
        let mut pfns = vec![0u64; count as usize];
        let mut done = 0;
        while done < pfns.len() {
            let n = self
                .pfns(done as u64, &mut pfns[done..], IMPORTER_PFNS_DMA)
                .context("PFNS")?;
            ensure!(n > 0, "PFNS returned no PFN at page {done} of {count}");
            done += n;
        }
        let s = self.stats().context("STATS")?;
        Ok(ImporterView {
            pfns,
            invalidations: s.invalidations,
            remaps: s.remaps,
        })
    }

    /// `len` bytes at `offset` through the vmap (in pieces of at most
    /// IMPORTER_READ_MAX).
    pub fn vread_all(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut v = vec![0u8; len as usize];
        let mut done = 0;
        while done < v.len() {
            let n = self
                .vread(offset as usize + done, &mut v[done..])
                .with_context(|| format!("VREAD at {:#x}", offset as usize + done))?;
            ensure!(
                n > 0,
                "VREAD returned nothing at {:#x} ({len} bytes wanted)",
                offset as usize + done
            );
            done += n;
        }
        Ok(v)
    }

    /// Unmap and detach the import (unpinning a static one), or vunmap a vmap.
    pub fn release(&self) -> nix::Result<()> {
        self.detach()
    }
}
