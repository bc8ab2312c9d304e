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

impl<T> OneOrMany<T> {
    /// Keep the elements `keep` accepts, in order; drop the others.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        match self {
            Self::Empty => {}
            Self::One(x) => {
                if !keep(x) {
                    *self = Self::Empty;
                }
            }
            Self::Many(v) => v.retain(|x| keep(x)),
        }
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

// KUnit tests (CONFIG_KUNIT kernels; the guest's `kunit` suite reports them).
#[kunit_tests(udmabuf_live_one_or_many)]
mod tests {
    use super::*;

    fn capacity<T>(list: &OneOrMany<T>) -> Option<usize> {
        match list {
            OneOrMany::Many(v) => Some(v.capacity()),
            _ => None,
        }
    }

    #[test]
    fn starts_empty() {
        let list = OneOrMany::<u32>::new();
        assert!(list.is_empty());
        assert!(matches!(list, OneOrMany::Empty));
    }

    #[test]
    fn one_element_is_not_on_the_heap() -> Result {
        let mut list = OneOrMany::new();
        list.push(7u32)?;
        assert!(matches!(list, OneOrMany::One(7)));
        assert_eq!(&*list, &[7u32][..]);
        Ok(())
    }

    #[test]
    fn more_elements_keep_their_order() -> Result {
        let mut list = OneOrMany::new();
        for x in 1u32..=5 {
            list.push(x)?;
        }
        assert!(matches!(list, OneOrMany::Many(_)));
        assert_eq!(&*list, &[1u32, 2, 3, 4, 5][..]);
        Ok(())
    }

    #[test]
    fn reserve_allocates_only_past_one() -> Result {
        let mut list = OneOrMany::<u32>::new();
        list.reserve(0)?;
        list.reserve(1)?;
        assert!(matches!(list, OneOrMany::Empty));
        list.push(1)?;
        list.reserve(0)?;
        assert!(matches!(list, OneOrMany::One(1)));
        // Room for one more beside the first: the first moves to the heap.
        list.reserve(1)?;
        assert_eq!(&*list, &[1u32][..]);
        assert!(capacity(&list).is_some_and(|c| c >= 2));
        Ok(())
    }

    #[test]
    fn reserve_from_empty() -> Result {
        let mut list = OneOrMany::<u32>::new();
        list.reserve(3)?;
        assert!(list.is_empty());
        assert!(capacity(&list).is_some_and(|c| c >= 3));
        for x in [4u32, 5, 6] {
            list.push(x)?;
        }
        assert_eq!(&*list, &[4u32, 5, 6][..]);
        Ok(())
    }

    #[test]
    fn retain_keeps_order_and_empties_one() -> Result {
        let mut list = OneOrMany::<u32>::new();
        list.push(7)?;
        list.retain(|&x| x == 7);
        assert!(matches!(list, OneOrMany::One(7)));
        list.retain(|_| false);
        assert!(matches!(list, OneOrMany::Empty));
        for x in [1u32, 2, 3, 4] {
            list.push(x)?;
        }
        list.retain(|&x| x % 2 == 0);
        assert_eq!(&*list, &[2u32, 4][..]);
        Ok(())
    }
}
