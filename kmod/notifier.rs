// SPDX-License-Identifier: GPL-2.0
//! The notifier side of live updates: `notifier -> worker -> importers` starts here.
//!
//! A [`Watch`] is the handler of one mmu interval notifier on a user mapping of a memfd
//! range. When the range is invalidated (a hole punch unmaps it before truncating), it
//! records the affected buffer pages in [`DirtyPages`] and queues the buffer's work
//! item. It runs in the notifier path: no sleeping, no allocation, one spinlock.

use crate::buffer::Buffer;
use crate::sys::{notifier::{InvalidateHandler, SeqToken}, PAGE_SIZE};
use core::ops::Range;
use core::sync::atomic::Ordering;
use kernel::{new_spinlock, prelude::*, sync::{Arc, SpinLock}};

/// A bitmap of buffer pages to re-check, allocated at create.
pub(crate) struct Bits {
    words: KVVec<u64>,
    any: bool,
}

impl Bits {
    /// Every page of an `nr_pages` buffer marked.
    pub(crate) fn all(nr_pages: usize) -> Result<Self> {
        let mut bits = Self { words: KVVec::from_elem(0u64, nr_pages.div_ceil(64), GFP_KERNEL)?, any: false };
        bits.set_range(0..nr_pages);
        Ok(bits)
    }

    fn set_range(&mut self, pages: Range<usize>) {
        for i in pages {
            if let Some(w) = self.words.get_mut(i / 64) {
                *w |= 1 << (i % 64);
                self.any = true;
            }
        }
    }

    /// The marked pages as maximal runs `[start, end)` (see `bitruns.rs`).
    pub(crate) fn runs(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        crate::bitruns::runs(&self.words)
    }

    pub(crate) fn any(&self) -> bool {
        self.any
    }
}

/// Pages invalidated since the worker last looked (lock "udmabuf_live_dirty").
#[pin_data]
pub(crate) struct DirtyPages {
    #[pin]
    bits: SpinLock<Bits>,
    nr_pages: usize,
}

impl DirtyPages {
    pub(crate) fn new(nr_pages: usize) -> Result<impl PinInit<Self>> {
        let words = KVVec::from_elem(0u64, nr_pages.div_ceil(64), GFP_KERNEL)?;
        Ok(pin_init!(Self {
            bits <- new_spinlock!(Bits { words, any: false }, "udmabuf_live_dirty"),
            nr_pages,
        }))
    }

    /// Take the marked pages, leaving none marked. Allocates: worker context only.
    pub(crate) fn take(&self) -> Result<Bits> {
        let mut fresh = KVVec::from_elem(0u64, self.nr_pages.div_ceil(64), GFP_KERNEL)?;
        let mut bits = self.bits.lock();
        core::mem::swap(&mut bits.words, &mut fresh);
        let any = core::mem::replace(&mut bits.any, false);
        Ok(Bits { words: fresh, any })
    }

    /// Put back pages taken by [`Self::take`] that could not be handled.
    pub(crate) fn restore(&self, taken: &Bits) {
        let mut bits = self.bits.lock();
        for (w, t) in bits.words.iter_mut().zip(taken.words.iter()) {
            *w |= *t;
        }
        bits.any |= taken.any;
    }

    pub(crate) fn pending(&self) -> bool {
        self.bits.lock().any
    }
}

/// Handler of one notifier: user addresses from `va_start` show buffer pages from
/// `first_page` on.
pub(crate) struct Watch {
    buffer: Arc<Buffer>,
    va_start: usize,
    first_page: usize,
}

impl Watch {
    pub(crate) fn new(buffer: Arc<Buffer>, va_start: usize, first_page: usize) -> Self {
        Self { buffer, va_start, first_page }
    }
}

impl InvalidateHandler for Watch {
    fn invalidate(&self, va: Range<usize>, unmapping: bool, seq: &SeqToken<'_>) {
        let buffer = &self.buffer;
        let mut bits = buffer.dirty.bits.lock();
        seq.set_seq();
        if va.start < va.end && va.start >= self.va_start {
            let first = self.first_page + (va.start - self.va_start) / PAGE_SIZE;
            let last = self.first_page + (va.end - self.va_start).div_ceil(PAGE_SIZE);
            bits.set_range(first..last.min(buffer.nr_pages));
        }
        drop(bits);
        if unmapping {
            // This mapping is going away: later punches through it will not be seen.
            buffer.watched.store(false, Ordering::Release);
        }
        buffer.counters.invalidations.fetch_add(1, Ordering::Relaxed);
        // Queueing clones the Arc (no allocation); if already queued it is dropped again,
        // never the last reference: this Watch holds one.
        let _ = buffer.queue.get().enqueue(buffer.clone());
    }
}
