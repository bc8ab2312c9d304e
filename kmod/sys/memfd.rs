// SPDX-License-Identifier: GPL-2.0
//! memfd access: a file reference, its inode lock, its seals, and pinning its folios.

use super::ffi;
use super::folio::PinnedPages;
use core::mem::MaybeUninit;
use core::ptr::NonNull;
use kernel::{
    bindings,
    ffi::{c_uint, c_ulong},
    mm::MmWithUser,
    prelude::*,
    sync::aref::ARef,
};

/// What `MemFile::diff` found.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DiffCounts {
    pub(crate) matching: usize,
    pub(crate) stale: usize,
    pub(crate) holes: usize,
    pub(crate) unpopulated: usize,
    /// Index in the run of the first page that does not match.
    pub(crate) first_mismatch: Option<usize>,
}

/// What backs a memfd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backing {
    Shmem,
    Hugetlb,
}

/// Most mappings of one memfd range that get a notifier; beyond that the lazy
/// checks (map_dma_buf, CPU access, SYNC) keep the buffer coherent.
pub(crate) const MAX_MAPPINGS: usize = 32;

/// How often `pin_into` pins again when a folio left the page cache while it waited
/// for the folio to be initialised (a punch racing with it, when no inode lock is held).
const SETTLE_TRIES: u32 = 8;

/// Folios `memfd_pin_folios` can hand back without the scratch going to the heap: a
/// hugetlb range of up to 32 MiB, or 64 KiB of shmem.
const INLINE_FOLIOS: usize = 16;

/// Room for the folio pointers `memfd_pin_folios` fills in, reused across calls: on the
/// stack for a few, on the heap beyond.
pub(crate) struct FolioScratch {
    inline: [MaybeUninit<*mut bindings::folio>; INLINE_FOLIOS],
    heap: KVVec<*mut bindings::folio>,
}

impl FolioScratch {
    pub(crate) fn new() -> Self {
        Self {
            inline: [MaybeUninit::uninit(); INLINE_FOLIOS],
            heap: KVVec::new(),
        }
    }

    /// Uninitialised room for at least `n` folio pointers.
    fn room(&mut self, n: usize) -> Result<&mut [MaybeUninit<*mut bindings::folio>]> {
        if n <= INLINE_FOLIOS {
            return Ok(&mut self.inline);
        }
        self.heap.clear();
        self.heap.reserve(n, GFP_KERNEL)?;
        Ok(self.heap.spare_capacity_mut())
    }
}

/// `struct ulive_file_mapping`, as C fills it in: the mapping, and a reference on the
/// users of its mm that [`FileMapping`] takes over.
#[repr(C)]
pub(crate) struct RawMapping {
    va: usize,
    len: usize,
    offset: u64,
    mm: *mut bindings::mm_struct,
}

/// A user mapping of part of a memfd, in some process: `len` bytes at user address `va`
/// of `mm` show the file from byte `offset` on. Holds `mm`'s address space alive (its
/// users) only as long as this lives: long enough to register a notifier on it.
pub(crate) struct FileMapping {
    pub(crate) va: usize,
    pub(crate) len: usize,
    pub(crate) offset: u64,
    pub(crate) mm: ARef<MmWithUser>,
}

/// A reference to an open file, taken with `fget()`.
///
/// # Invariants
/// `ptr` is a valid `struct file` on which this object owns one reference.
pub(crate) struct MemFile {
    ptr: NonNull<bindings::file>,
}

// SAFETY: file references can be used and dropped (fput) from any thread.
unsafe impl Send for MemFile {}
// SAFETY: all methods take `&self` and the underlying calls are thread safe.
unsafe impl Sync for MemFile {}

impl MemFile {
    /// Look up `fd` in the current task's file table. `None` if it is not open.
    pub(crate) fn get(fd: u32) -> Option<Self> {
        // SAFETY: fget() has no preconditions; it returns NULL or a new reference.
        let ptr = NonNull::new(unsafe { bindings::fget(fd) })?;
        // INVARIANT: fget() took a reference for us.
        Some(Self { ptr })
    }

    /// The most folios bytes `offset..offset+size` of the file can span: the scratch
    /// room `pin_into` needs (one per page for shmem, one per huge page for hugetlbfs).
    fn max_folios(&self, offset: u64, size: u64) -> usize {
        let folio = self.granule();
        ((offset % folio).saturating_add(size)).div_ceil(folio) as usize
    }

    /// The smallest folio the file allocates, in bytes: a huge page for hugetlbfs, a
    /// page for shmem.
    pub(crate) fn granule(&self) -> u64 {
        // SAFETY: `ptr` is a valid file by the type invariant.
        (unsafe { ffi::ulive_memfd_min_folio_size(self.ptr.as_ptr()) } as u64).max(1)
    }

    /// Shmem or hugetlbfs backing, or `None` for any other kind of file.
    pub(crate) fn backing(&self) -> Option<Backing> {
        // SAFETY: `ptr` is a valid file by the type invariant.
        match unsafe { ffi::ulive_memfd_kind(self.ptr.as_ptr()) } {
            1 => Some(Backing::Shmem),
            2 => Some(Backing::Hugetlb),
            _ => None,
        }
    }

    /// Pin the folios backing bytes `start..=end` with `memfd_pin_folios`, which also
    /// allocates folios for holes, and settle them (see [`Self::settle`]). Needs no
    /// lock: the create path and the worker call it under the inode lock to order it
    /// after a hole punch, map_dma_buf without. The pinned folios are left at the start
    /// of `room`; returns how many, and the byte offset of `start` in the first. The
    /// caller owns one pin on each.
    fn pin_raw(
        &self,
        start: i64,
        end: i64,
        room: &mut [MaybeUninit<*mut bindings::folio>],
    ) -> Result<(usize, usize)> {
        let max = u32::try_from(room.len()).map_err(|_| EINVAL)?;
        let folios = room.as_mut_ptr().cast::<*mut bindings::folio>();
        let mut first_offset: kernel::ffi::c_ulong = 0;
        let mut tries = 0;
        loop {
            // SAFETY: the file is valid, `folios` has room for `max` folio pointers, and
            // `first_offset` is a valid out-pointer.
            let n = unsafe {
                bindings::memfd_pin_folios(
                    self.ptr.as_ptr(),
                    start,
                    end,
                    folios,
                    max,
                    &mut first_offset,
                )
            };
            if n < 0 {
                return Err(Error::from_errno(n as i32));
            }
            if n == 0 {
                return Err(EINVAL);
            }
            let n = (n as usize).min(max as usize);
            match self.settle(folios, n) {
                Ok(()) => return Ok((n, first_offset as usize)),
                Err(e) => {
                    // SAFETY: memfd_pin_folios() pinned the `n` folios in `folios` once
                    // each; they are not used after this.
                    unsafe { bindings::unpin_folios(folios, n as c_ulong) };
                    tries += 1;
                    if e != EAGAIN || tries == SETTLE_TRIES {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Pin the pages backing bytes `start..=end` and append up to `want` of them to
    /// `pages`, each with its own pin (CREATE and the worker). Returns how many were
    /// appended.
    pub(crate) fn pin_into(
        &self,
        (start, end): (i64, i64),
        scratch: &mut FolioScratch,
        pages: &mut PinnedPages,
        want: usize,
    ) -> Result<usize> {
        let size = end
            .checked_sub(start)
            .and_then(|d| d.checked_add(1))
            .ok_or(EINVAL)?;
        let room = scratch.room(self.max_folios(start as u64, size as u64))?;
        let (n, first_offset) = self.pin_raw(start, end, room)?;
        // SAFETY: pin_raw() left `n` folios at the start of `room`, each pinned once for
        // us; the pins are handed over.
        unsafe { pages.append_pinned_folios(room.as_mut_ptr().cast(), n, first_offset, want) }
    }

    /// Wait until the `n` pinned folios at `folios` hold initialised data: a folio that
    /// a fault is still setting up, or that fallocate() left uninitialised, still holds
    /// the bytes of the page's previous user, which no importer may see. `EAGAIN` when a
    /// folio left the page cache meanwhile: pin again.
    fn settle(&self, folios: *mut *mut bindings::folio, n: usize) -> Result {
        // SAFETY: the file is valid; `folios` holds `n` folios pinned by the caller.
        kernel::error::to_result(unsafe {
            ffi::ulive_memfd_settle(self.ptr.as_ptr(), folios, n as c_ulong)
        })
    }

    /// The mappings, in every process, of this file that overlap bytes
    /// `offset..offset+len`, clipped to that range (at most [`MAX_MAPPINGS`]). A process
    /// whose address space is exiting is left out.
    pub(crate) fn mappings(&self, offset: u64, len: u64) -> Result<KVec<FileMapping>> {
        let mut raw = [const { MaybeUninit::<RawMapping>::uninit() }; MAX_MAPPINGS];
        // SAFETY: the file is valid and `raw` has room for MAX_MAPPINGS entries laid out
        // as `struct ulive_file_mapping` (repr(C), same fields).
        let n = unsafe {
            ffi::ulive_find_mappings(
                self.ptr.as_ptr(),
                offset,
                len,
                raw.as_mut_ptr().cast(),
                MAX_MAPPINGS as c_uint,
            )
        };
        let n = usize::try_from(n)
            .map_err(|_| Error::from_errno(n))?
            .min(MAX_MAPPINGS);
        let mut out = KVec::with_capacity(n, GFP_KERNEL);
        for r in raw.iter().take(n) {
            // SAFETY: the helper initialised the first `n` entries.
            let r = unsafe { r.assume_init_read() };
            // SAFETY: the helper took a reference on the users of `r.mm` (non-null) for
            // us; `MmWithUser` is a transparent wrapper of `mm_struct` whose ARef drops
            // it with mmput().
            let mm = unsafe { ARef::from_raw(NonNull::new_unchecked(r.mm.cast::<MmWithUser>())) };
            let m = FileMapping {
                va: r.va,
                len: r.len,
                offset: r.offset,
                mm,
            };
            match &mut out {
                Ok(v) => {
                    // Cannot fail: capacity reserved above.
                    let _ = v.push_within_capacity(m);
                }
                Err(_) => drop(m),
            }
        }
        Ok(out?)
    }

    /// Compare `pages[run]`, which back file bytes from `offset` on, with the page
    /// cache: counts, and (if `bits` is given: one bit per page of `run` in each of its
    /// two bitmaps, cleared by the caller) the pages that do not match and which of
    /// those are holes in the memfd. No allocation, no references taken; the caller
    /// holds the lock that keeps `pages` stable.
    pub(crate) fn diff(
        &self,
        offset: u64,
        pages: &PinnedPages,
        run: core::ops::Range<usize>,
        bits: Option<(&mut [u64], &mut [u64])>,
    ) -> Result<DiffCounts> {
        if run.end > pages.len() || run.start > run.end {
            return Err(EINVAL);
        }
        let nr = run.end - run.start;
        let (diff, holes) = match bits {
            Some((d, h)) if d.len() * 64 >= nr && h.len() * 64 >= nr => {
                (d.as_mut_ptr(), h.as_mut_ptr())
            }
            Some(_) => return Err(EINVAL),
            None => (core::ptr::null_mut(), core::ptr::null_mut()),
        };
        let mut counts = ffi::DiffCounts {
            first_mismatch: c_ulong::MAX,
            ..Default::default()
        };
        // SAFETY: the file is valid; `pages` holds `nr` entries (pinned pages or NULL)
        // from `run.start` (checked above) that C only reads; `diff` and `holes` are null
        // or have room for `nr` bits (u64 and unsigned long have the same layout on
        // 64-bit).
        unsafe {
            ffi::ulive_memfd_diff(
                self.ptr.as_ptr(),
                offset as i64,
                pages.raw_pages().add(run.start),
                nr as c_ulong,
                diff.cast(),
                holes.cast(),
                &mut counts,
            )
        };
        Ok(DiffCounts {
            matching: counts.matching,
            stale: counts.stale,
            holes: counts.holes,
            unpopulated: counts.unpopulated,
            first_mismatch: (counts.first_mismatch != c_ulong::MAX)
                .then_some(counts.first_mismatch),
        })
    }

    /// Does `m.mm` still map this file at `m.va` for `m.len` bytes from file byte
    /// `m.offset` on? Read under its mmap lock (see `ulive_still_mapped`).
    pub(crate) fn still_mapped(&self, m: &FileMapping) -> bool {
        // SAFETY: the file is valid (type invariant); `m.mm` has users (held by `m`); the
        // helper takes its own locks.
        unsafe {
            ffi::ulive_still_mapped(
                m.mm.as_raw(),
                self.ptr.as_ptr(),
                m.va as c_ulong,
                m.len as c_ulong,
                m.offset,
            )
        }
    }

    /// Does any process map this file (cheap: one check of its mapping tree)?
    pub(crate) fn is_mapped(&self) -> bool {
        // SAFETY: the file is valid (type invariant); the helper reads one field.
        unsafe { ffi::ulive_file_is_mapped(self.ptr.as_ptr()) }
    }

    /// The memfd's change counter (see `ulive_memfd_version`): while it reads the same,
    /// no page of the file was truncated or punched. `None` where there is none
    /// (hugetlbfs).
    pub(crate) fn version(&self) -> Option<u64> {
        // SAFETY: the file is valid (type invariant); the helper reads one counter.
        let v = unsafe { ffi::ulive_memfd_version(self.ptr.as_ptr()) };
        (v != u64::MAX).then_some(v)
    }

    /// Is `page` still this file's page at byte `offset` (a page boundary)? For pages
    /// pinned earlier without the inode lock held since: a punch may have removed them.
    pub(crate) fn holds_page(&self, offset: u64, page: &super::folio::PinnedPage) -> bool {
        // SAFETY: the file is valid (type invariant) and `page` is pinned, as the helper
        // requires; it only compares identities under RCU.
        unsafe {
            ffi::ulive_memfd_holds_page(
                self.ptr.as_ptr(),
                (offset >> super::PAGE_SHIFT) as c_ulong,
                page.as_ptr(),
            )
        }
    }

    /// Take the inode lock shared if nobody holds or waits for it exclusively: for a
    /// caller that holds a lock ranking after it (the reservation lock).
    pub(crate) fn try_lock_shared(&self) -> Option<InodeSharedGuard<'_>> {
        // SAFETY: `ptr` is a valid file; on success the guard unlocks on drop.
        unsafe { ffi::ulive_inode_trylock_shared(self.ptr.as_ptr()) }
            .then(|| InodeSharedGuard { file: self })
    }

    /// Take the inode lock shared. Seals can only change under it in write mode, and
    /// `shmem_fallocate` holds it for write across a whole hole punch.
    pub(crate) fn lock_shared(&self) -> InodeSharedGuard<'_> {
        // SAFETY: `ptr` is a valid file; the guard unlocks on drop.
        unsafe { ffi::ulive_inode_lock_shared(self.ptr.as_ptr()) };
        InodeSharedGuard { file: self }
    }
}

impl Drop for MemFile {
    fn drop(&mut self) {
        // SAFETY: by the type invariant we own one reference.
        unsafe { bindings::fput(self.ptr.as_ptr()) };
    }
}

/// Proof that the inode lock of a [`MemFile`] is held shared.
pub(crate) struct InodeSharedGuard<'a> {
    file: &'a MemFile,
}

impl InodeSharedGuard<'_> {
    /// The file's seals (`F_SEAL_*`), or `None` if the file cannot carry seals.
    pub(crate) fn seals(&self) -> Option<u32> {
        // SAFETY: the file is valid and its inode lock is held, as the helper requires.
        let s = unsafe { ffi::ulive_memfd_seals(self.file.ptr.as_ptr()) };
        u32::try_from(s).ok()
    }
}

impl Drop for InodeSharedGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: the lock was taken in `lock_shared` and is released exactly once.
        unsafe { ffi::ulive_inode_unlock_shared(self.file.ptr.as_ptr()) };
    }
}
