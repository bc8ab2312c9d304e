//! The module must not unload while anything still uses its code: a live dma-buf (its ops
//! live in the module), a mapping of one, an importer's reference, an open device fd.
//! delete_module(O_NONBLOCK) on a module with references fails with EWOULDBLOCK in 7.2
//! (kernel/module/main.c try_stop_module; EBUSY is only for modules others depend on) and
//! the module stays. Once the last holder is gone its refcount is back where it was, so
//! the later `module-unload` suite can unload it. Only meaningful for our device.

use super::common::*;
use super::{cases, vgem, Require, Suite};
use crate::ktap::CaseResult;
use crate::util::{is_loaded, unload_module};
use anyhow::{bail, ensure, Context, Result};
use nix::errno::Errno;
use std::os::fd::AsFd;

pub fn suite() -> Suite {
    Suite::new(
        "unload-busy",
        cases![
            refused_while_buffer_lives,
            refused_while_mapping_lives,
            refused_while_importer_holds_buffer,
            refused_while_device_open,
        ],
    )
    .requires(&[Require::LiveDevice, Require::Check(module_is_loaded)])
}

fn refcnt() -> Result<u64> {
    let p = format!("/sys/module/{}/refcnt", udmabuf_live_uapi::MODULE_NAME);
    let s = std::fs::read_to_string(&p).with_context(|| format!("read {p}"))?;
    s.trim().parse().with_context(|| format!("{p}: {s:?}"))
}

/// The module must be there (a refused unload leaves it loaded; one that went through is
/// a failure, not a skip).
fn module_is_loaded() -> Result<()> {
    ensure!(
        is_loaded(),
        "{} is not loaded",
        udmabuf_live_uapi::MODULE_NAME
    );
    Ok(())
}

/// Unload must be refused with EWOULDBLOCK and leave the module and its device in place.
fn expect_refused(holder: &str) -> Result<()> {
    match unload_module() {
        Ok(()) => bail!("delete_module succeeded while {holder}"),
        Err(e) if e == Errno::EWOULDBLOCK => {}
        Err(e) => bail!("delete_module while {holder}: {e}, expected EWOULDBLOCK"),
    }
    ensure!(is_loaded(), "module gone after a refused unload ({holder})");
    ensure!(
        std::path::Path::new(&test_device()).exists(),
        "device node gone after a refused unload ({holder})"
    );
    Ok(())
}

fn expect_refcnt(what: &str, want: u64) -> Result<()> {
    let got = refcnt()?;
    ensure!(got == want, "{what}: module refcnt {got}, expected {want}");
    Ok(())
}

/// Only the dma-buf is left (device fd and memfd closed): unload refused; the buffer still
/// works; after closing it the refcount is back.
fn refused_while_buffer_lives() -> CaseResult {
    let base = refcnt()?;
    let size = 4 * ps();
    let Buffer { dmabuf, memfd, .. } = filled_buffer(Backing::Shmem, size, 40, 0)?;
    drop(memfd);
    ensure!(
        refcnt()? > base,
        "a live dma-buf does not hold a module reference (refcnt {base})"
    );
    expect_refused("a dma-buf is open")?;
    let view = map_shared(&dmabuf, size)?;
    expect_bytes(
        "buffer after the refused unload",
        &view.read(0, size),
        &pattern(40, size),
    )?;
    drop(view);
    drop(dmabuf);
    expect_refcnt("after closing the dma-buf", base)?;
    Ok(())
}

/// Only a mapping is left (every fd closed).
fn refused_while_mapping_lives() -> CaseResult {
    let base = refcnt()?;
    let size = 2 * HUGE_PAGE;
    let b = filled_buffer(Backing::Hugetlb, size, 41, 0)?;
    let view = map_shared(&b.dmabuf, size)?;
    drop(b);
    expect_refused("only a mapping of a dma-buf is left")?;
    expect_bytes(
        "mapping after the refused unload",
        &view.read(0, size),
        &pattern(41, size),
    )?;
    drop(view);
    expect_refcnt("after unmapping", base)?;
    Ok(())
}

/// Only vgem's import is left.
fn refused_while_importer_holds_buffer() -> CaseResult {
    let base = refcnt()?;
    let drm = vgem::open_vgem()?;
    let b = filled_buffer(Backing::Shmem, 8 * ps(), 42, 0)?;
    let h = vgem::fd_to_handle(&drm, &b.dmabuf).context("PRIME_FD_TO_HANDLE")?;
    drop(b);
    expect_refused("vgem holds the only reference")?;
    vgem::gem_close(&drm, h).context("GEM_CLOSE")?;
    drop(drm);
    expect_refcnt("after vgem released it", base)?;
    Ok(())
}

/// An open device fd (no buffer) also pins the module.
fn refused_while_device_open() -> CaseResult {
    let base = refcnt()?;
    let dev = open_device(&test_device())?;
    expect_refused("the device is open")?;
    // The device still answers after the refused unload: a create works.
    let m = memfd(Backing::Shmem, ps())?;
    let buf =
        create(dev.as_fd(), &m, 0, ps(), 0).context("UDMABUF_CREATE after the refused unload")?;
    drop((buf, m, dev));
    expect_refcnt("after closing the device", base)?;
    Ok(())
}
