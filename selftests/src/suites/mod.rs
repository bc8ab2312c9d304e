//! The guest test suites. Each suite is an ordered list of cases; the order matters
//! (`module` loads the module first, `module-unload` unloads it last).

use crate::ktap::CaseResult;

mod importer;
mod module;
mod upstream;

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
    vec![module::load_suite(), upstream::suite(), importer::suite(), module::unload_suite()]
}
