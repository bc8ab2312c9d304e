//! Shared by the live-update suites: the udmabuf-live ioctls (INFO, SYNC, VERIFY, PFNS),
//! /proc/self/pagemap, hole punching, a forked child, and the checks a user makes after
//! an update: VERIFY finds every page matching, the counters moved by what was punched,
//! and the buffer holds the very pages the memfd maps.

use super::common::*;
use anyhow::{bail, ensure, Context, Result};
use nix::errno::Errno;
use nix::libc;
use std::ops::RangeInclusive;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use udmabuf_live_uapi::*;

pub const WATCHED: u32 = UDMABUF_LIVE_STATE_WATCHED;
pub const PENDING: u32 = UDMABUF_LIVE_STATE_PENDING;
pub const STALE: u32 = UDMABUF_LIVE_STATE_STALE;
pub const VMAPPED: u32 = UDMABUF_LIVE_STATE_VMAPPED;

/// How often the worker tries an update before it leaves it pending (worker.rs); it
/// pauses 2 ms after the first failed try, doubling each time.
pub const WORKER_TRIES: u64 = 10;

/// How most live cases start: the device, a memfd of `size` bytes filled with
/// `pattern(seed)` and kept mapped (so the buffer is watched), and a dma-buf over it.
/// Callers destructure it, so the parts drop as the locals they replace did (buf first),
/// or keep it whole (`w.buf`, `w.info()`): the fields are declared in that same order,
/// the order a struct drops them in.
pub struct Watched {
    pub buf: OwnedFd,
    pub map: Mapping,
    pub memfd: OwnedFd,
    pub dev: OwnedFd,
}

impl Watched {
    /// UDMABUF_LIVE_INFO of the buffer.
    pub fn info(&self) -> Result<UdmabufLiveInfo> {
        info(&self.dev, &self.buf)
    }

    /// UDMABUF_LIVE_SYNC of the buffer.
    pub fn sync(&self, timeout_ms: u32) -> Result<()> {
        sync(&self.dev, &self.buf, timeout_ms)
    }

    /// PFNS of the buffer's first `pages` pages must be the memfd mapping's (pagemap).
    /// Returns them.
    pub fn expect_pfns_mapped(&self, what: &str, pages: u64) -> Result<Vec<u64>> {
        expect_pfns(
            what,
            &self.dev,
            &self.buf,
            0,
            &mapped_pfns(&self.map, 0, pages)?,
        )
    }
}

pub fn watched(kind: Backing, size: u64, seed: u8) -> Result<Watched> {
    let dev = open_device(&test_device())?;
    let memfd = memfd(kind, size)?;
    let map = map_shared(&memfd, size)?;
    map.write(0, &pattern(seed, size));
    let buf = create(dev.as_fd(), &memfd, 0, size, 0).context("UDMABUF_CREATE")?;
    Ok(Watched {
        buf,
        map,
        memfd,
        dev,
    })
}

pub use crate::util::{in_child, XorShift};
pub use udmabuf_live_uapi::sys::{info_raw, pfns_raw, sync_raw, verify_raw};

/// UDMABUF_LIVE_PFNS of `count` pages from `first_page` into a fresh vector.
pub fn pfns_of(
    dev: &impl AsRawFd,
    fd: u32,
    first_page: u64,
    count: u64,
) -> Result<Vec<u64>, Errno> {
    let mut v = vec![0u64; count as usize];
    // SAFETY: `v` has room for `count` u64s.
    unsafe { pfns_raw(dev, fd, first_page, count, v.as_mut_ptr() as u64) }?;
    Ok(v)
}

/// INFO, SYNC and VERIFY with the bare errno, for callers that branch on it.
pub fn try_info(dev: &impl AsRawFd, dmabuf: &impl AsRawFd) -> Result<UdmabufLiveInfo, Errno> {
    info_raw(dev, dmabuf.as_raw_fd() as u32)
}

pub fn try_sync(dev: &impl AsRawFd, dmabuf: &impl AsRawFd, timeout_ms: u32) -> Result<(), Errno> {
    sync_raw(dev, dmabuf.as_raw_fd() as u32, timeout_ms)
}

pub fn try_verify(dev: &impl AsRawFd, dmabuf: &impl AsRawFd) -> Result<UdmabufLiveVerify, Errno> {
    verify_raw(dev, dmabuf.as_raw_fd() as u32)
}

pub fn info(dev: &impl AsRawFd, dmabuf: &impl AsRawFd) -> Result<UdmabufLiveInfo> {
    info_raw(dev, fdnum(dmabuf)).context("UDMABUF_LIVE_INFO")
}

pub fn sync(dev: &impl AsRawFd, dmabuf: &impl AsRawFd, timeout_ms: u32) -> Result<()> {
    sync_raw(dev, fdnum(dmabuf), timeout_ms)
        .with_context(|| format!("UDMABUF_LIVE_SYNC (timeout {timeout_ms} ms)"))
}

pub fn verify(dev: &impl AsRawFd, dmabuf: &impl AsRawFd) -> Result<UdmabufLiveVerify> {
    verify_raw(dev, fdnum(dmabuf)).context("UDMABUF_LIVE_VERIFY")
}

pub fn pfns(
    dev: &impl AsRawFd,
    dmabuf: &impl AsRawFd,
    first_page: u64,
    count: u64,
) -> Result<Vec<u64>> {
    pfns_of(dev, fdnum(dmabuf), first_page, count).with_context(|| {
        format!(
            "UDMABUF_LIVE_PFNS of pages {first_page}..{}",
            first_page + count
        )
    })
}

/// INFO state bits by name, for messages.
pub fn state_names(s: u32) -> String {
    let names = [
        (PENDING, "PENDING"),
        (STALE, "STALE"),
        (WATCHED, "WATCHED"),
        (VMAPPED, "VMAPPED"),
    ];
    let mut v: Vec<String> = names
        .iter()
        .filter(|(b, _)| s & b != 0)
        .map(|(_, n)| n.to_string())
        .collect();
    let unknown = s & !(PENDING | STALE | WATCHED | VMAPPED);
    if unknown != 0 {
        v.push(format!("{unknown:#x}"));
    }
    if v.is_empty() {
        "none".into()
    } else {
        v.join("|")
    }
}

/// INFO must show every bit of `set` and none of `clear`.
pub fn expect_state(what: &str, i: &UdmabufLiveInfo, set: u32, clear: u32) -> Result<()> {
    ensure!(
        i.state & set == set && i.state & clear == 0,
        "{what}: INFO state {} (want {} set, {} clear); {i:?}",
        state_names(i.state),
        state_names(set),
        state_names(clear)
    );
    Ok(())
}

/// Between two INFO readings: `updates` updates were applied (within the range given),
/// the generation moved with them, and exactly `pages` pages were swapped in.
pub fn expect_progress(
    what: &str,
    before: &UdmabufLiveInfo,
    after: &UdmabufLiveInfo,
    updates: RangeInclusive<u64>,
    pages: u64,
) -> Result<()> {
    let du = after.updates.wrapping_sub(before.updates);
    let dg = after.generation.wrapping_sub(before.generation);
    let dp = after.pages_swapped.wrapping_sub(before.pages_swapped);
    ensure!(
        updates.contains(&du) && dg == du && dp == pages,
        "{what}: INFO moved by updates +{du}, generation +{dg}, pages_swapped +{dp}; expected updates +{updates:?} \
         (generation the same), pages_swapped +{pages} (before {before:?}, after {after:?})"
    );
    Ok(())
}

/// The dma-buf is current: its mmap `bmap` shows `want` (from byte 0) and VERIFY finds
/// every one of those pages identical to the memfd's.
pub fn expect_current(
    what: &str,
    dev: &impl AsRawFd,
    dmabuf: &impl AsRawFd,
    bmap: &Mapping,
    want: &[u8],
) -> Result<()> {
    let len = want.len() as u64;
    expect_bytes(&format!("dma-buf mmap {what}"), &bmap.read(0, len), want)?;
    expect_all_matching(what, dev, dmabuf, len / ps())
}

/// A write through the memfd mapping `map` over pages the buffer already follows (a hole
/// refilled before): SYNC (`timeout_ms`) finds no update to make after `after`, and the
/// dma-buf's mmap `bmap` shows `bytes` at once.
pub fn expect_written_in_place(
    dev: &impl AsRawFd,
    dmabuf: &impl AsRawFd,
    map: &Mapping,
    bmap: &Mapping,
    after: &UdmabufLiveInfo,
    bytes: &[u8],
    timeout_ms: u32,
) -> Result<()> {
    map.write(0, bytes);
    sync(dev, dmabuf, timeout_ms)?;
    expect_progress(
        "writing the filled hole",
        after,
        &info(dev, dmabuf)?,
        0..=0,
        0,
    )?;
    expect_bytes(
        "dma-buf mmap after writing the filled hole",
        &bmap.read(0, bytes.len() as u64),
        bytes,
    )
}

/// VERIFY must find all `pages` pages identical to the memfd's.
pub fn expect_all_matching(
    what: &str,
    dev: &impl AsRawFd,
    dmabuf: &impl AsRawFd,
    pages: u64,
) -> Result<()> {
    let v = verify(dev, dmabuf)?;
    ensure!(
        v.pages == pages
            && v.matching == pages
            && v.stale == 0
            && v.holes == 0
            && v.first_mismatch == u64::MAX,
        "{what}: VERIFY {v:?}, expected all {pages} pages matching"
    );
    Ok(())
}

/// /proc/self/pagemap: bit 63 present, bits 0-54 the PFN (shown to CAP_SYS_ADMIN only).
const PM_PRESENT: u64 = 1 << 63;
const PM_PFN_MASK: u64 = (1 << 55) - 1;

/// The PFNs behind `pages` pages of `map` from byte `off`, from /proc/self/pagemap.
/// Fails if a page is not present or the PFN is hidden (0).
pub fn mapped_pfns(map: &Mapping, off: u64, pages: u64) -> Result<Vec<u64>> {
    let f = std::fs::File::open("/proc/self/pagemap").context("open /proc/self/pagemap")?;
    let va = map.addr() as u64 + off;
    let mut raw = vec![0u8; pages as usize * 8];
    f.read_exact_at(&mut raw, va / ps() * 8)
        .with_context(|| format!("read /proc/self/pagemap at {va:#x}"))?;
    let mut out = Vec::with_capacity(pages as usize);
    for (i, e) in raw
        .chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().unwrap()))
        .enumerate()
    {
        ensure!(
            e & PM_PRESENT != 0,
            "pagemap: page {i} at {:#x} not present ({e:#x})",
            va + i as u64 * ps()
        );
        let pfn = e & PM_PFN_MASK;
        ensure!(
            pfn != 0,
            "pagemap: PFN of page {i} at {:#x} reads 0 (hidden without CAP_SYS_ADMIN?)",
            va + i as u64 * ps()
        );
        out.push(pfn);
    }
    Ok(out)
}

/// PFNS of dma-buf pages `first..first + want.len()` must equal `want` (typically the
/// memfd mapping's PFNs from pagemap). Returns them.
pub fn expect_pfns(
    what: &str,
    dev: &impl AsRawFd,
    dmabuf: &impl AsRawFd,
    first: u64,
    want: &[u64],
) -> Result<Vec<u64>> {
    let got = pfns(dev, dmabuf, first, want.len() as u64)?;
    let bad: Vec<usize> = (0..want.len()).filter(|&i| got[i] != want[i]).collect();
    if let Some(&i) = bad.first() {
        bail!(
            "{what}: {} of {} pages differ from the memfd mapping's PFN; first: dma-buf page {} has PFN {:#x}, \
             pagemap says {:#x}",
            bad.len(),
            want.len(),
            first + i as u64,
            got[i],
            want[i]
        );
    }
    Ok(got)
}

/// The module's repopulation policy now (`lazy` or `eager`; the harness sets it for each
/// suite).
pub fn repopulate_policy() -> String {
    let p = format!("/sys/module/{MODULE_NAME}/parameters/repopulate");
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The pages for which `moved(i)` is true must have new PFNs, the others the same. Under
/// the lazy policy a punched page is let go before its replacement is allocated, which
/// may then be the same page frame (the huge page pool hands back the page it got last):
/// there only the others are checked (callers compare every PFN with the memfd's too).
pub fn expect_moved(
    what: &str,
    old: &[u64],
    new: &[u64],
    moved: impl Fn(usize) -> bool,
) -> Result<()> {
    let lazy = repopulate_policy() == "lazy";
    for i in 0..old.len() {
        if moved(i) {
            if lazy {
                continue;
            }
            ensure!(
                old[i] != new[i],
                "{what}: page {i} was punched but still has its old PFN {:#x}",
                old[i]
            );
        } else {
            ensure!(
                old[i] == new[i],
                "{what}: page {i} was not punched but moved from PFN {:#x} to {:#x}",
                old[i],
                new[i]
            );
        }
    }
    Ok(())
}

/// How a hole is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Punch {
    /// fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) on the memfd.
    Fallocate,
    /// madvise(MADV_REMOVE) on a shared mapping of the memfd.
    MadvRemove,
}

pub fn punch(memfd: &impl AsRawFd, off: u64, len: u64) -> Result<()> {
    nix::fcntl::fallocate(
        memfd.as_raw_fd(),
        nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
            | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
        off as i64,
        len as i64,
    )
    .with_context(|| format!("fallocate(PUNCH_HOLE, {off:#x}, {len:#x})"))?;
    Ok(())
}

/// madvise(MADV_REMOVE) over bytes `off..off+len` of `map`.
pub fn madvise_remove(map: &Mapping, off: u64, len: u64) -> Result<()> {
    // SAFETY: the range lies in a live mapping we own; MADV_REMOVE frees its backing
    // store, which later accesses see as zeroes or fresh pages, never invalid memory.
    let r = unsafe {
        libc::madvise(
            (map.addr() + off as usize) as *mut libc::c_void,
            len as usize,
            libc::MADV_REMOVE,
        )
    };
    Errno::result(r).with_context(|| format!("madvise(MADV_REMOVE, +{off:#x}, {len:#x})"))?;
    Ok(())
}

/// Punch `off..off+len` of a memfd, through `map` for MADV_REMOVE.
pub fn make_hole(
    how: Punch,
    memfd: &impl AsRawFd,
    map: &Mapping,
    off: u64,
    len: u64,
) -> Result<()> {
    match how {
        Punch::Fallocate => punch(memfd, off, len),
        Punch::MadvRemove => madvise_remove(map, off, len),
    }
}

fn file_of(fd: &OwnedFd) -> Result<std::fs::File> {
    Ok(std::fs::File::from(fd.try_clone().context("dup")?))
}

/// pwrite(2) into a (shmem) memfd, without mapping it.
pub fn pwrite(memfd: &OwnedFd, off: u64, data: &[u8]) -> Result<()> {
    file_of(memfd)?
        .write_all_at(data, off)
        .with_context(|| format!("pwrite {} bytes at {off:#x}", data.len()))
}

/// pread(2) from a (shmem) memfd, without mapping it.
pub fn pread(memfd: &OwnedFd, off: u64, len: u64) -> Result<Vec<u8>> {
    let mut v = vec![0u8; len as usize];
    file_of(memfd)?
        .read_exact_at(&mut v, off)
        .with_context(|| format!("pread {len} bytes at {off:#x}"))?;
    Ok(v)
}

/// /sys/module/udmabuf_live/refcnt.
pub fn module_refcnt() -> Result<u64> {
    crate::util::module_refcnt(MODULE_NAME)
}

/// The module's refcount must come back to `base`. A dma-buf's last reference can be
/// dropped from a kernel thread (a delayed fput: an exiting process's address space torn
/// down by whoever held its mm last, such as the worker re-arming a notifier), so allow
/// up to 2 s, and report the lag.
pub fn expect_refcnt(what: &str, base: u64) -> Result<()> {
    let t0 = std::time::Instant::now();
    loop {
        let got = module_refcnt()?;
        if got == base {
            if t0.elapsed() > std::time::Duration::from_millis(20) {
                crate::ktap::out(&format!(
                    "    # {what}: module refcnt back at its base after {} ms",
                    t0.elapsed().as_millis()
                ));
            }
            return Ok(());
        }
        ensure!(
            t0.elapsed() < std::time::Duration::from_secs(2),
            "{what}: module refcnt {got}, expected its base {base} after 2 s (a reference leaked)"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// A counter of /proc/meminfo without its unit.
pub fn meminfo(key: &str) -> Result<u64> {
    proc_counter("/proc/meminfo", key)
}

/// HugePages_Free: a leaked pin of a hugetlb page keeps it used.
pub fn hugepages_free() -> Result<u64> {
    meminfo("HugePages_Free")
}

/// The huge page pool's free and reserved counts, to compare before and after a case.
pub fn hugepage_pool() -> Result<(u64, u64)> {
    Ok((meminfo("HugePages_Free")?, meminfo("HugePages_Rsvd")?))
}

/// The pool must be back at `base` once everything is closed. Freeing can lag behind
/// the last close (a queued work item may still hold the buffer): wait up to 5 s, and
/// report the lag.
pub fn expect_hugepage_pool(what: &str, base: (u64, u64)) -> Result<()> {
    let t0 = std::time::Instant::now();
    let mut at_once = true;
    loop {
        let now = hugepage_pool()?;
        if now == base {
            if !at_once {
                crate::ktap::out(&format!(
                    "    # {what}: huge page pool back {} ms after the last close",
                    t0.elapsed().as_millis()
                ));
            }
            return Ok(());
        }
        ensure!(
            t0.elapsed() < std::time::Duration::from_secs(5),
            "{what}: HugePages_Free/HugePages_Rsvd {}/{}, {}/{} before, after 5 s (huge pages or reservations leaked)",
            now.0,
            now.1,
            base.0,
            base.1
        );
        at_once = false;
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
