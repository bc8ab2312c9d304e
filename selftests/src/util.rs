//! Helpers shared by the suites: module load/unload and assertions with context.

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use std::ffi::CString;
use std::path::Path;

pub const MODULE_PATH: &str = "/lib/modules/udmabuf_live.ko";

/// `finit_module` the module unless it is already loaded.
pub fn load_module() -> Result<()> {
    if is_loaded() {
        return Ok(());
    }
    let f = std::fs::File::open(MODULE_PATH).with_context(|| format!("open {MODULE_PATH}"))?;
    nix::kmod::finit_module(&f, &CString::default(), nix::kmod::ModuleInitFlags::empty())
        .with_context(|| format!("finit_module({MODULE_PATH})"))?;
    Ok(())
}

pub fn unload_module() -> Result<(), Errno> {
    let name = CString::new(udmabuf_live_uapi::MODULE_NAME).map_err(|_| Errno::EINVAL)?;
    nix::kmod::delete_module(&name, nix::kmod::DeleteModuleFlags::O_NONBLOCK)
}

pub fn is_loaded() -> bool {
    Path::new("/sys/module").join(udmabuf_live_uapi::MODULE_NAME).exists()
}

pub fn device_path() -> String {
    format!("/dev/{}", udmabuf_live_uapi::DEVICE_NAME)
}

/// Fail with both values when they differ.
pub fn expect_eq<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Result<()> {
    if got != want {
        bail!("{what}: got {got:?}, expected {want:?}");
    }
    Ok(())
}
