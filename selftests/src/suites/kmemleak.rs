//! `kmemleak`: after every other suite (just before `module-unload`, so the module's
//! symbols still resolve in backtraces), ask kmemleak for unreferenced objects. Runs in
//! the debug flavour (CONFIG_DEBUG_KMEMLEAK, auto-scan off); elsewhere it is skipped.
//!
//! Any report fails the case, not only those with udmabuf_live or ulive_importer
//! frames: an object leaked by the dma-buf core, shmem or the mmu-notifier code on
//! behalf of the module has backtraces without the module's frames (kmemleak keeps
//! only the innermost frames, and an allocation made deep inside a core helper may
//! not reach the module's), and the harness already counts kmemleak's own "new
//! suspected memory leaks" console line as a kernel report. Reports that do name the
//! modules are listed first.

use super::{cases, Suite};
use crate::ktap::{out, CaseResult};
use anyhow::{bail, Context};
use std::path::Path;
use std::time::Duration;

const KMEMLEAK: &str = "/sys/kernel/debug/kmemleak";

pub fn suite() -> Suite {
    Suite::new("kmemleak", cases![no_unreferenced_objects])
}

fn no_unreferenced_objects() -> CaseResult {
    if !Path::new(KMEMLEAK).exists() {
        skip!("no {KMEMLEAK}: kernel without CONFIG_DEBUG_KMEMLEAK (use KERNEL_FLAVOR=debug)");
    }
    // kmemleak only reports objects older than 5 s, and objects freed through RCU or
    // deferred work need a moment: let the last suite's frees settle.
    std::thread::sleep(Duration::from_secs(6));
    for i in 0..2 {
        std::fs::write(KMEMLEAK, "scan").with_context(|| {
            format!(
                "scan {} of 2: write 'scan' to {KMEMLEAK} (kmemleak disabled?)",
                i + 1
            )
        })?;
    }
    let text = std::fs::read_to_string(KMEMLEAK).with_context(|| format!("read {KMEMLEAK}"))?;
    let reports: Vec<&str> = text.split("unreferenced object").skip(1).collect();
    if reports.is_empty() {
        out("    # kmemleak: 0 unreferenced objects after two scans");
        return Ok(());
    }
    let ours = |r: &&str| r.contains("udmabuf_live") || r.contains("ulive_importer");
    let mut sorted: Vec<&str> = reports.iter().copied().filter(ours).collect();
    let n_ours = sorted.len();
    sorted.extend(reports.iter().copied().filter(|r| !ours(r)));
    out(&format!(
        "    # kmemleak: {} unreferenced objects, {n_ours} with udmabuf_live/ulive_importer frames",
        reports.len()
    ));
    for r in sorted.iter().take(8) {
        for l in format!("unreferenced object{r}").lines().take(24) {
            out(&format!("    # | {l}"));
        }
    }
    bail!(
        "kmemleak found {} unreferenced objects ({n_ours} naming udmabuf_live or ulive_importer)",
        reports.len()
    )
}
