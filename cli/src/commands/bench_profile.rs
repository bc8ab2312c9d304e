//! `udmabuf-ctl bench --profile`: where the time of the cells that miss their targets
//! goes, function by function, ours next to the built-in driver and the bare punch.
//!
//! The kernel's function profiler (tracefs `function_profile_enabled`, with the graph
//! tracer: a function's time includes its callees and any sleep) counts the calls of a
//! fixed list of kernel functions and of our C glue while a workload runs, on a kernel
//! with `CONFIG_FUNCTION_PROFILER` (the bench flavour). The Rust half of the module is
//! not instrumented for ftrace (rustc emits no `__fentry__` call), so its own time is
//! what a syscall's time leaves after its traced callees.
//!
//! Tracing costs time of its own at every traced call, so the figures are larger than
//! the untraced cells; the functions are chosen to be called a few times per operation
//! (per page at most), and only the shares within one profile mean much.

use super::bench::{self, Backing};
use super::bench_floor::{self, Cover};
use crate::cli::BenchArgs;
use crate::units::MIB;
use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where tracefs is mounted: its own mount point, or the one debugfs provides.
const TRACEFS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The functions profiled, by the path they belong to. Static functions of the
/// built-in driver (drivers/dma-buf/udmabuf.c) are listed by name; one the compiler
/// inlined, or one this kernel lacks, is left out of the filter and named in the output.
const FUNCTIONS: &[&str] = &[
    // The syscalls a workload makes, and where close's release runs.
    "__x64_sys_ioctl",
    "__x64_sys_close",
    "__x64_sys_fallocate",
    "task_work_run",
    "__fput",
    "dma_buf_file_release",
    // The built-in driver.
    "udmabuf_ioctl",
    "udmabuf_create",
    "release_udmabuf",
    "unpin_all_folios",
    "map_udmabuf",
    "get_sg_table",
    // Our C glue (kmod/ulive_mm.c, kmod/ulive_shims.c) that runs once per call or per run.
    "ulive_memfd_seals",
    "ulive_memfd_kind",
    "ulive_memfd_version",
    "ulive_memfd_diff",
    "ulive_memfd_settle",
    "ulive_folios_take_pages",
    "ulive_find_mappings",
    "ulive_still_mapped",
    "ulive_unpin_pages",
    "ulive_unpin_appended",
    "ulive_dma_buf_zap",
    "ulive_user_charge",
    "ulive_user_uncharge",
    // dma-buf, the sg table and the DMA mapping.
    "dma_buf_export",
    "dma_buf_fd",
    "dma_buf_release",
    "dma_buf_map_attachment",
    "dma_buf_unmap_attachment",
    "dma_buf_invalidate_mappings",
    "dma_map_sgtable",
    "dma_unmap_sg_attrs",
    // Pinning and allocating the memfd's pages.
    "memfd_pin_folios",
    "memfd_alloc_folio",
    "filemap_get_folios_contig",
    "unpin_folios",
    "shmem_read_folio_gfp",
    "shmem_get_folio_gfp",
    "alloc_hugetlb_folio_reserve",
    "hugetlb_reserve_pages",
    "folio_zero_user",
    // Watching the memfd's mappings.
    "mmu_interval_notifier_insert",
    "mmu_interval_notifier_remove",
    "__mmu_notifier_invalidate_range_start",
    "unmap_mapping_range",
    // The punch itself.
    "shmem_fallocate",
    "shmem_truncate_range",
    "hugetlbfs_fallocate",
    "remove_inode_hugepages",
    "hugetlb_fault",
    "shmem_fault",
    // Memory, the worker, and pinning's own steps.
    "__kvmalloc_node_noprof",
    "kvfree",
    "queue_work_on",
    // Rust's allocations (KBox, KVec: kvrealloc calls krealloc), and their frees (a
    // realloc to size 0).
    "kvrealloc_node_align_noprof",
    "krealloc_node_align_noprof",
    "__kmalloc_noprof",
    "kfree",
    "unpin_user_page",
    "unpin_user_pages",
    "unpin_user_folio",
    "__folio_put",
    "try_grab_folio",
    "__mmu_notifier_register",
    "lru_add_drain",
    "lru_add_drain_all",
    "mmu_interval_read_begin",
    "mmput",
    "kmem_cache_alloc_noprof",
    "kmem_cache_free",
    "handle_mm_fault",
];

/// One workload profiled: what it runs, on which device (or on none).
struct Work<'a> {
    name: String,
    /// How many operations the counts are divided by.
    ops: u32,
    run: Box<dyn FnMut() -> Result<()> + 'a>,
}

/// The tracefs directory, with the profiler's filter set to the functions it has.
struct Profiler {
    dir: PathBuf,
    /// The functions asked for that this kernel cannot trace (absent or inlined).
    missing: Vec<String>,
}

impl Profiler {
    /// Profile [`FUNCTIONS`] and `extra` (names or globs) from now until drop.
    fn start(extra: &[String]) -> Result<Self> {
        let Some(dir) = TRACEFS.iter().map(PathBuf::from).find(|d| d.join("function_profile_enabled").exists()) else {
            bail!(
                "no function profiler in tracefs (looked in {}): mount tracefs, and use a kernel with \
                 CONFIG_FUNCTION_PROFILER (make bench builds one: KERNEL_FLAVOR=bench)",
                TRACEFS.join(", ")
            );
        };
        // CPU time only: a task's sleep would otherwise count in every function it sleeps
        // under, and the wait for the worker is what the timed cells show.
        let sleep = dir.join("options/sleep-time");
        std::fs::write(&sleep, "0").with_context(|| format!("write {}", sleep.display()))?;
        let filter = dir.join("set_ftrace_filter");
        std::fs::write(&filter, "").with_context(|| format!("clear {}", filter.display()))?;
        let mut missing = Vec::new();
        let mut accepted = 0;
        for f in FUNCTIONS.iter().copied().chain(extra.iter().map(String::as_str)) {
            // One write per name, ended so the kernel parses it now: it refuses the whole
            // write if one name is unknown.
            let mut file = OpenOptions::new().append(true).open(&filter).with_context(|| format!("open {}", filter.display()))?;
            match file.write_all(format!("{f}\n").as_bytes()) {
                Ok(()) => accepted += 1,
                Err(_) => missing.push(f.to_owned()),
            }
        }
        ensure!(accepted > 0, "{} accepted none of the functions to profile", filter.display());
        let p = Self { dir, missing };
        // Enabled once for every workload: each enable and disable patches the kernel's
        // text at every traced function, which under TCG has crashed the guest (an int3
        // oops in the idle loop) when done often or for many functions.
        p.write("function_profile_enabled", "1")?;
        Ok(p)
    }

    fn write(&self, file: &str, value: &str) -> Result<()> {
        let p = self.dir.join(file);
        std::fs::write(&p, value).with_context(|| format!("write {value} to {}", p.display()))
    }

    /// Calls and total time so far of every profiled function, summed over the CPUs.
    fn snapshot(&self) -> Result<BTreeMap<String, (u64, f64)>> {
        let mut sum: BTreeMap<String, (u64, f64)> = BTreeMap::new();
        for stat in std::fs::read_dir(self.dir.join("trace_stat")).context("read trace_stat")? {
            let path = stat?.path();
            if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("function")) {
                let text = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
                for (f, hits, us) in parse_stat(&text) {
                    let e = sum.entry(f).or_default();
                    e.0 += hits;
                    e.1 += us;
                }
            }
        }
        Ok(sum)
    }

    /// Run `work` twice: a warm-up, then the run whose profile per operation this is.
    fn profile(&self, work: &mut Work) -> Result<Vec<Line>> {
        (work.run)().with_context(|| format!("{}: warm-up", work.name))?;
        let before = self.snapshot()?;
        (work.run)().with_context(|| format!("{}: profiled run", work.name))?;
        let after = self.snapshot()?;
        let ops = f64::from(work.ops);
        let mut lines: Vec<Line> = after
            .into_iter()
            .filter_map(|(name, (hits, us))| {
                let (h0, us0) = before.get(&name).copied().unwrap_or_default();
                let calls = hits.checked_sub(h0).filter(|&h| h > 0)?;
                Some(Line { function: full_name(name), calls: calls as f64 / ops, us: (us - us0) / ops })
            })
            .collect();
        lines.sort_by(|a, b| b.us.total_cmp(&a.us));
        Ok(lines)
    }
}

impl Drop for Profiler {
    fn drop(&mut self) {
        let _ = self.write("function_profile_enabled", "0");
        let _ = self.write("set_ftrace_filter", "");
        let _ = self.write("options/sleep-time", "1");
    }
}

/// One function of a profile, per operation of the workload.
struct Line {
    function: String,
    calls: f64,
    us: f64,
}

/// The listed function that `name`, cut at 30 characters by the kernel, stands for.
fn full_name(name: String) -> String {
    match FUNCTIONS.iter().find(|f| name.len() == 30 && f.starts_with(name.as_str())) {
        Some(f) => (*f).to_owned(),
        None => name,
    }
}

/// The rows of one `trace_stat/functionN`: (function, hits, total time in us).
fn parse_stat(text: &str) -> Vec<(String, u64, f64)> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let f = w.next()?;
            let hits = w.next()?.parse().ok()?;
            let time: f64 = w.next()?.parse().ok()?;
            // The unit follows the time: "us" in every kernel that has the profiler.
            (w.next()? == "us").then(|| (f.to_owned(), hits, time))
        })
        .collect()
}

/// The workloads: the parts of the missed cells, each on ours and on its reference.
/// Everything a workload needs is made here, so that its run is the work alone.
fn workloads<'a>(ours: &'a File, builtin: &'a File, importer: &Path, iterations: u32) -> Result<Vec<Work<'a>>> {
    let devices = [(ours, "ours"), (builtin, "built-in")];
    let mut v = Vec::new();
    let size = 4 * MIB;
    for (backing, mapped) in [(Backing::Shmem, false), (Backing::Hugetlb, false), (Backing::Hugetlb, true)] {
        for (dev, who) in devices {
            let memfd = bench::memfd(backing, size)?;
            let mapping =
                mapped.then(|| crate::sys::Mapping::new(&memfd, size, true)).transpose().context("mmap of the memfd")?;
            v.push(Work {
                name: format!("create+close, {} 4 MiB{}, {who}", backing.name(), if mapped { ", memfd mapped" } else { "" }),
                ops: iterations,
                run: Box::new(move || {
                    let _watched = &mapping;
                    for _ in 0..iterations {
                        bench::create_close(dev, &memfd, size)?;
                    }
                    Ok(())
                }),
            });
        }
    }
    for (dev, who) in devices {
        let memfd = bench::memfd(Backing::Shmem, size)?;
        let buf = crate::sys::udmabuf_create(dev, &memfd, size).context("create 4 MiB")?;
        let att = bench::Attached::new(importer, &buf)?;
        v.push(Work {
            name: format!("map_dma_buf, shmem 4 MiB, nothing watches the memfd, {who}"),
            ops: iterations,
            run: Box::new(move || {
                let _dmabuf = &buf;
                for _ in 0..iterations {
                    att.map()?;
                }
                Ok(())
            }),
        });
    }
    for hole in bench_floor::HOLES {
        for (cover, who) in [(Cover::Ours(ours), "ours, punch..SYNC"), (Cover::Nothing, "the bare punch")] {
            let mut punched = bench_floor::Punched::new(cover, hole)?;
            v.push(Work {
                name: format!("{}, {who}, then the refill by write faults", hole.subject()),
                ops: iterations,
                run: Box::new(move || punched.rounds(iterations).map(drop)),
            });
        }
    }
    Ok(v)
}

/// Profile every workload; the Markdown report.
pub fn run(ours: &File, builtin: &File, args: &BenchArgs) -> Result<String> {
    let iterations = args.iterations;
    let profiler = Profiler::start(&args.profile_functions)?;
    let mut out = String::new();
    out.push_str(&format!(
        "Function profile (tracefs function profiler with the graph tracer, {}): CPU time \
         including callees, not sleep; {iterations} operations per workload after as many \
         warm-up ones, per operation, every task (our worker too). A punch round is the \
         punch (..SYNC on ours), a write per page of the hole through the memfd's mapping, \
         and on ours an untimed SYNC. The kernel cuts names at 30 characters.\n",
        "the functions listed in cli/src/commands/bench_profile.rs"
    ));
    if !profiler.missing.is_empty() {
        out.push_str(&format!("\nNot traceable in this kernel (absent or inlined): {}.\n", profiler.missing.join(", ")));
    }
    let only = args.profile_only.as_deref().unwrap_or("");
    for mut w in workloads(ours, builtin, &args.importer, iterations)?.into_iter().filter(|w| w.name.contains(only)) {
        let lines = profiler.profile(&mut w)?;
        out.push_str(&format!("\n#### {}\n\n| function | calls | us |\n|---|---:|---:|\n", w.name));
        for l in lines.iter().filter(|l| l.us >= 0.05) {
            out.push_str(&format!("| `{}` | {:.1} | {:.1} |\n", l.function, l.calls, l.us));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::parse_stat;

    #[test]
    fn reads_the_profiler_table() {
        let text = "  Function                               Hit    Time            Avg             s^2\n  \
                    --------                               ---    ----            ---             ---\n  \
                    memfd_pin_folios                        20    1234.567 us     61.728 us       3.141 us\n  \
                    schedule                                 3    10.000 us       3.333 us        0.000 us\n";
        let rows = parse_stat(text);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0], ("memfd_pin_folios".to_owned(), 20, 1234.567));
        assert_eq!(rows[1].1, 3);
    }
}
