//! A small KTAP writer. Each suite is one top-level test whose cases are a nested KTAP
//! document, streamed as they finish so a hang shows where it happened.

use std::io::Write;

/// How one case ended.
#[derive(Debug)]
pub enum Outcome {
    Pass,
    Fail(String),
    Skip(String),
}

/// Result of a case body: `Err` is a failure with its reason, unless it is a missing
/// precondition (`skip!`, [`crate::util::precondition`]), which is a skip.
pub type CaseResult = anyhow::Result<()>;

/// Streams one nested KTAP document (a suite) and summarises it.
pub struct SuiteReport {
    name: String,
    next: usize,
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl SuiteReport {
    pub fn begin(name: &str, planned: usize) -> Self {
        out(&format!(
            "    KTAP version 1\n    # Subtest: {name}\n    1..{planned}"
        ));
        Self {
            name: name.to_owned(),
            next: 1,
            passed: 0,
            failed: 0,
            skipped: 0,
        }
    }

    /// Print a diagnostic line inside the suite.
    pub fn diag(&self, msg: &str) {
        for l in msg.lines() {
            out(&format!("    # {l}"));
        }
    }

    pub fn record(&mut self, case: &str, outcome: &Outcome) {
        let n = self.next;
        self.next += 1;
        match outcome {
            Outcome::Pass => {
                self.passed += 1;
                out(&format!("    ok {n} {case}"));
            }
            Outcome::Skip(why) => {
                self.skipped += 1;
                out(&format!("    ok {n} {case} # SKIP {why}"));
            }
            Outcome::Fail(why) => {
                self.failed += 1;
                self.diag(&format!("{case}: {why}"));
                out(&format!("    not ok {n} {case}"));
            }
        }
    }

    /// The suite's own top-level line.
    pub fn finish(self, index: usize) -> Outcome {
        let total = self.passed + self.failed + self.skipped;
        let outcome = if self.failed > 0 {
            Outcome::Fail(format!("{} of {total} cases failed", self.failed))
        } else if self.skipped == total {
            Outcome::Skip("every case skipped".into())
        } else {
            Outcome::Pass
        };
        let line = match &outcome {
            Outcome::Pass => format!("ok {index} {}", self.name),
            Outcome::Skip(w) => format!("ok {index} {} # SKIP {w}", self.name),
            Outcome::Fail(_) => format!("not ok {index} {}", self.name),
        };
        out(&format!(
            "# {}: pass:{} fail:{} skip:{}",
            self.name, self.passed, self.failed, self.skipped
        ));
        out(&line);
        outcome
    }
}

/// One write per line set, flushed at once: the guest console interleaves with printk.
pub fn out(s: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{s}");
    let _ = o.flush();
}
