// SPDX-License-Identifier: GPL-2.0
//! Charging pinned pages to the creating user's locked-memory limit.
//!
//! Upstream udmabuf lets any user of the device pin memory without limit; with
//! `account_memlock` on, we charge every page a buffer pins to the *user* that created
//! it (`user_struct::locked_vm`, against the creator's RLIMIT_MEMLOCK, unlimited with
//! CAP_IPC_LOCK), as io_uring does. A charge on the creating mm (RDMA's pinned_vm) could
//! be escaped: a child that creates buffers and exits hands them to its parent, whose
//! mm was never charged. The charge covers the whole footprint: the buffer's pages, new
//! pages waiting for a pin or vmap to go, and old pages kept for importers' mappings.

use super::ffi;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};
use kernel::{error::to_result, ffi::c_ulong, prelude::*};

/// Pages charged to a user's locked_vm.
///
/// # Invariants
/// `user` carries a reference owned by us, and `pages` pages are charged to its
/// locked_vm on our behalf.
pub(crate) struct MemlockCharge {
    user: NonNull<ffi::UserStruct>,
    /// The creator's limit in pages, recorded at creation: later charges run in a kworker.
    limit: c_ulong,
    pages: AtomicUsize,
}

// SAFETY: the charge may be changed and returned from any task (an atomic counter of the
// user), and the user reference may be dropped from any task.
unsafe impl Send for MemlockCharge {}
// SAFETY: `charge` and `uncharge` only use atomics.
unsafe impl Sync for MemlockCharge {}

impl MemlockCharge {
    /// An account of the current user that holds nothing yet, limited by the current
    /// task's RLIMIT_MEMLOCK (unlimited with CAP_IPC_LOCK).
    pub(crate) fn current_user() -> Result<Self> {
        let mut limit: c_ulong = 0;
        // SAFETY: `limit` is a valid out-pointer; returns current's user with a reference.
        let user = NonNull::new(unsafe { ffi::ulive_current_user(&mut limit) }).ok_or(EINVAL)?;
        // INVARIANT: referenced above; nothing charged yet.
        Ok(Self {
            user,
            limit,
            pages: AtomicUsize::new(0),
        })
    }

    /// Charge `pages` more: ENOMEM (the errno RDMA and io_uring use) past the limit.
    pub(crate) fn charge(&self, pages: usize) -> Result {
        // SAFETY: `user` is referenced (type invariant).
        to_result(unsafe {
            ffi::ulive_user_charge(self.user.as_ptr(), pages as c_ulong, self.limit)
        })?;
        // INVARIANT: charged just above.
        self.pages.fetch_add(pages, Ordering::Relaxed);
        Ok(())
    }

    /// Return `pages` of what [`Self::charge`] took.
    pub(crate) fn uncharge(&self, pages: usize) {
        let mut cur = self.pages.load(Ordering::Relaxed);
        loop {
            let n = pages.min(cur);
            match self
                .pages
                .compare_exchange(cur, cur - n, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    // SAFETY: `user` is referenced and `n` of our pages are charged to it.
                    unsafe { ffi::ulive_user_uncharge(self.user.as_ptr(), n as c_ulong) };
                    return;
                }
                Err(now) => cur = now,
            }
        }
    }
}

impl Drop for MemlockCharge {
    fn drop(&mut self) {
        // SAFETY: by the type invariant we hold a reference and `pages` are charged.
        unsafe {
            ffi::ulive_user_uncharge(self.user.as_ptr(), *self.pages.get_mut() as c_ulong);
            ffi::ulive_free_uid(self.user.as_ptr());
        }
    }
}
