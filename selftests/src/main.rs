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

/// The kernel module's bitmap-run iterator, compiled here too so it is unit-tested.
#[cfg(test)]
#[path = "../../kmod/bitruns.rs"]
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
            assert_eq!(runs(words).collect::<Vec<_>>(), naive(words), "words {words:x?}");
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
            assert_eq!(runs(&words).collect::<Vec<_>>(), naive(&words), "words {words:x?}");
        }
    }
}
