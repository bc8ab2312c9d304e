// SPDX-License-Identifier: GPL-2.0
//! Runs of set bits in a bitmap of `u64` words (bit `i` is bit `i % 64` of word
//! `i / 64`). Pure and dependency-free: the kernel module uses it for the dirty-page
//! bitmap, and the host unit tests (selftests crate) compile the same file.

/// The set bits of `words` as maximal runs `[start, end)`, in order. Empty words are
/// skipped a word at a time, so the cost follows the set bits, not the bitmap size.
pub(crate) fn runs(words: &[u64]) -> impl Iterator<Item = core::ops::Range<usize>> + '_ {
    let mut pos = 0; // next bit to look at
    core::iter::from_fn(move || {
        let start = next(words, pos, false)?;
        let end = next(words, start, true).unwrap_or(words.len() * 64);
        pos = end;
        Some(start..end)
    })
}

/// The first bit at or after `from` that is set (or clear, with `clear`).
fn next(words: &[u64], from: usize, clear: bool) -> Option<usize> {
    let mut word = from / 64;
    let mut w = *words.get(word)?;
    if clear {
        w = !w;
    }
    w &= !0u64 << (from % 64);
    loop {
        if w != 0 {
            return Some(word * 64 + w.trailing_zeros() as usize);
        }
        word += 1;
        w = *words.get(word)?;
        if clear {
            w = !w;
        }
    }
}

// KUnit tests, in the kernel module only: the host build of this file (the selftests
// crate's unit tests, `cfg(test)`) has no `kernel` crate and tests it its own way.
#[cfg(not(test))]
#[kernel::macros::kunit_tests(udmabuf_live_bitruns)]
mod tests {
    use super::runs;
    use core::iter::once;

    #[test]
    fn no_words_or_no_bits() {
        assert!(runs(&[]).next().is_none());
        assert!(runs(&[0]).next().is_none());
        assert!(runs(&[0, 0, 0]).next().is_none());
    }

    #[test]
    fn all_set() {
        assert!(runs(&[u64::MAX]).eq(once(0..64)));
        assert!(runs(&[u64::MAX, u64::MAX, u64::MAX]).eq(once(0..192)));
    }

    #[test]
    fn word_boundaries() {
        // Bit 63 alone, 64 alone, and 63..65 across the boundary.
        assert!(runs(&[1 << 63, 0]).eq(once(63..64)));
        assert!(runs(&[0, 1]).eq(once(64..65)));
        assert!(runs(&[1 << 63, 1]).eq(once(63..65)));
        assert!(runs(&[1 << 63, 0b11]).eq(once(63..66)));
        // A run that fills a word and goes on into the next.
        assert!(runs(&[!0 << 1, 1]).eq(once(1..65)));
    }

    #[test]
    fn runs_end_at_the_last_bit() {
        assert!(runs(&[0, 1 << 63]).eq(once(127..128)));
        assert!(runs(&[0, !0 << 60]).eq(once(124..128)));
        assert!(runs(&[1, 0, 0, 1 << 63]).eq([0..1, 255..256]));
    }

    #[test]
    fn gaps_split_runs() {
        assert!(runs(&[0b1011_0101]).eq([0..1, 2..3, 4..6, 7..8]));
        assert!(runs(&[u64::MAX, 0, 0b10]).eq([0..64, 129..130]));
        assert!(runs(&[0xF0F0_0000_0000_000F]).eq([0..4, 52..56, 60..64]));
    }
}
