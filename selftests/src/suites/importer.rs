//! The test importer (`selftests/importer/`, `/dev/ulive-importer`) attached to buffers
//! of our device and of the kernel's built-in udmabuf: static and dynamic attachments,
//! mappings (segment counts, mapped bytes), the bytes behind them, clean teardown in
//! every order, and the module's own lifecycle. Runs after `module` loaded udmabuf_live.

use super::{cases, Suite};
use crate::ktap::{out, CaseResult, Outcome};
use crate::util::expect_eq;
use anyhow::{bail, ensure, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use udmabuf_live_uapi::importer::*;
use udmabuf_live_uapi::{UdmabufCreate, UDMABUF_CREATE, UDMABUF_FLAGS_CLOEXEC};

const IMPORTER_KO: &str = "/lib/modules/ulive_importer.ko";
const OURS: &str = "/dev/udmabuf-live";
const BUILTIN: &str = "/dev/udmabuf";
const MIB: usize = 1 << 20;

pub fn suite() -> Suite {
    Suite {
        name: "importer",
        cases: cases![
            load_importer,
            ioctls_without_attachment,
            attach_rejects_bad_requests,
            ours_shmem_static,
            ours_shmem_dynamic,
            ours_hugetlb_static,
            ours_hugetlb_dynamic,
            builtin_shmem_static,
            builtin_shmem_dynamic,
            builtin_hugetlb_static,
            builtin_hugetlb_dynamic,
            hugetlb_64mib_maps_to_at_most_32_segments,
            close_while_mapped,
            importer_drops_last_reference,
            unload_importer,
        ],
    }
}

// ---- userspace side of the importer and the two exporters ----

fn ioctl<T>(fd: RawFd, req: u32, arg: *mut T) -> nix::Result<i32> {
    // SAFETY: every caller passes a request whose argument type is `T` (or no argument
    // with a null pointer), pointing at a live value for the duration of the call.
    Errno::result(unsafe { nix::libc::ioctl(fd, req as _, arg) })
}

/// An open file of `/dev/ulive-importer` (one attachment at most). Also used by the
/// stress and fuzz suites.
pub(super) struct Importer(pub(super) File);

impl Importer {
    pub(super) fn open() -> Result<Self> {
        let path = format!("/dev/{IMPORTER_DEVICE_NAME}");
        Ok(Self(OpenOptions::new().read(true).write(true).open(&path).with_context(|| format!("open {path}"))?))
    }
    pub(super) fn attach(&self, dmabuf: RawFd, dynamic: bool) -> nix::Result<()> {
        let mut a = ImporterAttach { dmabuf_fd: dmabuf, dynamic: dynamic as u32 };
        ioctl(self.0.as_raw_fd(), IMPORTER_ATTACH, &mut a).map(drop)
    }
    pub(super) fn attach_raw(&self, dmabuf: RawFd, dynamic: u32) -> nix::Result<()> {
        let mut a = ImporterAttach { dmabuf_fd: dmabuf, dynamic };
        ioctl(self.0.as_raw_fd(), IMPORTER_ATTACH, &mut a).map(drop)
    }
    pub(super) fn map(&self) -> nix::Result<ImporterMap> {
        let mut m = ImporterMap::default();
        ioctl(self.0.as_raw_fd(), IMPORTER_MAP, &mut m).map(|_| m)
    }
    pub(super) fn read(&self, offset: usize, buf: &mut [u8]) -> nix::Result<usize> {
        let mut r = ImporterRead { offset: offset as u64, len: buf.len() as u64, user_ptr: buf.as_mut_ptr() as u64 };
        ioctl(self.0.as_raw_fd(), IMPORTER_READ, &mut r).map(|n| n as usize)
    }
    pub(super) fn stats(&self) -> nix::Result<ImporterStats> {
        let mut s = ImporterStats::default();
        ioctl(self.0.as_raw_fd(), IMPORTER_STATS, &mut s).map(|_| s)
    }
    pub(super) fn detach(&self) -> nix::Result<()> {
        ioctl(self.0.as_raw_fd(), IMPORTER_DETACH, std::ptr::null_mut::<u8>()).map(drop)
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Backing {
    Shmem,
    Hugetlb,
}

/// A sealed (F_SEAL_SHRINK) memfd of `size` bytes filled with `pattern(seed)`.
fn patterned_memfd(size: usize, backing: Backing, seed: u64) -> Result<OwnedFd> {
    let mut flags = MemFdCreateFlag::MFD_ALLOW_SEALING | MemFdCreateFlag::MFD_CLOEXEC;
    if backing == Backing::Hugetlb {
        flags |= MemFdCreateFlag::MFD_HUGETLB;
    }
    let fd = memfd_create(c"ulive-importer-test", flags).with_context(|| format!("memfd_create({backing:?})"))?;
    nix::unistd::ftruncate(&fd, size as i64).context("ftruncate")?;
    fcntl(fd.as_raw_fd(), FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK)).context("F_ADD_SEALS")?;
    let len = NonZeroUsize::new(size).context("empty buffer")?;
    // SAFETY: a new shared mapping of our own memfd; no other reference to it exists.
    let ptr = unsafe { mmap(None, len, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_SHARED, fd.as_fd(), 0) }
        .with_context(|| format!("mmap {backing:?} memfd (hugepages reserved?)"))?;
    // SAFETY: the mapping is `size` bytes, page aligned (so u64 aligned), ours alone.
    let words = unsafe { std::slice::from_raw_parts_mut(ptr.as_ptr().cast::<u64>(), size / 8) };
    for (i, w) in words.iter_mut().enumerate() {
        *w = pattern(i, seed);
    }
    // SAFETY: unmapping the mapping made above; `words` is not used afterwards.
    unsafe { munmap(ptr, size) }.context("munmap")?;
    Ok(fd)
}

fn pattern(word: usize, seed: u64) -> u64 {
    (word as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed
}

fn expected_byte(offset: usize, seed: u64) -> u8 {
    pattern(offset / 8, seed).to_ne_bytes()[offset % 8]
}

/// UDMABUF_CREATE on `dev` (ours or the built-in) for the whole memfd.
fn create_dmabuf(dev: &str, memfd: &OwnedFd, size: usize) -> Result<OwnedFd> {
    let devf = OpenOptions::new().read(true).write(true).open(dev).with_context(|| format!("open {dev}"))?;
    let mut req = UdmabufCreate { memfd: memfd.as_raw_fd() as u32, flags: UDMABUF_FLAGS_CLOEXEC, offset: 0, size: size as u64 };
    let fd = ioctl(devf.as_raw_fd(), UDMABUF_CREATE, &mut req).with_context(|| format!("UDMABUF_CREATE on {dev}"))?;
    // SAFETY: the ioctl returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Read `len` bytes at `offset` through the importer (in READ_MAX pieces) and compare
/// them with the pattern.
fn verify(imp: &Importer, offset: usize, len: usize, seed: u64) -> Result<()> {
    let mut buf = vec![0u8; len.min(IMPORTER_READ_MAX as usize)];
    let mut at = offset;
    while at < offset + len {
        let want = (offset + len - at).min(buf.len());
        let n = imp.read(at, &mut buf[..want]).with_context(|| format!("READ {want} bytes at {at:#x}"))?;
        expect_eq("bytes returned by READ", n, want)?;
        if let Some(i) = (0..n).find(|&i| buf[i] != expected_byte(at + i, seed)) {
            bail!("byte at {:#x}: importer sees {:#04x}, memfd holds {:#04x}", at + i, buf[i], expected_byte(at + i, seed));
        }
        at += n;
    }
    Ok(())
}

fn expect_errno<T: std::fmt::Debug>(what: &str, r: nix::Result<T>, want: Errno) -> Result<()> {
    match r {
        Err(e) if e == want => Ok(()),
        other => bail!("{what}: got {other:?}, expected {want}"),
    }
}

fn need(dev: &str) -> Result<()> {
    ensure!(Path::new(dev).exists(), "{dev} missing (the module suite loads udmabuf_live; CONFIG_UDMABUF=y gives /dev/udmabuf)");
    Ok(())
}

// ---- cases ----

pub(super) fn importer_loaded() -> bool {
    Path::new("/sys/module").join(IMPORTER_MODULE_NAME).exists()
}

fn load_importer() -> CaseResult {
    ensure!(!importer_loaded(), "{IMPORTER_MODULE_NAME} already loaded before the test");
    let f = File::open(IMPORTER_KO).with_context(|| format!("open {IMPORTER_KO}"))?;
    nix::kmod::finit_module(&f, &CString::default(), nix::kmod::ModuleInitFlags::empty())
        .with_context(|| format!("finit_module({IMPORTER_KO})"))?;
    let path = format!("/dev/{IMPORTER_DEVICE_NAME}");
    let md = std::fs::metadata(&path).with_context(|| format!("stat {path}"))?;
    ensure!(md.file_type().is_char_device(), "{path} is not a character device");
    Ok(Outcome::Pass)
}

fn ioctls_without_attachment() -> CaseResult {
    let imp = Importer::open()?;
    expect_errno("MAP without attachment", imp.map(), Errno::ENXIO)?;
    expect_errno("READ without attachment", imp.read(0, &mut [0u8; 16]), Errno::ENXIO)?;
    expect_errno("DETACH without attachment", imp.detach(), Errno::ENXIO)?;
    expect_eq("STATS without attachment", imp.stats()?, ImporterStats::default())?;
    let bogus = nix::request_code_none!(IMPORTER_IOCTL_TYPE, 0x7f) as u32;
    expect_errno("unknown ioctl", ioctl(imp.0.as_raw_fd(), bogus, std::ptr::null_mut::<u8>()), Errno::ENOTTY)?;
    Ok(Outcome::Pass)
}

fn attach_rejects_bad_requests() -> CaseResult {
    need(OURS)?;
    let imp = Importer::open()?;
    expect_errno("ATTACH fd -1", imp.attach(-1, false), Errno::EBADF)?;
    let memfd = patterned_memfd(MIB, Backing::Shmem, 1)?;
    expect_errno("ATTACH a memfd (not a dma-buf)", imp.attach(memfd.as_raw_fd(), true), Errno::EINVAL)?;
    let buf = create_dmabuf(OURS, &memfd, MIB)?;
    expect_errno("ATTACH with dynamic = 2", imp.attach_raw(buf.as_raw_fd(), 2), Errno::EINVAL)?;
    expect_eq("STATS after failed attaches", imp.stats()?, ImporterStats::default())?;
    imp.attach(buf.as_raw_fd(), true).context("ATTACH")?;
    expect_errno("second ATTACH on one file", imp.attach(buf.as_raw_fd(), false), Errno::EBUSY)?;
    imp.detach().context("DETACH")?;
    imp.attach(buf.as_raw_fd(), false).context("ATTACH after DETACH")?;
    Ok(Outcome::Pass)
}

/// The round trip every exporter/backing/attachment combination must pass.
fn round_trip(dev: &str, backing: Backing, dynamic: bool) -> CaseResult {
    need(dev)?;
    let size = 4 * MIB;
    let seed = 0x1000 + size as u64 + dynamic as u64;
    let memfd = patterned_memfd(size, backing, seed)?;
    let buf = create_dmabuf(dev, &memfd, size)?;
    let imp = Importer::open()?;
    imp.attach(buf.as_raw_fd(), dynamic).context("ATTACH")?;
    let s = imp.stats()?;
    expect_eq("STATS after ATTACH (attached, mapped, dynamic, size)", (s.attached, s.mapped, s.dynamic, s.size), (1, 0, dynamic as u32, size as u64))?;

    let m = imp.map().context("MAP")?;
    out(&format!("    # {dev} {backing:?} {}: nents {} orig_nents {} bytes {} map {} us",
        if dynamic { "dynamic" } else { "static" }, m.nents, m.orig_nents, m.bytes, m.map_ns / 1000));
    expect_eq("mapped bytes", m.bytes, size as u64)?;
    ensure!(m.nents >= 1 && m.nents <= m.orig_nents, "nents {} orig_nents {}", m.nents, m.orig_nents);
    ensure!(m.orig_nents as usize <= size / 4096, "{} CPU segments for {} pages", m.orig_nents, size / 4096);

    verify(&imp, 0, size, seed)?;
    // An unaligned read across a page boundary.
    let mut small = [0u8; 10];
    expect_eq("READ across a page boundary", imp.read(4093, &mut small)?, 10)?;
    ensure!(small.iter().enumerate().all(|(i, &b)| b == expected_byte(4093 + i, seed)), "unaligned READ differs");
    // Reads are cut at the end of the buffer; past it is an error.
    expect_eq("READ at the end", imp.read(size, &mut small)?, 0)?;
    expect_eq("READ straddling the end", imp.read(size - 4, &mut small)?, 4)?;
    expect_errno("READ past the end", imp.read(size + 1, &mut small), Errno::EINVAL)?;

    let s = imp.stats()?;
    expect_eq("STATS after MAP+READ (maps, remaps, invalidations, mapped, stale)",
        (s.maps, s.remaps, s.invalidations, s.mapped, s.stale), (1, 0, 0, 1, 0))?;
    let m2 = imp.map().context("second MAP")?;
    expect_eq("segments of a second mapping", (m2.nents, m2.orig_nents, m2.bytes), (m.nents, m.orig_nents, m.bytes))?;
    expect_eq("maps after a second MAP", imp.stats()?.maps, 2)?;

    imp.detach().context("DETACH")?;
    expect_eq("STATS after DETACH", imp.stats()?, ImporterStats::default())?;
    // The dma-buf is still fine for a new attachment of the other kind.
    imp.attach(buf.as_raw_fd(), !dynamic).context("re-ATTACH")?;
    verify(&imp, size - 8192, 8192, seed)?;
    Ok(Outcome::Pass)
}

fn ours_shmem_static() -> CaseResult {
    round_trip(OURS, Backing::Shmem, false)
}
fn ours_shmem_dynamic() -> CaseResult {
    round_trip(OURS, Backing::Shmem, true)
}
fn ours_hugetlb_static() -> CaseResult {
    round_trip(OURS, Backing::Hugetlb, false)
}
fn ours_hugetlb_dynamic() -> CaseResult {
    round_trip(OURS, Backing::Hugetlb, true)
}
fn builtin_shmem_static() -> CaseResult {
    round_trip(BUILTIN, Backing::Shmem, false)
}
fn builtin_shmem_dynamic() -> CaseResult {
    round_trip(BUILTIN, Backing::Shmem, true)
}
fn builtin_hugetlb_static() -> CaseResult {
    round_trip(BUILTIN, Backing::Hugetlb, false)
}
fn builtin_hugetlb_dynamic() -> CaseResult {
    round_trip(BUILTIN, Backing::Hugetlb, true)
}

/// Map a 64 MiB hugetlb buffer made by `dev` from `memfd` statically and dynamically;
/// returns the DMA segment counts. Checks the bytes at both ends of the buffer.
fn hugetlb_64mib_segments(dev: &str, memfd: &OwnedFd, seed: u64) -> Result<[u32; 2]> {
    need(dev)?;
    let size = 64 * MIB;
    let buf = create_dmabuf(dev, memfd, size)?;
    let mut nents = [0; 2];
    for (i, dynamic) in [false, true].into_iter().enumerate() {
        let imp = Importer::open()?;
        imp.attach(buf.as_raw_fd(), dynamic).context("ATTACH")?;
        let m = imp.map().context("MAP")?;
        out(&format!("    # {dev} hugetlb 64 MiB {}: nents {} orig_nents {} bytes {} map {} us",
            if dynamic { "dynamic" } else { "static" }, m.nents, m.orig_nents, m.bytes, m.map_ns / 1000));
        expect_eq("mapped bytes", m.bytes, size as u64)?;
        verify(&imp, 0, 2 * MIB, seed)?;
        verify(&imp, size - 2 * MIB, 2 * MIB, seed)?;
        nents[i] = m.nents;
    }
    Ok(nents)
}

/// 64 MiB of 2 MiB hugetlb folios must map to at most 32 DMA segments on our device
/// (fewer when folios happen to be physically adjacent). The built-in driver's count
/// for the very same pages is reported, not judged.
fn hugetlb_64mib_maps_to_at_most_32_segments() -> CaseResult {
    let seed = 0x64;
    let memfd = patterned_memfd(64 * MIB, Backing::Hugetlb, seed)?;
    let ours = hugetlb_64mib_segments(OURS, &memfd, seed)?;
    let builtin = hugetlb_64mib_segments(BUILTIN, &memfd, seed)?;
    out(&format!("    # same 64 MiB hugetlb memfd: ours {ours:?}, built-in {builtin:?} DMA segments (static, dynamic)"));
    ensure!(ours.iter().all(|&n| n <= 32), "64 MiB of 2 MiB hugetlb pages mapped to {ours:?} segments (want <= 32)");
    Ok(Outcome::Pass)
}

/// Closing the importer with a live mapping unmaps, detaches and puts by itself; the
/// dma-buf stays usable.
fn close_while_mapped() -> CaseResult {
    for dev in [OURS, BUILTIN] {
        need(dev)?;
        let memfd = patterned_memfd(MIB, Backing::Shmem, 7)?;
        let buf = create_dmabuf(dev, &memfd, MIB)?;
        for dynamic in [false, true] {
            let imp = Importer::open()?;
            imp.attach(buf.as_raw_fd(), dynamic)?;
            imp.map()?;
            verify(&imp, 0, 4096, 7)?;
            drop(imp); // no DETACH
        }
        let imp = Importer::open()?;
        imp.attach(buf.as_raw_fd(), false).with_context(|| format!("{dev}: ATTACH after closes"))?;
        verify(&imp, 0, MIB, 7)?;
    }
    Ok(Outcome::Pass)
}

fn refcnt(module: &str) -> Result<u64> {
    let p = format!("/sys/module/{module}/refcnt");
    Ok(std::fs::read_to_string(&p).with_context(|| format!("read {p}"))?.trim().parse()?)
}

/// The importer can hold the last reference: with the dma-buf and memfd fds closed the
/// buffer stays readable, and DETACH releases it (each of our dma-bufs holds a module
/// reference on udmabuf_live, so its refcnt shows the release).
fn importer_drops_last_reference() -> CaseResult {
    need(OURS)?;
    let module = udmabuf_live_uapi::MODULE_NAME;
    let before = refcnt(module)?;
    let imp = Importer::open()?;
    {
        let memfd = patterned_memfd(2 * MIB, Backing::Hugetlb, 9)?;
        let buf = create_dmabuf(OURS, &memfd, 2 * MIB)?;
        imp.attach(buf.as_raw_fd(), true)?;
        imp.map()?;
    } // both fds closed here
    expect_eq("udmabuf_live refcnt with the importer holding the dma-buf", refcnt(module)?, before + 1)?;
    verify(&imp, 0, 2 * MIB, 9)?;
    imp.detach()?;
    expect_eq("udmabuf_live refcnt after DETACH", refcnt(module)?, before)?;

    // The same through close() instead of DETACH, with the built-in exporter too.
    let memfd = patterned_memfd(MIB, Backing::Shmem, 11)?;
    let buf = create_dmabuf(BUILTIN, &memfd, MIB)?;
    let imp2 = Importer::open()?;
    imp2.attach(buf.as_raw_fd(), false)?;
    drop((buf, memfd));
    verify(&imp2, 0, MIB, 11)?;
    drop(imp2);
    Ok(Outcome::Pass)
}

/// Load the importer unless it is loaded; true when this call loaded it (the caller then
/// unloads it with [`unload_loaded_importer`] when done).
pub(super) fn ensure_importer_loaded() -> Result<bool> {
    if importer_loaded() {
        return Ok(false);
    }
    let f = File::open(IMPORTER_KO).with_context(|| format!("open {IMPORTER_KO}"))?;
    nix::kmod::finit_module(&f, &CString::default(), nix::kmod::ModuleInitFlags::empty())
        .with_context(|| format!("finit_module({IMPORTER_KO})"))?;
    Ok(true)
}

/// Unload the importer (after [`ensure_importer_loaded`] loaded it).
pub(super) fn unload_loaded_importer() -> Result<()> {
    let name = CString::new(IMPORTER_MODULE_NAME)?;
    nix::kmod::delete_module(&name, nix::kmod::DeleteModuleFlags::O_NONBLOCK).context("delete_module(ulive_importer)")?;
    Ok(())
}

fn unload_importer() -> CaseResult {
    let name = CString::new(IMPORTER_MODULE_NAME)?;
    let flags = nix::kmod::DeleteModuleFlags::O_NONBLOCK;
    {
        let _open = Importer::open()?;
        expect_eq("delete_module with the importer open", nix::kmod::delete_module(&name, flags), Err(Errno::EWOULDBLOCK))?;
    }
    nix::kmod::delete_module(&name, flags).context("delete_module(ulive_importer)")?;
    ensure!(!importer_loaded(), "{IMPORTER_MODULE_NAME} still loaded");
    ensure!(!Path::new(&format!("/dev/{IMPORTER_DEVICE_NAME}")).exists(), "/dev/{IMPORTER_DEVICE_NAME} still exists");
    Ok(Outcome::Pass)
}
