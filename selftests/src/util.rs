//! The helpers every suite shares, in one place: preconditions and `skip!`; kernel
//! modules (finding, loading, unloading, their reference count); processes (a function
//! run in a forked child, polling); seeded random numbers and the knobs of the hardening
//! suites; assertions with context.

use anyhow::{bail, ensure, Context, Result};
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

// ---- processes -------------------------------------------------------------------------

/// Run `f` in a forked child and return what it reported: Ok if it returned Ok and
/// exited 0. The runner is single-threaded when this is called (threads are joined),
/// so the child may allocate.
pub fn in_child(what: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    use nix::errno::Errno;
    use nix::libc;
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};
    use std::os::fd::AsRawFd;
    let (r, w) = nix::unistd::pipe().context("pipe")?;
    // SAFETY: single-threaded here; the child leaves through _exit.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Child => {
            drop(r);
            let msg = match f() {
                Ok(()) => "ok".to_owned(),
                Err(e) => format!("{e:#}"),
            };
            let _ = nix::unistd::write(&w, msg.as_bytes());
            // SAFETY: leaves the child without running the parent's destructors.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(w);
            let mut msg = Vec::new();
            let mut chunk = [0u8; 512];
            loop {
                match nix::unistd::read(r.as_raw_fd(), &mut chunk) {
                    Ok(0) => break,
                    Ok(n) => msg.extend_from_slice(&chunk[..n]),
                    Err(Errno::EINTR) => continue,
                    Err(e) => return Err(e).context("read the child's report"),
                }
            }
            let status = waitpid(child, None).context("waitpid")?;
            let msg = String::from_utf8_lossy(&msg).into_owned();
            ensure!(
                status == WaitStatus::Exited(child, 0),
                "{what}: child ended with {status:?} (report: {msg:?})"
            );
            ensure!(msg == "ok", "{what}: in the child: {msg}");
            Ok(())
        }
    }
}

// ---- random numbers and knobs ----------------------------------------------------------

/// SplitMix64: tiny, seedable, good enough to drive test inputs; the same seed always
/// gives the same sequence, so a failing fuzz case can be replayed from its seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// Uniform in `0..n` (`n > 0`); the tiny modulo bias does not matter here.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// A numeric knob from the environment (the guest init exports the `ulive.*` kernel
/// command-line options as these variables; see selftests/guest/init). Decimal or 0x hex.
pub fn env_u64(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(s) if !s.trim().is_empty() => {
            let s = s.trim();
            let v = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            v.with_context(|| format!("{name}={s:?} is not a number"))
        }
        _ => Ok(default),
    }
}

/// `/sys/module/<name>/refcnt`.
pub fn module_refcnt(module: &str) -> Result<u64> {
    let p = format!("/sys/module/{module}/refcnt");
    let s = std::fs::read_to_string(&p).with_context(|| format!("read {p}"))?;
    s.trim().parse().with_context(|| format!("{p}: {s:?}"))
}

/// Count of each outcome, printed as one diagnostic line ("OK=12 EINVAL=3 ...").
#[derive(Default, Debug)]
pub struct Histogram(std::collections::BTreeMap<String, u64>);

impl Histogram {
    pub fn add(&mut self, key: impl Into<String>) {
        *self.0.entry(key.into()).or_default() += 1;
    }

    pub fn render(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The outcome key of an ioctl result: "OK" or the errno's name.
pub fn outcome_key<T>(r: &Result<T, nix::errno::Errno>) -> String {
    match r {
        Ok(_) => "OK".into(),
        Err(e) => format!("{e:?}"),
    }
}

/// A small deterministic generator (xorshift64*), for the live suites' page choices: the
/// same pages every run.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let a: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..8).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..8).map(|_| r.next_u64()).collect()
        };
        let c: Vec<u64> = {
            let mut r = Rng::new(8);
            (0..8).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut r = Rng::new(1);
        assert!((0..1000).all(|_| r.below(10) < 10));
    }

    #[test]
    fn histogram_renders_sorted() {
        let mut h = Histogram::default();
        h.add("OK");
        h.add("EINVAL");
        h.add("OK");
        assert_eq!(h.render(), "EINVAL=1 OK=2");
        assert_eq!(outcome_key::<()>(&Err(nix::errno::Errno::EBADFD)), "EBADFD");
    }
}
