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
