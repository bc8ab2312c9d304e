//! Errors of the live ioctls. INFO, SYNC, VERIFY and PFNS take a dma-buf fd made by
//! /dev/udmabuf-live: any other open fd (a dma-buf of the built-in udmabuf or of a dma
//! heap, a memfd, the device itself) gets EINVAL, an fd that is not open EBADF. PFNS
//! wants CAP_SYS_ADMIN (EPERM without, while the other three stay usable) and a page
//! range inside the buffer (EINVAL otherwise, overflow included); a bad pointer is EFAULT.

use super::common::*;
use super::live_util::*;
use super::{cases, Require, Suite};
use crate::ktap::CaseResult;
use anyhow::{ensure, Context, Result};
use nix::errno::Errno;
use nix::libc;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use udmabuf_live_uapi::*;

pub fn suite() -> Suite {
    Suite::new(
        "live-errors",
        cases![
            builtin_udmabuf_dmabuf_einval,
            dma_heap_dmabuf_einval,
            memfd_and_device_fd_einval,
            closed_fd_ebadf,
            bad_argument_pointer_efault,
            pfns_out_of_range_einval,
            pfns_bad_output_pointer_efault,
            pfns_without_cap_sys_admin_eperm,
            pfns_as_nobody_eperm,
        ],
    )
    .requires(&[Require::LiveDevice])
}

/// Each of the four ioctls on fd number `fd` must fail with `want`.
fn expect_all_refuse(what: &str, dev: &OwnedFd, fd: u32, want: Errno) -> Result<()> {
    let mut out = [0u64; 1];
    let got = [
        ("INFO", info_raw(dev, fd).map(drop).err()),
        ("SYNC", sync_raw(dev, fd, 0).err()),
        ("VERIFY", verify_raw(dev, fd).map(drop).err()),
        // SAFETY: `out` has room for the one PFN asked for.
        (
            "PFNS",
            unsafe { pfns_raw(dev, fd, 0, 1, out.as_mut_ptr() as u64) }.err(),
        ),
    ];
    let bad: Vec<String> = got
        .iter()
        .filter(|(_, e)| *e != Some(want))
        .map(|(n, e)| format!("{n} gave {e:?}"))
        .collect();
    ensure!(
        bad.is_empty(),
        "{what}: expected {want} from every live ioctl; {}",
        bad.join(", ")
    );
    Ok(())
}

fn our_buffer(dev: &OwnedFd, pages: u64) -> Result<(OwnedFd, OwnedFd)> {
    let memfd = memfd(Backing::Shmem, pages * ps())?;
    let buf = create(dev.as_fd(), &memfd, 0, pages * ps(), 0).context("UDMABUF_CREATE")?;
    Ok((memfd, buf))
}

fn builtin_udmabuf_dmabuf_einval() -> CaseResult {
    if !std::path::Path::new(REFERENCE_DEVICE).exists() {
        skip!("no {REFERENCE_DEVICE}");
    }
    let dev = open_device(&test_device())?;
    let reference = open_device(REFERENCE_DEVICE)?;
    let memfd = memfd(Backing::Shmem, 4 * ps())?;
    let other = create(reference.as_fd(), &memfd, 0, 4 * ps(), 0)
        .context("UDMABUF_CREATE on the built-in udmabuf")?;
    expect_all_refuse(
        "a dma-buf of the built-in /dev/udmabuf",
        &dev,
        fdnum(&other),
        Errno::EINVAL,
    )?;
    // Ours, from the same memfd, is accepted (the refusal is about the exporter).
    let ours = create(dev.as_fd(), &memfd, 0, 4 * ps(), 0).context("UDMABUF_CREATE")?;
    info(&dev, &ours)?;
    Ok(())
}

#[repr(C)]
#[derive(Default)]
struct DmaHeapAllocationData {
    len: u64,
    fd: u32,
    fd_flags: u32,
    heap_flags: u64,
}
nix::ioctl_readwrite!(dma_heap_ioctl_alloc, b'H', 0x0, DmaHeapAllocationData);

fn dma_heap_dmabuf_einval() -> CaseResult {
    let heap_path = "/dev/dma_heap/system";
    let Ok(heap) = open_device(heap_path) else {
        skip!("no {heap_path}");
    };
    let mut a = DmaHeapAllocationData {
        len: 4 * ps(),
        fd_flags: (libc::O_RDWR | libc::O_CLOEXEC) as u32,
        ..Default::default()
    };
    // SAFETY: `a` is a valid dma_heap_allocation_data.
    unsafe { dma_heap_ioctl_alloc(heap.as_raw_fd(), &mut a) }.context("DMA_HEAP_IOCTL_ALLOC")?;
    // SAFETY: the ioctl returned a new dma-buf fd that nothing else owns.
    let other = unsafe { OwnedFd::from_raw_fd(a.fd as i32) };
    let dev = open_device(&test_device())?;
    expect_all_refuse(
        "a dma-buf of the system dma heap",
        &dev,
        fdnum(&other),
        Errno::EINVAL,
    )?;
    Ok(())
}

fn memfd_and_device_fd_einval() -> CaseResult {
    let dev = open_device(&test_device())?;
    let (memfd, _buf) = our_buffer(&dev, 2)?;
    expect_all_refuse(
        "the memfd behind a buffer",
        &dev,
        fdnum(&memfd),
        Errno::EINVAL,
    )?;
    expect_all_refuse(
        "the /dev/udmabuf-live fd itself",
        &dev,
        fdnum(&dev),
        Errno::EINVAL,
    )?;
    Ok(())
}

fn closed_fd_ebadf() -> CaseResult {
    let dev = open_device(&test_device())?;
    let (memfd, buf) = our_buffer(&dev, 2)?;
    let closed = fdnum(&buf);
    drop(buf);
    expect_all_refuse("a closed dma-buf fd", &dev, closed, Errno::EBADF)?;
    expect_all_refuse("fd -1", &dev, u32::MAX, Errno::EBADF)?;
    expect_all_refuse("fd 0x7fffffff", &dev, i32::MAX as u32, Errno::EBADF)?;
    drop(memfd);
    Ok(())
}

/// The argument struct itself at a bad address.
fn bad_argument_pointer_efault() -> CaseResult {
    let dev = open_device(&test_device())?;
    let mut bad = Vec::new();
    for (name, cmd) in [
        ("INFO", UDMABUF_LIVE_INFO),
        ("SYNC", UDMABUF_LIVE_SYNC),
        ("VERIFY", UDMABUF_LIVE_VERIFY),
        ("PFNS", UDMABUF_LIVE_PFNS),
    ] {
        // SAFETY: a null argument: the kernel must refuse it without touching our memory.
        let r = Errno::result(unsafe {
            libc::ioctl(dev.as_raw_fd(), cmd as _, std::ptr::null_mut::<u8>())
        });
        if r.err() != Some(Errno::EFAULT) {
            bad.push(format!("{name} gave {r:?}"));
        }
    }
    ensure!(
        bad.is_empty(),
        "null argument pointer: expected EFAULT; {}",
        bad.join(", ")
    );
    Ok(())
}

fn pfns_out_of_range_einval() -> CaseResult {
    let n = 8;
    let dev = open_device(&test_device())?;
    let (_memfd, buf) = our_buffer(&dev, n)?;
    // In range: the whole buffer, and the last page alone.
    pfns(&dev, &buf, 0, n)?;
    pfns(&dev, &buf, n - 1, 1)?;
    let mut room = vec![0u64; n as usize + 1];
    let mut bad = Vec::new();
    // (first page, count, output): counts past the buffer get room for what they ask, so
    // a kernel that wrongly accepts them writes only into `room`; the overflowing ones get
    // a null output and must be refused before anything is written.
    for (first, count, with_room) in [
        (n, 1, true),
        (0, n + 1, true),
        (n - 1, 2, true),
        (u64::MAX, 2, false),
        (1, u64::MAX, false),
        (u64::MAX, 0, false),
    ] {
        let outp = if with_room {
            room.as_mut_ptr() as u64
        } else {
            0
        };
        // SAFETY: `room` holds n + 1 u64s, the most any of these asks for, or null.
        let r = unsafe { pfns_raw(&dev, fdnum(&buf), first, count, outp) };
        if r != Err(Errno::EINVAL) {
            bad.push(format!("pages {first} + {count}: {r:?}"));
        }
    }
    ensure!(
        bad.is_empty(),
        "PFNS outside an {n}-page buffer: expected EINVAL; {}",
        bad.join(", ")
    );
    Ok(())
}

fn pfns_bad_output_pointer_efault() -> CaseResult {
    let dev = open_device(&test_device())?;
    let (_memfd, buf) = our_buffer(&dev, 4)?;
    for outp in [0u64, 1 << 63] {
        // SAFETY: null or a non-canonical address: no memory of ours is written.
        let r = unsafe { pfns_raw(&dev, fdnum(&buf), 0, 4, outp) };
        ensure!(
            r == Err(Errno::EFAULT),
            "PFNS into {outp:#x}: {r:?}, expected EFAULT"
        );
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
const CAP_SYS_ADMIN: u32 = 21;

/// Remove CAP_SYS_ADMIN from this process's effective and permitted sets.
fn drop_cap_sys_admin() -> Result<()> {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: a v3 header and two data structs, as capget(2) wants.
    Errno::result(unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) })
        .context("capget")?;
    data[0].effective &= !(1 << CAP_SYS_ADMIN);
    data[0].permitted &= !(1 << CAP_SYS_ADMIN);
    // SAFETY: as above, for capset(2).
    Errno::result(unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) })
        .context("capset")?;
    let status = std::fs::read_to_string("/proc/self/status").context("/proc/self/status")?;
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(str::trim)
        .unwrap_or("?")
        .to_owned();
    let bits = u64::from_str_radix(&eff, 16).with_context(|| format!("CapEff {eff:?}"))?;
    ensure!(
        bits & (1 << CAP_SYS_ADMIN) == 0,
        "CAP_SYS_ADMIN still effective after capset (CapEff {eff})"
    );
    Ok(())
}

/// In a child without the capability: PFNS is EPERM; INFO, VERIFY and SYNC still work
/// on the fds it inherited.
fn unprivileged_child(what: &str, drop_privilege: fn() -> Result<()>) -> Result<()> {
    let dev = open_device(&test_device())?;
    let (_memfd, buf) = our_buffer(&dev, 4)?;
    pfns(&dev, &buf, 0, 4).context("PFNS as root")?;
    in_child(what, || {
        drop_privilege()?;
        let r = pfns_of(&dev, fdnum(&buf), 0, 4);
        ensure!(r == Err(Errno::EPERM), "PFNS {what}: {r:?}, expected EPERM");
        info(&dev, &buf).with_context(|| format!("INFO {what}"))?;
        verify(&dev, &buf).with_context(|| format!("VERIFY {what}"))?;
        sync(&dev, &buf, 0).with_context(|| format!("SYNC {what}"))?;
        Ok(())
    })
}

fn pfns_without_cap_sys_admin_eperm() -> CaseResult {
    unprivileged_child("without CAP_SYS_ADMIN", drop_cap_sys_admin)?;
    Ok(())
}

fn pfns_as_nobody_eperm() -> CaseResult {
    unprivileged_child("as uid 65534", || {
        let nobody = nix::unistd::Gid::from_raw(65534);
        nix::unistd::setgroups(&[]).context("setgroups")?;
        nix::unistd::setgid(nobody).context("setgid(65534)")?;
        nix::unistd::setuid(nix::unistd::Uid::from_raw(65534)).context("setuid(65534)")?;
        Ok(())
    })?;
    Ok(())
}
