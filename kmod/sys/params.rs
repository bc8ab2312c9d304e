// SPDX-License-Identifier: GPL-2.0
//! The module parameters (declared in C with `module_param`, which Rust cannot reach
//! with sysfs permissions), read where they are used: each can change at run time.

use super::ffi;

/// `size_limit_mb`: the largest buffer, in bytes (upstream's name and default, 64 MiB).
/// A negative value (writable by root) allows nothing.
pub(crate) fn size_limit_bytes() -> u64 {
    // SAFETY: reads an int with READ_ONCE; no preconditions.
    let mb = unsafe { ffi::ulive_param_size_limit_mb() };
    u64::try_from(mb).unwrap_or(0).saturating_mul(1 << 20)
}

/// `list_limit`: the most items of one UDMABUF_CREATE_LIST (upstream's, 1024). A negative
/// value allows none.
pub(crate) fn list_limit() -> u32 {
    // SAFETY: reads an int with READ_ONCE; no preconditions.
    u32::try_from(unsafe { ffi::ulive_param_list_limit() }).unwrap_or(0)
}

/// `account_memlock`: charge pinned pages to the creator's RLIMIT_MEMLOCK.
pub(crate) fn account_memlock() -> bool {
    // SAFETY: reads a bool with READ_ONCE; no preconditions.
    unsafe { ffi::ulive_param_account_memlock() }
}

/// What the worker does with a page the memfd lost (`repopulate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Repopulate {
    /// Allocate a new page for it at once.
    Eager,
    /// Leave it unpopulated until something needs it (the default).
    Lazy,
}

impl Repopulate {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Eager => "eager",
            Self::Lazy => "lazy",
        }
    }
}

/// `repopulate`, now.
pub(crate) fn repopulate() -> Repopulate {
    // SAFETY: reads an int with READ_ONCE; no preconditions.
    match unsafe { ffi::ulive_param_repopulate() } {
        0 => Repopulate::Eager,
        _ => Repopulate::Lazy,
    }
}

/// Test hook `test_delay_ms`: sleep in a race window the tests widen (0: no-op).
pub(crate) fn test_delay() {
    // SAFETY: no preconditions; may sleep, and is only called where sleeping is allowed.
    unsafe { ffi::ulive_test_delay() }
}

/// Test hook `test_fail_swaps`: should this page swap fail with ENOMEM?
pub(crate) fn test_fail_swap() -> bool {
    // SAFETY: an atomic counter; no preconditions.
    unsafe { ffi::ulive_test_fail_swap() }
}
