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
mod rng;
mod security;
mod stress;
mod sync;
mod unload_busy;
mod upstream;
mod vgem;
mod wayland;

pub struct Case {
    pub name: &'static str,
    pub run: fn() -> CaseResult,
}

pub struct Suite {
    pub name: &'static str,
    pub cases: Vec<Case>,
}

macro_rules! cases {
    ($($f:path),* $(,)?) => { vec![$($crate::suites::Case { name: stringify!($f), run: $f }),*] };
}
pub(crate) use cases;

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
        cases: suite
            .cases
            .iter()
            .map(|c| Case {
                name: c.name,
                run: c.run,
            })
            .collect(),
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
