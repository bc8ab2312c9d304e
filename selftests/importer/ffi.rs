// SPDX-License-Identifier: GPL-2.0
//! Declarations of the C glue in `ulimp_helpers.c` (prototypes in `ulimp_helpers.h`).
//! Only `sys/` calls these.

use kernel::bindings;
use kernel::ffi::{c_int, c_ulong};

// The kernel structs are opaque here (bindgen marks some as zero-sized).
#[allow(improper_ctypes)]
extern "C" {
    pub(crate) fn ulimp_dma_buf_lock(dmabuf: *mut bindings::dma_buf);
    pub(crate) fn ulimp_dma_buf_lock_interruptible(dmabuf: *mut bindings::dma_buf) -> c_int;
    pub(crate) fn ulimp_dma_buf_unlock(dmabuf: *mut bindings::dma_buf);
    pub(crate) fn ulimp_dma_buf_assert_locked(dmabuf: *mut bindings::dma_buf);
    pub(crate) fn ulimp_dma_set_mask_64(dev: *mut bindings::device) -> c_int;
    pub(crate) fn ulimp_dma_sync_sgtable_for_cpu(
        dev: *mut bindings::device,
        sgt: *mut bindings::sg_table,
        dir: bindings::dma_data_direction,
    );
    pub(crate) fn ulimp_sg_next(sg: *mut bindings::scatterlist) -> *mut bindings::scatterlist;
    pub(crate) fn ulimp_sg_page(sg: *mut bindings::scatterlist, n: c_ulong) -> *mut bindings::page;
    pub(crate) fn ulimp_page_to_pfn(page: *mut bindings::page) -> c_ulong;
    pub(crate) fn ulimp_pfn_dma_pinned(pfn: c_ulong) -> bool;
}
