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

/// A bitmap of buffer pages to re-check. `words` covers bit `64 * base` on; only the
/// words in `lo..hi` can be non-zero (an empty window means nothing is marked), so
/// scanning and taking cost the marked window, not the buffer.
pub(crate) struct Bits {
    words: KVVec<u64>,
    base: usize,
    lo: usize,
    hi: usize,
}

impl Bits {
    /// A cleared bitmap for an `nr_pages` buffer.
    fn new(nr_pages: usize) -> Result<Self> {
        Ok(Self { words: KVVec::from_elem(0u64, nr_pages.div_ceil(64), GFP_KERNEL)?, base: 0, lo: 0, hi: 0 })
    }

    /// Every page of an `nr_pages` buffer marked.
    pub(crate) fn all(nr_pages: usize) -> Result<Self> {
        let mut bits = Self::new(nr_pages)?;
        bits.set_range(0..nr_pages);
        Ok(bits)
    }

    /// OR `mask` into word `w` (relative to `base`) and widen the marked window.
    fn or_word(&mut self, w: usize, mask: u64) {
        let Some(word) = self.words.get_mut(w) else { return };
        if mask == 0 {
            return;
        }
        *word |= mask;
        (self.lo, self.hi) = if self.lo == self.hi { (w, w + 1) } else { (self.lo.min(w), self.hi.max(w + 1)) };
    }

    /// Mark `pages`, a word at a time (this runs in the notifier callback).
    fn set_range(&mut self, pages: Range<usize>) {
        let (start, end) = (pages.start.max(self.base * 64), pages.end);
        let mut i = start;
        while i < end {
            let bit = i % 64;
            let n = (64 - bit).min(end - i);
            let mask = if n == 64 { !0 } else { ((1u64 << n) - 1) << bit };
            self.or_word(i / 64 - self.base, mask);
            i += n;
        }
    }

    /// The marked pages as maximal runs `[start, end)` (see `bitruns.rs`).
    pub(crate) fn runs(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        let first = (self.base + self.lo) * 64;
        let words = self.words.get(self.lo..self.hi).unwrap_or(&[]);
        crate::bitruns::runs(words).map(move |r| first + r.start..first + r.end)
    }

    pub(crate) fn any(&self) -> bool {
        self.lo < self.hi
    }
}

/// Pages invalidated since the worker last looked (lock "udmabuf_live_dirty").
#[pin_data]
pub(crate) struct DirtyPages {
    #[pin]
    bits: SpinLock<Bits>,
}

impl DirtyPages {
    pub(crate) fn new(nr_pages: usize) -> Result<impl PinInit<Self>> {
        let bits = Bits::new(nr_pages)?;
        Ok(pin_init!(Self { bits <- new_spinlock!(bits, "udmabuf_live_dirty") }))
    }

    /// Take the marked pages, leaving none marked. Allocates (the marked window only,
    /// outside the spinlock): never from the notifier.
    pub(crate) fn take(&self) -> Result<Bits> {
        let (lo, hi) = {
            let b = self.bits.lock();
            (b.lo, b.hi)
        };
        let mut taken = Bits { words: KVVec::from_elem(0u64, hi - lo, GFP_KERNEL)?, base: lo, lo: 0, hi: 0 };
        let mut bits = self.bits.lock();
        // The window may have grown meanwhile: take what fits, leave the rest marked.
        let (from, to) = (bits.lo.max(lo), bits.hi.min(hi));
        for w in from..to {
            let word = core::mem::take(&mut bits.words[w]);
            taken.or_word(w - lo, word);
        }
        if bits.lo >= from && bits.hi <= to {
            (bits.lo, bits.hi) = (0, 0); // all taken
        }
        Ok(taken)
    }

    /// Put back pages taken by [`Self::take`] that could not be handled.
    pub(crate) fn restore(&self, taken: &Bits) {
        let mut bits = self.bits.lock();
        for (i, &t) in taken.words.iter().enumerate() {
            bits.or_word(taken.base + i, t);
        }
    }

    pub(crate) fn pending(&self) -> bool {
        self.bits.lock().any()
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
