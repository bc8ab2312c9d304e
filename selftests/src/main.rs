//! `ulive-selftests`: the guest-side test runner. Prints KTAP and exits with kselftest
//! codes (0 pass, 1 fail, 4 skip). Each suite lives in `suites/`.

mod ktap;
mod suites;
mod util;

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
    /// Also write the exit code to this file (busybox sh has no PIPESTATUS).
    #[arg(long, default_value = "/tmp/ulive-selftests.rc")]
    rc_file: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let code = run(&args);
    let _ = std::fs::write(&args.rc_file, format!("{code}\n"));
    ExitCode::from(code)
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
    let chosen: Vec<_> =
        all.into_iter().filter(|s| args.suites.is_empty() || args.suites.iter().any(|w| w == s.name)).collect();

    out(&format!("TAP version 13\n1..{}", chosen.len()));
    let (mut failed, mut skipped) = (0, 0);
    for (i, suite) in chosen.iter().enumerate() {
        let mut report = SuiteReport::begin(suite.name, suite.cases.len());
        for case in &suite.cases {
            let outcome = match (case.run)() {
                Ok(o) => o,
                Err(e) => Outcome::Fail(format!("{e:#}")),
            };
            report.record(case.name, &outcome);
        }
        match report.finish(i + 1) {
            Outcome::Fail(_) => failed += 1,
            Outcome::Skip(_) => skipped += 1,
            Outcome::Pass => {}
        }
    }
    let passed = chosen.len() - failed - skipped;
    out(&format!("# Totals: pass:{passed} fail:{failed} skip:{skipped}"));
    if failed > 0 {
        KSFT_FAIL
    } else if skipped == chosen.len() {
        KSFT_SKIP
    } else {
        KSFT_PASS
    }
}
