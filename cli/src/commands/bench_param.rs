//! The bench's hold on our module parameters (`/sys/module/udmabuf_live/parameters`):
//! a measurement sets one for its duration and the old value comes back on drop, even
//! when the measurement fails half-way.

use anyhow::{Context, Result};
use std::path::PathBuf;

/// Where the module's parameters live.
const DIR: &str = "/sys/module/udmabuf_live/parameters";

fn path(name: &str) -> PathBuf {
    PathBuf::from(DIR).join(name)
}

/// Whether the loaded module has the parameter `name`.
pub fn exists(name: &str) -> bool {
    path(name).exists()
}

/// The parameter `path` holds `value` until this is dropped; then it holds what it held.
pub struct Override {
    path: PathBuf,
    old: String,
}

impl Override {
    pub fn set(name: &str, value: &str) -> Result<Self> {
        let path = path(name);
        let old = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        std::fs::write(&path, value).with_context(|| format!("write {value} to {}", path.display()))?;
        Ok(Self { path, old: old.trim().to_owned() })
    }
}

impl Drop for Override {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.path, &self.old);
    }
}
