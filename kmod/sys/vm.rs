// SPDX-License-Identifier: GPL-2.0
//! CPU mappings of a buffer: the page-fault handler of dma-buf mmaps, and vmap.

use super::dmabuf::Exporter;
use super::ffi;
use super::folio::PinnedPages;
use super::PAGE_SHIFT;
use core::ops::Range;
use core::ptr::NonNull;
use kernel::{bindings, ffi::c_void, prelude::*};

/// The outcome of a page fault, as a `vm_fault_t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FaultResult(bindings::vm_fault_t);

impl FaultResult {
    pub(crate) const SIGBUS: Self =
        Self(bindings::vm_fault_reason_VM_FAULT_SIGBUS as bindings::vm_fault_t);
    pub(crate) const OOM: Self =
        Self(bindings::vm_fault_reason_VM_FAULT_OOM as bindings::vm_fault_t);
    /// Nothing inserted; the access faults again.
    pub(crate) const RETRY: Self =
        Self(bindings::vm_fault_reason_VM_FAULT_NOPAGE as bindings::vm_fault_t);

    /// True for the `VM_FAULT_ERROR` class of results.
    pub(crate) fn is_error(self) -> bool {
        const ERROR: u32 = bindings::vm_fault_reason_VM_FAULT_OOM
            | bindings::vm_fault_reason_VM_FAULT_SIGBUS
            | bindings::vm_fault_reason_VM_FAULT_SIGSEGV
            | bindings::vm_fault_reason_VM_FAULT_HWPOISON
            | bindings::vm_fault_reason_VM_FAULT_HWPOISON_LARGE
            | bindings::vm_fault_reason_VM_FAULT_FALLBACK;
        self.0 & ERROR as bindings::vm_fault_t != 0
    }
}

/// A page fault in a dma-buf mmap of ours.
///
/// # Invariants
/// `vmf` is the fault being handled; its VMA was set up by our mmap op.
pub(crate) struct Fault {
    vmf: *mut bindings::vm_fault,
    vma: *mut bindings::vm_area_struct,
}

impl Fault {
    /// Page offset in the dma-buf of the faulting address.
    pub(crate) fn pgoff(&self) -> usize {
        // SAFETY: `vmf` is valid during the fault (type invariant).
        unsafe { ffi::ulive_vmf_pgoff(self.vmf) as usize }
    }

    /// The dma-buf page offsets this VMA covers.
    pub(crate) fn vma_pgoffs(&self) -> Range<usize> {
        // SAFETY: the VMA is valid during the fault (type invariant).
        let (first, n) = unsafe {
            (
                ffi::ulive_vma_pgoff(self.vma) as usize,
                ffi::ulive_vma_pages(self.vma) as usize,
            )
        };
        first..first.saturating_add(n)
    }

    /// User address of dma-buf page `pgoff` in this VMA, if the VMA shows it.
    fn addr(&self, pgoff: usize) -> Option<usize> {
        let range = self.vma_pgoffs();
        if !range.contains(&pgoff) {
            return None;
        }
        // SAFETY: the VMA is valid (type invariant).
        Some(
            unsafe { ffi::ulive_vma_start(self.vma) } as usize
                + ((pgoff - range.start) << PAGE_SHIFT),
        )
    }

    /// Does this VMA map dma-buf page `pgoff` already (an earlier fault inserted it and
    /// no update has zapped it since)?
    pub(crate) fn is_mapped(&self, pgoff: usize) -> bool {
        let Some(addr) = self.addr(pgoff) else {
            return false;
        };
        // SAFETY: the VMA is valid and its mm's mmap lock is held during the fault.
        unsafe { ffi::ulive_vma_addr_mapped(self.vma, addr as kernel::ffi::c_ulong) }
    }

    /// Map page `index` of `pages` at dma-buf offset `pgoff` in this VMA (`SIGBUS` for
    /// an unpopulated page or an offset outside the VMA).
    pub(crate) fn insert(&self, pgoff: usize, pages: &PinnedPages, index: usize) -> FaultResult {
        let Some(pfn) = pages.pfn(index) else {
            return FaultResult::SIGBUS;
        };
        let Some(addr) = self.addr(pgoff) else {
            return FaultResult::SIGBUS;
        };
        // SAFETY: `addr` lies inside the VMA (checked above), the VMA is VM_PFNMAP (set
        // up by our mmap op), and `pfn` is a page pinned by `pages`.
        FaultResult(unsafe {
            bindings::vmf_insert_pfn(
                self.vma,
                addr as kernel::ffi::c_ulong,
                pfn as kernel::ffi::c_ulong,
            )
        })
    }
}

/// `vm_operations_struct` of our dma-buf mmaps, one per exporter type.
pub(super) struct VmOps<T>(core::marker::PhantomData<T>);

impl<T: Exporter> VmOps<T> {
    pub(super) const OPS: bindings::vm_operations_struct = {
        let mut ops: bindings::vm_operations_struct = pin_init::zeroed();
        ops.fault = Some(Self::fault);
        ops
    };

    /// # Safety
    /// Called by the fault handler only, with a fault on a VMA our mmap op set up.
    unsafe extern "C" fn fault(vmf: *mut bindings::vm_fault) -> bindings::vm_fault_t {
        // SAFETY: the core passes a valid fault on a VMA set up by our mmap op.
        let vma = unsafe { ffi::ulive_vmf_vma(vmf) };
        // SAFETY: our mmap op stored the exporter (the dma-buf's `priv`) in
        // vm_private_data; the VMA holds the dma-buf file, so the exporter is alive.
        let exporter = unsafe { &*(ffi::ulive_vma_private(vma) as *const T) };
        // INVARIANT: `vmf` is the fault being handled on one of our VMAs.
        exporter.fault(&Fault { vmf, vma }).0
    }
}

/// Opaque kernel virtual address of a vmap, as handed to the dma-buf core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct VMapAddr(pub(super) *mut c_void);

/// A contiguous kernel mapping (`vm_map_ram`) of a buffer's pages.
///
/// # Invariants
/// `addr` is a live vm_map_ram() mapping of `count` pages, owned by us.
pub(crate) struct VMap {
    addr: NonNull<c_void>,
    count: u32,
}

// SAFETY: the mapping may be torn down from any thread.
unsafe impl Send for VMap {}
// SAFETY: the object itself is immutable.
unsafe impl Sync for VMap {}

impl VMap {
    /// Map every page of `pages`, which must all be populated (`ENOMEM` otherwise).
    pub(crate) fn new(pages: &PinnedPages) -> Result<Self> {
        if pages.missing() != 0 {
            return Err(ENOMEM);
        }
        let count = u32::try_from(pages.len()).map_err(|_| EINVAL)?;
        // SAFETY: the array holds `count` pinned pages (PinnedPages invariant, none
        // missing: checked above); the caller keeps them pinned while the VMap lives.
        let addr = unsafe { ffi::ulive_vm_map_ram(pages.raw_pages(), count) };
        // Upstream udmabuf answers a failed vm_map_ram() with EINVAL.
        let addr = NonNull::new(addr).ok_or(EINVAL)?;
        Ok(Self { addr, count })
    }

    pub(crate) fn addr(&self) -> VMapAddr {
        VMapAddr(self.addr.as_ptr())
    }
}

impl Drop for VMap {
    fn drop(&mut self) {
        // SAFETY: by the type invariant the mapping is live and ours.
        unsafe { ffi::ulive_vm_unmap_ram(self.addr.as_ptr(), self.count) };
    }
}
