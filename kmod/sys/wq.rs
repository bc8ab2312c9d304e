// SPDX-License-Identifier: GPL-2.0
//! The module's own workqueue (the kernel crate only borrows the system queues).

use super::ffi;
use core::ptr::NonNull;
use kernel::{
    bindings,
    prelude::*,
    workqueue::{Queue, Work},
};

/// A workqueue allocated by this module.
///
/// # Invariants
/// `ptr` is a live workqueue owned by us; drop destroys it after draining its work.
pub(crate) struct OwnedQueue {
    ptr: NonNull<bindings::workqueue_struct>,
}

// SAFETY: workqueues may be used and destroyed from any thread.
unsafe impl Send for OwnedQueue {}
// SAFETY: as above.
unsafe impl Sync for OwnedQueue {}

impl OwnedQueue {
    pub(crate) fn new(name: &'static CStr) -> Result<Self> {
        // SAFETY: `name` is a 'static NUL-terminated string.
        let ptr = unsafe { ffi::ulive_alloc_workqueue(name.as_char_ptr()) };
        Ok(Self {
            ptr: NonNull::new(ptr).ok_or(ENOMEM)?,
        })
    }

    pub(crate) fn handle(&self) -> QueueRef {
        QueueRef(self.ptr)
    }
}

impl Drop for OwnedQueue {
    fn drop(&mut self) {
        // SAFETY: owned and live by the type invariant; destroy drains pending work.
        unsafe { bindings::destroy_workqueue(self.ptr.as_ptr()) };
    }
}

/// A handle on the module's workqueue, kept by each buffer.
///
/// # Invariants
/// The queue outlives every handle: it is owned by the module, which cannot be unloaded
/// while a buffer's dma-buf exists (the dma-buf holds a module reference), and a buffer
/// only queues work while its dma-buf exists (notifiers are removed at release).
#[derive(Clone, Copy)]
pub(crate) struct QueueRef(NonNull<bindings::workqueue_struct>);

// SAFETY: see OwnedQueue.
unsafe impl Send for QueueRef {}
// SAFETY: see OwnedQueue.
unsafe impl Sync for QueueRef {}

impl QueueRef {
    pub(crate) fn get(&self) -> &Queue {
        // SAFETY: the queue is live by the type invariant.
        unsafe { Queue::from_raw(self.0.as_ptr()) }
    }
}

/// Wait until the last queueing of `work` has run to completion: its `run` has returned
/// and dropped the reference the queue held on the item. Must not be called from that
/// work item itself (lockdep reports the self-wait).
pub(crate) fn flush<T: ?Sized, const ID: u64>(work: &Work<T, ID>) {
    // SAFETY: `work` borrows an initialised `Work`, pinned in its live owner, so the
    // pointer is aligned and not dangling; flush_work() may sleep, as callers may.
    unsafe { bindings::flush_work(Work::raw_get(work)) };
}
