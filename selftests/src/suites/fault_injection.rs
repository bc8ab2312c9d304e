//! `fault-injection`: allocation failures (failslab, fail_page_alloc) injected into
//! udmabuf-live's paths, one allocation at a time. Needs a kernel with fault injection
//! and its debugfs knobs (the debug flavour: `make vm-test KERNEL_FLAVOR=debug`);
//! otherwise every case is skipped with the reason.
//!
//! Only allocations made with a udmabuf_live function on the stack can fail: both
//! capabilities get `require-start`/`require-end` = the module's executable sections
//! (their load addresses from /sys/module/udmabuf_live/sections/, their sizes from the
//! .ko's section headers), `stacktrace-depth` 32, and `ignore-gfp-wait`/
//! `ignore-gfp-highmem` off (the module allocates with GFP_KERNEL, shmem pages are
//! highmem-movable). Then:
//!
//! - paths that run in the test's own thread (CREATE, CREATE_LIST, SYNC,
//!   DMA_BUF_IOCTL_SYNC, an importer's MAP): `/proc/thread-self/fail-nth` = n makes the
//!   n-th eligible allocation of the call fail, for n = 1, 2, ... until a call completes
//!   with its n-th allocation never reached; fail-nth is per task, so this is the task
//!   filter. Each attempt starts from a fresh buffer;
//! - the live-update worker runs in a kworker, which the test cannot mark: there
//!   `task-filter` is off and the stack filter alone keeps the failures inside the module
//!   (in that phase only the worker runs module code that allocates), with
//!   `probability` 100, `times` 1 and `space` stepped up attempt by attempt, so each
//!   attempt fails a later allocation of the worker (for fail_page_alloc, the pages
//!   memfd_pin_folios allocates for punched holes).
//!
//! Each attempt must end in ENOMEM or in success. Right after it, before any repair,
//! VERIFY must count every page as matching or stale (old page still pinned), none as a
//! hole, and the bytes seen through the dma-buf must be, page by page, the old or the new
//! content; never anything else (freed memory). Then, with injection off, SYNC must
//! succeed and leave every page matching and the bytes equal to the memfd's. The
//! module's reference count must be back at its base after each attempt. The number of
//! faults injected is printed.

use super::common::*;
use super::importer_client::{
    ensure_loaded as ensure_importer_loaded, unload as unload_loaded_importer, Importer,
};
use super::live_util::{punch, try_info as info, try_sync as sync, try_verify as verify};
use super::{case_fns, cases, Suite};
use crate::ktap::{out, CaseResult};
use crate::util::{module_refcnt, outcome_key, Histogram};
use anyhow::{bail, ensure, Context, Result};
use nix::errno::Errno;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const DEBUGFS: &str = "/sys/kernel/debug";
/// Failures per armed attempt in the budget modes: two, because kvrealloc() retries a
/// failed kmalloc through kvmalloc(), so a single failure is absorbed there.
const TIMES: u64 = 2;
const CAPS: [&str; 2] = ["failslab", "fail_page_alloc"];

pub fn suite() -> Suite {
    Suite::new(
        "fault-injection",
        cases![
            create_shmem_watched,
            create_hugetlb,
            create_list_mixed,
            sync_unwatched,
            sync_watched,
            cpu_access_unwatched,
            importer_map_dynamic_unwatched,
            importer_map_static_unwatched,
            worker_slab_failures,
            worker_page_failures,
            totals,
        ],
    )
    .shared_process()
}

/// Totals over the suite, printed by the last case.
static ATTEMPTS: AtomicU64 = AtomicU64::new(0);
static INJECTED: AtomicU64 = AtomicU64::new(0);
static ENOMEMS: AtomicU64 = AtomicU64::new(0);

fn skip_reason() -> Option<String> {
    if test_device() != crate::util::device_path() {
        return Some(format!(
            "injects into udmabuf_live; testing {}",
            test_device()
        ));
    }
    for c in CAPS {
        if !Path::new(DEBUGFS).join(c).exists() {
            return Some(format!(
                "no {DEBUGFS}/{c}: this kernel has no fault injection (use KERNEL_FLAVOR=debug)"
            ));
        }
    }
    if !Path::new("/proc/thread-self/fail-nth").exists() {
        return Some("no /proc/thread-self/fail-nth".into());
    }
    None
}

macro_rules! need_injection {
    () => {
        if let Some(why) = skip_reason() {
            skip!("{}", why);
        }
    };
}

// ---- the knobs ----

fn knob_path(cap: &str, knob: &str) -> String {
    format!("{DEBUGFS}/{cap}/{knob}")
}

fn write_knob(cap: &str, knob: &str, value: &str) -> Result<()> {
    let p = knob_path(cap, knob);
    std::fs::write(&p, value).with_context(|| format!("write {value:?} to {p}"))
}

fn read_knob(cap: &str, knob: &str) -> Result<String> {
    let p = knob_path(cap, knob);
    Ok(std::fs::read_to_string(&p)
        .with_context(|| format!("read {p}"))?
        .trim()
        .to_owned())
}

/// The knobs this suite sets, in the order they are restored (probability last).
const KNOBS: [&str; 14] = [
    "times",
    "interval",
    "space",
    "verbose",
    "task-filter",
    "require-start",
    "require-end",
    "reject-start",
    "reject-end",
    "stacktrace-depth",
    "ignore-gfp-wait",
    "ignore-gfp-highmem",
    "min-order",
    "probability",
];

/// Saves every knob of both capabilities and this thread's fail-nth, sets the common
/// filter (module text, deep stacks, GFP_KERNEL and highmem allocations eligible,
/// nothing enabled yet), and puts everything back when dropped.
struct Injection {
    saved: Vec<(String, String, String)>,
}

impl Injection {
    fn new(text: (u64, u64)) -> Result<Self> {
        let mut saved = Vec::new();
        for cap in CAPS {
            for knob in KNOBS {
                if Path::new(&knob_path(cap, knob)).exists() {
                    saved.push((cap.to_owned(), knob.to_owned(), read_knob(cap, knob)?));
                }
            }
        }
        let inj = Self { saved };
        for cap in CAPS {
            write_knob(cap, "probability", "0")?;
            write_knob(cap, "times", "0")?;
            write_knob(cap, "interval", "1")?;
            write_knob(cap, "space", "0")?;
            write_knob(cap, "verbose", "1")?;
            write_knob(cap, "task-filter", "N")?;
            write_knob(cap, "require-start", &format!("{:#x}", text.0))?;
            write_knob(cap, "require-end", &format!("{:#x}", text.1))?;
            write_knob(cap, "reject-start", "0")?;
            write_knob(cap, "reject-end", "0")?;
            write_knob(cap, "stacktrace-depth", "32")?;
            write_knob(cap, "ignore-gfp-wait", "N")?;
        }
        write_knob("fail_page_alloc", "ignore-gfp-highmem", "N")?;
        write_knob("fail_page_alloc", "min-order", "0")?;
        set_fail_nth(0)?;
        Ok(inj)
    }

    /// Arm one capability for the worker phase: after `space` (bytes for failslab,
    /// pages for fail_page_alloc) of eligible allocations, the next TIMES fail.
    fn arm_global(&self, cap: &str, space: u64) -> Result<()> {
        write_knob(cap, "space", &space.to_string())?;
        write_knob(cap, "times", &TIMES.to_string())?;
        write_knob(cap, "probability", "100")
    }

    /// Disarm; returns how many failures were injected.
    fn disarm_global(&self, cap: &str) -> Result<u64> {
        write_knob(cap, "probability", "0")?;
        let left: u64 = read_knob(cap, "times")?.parse().context("times")?;
        write_knob(cap, "times", "0")?;
        Ok(TIMES.saturating_sub(left))
    }

    /// Arm failslab for this thread only (task-filter + make-it-fail): after `space`
    /// bytes of eligible allocations, the next TIMES fail (so a kvmalloc that retries
    /// after a failed kmalloc fails too).
    fn arm_thread(&self, space: u64) -> Result<()> {
        write_knob("failslab", "task-filter", "Y")?;
        std::fs::write("/proc/thread-self/make-it-fail", "1")
            .context("write /proc/thread-self/make-it-fail")?;
        self.arm_global("failslab", space)
    }

    fn disarm_thread(&self) -> Result<u64> {
        let n = self.disarm_global("failslab")?;
        std::fs::write("/proc/thread-self/make-it-fail", "0")
            .context("write /proc/thread-self/make-it-fail")?;
        write_knob("failslab", "task-filter", "N")?;
        Ok(n)
    }
}

impl Drop for Injection {
    fn drop(&mut self) {
        let _ = set_fail_nth(0);
        let _ = std::fs::write("/proc/thread-self/make-it-fail", "0");
        for cap in CAPS {
            let _ = write_knob(cap, "probability", "0");
        }
        for (cap, knob, value) in &self.saved {
            let _ = write_knob(cap, knob, value);
        }
    }
}

fn set_fail_nth(n: u32) -> Result<()> {
    std::fs::write("/proc/thread-self/fail-nth", n.to_string())
        .context("write /proc/thread-self/fail-nth")
}

fn fail_nth() -> Result<u32> {
    let s = std::fs::read_to_string("/proc/thread-self/fail-nth")
        .context("read /proc/thread-self/fail-nth")?;
    Ok(s.trim().parse()?)
}

/// [start, end) of udmabuf_live's executable sections in the running kernel: load
/// addresses from /sys/module/udmabuf_live/sections/, sizes from the .ko's ELF section
/// headers (init sections are gone after load and left out).
fn module_text() -> Result<(u64, u64, usize)> {
    let path = crate::util::require_module_file(udmabuf_live_uapi::MODULE_NAME)?;
    let ko = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
    ensure!(
        ko.len() > 64 && &ko[0..4] == b"\x7fELF" && ko[4] == 2 && ko[5] == 1,
        "not a little-endian ELF64 file"
    );
    let u16_at = |o: usize| u16::from_le_bytes(ko[o..o + 2].try_into().unwrap()) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(ko[o..o + 4].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(ko[o..o + 8].try_into().unwrap());
    let (shoff, shentsize, shnum, shstrndx) = (
        u64_at(0x28) as usize,
        u16_at(0x3a),
        u16_at(0x3c),
        u16_at(0x3e),
    );
    ensure!(
        shoff + shnum * shentsize <= ko.len() && shstrndx < shnum,
        "bad section header table"
    );
    let strtab = u64_at(shoff + shstrndx * shentsize + 24) as usize;
    let (mut lo, mut hi, mut n) = (u64::MAX, 0u64, 0);
    for i in 0..shnum {
        let sh = shoff + i * shentsize;
        let (flags, size) = (u64_at(sh + 8), u64_at(sh + 32));
        const SHF_ALLOC: u64 = 2;
        const SHF_EXECINSTR: u64 = 4;
        if flags & (SHF_ALLOC | SHF_EXECINSTR) != SHF_ALLOC | SHF_EXECINSTR || size == 0 {
            continue;
        }
        let name_at = strtab + u32_at(sh);
        let end = ko[name_at..]
            .iter()
            .position(|&b| b == 0)
            .context("unterminated section name")?;
        let name = std::str::from_utf8(&ko[name_at..name_at + end])?;
        if name.starts_with(".init") {
            continue;
        }
        let p = format!(
            "/sys/module/{}/sections/{name}",
            udmabuf_live_uapi::MODULE_NAME
        );
        let Ok(s) = std::fs::read_to_string(&p) else {
            continue;
        };
        let addr = u64::from_str_radix(s.trim().trim_start_matches("0x"), 16)
            .with_context(|| format!("{p}: {s:?}"))?;
        ensure!(addr != 0, "{p} reads 0 (not root?)");
        lo = lo.min(addr);
        hi = hi.max(addr + size);
        n += 1;
    }
    ensure!(
        n > 0,
        "no executable section of {} found in sysfs",
        udmabuf_live_uapi::MODULE_NAME
    );
    Ok((lo, hi, n))
}

fn injection() -> Result<Injection> {
    let (lo, hi, n) = module_text()?;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| out(&format!("    # fault-injection: failures only under udmabuf_live's text [{lo:#x}, {hi:#x}) ({n} sections, {} bytes)", hi - lo)));
    Injection::new((lo, hi))
}

// ---- what each attempt must leave behind ----

/// A buffer being updated: pages `changed` of a 16-page memfd go from `old` to `new`.
struct Scene {
    dev: OwnedFd,
    memfd: OwnedFd,
    dmabuf: OwnedFd,
    /// The creating mapping (kept for watched buffers).
    _creator: Option<Mapping>,
    old: Vec<u8>,
    new: Vec<u8>,
    changed: std::ops::Range<u64>,
    /// The punched pages were left holes (not written).
    hole: bool,
}

const SCENE_PAGES: u64 = 16;

impl Scene {
    /// A 16-page buffer over `old` content; `watched` keeps the creating mapping.
    fn new(watched: bool, seed: u8) -> Result<Self> {
        let size = SCENE_PAGES * ps();
        let dev = open_device(&test_device())?;
        let memfd = memfd(Backing::Shmem, size)?;
        let old = pattern(seed, size);
        let creator = if watched {
            let m = map_shared(&memfd, size)?;
            m.write(0, &old);
            Some(m)
        } else {
            fill_memfd(&memfd, size, 0, &old)?;
            None
        };
        let dmabuf = create(dev.as_fd(), &memfd, 0, size, UDMABUF_FLAGS_CLOEXEC)
            .context("CREATE (injection off)")?;
        let i = info(&dev, &dmabuf)?;
        let is_watched = i.state & udmabuf_live_uapi::UDMABUF_LIVE_STATE_WATCHED != 0;
        ensure!(
            is_watched == watched,
            "buffer watched = {is_watched}, wanted {watched}: {i:?}"
        );
        Ok(Self {
            dev,
            memfd,
            dmabuf,
            _creator: creator,
            old: old.clone(),
            new: old,
            changed: 0..0,
            hole: false,
        })
    }

    /// Punch pages 4..8 and (unless `hole`) write new content there through a mapping of
    /// the memfd (the creating one when kept, so the notifier fires).
    fn punch_and_write(&mut self, hole: bool, seed: u8) -> Result<()> {
        let size = SCENE_PAGES * ps();
        self.changed = 4..8;
        self.hole = hole;
        let (off, len) = (
            self.changed.start * ps(),
            (self.changed.end - self.changed.start) * ps(),
        );
        punch(&self.memfd, off, len)?;
        let data = if hole {
            vec![0u8; len as usize]
        } else {
            pattern(seed, len)
        };
        if !hole {
            match &self._creator {
                Some(m) => m.write(off, &data),
                None => fill_memfd(&self.memfd, size, off, &data)?,
            }
        }
        self.new[off as usize..(off + len) as usize].copy_from_slice(&data);
        Ok(())
    }

    fn pages_from(&self, bytes: &[u8]) -> Vec<Vec<u8>> {
        bytes.chunks(ps() as usize).map(<[u8]>::to_vec).collect()
    }

    /// Right after an attempt, injection off, before any repair: every page is either
    /// the old one (still pinned), the new one, or (lazy policy) unpopulated; VERIFY agrees.
    fn consistent_now(&self, what: &str) -> Result<()> {
        let v = verify(&self.dev, &self.dmabuf).with_context(|| format!("{what}: VERIFY"))?;
        // Old pages still pinned count as stale, or as holes where the punch left one;
        // under the lazy policy a changed page the update let go counts as unpopulated.
        let changed = self.changed.end - self.changed.start;
        let max_holes = if self.hole { changed } else { 0 };
        let differ = v.stale + v.holes + v.unpopulated;
        ensure!(
            v.pages == SCENE_PAGES && v.matching + differ == SCENE_PAGES && differ <= changed && v.holes <= max_holes,
            "{what}: VERIFY right after the attempt: {v:?} (only the {changed} changed pages may differ, as stale{} pages)",
            if self.hole { " or hole" } else { "" }
        );
        let view = map_shared(&self.dmabuf, SCENE_PAGES * ps())?;
        let got = self.pages_from(&view.read(0, SCENE_PAGES * ps()));
        let (old, new) = (self.pages_from(&self.old), self.pages_from(&self.new));
        for (i, page) in got.iter().enumerate() {
            ensure!(
                *page == old[i] || *page == new[i],
                "{what}: dma-buf page {i} is neither the old nor the new content (freed or foreign memory?)"
            );
        }
        Ok(())
    }

    /// Injection off: SYNC repairs everything.
    fn repaired(&self, what: &str) -> Result<()> {
        sync(&self.dev, &self.dmabuf, 5000)
            .with_context(|| format!("{what}: SYNC with injection off"))?;
        let v = verify(&self.dev, &self.dmabuf)?;
        ensure!(
            v.matching == SCENE_PAGES && v.stale == 0 && v.holes == 0,
            "{what}: VERIFY after the repairing SYNC: {v:?}"
        );
        let view = map_shared(&self.dmabuf, SCENE_PAGES * ps())?;
        expect_bytes(
            &format!("{what}: dma-buf after the repairing SYNC"),
            &view.read(0, SCENE_PAGES * ps()),
            &self.new,
        )?;
        let memfd = read_memfd(&self.memfd, SCENE_PAGES * ps(), 0, SCENE_PAGES * ps())?;
        expect_bytes(
            &format!("{what}: memfd after the repairing SYNC"),
            &memfd,
            &self.new,
        )?;
        Ok(())
    }
}

/// Per-path statistics, printed as one line.
#[derive(Default)]
struct Tally {
    attempts: u64,
    injected: u64,
    outcomes: Histogram,
}

impl Tally {
    fn record(&mut self, faults: u64, key: String) {
        let injected = faults > 0;
        self.attempts += 1;
        ATTEMPTS.fetch_add(1, Ordering::Relaxed);
        self.injected += faults;
        INJECTED.fetch_add(faults, Ordering::Relaxed);
        if key == "ENOMEM" {
            ENOMEMS.fetch_add(1, Ordering::Relaxed);
        }
        self.outcomes.add(format!(
            "{}{key}",
            if injected { "fault:" } else { "no-fault:" }
        ));
    }

    fn print(&self, path: &str) {
        out(&format!(
            "    # fault-injection: {path}: {} attempts, {} faults injected: {}",
            self.attempts,
            self.injected,
            self.outcomes.render()
        ));
    }
}

/// Only a clean ENOMEM or a success may follow an injected allocation failure.
fn clean_errno(what: &str, r: &Result<(), Errno>) -> Result<()> {
    match r {
        Ok(()) | Err(Errno::ENOMEM) => Ok(()),
        Err(e) => bail!("{what}: failed with {e} after an injected allocation failure (expected ENOMEM or success)"),
    }
}

const MAX_NTH: u32 = 300;

/// Step fail-nth over `call` (run in this thread) from n = 1 until the call completes
/// without reaching its n-th eligible allocation. `prepare` builds a fresh starting
/// point with injection off; `after` checks what the attempt left (injection off).
/// At least one fault must have been injected.
fn step_nth<S>(
    path: &str,
    prepare: impl FnMut(u32) -> Result<S>,
    call: impl FnMut(&mut S) -> Result<(), Errno>,
    after: impl FnMut(S, &Result<(), Errno>, &str) -> Result<()>,
) -> CaseResult {
    step_nth_with(path, false, prepare, call, after)
}

/// [`step_nth`], and with `races_worker` for a call whose allocations happen only when it
/// wins a race with the worker: when the worker did every update first, no fault could
/// be injected, and that is reported instead of failing.
fn step_nth_with<S>(
    path: &str,
    races_worker: bool,
    mut prepare: impl FnMut(u32) -> Result<S>,
    mut call: impl FnMut(&mut S) -> Result<(), Errno>,
    mut after: impl FnMut(S, &Result<(), Errno>, &str) -> Result<()>,
) -> CaseResult {
    need_injection!();
    let module = udmabuf_live_uapi::MODULE_NAME;
    let base = module_refcnt(module)?;
    // What every attempt must leave: a clean errno (or success when nothing was
    // injected), what `after` checks, and the module's reference count back at base.
    let mut judge = |what: &str, injected: bool, s: S, r: &Result<(), Errno>| -> Result<()> {
        if injected {
            clean_errno(what, r)?;
        } else {
            ensure!(
                r.is_ok(),
                "{what}: no fault was injected, yet the call failed with {}",
                outcome_key(r)
            );
        }
        after(s, r, what)?;
        let now = module_refcnt(module)?;
        ensure!(
            now == base,
            "{what}: {module} refcnt {now} after closing everything, was {base}"
        );
        Ok(())
    };
    let inj = injection()?;
    let mut tally = Tally::default();
    let mut exhausted = false;
    for n in 1..=MAX_NTH {
        let what = format!("{path}, failing allocation {n}");
        let mut s = prepare(n).with_context(|| format!("{what}: setting up"))?;
        set_fail_nth(n)?;
        let r = call(&mut s);
        let left = fail_nth()?;
        set_fail_nth(0)?;
        let injected = left == 0;
        tally.record(injected as u64, outcome_key(&r));
        judge(&what, injected, s, &r)?;
        if !injected {
            exhausted = true;
            break;
        }
    }
    if !exhausted {
        out(&format!("    # fault-injection: {path}: still failing after {MAX_NTH} allocations; stopped there"));
    }
    tally.print(&format!("{path} [fail-nth]"));
    // Second pass: consecutive failures (a retried allocation fails again), for this
    // thread only, after a growing budget of eligible slab bytes.
    let mut budget = Tally::default();
    let mut clean = 0;
    for (k, &space) in SLAB_SPACE.iter().enumerate() {
        let what = format!("{path}, {TIMES} slab failures after {space} bytes");
        let mut s = prepare(1000 + k as u32).with_context(|| format!("{what}: setting up"))?;
        inj.arm_thread(space)?;
        let r = call(&mut s);
        let faults = inj.disarm_thread()?;
        budget.record(faults, outcome_key(&r));
        judge(&what, faults > 0, s, &r)?;
        if faults == 0 {
            clean += 1;
            if clean >= 2 {
                break;
            }
        }
    }
    drop(inj);
    budget.print(&format!(
        "{path} [task-filter, space stepped, times {TIMES}]"
    ));
    if races_worker && tally.injected + budget.injected == 0 {
        // The worker did every update before the call got there: nothing of the call's
        // own could fail. What the attempts left was still checked.
        out(&format!("    # fault-injection: {path}: the worker updated first every time; the call had nothing to do"));
        return Ok(());
    }
    ensure!(
        tally.injected > 0,
        "{path}: no fault could be injected (is the stack filter right?)"
    );
    Ok(())
}

// ---- (a) CREATE and CREATE_LIST ----

/// A created buffer must show its memfd, SYNC and VERIFY cleanly.
fn check_created(
    dev: &OwnedFd,
    dmabuf: OwnedFd,
    sources: &[(&OwnedFd, u64, u64, u64)],
    what: &str,
) -> Result<()> {
    let total: u64 = sources.iter().map(|s| s.2).sum();
    ensure!(dmabuf_size(&dmabuf)? == total, "{what}: dma-buf size");
    let mut want = Vec::new();
    for &(m, off, len, msize) in sources {
        want.extend(read_memfd(m, msize, off, len)?);
    }
    let view = map_shared(&dmabuf, total)?;
    expect_bytes(
        &format!("{what}: the created buffer"),
        &view.read(0, total),
        &want,
    )?;
    sync(dev, &dmabuf, 1000).with_context(|| format!("{what}: SYNC of the created buffer"))?;
    let v = verify(dev, &dmabuf)?;
    ensure!(
        v.matching == total / ps(),
        "{what}: VERIFY of the created buffer: {v:?}"
    );
    Ok(())
}

struct CreateScene {
    dev: OwnedFd,
    memfds: Vec<(OwnedFd, u64)>,
    _maps: Vec<Mapping>,
    result: Option<OwnedFd>,
}

fn create_scene(kinds: &[(Backing, u64, bool)], seed: u8) -> Result<CreateScene> {
    let dev = open_device(&test_device())?;
    let mut memfds = Vec::new();
    let mut maps = Vec::new();
    for (i, &(kind, size, mapped)) in kinds.iter().enumerate() {
        let m = memfd(kind, size)?;
        let data = pattern(seed.wrapping_add(i as u8), size);
        if mapped {
            let map = map_shared(&m, size)?;
            map.write(0, &data);
            maps.push(map);
        } else {
            fill_memfd(&m, size, 0, &data)?;
        }
        memfds.push((m, size));
    }
    Ok(CreateScene {
        dev,
        memfds,
        _maps: maps,
        result: None,
    })
}

fn create_shmem_watched() -> CaseResult {
    let size = 8 * ps();
    step_nth(
        "CREATE shmem 8 pages (watched)",
        |n| create_scene(&[(Backing::Shmem, size, true)], n as u8),
        |s| {
            let r = create(
                s.dev.as_fd(),
                &s.memfds[0].0,
                0,
                size,
                UDMABUF_FLAGS_CLOEXEC,
            );
            r.map(|fd| s.result = Some(fd))
        },
        |s, _, what| match s.result {
            Some(fd) => check_created(&s.dev, fd, &[(&s.memfds[0].0, 0, size, size)], what),
            None => Ok(()),
        },
    )
}

fn create_hugetlb() -> CaseResult {
    step_nth(
        "CREATE hugetlb 2 MiB",
        |n| create_scene(&[(Backing::Hugetlb, HUGE_PAGE, false)], n as u8),
        |s| {
            create(
                s.dev.as_fd(),
                &s.memfds[0].0,
                0,
                HUGE_PAGE,
                UDMABUF_FLAGS_CLOEXEC,
            )
            .map(|fd| s.result = Some(fd))
        },
        |s, _, what| match s.result {
            Some(fd) => check_created(
                &s.dev,
                fd,
                &[(&s.memfds[0].0, 0, HUGE_PAGE, HUGE_PAGE)],
                what,
            ),
            None => Ok(()),
        },
    )
}

fn create_list_mixed() -> CaseResult {
    let (a, b) = (8 * ps(), HUGE_PAGE);
    step_nth(
        "CREATE_LIST shmem (watched) + shmem + hugetlb",
        |n| {
            create_scene(
                &[
                    (Backing::Shmem, a, true),
                    (Backing::Shmem, a, false),
                    (Backing::Hugetlb, b, false),
                ],
                n as u8,
            )
        },
        |s| {
            let items = [
                item(&s.memfds[0].0, 0, 4 * ps()),
                item(&s.memfds[1].0, 2 * ps(), 4 * ps()),
                item(&s.memfds[2].0, ps(), 8 * ps()),
            ];
            create_list(s.dev.as_fd(), UDMABUF_FLAGS_CLOEXEC, &items).map(|fd| s.result = Some(fd))
        },
        |s, _, what| match s.result {
            Some(fd) => check_created(
                &s.dev,
                fd,
                &[
                    (&s.memfds[0].0, 0, 4 * ps(), a),
                    (&s.memfds[1].0, 2 * ps(), 4 * ps(), a),
                    (&s.memfds[2].0, ps(), 8 * ps(), b),
                ],
                what,
            ),
            None => Ok(()),
        },
    )
}

// ---- (b) live updates, in this thread ----

fn punched_scene(watched: bool, n: u32) -> Result<Scene> {
    let mut s = Scene::new(watched, n as u8)?;
    s.punch_and_write(false, (n as u8).wrapping_add(100))?;
    Ok(s)
}

fn update_after(s: Scene, _r: &Result<(), Errno>, what: &str) -> Result<()> {
    s.consistent_now(what)?;
    s.repaired(what)
}

/// punch + SYNC. Unwatched, SYNC does the update. Watched, the notifier queues the
/// worker too; whichever gets there first does the update, so some attempts fail in SYNC
/// and some find nothing to do.
fn punch_then_sync(watched: bool) -> CaseResult {
    let path = if watched {
        "punch + SYNC (watched: SYNC races the worker)"
    } else {
        "punch + SYNC (unwatched: SYNC does the update)"
    };
    step_nth_with(
        path,
        watched,
        |n| punched_scene(watched, n),
        |s| sync(&s.dev, &s.dmabuf, 0),
        update_after,
    )
}

case_fns! {
    sync_unwatched => punch_then_sync(false);
    sync_watched => punch_then_sync(true);
}

fn cpu_access_unwatched() -> CaseResult {
    step_nth(
        "punch + DMA_BUF_IOCTL_SYNC(START) (unwatched)",
        |n| punched_scene(false, n),
        |s| {
            let r = dmabuf_sync(&s.dmabuf, SYNC_START | SYNC_READ);
            if r.is_ok() {
                let _ = dmabuf_sync(&s.dmabuf, SYNC_END | SYNC_READ);
            }
            r
        },
        update_after,
    )
}

struct MapScene {
    scene: Scene,
    imp: Importer,
}

fn importer_map(dynamic: bool) -> CaseResult {
    need_injection!();
    let loaded = ensure_importer_loaded()?;
    let path = format!(
        "punch + importer MAP ({}, unwatched)",
        if dynamic { "dynamic" } else { "static: pin" }
    );
    let r = step_nth(
        &path,
        |n| {
            let scene = punched_scene(false, n)?;
            let imp = Importer::open()?;
            imp.attach(scene.dmabuf.as_raw_fd(), dynamic)
                .context("ATTACH (injection off)")?;
            Ok(MapScene { scene, imp })
        },
        |s| s.imp.map().map(drop),
        |s, _, what| {
            // The importer's view, if it mapped, must be old or new page by page too.
            let mut page = vec![0u8; ps() as usize];
            if s.imp.stats().map(|st| st.mapped == 1).unwrap_or(false) {
                for i in 0..SCENE_PAGES {
                    s.imp
                        .read((i * ps()) as usize, &mut page)
                        .with_context(|| format!("{what}: importer READ"))?;
                    let r = (i * ps()) as usize..((i + 1) * ps()) as usize;
                    ensure!(
                        page == s.scene.old[r.clone()] || page == s.scene.new[r],
                        "{what}: importer sees page {i} as neither old nor new"
                    );
                }
            }
            s.imp.detach().ok();
            drop(s.imp);
            update_after(s.scene, &Ok(()), what)
        },
    );
    if loaded {
        unload_loaded_importer()?;
    }
    r
}

fn importer_map_dynamic_unwatched() -> CaseResult {
    importer_map(true)
}

fn importer_map_static_unwatched() -> CaseResult {
    importer_map(false)
}

// ---- (b) live updates, in the worker ----

/// Space budgets stepped through, per capability (failslab: bytes; fail_page_alloc:
/// pages of order 0).
const SLAB_SPACE: [u64; 22] = [
    0, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 256, 320, 384, 512, 768, 1024, 1536, 2048, 3072,
    4096, 8192,
];
const PAGE_SPACE: [u64; 10] = [0, 1, 2, 3, 4, 5, 6, 8, 12, 16];

fn worker_failures(cap: &str, spaces: &[u64], hole: bool) -> CaseResult {
    need_injection!();
    let module = udmabuf_live_uapi::MODULE_NAME;
    let base = module_refcnt(module)?;
    let inj = injection()?;
    let path = format!(
        "punch{} + worker ({cap}, space stepped)",
        if hole { " (hole left)" } else { " + write" }
    );
    let mut tally = Tally::default();
    let mut clean_runs = 0;
    for (k, &space) in spaces.iter().enumerate() {
        let what = format!("{path}, space {space}");
        let mut s = Scene::new(true, k as u8)?;
        let gen0 = info(&s.dev, &s.dmabuf)?.generation;
        inj.arm_global(cap, space)?;
        let armed = (|| -> Result<()> {
            s.punch_and_write(hole, (k as u8).wrapping_add(50))?;
            // Wait for the worker: it either applies the update (a new generation) or
            // fails (the fault was taken; give its error path a moment).
            let start = Instant::now();
            let mut fault_seen: Option<Instant> = None;
            while start.elapsed() < Duration::from_secs(5) {
                if info(&s.dev, &s.dmabuf)?.generation != gen0 {
                    break;
                }
                if fault_seen.is_none() && read_knob(cap, "times")? != TIMES.to_string() {
                    fault_seen = Some(Instant::now());
                }
                if fault_seen.is_some_and(|t| t.elapsed() > Duration::from_millis(300)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(())
        })();
        let faults = inj.disarm_global(cap)?;
        armed?;
        let injected = faults > 0;
        let applied = info(&s.dev, &s.dmabuf)?.generation != gen0;
        tally.record(
            faults,
            if applied {
                "applied".into()
            } else {
                "not-applied".into()
            },
        );
        s.consistent_now(&what)?;
        s.repaired(&what)?;
        drop(s);
        let now = module_refcnt(module)?;
        ensure!(
            now == base,
            "{what}: {module} refcnt {now} after closing everything, was {base}"
        );
        if !injected && applied {
            clean_runs += 1;
            if clean_runs >= 2 {
                break; // the budget is past every allocation the worker makes
            }
        }
    }
    drop(inj);
    tally.print(&path);
    ensure!(tally.injected > 0, "{path}: no fault reached the worker");
    Ok(())
}

fn worker_slab_failures() -> CaseResult {
    worker_failures("failslab", &SLAB_SPACE, false)
}

/// The worker allocates pages for holes only under the eager policy (under lazy it lets
/// them go, and the allocations happen at the next point of need, which the other cases
/// cover): run this case under eager, and restore the policy after.
fn worker_page_failures() -> CaseResult {
    let before = super::live_util::repopulate_policy();
    crate::util::set_repopulate("eager")?;
    let r = worker_failures("fail_page_alloc", &PAGE_SPACE, true);
    crate::util::set_repopulate(&before)?;
    r
}

fn totals() -> CaseResult {
    need_injection!();
    out(&format!(
        "    # fault-injection: total {} attempts, {} faults injected, {} ENOMEM returned to the caller",
        ATTEMPTS.load(Ordering::Relaxed),
        INJECTED.load(Ordering::Relaxed),
        ENOMEMS.load(Ordering::Relaxed)
    ));
    Ok(())
}
