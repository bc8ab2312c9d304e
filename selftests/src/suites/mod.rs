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
mod lifetime;
mod live;
mod live_close;
mod live_errors;
mod live_importers;
mod live_lazy;
mod live_safety;
mod live_stress;
mod live_util;
mod mmap;
mod module;
mod security;
mod rng;
mod stress;
mod sync;
mod unload_busy;
mod upstream;
mod vgem;

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

/// Every suite, in run order.
pub fn all() -> Vec<Suite> {
    vec![
        module::load_suite(),
        create_errors::suite(),
        create::suite(),
        mmap::suite(),
        sync::suite(),
        vgem::suite(),
        lifetime::suite(),
        upstream::suite(),
        importer::suite(),
        live::suite(),
        live_lazy::suite(),
        live_importers::suite(),
        live_close::suite(),
        live_stress::suite(),
        live_errors::suite(),
        live_safety::suite(),
        debugfs::suite(),
        security::suite(),
        // The CLI as users run it, as separate processes, on both devices.
        cli::suite(),
        // Hardening: concurrency, adversarial inputs, allocation failures.
        stress::suite(),
        fuzz::suite(),
        fault_injection::suite(),
        // After every other suite that uses huge pages (see live_safety::races_suite).
        live_safety::races_suite(),
        // Last before the unload: it checks the module's refcount returns to its base.
        unload_busy::suite(),
        // After everything that allocates, while the module's symbols still resolve.
        kmemleak::suite(),
        module::unload_suite(),
    ]
}
