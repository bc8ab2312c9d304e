//! The kernel's own udmabuf kselftest (tools/testing/selftests/drivers/dma-buf/udmabuf.c),
//! built unchanged from the same kernel tree. It exits 0 even when a test fails, so its
//! TAP lines are read here: every planned test must report `ok`, none skipped.

use super::{cases, Suite};
use crate::ktap::{out, CaseResult, Outcome};
use anyhow::{bail, Context};

const KSELFTEST: &str = "/selftests/udmabuf-kselftest";

pub fn suite() -> Suite {
    Suite { name: "upstream-kselftest", cases: cases![builtin_udmabuf_passes_all] }
}

/// Run the binary and judge its TAP output; its lines are echoed as diagnostics.
pub fn run_and_judge(cmd: &mut std::process::Command) -> CaseResult {
    let output = cmd.output().with_context(|| format!("running {KSELFTEST}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let (mut plan, mut ok, mut bad, mut skip) = (None, 0, Vec::new(), 0);
    for line in text.lines() {
        out(&format!("    # | {line}"));
        let l = line.trim();
        if let Some(n) = l.strip_prefix("1..") {
            plan = n.parse::<usize>().ok();
        } else if l.starts_with("not ok ") {
            bad.push(l.to_owned());
        } else if l.starts_with("ok ") {
            if l.contains("# SKIP") {
                skip += 1;
            } else {
                ok += 1;
            }
        }
    }
    for line in String::from_utf8_lossy(&output.stderr).lines() {
        out(&format!("    # stderr| {line}"));
    }
    let Some(plan) = plan else { bail!("no plan line in the kselftest output") };
    if !bad.is_empty() {
        bail!("{} of {plan} upstream tests failed: {}", bad.len(), bad.join("; "));
    }
    if skip > 0 {
        bail!("{skip} of {plan} upstream tests skipped (hugepages reserved? memory?)");
    }
    if ok != plan {
        bail!("{ok} of {plan} planned upstream tests reported ok");
    }
    Ok(Outcome::Pass)
}

fn builtin_udmabuf_passes_all() -> CaseResult {
    if !std::path::Path::new("/dev/udmabuf").exists() {
        bail!("/dev/udmabuf missing: the test kernel needs CONFIG_UDMABUF=y");
    }
    run_and_judge(&mut std::process::Command::new(KSELFTEST))
}
