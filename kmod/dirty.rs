// SPDX-License-Identifier: GPL-2.0
//! The dirty-page bitmap of a buffer: the pages the notifiers marked for the worker to
//! check again, and the runs of set bits the worker walks. [`Bits`] keeps a window of
//! the words that may hold marks, so taking and scanning cost what was marked, not the
//! buffer; `runs.rs` is the run iterator, pure so that the host unit tests compile it
//! too.

mod runs;

use core::ops::Range;
use kernel::prelude::*;
pub(crate) use runs::runs;

/// Bitmap words held inline, without an allocation of their own: 4 MiB of pages.
const INLINE_WORDS: usize = 16;

/// The words of a [`Bits`]: inline for a small buffer (then the tracker is one
/// allocation), on the heap beyond.
enum Words {
    Inline([u64; INLINE_WORDS], usize),
    Heap(KVVec<u64>),
}

impl Words {
    /// `n` zeroed words.
    fn zeroed(n: usize) -> Result<Self> {
        Ok(if n <= INLINE_WORDS {
            Self::Inline([0; INLINE_WORDS], n)
        } else {
            Self::Heap(KVVec::from_elem(0u64, n, GFP_KERNEL)?)
        })
    }

    fn as_slice(&self) -> &[u64] {
        match self {
            Self::Inline(w, n) => w.get(..*n).unwrap_or(&[]),
            Self::Heap(v) => v,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [u64] {
        match self {
            Self::Inline(w, n) => w.get_mut(..*n).unwrap_or(&mut []),
            Self::Heap(v) => v,
        }
    }
}

/// A bitmap of buffer pages to re-check. `words` covers bit `64 * base` on; only the
/// words in `lo..hi` can be non-zero (an empty window means nothing is marked), so
/// scanning and taking cost the marked window, not the buffer.
pub(crate) struct Bits {
    words: Words,
    base: usize,
    lo: usize,
    hi: usize,
}

impl Bits {
    /// A cleared bitmap of `n` words from word `base` on.
    pub(crate) fn zeroed(n: usize, base: usize) -> Result<Self> {
        Ok(Self {
            words: Words::zeroed(n)?,
            base,
            lo: 0,
            hi: 0,
        })
    }

    /// A cleared bitmap for an `nr_pages` buffer.
    pub(crate) fn new(nr_pages: usize) -> Result<Self> {
        Self::zeroed(nr_pages.div_ceil(64), 0)
    }

    /// Every page of an `nr_pages` buffer marked.
    pub(crate) fn all(nr_pages: usize) -> Result<Self> {
        let mut bits = Self::new(nr_pages)?;
        bits.set_range(0..nr_pages);
        Ok(bits)
    }

    /// OR `mask` into word `w` (relative to `base`) and widen the marked window.
    pub(crate) fn or_word(&mut self, w: usize, mask: u64) {
        let Some(word) = self.words.as_mut_slice().get_mut(w) else {
            return;
        };
        if mask == 0 {
            return;
        }
        *word |= mask;
        (self.lo, self.hi) = if self.lo == self.hi {
            (w, w + 1)
        } else {
            (self.lo.min(w), self.hi.max(w + 1))
        };
    }

    /// Mark `pages`, a word at a time (this runs in the notifier callback).
    pub(crate) fn set_range(&mut self, pages: Range<usize>) {
        let (start, end) = (pages.start.max(self.base * 64), pages.end);
        let mut i = start;
        while i < end {
            let bit = i % 64;
            let n = (64 - bit).min(end - i);
            let mask = if n == 64 {
                !0
            } else {
                ((1u64 << n) - 1) << bit
            };
            self.or_word(i / 64 - self.base, mask);
            i += n;
        }
    }

    /// The marked pages as maximal runs `[start, end)` (see `runs.rs`).
    pub(crate) fn runs(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        let first = (self.base + self.lo) * 64;
        let words = self.words.as_slice().get(self.lo..self.hi).unwrap_or(&[]);
        runs(words).map(move |r| first + r.start..first + r.end)
    }

    pub(crate) fn any(&self) -> bool {
        self.lo < self.hi
    }

    /// The words that may hold marks, as word numbers (word `w` holds bits `64 * w` on);
    /// empty when nothing is marked.
    pub(crate) fn window(&self) -> Range<usize> {
        self.base + self.lo..self.base + self.hi
    }

    /// A cleared bitmap covering the words `window`, for [`Bits::take_into`].
    pub(crate) fn for_window(window: Range<usize>) -> Result<Self> {
        Self::zeroed(window.len(), window.start)
    }

    /// Move the marks of the words `into` covers into `into` (made by
    /// [`Bits::for_window`] from an earlier [`Bits::window`], still cleared). The window
    /// may have grown since it was read: marks outside `into`'s words stay here.
    pub(crate) fn take_into(&mut self, into: &mut Bits) {
        let Some(lo) = into.base.checked_sub(self.base) else {
            return;
        };
        let hi = lo + into.words.as_slice().len();
        let (from, to) = (self.lo.max(lo), self.hi.min(hi));
        for w in from..to {
            let Some(word) = self.words.as_mut_slice().get_mut(w).map(core::mem::take) else {
                break;
            };
            into.or_word(w - lo, word);
        }
        if self.lo >= from && self.hi <= to {
            (self.lo, self.hi) = (0, 0); // all taken
        }
    }

    /// Mark again every page marked in `taken` (taken from this bitmap by
    /// [`Bits::take_into`]); marks made since stay.
    pub(crate) fn restore_from(&mut self, taken: &Bits) {
        for (i, &t) in taken.words.as_slice().iter().enumerate() {
            if let Some(w) = (taken.base + i).checked_sub(self.base) {
                self.or_word(w, t);
            }
        }
    }
}

// KUnit runs these when the module loads on a kernel with CONFIG_KUNIT (the macro gates
// the whole module on it); the guest's `kunit` suite reports their results.
#[kunit_tests(udmabuf_live_dirty_bitmap)]
mod tests {
    use super::*;
    use core::iter::once;

    #[test]
    fn empty_bitmap_marks_nothing() -> Result {
        for nr_pages in [0, 1, 64, 200] {
            let bits = Bits::new(nr_pages)?;
            assert!(!bits.any());
            assert!(bits.runs().next().is_none());
            assert!(bits.window().is_empty());
        }
        Ok(())
    }

    #[test]
    fn one_page_at_word_boundaries() -> Result {
        for page in [0, 1, 62, 63, 64, 65, 127, 128, 199] {
            let mut bits = Bits::new(200)?;
            bits.set_range(page..page + 1);
            assert!(bits.any());
            assert!(bits.runs().eq(once(page..page + 1)));
            assert_eq!(bits.window(), page / 64..page / 64 + 1);
        }
        Ok(())
    }

    #[test]
    fn ranges_across_word_boundaries() -> Result {
        for pages in [63..65, 63..66, 64..128, 60..130, 0..192, 1..191] {
            let mut bits = Bits::new(192)?;
            bits.set_range(pages.clone());
            assert!(bits.runs().eq(once(pages.clone())));
            assert_eq!(bits.window(), pages.start / 64..pages.end.div_ceil(64));
        }
        Ok(())
    }

    #[test]
    fn adjacent_marks_merge_and_gaps_stay() -> Result {
        let mut bits = Bits::new(300)?;
        bits.set_range(10..20);
        bits.set_range(20..64);
        bits.set_range(64..65);
        bits.set_range(70..71);
        bits.set_range(255..300);
        assert!(bits.runs().eq([10..65, 70..71, 255..300]));
        // Marking again changes nothing.
        bits.set_range(12..13);
        assert!(bits.runs().eq([10..65, 70..71, 255..300]));
        Ok(())
    }

    #[test]
    fn all_marks_exactly_the_buffer() -> Result {
        // 1024 pages are the last inline bitmap (16 words), 1025 the first on the heap.
        for nr_pages in [1, 63, 64, 65, 127, 128, 130, 1024, 1025, 4097] {
            let bits = Bits::all(nr_pages)?;
            assert!(bits.any());
            assert!(bits.runs().eq(once(0..nr_pages)));
            assert_eq!(bits.window(), 0..nr_pages.div_ceil(64));
        }
        assert!(matches!(Bits::all(1024)?.words, Words::Inline(..)));
        assert!(matches!(Bits::all(1025)?.words, Words::Heap(_)));
        Ok(())
    }

    #[test]
    fn last_partial_word() -> Result {
        let mut bits = Bits::new(130)?;
        bits.set_range(128..130);
        assert!(bits.runs().eq(once(128..130)));
        assert_eq!(bits.window(), 2..3);
        Ok(())
    }

    #[test]
    fn marks_past_the_words_are_dropped() -> Result {
        // Callers clip to the buffer; what lies beyond the last word is not written.
        let mut bits = Bits::new(64)?;
        bits.set_range(100..200);
        assert!(!bits.any());
        bits.set_range(60..200);
        assert!(bits.runs().eq(once(60..64)));
        Ok(())
    }

    #[test]
    fn take_returns_the_marks_and_clears_them() -> Result {
        let mut bits = Bits::new(1100)?;
        for pages in [3..5, 63..66, 640..650, 1099..1100] {
            bits.set_range(pages);
        }
        let mut taken = Bits::for_window(bits.window())?;
        bits.take_into(&mut taken);
        assert!(taken.runs().eq([3..5, 63..66, 640..650, 1099..1100]));
        assert!(!bits.any());
        assert!(bits.runs().next().is_none());
        // Taking again finds nothing.
        let mut again = Bits::for_window(bits.window())?;
        bits.take_into(&mut again);
        assert!(!again.any());
        Ok(())
    }

    #[test]
    fn take_of_a_window_far_from_page_zero() -> Result {
        let mut bits = Bits::new(1100)?;
        bits.set_range(640..650);
        let window = bits.window();
        assert_eq!(window, 10..11);
        let mut taken = Bits::for_window(window)?;
        bits.take_into(&mut taken);
        // One word, numbered from word 10: the runs are still buffer pages.
        assert_eq!(taken.words.as_slice().len(), 1);
        assert!(taken.runs().eq(once(640..650)));
        assert!(!bits.any());
        Ok(())
    }

    #[test]
    fn marks_outside_the_window_read_stay() -> Result {
        let mut bits = Bits::new(300)?;
        bits.set_range(5..6);
        let mut taken = Bits::for_window(bits.window())?;
        // A notifier marks more pages between reading the window and taking.
        bits.set_range(200..201);
        bits.set_range(7..8);
        bits.take_into(&mut taken);
        assert!(taken.runs().eq([5..6, 7..8]));
        assert!(bits.runs().eq(once(200..201)));
        assert!(bits.any());
        Ok(())
    }

    #[test]
    fn restore_puts_back_what_was_taken() -> Result {
        let mut bits = Bits::new(300)?;
        bits.set_range(0..1);
        bits.set_range(63..65);
        bits.set_range(299..300);
        let mut taken = Bits::for_window(bits.window())?;
        bits.take_into(&mut taken);
        assert!(!bits.any());
        bits.restore_from(&taken);
        assert!(bits.runs().eq([0..1, 63..65, 299..300]));
        assert_eq!(bits.window(), 0..5);
        Ok(())
    }

    #[test]
    fn marks_between_take_and_restore_survive() -> Result {
        let mut bits = Bits::new(300)?;
        bits.set_range(64..66);
        let mut taken = Bits::for_window(bits.window())?;
        bits.take_into(&mut taken);
        // New invalidations while the update runs, inside and outside the taken words.
        bits.set_range(66..67);
        bits.set_range(250..251);
        bits.restore_from(&taken);
        assert!(bits.runs().eq([64..67, 250..251]));
        Ok(())
    }
}
