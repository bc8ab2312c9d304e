//! Opening the udmabuf-live device and describing the module behind it, with errors
//! that say what to do next.

use crate::exit::CtlError;
use anyhow::Result;
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Open `path` read-write, turning the common failures into actionable errors.
pub fn open(path: &Path) -> Result<File> {
    OpenOptions::new().read(true).write(true).open(path).map_err(|e| {
        let p = path.display();
        let ours = path.file_name().is_some_and(|n| n == udmabuf_live_uapi::DEVICE_NAME);
        match e.kind() {
            ErrorKind::NotFound if !ours => CtlError::NoDevice(format!(
                "{p} does not exist (the kernel's own driver needs CONFIG_UDMABUF=y; udmabuf-live's node is /dev/{})",
                udmabuf_live_uapi::DEVICE_NAME
            ))
            .into(),
            ErrorKind::NotFound if !module_loaded() => CtlError::NoDevice(format!(
                "{p} does not exist: the udmabuf_live module is not loaded (try: insmod udmabuf_live.ko)"
            ))
            .into(),
            ErrorKind::NotFound => CtlError::NoDevice(format!(
                "{p} does not exist although the module is loaded: is devtmpfs mounted on /dev?"
            ))
            .into(),
            ErrorKind::PermissionDenied => CtlError::Permission(format!(
                "cannot open {p}: permission denied (run as root or get access to the device node)"
            ))
            .into(),
            _ => anyhow::Error::new(e).context(format!("cannot open {p}")),
        }
    })
}

pub fn module_loaded() -> bool {
    module_dir().exists()
}

fn module_dir() -> PathBuf {
    Path::new("/sys/module").join(udmabuf_live_uapi::MODULE_NAME)
}

#[derive(Serialize, Debug)]
pub struct ModuleInfo {
    pub name: &'static str,
    pub loaded: bool,
    /// Open references (from /sys/module/NAME/refcnt).
    pub refcnt: Option<u64>,
    /// Module parameters (name -> value) from /sys/module/NAME/parameters.
    pub parameters: std::collections::BTreeMap<String, String>,
}

pub fn module_info() -> ModuleInfo {
    let dir = module_dir();
    let read = |p: PathBuf| std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned());
    let mut parameters = std::collections::BTreeMap::new();
    if let Ok(rd) = std::fs::read_dir(dir.join("parameters")) {
        for e in rd.flatten() {
            if let Some(v) = read(e.path()) {
                parameters.insert(e.file_name().to_string_lossy().into_owned(), v);
            }
        }
    }
    ModuleInfo {
        name: udmabuf_live_uapi::MODULE_NAME,
        loaded: dir.exists(),
        refcnt: read(dir.join("refcnt")).and_then(|s| s.parse().ok()),
        parameters,
    }
}

#[derive(Serialize, Debug)]
pub struct DeviceInfo {
    pub path: String,
    pub major: u64,
    pub minor: u64,
}

pub fn device_info(path: &Path, file: &File) -> Result<DeviceInfo> {
    let md = file.metadata()?;
    Ok(DeviceInfo {
        path: path.display().to_string(),
        major: nix::sys::stat::major(md.rdev()),
        minor: nix::sys::stat::minor(md.rdev()),
    })
}
