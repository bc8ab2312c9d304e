//! Byte counts on the command line: sizes, offsets and lengths.
//!
//! Grammar (documented in `--help`): a decimal number or a `0x` hexadecimal number,
//! optionally followed by a binary unit: `K`/`KiB` (1024), `M`/`MiB`, `G`/`GiB`,
//! `T`/`TiB`, or `B` for plain bytes. Units are case-insensitive. Decimal units (`KB`,
//! `MB`, ...) are refused rather than guessed at; so are signs, fractions, blanks and
//! anything that overflows 64 bits.

use std::fmt;

/// One KiB and one MiB, for code that counts in them.
pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;

/// A parsed byte count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&human(self.0))
    }
}

impl std::str::FromStr for Bytes {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_bytes(s).map(Bytes)
    }
}

const UNITS: &[(&str, u32)] = &[("k", 10), ("m", 20), ("g", 30), ("t", 40)];

/// Parse a byte count (see the module documentation for the grammar).
pub fn parse_bytes(input: &str) -> Result<u64, String> {
    let bad = |why: &str| format!("invalid byte count '{input}': {why} (examples: 4096, 64K, 4M, 1G, 0x1000)");
    if input.is_empty() {
        return Err(bad("empty"));
    }
    let (digits, radix, rest) = if let Some(hex) = input.strip_prefix("0x").or_else(|| input.strip_prefix("0X")) {
        let end = hex.find(|c: char| !c.is_ascii_hexdigit()).unwrap_or(hex.len());
        (&hex[..end], 16, &hex[end..])
    } else {
        let end = input.find(|c: char| !c.is_ascii_digit()).unwrap_or(input.len());
        (&input[..end], 10, &input[end..])
    };
    if digits.is_empty() {
        return Err(bad("no digits"));
    }
    let value = u64::from_str_radix(digits, radix).map_err(|_| bad("too large"))?;
    let shift = match rest.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        unit => {
            let (letter, tail) = unit.split_at(1.min(unit.len()));
            let Some(&(_, shift)) = UNITS.iter().find(|(u, _)| *u == letter) else {
                return Err(bad("unknown unit (use K, M, G, T, KiB, MiB, GiB, TiB or B)"));
            };
            match tail {
                "" | "ib" => shift,
                "b" => return Err(bad("decimal units are ambiguous: use K or KiB (1024-based)")),
                _ => return Err(bad("unknown unit (use K, M, G, T, KiB, MiB, GiB, TiB or B)")),
            }
        }
    };
    value.checked_mul(1u64 << shift).ok_or_else(|| bad("too large"))
}

/// `4 MiB`, `6 KiB`, `4097 B`: the largest binary unit that divides the value exactly.
pub fn human(n: u64) -> String {
    for (name, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if n != 0 && n.is_multiple_of(1u64 << shift) {
            return format!("{} {name}", n >> shift);
        }
    }
    format!("{n} B")
}

/// Round `n` up to a multiple of `align` (a power of two); `None` on overflow.
pub fn align_up(n: u64, align: u64) -> Option<u64> {
    debug_assert!(align.is_power_of_two());
    n.checked_add(align - 1).map(|v| v & !(align - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_hex_numbers() {
        assert_eq!(parse_bytes("0"), Ok(0));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("0x1000"), Ok(4096));
        assert_eq!(parse_bytes("0XfF"), Ok(255));
        assert_eq!(parse_bytes("4096B"), Ok(4096));
        assert_eq!(parse_bytes(&u64::MAX.to_string()), Ok(u64::MAX));
    }

    #[test]
    fn binary_units() {
        assert_eq!(parse_bytes("64K"), Ok(64 << 10));
        assert_eq!(parse_bytes("64k"), Ok(64 << 10));
        assert_eq!(parse_bytes("4M"), Ok(4 << 20));
        assert_eq!(parse_bytes("4MiB"), Ok(4 << 20));
        assert_eq!(parse_bytes("4mib"), Ok(4 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert_eq!(parse_bytes("2T"), Ok(2 << 40));
        assert_eq!(parse_bytes("0x10K"), Ok(16 << 10));
        assert_eq!(parse_bytes("16383T"), Ok(16383u64 << 40));
    }

    #[test]
    fn refused() {
        for s in [
            "",
            "K",
            "-4K",
            "+4K",
            "4.5M",
            " 4M",
            "4M ",
            "4 M",
            "4MB",
            "4kb",
            "4X",
            "4Mi",
            "4MiBs",
            "0x",
            "0xG",
            "16777216T",
            "18446744073709551616",
            "4KK",
            "1e6",
        ] {
            assert!(parse_bytes(s).is_err(), "{s:?} was accepted");
        }
        assert!(parse_bytes("4MB").unwrap_err().contains("ambiguous"));
    }

    #[test]
    fn human_form() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(4096), "4 KiB");
        assert_eq!(human(4 << 20), "4 MiB");
        assert_eq!(human(3 << 30), "3 GiB");
        assert_eq!(human(4097), "4097 B");
        assert_eq!(human(6144), "6 KiB");
    }

    #[test]
    fn alignment() {
        assert_eq!(align_up(0, 4096), Some(0));
        assert_eq!(align_up(1, 4096), Some(4096));
        assert_eq!(align_up(4096, 4096), Some(4096));
        assert_eq!(align_up(u64::MAX, 4096), None);
    }
}
