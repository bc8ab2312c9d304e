//! Helpers shared by the udmabuf semantics suites.
//!
//! Every suite runs against the device named by `ULIVE_TEST_DEVICE` (default
//! `/dev/udmabuf-live`). With `ULIVE_TEST_DEVICE=/dev/udmabuf` the same cases run against
//! the kernel's built-in driver, which is how the expectations themselves are validated.
//! Error cases also run their input against the built-in `/dev/udmabuf` when it exists and
//! differs from the device under test, so a wrong expectation shows up as a disagreement
//! with the reference rather than as a silent pass.
//!
//! Everything that holds a kernel object is an `OwnedFd` or a [`Mapping`], so it is
//! released at the end of the case and the `module-unload` suite can succeed.

use anyhow::{bail, ensure, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, SealFlag};
use nix::libc;
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use nix::sys::mman::{mmap_anonymous, mprotect, munmap, MapFlags, ProtFlags};
use std::ffi::c_void;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use udmabuf_live_uapi::sys;
use udmabuf_live_uapi::{UdmabufCreate, UdmabufCreateItem};

pub use udmabuf_live_uapi::sys::{
    dma_buf_sync as dmabuf_sync, fdnum, item, page_size, Mapping, DMA_BUF_SYNC_END as SYNC_END,
    DMA_BUF_SYNC_READ as SYNC_READ, DMA_BUF_SYNC_RW as SYNC_RW, DMA_BUF_SYNC_START as SYNC_START,
    DMA_BUF_SYNC_WRITE as SYNC_WRITE,
};
pub use udmabuf_live_uapi::UDMABUF_FLAGS_CLOEXEC;

/// The kernel's own driver (CONFIG_UDMABUF=y in the test kernel): the reference.
pub const REFERENCE_DEVICE: &str = "/dev/udmabuf";
/// Huge page size of the hugetlb memfds (MFD_HUGE_2MB; the guest reserves 2 MiB pages).
pub const HUGE_PAGE: u64 = 2 << 20;
/// Upstream defaults of the `size_limit_mb` and `list_limit` module parameters.
pub const DEFAULT_SIZE_LIMIT_MB: u64 = 64;
pub const DEFAULT_LIST_LIMIT: u64 = 1024;

/// The device the suites test.
pub fn test_device() -> String {
    std::env::var("ULIVE_TEST_DEVICE")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(crate::util::device_path)
}

/// The devices an input is tried on: the device under test, then the reference when it
/// exists and is a different device.
pub fn devices_to_compare() -> Vec<String> {
    let tested = test_device();
    let mut v = vec![tested.clone()];
    if tested != REFERENCE_DEVICE && std::path::Path::new(REFERENCE_DEVICE).exists() {
        v.push(REFERENCE_DEVICE.to_owned());
    }
    v
}

/// Kernel module that owns a device node, for its sysfs parameters.
pub fn module_of(device: &str) -> &'static str {
    if device == REFERENCE_DEVICE {
        "udmabuf"
    } else {
        udmabuf_live_uapi::MODULE_NAME
    }
}

/// Path of a module parameter of the module behind `device`.
pub fn param_path(device: &str, name: &str) -> String {
    format!("/sys/module/{}/parameters/{name}", module_of(device))
}

/// A module parameter of the device's module; `None` when sysfs does not show it.
pub fn read_param(device: &str, name: &str) -> Option<u64> {
    std::fs::read_to_string(param_path(device, name))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The dma-buf size limit in bytes the device currently enforces.
pub fn size_limit(device: &str) -> u64 {
    read_param(device, "size_limit_mb").unwrap_or(DEFAULT_SIZE_LIMIT_MB) << 20
}

/// The CREATE_LIST entry count limit the device currently enforces.
pub fn list_limit(device: &str) -> u64 {
    read_param(device, "list_limit").unwrap_or(DEFAULT_LIST_LIMIT)
}

/// Sets a module parameter and puts the old value back when dropped (also on failure).
pub struct ParamGuard {
    path: String,
    old: String,
}

impl ParamGuard {
    pub fn set(device: &str, name: &str, value: u64) -> Result<Self> {
        let path = param_path(device, name);
        let old = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        std::fs::write(&path, format!("{value}\n")).with_context(|| format!("write {path}"))?;
        Ok(Self { path, old })
    }
}

impl Drop for ParamGuard {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.path, &self.old);
    }
}

/// The base page size, as the cases spell it.
pub fn ps() -> u64 {
    page_size()
}

/// Open a udmabuf-style device read-write, as users do.
pub fn open_device(path: &str) -> Result<OwnedFd> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("open {path}"))?;
    Ok(f.into())
}

/// What backs a memfd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    Shmem,
    Hugetlb,
}

impl Backing {
    /// The granule of its size (ftruncate of a hugetlb file must be huge-page aligned).
    pub fn granule(self) -> u64 {
        match self {
            Backing::Shmem => page_size(),
            Backing::Hugetlb => HUGE_PAGE,
        }
    }
}

/// A memfd of `size` bytes that allows sealing, with `seals` added after the resize.
pub fn memfd_with_seals(kind: Backing, size: u64, seals: SealFlag) -> Result<OwnedFd> {
    let mut flags = MemFdCreateFlag::MFD_ALLOW_SEALING | MemFdCreateFlag::MFD_CLOEXEC;
    if kind == Backing::Hugetlb {
        require_hugepages()?;
        flags |= MemFdCreateFlag::MFD_HUGETLB | MemFdCreateFlag::MFD_HUGE_2MB;
    }
    let fd =
        memfd_create(c"ulive-test", flags).with_context(|| format!("memfd_create({kind:?})"))?;
    nix::unistd::ftruncate(&fd, size as libc::off_t)
        .with_context(|| format!("ftruncate {kind:?} memfd to {size}"))?;
    if !seals.is_empty() {
        add_seals(&fd, seals)?;
    }
    Ok(fd)
}

/// Reserved 2 MiB huge pages are a precondition of the hugetlb cases: none reserved
/// makes the case skip (the test guest boots with hugepages=1100).
pub fn require_hugepages() -> Result<()> {
    const NR: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";
    let n: u64 = std::fs::read_to_string(NR)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if n == 0 {
        return Err(crate::util::precondition(format!(
            "no 2 MiB huge pages reserved ({NR} is 0 or missing; echo 1100 > {NR})"
        )));
    }
    Ok(())
}

/// The memfd a udmabuf user makes: sealed against shrinking, nothing else.
pub fn memfd(kind: Backing, size: u64) -> Result<OwnedFd> {
    memfd_with_seals(kind, size, SealFlag::F_SEAL_SHRINK)
}

pub fn add_seals(fd: &impl AsRawFd, seals: SealFlag) -> Result<()> {
    fcntl(fd.as_raw_fd(), FcntlArg::F_ADD_SEALS(seals))
        .with_context(|| format!("F_ADD_SEALS {seals:?}"))?;
    Ok(())
}

/// UDMABUF_CREATE with a raw memfd number (so bad numbers can be passed).
pub fn create_raw(
    dev: BorrowedFd<'_>,
    memfd: u32,
    flags: u32,
    offset: u64,
    size: u64,
) -> Result<OwnedFd, Errno> {
    let arg = UdmabufCreate {
        memfd,
        flags,
        offset,
        size,
    };
    sys::create(&dev, &arg)
}

/// UDMABUF_CREATE of `memfd[offset..offset+size]`.
pub fn create(
    dev: BorrowedFd<'_>,
    memfd: &impl AsRawFd,
    offset: u64,
    size: u64,
    flags: u32,
) -> Result<OwnedFd, Errno> {
    create_raw(dev, fdnum(memfd), flags, offset, size)
}

/// UDMABUF_CREATE_LIST with a `count` that may differ from the entries passed.
pub fn create_list_count(
    dev: BorrowedFd<'_>,
    flags: u32,
    count: u32,
    items: &[UdmabufCreateItem],
) -> Result<OwnedFd, Errno> {
    sys::create_list_count(&dev, flags, count, items)
}

/// UDMABUF_CREATE_LIST of `items`.
pub fn create_list(
    dev: BorrowedFd<'_>,
    flags: u32,
    items: &[UdmabufCreateItem],
) -> Result<OwnedFd, Errno> {
    create_list_count(dev, flags, items.len() as u32, items)
}

/// Size of a dma-buf as users learn it: lseek(SEEK_END).
pub fn dmabuf_size(fd: &impl AsRawFd) -> Result<u64> {
    sys::dmabuf_size(fd).context("lseek(SEEK_END) on the dma-buf")
}

/// Whether FD_CLOEXEC is set on an fd.
pub fn has_cloexec(fd: &impl AsRawFd) -> Result<bool> {
    let bits = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFD).context("F_GETFD")?;
    Ok(FdFlag::from_bits_truncate(bits).contains(FdFlag::FD_CLOEXEC))
}

/// A `key: value` line of /proc/self/fdinfo/<fd>.
/// A counter in a /proc file of `key value [kB]` or `key: value [kB]` lines
/// (/proc/meminfo, /proc/vmstat), without its unit.
pub fn proc_counter(path: &str, key: &str) -> Result<u64> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {path}"))?;
    let v = text
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)
                .and_then(|r| r.strip_prefix(':').or_else(|| r.strip_prefix(' ')))
        })
        .with_context(|| format!("no {key} in {path}"))?;
    v.trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("{key} in {path}: {v:?}"))
}

pub fn fdinfo_field(fd: &impl AsRawFd, key: &str) -> Result<Option<String>> {
    let path = format!("/proc/self/fdinfo/{}", fd.as_raw_fd());
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    Ok(text.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|r| r.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    }))
}

/// A shared read-write mapping of the whole `len` bytes of `fd` from offset 0.
pub fn map_shared(fd: impl AsFd, len: u64) -> Result<Mapping> {
    Mapping::read_write(fd, len, 0, true).with_context(|| format!("mmap(MAP_SHARED, {len} bytes)"))
}

/// A regular file (not a memfd) of `len` bytes, created at `path` and unlinked at once:
/// it lives only as long as the returned handle.
pub fn unlinked_file(path: &str, len: u64) -> Result<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("create {path}"))?;
    let _ = std::fs::remove_file(path);
    f.set_len(len)
        .with_context(|| format!("ftruncate {path} to {len:#x}"))?;
    Ok(f)
}

/// A fresh anonymous read-write mapping of `len` bytes, shared (inherited as shared by
/// forked children) or private, at an address the kernel picks. The caller unmaps it.
pub fn mmap_anon_rw(len: usize, shared: bool) -> Result<NonNull<c_void>> {
    let flags = if shared {
        MapFlags::MAP_SHARED
    } else {
        MapFlags::MAP_PRIVATE
    };
    // SAFETY: without MAP_FIXED the kernel picks an address that overlaps no existing
    // mapping, so nothing of ours is replaced; the memory is zero-filled.
    unsafe {
        mmap_anonymous(
            None,
            NonZeroUsize::new(len).context("an empty mapping")?,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            flags,
        )
    }
    .with_context(|| format!("mmap({flags:?}|MAP_ANONYMOUS, {len} bytes)"))
}

/// Pages of private anonymous read-write memory, unmapped when dropped: where the error
/// suites place ioctl arguments, next to pages they make inaccessible.
pub struct AnonPages {
    base: NonNull<c_void>,
    len: usize,
}

impl AnonPages {
    pub fn new(pages: usize) -> Result<Self> {
        let len = pages * ps() as usize;
        let base = mmap_anon_rw(len, false)?;
        Ok(Self { base, len })
    }

    /// The address of page `n`.
    pub fn page(&self, n: usize) -> *mut u8 {
        assert!(n < self.len / ps() as usize, "page {n} outside the mapping");
        // SAFETY: page `n` lies inside the mapping (checked above).
        unsafe { self.base.as_ptr().cast::<u8>().add(n * ps() as usize) }
    }

    /// mprotect page `n` to `prot`.
    pub fn protect(&self, n: usize, prot: ProtFlags) -> Result<()> {
        let page = NonNull::new(self.page(n).cast()).context("page address")?;
        // SAFETY: page `n` of our own mapping, which only raw pointers touch.
        unsafe { mprotect(page, ps() as usize, prot) }
            .with_context(|| format!("mprotect page {n} to {prot:?}"))?;
        Ok(())
    }
}

impl Drop for AnonPages {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`.
        let _ = unsafe { munmap(self.base, self.len) };
    }
}

/// Deterministic content that differs per `seed` and per page (so a page at the wrong
/// offset, or a stale page, does not compare equal).
pub fn pattern(seed: u8, len: u64) -> Vec<u8> {
    let ps = page_size();
    (0..len)
        .map(|i| {
            let page = i / ps;
            (i as u8).wrapping_mul(31)
                ^ (page as u8).wrapping_mul(97)
                ^ seed.wrapping_mul(151)
                ^ ((page >> 8) as u8)
        })
        .collect()
}

/// Compare two byte slices, naming the first differing offset.
pub fn expect_bytes(what: &str, got: &[u8], want: &[u8]) -> Result<()> {
    ensure!(
        got.len() == want.len(),
        "{what}: {} bytes, expected {}",
        got.len(),
        want.len()
    );
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        bail!(
            "{what}: first difference at byte {i:#x}: got {:#04x}, expected {:#04x}",
            got[i],
            want[i]
        );
    }
    Ok(())
}

/// The first `len` bytes of `map` must be `pattern(seed, len)`.
pub fn expect_pattern(what: &str, map: &Mapping, seed: u8, len: u64) -> Result<()> {
    expect_bytes(what, &map.read(0, len), &pattern(seed, len))
}

/// Write `data` at `off` of a memfd through a shared mapping of the whole file (hugetlbfs
/// has no write(2), so this works for both backings).
pub fn fill_memfd(memfd: &OwnedFd, memfd_size: u64, off: u64, data: &[u8]) -> Result<()> {
    let m = map_shared(memfd, memfd_size)?;
    m.write(off, data);
    Ok(())
}

/// Read `len` bytes at `off` of a memfd through a shared mapping of the whole file.
pub fn read_memfd(memfd: &OwnedFd, memfd_size: u64, off: u64, len: u64) -> Result<Vec<u8>> {
    let m = map_shared(memfd, memfd_size)?;
    Ok(m.read(off, len))
}

/// Fail unless `attempt` fails with `want` on the device under test, and also on the
/// built-in reference when it is a different device (parity: the same input, the same
/// errno). `attempt` builds its own inputs per device, so every try starts fresh.
pub fn expect_errno<T>(
    what: &str,
    want: Errno,
    attempt: impl Fn(BorrowedFd<'_>) -> Result<Result<T, Errno>>,
) -> Result<()> {
    let mut got = Vec::new();
    for dev_path in devices_to_compare() {
        let dev = open_device(&dev_path)?;
        let r = attempt(dev.as_fd())
            .with_context(|| format!("{what}: setting up the input for {dev_path}"))?;
        got.push((dev_path, r.map(drop).err()));
    }
    let show = |e: &Option<Errno>| e.map_or_else(|| "success".to_owned(), |e| format!("{e}"));
    let mut bad = Vec::new();
    for (dev, e) in &got {
        if *e != Some(want) {
            bad.push(format!("{dev} gave {}", show(e)));
        }
    }
    if !bad.is_empty() {
        let all: Vec<String> = got
            .iter()
            .map(|(d, e)| format!("{d}: {}", show(e)))
            .collect();
        bail!(
            "{what}: expected {want}; {} (all: {})",
            bad.join(", "),
            all.join(", ")
        );
    }
    Ok(())
}

/// Fail unless `attempt` succeeds on the device under test and on the reference, and
/// `check` accepts what it returned on each.
pub fn expect_ok<T>(
    what: &str,
    attempt: impl Fn(BorrowedFd<'_>) -> Result<Result<T, Errno>>,
    check: impl Fn(&str, T) -> Result<()>,
) -> Result<()> {
    for dev_path in devices_to_compare() {
        let dev = open_device(&dev_path)?;
        match attempt(dev.as_fd())
            .with_context(|| format!("{what}: setting up the input for {dev_path}"))?
        {
            Ok(v) => check(&dev_path, v).with_context(|| format!("{what} on {dev_path}"))?,
            Err(e) => bail!("{what} on {dev_path}: failed with {e}, expected success"),
        }
    }
    Ok(())
}

/// A buffer made on the device under test, with what it was made from; the usual
/// starting point of the positive cases.
pub struct Buffer {
    pub dmabuf: OwnedFd,
    pub memfd: OwnedFd,
}

/// A memfd of `size` filled with `pattern(seed)`, and a dma-buf over all of it.
pub fn filled_buffer(kind: Backing, size: u64, seed: u8, flags: u32) -> Result<Buffer> {
    let memfd = memfd(kind, size)?;
    fill_memfd(&memfd, size, 0, &pattern(seed, size))?;
    let dev = open_device(&test_device())?;
    let dmabuf = create(dev.as_fd(), &memfd, 0, size, flags)
        .with_context(|| format!("UDMABUF_CREATE over a {kind:?} memfd of {size} bytes"))?;
    Ok(Buffer { dmabuf, memfd })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Patterns must tell pages and seeds apart, or a misplaced page would compare equal.
    #[test]
    fn pattern_distinguishes_pages_and_seeds() {
        let ps = page_size() as usize;
        let p = pattern(1, 64 * ps as u64);
        for a in 0..64 {
            for b in a + 1..64 {
                assert_ne!(
                    p[a * ps..(a + 1) * ps],
                    p[b * ps..(b + 1) * ps],
                    "pages {a} and {b}"
                );
            }
        }
        assert_ne!(pattern(1, ps as u64), pattern(2, ps as u64));
        assert!(expect_bytes("x", &p, &pattern(2, p.len() as u64)).is_err());
        assert!(expect_bytes("x", &p, &p.clone()).is_ok());
    }
}
