//! `stress`: several processes and threads hammer /dev/udmabuf-live at once for a bounded
//! time (`ULIVE_STRESS_SECS`, default 20; the guest takes it from `ulive.stress_secs=` on
//! the kernel command line), then a final check proves that nothing was lost:
//!
//! - writers (2 threads here, 2 in a forked process) own disjoint 4-page chunks of three
//!   shared memfds; each loop punches part of a chunk (or not), writes a new version of
//!   each page through its mapping of the memfd, and sometimes SYNCs a buffer. Every
//!   page carries a header (magic, memfd, page, sequence number), and each writer
//!   publishes the sequence it started and finished per page in shared memory, so the
//!   final content of every page is known exactly;
//! - four dma-bufs over those memfds (whole memfds, a reordered CREATE_LIST, and a list
//!   across all three) are read through CPU mmaps (2 threads, some reads bracketed by
//!   DMA_BUF_IOCTL_SYNC, some VERIFY/INFO calls) and through the test importer (one
//!   thread attaching dynamically, one statically, map/read/detach loops);
//! - a second forked process (2 threads) creates and closes private buffers (CREATE and
//!   CREATE_LIST, shmem and hugetlb, watched or not), punching, writing and SYNCing some
//!   of them and checking each one exactly, since it is alone with it.
//!
//! While running, every page read must be plausible: all zero (a hole, or a new page not
//! written yet) or a header naming the right memfd and page, with a sequence the owner
//! has at least started. Afterwards every buffer is SYNCed: VERIFY must find every page
//! matching, every memfd page must hold its owner's last write (no lost write) and every
//! dma-buf page, through mmap and through the importer, the same bytes (no stale page).
//! The module's reference count must be back at its base once everything is closed.

use super::common::*;
use super::importer_client::{
    ensure_loaded as ensure_importer_loaded, unload as unload_loaded_importer, Importer,
};
use super::live_util::{punch, try_info as info, try_sync as sync, try_verify as verify};
use super::{cases, Suite};
use crate::ktap::{out, CaseResult};
use crate::util::{env_u64, module_refcnt, Rng};
use anyhow::{anyhow, bail, ensure, Context, Result};
use nix::errno::Errno;
use nix::libc;
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};
use std::ffi::c_void;
use std::io::{Read, Write};
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub fn suite() -> Suite {
    Suite::new(
        "stress",
        cases![
            punch_across_list_ranges_of_one_memfd,
            cpu_access_end_after_live_update,
            concurrent_create_punch_sync_map_read
        ],
    )
}

/// Shared memfds, pages per memfd, pages per owned chunk, writers.
const MEMFDS: usize = 3;
const PAGES: usize = 32;
const CHUNK: usize = 4;
const WRITERS: usize = 4;
const MAGIC: u32 = 0x554C_5631; // "1VLU"
const HEADER: usize = 32;

/// Operation counters, shared by every process.
#[derive(Clone, Copy)]
enum Op {
    Creates,
    Punches,
    Writes,
    Syncs,
    SyncTimeouts,
    Maps,
    Reads,
    CpuSyncs,
    Verifies,
    Infos,
    /// DMA_BUF_IOCTL_SYNC(END) refused with EINVAL right after a successful START.
    CpuSyncEndRefused,
    /// Reads that showed a page that cannot be the buffer's (freed/foreign/misplaced).
    BadReads,
    /// Private buffers still stale after punch + write + SYNC.
    ChurnStale,
}
const OPS: usize = 13;

/// The control block, in a MAP_SHARED anonymous mapping so forked workers share it.
/// All-zero bytes are its initial state.
#[repr(C)]
struct Control {
    stop: AtomicU32,
    /// Sequence number each page's owner started writing / finished writing.
    started: [[AtomicU64; PAGES]; MEMFDS],
    done: [[AtomicU64; PAGES]; MEMFDS],
    ops: [AtomicU64; OPS],
}

impl World<'_> {
    /// Count a bad read and keep the first few reports.
    fn bad_read(&self, report: impl FnOnce() -> String) {
        self.ctl.count(Op::BadReads);
        let mut bad = self.bad.lock().unwrap_or_else(|e| e.into_inner());
        if bad.len() < 3 {
            bad.push(report());
        }
    }
}

impl Control {
    fn count(&self, op: Op) {
        self.ops[op as usize].fetch_add(1, Ordering::Relaxed);
    }
    fn add(&self, op: Op, n: u64) {
        self.ops[op as usize].fetch_add(n, Ordering::Relaxed);
    }
    fn get(&self, op: Op) -> u64 {
        self.ops[op as usize].load(Ordering::Relaxed)
    }
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire) != 0
    }
}

/// A raw mapping shared by threads (and inherited by forked processes). Every access is
/// a volatile or raw copy: other threads, processes and the kernel change the memory.
struct Raw {
    ptr: NonNull<c_void>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; all access goes through raw pointers with
// no Rust references into it, so sharing the address between threads is sound.
unsafe impl Send for Raw {}
// SAFETY: as above.
unsafe impl Sync for Raw {}

impl Raw {
    fn anon_shared(len: usize) -> Result<Self> {
        // Zero-filled, and only accessed through raw pointers.
        let ptr = mmap_anon_rw(len, true)?;
        Ok(Self { ptr, len })
    }

    fn file(fd: impl AsFd, len: usize, writable: bool) -> Result<Self, Errno> {
        let prot = if writable {
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE
        } else {
            ProtFlags::PROT_READ
        };
        // SAFETY: a fresh shared mapping at an address the kernel picks.
        let ptr = unsafe {
            mmap(
                None,
                NonZeroUsize::new(len).ok_or(Errno::EINVAL)?,
                prot,
                MapFlags::MAP_SHARED,
                fd,
                0,
            )
        }?;
        Ok(Self { ptr, len })
    }

    fn file_at(fd: impl AsFd, len: usize, offset: usize) -> Result<Self, Errno> {
        // SAFETY: a fresh shared read-only mapping at an address the kernel picks.
        let ptr = unsafe {
            mmap(
                None,
                NonZeroUsize::new(len).ok_or(Errno::EINVAL)?,
                ProtFlags::PROT_READ,
                MapFlags::MAP_SHARED,
                fd,
                offset as libc::off_t,
            )
        }?;
        Ok(Self { ptr, len })
    }

    fn at(&self, off: usize) -> *mut u8 {
        assert!(off < self.len);
        // SAFETY: in bounds (checked).
        unsafe { self.ptr.as_ptr().cast::<u8>().add(off) }
    }

    fn read(&self, off: usize, len: usize) -> Vec<u8> {
        assert!(off + len <= self.len);
        let mut v = vec![0u8; len];
        // SAFETY: in bounds of a live mapping.
        unsafe { std::ptr::copy_nonoverlapping(self.at(off), v.as_mut_ptr(), len) };
        v
    }

    fn write(&self, off: usize, data: &[u8]) {
        assert!(off + data.len() <= self.len);
        // SAFETY: in bounds of a live writable mapping.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.at(off), data.len()) };
    }

    fn read_u64(&self, off: usize) -> u64 {
        // SAFETY: in bounds and 8-byte aligned.
        unsafe { self.at(off).cast::<u64>().read_volatile() }
    }
    fn write_u64(&self, off: usize, v: u64) {
        // SAFETY: in bounds, aligned, writable.
        unsafe { self.at(off).cast::<u64>().write_volatile(v) }
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly this mapping; nothing refers into it any more.
        let _ = unsafe { munmap(self.ptr, self.len) };
    }
}

/// The identity word of a page header: magic, memfd and page in one u64, so it is
/// written with a single store.
fn tag(m: usize, page: usize) -> u64 {
    (MAGIC as u64) << 32 | (m as u64) << 16 | page as u64
}

/// The bytes of version `seq` of page `page` of memfd `m`: a 32-byte header (tag, seq,
/// !seq, 0) and a body that depends on all three.
fn page_content(m: usize, page: usize, seq: u64) -> Vec<u8> {
    let mut v = vec![0u8; ps() as usize];
    v[0..8].copy_from_slice(&tag(m, page).to_le_bytes());
    v[8..16].copy_from_slice(&seq.to_le_bytes());
    v[16..24].copy_from_slice(&(!seq).to_le_bytes());
    Rng::new(seq ^ ((m as u64) << 48) ^ ((page as u64) << 32) ^ 0x5EED).fill(&mut v[HEADER..]);
    v
}

/// Write version `seq` of a page through a mapping of its memfd: the body, then the
/// header with aligned volatile 8-byte stores, the tag last. A reader thus sees a tag
/// of 0 (a fresh page not yet written) or the right tag, and a sequence number that is
/// never torn and never ahead of what the writer announced in `started`.
fn write_page(map: &Raw, m: usize, page: usize, seq: u64) {
    let c = page_content(m, page, seq);
    let base = page * (ps() as usize);
    map.write(base + HEADER, &c[HEADER..]);
    map.write_u64(base + 24, 0);
    map.write_u64(base + 16, !seq);
    map.write_u64(base + 8, seq);
    map.write_u64(base, tag(m, page));
}

/// A shared buffer: a dma-buf over ranges of the shared memfds.
struct SharedBuf {
    dmabuf: OwnedFd,
    /// Buffer page i shows memfd page `layout[i]` = (memfd, page).
    layout: Vec<(usize, usize)>,
    name: &'static str,
}

/// Check a page header read while others write: a tag of 0 (a hole or a fresh page not
/// written yet) or the right memfd and page, with a sequence its owner has at least
/// started. `exact` is false for copies made by the kernel (importer READ), whose
/// memcpy may tear an 8-byte field: then each tag byte must be 0 or the right byte, and
/// the sequence is not judged.
fn plausible(
    ctl: &Control,
    what: &str,
    header: [u64; 2],
    want: (usize, usize),
    exact: bool,
) -> Result<()> {
    let (t, seq) = (header[0], header[1]);
    let want_tag = tag(want.0, want.1);
    if t == 0 {
        return Ok(());
    }
    if !exact {
        let ok = t
            .to_le_bytes()
            .iter()
            .zip(want_tag.to_le_bytes())
            .all(|(&g, w)| g == 0 || g == w);
        ensure!(ok, "{what}: header tag {t:#x} is not memfd {} page {} ({want_tag:#x}): a freed, foreign or misplaced page", want.0, want.1);
        return Ok(());
    }
    ensure!(t == want_tag, "{what}: header tag {t:#x} is not memfd {} page {} ({want_tag:#x}): a freed, foreign or misplaced page", want.0, want.1);
    let started = ctl.started[want.0][want.1].load(Ordering::Acquire);
    ensure!(
        seq <= started,
        "{what}: memfd {} page {} shows version {seq}, its writer only started {started}",
        want.0,
        want.1
    );
    Ok(())
}

fn header_of(bytes: &[u8]) -> [u64; 2] {
    let w = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
    [w(0), w(8)]
}

/// Read the header from a live mapping: seq first, then the tag (the writer stores them
/// in the other order, so a right tag comes with a sequence at least as new).
fn header_at(map: &Raw, off: usize) -> [u64; 2] {
    let seq = map.read_u64(off + 8);
    [map.read_u64(off), seq]
}

/// The chunks writer `w` owns: (memfd, first page).
fn owned_chunks(w: usize) -> Vec<(usize, usize)> {
    (0..MEMFDS * PAGES / CHUNK)
        .filter(|c| c % WRITERS == w)
        .map(|c| (c / (PAGES / CHUNK), (c % (PAGES / CHUNK)) * CHUNK))
        .collect()
}

/// Which workers run (`ULIVE_STRESS_ROLES`, comma-separated; default all): writers
/// always; `readers` (CPU mmap readers), `cpusync` (some reads bracketed by
/// DMA_BUF_IOCTL_SYNC), `dynamic` and `static` (importer threads), `churn` (the
/// create/close process), `syncs` (writers also SYNC), `pagewise` (readers map each
/// page as a one-page VMA). For narrowing a failure down.
#[derive(Clone, Copy)]
struct Roles {
    readers: bool,
    cpusync: bool,
    dynamic: bool,
    static_: bool,
    churn: bool,
    syncs: bool,
    /// Readers map every page as its own one-page VMA (no neighbours to pre-fault).
    pagewise: bool,
}

impl Roles {
    fn from_env() -> Result<Self> {
        let v = std::env::var("ULIVE_STRESS_ROLES").unwrap_or_default();
        if v.trim().is_empty() || v.trim() == "all" {
            return Ok(Self {
                readers: true,
                cpusync: true,
                dynamic: true,
                static_: true,
                churn: true,
                syncs: true,
                pagewise: false,
            });
        }
        let mut r = Self {
            readers: false,
            cpusync: false,
            dynamic: false,
            static_: false,
            churn: false,
            syncs: false,
            pagewise: false,
        };
        for role in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match role {
                "writers" => {}
                "readers" => r.readers = true,
                "cpusync" => r.cpusync = true,
                "dynamic" => r.dynamic = true,
                "static" => r.static_ = true,
                "churn" => r.churn = true,
                "syncs" => r.syncs = true,
                "pagewise" => r.pagewise = true,
                other => bail!("ULIVE_STRESS_ROLES: unknown role {other:?}"),
            }
        }
        Ok(r)
    }
}

struct World<'a> {
    roles: Roles,
    /// The first few bad reads, with their diagnosis (the run goes on after them).
    bad: &'a std::sync::Mutex<Vec<String>>,
    ctl: &'a Control,
    memfds: &'a [OwnedFd],
    maps: &'a [Raw],
    bufs: &'a [SharedBuf],
    seed: u64,
}

fn writer(w: &World<'_>, id: usize) -> Result<()> {
    let mut rng = Rng::new(w.seed ^ (0x1000 + id as u64));
    let dev = open_device(&test_device())?;
    let chunks = owned_chunks(id);
    while !w.ctl.stopped() {
        let (m, first) = *rng.pick(&chunks);
        let start = first + rng.below(CHUNK as u64) as usize;
        let len = 1 + rng.below((first + CHUNK - start) as u64) as usize;
        if rng.chance(60) {
            punch(
                &w.memfds[m],
                (start * (ps() as usize)) as u64,
                (len * (ps() as usize)) as u64,
            )?;
            w.ctl.count(Op::Punches);
        }
        for p in start..start + len {
            let seq = w.ctl.started[m][p].load(Ordering::Relaxed) + 1;
            w.ctl.started[m][p].store(seq, Ordering::Release);
            write_page(&w.maps[m], m, p, seq);
            w.ctl.done[m][p].store(seq, Ordering::Release);
            w.ctl.count(Op::Writes);
        }
        if w.roles.syncs && rng.chance(25) {
            let b = rng.pick(w.bufs);
            match sync(&dev, &b.dmabuf, 2000) {
                Ok(()) => w.ctl.count(Op::Syncs),
                // A static importer pinned the buffer for longer than that.
                Err(Errno::ETIMEDOUT) => w.ctl.count(Op::SyncTimeouts),
                Err(e) => bail!("writer {id}: SYNC on {}: {e}", b.name),
            }
        }
    }
    Ok(())
}

/// The PFN behind a user address of this process (/proc/self/pagemap, root only), or
/// None when nothing is mapped there.
fn pfn_of(addr: usize) -> Result<Option<u64>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open("/proc/self/pagemap").context("open /proc/self/pagemap")?;
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, (addr / (ps() as usize)) as u64 * 8)
        .context("read /proc/self/pagemap")?;
    let e = u64::from_le_bytes(b);
    Ok((e >> 63 == 1).then_some(e & ((1 << 55) - 1)))
}

/// A page read through a dma-buf mmap was not the buffer's. Gather what tells a stale
/// CPU mapping (the buffer's page array is right, the PTE is not) from a pinned page
/// that was freed (the array itself holds a page now used elsewhere): the buffer's PFN
/// for the page (PFNS), where the memfds keep the expected and the shown page now (the
/// memfd mappings, through /proc/self/pagemap: it does not walk the dma-buf's
/// VM_PFNMAP mappings, so the stale PTE itself cannot be read back), and a re-read of
/// the same address a moment later.
fn diagnose(
    w: &World<'_>,
    dev: &OwnedFd,
    view: &View,
    b: &SharedBuf,
    i: usize,
    seen: [u64; 2],
) -> String {
    let mut pfns = [0u64; 1];
    let r = udmabuf_live_uapi::sys::pfns(dev, &b.dmabuf, i as u64, &mut pfns);
    std::thread::sleep(Duration::from_millis(20));
    let again = view.header(i);
    let (m, p) = b.layout[i];
    let other_m = ((seen[0] >> 16) & 0xffff) as usize;
    let other_p = (seen[0] & 0xffff) as usize;
    let memfd_pfn = |m: usize, p: usize| -> String {
        if m < MEMFDS && p < PAGES {
            // Fault the page in through the memfd mapping first, so pagemap shows it.
            let _ = w.maps[m].read_u64(p * (ps() as usize));
            format!(
                "{:?}",
                pfn_of(w.maps[m].at(p * (ps() as usize)) as usize)
                    .ok()
                    .flatten()
            )
        } else {
            "-".into()
        }
    };
    let still = if again[0] == seen[0] {
        "still shows the foreign page (a stale PTE that persists)"
    } else {
        "shows another page now"
    };
    format!(
        "diagnosis: the buffer holds pfn {} (PFNS {:?}); memfd {m} page {p} is at pfn {}; the page shown belongs to memfd {other_m} page {other_p}, at pfn {}; 20 ms later the same address {still}: header {:#x}/{}; INFO {:?}",
        pfns[0],
        r.map(drop),
        memfd_pfn(m, p),
        memfd_pfn(other_m, other_p),
        again[0],
        again[1],
        info(dev, &b.dmabuf).ok()
    )
}

/// A reader's mappings of one buffer: one VMA for all of it, or one per page.
enum View {
    Whole(Raw),
    Pages(Vec<Raw>),
}

impl View {
    fn new(b: &SharedBuf, pagewise: bool) -> Result<Self> {
        let n = b.layout.len();
        Ok(if pagewise {
            View::Pages(
                (0..n)
                    .map(|i| {
                        Raw::file_at(&b.dmabuf, ps() as usize, i * (ps() as usize))
                            .with_context(|| format!("mmap page {i} of {}", b.name))
                    })
                    .collect::<Result<_>>()?,
            )
        } else {
            View::Whole(
                Raw::file(&b.dmabuf, n * (ps() as usize), false)
                    .with_context(|| format!("mmap {}", b.name))?,
            )
        })
    }

    fn header(&self, i: usize) -> [u64; 2] {
        match self {
            View::Whole(r) => header_at(r, i * (ps() as usize)),
            View::Pages(v) => header_at(&v[i], 0),
        }
    }
}

fn cpu_reader(w: &World<'_>, id: usize) -> Result<()> {
    let mut rng = Rng::new(w.seed ^ (0x2000 + id as u64));
    let dev = open_device(&test_device())?;
    let views: Vec<View> = w
        .bufs
        .iter()
        .map(|b| View::new(b, w.roles.pagewise))
        .collect::<Result<_>>()?;
    while !w.ctl.stopped() {
        let bi = rng.below(w.bufs.len() as u64) as usize;
        let b = &w.bufs[bi];
        let i = rng.below(b.layout.len() as u64) as usize;
        let what = format!("cpu reader {id}: {} page {i}", b.name);
        if w.roles.cpusync && rng.chance(10) {
            dmabuf_sync(&b.dmabuf, SYNC_START | SYNC_READ)
                .with_context(|| format!("{what}: DMA_BUF_IOCTL_SYNC start"))?;
            let h = views[bi].header(i);
            if let Err(e) = plausible(
                w.ctl,
                &format!("{what} (inside START/END)"),
                h,
                b.layout[i],
                true,
            ) {
                w.bad_read(|| format!("{e:#}; {}", diagnose(w, &dev, &views[bi], b, i, h)));
            }
            match dmabuf_sync(&b.dmabuf, SYNC_END | SYNC_READ) {
                Ok(()) => {}
                // Counted and judged at the end, so the run goes on to find more.
                Err(Errno::EINVAL) => w.ctl.count(Op::CpuSyncEndRefused),
                Err(e) => bail!("{what}: DMA_BUF_IOCTL_SYNC end: {e}"),
            }
            w.ctl.count(Op::CpuSyncs);
        } else {
            let h = views[bi].header(i);
            if let Err(e) = plausible(w.ctl, &what, h, b.layout[i], true) {
                w.bad_read(|| format!("{e:#}; {}", diagnose(w, &dev, &views[bi], b, i, h)));
            }
        }
        w.ctl.count(Op::Reads);
        if rng.chance(2) {
            let v = verify(&dev, &b.dmabuf).with_context(|| format!("{what}: VERIFY"))?;
            ensure!(
                v.pages == b.layout.len() as u64
                    && v.matching + v.stale + v.holes + v.unpopulated == v.pages,
                "{what}: VERIFY counts {v:?}"
            );
            w.ctl.count(Op::Verifies);
        }
        if rng.chance(2) {
            let i = info(&dev, &b.dmabuf).with_context(|| format!("{what}: INFO"))?;
            ensure!(
                i.size == (b.layout.len() * (ps() as usize)) as u64,
                "{what}: INFO size {}",
                i.size
            );
            w.ctl.count(Op::Infos);
        }
    }
    Ok(())
}

fn importer_loop(w: &World<'_>, id: usize, dynamic: bool) -> Result<()> {
    let mut rng = Rng::new(w.seed ^ (0x3000 + id as u64));
    let mut page = vec![0u8; ps() as usize];
    while !w.ctl.stopped() {
        let b = rng.pick(w.bufs);
        let imp = Importer::open()?;
        imp.attach(b.dmabuf.as_raw_fd(), dynamic)
            .with_context(|| format!("importer {id}: ATTACH {}", b.name))?;
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(b.layout.len() as u64) as usize;
            let n = imp
                .read(i * (ps() as usize), &mut page)
                .with_context(|| format!("importer {id}: READ {} page {i}", b.name))?;
            ensure!(
                n == (ps() as usize),
                "importer {id}: READ returned {n} bytes"
            );
            let kind = if dynamic { "dynamic" } else { "static" };
            if let Err(e) = plausible(
                w.ctl,
                &format!("{kind} importer {id}: {} page {i}", b.name),
                header_of(&page),
                b.layout[i],
                false,
            ) {
                w.bad_read(|| format!("{e:#}"));
            }
            w.ctl.count(Op::Reads);
        }
        w.ctl.add(Op::Maps, imp.stats()?.maps);
        imp.detach()?;
        if !dynamic {
            // A static mapping pins the buffer and defers updates: give SYNC room.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    Ok(())
}

/// One private buffer, made, exercised and checked exactly (nobody else touches it).
/// A buffer that SYNC left stale is a finding, returned (the run goes on).
fn churn_once(rng: &mut Rng, ctl: &Control, dev: &OwnedFd) -> Result<Option<String>> {
    let hugetlb = rng.chance(5);
    let (kind, size) = if hugetlb {
        (Backing::Hugetlb, HUGE_PAGE as usize)
    } else {
        (
            Backing::Shmem,
            (1 + rng.below(16) as usize) * (ps() as usize),
        )
    };
    let pages = size / (ps() as usize);
    let seed = rng.next_u32() as u8;
    let mfd = memfd(kind, size as u64)?;
    let watched = rng.chance(50);
    let creator = if watched {
        Some(Raw::file(&mfd, size, true)?)
    } else {
        None
    };
    let fill = pattern(seed, size as u64);
    match &creator {
        Some(m) => m.write(0, &fill),
        None => fill_memfd(&mfd, size as u64, 0, &fill)?,
    }
    let mut how = "CREATE".to_owned();
    let buf = if pages > 1 && rng.chance(30) {
        let k = 1 + rng.below(pages as u64 - 1);
        how = format!("CREATE_LIST split at page {k}");
        let ps64 = (ps() as usize) as u64;
        create_list(
            dev.as_fd(),
            UDMABUF_FLAGS_CLOEXEC,
            &[
                item(&mfd, 0, k * ps64),
                item(&mfd, k * ps64, size as u64 - k * ps64),
            ],
        )
    } else {
        create(dev.as_fd(), &mfd, 0, size as u64, UDMABUF_FLAGS_CLOEXEC)
    }
    .with_context(|| format!("churn: CREATE over a {kind:?} memfd of {pages} pages"))?;
    ctl.count(Op::Creates);
    ensure!(dmabuf_size(&buf)? == size as u64, "churn: dma-buf size");
    if kind == Backing::Shmem && rng.chance(50) {
        let p = rng.below(pages as u64) as usize;
        let n = 1 + rng.below((pages - p) as u64) as usize;
        punch(
            &mfd,
            (p * (ps() as usize)) as u64,
            (n * (ps() as usize)) as u64,
        )?;
        ctl.count(Op::Punches);
        let new = pattern(seed.wrapping_add(1), (n * (ps() as usize)) as u64);
        match &creator {
            Some(m) => m.write(p * (ps() as usize), &new),
            None => fill_memfd(&mfd, size as u64, (p * (ps() as usize)) as u64, &new)?,
        }
        ctl.count(Op::Writes);
        sync(dev, &buf, 2000).context("churn: SYNC of a private buffer")?;
        ctl.count(Op::Syncs);
        let v = verify(dev, &buf)?;
        ctl.count(Op::Verifies);
        if v.matching != pages as u64 {
            ctl.count(Op::ChurnStale);
            return Ok(Some(format!(
                "churn: VERIFY after punch of pages {p}..{} + write + SYNC of a private {pages}-page buffer ({how}, watched {watched}): {v:?}",
                p + n
            )));
        }
    }
    let view = Raw::file(&buf, size, false)?;
    let got = view.read(0, size);
    let want = read_memfd(&mfd, size as u64, 0, size as u64)?;
    expect_bytes(
        &format!(
            "churn: private {kind:?} buffer of {pages} pages (watched {watched}) against its memfd"
        ),
        &got,
        &want,
    )?;
    ctl.count(Op::Reads);
    Ok(None)
}

fn churn(ctl: &Control, seed: u64, id: usize) -> Result<()> {
    let mut rng = Rng::new(seed ^ (0x4000 + id as u64));
    let dev = open_device(&test_device())?;
    let mut findings = Vec::new();
    while !ctl.stopped() {
        if let Some(f) = churn_once(&mut rng, ctl, &dev)? {
            if findings.len() < 2 {
                findings.push(f);
            }
        }
    }
    if !findings.is_empty() {
        bail!("{}", findings.join("; "));
    }
    Ok(())
}

/// Run `threads` closures in scoped threads; the first error stops everyone.
fn run_threads<'s>(
    ctl: &Control,
    jobs: Vec<Box<dyn FnOnce() -> Result<()> + Send + 's>>,
) -> Vec<String> {
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|job| {
                s.spawn(move || {
                    let r = job();
                    if r.is_err() {
                        ctl.stop.store(1, Ordering::Release);
                    }
                    r
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| match h.join() {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("{e:#}")),
                Err(_) => Some("a thread panicked".into()),
            })
            .collect()
    })
}

/// A forked worker process: runs `body`, reports its error on a pipe, and `_exit`s.
struct Child {
    pid: nix::unistd::Pid,
    errors: OwnedFd,
    name: &'static str,
}

fn spawn_child(name: &'static str, body: impl FnOnce() -> Vec<String>) -> Result<Child> {
    let (r, w) = nix::unistd::pipe().context("pipe")?;
    // SAFETY: the runner is single-threaded here (the stress threads start after the
    // forks), so the child may run arbitrary code; it leaves with _exit.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Child => {
            drop(r);
            let errors = body();
            let mut f = std::fs::File::from(w);
            let _ = f.write_all(errors.join("\n").as_bytes());
            drop(f);
            // SAFETY: ends the child without running the parent's destructors or atexit.
            unsafe { libc::_exit(if errors.is_empty() { 0 } else { 1 }) }
        }
        ForkResult::Parent { child } => Ok(Child {
            pid: child,
            errors: r,
            name,
        }),
    }
}

impl Child {
    fn wait(self) -> Result<Vec<String>> {
        let mut text = String::new();
        std::fs::File::from(self.errors)
            .read_to_string(&mut text)
            .ok();
        let status = waitpid(self.pid, None).with_context(|| format!("waitpid {}", self.name))?;
        let mut errs: Vec<String> = text
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| format!("{}: {l}", self.name))
            .collect();
        match status {
            WaitStatus::Exited(_, 0) => {}
            WaitStatus::Exited(_, c) if !errs.is_empty() => {
                let _ = c;
            }
            other => errs.push(format!("{}: ended with {other:?}", self.name)),
        }
        Ok(errs)
    }
}

// ---- deterministic reductions of what the concurrent run found ----

/// A CREATE_LIST of two adjacent ranges of one memfd, with the creating mapping kept
/// (watched), and a punch that spans the boundary between the ranges: after writing the
/// punched pages and a SYNC, every page must match its memfd. (Found by the create/close
/// workers: a private list buffer still had stale pages after SYNC.)
fn punch_across_list_ranges_of_one_memfd() -> CaseResult {
    if test_device() != crate::util::device_path() {
        skip!("live updates are udmabuf-live's; testing {}", test_device());
    }
    let p = page_size();
    let dev = open_device(&test_device())?;
    let m = memfd(Backing::Shmem, 8 * p)?;
    let map = map_shared(&m, 8 * p)?;
    let mut want = pattern(1, 8 * p);
    map.write(0, &want);
    let buf = create_list(
        dev.as_fd(),
        0,
        &[item(&m, 0, 4 * p), item(&m, 4 * p, 4 * p)],
    )
    .context("CREATE_LIST")?;
    let i = info(&dev, &buf)?;
    ensure!(
        i.state & udmabuf_live_uapi::UDMABUF_LIVE_STATE_WATCHED != 0 && i.notifiers == 2,
        "not watched by two notifiers: {i:?}"
    );
    // Pages 3 (first range) and 4 (second range).
    punch(&m, 3 * p, 2 * p)?;
    let new = pattern(2, 2 * p);
    map.write(3 * p, &new);
    want[(3 * p) as usize..(5 * p) as usize].copy_from_slice(&new);
    sync(&dev, &buf, 1000).context("SYNC")?;
    let v = verify(&dev, &buf)?;
    ensure!(
        v.matching == 8,
        "punch of memfd pages 3-4 across the two ranges, write, SYNC: VERIFY {v:?} (first mismatch at buffer page {}): the second range's notifier did not mark its page",
        v.first_mismatch / p
    );
    let view = map_shared(&buf, 8 * p)?;
    expect_bytes(
        "dma-buf after punch across the ranges + SYNC",
        &view.read(0, 8 * p),
        &want,
    )?;
    Ok(())
}

/// DMA_BUF_IOCTL_SYNC(START), a live update, then END: END must succeed (upstream only
/// refuses an END that no START preceded). (Found by the CPU readers: END failed with
/// EINVAL now and then.)
fn cpu_access_end_after_live_update() -> CaseResult {
    if test_device() != crate::util::device_path() {
        skip!("live updates are udmabuf-live's; testing {}", test_device());
    }
    let p = page_size();
    let dev = open_device(&test_device())?;
    let m = memfd(Backing::Shmem, 4 * p)?;
    let map = map_shared(&m, 4 * p)?;
    map.write(0, &pattern(3, 4 * p));
    let buf = create(dev.as_fd(), &m, 0, 4 * p, 0).context("CREATE")?;
    dmabuf_sync(&buf, SYNC_START | SYNC_READ).context("DMA_BUF_IOCTL_SYNC(START|READ)")?;
    punch(&m, 0, p)?;
    map.write(0, &pattern(4, p));
    sync(&dev, &buf, 1000).context("SYNC between START and END")?;
    let r = dmabuf_sync(&buf, SYNC_END | SYNC_READ);
    ensure!(
        r.is_ok(),
        "DMA_BUF_IOCTL_SYNC(END|READ) after START with a live update in between: {r:?}"
    );
    Ok(())
}

fn concurrent_create_punch_sync_map_read() -> CaseResult {
    if test_device() != crate::util::device_path() {
        skip!("live updates are udmabuf-live's; testing {}", test_device());
    }
    let secs = env_u64("ULIVE_STRESS_SECS", 20)?;
    let seed = env_u64("ULIVE_STRESS_SEED", 0x57E5_5000)?;
    let module = udmabuf_live_uapi::MODULE_NAME;
    let loaded_importer = ensure_importer_loaded()?;
    let base = module_refcnt(module)?;

    let result = (|| -> Result<()> {
        let ctl_map = Raw::anon_shared(std::mem::size_of::<Control>())?;
        // SAFETY: zero-filled shared memory of the right size and alignment (page
        // aligned); all-zero is a valid Control (atomics). Only shared references exist.
        let ctl: &Control = unsafe { &*ctl_map.ptr.as_ptr().cast::<Control>() };

        // Shared memfds, each with the creating mapping kept for the whole run (so the
        // buffers are watched by mmu notifiers), filled with version 0... of every page.
        let size = PAGES * (ps() as usize);
        let mut memfds = Vec::new();
        let mut maps = Vec::new();
        for m in 0..MEMFDS {
            let fd = memfd(Backing::Shmem, size as u64)?;
            let map = Raw::file(&fd, size, true)?;
            for p in 0..PAGES {
                write_page(&map, m, p, 0);
            }
            memfds.push(fd);
            maps.push(map);
        }
        let dev = open_device(&test_device())?;
        let ps64 = (ps() as usize) as u64;
        let half = (PAGES / 2) as u64 * ps64;
        let mk = |name,
                  dmabuf: Result<OwnedFd, Errno>,
                  layout: Vec<(usize, usize)>|
         -> Result<SharedBuf> {
            Ok(SharedBuf {
                dmabuf: dmabuf.map_err(|e| anyhow!("creating {name}: {e}"))?,
                layout,
                name,
            })
        };
        let bufs = vec![
            mk(
                "buf0 (memfd 0)",
                create(dev.as_fd(), &memfds[0], 0, size as u64, 0),
                (0..PAGES).map(|p| (0, p)).collect(),
            )?,
            mk(
                "buf1 (memfd 1)",
                create(dev.as_fd(), &memfds[1], 0, size as u64, 0),
                (0..PAGES).map(|p| (1, p)).collect(),
            )?,
            mk(
                "buf2 (memfd 2, halves swapped)",
                create_list(
                    dev.as_fd(),
                    0,
                    &[item(&memfds[2], half, half), item(&memfds[2], 0, half)],
                ),
                (PAGES / 2..PAGES)
                    .chain(0..PAGES / 2)
                    .map(|p| (2, p))
                    .collect(),
            )?,
            mk(
                "buf3 (list over memfds 0, 1, 2)",
                create_list(
                    dev.as_fd(),
                    0,
                    &[
                        item(&memfds[0], 0, 8 * ps64),
                        item(&memfds[1], 8 * ps64, 8 * ps64),
                        item(&memfds[2], 24 * ps64, 8 * ps64),
                    ],
                ),
                (0..8)
                    .map(|p| (0, p))
                    .chain((8..16).map(|p| (1, p)))
                    .chain((24..32).map(|p| (2, p)))
                    .collect(),
            )?,
        ];
        for b in &bufs {
            let i = info(&dev, &b.dmabuf)?;
            ensure!(
                i.state & udmabuf_live_uapi::UDMABUF_LIVE_STATE_WATCHED != 0,
                "{} is not watched: {i:?}",
                b.name
            );
        }
        let roles = Roles::from_env()?;
        let bad = std::sync::Mutex::new(Vec::new());
        let world = World {
            roles,
            bad: &bad,
            ctl,
            memfds: &memfds,
            maps: &maps,
            bufs: &bufs,
            seed,
        };

        // Forked workers first (the runner is still single-threaded), then the threads.
        let t0 = Instant::now();
        let writers_proc = spawn_child("writer process", || {
            run_threads(
                ctl,
                vec![
                    Box::new(|| writer(&world, 2)),
                    Box::new(|| writer(&world, 3)),
                ],
            )
        })?;
        let churn_proc = if roles.churn {
            Some(spawn_child("create/close process", || {
                run_threads(
                    ctl,
                    vec![
                        Box::new(|| churn(ctl, seed, 0)),
                        Box::new(|| churn(ctl, seed, 1)),
                    ],
                )
            })?)
        } else {
            None
        };
        let timer = || -> Result<()> {
            let end = t0 + Duration::from_secs(secs);
            while Instant::now() < end && !ctl.stopped() {
                std::thread::sleep(Duration::from_millis(50));
            }
            ctl.stop.store(1, Ordering::Release);
            Ok(())
        };
        let mut jobs: Vec<Box<dyn FnOnce() -> Result<()> + Send + '_>> = vec![
            Box::new(timer),
            Box::new(|| writer(&world, 0)),
            Box::new(|| writer(&world, 1)),
        ];
        if roles.readers {
            jobs.push(Box::new(|| cpu_reader(&world, 0)));
            jobs.push(Box::new(|| cpu_reader(&world, 1)));
        }
        if roles.dynamic {
            jobs.push(Box::new(|| importer_loop(&world, 0, true)));
        }
        if roles.static_ {
            jobs.push(Box::new(|| importer_loop(&world, 1, false)));
        }
        let mut errors = run_threads(ctl, jobs);
        ctl.stop.store(1, Ordering::Release);
        errors.extend(writers_proc.wait()?);
        if let Some(p) = churn_proc {
            errors.extend(p.wait()?);
        }
        let elapsed = t0.elapsed();
        let c = |op| ctl.get(op);
        out(&format!(
            "    # stress: {:.1}s, seed {seed:#x}, roles {}: creates={} punches={} writes={} syncs={} sync_timeouts={} maps={} reads={} cpu_syncs={} verifies={} infos={} cpu_sync_end_einval={} bad_reads={} churn_stale={}",
            elapsed.as_secs_f64(),
            std::env::var("ULIVE_STRESS_ROLES").ok().filter(|v| !v.is_empty()).unwrap_or_else(|| "all (3 processes, 10 threads)".into()),
            c(Op::Creates), c(Op::Punches), c(Op::Writes), c(Op::Syncs), c(Op::SyncTimeouts), c(Op::Maps), c(Op::Reads), c(Op::CpuSyncs), c(Op::Verifies), c(Op::Infos), c(Op::CpuSyncEndRefused), c(Op::BadReads), c(Op::ChurnStale)
        ));
        let bad_reads = c(Op::BadReads);
        if bad_reads > 0 {
            let first = bad.lock().unwrap_or_else(|e| e.into_inner()).join("; ");
            errors.push(format!("{bad_reads} of {} reads showed a page that is not the buffer's; the first: {first}", c(Op::Reads)));
        }
        let refused = c(Op::CpuSyncEndRefused);
        if refused > 0 {
            // A correct START/END bracket must not fail: upstream's end_cpu_access only
            // refuses an END without any START.
            errors.push(format!(
                "DMA_BUF_IOCTL_SYNC(END|READ) failed with EINVAL {refused} of {} times right after a successful START (a live update between the two?)",
                c(Op::CpuSyncs)
            ));
        }
        // The final check runs even after a worker failed: it tells whether data was
        // lost as well.
        if let Err(e) = final_check(&world, &dev) {
            errors.push(format!("final check: {e:#}"));
        }
        if !errors.is_empty() {
            bail!("{} error(s): {}", errors.len(), errors.join("; "));
        }
        ensure!(c(Op::Punches) > 0, "the writers made no progress");
        ensure!(
            !roles.churn || c(Op::Creates) > 0,
            "the create/close workers made no progress"
        );
        ensure!(
            !(roles.dynamic || roles.static_) || c(Op::Maps) > 0,
            "the importers made no progress"
        );
        ensure!(
            !roles.readers || c(Op::Reads) > 0,
            "the readers made no progress"
        );
        Ok(())
    })();

    let unload = if loaded_importer {
        unload_loaded_importer()
    } else {
        Ok(())
    };
    result?;
    unload?;
    let after = module_refcnt(module)?;
    ensure!(
        after == base,
        "{module} refcnt {after} after closing everything, was {base}"
    );
    Ok(())
}

/// Everything stopped: SYNC each buffer, then nothing may be lost or stale.
fn final_check(w: &World<'_>, dev: &OwnedFd) -> Result<()> {
    // No lost write: each memfd page holds exactly its owner's last finished version.
    for m in 0..MEMFDS {
        for p in 0..PAGES {
            let (s, d) = (
                w.ctl.started[m][p].load(Ordering::Acquire),
                w.ctl.done[m][p].load(Ordering::Acquire),
            );
            ensure!(
                s == d,
                "memfd {m} page {p}: write {s} started, {d} finished"
            );
            expect_bytes(
                &format!("memfd {m} page {p} (version {d})"),
                &w.maps[m].read(p * (ps() as usize), ps() as usize),
                &page_content(m, p, d),
            )?;
        }
    }
    let imp = Importer::open()?;
    for b in w.bufs {
        sync(dev, &b.dmabuf, 10_000).with_context(|| format!("final SYNC of {}", b.name))?;
        let v = verify(dev, &b.dmabuf)?;
        let n = b.layout.len() as u64;
        ensure!(
            v.pages == n && v.matching == n && v.stale == 0 && v.holes == 0,
            "{}: VERIFY after the final SYNC: {v:?}",
            b.name
        );
        let i = info(dev, &b.dmabuf)?;
        out(&format!(
            "    # stress: {}: generation {} updates {} pages_swapped {} state {:#x}",
            b.name, i.generation, i.updates, i.pages_swapped, i.state
        ));
        // No stale page: through a CPU mmap and through the importer's sg table.
        let want: Vec<u8> = b
            .layout
            .iter()
            .flat_map(|&(m, p)| page_content(m, p, w.ctl.done[m][p].load(Ordering::Acquire)))
            .collect();
        let view = Raw::file(&b.dmabuf, want.len(), false)?;
        expect_bytes(
            &format!("{} through mmap after the final SYNC", b.name),
            &view.read(0, want.len()),
            &want,
        )?;
        imp.attach(b.dmabuf.as_raw_fd(), true)?;
        let mut got = vec![0u8; want.len()];
        let n = imp.read(0, &mut got)?;
        ensure!(n == want.len(), "importer READ of {}: {n} bytes", b.name);
        expect_bytes(
            &format!("{} through the importer after the final SYNC", b.name),
            &got,
            &want,
        )?;
        imp.detach()?;
    }
    Ok(())
}
