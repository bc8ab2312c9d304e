// SPDX-License-Identifier: GPL-2.0
//! Declarations of the C glue in `ulive_helpers.c`. Only the wrapper layer calls these.

use kernel::ffi::c_int;

extern "C" {
    pub(crate) fn ulive_param_size_limit_mb() -> c_int;
    pub(crate) fn ulive_param_list_limit() -> c_int;
}

/// Current value of the `size_limit_mb` module parameter (writable in sysfs).
pub(crate) fn size_limit_mb() -> i32 {
    // SAFETY: reads an int with READ_ONCE; no preconditions.
    unsafe { ulive_param_size_limit_mb() }
}

/// Current value of the `list_limit` module parameter (writable in sysfs).
pub(crate) fn list_limit() -> i32 {
    // SAFETY: reads an int with READ_ONCE; no preconditions.
    unsafe { ulive_param_list_limit() }
}
