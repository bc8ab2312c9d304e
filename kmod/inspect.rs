// SPDX-License-Identifier: GPL-2.0
//! Read-only views of a buffer for the INFO, VERIFY and PFNS ioctls.

use crate::buffer::Buffer;
use crate::sys::{
    memfd::Backing,
    params::{self, Repopulate},
    PAGE_SHIFT,
};
use crate::uapi::{self, UdmabufLiveInfo, UdmabufLiveVerify};
use core::sync::atomic::Ordering;
use kernel::prelude::*;

impl Buffer {
    /// UDMABUF_LIVE_INFO.
    pub(crate) fn info(&self) -> UdmabufLiveInfo {
        let (pins, stale, vmapped, retired, unpopulated) = {
            let s = self.state.lock();
            (
                s.pins,
                s.deferred_count > 0,
                s.vmap.is_some(),
                !s.retired.is_empty(),
                s.pages.missing(),
            )
        };
        let watched = self.tracker.watched();
        let mut state = 0;
        if self.tracker.pending() || self.resync_requested() {
            state |= uapi::UDMABUF_LIVE_STATE_PENDING;
        }
        if self.sealed() {
            state |= uapi::UDMABUF_LIVE_STATE_SEALED;
        }
        if retired {
            state |= uapi::UDMABUF_LIVE_STATE_RETIRED;
        }
        if stale {
            state |= uapi::UDMABUF_LIVE_STATE_STALE;
        }
        if watched {
            state |= uapi::UDMABUF_LIVE_STATE_WATCHED;
        }
        if vmapped {
            state |= uapi::UDMABUF_LIVE_STATE_VMAPPED;
        }
        UdmabufLiveInfo {
            dmabuf_fd: 0,
            backing: match self.backing {
                Some(Backing::Shmem) => uapi::UDMABUF_LIVE_BACKING_SHMEM,
                Some(Backing::Hugetlb) => uapi::UDMABUF_LIVE_BACKING_HUGETLB,
                None => uapi::UDMABUF_LIVE_BACKING_MIXED,
            },
            size: (self.nr_pages << PAGE_SHIFT) as u64,
            generation: self.counters.generation.load(Ordering::Acquire),
            updates: self.counters.updates.load(Ordering::Relaxed),
            pages_swapped: self.counters.pages_swapped.load(Ordering::Relaxed),
            state,
            pins: pins as u32,
            notifiers: self.notifiers.lock().live() as u32,
            ranges: self.ranges.len() as u32,
            repopulate: match params::repopulate() {
                Repopulate::Lazy => uapi::UDMABUF_LIVE_REPOPULATE_LAZY,
                Repopulate::Eager => uapi::UDMABUF_LIVE_REPOPULATE_EAGER,
            },
            __pad: 0,
            unpopulated: unpopulated as u64,
        }
    }

    /// The buffer's line in the debugfs `buffers` file: INFO's fields and a few counters
    /// INFO does not carry.
    pub(crate) fn debugfs_line(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let i = self.info();
        let c = &self.counters;
        let backing = match i.backing {
            uapi::UDMABUF_LIVE_BACKING_SHMEM => "shmem",
            uapi::UDMABUF_LIVE_BACKING_HUGETLB => "hugetlb",
            _ => "mixed",
        };
        let bit = |m: u32| u32::from(i.state & m != 0);
        write!(
            f,
            "id={} size={} backing={} ranges={} notifiers={} watched={} pending={} stale={} vmapped={} pins={} \
             generation={} updates={} pages_swapped={} invalidations={} maps={} last_map_segments={} sealed={} \
             retired={} unpopulated={}",
            self.id,
            i.size,
            backing,
            i.ranges,
            i.notifiers,
            bit(uapi::UDMABUF_LIVE_STATE_WATCHED),
            bit(uapi::UDMABUF_LIVE_STATE_PENDING),
            bit(uapi::UDMABUF_LIVE_STATE_STALE),
            bit(uapi::UDMABUF_LIVE_STATE_VMAPPED),
            i.pins,
            i.generation,
            i.updates,
            i.pages_swapped,
            self.tracker.invalidations(),
            c.maps.load(Ordering::Relaxed),
            c.last_map_segments.load(Ordering::Relaxed),
            bit(uapi::UDMABUF_LIVE_STATE_SEALED),
            bit(uapi::UDMABUF_LIVE_STATE_RETIRED),
            i.unpopulated,
        )
    }

    /// UDMABUF_LIVE_VERIFY: every held page against the memfd's page cache. An
    /// unpopulated page counts as coherent (`unpopulated`): whatever the memfd holds
    /// there is what it takes when something needs it. Allocates nothing; the
    /// page-cache lookups take no lasting references.
    pub(crate) fn verify(&self) -> UdmabufLiveVerify {
        let mut v = UdmabufLiveVerify {
            pages: self.nr_pages as u64,
            first_mismatch: u64::MAX,
            ..Default::default()
        };
        let state = self.state.lock();
        for range in self.ranges.iter() {
            let Ok(c) = range
                .file
                .diff(range.offset, &state.pages, range.pages(), None)
            else {
                continue;
            };
            v.matching += c.matching as u64;
            v.stale += c.stale as u64;
            v.holes += c.holes as u64;
            v.unpopulated += c.unpopulated as u64;
            if let Some(i) = c.first_mismatch {
                let at = ((range.first_page + i) << PAGE_SHIFT) as u64;
                v.first_mismatch = v.first_mismatch.min(at);
            }
        }
        v
    }

    /// UDMABUF_LIVE_PFNS: the PFNs of `count` pages from `first` (0 for an unpopulated
    /// page), into a kernel buffer (copied to user memory by the caller, after `state`
    /// is released).
    pub(crate) fn pfns(&self, first: u64, count: u64) -> Result<KVVec<u64>> {
        let first = usize::try_from(first).map_err(|_| EINVAL)?;
        let count = usize::try_from(count).map_err(|_| EINVAL)?;
        let end = first.checked_add(count).ok_or(EINVAL)?;
        if end > self.nr_pages {
            return Err(EINVAL);
        }
        let mut out = KVVec::with_capacity(count, GFP_KERNEL)?;
        let state = self.state.lock();
        for i in first..end {
            // Cannot fail: capacity reserved above; every index is below nr_pages.
            let _ = out.push_within_capacity(state.pages.pfn(i).unwrap_or(0) as u64);
        }
        Ok(out)
    }
}
