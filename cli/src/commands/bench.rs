//! `udmabuf-ctl bench`: our device against the kernel's built-in udmabuf, side by side.
//!
//! For shmem and hugetlb memfds of 4 MiB and 64 MiB it measures
//! - create, close and create+close: `UDMABUF_CREATE` alone, closing the dma-buf fd
//!   alone (the release runs before close() returns), and the two together, timed in
//!   userspace around each call;
//! - map: the test importer's `MAP` of a static attachment, i.e. the kernel-side
//!   duration of one `dma_buf_map_attachment()` call;
//! - sg entries: the DMA segments of that mapping (`nents`).
//!
//! Both drivers get dma-bufs of the very same memfd pages, and the two are measured
//! alternately (which one goes first flips every iteration), so drift and page layout
//! affect both alike. Only the ratios mean something under an emulator (TCG).

use super::bench_cells::Cell;
use crate::cli::BenchArgs;
use crate::exit::CtlError;
use crate::units::MIB;
use anyhow::{bail, Context, Result};
use nix::fcntl::{fallocate, fcntl, FallocateFlags, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;
use ulive_importer_abi::client::Importer;

/// Unmeasured rounds before each measurement, to fault in pages and warm caches.
pub(crate) const WARMUP: u32 = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Backing {
    Shmem,
    Hugetlb,
}

impl Backing {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Backing::Shmem => "shmem",
            Backing::Hugetlb => "hugetlb",
        }
    }
}

/// Order statistics of one series of durations, in nanoseconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub n: usize,
    pub median_ns: u64,
    pub p90_ns: u64,
    pub min_ns: u64,
    pub max_ns: u64,
}

impl Summary {
    /// Nearest-rank percentiles of `samples` (which need not be sorted).
    pub fn of(samples: &[u64]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort_unstable();
        let rank = |p: f64| s[((p * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
        Some(Self { n: s.len(), median_ns: rank(0.5), p90_ns: rank(0.9), min_ns: s[0], max_ns: s[s.len() - 1] })
    }
}

/// One metric, ours next to the built-in.
#[derive(Debug, Serialize)]
pub struct Pair {
    pub ours: Summary,
    pub builtin: Summary,
    /// ours / built-in, of the medians and of the p90s.
    pub ratio_median: f64,
    pub ratio_p90: f64,
}

impl Pair {
    pub fn new(ours: &[u64], builtin: &[u64]) -> Result<Self> {
        let (Some(ours), Some(builtin)) = (Summary::of(ours), Summary::of(builtin)) else { bail!("no samples") };
        Ok(Self {
            ratio_median: ratio(ours.median_ns, builtin.median_ns),
            ratio_p90: ratio(ours.p90_ns, builtin.p90_ns),
            ours,
            builtin,
        })
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        f64::NAN
    } else {
        a as f64 / b as f64
    }
}

/// A ratio for the table: `n/a` where it is undefined (a zero denominator).
fn ratio_text(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.3}")
    } else {
        "n/a".into()
    }
}

/// Finest step of the monotonic clock as it reads, in nanoseconds: the smallest
/// non-zero difference between successive readings. (clock_getres() reports the
/// hrtimer resolution instead, a tick on a kernel without CONFIG_HIGH_RES_TIMERS, even
/// though the TSC behind the clock reads in nanoseconds.)
fn clock_resolution_ns() -> Option<u64> {
    let mut step = u64::MAX;
    let mut last = Instant::now();
    let start = last;
    while start.elapsed().as_millis() < 50 {
        let now = Instant::now();
        let d = (now - last).as_nanos() as u64;
        if d > 0 {
            step = step.min(d);
        }
        last = now;
    }
    (step != u64::MAX).then_some(step)
}

/// Refuse to measure microseconds with a clock that ticks in milliseconds (a kernel
/// without a high-resolution clocksource: `jiffies`, `refined-jiffies`).
pub fn check_clock(clocksource: &str, resolution_ns: Option<u64>) -> Result<()> {
    const FINEST_USABLE_NS: u64 = 10_000;
    let coarse = clocksource.contains("jiffies") || resolution_ns.is_some_and(|r| r > FINEST_USABLE_NS);
    if coarse {
        bail!(
            "this kernel has no fine clock (clocksource {clocksource}, CLOCK_MONOTONIC resolution {}): the cells \
             take microseconds, so every duration would be 0 or one tick and the ratios meaningless; boot with a \
             high-resolution clocksource (tsc, hpet, kvm-clock; CONFIG_HIGH_RES_TIMERS=y)",
            resolution_ns.map_or("unknown".to_owned(), |r| format!("{} us", r / 1000))
        );
    }
    Ok(())
}

/// DMA segment counts (`nents`) seen over all MAPs of a buffer.
#[derive(Debug, Serialize)]
struct Segments {
    ours_min: u32,
    ours_max: u32,
    builtin_min: u32,
    builtin_max: u32,
}

#[derive(Debug, Serialize)]
struct CaseReport {
    backing: Backing,
    size_mib: u64,
    /// The memfd is mapped in this process while buffers are created: udmabuf-live
    /// watches the mapping (notifiers) instead of checking pages lazily at map time.
    memfd_mapped: bool,
    /// The `UDMABUF_CREATE` ioctl alone.
    create: Pair,
    /// close() of the dma-buf fd alone: the release of the buffer.
    close: Pair,
    create_close: Pair,
    map: Pair,
    sg_entries: Segments,
}

#[derive(Debug, Serialize)]
struct Report {
    iterations: u32,
    warmup: u32,
    ours: String,
    builtin: String,
    kernel: String,
    cpus: usize,
    /// The clock behind the timings (`refined-jiffies` means 4 ms resolution at HZ=250).
    clocksource: String,
    cases: Vec<CaseReport>,
    /// Every figure of this boot with its target (`bench_cells`).
    cells: Vec<Cell>,
    /// Punch..visible latencies of the 4 KiB hole, for the chart.
    latency: Vec<super::bench_floor::Series>,
}

fn open_dev(path: &Path, what: &str, hint: &str) -> Result<File> {
    OpenOptions::new().read(true).write(true).open(path).map_err(|e| match e.kind() {
        ErrorKind::NotFound => CtlError::NoDevice(format!("{} ({what}) does not exist: {hint}", path.display())).into(),
        ErrorKind::PermissionDenied => {
            CtlError::Permission(format!("cannot open {} ({what}): permission denied", path.display())).into()
        }
        _ => anyhow::Error::new(e).context(format!("cannot open {} ({what})", path.display())),
    })
}

/// A sealed memfd with every page allocated, so creates measure pinning, not allocation.
pub(crate) fn memfd_for(hugetlb: bool, size: u64) -> Result<OwnedFd> {
    memfd(if hugetlb { Backing::Hugetlb } else { Backing::Shmem }, size)
}

pub(crate) fn memfd(backing: Backing, size: u64) -> Result<OwnedFd> {
    let mut flags = MemFdCreateFlag::MFD_ALLOW_SEALING | MemFdCreateFlag::MFD_CLOEXEC;
    if backing == Backing::Hugetlb {
        flags |= MemFdCreateFlag::MFD_HUGETLB;
    }
    let fd = memfd_create(c"udmabuf-ctl-bench", flags).with_context(|| format!("memfd_create ({backing:?})"))?;
    let len = i64::try_from(size)?;
    nix::unistd::ftruncate(&fd, len).context("ftruncate")?;
    fallocate(fd.as_raw_fd(), FallocateFlags::empty(), 0, len)
        .with_context(|| format!("fallocate {} MiB {backing:?} (enough hugepages reserved?)", size / MIB))?;
    fcntl(fd.as_raw_fd(), FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK)).context("F_ADD_SEALS")?;
    Ok(fd)
}

/// Durations of one create and of the close that follows it, in ns.
pub(crate) fn create_close(dev: &File, memfd: &OwnedFd, size: u64) -> Result<[u64; 2]> {
    let start = Instant::now();
    let buf = crate::sys::udmabuf_create(dev, memfd, size).context("UDMABUF_CREATE")?;
    let created = Instant::now();
    drop(buf);
    let closed = Instant::now();
    Ok([(created - start).as_nanos() as u64, (closed - created).as_nanos() as u64])
}

/// One importer file statically attached to one dma-buf.
pub(crate) struct Attached(Importer);

impl Attached {
    pub(crate) fn new(importer: &Path, dmabuf: &OwnedFd) -> Result<Self> {
        let f = Importer::from_file(open_dev(importer, "test importer", "load ulive_importer.ko (selftests/importer/)")?);
        f.attach(dmabuf.as_raw_fd(), false).context("importer ATTACH")?;
        Ok(Self(f))
    }
    /// A fresh mapping: (map_ns, nents).
    pub(crate) fn map(&self) -> Result<(u64, u32)> {
        let m = self.0.map().context("importer MAP")?;
        Ok((m.map_ns, m.nents))
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        // Closing detaches too; DETACH first makes a failure visible in strace.
        let _ = self.0.detach();
    }
}

/// Run `f(device_index)` `WARMUP + iterations` times for both devices, alternating which
/// goes first; returns the measured samples of each.
fn alternate<T>(iterations: u32, mut f: impl FnMut(usize) -> Result<T>) -> Result<[Vec<T>; 2]> {
    let mut out = [Vec::with_capacity(iterations as usize), Vec::with_capacity(iterations as usize)];
    for i in 0..WARMUP + iterations {
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for d in order {
            let ns = f(d)?;
            if i >= WARMUP {
                out[d].push(ns);
            }
        }
    }
    Ok(out)
}

fn bench_case(args: &BenchArgs, devs: &[File; 2], backing: Backing, size: u64, mapped: bool) -> Result<CaseReport> {
    let what = format!("{backing:?} {} MiB{}", size / MIB, if mapped { ", memfd mapped" } else { "" });
    let memfd = memfd(backing, size)?;
    let _mapping = if mapped { Some(crate::sys::Mapping::new(&memfd, size, true).context("mmap of the memfd")?) } else { None };
    let [ours, builtin] =
        alternate(args.iterations, |d| create_close(&devs[d], &memfd, size)).with_context(|| format!("{what}: create+close"))?;
    let pair =
        |f: fn(&[u64; 2]) -> u64| Pair::new(&ours.iter().map(f).collect::<Vec<_>>(), &builtin.iter().map(f).collect::<Vec<_>>());
    let create = pair(|s| s[0])?;
    let close = pair(|s| s[1])?;
    let create_close = pair(|s| s[0] + s[1])?;

    let bufs = [crate::sys::udmabuf_create(&devs[0], &memfd, size)?, crate::sys::udmabuf_create(&devs[1], &memfd, size)?];
    let atts = [Attached::new(&args.importer, &bufs[0])?, Attached::new(&args.importer, &bufs[1])?];
    let mut nents = [(u32::MAX, 0u32); 2];
    let [ours, builtin] = alternate(args.iterations, |d| {
        let (ns, n) = atts[d].map()?;
        nents[d] = (nents[d].0.min(n), nents[d].1.max(n));
        Ok(ns)
    })
    .with_context(|| format!("{what}: map"))?;
    let map = Pair::new(&ours, &builtin)?;
    let sg_entries = Segments { ours_min: nents[0].0, ours_max: nents[0].1, builtin_min: nents[1].0, builtin_max: nents[1].1 };
    Ok(CaseReport { backing, size_mib: size / MIB, memfd_mapped: mapped, create, close, create_close, map, sg_entries })
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_owned()).unwrap_or_else(|_| "unknown".into())
}

fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

fn range(min: u32, max: u32) -> String {
    if min == max {
        min.to_string()
    } else {
        format!("{min}-{max}")
    }
}

/// The cells of one case of create/close/map.
fn case_cells(c: &CaseReport) -> Vec<Cell> {
    let subject = format!("{} {} MiB{}", c.backing.name(), c.size_mib, if c.memfd_mapped { ", memfd mapped" } else { "" });
    let detail = |p: &Pair| format!("ours {} us, built-in {} us", us(p.ours.median_ns), us(p.builtin.median_ns));
    let cell = |key: &str, p: &Pair| Cell::new(key, &subject, None, p.ratio_median, detail(p));
    let unwatched_shmem = !c.memfd_mapped && c.backing == Backing::Shmem;
    let mut v = vec![
        cell("create", &c.create),
        cell("close", &c.close),
        cell("create_close", &c.create_close),
        cell(if unwatched_shmem { "map_unwatched" } else { "map" }, &c.map),
    ];
    if c.backing == Backing::Hugetlb && c.size_mib == 64 {
        let s = &c.sg_entries;
        v.push(Cell::new(
            "sg_entries",
            &subject,
            None,
            f64::from(s.ours_max),
            format!("ours {}, built-in {} on the same pages", range(s.ours_min, s.ours_max), range(s.builtin_min, s.builtin_max)),
        ));
    }
    v
}

/// The cells of one boot as a Markdown table, each judged against its target.
pub fn cells_table(cells: &[Cell]) -> String {
    use super::bench_cells::Goal;
    let mut t = String::from("\n| cell | value | target | verdict | figures |\n|---|---:|---|---|---|\n");
    for c in cells {
        let value = c.value.map_or_else(|| c.note.clone().unwrap_or_else(|| "n/a".into()), |v| format!("{v:.3}"));
        let (target, verdict) = match (c.goal, c.value) {
            (Goal::Report, _) => ("reported".to_owned(), String::new()),
            (g, v) => {
                let t = match g {
                    Goal::AtMost(x) => format!("<= {x}"),
                    Goal::AtLeast(x) => format!(">= {x}"),
                    Goal::Report => String::new(),
                };
                let verdict = match v.and_then(|v| g.met(v)) {
                    Some(true) => "met",
                    Some(false) => "MISSED",
                    None => "not measured",
                };
                (t, verdict.to_owned())
            }
        };
        t.push_str(&format!("| {} | {value} | {target} | {verdict} | {} |\n", c.label, c.detail));
    }
    t
}

/// The report as a Markdown table (it is pasted into BENCHMARKS.md as is).
fn table(r: &Report) -> String {
    let mut t = String::new();
    t.push_str(&format!(
        "{} iterations per cell (+{} warm-up), ours = {}, built-in = {}; kernel {}, guest CPUs {}, clocksource {}\n\n",
        r.iterations, r.warmup, r.ours, r.builtin, r.kernel, r.cpus, r.clocksource
    ));
    t.push_str("| buffer | metric | ours median | ours p90 | built-in median | built-in p90 | ours/built-in median | ours/built-in p90 |\n");
    t.push_str("|---|---|---:|---:|---:|---:|---:|---:|\n");
    for c in &r.cases {
        let name = format!("{} {} MiB{}", c.backing.name(), c.size_mib, if c.memfd_mapped { ", mapped" } else { "" });
        for (metric, p) in [
            ("create (us)", &c.create),
            ("close (us)", &c.close),
            ("create+close (us)", &c.create_close),
            ("map_dma_buf (us)", &c.map),
        ] {
            t.push_str(&format!(
                "| {name} | {metric} | {} | {} | {} | {} | {} | {} |\n",
                us(p.ours.median_ns),
                us(p.ours.p90_ns),
                us(p.builtin.median_ns),
                us(p.builtin.p90_ns),
                ratio_text(p.ratio_median),
                ratio_text(p.ratio_p90)
            ));
        }
        let s = &c.sg_entries;
        t.push_str(&format!(
            "| {name} | sg entries (nents) | {} | | {} | | {} | |\n",
            range(s.ours_min, s.ours_max),
            range(s.builtin_min, s.builtin_max),
            ratio_text(ratio(s.ours_max as u64, s.builtin_max as u64))
        ));
    }
    t
}

pub fn run(args: &BenchArgs) -> Result<ExitCode> {
    // Before opening anything or measuring for minutes.
    check_clock(&read_trimmed("/sys/devices/system/clocksource/clocksource0/current_clocksource"), clock_resolution_ns())?;
    let devs = [
        open_dev(&args.ours, "udmabuf-live", "load udmabuf_live.ko")?,
        open_dev(&args.builtin, "built-in udmabuf", "the kernel needs CONFIG_UDMABUF=y")?,
    ];
    // Fail early, before minutes of measuring, if the importer is missing.
    drop(open_dev(&args.importer, "test importer", "load ulive_importer.ko (selftests/importer/)")?);
    if args.profile {
        print!("{}", super::bench_profile::run(&devs[0], &devs[1], args)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut cases = Vec::new();
    for mapped in [false, true] {
        for backing in [Backing::Shmem, Backing::Hugetlb] {
            for size in [4 * MIB, 64 * MIB] {
                cases.push(bench_case(args, &devs, backing, size, mapped)?);
            }
        }
    }
    let mut cells: Vec<Cell> = cases.iter().flat_map(case_cells).collect();
    let live_iters = args.iterations.min(100);
    super::bench_floor::live_cells(&devs[0], &devs[1], live_iters, &mut cells)?;
    let latency = super::bench_floor::punch_cells(&devs[0], &devs[1], live_iters, &mut cells)?;
    super::bench_floor::fault_cells(&devs[0], live_iters, &mut cells)?;
    super::bench_floor::kmem_cells(&devs[0], &devs[1], &mut cells)?;
    super::bench_floor::memory_cells(&devs[0], &devs[1], &mut cells)?;
    let report = Report {
        iterations: args.iterations,
        warmup: WARMUP,
        ours: args.ours.display().to_string(),
        builtin: args.builtin.display().to_string(),
        kernel: nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default(),
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        clocksource: read_trimmed("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
        cases,
        cells,
        latency,
    };
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(path) = &args.json_out {
        std::fs::write(path, format!("{json}\n")).with_context(|| format!("write {}", path.display()))?;
    }
    if args.json {
        println!("{json}");
    } else {
        print!("{}", table(&report));
        print!("{}", cells_table(&report.cells));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s = Summary::of(&[50, 10, 40, 20, 30, 60, 70, 80, 90, 100]).unwrap();
        assert_eq!((s.n, s.median_ns, s.p90_ns, s.min_ns, s.max_ns), (10, 50, 90, 10, 100));
        let one = Summary::of(&[7]).unwrap();
        assert_eq!((one.median_ns, one.p90_ns), (7, 7));
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn coarse_clocks_are_refused() {
        assert!(check_clock("tsc", Some(1)).is_ok());
        assert!(check_clock("kvm-clock", None).is_ok());
        let e = check_clock("refined-jiffies", Some(4_000_000)).unwrap_err().to_string();
        assert!(e.contains("no fine clock") && e.contains("refined-jiffies") && e.contains("4000 us"), "{e}");
        assert!(check_clock("tsc", Some(4_000_000)).is_err());
    }

    #[test]
    fn ratios_and_table() {
        let p = Pair::new(&[110, 110], &[100, 100]).unwrap();
        assert!((p.ratio_median - 1.1).abs() < 1e-9);
        let r = Report {
            iterations: 2,
            warmup: WARMUP,
            ours: "/dev/udmabuf-live".into(),
            builtin: "/dev/udmabuf".into(),
            kernel: "7.2".into(),
            cpus: 2,
            clocksource: "tsc".into(),
            cases: vec![CaseReport {
                backing: Backing::Hugetlb,
                size_mib: 64,
                memfd_mapped: false,
                create: Pair::new(&[1500], &[700]).unwrap(),
                close: Pair::new(&[500], &[300]).unwrap(),
                create_close: Pair::new(&[2000], &[1000]).unwrap(),
                map: Pair::new(&[1000], &[1000]).unwrap(),
                sg_entries: Segments { ours_min: 2, ours_max: 3, builtin_min: 32, builtin_max: 32 },
            }],
            cells: vec![Cell::new("map_unwatched", "shmem 4 MiB", None, 1.2, "ours 1.2 us, built-in 1.0 us".into())],
            latency: Vec::new(),
        };
        let t = table(&r);
        assert!(t.contains("| hugetlb 64 MiB | create (us) | 1.5 | 1.5 | 0.7 | 0.7 | 2.143 | 2.143 |"), "{t}");
        assert!(t.contains("| hugetlb 64 MiB | close (us) | 0.5 | 0.5 | 0.3 | 0.3 | 1.667 | 1.667 |"), "{t}");
        assert!(t.contains("| hugetlb 64 MiB | create+close (us) | 2.0 | 2.0 | 1.0 | 1.0 | 2.000 | 2.000 |"), "{t}");
        assert!(t.contains("| hugetlb 64 MiB | sg entries (nents) | 2-3 | | 32 | | 0.094 | |"), "{t}");
        let cells = cells_table(&r.cells);
        assert!(cells.contains("| 1.200 | <= 1.05 | MISSED | ours 1.2 us, built-in 1.0 us |"), "{cells}");
        let case = case_cells(&r.cases[0]);
        assert_eq!(
            case.iter().map(|c| c.key.as_str()).collect::<Vec<_>>(),
            ["create", "close", "create_close", "map", "sg_entries"]
        );
        assert_eq!(case[4].value, Some(3.0));
        let mut zero = r;
        zero.cases[0].map = Pair::new(&[1000], &[0]).unwrap();
        let t = table(&zero);
        assert!(t.contains("| hugetlb 64 MiB | map_dma_buf (us) | 1.0 | 1.0 | 0.0 | 0.0 | n/a | n/a |"), "{t}");
        assert!(!t.contains("NaN"), "{t}");
    }
}
