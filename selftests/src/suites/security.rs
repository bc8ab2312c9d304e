//! Security: who may use the device, and how much memory a user may pin with it.
//! Upstream udmabuf lets any user of the device pin memory without limit; udmabuf-live
//! charges pinned pages to the creator's RLIMIT_MEMLOCK (module param `account_memlock`).

use super::common::*;
use super::{cases, Suite};
use crate::ktap::{CaseResult, Outcome};
use crate::util::*;
use anyhow::{bail, ensure, Context, Result};
use nix::errno::Errno;
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, setgid, setuid, ForkResult, Gid, Uid};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use udmabuf_live_uapi::*;

const NOBODY: u32 = 65534;

pub fn suite() -> Suite {
    Suite {
        name: "security",
        cases: cases![
            device_node_is_root_only,
            unprivileged_open_refused,
            memlock_limit_applies_to_unprivileged_creator,
            memlock_accounting_can_be_turned_off,
            pfns_needs_cap_sys_admin,
        ],
    }
}

fn live_only() -> Option<Outcome> {
    (test_device() != device_path()).then(|| Outcome::Skip("udmabuf-live's own behaviour".into()))
}

/// Run `f` in a child that dropped to uid/gid 65534 (no capabilities) with
/// RLIMIT_MEMLOCK at `memlock` bytes; the child's exit code is `f`'s result.
fn as_nobody(memlock: Option<u64>, f: impl FnOnce() -> i32) -> Result<i32> {
    // SAFETY: the test runner is single-threaded here; the child only makes syscalls
    // and exits without returning into the runner.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Child => {
            let code = (|| {
                if let Some(m) = memlock {
                    setrlimit(Resource::RLIMIT_MEMLOCK, m, m).ok()?;
                }
                setgid(Gid::from_raw(NOBODY)).ok()?;
                setuid(Uid::from_raw(NOBODY)).ok()?;
                Some(f())
            })()
            .unwrap_or(100);
            // SAFETY: leave the child at once, without running the parent's destructors.
            unsafe { nix::libc::_exit(code) }
        }
        ForkResult::Parent { child } => match waitpid(child, None)? {
            WaitStatus::Exited(_, code) => Ok(code),
            other => bail!("child ended with {other:?}"),
        },
    }
}

/// Temporarily make the device world-accessible, as an admin's udev rule would.
struct OpenDevice(u32);

impl OpenDevice {
    fn new() -> Result<Self> {
        let path = device_path();
        let mode = std::fs::metadata(&path)?.permissions().mode();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
        Ok(Self(mode))
    }
}

impl Drop for OpenDevice {
    fn drop(&mut self) {
        let _ = std::fs::set_permissions(device_path(), std::fs::Permissions::from_mode(self.0));
    }
}

/// The calling process's VmPin (pinned_vm, where the pins are charged) in KiB.
fn vmpin_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmPin:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Errno of UDMABUF_CREATE over a fresh sealed shmem memfd of `size` bytes, or 0.
fn try_create(size: u64) -> i32 {
    let Ok(dev) = open_device(&device_path()) else { return 90 };
    let Ok(m) = memfd(Backing::Shmem, size) else { return 91 };
    match create(dev.as_fd(), &m, 0, size, 0) {
        Ok(_) => 0,
        Err(e) => e as i32,
    }
}

fn device_node_is_root_only() -> CaseResult {
    if let Some(skip) = live_only() {
        return Ok(skip);
    }
    let md = std::fs::metadata(device_path())?;
    expect_eq("mode of /dev/udmabuf-live", md.mode() & 0o777, 0o600)?;
    expect_eq("owner", md.uid(), 0)?;
    // The same default as the kernel's own /dev/udmabuf.
    let upstream = std::fs::metadata("/dev/udmabuf")?;
    expect_eq("mode of /dev/udmabuf", upstream.mode() & 0o777, md.mode() & 0o777)?;
    Ok(Outcome::Pass)
}

fn unprivileged_open_refused() -> CaseResult {
    if let Some(skip) = live_only() {
        return Ok(skip);
    }
    let code = as_nobody(None, || match std::fs::OpenOptions::new().read(true).write(true).open(device_path()) {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(99),
    })?;
    expect_eq("errno of open() as uid 65534", code, Errno::EACCES as i32)?;
    Ok(Outcome::Pass)
}

fn memlock_limit_applies_to_unprivileged_creator() -> CaseResult {
    if let Some(skip) = live_only() {
        return Ok(skip);
    }
    let _open = OpenDevice::new()?;
    let limit = 1 << 20;
    let code = as_nobody(Some(limit), || {
        let Ok(dev) = open_device(&device_path()) else { return 90 };
        let Ok(m) = memfd(Backing::Shmem, 4 << 20) else { return 91 };
        let base = vmpin_kib().unwrap_or(u64::MAX);
        // Within the limit: allowed, and charged to VmPin.
        let Ok(half) = create(dev.as_fd(), &m, 0, 512 << 10, 0) else { return 10 };
        if vmpin_kib() != Some(base + 512) {
            return 11;
        }
        // Beyond it (512 KiB held + 1 MiB asked > 1 MiB): ENOMEM, nothing charged.
        match create(dev.as_fd(), &m, 0, 1 << 20, 0) {
            Err(Errno::ENOMEM) => {}
            _ => return 12,
        }
        if vmpin_kib() != Some(base + 512) {
            return 13;
        }
        // Closing the buffer returns the charge (release may be deferred a little).
        drop(half);
        for _ in 0..200 {
            if vmpin_kib() == Some(base) {
                return 0;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        14
    })?;
    let what = match code {
        0 => return Ok(Outcome::Pass),
        10 => "a 512 KiB buffer under a 1 MiB RLIMIT_MEMLOCK was refused",
        11 => "VmPin did not grow by 512 KiB",
        12 => "a buffer beyond RLIMIT_MEMLOCK was not refused with ENOMEM",
        13 => "the refused create changed VmPin",
        14 => "VmPin did not return to its base after close",
        _ => "the child could not set up (open/memfd/setuid)",
    };
    bail!("{what} (child exit {code})")
}

fn memlock_accounting_can_be_turned_off() -> CaseResult {
    if let Some(skip) = live_only() {
        return Ok(skip);
    }
    let _open = OpenDevice::new()?;
    let _param = ParamGuard::set(&device_path(), "account_memlock", 0).context("account_memlock=0")?;
    let code = as_nobody(Some(1 << 20), || try_create(4 << 20))?;
    expect_eq("create of 4 MiB under a 1 MiB limit with account_memlock=0", code, 0)?;
    drop(_param);
    let code = as_nobody(Some(1 << 20), || try_create(4 << 20))?;
    expect_eq("the same with account_memlock=1", code, Errno::ENOMEM as i32)?;
    Ok(Outcome::Pass)
}

nix::ioctl_write_ptr_bad!(ioctl_pfns, UDMABUF_LIVE_PFNS, UdmabufLivePfns);

fn pfns_needs_cap_sys_admin() -> CaseResult {
    if let Some(skip) = live_only() {
        return Ok(skip);
    }
    let _open = OpenDevice::new()?;
    let code = as_nobody(None, || {
        let Ok(dev) = open_device(&device_path()) else { return 90 };
        let Ok(m) = memfd(Backing::Shmem, 64 << 10) else { return 91 };
        let Ok(buf) = create(dev.as_fd(), &m, 0, 64 << 10, 0) else { return 92 };
        let mut out = [0u64; 16];
        let arg = UdmabufLivePfns {
            dmabuf_fd: buf.as_raw_fd() as u32,
            __pad: 0,
            first_page: 0,
            count: 1,
            pfns: out.as_mut_ptr() as u64,
        };
        // SAFETY: `arg` and `out` are valid for the call.
        match unsafe { ioctl_pfns(dev.as_raw_fd(), &arg) } {
            Ok(_) => 0,
            Err(e) => e as i32,
        }
    })?;
    expect_eq("errno of PFNS as uid 65534", code, Errno::EPERM as i32)?;
    ensure!(is_loaded(), "module gone?");
    Ok(Outcome::Pass)
}
