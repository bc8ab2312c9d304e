//! Helpers shared by the suites: finding and loading the modules, preconditions, and
//! assertions with context.

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use std::ffi::CString;
use std::path::{Path, PathBuf};

/// A test's precondition is missing (no module file, no huge pages, no debugfs, not
/// root). The runner reports the case as skipped with this reason, never as failed.
#[derive(Debug)]
pub struct Precondition(pub String);

impl std::fmt::Display for Precondition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Precondition {}

/// An error that makes the case a skip (see [`Precondition`]).
pub fn precondition(why: impl Into<String>) -> anyhow::Error {
    Precondition(why.into()).into()
}

/// End the case as skipped (`ok N case # SKIP why`), with a `format!` message: a missing
/// precondition.
macro_rules! skip {
    ($($arg:tt)*) => {
        return Err($crate::util::precondition(format!($($arg)*)))
    };
}

/// The reason, if `e` (or anything in its chain) is a missing precondition.
pub fn precondition_of(e: &anyhow::Error) -> Option<String> {
    e.chain()
        .find_map(|c| c.downcast_ref::<Precondition>())
        .map(|p| p.0.clone())
}

/// Where a module's `.ko` is looked for, in order: `$ULIVE_MODULE_DIR`, the `modules/`
/// directory next to this program (the installed kselftest collection), and
/// `/lib/modules/` (the test guest's initramfs).
pub fn module_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("ULIVE_MODULE_DIR") {
        dirs.push(PathBuf::from(d));
    }
    if let Some(d) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|p| p.join("modules")))
    {
        dirs.push(d);
    }
    dirs.push(PathBuf::from("/lib/modules"));
    dirs
}

/// The `.ko` file of module `name` (file name `name.ko`), if one is found.
pub fn module_file(name: &str) -> Option<PathBuf> {
    module_dirs()
        .into_iter()
        .map(|d| d.join(format!("{name}.ko")))
        .find(|p| p.is_file())
}

/// Like [`module_file`], but a missing file is a [`Precondition`] error.
pub fn require_module_file(name: &str) -> Result<PathBuf> {
    module_file(name).ok_or_else(|| {
        let dirs: Vec<String> = module_dirs()
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        precondition(format!(
            "no {name}.ko in {} (set ULIVE_MODULE_DIR)",
            dirs.join(", ")
        ))
    })
}

/// `finit_module` the module file of `name`; `EEXIST` (already loaded) is fine.
pub fn insmod(name: &str) -> Result<()> {
    let path = require_module_file(name)?;
    let f = std::fs::File::open(&path).with_context(|| format!("open {}", path.display()))?;
    match nix::kmod::finit_module(&f, &CString::default(), nix::kmod::ModuleInitFlags::empty()) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("finit_module({})", path.display())),
    }
}

/// `finit_module` the module unless it is already loaded.
pub fn load_module() -> Result<()> {
    if is_loaded() {
        return Ok(());
    }
    insmod(udmabuf_live_uapi::MODULE_NAME)
}

/// Before a suite that needs the module: load it if it is not loaded. No module file
/// to load is a [`Precondition`]; a file that does not load is an error.
pub fn ensure_module() -> Result<()> {
    load_module()
}

/// Set the module's repopulation policy (`lazy` or `eager`), which every suite runs under.
pub fn set_repopulate(policy: &str) -> Result<()> {
    let p = Path::new("/sys/module")
        .join(udmabuf_live_uapi::MODULE_NAME)
        .join("parameters/repopulate");
    std::fs::write(&p, policy).with_context(|| format!("setting {} to {policy}", p.display()))
}

/// Root is a precondition of every suite: they load modules, use hugetlbfs and drop
/// privileges on purpose.
pub fn require_root() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(precondition(
            "not root: the suites load modules and change credentials (run as root)",
        ));
    }
    Ok(())
}

pub fn unload_module() -> Result<(), Errno> {
    let name = CString::new(udmabuf_live_uapi::MODULE_NAME).map_err(|_| Errno::EINVAL)?;
    nix::kmod::delete_module(&name, nix::kmod::DeleteModuleFlags::O_NONBLOCK)
}

pub fn is_loaded() -> bool {
    Path::new("/sys/module")
        .join(udmabuf_live_uapi::MODULE_NAME)
        .exists()
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

/// Poll `cond` every 5 ms for up to `secs` seconds; true as soon as it holds, else what a
/// last look after the deadline says.
pub fn wait_for(secs: u64, mut cond: impl FnMut() -> Result<bool>) -> Result<bool> {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if cond()? {
            return Ok(true);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    cond()
}
