//! The guest test suites. Each suite is an ordered list of cases; the order matters
//! (`module` loads the module first, `module-unload` unloads it last).

use crate::ktap::CaseResult;

mod cli;
mod common;
mod create;
mod create_errors;
mod debugfs;
mod fault_injection;
mod fuzz;
mod importer;
mod importer_client;
mod kmemleak;
mod kunit;
mod lifetime;
mod live;
mod live_close;
mod live_errors;
mod live_importers;
mod live_lazy;
mod live_safety;
mod live_stress;
mod live_util;
mod live_vmm;
mod mmap;
mod module;
mod security;
mod stress;
mod sync;
mod unload_busy;
mod upstream;
mod vgem;
mod wayland;

/// What a suite or a case needs before it can run, declared once in its table (as
/// kselftest_harness's fixtures skip in their setup). The runner checks them before the
/// case: a missing one ([`crate::util::precondition`]) makes the case `# SKIP`, any other
/// error fails it.
#[derive(Clone, Copy)]
pub enum Require {
    /// udmabuf-live is the device under test (not `ULIVE_TEST_DEVICE=/dev/udmabuf`): the
    /// case uses its own ioctls, parameters or module.
    LiveDevice,
    /// A check of the suite's own.
    Check(fn() -> anyhow::Result<()>),
}

impl Require {
    pub fn check(&self) -> anyhow::Result<()> {
        match self {
            Require::LiveDevice => {
                let ours = crate::util::device_path();
                let tested = common::test_device();
                if tested != ours {
                    skip!("testing {tested}, not udmabuf-live's {ours}");
                }
                Ok(())
            }
            Require::Check(f) => f(),
        }
    }
}

#[derive(Clone)]
pub struct Case {
    pub name: &'static str,
    pub run: fn() -> CaseResult,
    /// Beyond the suite's.
    pub requires: &'static [Require],
}

pub struct Suite {
    pub name: &'static str,
    pub cases: Vec<Case>,
    /// What every case of the suite needs.
    pub requires: &'static [Require],
    /// The cases share state of the test process (a compositor started by the first
    /// case, counters summed by the last), so they run in the runner's process, one after
    /// the other. Every other suite runs each case in a forked child.
    pub shared_process: bool,
}

impl Suite {
    pub fn new(name: &'static str, cases: Vec<Case>) -> Self {
        Self {
            name,
            cases,
            requires: &[],
            shared_process: false,
        }
    }

    /// What every case of the suite needs.
    pub fn requires(self, requires: &'static [Require]) -> Self {
        Self { requires, ..self }
    }

    /// The cases share state of the test process: run them in the runner's process.
    pub fn shared_process(self) -> Self {
        Self {
            shared_process: true,
            ..self
        }
    }
}

/// A suite's case table: `cases![a, b => [Require::LiveDevice], c]`.
macro_rules! cases {
    ($($f:path $(=> [$($r:expr),* $(,)?])?),* $(,)?) => {
        vec![$($crate::suites::Case {
            name: stringify!($f),
            run: $f,
            requires: &[$($($r),*)?],
        }),*]
    };
}
pub(crate) use cases;

/// Cases that each run one shared function with arguments of their own, as a table:
/// `case_fns! { a_shmem => a(Backing::Shmem); a_hugetlb => a(Backing::Hugetlb); }`
/// defines `fn a_shmem() -> CaseResult` and `fn a_hugetlb() -> CaseResult` (doc comments
/// before a row go to its function).
macro_rules! case_fns {
    ($($(#[$attr:meta])* $name:ident => $f:ident($($arg:expr),* $(,)?);)*) => {
        $($(#[$attr])*
        fn $name() -> $crate::ktap::CaseResult {
            $f($($arg),*)?;
            Ok(())
        })*
    };
}
pub(crate) use case_fns;

/// A suite named `NAME-eager` is suite `NAME` run under the module's `repopulate=eager`
/// policy; every other suite runs under the default, `lazy`. The harness sets the
/// policy before each suite (see `policy_of`).
pub const EAGER_SUFFIX: &str = "-eager";

/// The repopulation policy suite `name` runs under.
pub fn policy_of(name: &str) -> &'static str {
    if name.ends_with(EAGER_SUFFIX) {
        "eager"
    } else {
        "lazy"
    }
}

/// `suite` and its copy under the eager policy: every live-update suite runs under both.
fn both_policies(suite: Suite) -> [Suite; 2] {
    let name: &'static str = Box::leak(format!("{}{EAGER_SUFFIX}", suite.name).into_boxed_str());
    let eager = Suite {
        name,
        cases: suite.cases.clone(),
        requires: suite.requires,
        shared_process: suite.shared_process,
    };
    [suite, eager]
}

/// Every suite, in run order.
pub fn all() -> Vec<Suite> {
    let live_suites = [
        live::suite(),
        live_lazy::suite(),
        live_importers::suite(),
        live_close::suite(),
        live_stress::suite(),
        live_errors::suite(),
        live_safety::suite(),
        live_vmm::suite(),
    ];
    let mut all = vec![
        module::load_suite(),
        // The module's own KUnit tests, which ran when `module` loaded it.
        kunit::suite(),
        create_errors::suite(),
        create::suite(),
        mmap::suite(),
        sync::suite(),
        vgem::suite(),
        lifetime::suite(),
        upstream::suite(),
        importer::suite(),
    ];
    all.extend(live_suites.into_iter().flat_map(both_policies));
    all.extend([
        debugfs::suite(),
        security::suite(),
        // The CLI as users run it, as separate processes, on both devices.
        cli::suite(),
        // A real compositor (Weston on llvmpipe, Debian rootfs) imports our dma-bufs.
        wayland::suite(),
        // Hardening: concurrency, adversarial inputs, allocation failures.
        stress::suite(),
        fuzz::suite(),
        fault_injection::suite(),
    ]);
    // After every other suite that uses huge pages (see live_safety::races_suite).
    all.extend(both_policies(live_safety::races_suite()));
    all.extend([
        // Last before the unload: it checks the module's refcount returns to its base.
        unload_busy::suite(),
        // After everything that allocates, while the module's symbols still resolve.
        kmemleak::suite(),
        module::unload_suite(),
    ]);
    all
}
