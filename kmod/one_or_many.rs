// SPDX-License-Identifier: GPL-2.0
//! A list that keeps a single element without an allocation of its own. Most buffers
//! have one memfd range and at most one notifier; under the emulator every allocation
//! and free saved shows in CREATE and release times (BENCHMARKS.md).

use core::ops::Deref;
use kernel::prelude::*;

/// Elements in order, as a slice; the heap is used from the second element on.
pub(crate) enum OneOrMany<T> {
    Empty,
    One(T),
    Many(KVec<T>),
}

impl<T> OneOrMany<T> {
    pub(crate) const fn new() -> Self {
        Self::Empty
    }

    /// Make room for `n` more elements, so that as many pushes cannot fail.
    pub(crate) fn reserve(&mut self, n: usize) -> Result {
        match self {
            Self::Empty if n <= 1 => {}
            Self::One(_) if n == 0 => {}
            Self::Many(v) => v.reserve(n, GFP_KERNEL)?,
            Self::Empty | Self::One(_) => {
                let mut v = KVec::with_capacity(self.len() + n, GFP_KERNEL)?;
                if let Self::One(first) = core::mem::replace(self, Self::Empty) {
                    // Within the capacity just allocated: allocates nothing, cannot fail.
                    v.push(first, GFP_KERNEL)?;
                }
                *self = Self::Many(v);
            }
        }
        Ok(())
    }

    pub(crate) fn push(&mut self, x: T) -> Result {
        if let Self::One(_) = self {
            self.reserve(1)?;
        }
        match self {
            Self::Many(v) => v.push(x, GFP_KERNEL)?,
            _ => *self = Self::One(x),
        }
        Ok(())
    }
}

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Deref for OneOrMany<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match self {
            Self::Empty => &[],
            Self::One(x) => core::slice::from_ref(x),
            Self::Many(v) => v,
        }
    }
}
