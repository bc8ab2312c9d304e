// SPDX-License-Identifier: GPL-2.0
//! The list of live buffers, and its debugfs file
//! (`/sys/kernel/debug/udmabuf_live/buffers`): one line per buffer (written by
//! `Buffer::debugfs_line`, next to INFO in inspect.rs), for people debugging a compositor
//! or VMM and for the tests.
//!
//! Lock "udmabuf_live_registry" ranks before the locks of a buffer (it is held while
//! each buffer's state is read for the listing).

use crate::buffer::Buffer;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::{
    new_mutex,
    prelude::*,
    sync::{Arc, Mutex},
};

#[pin_data]
pub(crate) struct Registry {
    #[pin]
    buffers: Mutex<KVec<Arc<Buffer>>>,
    next_id: AtomicU64,
}

impl Registry {
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self { buffers <- new_mutex!(KVec::new(), "udmabuf_live_registry"), next_id: AtomicU64::new(1) })
    }

    /// A fresh buffer id (shown in debugfs).
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn add(&self, buffer: Arc<Buffer>) -> Result {
        self.buffers.lock().push(buffer, GFP_KERNEL)?;
        Ok(())
    }

    /// Forget `buffer` (its dma-buf is being released).
    pub(crate) fn remove(&self, buffer: &Buffer) {
        let removed = {
            let mut list = self.buffers.lock();
            // From the end: buffers tend to go in the reverse order of their creation.
            list.iter()
                .rposition(|b| core::ptr::eq(&**b, buffer))
                .and_then(|i| list.remove(i).ok())
        };
        // Dropped outside the lock: never the last reference (the dma-buf holds one).
        drop(removed);
    }
}

/// The debugfs `buffers` file.
pub(crate) struct BufferList(pub(crate) Arc<Registry>);

impl fmt::Debug for BufferList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = self.0.buffers.lock();
        write!(f, "{} live buffer(s)", list.len())?;
        for b in list.iter() {
            f.write_str("\n")?;
            b.debugfs_line(f)?;
        }
        Ok(())
    }
}
