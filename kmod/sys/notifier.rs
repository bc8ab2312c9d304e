// SPDX-License-Identifier: GPL-2.0
//! mmu interval notifiers on a user mapping of a memfd.
//!
//! memfd files are FMODE_NONOTIFY, so fsnotify never reports a hole punch. What does fire
//! is the mmu notifier of every mapping of the file: `shmem_fallocate` (and hugetlbfs)
//! unmap the punched range from all mappings before they truncate it.

use super::ffi;
use core::marker::PhantomPinned;
use core::ops::Range;
use kernel::{bindings, error::to_result, ffi::c_ulong, mm::MmWithUser, prelude::*, types::Opaque};

/// Receives invalidations. Runs in the mmu notifier path, possibly under page-table
/// and reclaim locks: it must not sleep and must not allocate.
pub(crate) trait InvalidateHandler: Send + Sync + 'static {
    /// `va` (clipped to the notifier's interval) is being invalidated; `unmapping` is
    /// true when the mapping itself goes away (munmap, exit). The handler must call
    /// `seq.set_seq()` under the lock it also holds when it reads its records.
    fn invalidate(&self, va: Range<usize>, unmapping: bool, seq: &SeqToken<'_>);
}

/// The notifier sequence of the invalidation being delivered.
pub(crate) struct SeqToken<'a> {
    mni: &'a Opaque<bindings::mmu_interval_notifier>,
    cur_seq: c_ulong,
}

impl SeqToken<'_> {
    /// Record the sequence (`mmu_interval_set_seq`), as the notifier protocol requires.
    pub(crate) fn set_seq(&self) {
        // SAFETY: called from within the invalidate callback of this notifier.
        unsafe { ffi::ulive_mmu_interval_set_seq(self.mni.get(), self.cur_seq) };
    }
}

/// An interval notifier on `[va.start, va.end)` of the mm that registered it.
///
/// # Invariants
/// Once initialised, `mni` is inserted in the mm's interval tree with `Ops::<T>::OPS`;
/// drop removes it (waiting for running callbacks) before the memory goes.
#[pin_data(PinnedDrop)]
pub(crate) struct IntervalNotifier<T: InvalidateHandler> {
    handler: T,
    va: Range<usize>,
    #[pin]
    mni: Opaque<bindings::mmu_interval_notifier>,
    #[pin]
    _pin: PhantomPinned,
}

// SAFETY: the handler is Send + Sync; the raw notifier is only touched by the core and
// by drop.
unsafe impl<T: InvalidateHandler> Send for IntervalNotifier<T> {}
// SAFETY: as above.
unsafe impl<T: InvalidateHandler> Sync for IntervalNotifier<T> {}

impl<T: InvalidateHandler> IntervalNotifier<T> {
    /// Watch `len` bytes at user address `start` of `mm`, a process's address space (any
    /// process: the caller holds a reference on its users, as the insertion requires;
    /// the notifier itself keeps only the mm_struct, not the address space, alive).
    pub(crate) fn register(
        mm: &MmWithUser,
        start: usize,
        len: usize,
        handler: T,
    ) -> Result<Pin<KBox<Self>>> {
        let mm = mm.as_raw();
        KBox::try_pin_init(
            try_pin_init!(Self {
                handler,
                va: start..start.saturating_add(len),
                // Inserted last: a callback may run as soon as this returns.
                mni <- Opaque::try_ffi_init(move |slot: *mut bindings::mmu_interval_notifier| {
                    // SAFETY: `slot` is ours to write; insertion initialises the rest.
                    unsafe { slot.write(pin_init::zeroed()) };
                    // SAFETY: `mm` has users (held by the caller; the insert takes its own
                    // mmgrab reference); the ops table is 'static; `slot` is pinned.
                    // INVARIANT: on success the notifier is inserted.
                    to_result(unsafe {
                        bindings::mmu_interval_notifier_insert(slot, mm, start as c_ulong, len as c_ulong, &Ops::<T>::OPS)
                    })
                }),
                _pin: PhantomPinned,
            }),
            GFP_KERNEL,
        )
    }
}

impl<T: InvalidateHandler> IntervalNotifier<T> {
    /// The handler the callbacks run.
    pub(crate) fn handler(&self) -> &T {
        &self.handler
    }

    /// Wait until the notifier sees every invalidation that starts from now on. An
    /// insert while an invalidation of the mm is in progress is deferred until that
    /// ends (`mmu_interval_read_begin` waits for it); invalidations starting meanwhile
    /// would not call this notifier.
    pub(crate) fn wait_live(&self) {
        // SAFETY: the notifier is inserted (type invariant); read_begin may sleep and
        // takes no lock the caller holds.
        unsafe { bindings::mmu_interval_read_begin(self.mni.get()) };
    }
}

#[pinned_drop]
impl<T: InvalidateHandler> PinnedDrop for IntervalNotifier<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: inserted by the type invariant; removal waits for running callbacks
        // and happens once, here.
        unsafe { bindings::mmu_interval_notifier_remove(self.mni.get()) };
    }
}

struct Ops<T>(core::marker::PhantomData<T>);

impl<T: InvalidateHandler> Ops<T> {
    const OPS: bindings::mmu_interval_notifier_ops = {
        let mut ops: bindings::mmu_interval_notifier_ops = pin_init::zeroed();
        ops.invalidate = Some(Self::invalidate);
        ops
    };

    /// # Safety
    /// Called by the mmu notifier core only, with an inserted notifier of ours and a valid
    /// range, for the duration of the call.
    unsafe extern "C" fn invalidate(
        mni: *mut bindings::mmu_interval_notifier,
        range: *const bindings::mmu_notifier_range,
        cur_seq: c_ulong,
    ) -> bool {
        let mni = mni
            .cast::<Opaque<bindings::mmu_interval_notifier>>()
            .cast_const();
        // SAFETY: `mni` is the `mni` field of an inserted IntervalNotifier<T>, alive
        // until its drop has removed it, which waits for this callback.
        let this = unsafe { &*kernel::container_of!(mni, IntervalNotifier<T>, mni) };
        // SAFETY: the core passes a valid range for the duration of the callback.
        let (start, end, event) = unsafe { ((*range).start, (*range).end, (*range).event) };
        let va = start.max(this.va.start)..end.min(this.va.end);
        let unmapping = event == bindings::mmu_notifier_event_MMU_NOTIFY_UNMAP
            || event == bindings::mmu_notifier_event_MMU_NOTIFY_RELEASE;
        // SAFETY: `mni` is valid (see above).
        let mni = unsafe { &*mni };
        let token = SeqToken { mni, cur_seq };
        this.handler.invalidate(va, unmapping, &token);
        true // never needs to sleep
    }
}
