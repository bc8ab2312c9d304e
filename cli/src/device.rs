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
            ErrorKind::NotFound => {
                CtlError::NoDevice(format!("{p} does not exist although the module is loaded: is devtmpfs mounted on /dev?"))
                    .into()
            }
            ErrorKind::PermissionDenied => {
                CtlError::Permission(format!("cannot open {p}: permission denied (run as root or get access to the device node)"))
                    .into()
            }
            _ => anyhow::Error::new(e).context(format!("cannot open {p}")),
        }
    })
}

pub fn module_loaded() -> bool {
    module_dir(Path::new(SYSFS), udmabuf_live_uapi::MODULE_NAME).exists()
}

/// Where sysfs is mounted; the functions that read it take the root as an argument so the
/// tests can point them at a fake tree.
pub const SYSFS: &str = "/sys";

fn module_dir(sysfs: &Path, module: &str) -> PathBuf {
    sysfs.join("module").join(module)
}

/// The device node of the driver that exported a dma-buf (`exp_name` in fdinfo).
pub fn node_for_exporter(exporter: &str) -> Option<PathBuf> {
    match exporter {
        udmabuf_live_uapi::MODULE_NAME => Some(PathBuf::from(format!("/dev/{}", udmabuf_live_uapi::DEVICE_NAME))),
        "udmabuf" => Some(PathBuf::from("/dev/udmabuf")),
        _ => None,
    }
}

/// The kernel's name of a character device (`DEVNAME` in /sys/dev/char/MAJ:MIN/uevent):
/// `udmabuf-live` or `udmabuf` for the two misc devices, whatever the node is called.
pub fn devname(sysfs: &Path, major: u64, minor: u64) -> Option<String> {
    let uevent = std::fs::read_to_string(sysfs.join(format!("dev/char/{major}:{minor}/uevent"))).ok()?;
    uevent.lines().find_map(|l| l.strip_prefix("DEVNAME=")).map(str::to_owned)
}

/// The module (or built-in driver) behind a misc device name: `udmabuf-live` ->
/// `udmabuf_live`, `udmabuf` -> `udmabuf`.
pub fn module_of_devname(devname: &str) -> String {
    devname.replace('-', "_")
}

/// The module behind a device node: from sysfs when the node is a character device it
/// knows, else guessed from the node's file name.
pub fn module_of_node(sysfs: &Path, path: &Path) -> String {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(md) = std::fs::metadata(path) {
        if md.file_type().is_char_device() {
            let (ma, mi) = (nix::sys::stat::major(md.rdev()), nix::sys::stat::minor(md.rdev()));
            if let Some(n) = devname(sysfs, ma, mi) {
                return module_of_devname(&n);
            }
        }
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    module_of_devname(&name)
}

/// A module parameter's text as JSON: `Y`/`N` as booleans, integers as numbers, anything
/// else as a string.
pub fn typed_param(text: &str) -> serde_json::Value {
    match text {
        "Y" => true.into(),
        "N" => false.into(),
        t => t
            .parse::<u64>()
            .map(serde_json::Value::from)
            .or_else(|_| t.parse::<i64>().map(serde_json::Value::from))
            .unwrap_or_else(|_| t.into()),
    }
}

/// A module parameter as text, if the module has it.
pub fn param(sysfs: &Path, module: &str, name: &str) -> Option<String> {
    std::fs::read_to_string(module_dir(sysfs, module).join("parameters").join(name)).ok().map(|s| s.trim().to_owned())
}

#[derive(Serialize, Debug)]
pub struct ModuleInfo {
    pub name: String,
    /// /sys/module/NAME exists (a loaded module, or a built-in driver with parameters).
    pub loaded: bool,
    /// Built into the kernel (no refcnt in sysfs).
    pub built_in: bool,
    /// Open references (from /sys/module/NAME/refcnt).
    pub refcnt: Option<u64>,
    /// Module parameters (name -> value) from /sys/module/NAME/parameters, typed.
    pub parameters: std::collections::BTreeMap<String, serde_json::Value>,
}

pub fn module_info(sysfs: &Path, module: &str) -> ModuleInfo {
    let dir = module_dir(sysfs, module);
    let read = |p: PathBuf| std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned());
    let mut parameters = std::collections::BTreeMap::new();
    if let Ok(rd) = std::fs::read_dir(dir.join("parameters")) {
        for e in rd.flatten() {
            if let Some(v) = read(e.path()) {
                parameters.insert(e.file_name().to_string_lossy().into_owned(), typed_param(&v));
            }
        }
    }
    let refcnt = read(dir.join("refcnt")).and_then(|s| s.parse().ok());
    ModuleInfo {
        name: module.to_owned(),
        loaded: dir.exists(),
        built_in: dir.exists() && !dir.join("refcnt").exists(),
        refcnt,
        parameters,
    }
}

#[derive(Serialize, Debug)]
pub struct DeviceInfo {
    pub path: String,
    pub major: u64,
    pub minor: u64,
    /// The kernel's name of the device (`udmabuf-live`, `udmabuf`), if sysfs knows it.
    pub devname: Option<String>,
}

pub fn device_info(path: &Path, file: &File) -> Result<DeviceInfo> {
    let md = file.metadata()?;
    let (major, minor) = (nix::sys::stat::major(md.rdev()), nix::sys::stat::minor(md.rdev()));
    Ok(DeviceInfo { path: path.display().to_string(), major, minor, devname: devname(Path::new(SYSFS), major, minor) })
}

#[cfg(test)]
pub mod tests {
    use super::*;

    pub fn fake_sysfs(tag: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("udmabuf-ctl-sysfs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("dev/char/10:125")).unwrap();
        std::fs::write(root.join("dev/char/10:125/uevent"), "MAJOR=10\nMINOR=125\nDEVNAME=udmabuf\n").unwrap();
        let p = root.join("module/udmabuf/parameters");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("size_limit_mb"), "64\n").unwrap();
        std::fs::write(p.join("list_limit"), "1024\n").unwrap();
        let p = root.join("module/udmabuf_live/parameters");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(root.join("module/udmabuf_live/refcnt"), "2\n").unwrap();
        std::fs::write(p.join("account_memlock"), "Y\n").unwrap();
        std::fs::write(p.join("size_limit_mb"), "256\n").unwrap();
        root
    }

    #[test]
    fn devices_are_named_by_sysfs() {
        let root = fake_sysfs("dev");
        assert_eq!(devname(&root, 10, 125).as_deref(), Some("udmabuf"));
        assert_eq!(devname(&root, 10, 126), None);
        assert_eq!(module_of_devname("udmabuf-live"), "udmabuf_live");
        // Not a character device: the name decides.
        assert_eq!(module_of_node(&root, Path::new("/nonexistent/udmabuf-live")), "udmabuf_live");
        assert_eq!(node_for_exporter("udmabuf_live").unwrap(), Path::new("/dev/udmabuf-live"));
        assert_eq!(node_for_exporter("udmabuf").unwrap(), Path::new("/dev/udmabuf"));
        assert_eq!(node_for_exporter("i915"), None);
    }

    /// `status --device /dev/udmabuf` describes udmabuf, not udmabuf_live.
    #[test]
    fn module_info_is_of_the_module_asked_for() {
        let root = fake_sysfs("mod");
        let m = module_info(&root, "udmabuf");
        assert_eq!(m.name, "udmabuf");
        assert!(m.loaded && m.built_in && m.refcnt.is_none());
        assert_eq!(m.parameters["size_limit_mb"], serde_json::json!(64));
        let l = module_info(&root, "udmabuf_live");
        assert!(l.loaded && !l.built_in);
        assert_eq!(l.refcnt, Some(2));
        assert_eq!(l.parameters["account_memlock"], serde_json::json!(true));
        assert!(!module_info(&root, "nothing").loaded);
    }

    #[test]
    fn parameters_are_typed() {
        assert_eq!(typed_param("1024"), serde_json::json!(1024));
        assert_eq!(typed_param("-1"), serde_json::json!(-1));
        assert_eq!(typed_param("Y"), serde_json::json!(true));
        assert_eq!(typed_param("N"), serde_json::json!(false));
        assert_eq!(typed_param("auto"), serde_json::json!("auto"));
    }
}
