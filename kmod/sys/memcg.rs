// SPDX-License-Identifier: GPL-2.0
//! The memory cgroup of a buffer's creator, so that pages the module brings in on the
//! buffer's behalf (the worker runs in a kworker, in the root cgroup) are charged where
//! the creator's own page faults would have charged them.

use super::ffi;
use core::ptr::NonNull;

/// A reference to a memory cgroup.
///
/// # Invariants
/// `memcg` carries a css reference owned by us.
pub(crate) struct MemCg {
    memcg: NonNull<ffi::MemCgroup>,
}

// SAFETY: css references may be used and dropped from any task.
unsafe impl Send for MemCg {}
// SAFETY: shared access only hands the pointer to set_active_memcg().
unsafe impl Sync for MemCg {}

impl MemCg {
    /// The current task's memory cgroup; `None` without memory cgroups.
    pub(crate) fn current() -> Option<Self> {
        // SAFETY: no preconditions; returns a referenced memcg or NULL.
        let memcg = NonNull::new(unsafe { ffi::ulive_memcg_current() })?;
        // INVARIANT: referenced by get_mem_cgroup_from_current().
        Some(Self { memcg })
    }

    /// Charge the current task's allocations to this cgroup until the guard drops.
    pub(crate) fn enter(&self) -> ActiveMemCg<'_> {
        // SAFETY: the memcg is referenced (type invariant) for the guard's life.
        let prev = unsafe { ffi::ulive_memcg_enter(self.memcg.as_ptr()) };
        ActiveMemCg { prev, _memcg: self }
    }
}

impl Drop for MemCg {
    fn drop(&mut self) {
        // SAFETY: we own one reference (type invariant).
        unsafe { ffi::ulive_memcg_put(self.memcg.as_ptr()) };
    }
}

/// The active memcg of the current task while it lives; restores the previous one.
pub(crate) struct ActiveMemCg<'a> {
    prev: *mut ffi::MemCgroup,
    _memcg: &'a MemCg,
}

impl Drop for ActiveMemCg<'_> {
    fn drop(&mut self) {
        // SAFETY: restores what `enter` replaced, on the same task (the guard is !Send
        // through its raw pointer).
        unsafe { ffi::ulive_memcg_enter(self.prev) };
    }
}
