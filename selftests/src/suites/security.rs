//! Security: who may use the device, and how much memory a user may pin with it.
//! Upstream udmabuf lets any user of the device pin memory without limit, and so does
//! udmabuf-live by default (a drop-in). With `account_memlock=1` it charges every page a
//! buffer pins to the creating *user* against RLIMIT_MEMLOCK, as io_uring does, so that
//! handing buffers from child to parent does not escape the limit.

use super::common::*;
use super::{cases, Require, Suite};
use crate::ktap::CaseResult;
use crate::util::*;
use anyhow::{bail, ensure, Context, Result};
use nix::errno::Errno;
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, setgid, setuid, ForkResult, Gid, Uid};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

const NOBODY: u32 = 65534;

pub fn suite() -> Suite {
    Suite::new(
        "security",
        cases![
            device_node_is_root_only,
            unprivileged_open_refused,
            memlock_accounting_is_off_by_default,
            memlock_limit_applies_to_unprivileged_creator,
            memlock_charge_follows_the_user,
            memlock_keeps_upstream_errno_order,
            pfns_needs_cap_sys_admin,
        ],
    )
    .requires(&[Require::LiveDevice])
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

/// Errno of UDMABUF_CREATE over a fresh sealed shmem memfd of `size` bytes, or 0.
fn try_create(size: u64) -> i32 {
    let Ok(dev) = open_device(&device_path()) else {
        return 90;
    };
    let Ok(m) = memfd(Backing::Shmem, size) else {
        return 91;
    };
    match create(dev.as_fd(), &m, 0, size, 0) {
        Ok(_) => 0,
        Err(e) => e as i32,
    }
}

fn device_node_is_root_only() -> CaseResult {
    let md = std::fs::metadata(device_path())?;
    expect_eq("mode of /dev/udmabuf-live", md.mode() & 0o777, 0o600)?;
    expect_eq("owner", md.uid(), 0)?;
    // The same default as the kernel's own /dev/udmabuf.
    let upstream = std::fs::metadata("/dev/udmabuf")?;
    expect_eq(
        "mode of /dev/udmabuf",
        upstream.mode() & 0o777,
        md.mode() & 0o777,
    )?;
    Ok(())
}

fn unprivileged_open_refused() -> CaseResult {
    let code = as_nobody(None, || {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(device_path())
        {
            Ok(_) => 0,
            Err(e) => e.raw_os_error().unwrap_or(99),
        }
    })?;
    expect_eq("errno of open() as uid 65534", code, Errno::EACCES as i32)?;
    Ok(())
}

/// Upstream charges nothing: neither do we unless asked (`account_memlock=0` default).
fn memlock_accounting_is_off_by_default() -> CaseResult {
    let param = std::fs::read_to_string(param_path(&device_path(), "account_memlock"))?;
    expect_eq("account_memlock by default", param.trim(), "N")?;
    let _open = OpenDevice::new()?;
    let code = as_nobody(Some(1 << 20), || try_create(4 << 20))?;
    expect_eq(
        "create of 4 MiB under a 1 MiB RLIMIT_MEMLOCK, as upstream allows",
        code,
        0,
    )?;
    Ok(())
}

/// Turn accounting on for the guard's life.
fn accounting_on() -> Result<ParamGuard> {
    ParamGuard::set(&device_path(), "account_memlock", 1).context("account_memlock=1")
}

fn memlock_limit_applies_to_unprivileged_creator() -> CaseResult {
    let _open = OpenDevice::new()?;
    let _on = accounting_on()?;
    let limit = 1 << 20;
    let code = as_nobody(Some(limit), || {
        let Ok(dev) = open_device(&device_path()) else {
            return 90;
        };
        let Ok(m) = memfd(Backing::Shmem, 4 << 20) else {
            return 91;
        };
        // Within the limit: allowed.
        let Ok(half) = create(dev.as_fd(), &m, 0, 512 << 10, 0) else {
            return 10;
        };
        // Beyond it (512 KiB held + 1 MiB asked > 1 MiB): ENOMEM.
        match create(dev.as_fd(), &m, 0, 1 << 20, 0) {
            Err(Errno::ENOMEM) => {}
            _ => return 12,
        }
        // What is left fits.
        if create(dev.as_fd(), &m, 0, 512 << 10, 0).is_err() {
            return 13;
        }
        // Closing a buffer returns its charge (release may be deferred a little).
        drop(half);
        for _ in 0..200 {
            if create(dev.as_fd(), &m, 0, 512 << 10, 0).is_ok() {
                return 0;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        14
    })?;
    let what = match code {
        0 => return Ok(()),
        10 => "a 512 KiB buffer under a 1 MiB RLIMIT_MEMLOCK was refused",
        12 => "a buffer beyond RLIMIT_MEMLOCK was not refused with ENOMEM",
        13 => "the refused create kept a charge: the rest of the limit was refused",
        14 => "closing a buffer did not return its charge",
        _ => "the child could not set up (open/memfd/setuid)",
    };
    bail!("{what} (child exit {code})")
}

/// The escape of a per-mm charge: a child creates a buffer, hands it to its parent over
/// a unix socket and exits. The parent (same user) must still be held to the limit.
fn memlock_charge_follows_the_user() -> CaseResult {
    use nix::sys::socket::{
        recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
        SockFlag, SockType,
    };
    use std::io::IoSlice;
    use std::os::fd::{FromRawFd, OwnedFd};
    let _open = OpenDevice::new()?;
    let _on = accounting_on()?;
    let code = as_nobody(Some(1 << 20), || {
        let Ok((a, b)) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        ) else {
            return 90;
        };
        // SAFETY: single-threaded; the child only makes syscalls and leaves with _exit.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                let code = (|| {
                    let dev = open_device(&device_path()).ok()?;
                    let m = memfd(Backing::Shmem, 768 << 10).ok()?;
                    let buf = create(dev.as_fd(), &m, 0, 768 << 10, 0).ok()?;
                    let fds = [buf.as_raw_fd()];
                    sendmsg::<()>(
                        b.as_raw_fd(),
                        &[IoSlice::new(b"b")],
                        &[ControlMessage::ScmRights(&fds)],
                        MsgFlags::empty(),
                        None,
                    )
                    .ok()?;
                    Some(0)
                })()
                .unwrap_or(80);
                // SAFETY: leave the child at once.
                unsafe { nix::libc::_exit(code) }
            }
            Ok(ForkResult::Parent { child }) => {
                let mut byte = [0u8; 1];
                let mut iov = [std::io::IoSliceMut::new(&mut byte)];
                let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
                let Ok(msg) =
                    recvmsg::<()>(a.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty())
                else {
                    return 91;
                };
                let mut got = None;
                if let Ok(cmsgs) = msg.cmsgs() {
                    for c in cmsgs {
                        if let ControlMessageOwned::ScmRights(fds) = c {
                            // SAFETY: the fd arrived with SCM_RIGHTS and is ours now.
                            got = fds.first().map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) });
                        }
                    }
                }
                let Some(held) = got else { return 92 };
                if !matches!(waitpid(child, None), Ok(WaitStatus::Exited(_, 0))) {
                    return 93;
                }
                // The child is gone; its 768 KiB buffer lives here. 768 KiB more is over 1 MiB.
                let code = match try_create(768 << 10) {
                    e if e == Errno::ENOMEM as i32 => 0,
                    0 => 10,
                    _ => 94,
                };
                drop(held);
                code
            }
            Err(_) => 95,
        }
    })?;
    match code {
        0 => Ok(()),
        10 => bail!("a buffer handed over by an exited child escaped RLIMIT_MEMLOCK: 1.5 MiB pinned under a 1 MiB limit"),
        c => bail!("the child could not set up (exit {c})"),
    }
}

/// The charge comes where upstream would pin: an item's own EBADFD and EINVAL checks
/// come first, whatever its size.
fn memlock_keeps_upstream_errno_order() -> CaseResult {
    let _open = OpenDevice::new()?;
    let _on = accounting_on()?;
    let code = as_nobody(Some(1 << 20), || {
        let Ok(dev) = open_device(&device_path()) else {
            return 90;
        };
        // Not a memfd (the device fd itself), 4 MiB: EBADFD, not ENOMEM.
        match create_raw(dev.as_fd(), dev.as_raw_fd() as u32, 0, 0, 4 << 20) {
            Err(Errno::EBADFD) => {}
            _ => return 10,
        }
        // A memfd without F_SEAL_SHRINK, 4 MiB: EINVAL, not ENOMEM.
        let Ok(m) = memfd_with_seals(Backing::Shmem, 4 << 20, nix::fcntl::SealFlag::empty()) else {
            return 91;
        };
        match create(dev.as_fd(), &m, 0, 4 << 20, 0) {
            Err(Errno::EINVAL) => {}
            _ => return 11,
        }
        0
    })?;
    match code {
        0 => Ok(()),
        10 => {
            bail!("a 4 MiB CREATE of a non-memfd fd under a 1 MiB limit did not fail with EBADFD")
        }
        11 => bail!(
            "a 4 MiB CREATE of an unsealed memfd under a 1 MiB limit did not fail with EINVAL"
        ),
        c => bail!("the child could not set up (exit {c})"),
    }
}

fn pfns_needs_cap_sys_admin() -> CaseResult {
    let _open = OpenDevice::new()?;
    let code = as_nobody(None, || {
        let Ok(dev) = open_device(&device_path()) else {
            return 90;
        };
        let Ok(m) = memfd(Backing::Shmem, 64 << 10) else {
            return 91;
        };
        let Ok(buf) = create(dev.as_fd(), &m, 0, 64 << 10, 0) else {
            return 92;
        };
        let mut out = [0u64; 1];
        match udmabuf_live_uapi::sys::pfns(&dev, &buf, 0, &mut out) {
            Ok(_) => 0,
            Err(e) => e as i32,
        }
    })?;
    expect_eq("errno of PFNS as uid 65534", code, Errno::EPERM as i32)?;
    ensure!(is_loaded(), "module gone?");
    Ok(())
}
