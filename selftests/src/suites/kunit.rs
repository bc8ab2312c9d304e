//! kunit: the module's own KUnit tests (`#[kunit_tests]` in kmod/), one case here per
//! KUnit case.
//!
//! On a kernel with CONFIG_KUNIT, KUnit runs a module's suites when the module loads (the
//! `module` suite loads it, or this suite's precondition does) and keeps the results of
//! that run in debugfs, `/sys/kernel/debug/kunit/SUITE/results`, as KTAP. Each case here
//! reads its KUnit case's result line there: `ok` passes, `ok ... # SKIP why` skips,
//! `not ok` fails with the lines KUnit logged for the case (the failed assertion) as its
//! reason, and a missing result fails. `every_kunit_case_is_listed` fails when the module
//! has a KUnit suite or case this list lacks, or has none at all. On a kernel without
//! KUnit every case skips with the reason.
//!
//! The list is fixed at build time (the runner prints the plan before anything runs);
//! keep it in step with the `#[kunit_tests]` modules of kmod/.

use super::{Case, Require, Suite};
use crate::ktap::CaseResult;
use crate::util::precondition;
use anyhow::{bail, Context, Result};
use std::path::Path;

const KUNIT_DEBUGFS: &str = "/sys/kernel/debug/kunit";
/// Present when the kernel has KUnit (CONFIG_KUNIT=y: its `enable` parameter and others).
const KUNIT_PARAMS: &str = "/sys/module/kunit/parameters";
/// The module's KUnit suites all start with this.
const SUITE_PREFIX: &str = "udmabuf_live_";

/// Declares the module's KUnit suites and cases: [`KUNIT_CASES`] and one runner case each.
macro_rules! kunit_cases {
    ($($suite:ident: [$($case:ident),* $(,)?]),* $(,)?) => {
        /// Every KUnit suite of the module with its cases, in the module's order.
        const KUNIT_CASES: &[(&str, &[&str])] = &[$((stringify!($suite), &[$(stringify!($case)),*])),*];

        fn kunit_case_list() -> Vec<Case> {
            vec![$($(Case {
                name: concat!(stringify!($suite), ".", stringify!($case)),
                run: {
                    fn run() -> CaseResult {
                        kunit_result(stringify!($suite), stringify!($case))
                    }
                    run
                },
                requires: &[],
            }),*),*]
        }
    };
}

kunit_cases! {
    udmabuf_live_bitruns: [
        no_words_or_no_bits,
        all_set,
        word_boundaries,
        runs_end_at_the_last_bit,
        gaps_split_runs,
    ],
    udmabuf_live_dirty_bitmap: [
        empty_bitmap_marks_nothing,
        one_page_at_word_boundaries,
        ranges_across_word_boundaries,
        adjacent_marks_merge_and_gaps_stay,
        all_marks_exactly_the_buffer,
        last_partial_word,
        marks_past_the_words_are_dropped,
        take_returns_the_marks_and_clears_them,
        take_of_a_window_far_from_page_zero,
        marks_outside_the_window_read_stay,
        restore_puts_back_what_was_taken,
        marks_between_take_and_restore_survive,
    ],
    udmabuf_live_tracker: [
        tracker_take_restore_and_in_flight,
        invalidated_addresses_to_pages,
    ],
    udmabuf_live_buffer_checks: [
        byte_bounds_are_inclusive,
        byte_bounds_at_the_loff_t_limit,
        seals_a_buffer_accepts,
    ],
    udmabuf_live_one_or_many: [
        starts_empty,
        one_element_is_not_on_the_heap,
        more_elements_keep_their_order,
        reserve_allocates_only_past_one,
        reserve_from_empty,
        retain_keeps_order_and_empties_one,
    ],
    udmabuf_live_index_runs: [
        no_indices,
        single_and_consecutive,
        gaps_split_runs,
    ],
}

pub fn suite() -> Suite {
    let mut cases = kunit_case_list();
    cases.push(Case {
        name: "every_kunit_case_is_listed",
        run: every_kunit_case_is_listed,
        requires: &[],
    });
    Suite::new("kunit", cases).requires(&[Require::Check(require_kunit)])
}

/// Skip (with the reason) unless the kernel has KUnit and its debugfs results are there.
fn require_kunit() -> Result<()> {
    if !Path::new(KUNIT_PARAMS).is_dir() {
        return Err(precondition(format!(
            "kernel without KUnit (no {KUNIT_PARAMS}: CONFIG_KUNIT is off)"
        )));
    }
    let enabled = std::fs::read_to_string(format!("{KUNIT_PARAMS}/enable")).unwrap_or_default();
    if enabled.trim() == "N" {
        return Err(precondition(
            "KUnit is disabled (kunit.enable=0): it runs no test at module load",
        ));
    }
    if !Path::new(KUNIT_DEBUGFS).is_dir() {
        return Err(precondition(format!(
            "no {KUNIT_DEBUGFS}: debugfs not mounted (mount -t debugfs none /sys/kernel/debug) \
             or CONFIG_KUNIT_DEBUGFS is off"
        )));
    }
    Ok(())
}

/// How a KUnit case ended, from its result line.
#[derive(Debug, PartialEq)]
enum KunitStatus {
    Ok,
    Skip(String),
    NotOk,
}

/// One case of a KUnit results file: its name, its status and what KUnit logged for it.
#[derive(Debug, PartialEq)]
struct KunitCase {
    name: String,
    status: KunitStatus,
    log: Vec<String>,
}

/// The cases of one suite's debugfs results (KTAP: the suite's result line at column 0,
/// its cases' at one indent of four spaces, each case's log lines just before its result
/// line).
fn parse_results(text: &str) -> Vec<KunitCase> {
    let mut cases = Vec::new();
    let mut log = Vec::new();
    for line in text.lines() {
        let Some(body) = line.strip_prefix("    ") else {
            continue; // the document's and the suite's own lines
        };
        if body.starts_with(' ') {
            log.push(body.trim().to_owned()); // a case's log, one indent deeper
            continue;
        }
        let (ok, rest) = if let Some(r) = body.strip_prefix("not ok ") {
            (false, r)
        } else if let Some(r) = body.strip_prefix("ok ") {
            (true, r)
        } else {
            // The suite's header ("KTAP version 1", "# Subtest:", the plan) is not part
            // of a case; anything else is the next case's log ("# case: ..." and the
            // lines KUnit's assertion messages go on with).
            let header = body.starts_with("KTAP version")
                || body.starts_with("# Subtest:")
                || body.starts_with("1..");
            if !header {
                log.push(body.to_owned());
            }
            continue;
        };
        // "N name" or "N name # SKIP why"
        let Some((_number, rest)) = rest.split_once(' ') else {
            continue;
        };
        let (name, status) = match rest.split_once(" # SKIP") {
            Some((name, why)) if ok => (name, KunitStatus::Skip(why.trim().to_owned())),
            _ if ok => (rest, KunitStatus::Ok),
            _ => (rest.split(" # ").next().unwrap_or(rest), KunitStatus::NotOk),
        };
        let name = name.trim().to_owned();
        // KUnit's attribute lines ("# case.speed: normal") say nothing about the result.
        let attribute = format!("# {name}.");
        let mut log = std::mem::take(&mut log);
        log.retain(|l| !l.starts_with(&attribute));
        cases.push(KunitCase { name, status, log });
    }
    cases
}

/// The results file of KUnit suite `suite`.
fn results_path(suite: &str) -> String {
    format!("{KUNIT_DEBUGFS}/{suite}/results")
}

fn read_results(suite: &str) -> Result<Vec<KunitCase>> {
    let path = results_path(suite);
    if !Path::new(&path).exists() {
        bail!(
            "no {path}: the loaded {} has no KUnit suite {suite} (built without CONFIG_KUNIT, \
             or from other sources than this runner)",
            udmabuf_live_uapi::MODULE_NAME
        );
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    Ok(parse_results(&text))
}

/// The result of KUnit case `case` of suite `suite`, from the module's last load.
fn kunit_result(suite: &str, case: &str) -> CaseResult {
    let cases = read_results(suite)?;
    let Some(c) = cases.into_iter().find(|c| c.name == case) else {
        bail!(
            "{suite}: no result line for {case} in {}",
            results_path(suite)
        );
    };
    match c.status {
        KunitStatus::Ok => Ok(()),
        KunitStatus::Skip(why) => skip!("KUnit skipped it: {why}"),
        KunitStatus::NotOk if c.log.is_empty() => bail!("KUnit: not ok {case} (nothing logged)"),
        KunitStatus::NotOk => bail!("KUnit: not ok {case}:\n{}", c.log.join("\n")),
    }
}

/// The module's KUnit suites in debugfs are exactly the listed ones, with the listed cases.
fn every_kunit_case_is_listed() -> CaseResult {
    let mut found: Vec<String> = std::fs::read_dir(KUNIT_DEBUGFS)
        .with_context(|| format!("list {KUNIT_DEBUGFS}"))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(SUITE_PREFIX))
        .collect();
    found.sort();
    if found.is_empty() {
        bail!(
            "no {SUITE_PREFIX}* KUnit suite in {KUNIT_DEBUGFS} although the kernel has KUnit: \
             the loaded module brought none"
        );
    }
    let mut problems = Vec::new();
    for (suite, _) in KUNIT_CASES {
        if !found.iter().any(|f| f == suite) {
            problems.push(format!("listed suite {suite} is not in {KUNIT_DEBUGFS}"));
        }
    }
    for suite in &found {
        let Some((_, listed)) = KUNIT_CASES.iter().find(|(s, _)| s == suite) else {
            problems.push(format!("KUnit suite {suite} is not listed here"));
            continue;
        };
        let got = read_results(suite)?;
        if got.is_empty() {
            problems.push(format!("{}: no case results", results_path(suite)));
        }
        for c in &got {
            if !listed.contains(&c.name.as_str()) {
                problems.push(format!("KUnit case {suite}.{} is not listed here", c.name));
            }
        }
        for want in *listed {
            if !got.iter().any(|c| c.name == *want) {
                problems.push(format!("listed case {suite}.{want} has no KUnit result"));
            }
        }
    }
    if !problems.is_empty() {
        bail!(
            "the list in selftests/src/suites/kunit.rs and the module's KUnit tests differ:\n{}",
            problems.join("\n")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The shape of lib/kunit/debugfs.c's output, with a failed and a skipped case.
    const RESULTS: &str = "KTAP version 1
1..1
    KTAP version 1
    # Subtest: udmabuf_live_x
    1..3
    ok 1 first
    # second: ASSERTION FAILED at kmod/notifier.rs:10
    Expected bits.any() to be true, but is false
    # second.speed: normal
    not ok 2 second
    ok 3 third # SKIP not today
    # udmabuf_live_x: pass:1 fail:1 skip:1 total:3
    # Totals: pass:1 fail:1 skip:1 total:3
not ok 1 udmabuf_live_x
";

    #[test]
    fn parses_debugfs_results() {
        let cases = parse_results(RESULTS);
        assert_eq!(
            cases.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["first", "second", "third"]
        );
        assert_eq!(cases[0].status, KunitStatus::Ok);
        assert!(cases[0].log.is_empty());
        assert_eq!(cases[1].status, KunitStatus::NotOk);
        assert_eq!(
            cases[1].log,
            [
                "# second: ASSERTION FAILED at kmod/notifier.rs:10",
                "Expected bits.any() to be true, but is false"
            ]
        );
        assert_eq!(cases[2].status, KunitStatus::Skip("not today".into()));
    }

    #[test]
    fn list_matches_the_module_sources() {
        // Every `#[test]` of a `kunit_tests` module under kmod/ is listed, and nothing else.
        let mut files = Vec::new();
        let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("../kmod")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push(path);
                }
            }
        }
        let mut in_sources: Vec<(String, String)> = Vec::new();
        for path in files {
            let text = std::fs::read_to_string(&path).unwrap();
            let mut suite = None;
            let mut test_next = false;
            for line in text.lines().map(str::trim) {
                if let Some(rest) = line
                    .strip_prefix("#[")
                    .and_then(|l| l.split("kunit_tests(").nth(1))
                {
                    suite = rest.split(')').next().map(str::to_owned);
                } else if line == "#[test]" {
                    test_next = true;
                } else if test_next && line.starts_with("fn ") {
                    let name = line[3..].split('(').next().unwrap().to_owned();
                    let s = suite.clone().expect("#[test] outside a kunit_tests module");
                    in_sources.push((s, name));
                    test_next = false;
                }
            }
        }
        let mut listed: Vec<(String, String)> = KUNIT_CASES
            .iter()
            .flat_map(|(s, cases)| cases.iter().map(|c| (s.to_string(), c.to_string())))
            .collect();
        in_sources.sort();
        listed.sort();
        assert_eq!(listed, in_sources);
    }
}
