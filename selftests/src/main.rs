//! `ulive-selftests`: the guest-side test runner. Prints KTAP (Documentation/dev-tools/
//! ktap.rst) and exits with kselftest codes (0 pass, 1 fail, 4 skip). Each suite lives in
//! `suites/`. The kselftest collection (`make kselftest-install`) runs every suite as its
//! own program through a thin entry point (`ulive-selftests --suite NAME`).
//!
//! Output: a KTAP document whose top-level tests are the suites chosen, each a nested
//! KTAP document of its cases. A case whose precondition is missing (no module file, no
//! huge pages, no debugfs, not root) is `ok N case # SKIP why`.

#[macro_use]
mod util;
mod harness;
mod ktap;
mod suites;

use clap::Parser;
use ktap::{out, Outcome, SuiteReport};
use std::process::ExitCode;

/// kselftest exit codes.
const KSFT_PASS: u8 = 0;
const KSFT_FAIL: u8 = 1;
const KSFT_SKIP: u8 = 4;

#[derive(Parser)]
#[command(version, about = "udmabuf-live guest test suites (KTAP output)")]
struct Args {
    /// Run only these suites (repeatable). Default: all.
    #[arg(long = "suite")]
    suites: Vec<String>,
    /// List the suites and exit.
    #[arg(long)]
    list: bool,
    /// Also write the exit code to this file.
    #[arg(long)]
    rc_file: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let code = run(&args);
    if let Some(f) = &args.rc_file {
        let _ = std::fs::write(f, format!("{code}\n"));
    }
    ExitCode::from(code)
}

/// Why every case of `suite` must skip, if a precondition of the whole suite is missing.
/// Every suite needs root; all but `module` (which loads it itself) need the module
/// loaded, and it is loaded here if a `.ko` is found. A module file that does not load is
/// a failure, not a skip.
fn suite_precondition(suite: &str) -> Result<Option<String>, String> {
    let check = || -> anyhow::Result<()> {
        util::require_root()?;
        if suite == "module" {
            if !util::is_loaded() {
                util::require_module_file(udmabuf_live_uapi::MODULE_NAME)?;
            }
            return Ok(());
        }
        util::ensure_module()?;
        util::set_repopulate(suites::policy_of(suite))
    };
    match check() {
        Ok(()) => Ok(None),
        Err(e) => match util::precondition_of(&e) {
            Some(why) => Ok(Some(why)),
            None => Err(format!("{e:#}")),
        },
    }
}

/// A line in the kernel log (if /dev/kmsg is writable), so kernel reports can be placed
/// between the suites' begin and end.
fn kmsg(msg: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        let _ = f.write_all(format!("ulive-selftests: {msg}\n").as_bytes());
    }
}

fn run(args: &Args) -> u8 {
    let all = suites::all();
    if args.list {
        for s in &all {
            println!("{}", s.name);
        }
        return KSFT_PASS;
    }
    for want in &args.suites {
        if !all.iter().any(|s| s.name == want) {
            eprintln!("unknown suite '{want}'; --list shows them");
            return KSFT_FAIL;
        }
    }
    let chosen: Vec<_> = all
        .into_iter()
        .filter(|s| args.suites.is_empty() || args.suites.iter().any(|w| w == s.name))
        .collect();

    out(&format!("KTAP version 1\n1..{}", chosen.len()));
    // Harness self-test (ULIVE_INJECT_KTAP): one malformed result line (a test number out
    // of sequence) after the first case, which the host's KTAP parser must reject.
    let mut plant_malformed = std::env::var_os("ULIVE_INJECT_KTAP").is_some();
    let (mut failed, mut skipped) = (0, 0);
    for (i, suite) in chosen.iter().enumerate() {
        let t0 = std::time::Instant::now();
        kmsg(&format!("{}: begin", suite.name));
        let mut report = SuiteReport::begin(suite.name, suite.cases.len());
        let whole_suite = suite_precondition(suite.name);
        for case in &suite.cases {
            let outcome = match &whole_suite {
                Ok(Some(why)) => Outcome::Skip(why.clone()),
                Err(e) => Outcome::Fail(format!("setting up the suite: {e}")),
                Ok(None) => harness::run_case(suite, case),
            };
            report.record(case.name, &outcome);
            if std::mem::take(&mut plant_malformed) {
                out("    ok 1 planted_malformed_result_line");
            }
        }
        report.diag(&format!(
            "{}: {:.1} s",
            suite.name,
            t0.elapsed().as_secs_f64()
        ));
        let verdict = match report.finish(i + 1) {
            Outcome::Fail(_) => {
                failed += 1;
                "not ok"
            }
            Outcome::Skip(_) => {
                skipped += 1;
                "skip"
            }
            Outcome::Pass => "ok",
        };
        kmsg(&format!(
            "{}: end ({verdict}, {:.1} s)",
            suite.name,
            t0.elapsed().as_secs_f64()
        ));
    }
    let passed = chosen.len() - failed - skipped;
    out(&format!(
        "# Totals: pass:{passed} fail:{failed} xfail:0 xpass:0 skip:{skipped} error:0"
    ));
    if failed > 0 {
        KSFT_FAIL
    } else if skipped == chosen.len() {
        KSFT_SKIP
    } else {
        KSFT_PASS
    }
}

/// The kernel module's bitmap-run iterator, compiled here too so it is unit-tested.
#[cfg(test)]
#[path = "../../kmod/dirty/runs.rs"]
mod bitruns;

#[cfg(test)]
mod bitruns_tests {
    use super::bitruns::runs;

    fn naive(words: &[u64]) -> Vec<std::ops::Range<usize>> {
        let bit = |i: usize| words[i / 64] >> (i % 64) & 1 == 1;
        let mut out: Vec<std::ops::Range<usize>> = Vec::new();
        for i in 0..words.len() * 64 {
            if bit(i) {
                match out.last_mut() {
                    Some(r) if r.end == i => r.end = i + 1,
                    _ => out.push(i..i + 1),
                }
            }
        }
        out
    }

    #[test]
    fn matches_naive_scan() {
        let cases: Vec<Vec<u64>> = vec![
            vec![],
            vec![0],
            vec![u64::MAX],
            vec![1],
            vec![1 << 63, 1],
            vec![u64::MAX, u64::MAX, 0, 0b1011],
            vec![0, 0, 0, 1 << 40],
            vec![0xF0F0_0000_0000_000F, u64::MAX, 0x8000_0000_0000_0001],
        ];
        for words in &cases {
            assert_eq!(
                runs(words).collect::<Vec<_>>(),
                naive(words),
                "words {words:x?}"
            );
        }
        // Pseudo-random bitmaps.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..500 {
            let words: Vec<u64> = (0..5)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x & (x >> 3)
                })
                .collect();
            assert_eq!(
                runs(&words).collect::<Vec<_>>(),
                naive(&words),
                "words {words:x?}"
            );
        }
    }
}
