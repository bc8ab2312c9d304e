//! A real importer: vgem (built into the test kernel) imports the dma-buf with
//! DRM_IOCTL_PRIME_FD_TO_HANDLE, which attaches to it. In 7.2 vgem imports with
//! drm_gem_shmem_prime_import_no_map(): it attaches but never maps (nor pins) the
//! dma-buf; the mapping, pin and vmap paths are exercised with the tests' own importer,
//! ulive_importer (importer_client.rs). The import holds the buffer: exporting the
//! handle back (PRIME_HANDLE_TO_FD) gives the same dma-buf, with its content, even after
//! the user closed every fd of their own.

use super::common::*;
use super::{cases, Suite};
use crate::ktap::CaseResult;
use anyhow::{bail, ensure, Context, Result};
use nix::errno::Errno;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

pub fn suite() -> Suite {
    Suite::new(
        "vgem-import",
        cases![
            vgem_node_found,
            import_shmem,
            import_hugetlb,
            import_list,
            import_outlives_user_fds
        ],
    )
}

// include/uapi/drm/drm.h
#[repr(C)]
struct DrmVersion {
    version_major: i32,
    version_minor: i32,
    version_patchlevel: i32,
    name_len: usize,
    name: *mut u8,
    date_len: usize,
    date: *mut u8,
    desc_len: usize,
    desc: *mut u8,
}

#[repr(C)]
#[derive(Default)]
struct DrmPrimeHandle {
    handle: u32,
    flags: u32,
    fd: i32,
}

#[repr(C)]
struct DrmGemClose {
    handle: u32,
    pad: u32,
}

nix::ioctl_readwrite!(drm_ioctl_version, b'd', 0x00, DrmVersion);
nix::ioctl_write_ptr!(drm_ioctl_gem_close, b'd', 0x09, DrmGemClose);
nix::ioctl_readwrite!(drm_ioctl_prime_handle_to_fd, b'd', 0x2d, DrmPrimeHandle);
nix::ioctl_readwrite!(drm_ioctl_prime_fd_to_handle, b'd', 0x2e, DrmPrimeHandle);

const DRM_CLOEXEC: u32 = nix::libc::O_CLOEXEC as u32;
const DRM_RDWR: u32 = nix::libc::O_RDWR as u32;

/// The driver name a DRM node reports through DRM_IOCTL_VERSION.
fn driver_name(fd: &OwnedFd) -> Result<String, Errno> {
    let mut name = [0u8; 64];
    let mut v = DrmVersion {
        version_major: 0,
        version_minor: 0,
        version_patchlevel: 0,
        name_len: name.len(),
        name: name.as_mut_ptr(),
        date_len: 0,
        date: std::ptr::null_mut(),
        desc_len: 0,
        desc: std::ptr::null_mut(),
    };
    // SAFETY: `v` points at a buffer of `name_len` bytes; date/desc have length 0.
    unsafe { drm_ioctl_version(fd.as_raw_fd(), &mut v) }?;
    let n = v.name_len.min(name.len());
    Ok(String::from_utf8_lossy(&name[..n]).into_owned())
}

/// Open the vgem node: the first /dev/dri node whose driver says "vgem".
pub(super) fn open_vgem() -> Result<OwnedFd> {
    let mut seen = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir("/dev/dri")
        .context("/dev/dri")?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        let Ok(f) = std::fs::OpenOptions::new().read(true).write(true).open(&p) else {
            continue;
        };
        let fd: OwnedFd = f.into();
        match driver_name(&fd) {
            Ok(n) if n == "vgem" => return Ok(fd),
            Ok(n) => seen.push(format!("{} ({n})", p.display())),
            Err(e) => seen.push(format!("{} ({e})", p.display())),
        }
    }
    bail!("no vgem node in /dev/dri (saw: {})", seen.join(", "))
}

pub(super) fn fd_to_handle(drm: &OwnedFd, dmabuf: &impl AsRawFd) -> Result<u32, Errno> {
    let mut a = DrmPrimeHandle {
        handle: 0,
        flags: 0,
        fd: dmabuf.as_raw_fd(),
    };
    // SAFETY: `a` is a valid drm_prime_handle.
    unsafe { drm_ioctl_prime_fd_to_handle(drm.as_raw_fd(), &mut a) }?;
    Ok(a.handle)
}

pub(super) fn handle_to_fd(drm: &OwnedFd, handle: u32) -> Result<OwnedFd, Errno> {
    let mut a = DrmPrimeHandle {
        handle,
        flags: DRM_CLOEXEC | DRM_RDWR,
        fd: -1,
    };
    // SAFETY: `a` is a valid drm_prime_handle.
    unsafe { drm_ioctl_prime_handle_to_fd(drm.as_raw_fd(), &mut a) }?;
    udmabuf_live_uapi::sys::own(Ok(a.fd))
}

pub(super) fn gem_close(drm: &OwnedFd, handle: u32) -> Result<(), Errno> {
    let a = DrmGemClose { handle, pad: 0 };
    // SAFETY: `a` is a valid drm_gem_close.
    unsafe { drm_ioctl_gem_close(drm.as_raw_fd(), &a) }.map(drop)
}

fn vgem_node_found() -> CaseResult {
    open_vgem()?;
    Ok(())
}

/// Import, import again (same handle: DRM dedups by dma-buf), export back (the same
/// dma-buf: same size and content), close the handle, and check it is gone.
fn import_and_check(what: &str, dmabuf: &OwnedFd, content: &[u8]) -> Result<()> {
    let drm = open_vgem()?;
    let size = content.len() as u64;
    let h = fd_to_handle(&drm, dmabuf).with_context(|| format!("{what}: PRIME_FD_TO_HANDLE"))?;
    ensure!(h != 0, "{what}: handle 0");
    let h2 =
        fd_to_handle(&drm, dmabuf).with_context(|| format!("{what}: second PRIME_FD_TO_HANDLE"))?;
    ensure!(h2 == h, "{what}: second import gave handle {h2}, first {h}");
    let back = handle_to_fd(&drm, h).with_context(|| format!("{what}: PRIME_HANDLE_TO_FD"))?;
    ensure!(
        dmabuf_size(&back)? == size,
        "{what}: exported-back dma-buf has size {}, expected {size}",
        dmabuf_size(&back)?
    );
    let view = map_shared(&back, size)?;
    expect_bytes(
        &format!("{what}: content through the exported-back fd"),
        &view.read(0, size),
        content,
    )?;
    drop(view);
    drop(back);
    gem_close(&drm, h).with_context(|| format!("{what}: GEM_CLOSE"))?;
    let again = gem_close(&drm, h);
    ensure!(
        again == Err(Errno::EINVAL),
        "{what}: second GEM_CLOSE gave {again:?}, expected EINVAL (handle gone)"
    );
    Ok(())
}

fn import_shmem() -> CaseResult {
    let b = filled_buffer(Backing::Shmem, 16 * ps(), 20, 0)?;
    import_and_check("shmem buffer", &b.dmabuf, &pattern(20, 16 * ps()))?;
    Ok(())
}

fn import_hugetlb() -> CaseResult {
    let b = filled_buffer(Backing::Hugetlb, 2 * HUGE_PAGE, 21, 0)?;
    import_and_check("hugetlb buffer", &b.dmabuf, &pattern(21, 2 * HUGE_PAGE))?;
    Ok(())
}

fn import_list() -> CaseResult {
    let dev = open_device(&test_device())?;
    let a = memfd(Backing::Shmem, 4 * ps())?;
    let h = memfd(Backing::Hugetlb, HUGE_PAGE)?;
    fill_memfd(&a, 4 * ps(), 0, &pattern(22, 4 * ps()))?;
    fill_memfd(&h, HUGE_PAGE, 0, &pattern(23, HUGE_PAGE))?;
    let buf = create_list(
        dev.as_fd(),
        0,
        &[
            item(&h, HUGE_PAGE - 2 * ps(), 2 * ps()),
            item(&a, ps(), 3 * ps()),
        ],
    )
    .context("mixed list")?;
    let mut want = pattern(23, HUGE_PAGE)[(HUGE_PAGE - 2 * ps()) as usize..].to_vec();
    want.extend_from_slice(&pattern(22, 4 * ps())[ps() as usize..]);
    import_and_check("list buffer", &buf, &want)?;
    Ok(())
}

/// The importer's reference keeps the buffer (and its pages) alive after the user closed
/// the dma-buf fd, the memfd and the device.
fn import_outlives_user_fds() -> CaseResult {
    let drm = open_vgem()?;
    let size = 2 * HUGE_PAGE;
    let b = filled_buffer(Backing::Hugetlb, size, 24, 0)?;
    let h = fd_to_handle(&drm, &b.dmabuf).context("PRIME_FD_TO_HANDLE")?;
    drop(b);
    let back = handle_to_fd(&drm, h).context("PRIME_HANDLE_TO_FD after closing every user fd")?;
    ensure!(
        dmabuf_size(&back)? == size,
        "size changed after closing the user fds"
    );
    let view = map_shared(&back, size)?;
    expect_bytes(
        "content held by the importer",
        &view.read(0, size),
        &pattern(24, size),
    )?;
    drop(view);
    drop(back);
    gem_close(&drm, h).context("GEM_CLOSE")?;
    Ok(())
}
