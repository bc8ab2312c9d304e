//! The cells of `udmabuf-ctl bench` that hold us against the floor (issues 13 and 15):
//! - punch..SYNC on ours against the bare punch: the same `fallocate(PUNCH_HOLE)` on a
//!   memfd covered by nothing, and covered by a built-in udmabuf (4 KiB and 2 MiB holes
//!   in 64 MiB shmem, one 2 MiB page of 64 MiB hugetlb);
//! - hole-size scaling: what each extra page of a 2 MiB hole costs the update, against
//!   what the memfd itself pays to refill a page by a write fault through its mapping;
//! - kernel memory (slab + vmalloc) of 64 live 64 MiB buffers over one memfd;
//! - the fault cost and the memory return, measured by bench_vmm.rs, as cells, under
//!   each policy.
//!
//! The live-update cells run once per repopulation policy when the module has the
//! `repopulate` parameter.

use super::bench::{Pair, Summary, WARMUP};
use super::bench_cells::{us, Cell};
use super::bench_param;
use crate::sys::{self, Mapping};
use crate::units::{KIB, MIB};
use anyhow::{ensure, Context, Result};
use nix::fcntl::{fallocate, FallocateFlags};
use serde::Serialize;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Instant;

/// The parameter that picks our repopulation policy.
const REPOPULATE: &str = "repopulate";

/// The policies to run the live cells under: both when the module has the parameter,
/// else one run under whatever it does (`None`).
pub fn policies() -> Vec<Option<&'static str>> {
    if bench_param::exists(REPOPULATE) {
        vec![Some("lazy"), Some("eager")]
    } else {
        vec![None]
    }
}

/// Sets our repopulation policy for the duration (if any), restoring it on drop.
pub struct Policy {
    _param: Option<bench_param::Override>,
}

impl Policy {
    pub fn set(policy: Option<&str>) -> Result<Self> {
        Ok(Self { _param: policy.map(|p| bench_param::Override::set(REPOPULATE, p)).transpose()? })
    }
}

/// What covers the memfd that is punched.
#[derive(Clone, Copy)]
pub(crate) enum Cover<'a> {
    /// Our buffer; the round ends when SYNC returns.
    Ours(&'a File),
    /// A built-in udmabuf (it pins the old pages; nothing to wait for).
    Builtin(&'a File),
    /// Nothing: the bare punch.
    Nothing,
}

/// A hole to punch, again and again, in a 64 MiB memfd.
#[derive(Clone, Copy)]
pub(crate) struct Hole {
    hugetlb: bool,
    bytes: u64,
}

impl Hole {
    pub(crate) fn subject(self) -> String {
        let size = if self.bytes >= MIB { format!("{} MiB", self.bytes / MIB) } else { format!("{} KiB", self.bytes / KIB) };
        if self.hugetlb {
            format!("one {size} page of 64 MiB hugetlb")
        } else {
            format!("{size} hole in 64 MiB shmem")
        }
    }
}

pub(crate) const HOLES: [Hole; 3] =
    [Hole { hugetlb: false, bytes: 4 * KIB }, Hole { hugetlb: false, bytes: 2 * MIB }, Hole { hugetlb: true, bytes: 2 * MIB }];

/// Samples of one series of punch rounds: the punch (..SYNC for ours), and the refill
/// of the hole by write faults through the memfd's mapping that follows it.
pub(crate) struct Rounds {
    punch: Vec<u64>,
    refill: Vec<u64>,
}

fn punch(memfd: &OwnedFd, off: u64, len: u64) -> Result<()> {
    fallocate(
        memfd.as_raw_fd(),
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        off as i64,
        len as i64,
    )
    .context("fallocate(PUNCH_HOLE)")?;
    Ok(())
}

/// A 64 MiB memfd that the process keeps mapped (so ours is watched), covered by
/// `cover`, in which `hole` is punched again and again.
pub(crate) struct Punched<'a> {
    cover: Cover<'a>,
    hole: Hole,
    memfd: OwnedFd,
    map: Mapping,
    buf: Option<OwnedFd>,
    /// Rounds run so far: each punches a different place.
    round: u32,
}

impl<'a> Punched<'a> {
    const SIZE: u64 = 64 * MIB;

    pub(crate) fn new(cover: Cover<'a>, hole: Hole) -> Result<Self> {
        let memfd = super::bench::memfd_for(hole.hugetlb, Self::SIZE)?;
        let map = Mapping::new(&memfd, Self::SIZE, true).context("mmap of the memfd")?;
        map.fault_in();
        let buf = match cover {
            Cover::Ours(d) | Cover::Builtin(d) => Some(sys::udmabuf_create(d, &memfd, Self::SIZE).context("create 64 MiB")?),
            Cover::Nothing => None,
        };
        Ok(Self { cover, hole, memfd, map, buf, round: 0 })
    }

    fn ours(&self) -> Option<(&File, &OwnedFd)> {
        match (self.cover, &self.buf) {
            (Cover::Ours(d), Some(b)) => Some((d, b)),
            _ => None,
        }
    }

    /// `n` rounds: punch the hole at a different place each round (..SYNC for ours),
    /// then write one byte of each page of the hole through the mapping, so the next
    /// round punches present pages again.
    pub(crate) fn rounds(&mut self, n: u32) -> Result<Rounds> {
        let step = if self.hole.hugetlb { sys::HUGE_PAGE } else { sys::page_size() };
        let slots = Self::SIZE / self.hole.bytes;
        let mut r = Rounds { punch: Vec::new(), refill: Vec::new() };
        for _ in 0..n {
            let i = self.round;
            self.round += 1;
            let off = (u64::from(i) * 7919 % slots) * self.hole.bytes;
            let start = Instant::now();
            punch(&self.memfd, off, self.hole.bytes)?;
            if let Some((d, b)) = self.ours() {
                sys::live_sync(d, b, 10_000).context("SYNC")?;
            }
            let punched = Instant::now();
            for p in (off..off + self.hole.bytes).step_by(step as usize) {
                self.map.write(p, &[i as u8]);
            }
            let refilled = Instant::now();
            if let Some((d, b)) = self.ours() {
                // Untimed: the buffer takes the refilled pages before the next round.
                sys::live_sync(d, b, 10_000).context("SYNC after the refill")?;
            }
            r.punch.push((punched - start).as_nanos() as u64);
            r.refill.push((refilled - punched).as_nanos() as u64);
        }
        Ok(r)
    }

    /// Ours must show the memfd's pages after any number of rounds.
    fn verify(&self) -> Result<()> {
        if let Some((d, b)) = self.ours() {
            let v = sys::live_verify(d, b).context("VERIFY")?;
            ensure!(v.matching == v.pages, "after the punch rounds the buffer does not match its memfd: {v:?}");
        }
        Ok(())
    }
}

/// `WARMUP` rounds, then `iterations` measured ones (see [`Punched::rounds`]).
fn punch_rounds(cover: Cover, hole: Hole, iterations: u32) -> Result<Rounds> {
    let mut p = Punched::new(cover, hole)?;
    p.rounds(WARMUP)?;
    let r = p.rounds(iterations)?;
    p.verify()?;
    Ok(r)
}

/// A latency series for the chart (punch..visible, one boot).
#[derive(Debug, Serialize)]
pub struct Series {
    pub name: String,
    pub samples_ns: Vec<u64>,
}

fn med(s: &[u64]) -> f64 {
    Summary::of(s).map_or(f64::NAN, |s| s.median_ns as f64)
}

/// The punch cells, the hole scaling and the latency series of the 4 KiB hole.
pub fn punch_cells(ours: &File, builtin: &File, iterations: u32, cells: &mut Vec<Cell>) -> Result<Vec<Series>> {
    let mut series = Vec::new();
    let mut bare = Vec::new();
    for hole in HOLES {
        let what = hole.subject();
        let nothing = punch_rounds(Cover::Nothing, hole, iterations).with_context(|| format!("bare punch, {what}"))?;
        let under_builtin =
            punch_rounds(Cover::Builtin(builtin), hole, iterations).with_context(|| format!("punch under built-in, {what}"))?;
        if hole.bytes == 4 * KIB {
            series.push(Series { name: "bare punch (nothing covers the memfd)".into(), samples_ns: nothing.punch.clone() });
            series.push(Series { name: "punch under a built-in udmabuf".into(), samples_ns: under_builtin.punch.clone() });
        }
        bare.push((hole, nothing, under_builtin));
    }
    for policy in policies() {
        let _p = Policy::set(policy)?;
        let mut sync_med = Vec::new();
        for (hole, nothing, under_builtin) in &bare {
            let what = hole.subject();
            let r = punch_rounds(Cover::Ours(ours), *hole, iterations).with_context(|| format!("punch..SYNC, {what}"))?;
            let (o, n, b) = (med(&r.punch), med(&nothing.punch), med(&under_builtin.punch));
            let refill = med(&nothing.refill);
            cells.push(Cell::new(
                "punch_vs_bare",
                &what,
                policy,
                o / n,
                format!("ours {}, bare {} (the bare memfd's refill of the hole by write faults: {})", us(o), us(n), us(refill)),
            ));
            cells.push(Cell::new("punch_vs_builtin", &what, policy, o / b, format!("ours {}, under built-in {}", us(o), us(b))));
            if hole.bytes == 4 * KIB {
                let name = format!("ours: punch..SYNC{}", policy.map_or(String::new(), |p| format!(" (repopulate={p})")));
                series.push(Series { name, samples_ns: r.punch });
            }
            sync_med.push(o);
        }
        // Shmem: per extra page of the 2 MiB hole, against the bare memfd's refill per page.
        let (small, large) = (sync_med[0], sync_med[1]);
        let pages = (2 * MIB / sys::page_size()) as f64;
        let per_page = (large - small) / (pages - 1.0);
        let refill = med(&bare[1].1.refill) / pages;
        cells.push(Cell::new(
            "hole_per_page",
            "shmem",
            policy,
            per_page / refill,
            format!(
                "update {} per extra page ({} for 2 MiB, {} for 4 KiB); refill by write fault {} per page",
                us(per_page),
                us(large),
                us(small),
                us(refill)
            ),
        ));
    }
    Ok(series)
}

/// Slab + vmalloc bytes in use (/proc/meminfo).
fn kernel_memory() -> Result<i64> {
    let m = std::fs::read_to_string("/proc/meminfo").context("read /proc/meminfo")?;
    let field = |name: &str| -> Result<i64> {
        m.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<i64>().ok())
            .with_context(|| format!("no {name} in /proc/meminfo"))
    };
    Ok((field("Slab:")? + field("VmallocUsed:")?) * 1024)
}

/// Kernel memory that 64 live 64 MiB buffers of `dev` over one memfd hold, in bytes.
fn kmem_of_buffers(dev: &File, memfd: &OwnedFd) -> Result<i64> {
    let before = kernel_memory()?;
    let bufs = (0..64).map(|_| sys::udmabuf_create(dev, memfd, 64 * MIB)).collect::<nix::Result<Vec<_>>>().context("create")?;
    let after = kernel_memory()?;
    drop(bufs);
    Ok(after - before)
}

pub fn kmem_cells(ours: &File, builtin: &File, cells: &mut Vec<Cell>) -> Result<()> {
    for mapped in [false, true] {
        let memfd = super::bench::memfd_for(false, 64 * MIB)?;
        let _map = if mapped {
            let m = Mapping::new(&memfd, 64 * MIB, true).context("mmap of the memfd")?;
            m.fault_in();
            Some(m)
        } else {
            None
        };
        // One unmeasured round each (slab caches grow on first use), then 5 alternating.
        kmem_of_buffers(ours, &memfd)?;
        kmem_of_buffers(builtin, &memfd)?;
        let (mut o, mut b) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            o.push(kmem_of_buffers(ours, &memfd).context("64 buffers of ours")?);
            b.push(kmem_of_buffers(builtin, &memfd).context("64 built-in buffers")?);
        }
        o.sort_unstable();
        b.sort_unstable();
        let (o, b) = (o[2] as f64, b[2] as f64);
        let subject = if mapped { "memfd mapped (watched)" } else { "memfd not mapped" };
        cells.push(Cell::new(
            "kmem_per_buffer",
            subject,
            None,
            o / b,
            format!("ours {:.1} KiB per buffer, built-in {:.1} KiB", o / 64.0 / 1024.0, b / 64.0 / 1024.0),
        ));
    }
    Ok(())
}

pub fn fault_cells(ours: &File, iterations: u32, cells: &mut Vec<Cell>) -> Result<()> {
    let subject = "4 KiB in 64 MiB shmem";
    if policies() == [None] {
        for p in ["lazy", "eager"] {
            cells.push(Cell::missing("fault_cost", subject, Some(p), "policy not available"));
        }
        return Ok(());
    }
    for policy in policies() {
        let _p = Policy::set(policy)?;
        let whole = super::bench_vmm::fault_rounds(ours, true, iterations).context("fault cost, whole mapping")?;
        let one = super::bench_vmm::fault_rounds(ours, false, iterations).context("fault cost, one-page mapping")?;
        let (w, o) = (med(&whole), med(&one));
        cells.push(Cell::new("fault_cost", subject, policy, w / o, format!("whole {}, one page {}", us(w), us(o))));
    }
    Ok(())
}

/// The memory-return cells (bench_vmm.rs measures): MiB that came back and MiB of
/// blocks the memfd lost, ours under each policy and the built-in driver.
pub fn memory_cells(ours: &File, builtin: &File, cells: &mut Vec<Cell>) -> Result<()> {
    let fmt = |a: f64, b: f64| format!("MemAvailable (+ per-CPU free lists) {a:+.1} MiB, memfd blocks -{b:.1} MiB");
    let mib = |m: &super::bench_vmm::MemoryReturn| (m.returned_kib as f64 / 1024.0, m.memfd_blocks_dropped_kib as f64 / 1024.0);
    for p in ["lazy", "eager"] {
        let (ka, kb) = if p == "lazy" { ("memret_avail_lazy", "memret_blocks_lazy") } else { ("memret_avail", "memret_blocks") };
        if policies() == [None] {
            cells.push(Cell::missing(ka, "ours", Some(p), "policy not available"));
            cells.push(Cell::missing(kb, "ours", Some(p), "policy not available"));
            continue;
        }
        let m = super::bench_vmm::memory_return(ours, &format!("ours, {p}"), Some(p))
            .with_context(|| format!("memory return, {p}"))?;
        let (a, b) = mib(&m);
        cells.push(Cell::new(ka, "ours", Some(p), a, fmt(a, b)));
        cells.push(Cell::new(kb, "ours", Some(p), b, fmt(a, b)));
    }
    let m = super::bench_vmm::memory_return(builtin, "built-in", None).context("memory return, built-in")?;
    let (a, b) = mib(&m);
    cells.push(Cell::new("memret_avail", "built-in", None, a, fmt(a, b)));
    cells.push(Cell::new("memret_blocks", "built-in", None, b, fmt(a, b)));
    cells.push(Cell::new("memret_pinned", "built-in", None, b - a, fmt(a, b)));
    Ok(())
}

/// The update against re-create and the 256/16 scaling, under each policy.
pub fn live_cells(ours: &File, builtin: &File, iterations: u32, cells: &mut Vec<Cell>) -> Result<()> {
    for policy in policies() {
        let _p = Policy::set(policy)?;
        let l = super::bench_live::run(ours, builtin, iterations)?;
        let p: &Pair = &l.update_vs_recreate;
        cells.push(Cell::new(
            "update_vs_recreate",
            "4 KiB hole",
            policy,
            l.speedup_median,
            format!("ours {}, re-create {}", us(p.ours.median_ns as f64), us(p.builtin.median_ns as f64)),
        ));
        cells.push(Cell::new(
            "update_scaling",
            "shmem",
            policy,
            l.scaling_median,
            format!("16 MiB {}, 256 MiB {}", us(l.update_16_mib.median_ns as f64), us(l.update_256_mib.median_ns as f64)),
        ));
    }
    Ok(())
}
