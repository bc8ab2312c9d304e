//! Content patterns for `create --fill` and `write --pattern`.
//!
//! Every pattern is a function of the ABSOLUTE byte offset in the memfd, so writing a
//! range with a pattern gives the same bytes as filling the whole file with it, and the
//! expected content of any page can be recomputed from the offset alone:
//!
//! | pattern       | byte at memfd offset `o`                                               |
//! |---------------|------------------------------------------------------------------------|
//! | `zero`        | `0`                                                                    |
//! | `0xNN`        | the byte `NN` (one or two hex digits)                                  |
//! | `seq`         | byte `o % 4` of the little-endian `u32` `o / 4` (a word counter)       |
//! | `random:SEED` | byte `o % 8` of the little-endian `u64` number `o / 8` of the SplitMix64 stream seeded with `SEED` (decimal or `0x` hex) |
//!
//! `seq` and `random` differ from page to page, so a page at the wrong place or a stale
//! page never compares equal.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    Zero,
    Byte(u8),
    Seq,
    Random(u64),
}

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// Output number `k` (0-based) of SplitMix64 seeded with `seed`.
pub fn splitmix64(seed: u64, k: u64) -> u64 {
    let mut z = seed.wrapping_add(k.wrapping_add(1).wrapping_mul(GOLDEN));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Pattern {
    /// Bytes per generated word, and the word with index `k` as little-endian bytes.
    fn word(&self, k: u64) -> ([u8; 8], usize) {
        match *self {
            Pattern::Zero => ([0; 8], 8),
            Pattern::Byte(b) => ([b; 8], 8),
            Pattern::Seq => {
                let mut w = [0u8; 8];
                w[..4].copy_from_slice(&(k as u32).to_le_bytes());
                (w, 4)
            }
            Pattern::Random(seed) => (splitmix64(seed, k).to_le_bytes(), 8),
        }
    }

    /// Fill `buf` with the pattern's bytes for memfd offsets `offset .. offset + buf.len()`.
    pub fn fill(&self, offset: u64, buf: &mut [u8]) {
        let width = self.word(0).1 as u64;
        let mut o = offset;
        let mut i = 0;
        while i < buf.len() {
            let (w, _) = self.word(o / width);
            let start = (o % width) as usize;
            let take = (width as usize - start).min(buf.len() - i);
            buf[i..i + take].copy_from_slice(&w[start..start + take]);
            i += take;
            o += take as u64;
        }
    }

    /// The pattern's bytes for `len` bytes from memfd offset `offset`.
    #[cfg(test)]
    pub fn bytes(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.fill(offset, &mut v);
        v
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Zero => f.write_str("zero"),
            Pattern::Byte(b) => write!(f, "0x{b:02x}"),
            Pattern::Seq => f.write_str("seq"),
            Pattern::Random(s) => write!(f, "random:{s}"),
        }
    }
}

impl std::str::FromStr for Pattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid pattern '{s}': use zero, 0xNN (a byte), seq or random:SEED");
        match s {
            "zero" => return Ok(Pattern::Zero),
            "seq" => return Ok(Pattern::Seq),
            _ => {}
        }
        if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            if (1..=2).contains(&hex.len()) && hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return u8::from_str_radix(hex, 16).map(Pattern::Byte).map_err(|_| bad());
            }
            return Err(bad());
        }
        if let Some(seed) = s.strip_prefix("random:") {
            let parsed = match seed.strip_prefix("0x") {
                Some(h) if !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()) => u64::from_str_radix(h, 16).ok(),
                Some(_) => None,
                None if !seed.is_empty() && seed.chars().all(|c| c.is_ascii_digit()) => seed.parse().ok(),
                None => None,
            };
            return parsed.map(Pattern::Random).ok_or_else(bad);
        }
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        for (s, p) in [
            ("zero", Pattern::Zero),
            ("0xab", Pattern::Byte(0xab)),
            ("0x07", Pattern::Byte(7)),
            ("seq", Pattern::Seq),
            ("random:42", Pattern::Random(42)),
            ("random:18446744073709551615", Pattern::Random(u64::MAX)),
        ] {
            assert_eq!(s.parse::<Pattern>(), Ok(p));
            assert_eq!(p.to_string(), s);
        }
        assert_eq!("0xAB".parse::<Pattern>(), Ok(Pattern::Byte(0xab)));
        assert_eq!("0x7".parse::<Pattern>(), Ok(Pattern::Byte(7)));
        assert_eq!("random:0x10".parse::<Pattern>(), Ok(Pattern::Random(16)));
    }

    #[test]
    fn refused() {
        for s in [
            "",
            "Zero",
            "0x",
            "0x100",
            "0xg",
            "ab",
            "random",
            "random:",
            "random:-1",
            "random:1.5",
            "random:0x",
            "random:18446744073709551616",
            "seq ",
            "rand:1",
        ] {
            assert!(s.parse::<Pattern>().is_err(), "{s:?} was accepted");
        }
    }

    /// SplitMix64's published first output for seed 0.
    #[test]
    fn splitmix_reference_value() {
        assert_eq!(splitmix64(0, 0), 0xe220_a839_7b1d_cdaf);
        let b = Pattern::Random(0).bytes(0, 8);
        assert_eq!(b, 0xe220_a839_7b1d_cdafu64.to_le_bytes());
    }

    #[test]
    fn seq_is_a_word_counter() {
        let b = Pattern::Seq.bytes(0, 12);
        assert_eq!(b, [0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(Pattern::Seq.bytes(4096, 4), 1024u32.to_le_bytes());
    }

    /// Any sub-range equals the same range of a whole-file fill, for unaligned offsets too.
    #[test]
    fn position_independent() {
        for p in [Pattern::Seq, Pattern::Random(7), Pattern::Byte(0x5a), Pattern::Zero] {
            let whole = p.bytes(0, 10_000);
            for (off, len) in [(0, 1), (1, 7), (3, 100), (4093, 9), (8191, 1800)] {
                assert_eq!(p.bytes(off as u64, len), &whole[off..off + len], "{p} at {off}+{len}");
            }
        }
    }

    #[test]
    fn pages_differ() {
        for p in [Pattern::Seq, Pattern::Random(1)] {
            let a = p.bytes(0, 4096);
            let b = p.bytes(4096, 4096);
            assert_ne!(a, b, "{p}");
        }
        assert_ne!(Pattern::Random(1).bytes(0, 64), Pattern::Random(2).bytes(0, 64));
    }
}
