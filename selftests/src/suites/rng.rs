//! Small deterministic helpers for the hardening suites (stress, fuzz, fault-injection):
//! a seeded generator, the tuning knobs those suites read from the environment, and the
//! module reference count.

use anyhow::{Context, Result};

/// SplitMix64: tiny, seedable, good enough to drive test inputs; the same seed always
/// gives the same sequence, so a failing fuzz case can be replayed from its seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// Uniform in `0..n` (`n > 0`); the tiny modulo bias does not matter here.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// A numeric knob from the environment (the guest init exports the `ulive.*` kernel
/// command-line options as these variables; see selftests/guest/init). Decimal or 0x hex.
pub fn env_u64(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(s) if !s.trim().is_empty() => {
            let s = s.trim();
            let v = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            v.with_context(|| format!("{name}={s:?} is not a number"))
        }
        _ => Ok(default),
    }
}

/// `/sys/module/<name>/refcnt`.
pub fn module_refcnt(module: &str) -> Result<u64> {
    let p = format!("/sys/module/{module}/refcnt");
    let s = std::fs::read_to_string(&p).with_context(|| format!("read {p}"))?;
    s.trim().parse().with_context(|| format!("{p}: {s:?}"))
}

/// Count of each outcome, printed as one diagnostic line ("OK=12 EINVAL=3 ...").
#[derive(Default, Debug)]
pub struct Histogram(std::collections::BTreeMap<String, u64>);

impl Histogram {
    pub fn add(&mut self, key: impl Into<String>) {
        *self.0.entry(key.into()).or_default() += 1;
    }

    pub fn render(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The outcome key of an ioctl result: "OK" or the errno's name.
pub fn outcome_key<T>(r: &Result<T, nix::errno::Errno>) -> String {
    match r {
        Ok(_) => "OK".into(),
        Err(e) => format!("{e:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let a: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..8).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..8).map(|_| r.next_u64()).collect()
        };
        let c: Vec<u64> = {
            let mut r = Rng::new(8);
            (0..8).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut r = Rng::new(1);
        assert!((0..1000).all(|_| r.below(10) < 10));
    }

    #[test]
    fn histogram_renders_sorted() {
        let mut h = Histogram::default();
        h.add("OK");
        h.add("EINVAL");
        h.add("OK");
        assert_eq!(h.render(), "EINVAL=1 OK=2");
        assert_eq!(outcome_key::<()>(&Err(nix::errno::Errno::EBADFD)), "EBADFD");
    }
}
