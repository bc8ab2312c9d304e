// SPDX-License-Identifier: GPL-2.0
//! Charging pinned pages to the creating process's locked-memory limit.
//!
//! Upstream udmabuf lets any user of the device pin memory without limit. We charge the
//! creator's `mm->pinned_vm`, as RDMA does for pinned DMA memory: the charge fails with
//! ENOMEM beyond RLIMIT_MEMLOCK unless the caller has CAP_IPC_LOCK, shows in
//! /proc/<pid>/status as VmPin, and is returned at release. pinned_vm is an atomic
//! counter; locked_vm (VFIO's choice) would take the mmap lock for write twice per
//! buffer, against the creating process's own page faults.

use crate::ffi;
use core::ptr::NonNull;
use kernel::{bindings, error::to_result, prelude::*};

/// Pages charged to an mm's pinned_vm.
///
/// # Invariants
/// `mm` carries an mmgrab() reference owned by us, and `pages` pages are charged to
/// its pinned_vm on our behalf.
pub(crate) struct MemlockCharge {
    mm: NonNull<bindings::mm_struct>,
    pages: usize,
}

// SAFETY: the charge may be returned from any task (an atomic counter of the mm).
unsafe impl Send for MemlockCharge {}
// SAFETY: no shared-access methods.
unsafe impl Sync for MemlockCharge {}

impl MemlockCharge {
    /// Charge `pages` to the current process. `None` for kernel threads (no mm).
    pub(crate) fn charge_current(pages: usize) -> Result<Option<Self>> {
        // SAFETY: no preconditions; returns current->mm with a reference, or NULL.
        let Some(mm) = NonNull::new(unsafe { ffi::ulive_mmgrab_current() }) else { return Ok(None) };
        // SAFETY: `mm` is valid (we hold a reference); checks RLIMIT_MEMLOCK of current.
        let r = to_result(unsafe { ffi::ulive_charge_pinned_vm(mm.as_ptr(), pages as _) });
        if let Err(e) = r {
            // SAFETY: drop the reference taken above.
            unsafe { ffi::ulive_mmdrop(mm.as_ptr()) };
            return Err(e);
        }
        // INVARIANT: charged and referenced above.
        Ok(Some(Self { mm, pages }))
    }
}

impl Drop for MemlockCharge {
    fn drop(&mut self) {
        // SAFETY: by the type invariant we hold a reference and `pages` are charged.
        unsafe {
            ffi::ulive_uncharge_pinned_vm(self.mm.as_ptr(), self.pages as _);
            ffi::ulive_mmdrop(self.mm.as_ptr());
        }
    }
}
