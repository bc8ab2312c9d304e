//! The test importer (`selftests/importer/`, `/dev/ulive-importer`) attached to buffers
//! of our device and of the kernel's built-in udmabuf: static and dynamic attachments,
//! mappings (segment counts, mapped bytes), the bytes and page frames behind them, kernel
//! vmaps, clean teardown in every order, and the module's own lifecycle. Runs after
//! `module` loaded udmabuf_live.

use super::common::map_shared;
use super::importer_client::{self as client, Importer};
use super::live_util::{info, mapped_pfns, pfns, VMAPPED};
use super::{case_fns, cases, Suite};
use crate::ktap::{out, CaseResult};
use crate::util::expect_eq;
use anyhow::{bail, ensure, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use std::ffi::CString;
use std::fs::OpenOptions;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use udmabuf_live_uapi::{UdmabufCreate, UDMABUF_FLAGS_CLOEXEC};
use ulive_importer_abi::client::ioctl;
use ulive_importer_abi::*;

const OURS: &str = "/dev/udmabuf-live";
const BUILTIN: &str = "/dev/udmabuf";
const MIB: usize = 1 << 20;

pub fn suite() -> Suite {
    Suite::new(
        "importer",
        cases![
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
            pfns_are_the_memfd_pages,
            pfns_ranges_and_bad_requests,
            vmap_reads_the_buffer,
            vmap_goes_with_detach_and_close,
            unload_importer,
        ],
    )
}

// ---- the two exporters ----

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
    let fd = memfd_create(c"ulive-importer-test", flags)
        .with_context(|| format!("memfd_create({backing:?})"))?;
    nix::unistd::ftruncate(&fd, size as i64).context("ftruncate")?;
    fcntl(
        fd.as_raw_fd(),
        FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK),
    )
    .context("F_ADD_SEALS")?;
    let len = NonZeroUsize::new(size).context("empty buffer")?;
    // SAFETY: a new shared mapping of our own memfd; no other reference to it exists.
    let ptr = unsafe {
        mmap(
            None,
            len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
            fd.as_fd(),
            0,
        )
    }
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
    let devf = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .with_context(|| format!("open {dev}"))?;
    let req = UdmabufCreate {
        memfd: memfd.as_raw_fd() as u32,
        flags: UDMABUF_FLAGS_CLOEXEC,
        offset: 0,
        size: size as u64,
    };
    udmabuf_live_uapi::sys::create(&devf, &req).with_context(|| format!("UDMABUF_CREATE on {dev}"))
}

/// How the importer reads the buffer back: READ through its DMA mapping, VREAD through
/// its kernel vmap.
#[derive(Clone, Copy)]
enum Via {
    Read,
    Vread,
}

impl Via {
    fn name(self) -> &'static str {
        match self {
            Via::Read => "READ",
            Via::Vread => "VREAD",
        }
    }

    /// Who shows the bytes, for messages.
    fn shower(self) -> &'static str {
        match self {
            Via::Read => "importer sees",
            Via::Vread => "the vmap shows",
        }
    }

    fn read(self, imp: &Importer, offset: usize, buf: &mut [u8]) -> nix::Result<usize> {
        match self {
            Via::Read => imp.read(offset, buf),
            Via::Vread => imp.vread(offset, buf),
        }
    }
}

/// Read `len` bytes at `offset` through the importer `via` READ or VREAD (in READ_MAX
/// pieces) and compare them with the pattern.
fn verify_via(imp: &Importer, via: Via, offset: usize, len: usize, seed: u64) -> Result<()> {
    let op = via.name();
    let mut buf = vec![0u8; len.min(IMPORTER_READ_MAX as usize)];
    let mut at = offset;
    while at < offset + len {
        let want = (offset + len - at).min(buf.len());
        let n = via
            .read(imp, at, &mut buf[..want])
            .with_context(|| format!("{op} {want} bytes at {at:#x}"))?;
        expect_eq(&format!("bytes returned by {op}"), n, want)?;
        if let Some(i) = (0..n).find(|&i| buf[i] != expected_byte(at + i, seed)) {
            bail!(
                "byte at {:#x}: {} {:#04x}, memfd holds {:#04x}",
                at + i,
                via.shower(),
                buf[i],
                expected_byte(at + i, seed)
            );
        }
        at += n;
    }
    Ok(())
}

/// Read `len` bytes at `offset` through the importer's DMA mapping and compare them with
/// the pattern.
fn verify(imp: &Importer, offset: usize, len: usize, seed: u64) -> Result<()> {
    verify_via(imp, Via::Read, offset, len, seed)
}

/// Read the whole buffer through the vmap and compare with the pattern.
fn verify_vmap(imp: &Importer, size: usize, seed: u64) -> Result<()> {
    verify_via(imp, Via::Vread, 0, size, seed)
}

/// The edges of READ or VREAD of a `size`-byte buffer: an unaligned read across a page
/// boundary returns the pattern; reads are cut at the end of the buffer; past it is an
/// error.
fn expect_read_edges(imp: &Importer, via: Via, size: usize, seed: u64) -> Result<()> {
    let op = via.name();
    let mut small = [0u8; 10];
    expect_eq(
        &format!("{op} across a page boundary"),
        via.read(imp, 4093, &mut small)?,
        10,
    )?;
    ensure!(
        small
            .iter()
            .enumerate()
            .all(|(i, &b)| b == expected_byte(4093 + i, seed)),
        "unaligned {op} differs"
    );
    expect_eq(
        &format!("{op} at the end"),
        via.read(imp, size, &mut small)?,
        0,
    )?;
    expect_eq(
        &format!("{op} straddling the end"),
        via.read(imp, size - 4, &mut small)?,
        4,
    )?;
    expect_errno(
        &format!("{op} past the end"),
        via.read(imp, size + 1, &mut small),
        Errno::EINVAL,
    )
}

fn expect_errno<T: std::fmt::Debug>(what: &str, r: nix::Result<T>, want: Errno) -> Result<()> {
    match r {
        Err(e) if e == want => Ok(()),
        other => bail!("{what}: got {other:?}, expected {want}"),
    }
}

fn need(dev: &str) -> Result<()> {
    ensure!(
        Path::new(dev).exists(),
        "{dev} missing (the module suite loads udmabuf_live; CONFIG_UDMABUF=y gives /dev/udmabuf)"
    );
    Ok(())
}

// ---- cases ----

fn importer_loaded() -> bool {
    client::loaded()
}

fn load_importer() -> CaseResult {
    ensure!(
        !importer_loaded(),
        "{IMPORTER_MODULE_NAME} already loaded before the test"
    );
    client::load()?;
    let path = client::device_path();
    let md = std::fs::metadata(&path).with_context(|| format!("stat {path}"))?;
    ensure!(
        md.file_type().is_char_device(),
        "{path} is not a character device"
    );
    Ok(())
}

fn ioctls_without_attachment() -> CaseResult {
    let imp = Importer::open()?;
    expect_errno("MAP without attachment", imp.map(), Errno::ENXIO)?;
    expect_errno(
        "READ without attachment",
        imp.read(0, &mut [0u8; 16]),
        Errno::ENXIO,
    )?;
    expect_errno("DETACH without attachment", imp.detach(), Errno::ENXIO)?;
    expect_errno(
        "PFNS without attachment",
        imp.pfns(0, &mut [0u64; 4], 0),
        Errno::ENXIO,
    )?;
    expect_errno("VMAP without attachment", imp.vmap(), Errno::ENXIO)?;
    expect_errno("VUNMAP without attachment", imp.vunmap(), Errno::ENXIO)?;
    expect_errno(
        "VREAD without attachment",
        imp.vread(0, &mut [0u8; 16]),
        Errno::ENXIO,
    )?;
    expect_eq(
        "STATS without attachment",
        imp.stats()?,
        ImporterStats::default(),
    )?;
    let bogus = nix::request_code_none!(IMPORTER_IOCTL_TYPE, 0x7f) as u32;
    expect_errno(
        "unknown ioctl",
        // SAFETY: no argument: an unknown command must not look at it.
        unsafe { ioctl(imp.raw_fd(), bogus, std::ptr::null_mut::<u8>()) },
        Errno::ENOTTY,
    )?;
    Ok(())
}

fn attach_rejects_bad_requests() -> CaseResult {
    need(OURS)?;
    let imp = Importer::open()?;
    expect_errno("ATTACH fd -1", imp.attach(-1, false), Errno::EBADF)?;
    let memfd = patterned_memfd(MIB, Backing::Shmem, 1)?;
    expect_errno(
        "ATTACH a memfd (not a dma-buf)",
        imp.attach(memfd.as_raw_fd(), true),
        Errno::EINVAL,
    )?;
    let buf = create_dmabuf(OURS, &memfd, MIB)?;
    expect_errno(
        "ATTACH with dynamic = 2",
        imp.attach_raw(buf.as_raw_fd(), 2),
        Errno::EINVAL,
    )?;
    expect_eq(
        "STATS after failed attaches",
        imp.stats()?,
        ImporterStats::default(),
    )?;
    imp.attach(buf.as_raw_fd(), true).context("ATTACH")?;
    expect_errno(
        "second ATTACH on one file",
        imp.attach(buf.as_raw_fd(), false),
        Errno::EBUSY,
    )?;
    imp.detach().context("DETACH")?;
    imp.attach(buf.as_raw_fd(), false)
        .context("ATTACH after DETACH")?;
    Ok(())
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
    expect_eq(
        "STATS after ATTACH (attached, mapped, dynamic, size)",
        (s.attached, s.mapped, s.dynamic, s.size),
        (1, 0, dynamic as u32, size as u64),
    )?;

    let m = imp.map().context("MAP")?;
    out(&format!(
        "    # {dev} {backing:?} {}: nents {} orig_nents {} bytes {} map {} us",
        if dynamic { "dynamic" } else { "static" },
        m.nents,
        m.orig_nents,
        m.bytes,
        m.map_ns / 1000
    ));
    expect_eq("mapped bytes", m.bytes, size as u64)?;
    ensure!(
        m.nents >= 1 && m.nents <= m.orig_nents,
        "nents {} orig_nents {}",
        m.nents,
        m.orig_nents
    );
    ensure!(
        m.orig_nents as usize <= size / 4096,
        "{} CPU segments for {} pages",
        m.orig_nents,
        size / 4096
    );

    verify(&imp, 0, size, seed)?;
    expect_read_edges(&imp, Via::Read, size, seed)?;

    let s = imp.stats()?;
    expect_eq(
        "STATS after MAP+READ (maps, remaps, invalidations, mapped, stale)",
        (s.maps, s.remaps, s.invalidations, s.mapped, s.stale),
        (1, 0, 0, 1, 0),
    )?;
    let m2 = imp.map().context("second MAP")?;
    expect_eq(
        "segments of a second mapping",
        (m2.nents, m2.orig_nents, m2.bytes),
        (m.nents, m.orig_nents, m.bytes),
    )?;
    expect_eq("maps after a second MAP", imp.stats()?.maps, 2)?;

    imp.detach().context("DETACH")?;
    expect_eq("STATS after DETACH", imp.stats()?, ImporterStats::default())?;
    // The dma-buf is still fine for a new attachment of the other kind.
    imp.attach(buf.as_raw_fd(), !dynamic).context("re-ATTACH")?;
    verify(&imp, size - 8192, 8192, seed)?;
    Ok(())
}

// The round-trip cases, one per exporter, backing and attachment kind.
case_fns! {
    ours_shmem_static => round_trip(OURS, Backing::Shmem, false);
    ours_shmem_dynamic => round_trip(OURS, Backing::Shmem, true);
    ours_hugetlb_static => round_trip(OURS, Backing::Hugetlb, false);
    ours_hugetlb_dynamic => round_trip(OURS, Backing::Hugetlb, true);
    builtin_shmem_static => round_trip(BUILTIN, Backing::Shmem, false);
    builtin_shmem_dynamic => round_trip(BUILTIN, Backing::Shmem, true);
    builtin_hugetlb_static => round_trip(BUILTIN, Backing::Hugetlb, false);
    builtin_hugetlb_dynamic => round_trip(BUILTIN, Backing::Hugetlb, true);
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
        out(&format!(
            "    # {dev} hugetlb 64 MiB {}: nents {} orig_nents {} bytes {} map {} us",
            if dynamic { "dynamic" } else { "static" },
            m.nents,
            m.orig_nents,
            m.bytes,
            m.map_ns / 1000
        ));
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
    ensure!(
        ours.iter().all(|&n| n <= 32),
        "64 MiB of 2 MiB hugetlb pages mapped to {ours:?} segments (want <= 32)"
    );
    Ok(())
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
        imp.attach(buf.as_raw_fd(), false)
            .with_context(|| format!("{dev}: ATTACH after closes"))?;
        verify(&imp, 0, MIB, 7)?;
    }
    Ok(())
}

fn refcnt(module: &str) -> Result<u64> {
    let p = format!("/sys/module/{module}/refcnt");
    Ok(std::fs::read_to_string(&p)
        .with_context(|| format!("read {p}"))?
        .trim()
        .parse()?)
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
    expect_eq(
        "udmabuf_live refcnt with the importer holding the dma-buf",
        refcnt(module)?,
        before + 1,
    )?;
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
    Ok(())
}

// ---- PFNS ----

/// The importer's view of `buf` (attached `dynamic`ally or not, mapped by PFNS itself):
/// CPU-page PFNs and DMA-address PFNs of the whole buffer, which must agree in the test
/// guest (no IOMMU).
fn importer_pfns(buf: &OwnedFd, dynamic: bool, pages: usize) -> Result<Vec<u64>> {
    let imp = Importer::open()?;
    imp.attach(buf.as_raw_fd(), dynamic).context("ATTACH")?;
    let mut cpu = vec![0u64; pages];
    expect_eq(
        "PFNs written (CPU pages)",
        imp.pfns(0, &mut cpu, 0).context("PFNS")?,
        pages,
    )?;
    let s = imp.stats()?;
    expect_eq(
        "STATS after PFNS on an unmapped attachment (maps, mapped)",
        (s.maps, s.mapped),
        (1, 1),
    )?;
    let mut dma = vec![0u64; pages];
    expect_eq(
        "PFNs written (DMA)",
        imp.pfns(0, &mut dma, IMPORTER_PFNS_DMA)
            .context("PFNS (DMA)")?,
        pages,
    )?;
    expect_eq("maps after a second PFNS", imp.stats()?.maps, 1)?;
    if let Some(i) = (0..pages).find(|&i| cpu[i] != dma[i]) {
        bail!(
            "page {i}: CPU page PFN {:#x}, DMA address PFN {:#x} (no IOMMU here: they must agree)",
            cpu[i],
            dma[i]
        );
    }
    Ok(cpu)
}

/// The importer's mapping points at the memfd's own pages (pagemap of a mapping of the
/// memfd), on both exporters, shmem and hugetlb, static and dynamic; on ours also at what
/// UDMABUF_LIVE_PFNS reports.
fn pfns_are_the_memfd_pages() -> CaseResult {
    for dev in [OURS, BUILTIN] {
        need(dev)?;
        for backing in [Backing::Shmem, Backing::Hugetlb] {
            let size = 4 * MIB;
            let pages = size / 4096;
            let memfd = patterned_memfd(size, backing, 0x5f)?;
            let buf = create_dmabuf(dev, &memfd, size)?;
            let map = map_shared(&memfd, size as u64)?;
            // Reading faults the mapping's pages in (pagemap shows only present pages).
            let bytes = map.read(0, size as u64);
            ensure!(
                bytes
                    .iter()
                    .enumerate()
                    .all(|(i, &b)| b == expected_byte(i, 0x5f)),
                "the memfd lost its pattern"
            );
            let want = mapped_pfns(&map, 0, pages as u64)?;
            if dev == OURS {
                let devf = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(OURS)
                    .with_context(|| format!("open {OURS}"))?;
                ensure!(
                    pfns(&devf, &buf, 0, pages as u64)? == want,
                    "UDMABUF_LIVE_PFNS differs from pagemap"
                );
            }
            for dynamic in [false, true] {
                let got = importer_pfns(&buf, dynamic, pages)?;
                if let Some(i) = (0..pages).find(|&i| got[i] != want[i]) {
                    bail!(
                        "{dev} {backing:?} {}: page {i}: the importer maps PFN {:#x}, the memfd has {:#x}",
                        if dynamic { "dynamic" } else { "static" },
                        got[i],
                        want[i]
                    );
                }
            }
        }
    }
    Ok(())
}

/// Partial ranges, the cut at the end of the buffer, and the errnos of bad requests.
fn pfns_ranges_and_bad_requests() -> CaseResult {
    need(OURS)?;
    let pages = 64usize;
    let memfd = patterned_memfd(pages * 4096, Backing::Shmem, 0x77)?;
    let buf = create_dmabuf(OURS, &memfd, pages * 4096)?;
    let imp = Importer::open()?;
    imp.attach(buf.as_raw_fd(), true).context("ATTACH")?;
    let mut all = vec![0u64; pages];
    expect_eq("PFNs of the whole buffer", imp.pfns(0, &mut all, 0)?, pages)?;
    for flags in [0, IMPORTER_PFNS_DMA] {
        let mut some = vec![0u64; 5];
        expect_eq("PFNs of pages 3..8", imp.pfns(3, &mut some, flags)?, 5)?;
        expect_eq("PFNs of pages 3..8", some.as_slice(), &all[3..8])?;
        let mut tail = vec![0u64; 10];
        expect_eq(
            "PFNs asked past the end (cut)",
            imp.pfns(pages as u64 - 4, &mut tail, flags)?,
            4,
        )?;
        expect_eq("PFNs of the last 4 pages", &tail[..4], &all[pages - 4..])?;
        expect_eq(
            "PFNs from the end",
            imp.pfns(pages as u64, &mut tail, flags)?,
            0,
        )?;
        expect_errno(
            "PFNS starting past the end",
            imp.pfns(pages as u64 + 1, &mut tail, flags),
            Errno::EINVAL,
        )?;
    }
    let mut out = [0u64; 4];
    let mut req = ImporterPfns {
        first_page: 0,
        count: 4,
        user_ptr: out.as_mut_ptr() as u64,
        flags: 4,
        reserved: 0,
    };
    expect_errno(
        "PFNS with an unknown flag",
        // SAFETY: `user_ptr` is `out`, room for the 4 u64s asked for.
        unsafe { imp.pfns_req(&mut req) },
        Errno::EINVAL,
    )?;
    req.flags = 0;
    req.reserved = 1;
    expect_errno(
        "PFNS with reserved set",
        // SAFETY: as above.
        unsafe { imp.pfns_req(&mut req) },
        Errno::EINVAL,
    )?;
    req.reserved = 0;
    req.user_ptr = 8;
    expect_errno(
        "PFNS to a bad address",
        // SAFETY: address 8 is never mapped: the kernel refuses it with EFAULT.
        unsafe { imp.pfns_req(&mut req) },
        Errno::EFAULT,
    )?;
    expect_eq(
        "STATS after all that (maps, remaps, mapped)",
        {
            let s = imp.stats()?;
            (s.maps, s.remaps, s.mapped)
        },
        (1, 0, 1),
    )?;
    Ok(())
}

// ---- VMAP, VREAD, VUNMAP ----

/// A vmap of a buffer of either exporter shows its bytes; VREAD is cut at the end; one
/// vmap per file; VUNMAP ends it; a vmap and a DMA mapping can coexist.
fn vmap_reads_the_buffer() -> CaseResult {
    for dev in [OURS, BUILTIN] {
        need(dev)?;
        for backing in [Backing::Shmem, Backing::Hugetlb] {
            let size = 6 * MIB;
            let seed = 0x7a + size as u64;
            let memfd = patterned_memfd(size, backing, seed)?;
            let buf = create_dmabuf(dev, &memfd, size)?;
            let imp = Importer::open()?;
            imp.attach(buf.as_raw_fd(), false).context("ATTACH")?;
            expect_errno(
                "VREAD before VMAP",
                imp.vread(0, &mut [0u8; 16]),
                Errno::ENXIO,
            )?;
            expect_errno("VUNMAP before VMAP", imp.vunmap(), Errno::ENXIO)?;
            imp.vmap()
                .with_context(|| format!("VMAP of a {dev} {backing:?} buffer"))?;
            let s = imp.stats()?;
            expect_eq(
                "STATS while vmapped (vmapped, mapped, maps)",
                (s.vmapped, s.mapped, s.maps),
                (1, 0, 0),
            )?;
            expect_errno("second VMAP on one file", imp.vmap(), Errno::EBUSY)?;
            verify_vmap(&imp, size, seed)?;
            expect_read_edges(&imp, Via::Vread, size, seed)?;
            expect_errno(
                "VREAD to a bad address",
                {
                    let mut r = ImporterRead {
                        offset: 0,
                        len: 16,
                        user_ptr: 8,
                    };
                    // SAFETY: `r` is a live ImporterRead; its user pointer, address 8,
                    // is never mapped, so the kernel refuses it with EFAULT.
                    unsafe { ioctl(imp.raw_fd(), IMPORTER_VREAD, &mut r) }
                },
                Errno::EFAULT,
            )?;
            // A DMA mapping next to the vmap sees the same bytes.
            imp.map().context("MAP while vmapped")?;
            verify(&imp, size - 8192, 8192, seed)?;
            imp.vunmap().context("VUNMAP")?;
            let s = imp.stats()?;
            expect_eq(
                "STATS after VUNMAP (vmapped, mapped)",
                (s.vmapped, s.mapped),
                (0, 1),
            )?;
            expect_errno(
                "VREAD after VUNMAP",
                imp.vread(0, &mut [0u8; 10]),
                Errno::ENXIO,
            )?;
            expect_errno("second VUNMAP", imp.vunmap(), Errno::ENXIO)?;
            imp.vmap().context("VMAP again")?;
            verify_vmap(&imp, size, seed)?;
        }
    }
    Ok(())
}

/// DETACH and close end the vmap too: udmabuf-live's INFO drops VMAPPED, and the buffer
/// can be vmapped again; the importer can hold the only reference through its vmap.
fn vmap_goes_with_detach_and_close() -> CaseResult {
    need(OURS)?;
    let devf = OpenOptions::new()
        .read(true)
        .write(true)
        .open(OURS)
        .with_context(|| format!("open {OURS}"))?;
    let size = 2 * MIB;
    let memfd = patterned_memfd(size, Backing::Shmem, 0x99)?;
    let buf = create_dmabuf(OURS, &memfd, size)?;
    let vmapped = |what: &str, want: bool| -> Result<()> {
        let i = info(&devf, &buf)?;
        ensure!(
            (i.state & VMAPPED != 0) == want,
            "INFO {what}: VMAPPED is {}, expected {want}",
            i.state & VMAPPED != 0
        );
        Ok(())
    };
    vmapped("before any vmap", false)?;
    let imp = Importer::open()?;
    imp.attach(buf.as_raw_fd(), true)?;
    imp.vmap()?;
    vmapped("with a vmap", true)?;
    imp.detach().context("DETACH with a vmap")?;
    expect_eq("STATS after DETACH", imp.stats()?, ImporterStats::default())?;
    vmapped("after DETACH", false)?;
    // Two files vmap the same buffer: both must go before it is no longer vmapped.
    let (a, b) = (Importer::open()?, Importer::open()?);
    for imp in [&a, &b] {
        imp.attach(buf.as_raw_fd(), false)?;
        imp.vmap()?;
    }
    drop(a);
    vmapped("with one of two vmaps closed", true)?;
    verify_vmap(&b, size, 0x99)?;
    drop(b);
    vmapped("after closing both", false)?;
    // The importer's vmap alone keeps the buffer (and udmabuf_live) alive.
    let module = udmabuf_live_uapi::MODULE_NAME;
    let base = refcnt(module)?;
    let imp = Importer::open()?;
    {
        let memfd = patterned_memfd(size, Backing::Hugetlb, 0x9a)?;
        let buf = create_dmabuf(OURS, &memfd, size)?;
        imp.attach(buf.as_raw_fd(), false)?;
        imp.vmap()?;
    }
    expect_eq(
        "udmabuf_live refcnt with only the importer's vmap",
        refcnt(module)?,
        base + 1,
    )?;
    verify_vmap(&imp, size, 0x9a)?;
    drop(imp);
    expect_eq(
        "udmabuf_live refcnt after closing the importer",
        refcnt(module)?,
        base,
    )?;
    Ok(())
}

fn unload_importer() -> CaseResult {
    let name = CString::new(IMPORTER_MODULE_NAME)?;
    let flags = nix::kmod::DeleteModuleFlags::O_NONBLOCK;
    {
        let _open = Importer::open()?;
        expect_eq(
            "delete_module with the importer open",
            nix::kmod::delete_module(&name, flags),
            Err(Errno::EWOULDBLOCK),
        )?;
    }
    nix::kmod::delete_module(&name, flags).context("delete_module(ulive_importer)")?;
    ensure!(!importer_loaded(), "{IMPORTER_MODULE_NAME} still loaded");
    ensure!(
        !Path::new(&client::device_path()).exists(),
        "/dev/{IMPORTER_DEVICE_NAME} still exists"
    );
    Ok(())
}
