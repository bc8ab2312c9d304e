// SPDX-License-Identifier: GPL-2.0
//! Declarations of the C glue (`ulive_params.c`, `ulive_shims.c`, `ulive_mm.c`), for the wrappers in `sys/` only
//! (this module is private to it).

use kernel::bindings;
use kernel::ffi::{c_int, c_uint, c_ulong, c_void};

/// `struct ulive_diff_counts` of ulive_helpers.h.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct DiffCounts {
    pub(crate) matching: c_ulong,
    pub(crate) stale: c_ulong,
    pub(crate) holes: c_ulong,
    pub(crate) unpopulated: c_ulong,
    pub(crate) first_mismatch: c_ulong,
}

/// `struct user_struct`, only ever handled by pointer.
#[repr(C)]
pub(crate) struct UserStruct {
    _opaque: [u8; 0],
}

/// `struct mem_cgroup`, only ever handled by pointer.
#[repr(C)]
pub(crate) struct MemCgroup {
    _opaque: [u8; 0],
}

// The kernel structs are opaque here (bindgen marks some as zero-sized).
#[allow(improper_ctypes)]
extern "C" {
    pub(crate) fn ulive_param_size_limit_mb() -> c_int;
    pub(crate) fn ulive_param_list_limit() -> c_int;
    pub(crate) fn ulive_param_account_memlock() -> bool;
    pub(crate) fn ulive_test_delay();
    pub(crate) fn ulive_test_fail_swap() -> bool;
    pub(crate) fn ulive_current_user(limit_pages: *mut c_ulong) -> *mut UserStruct;
    pub(crate) fn ulive_free_uid(user: *mut UserStruct);
    pub(crate) fn ulive_user_charge(user: *mut UserStruct, pages: c_ulong, limit: c_ulong)
        -> c_int;
    pub(crate) fn ulive_user_uncharge(user: *mut UserStruct, pages: c_ulong);
    pub(crate) fn ulive_memcg_current() -> *mut MemCgroup;
    pub(crate) fn ulive_memcg_put(memcg: *mut MemCgroup);
    pub(crate) fn ulive_memcg_enter(memcg: *mut MemCgroup) -> *mut MemCgroup;
    pub(crate) fn ulive_memfd_version(file: *mut bindings::file) -> u64;
    pub(crate) fn ulive_memfd_holds_page(
        file: *mut bindings::file,
        index: c_ulong,
        page: *mut bindings::page,
    ) -> bool;
    pub(crate) fn ulive_still_mapped(
        mm: *mut bindings::mm_struct,
        file: *mut bindings::file,
        va: c_ulong,
        len: c_ulong,
        offset: u64,
    ) -> bool;
    pub(crate) fn ulive_vma_addr_mapped(vma: *mut bindings::vm_area_struct, addr: c_ulong) -> bool;
    pub(crate) fn ulive_param_repopulate() -> c_int;
    pub(crate) fn ulive_file_is_mapped(file: *mut bindings::file) -> bool;
    pub(crate) fn ulive_this_module() -> *mut bindings::module;

    pub(crate) fn ulive_memfd_kind(file: *mut bindings::file) -> c_int;
    pub(crate) fn ulive_memfd_min_folio_size(file: *mut bindings::file) -> c_ulong;
    pub(crate) fn ulive_memfd_seals(file: *mut bindings::file) -> c_int;
    pub(crate) fn ulive_inode_lock_shared(file: *mut bindings::file);
    pub(crate) fn ulive_inode_trylock_shared(file: *mut bindings::file) -> bool;
    pub(crate) fn ulive_inode_unlock_shared(file: *mut bindings::file);

    pub(crate) fn ulive_memfd_settle(
        file: *mut bindings::file,
        folios: *mut *mut bindings::folio,
        n: c_ulong,
    ) -> c_int;
    pub(crate) fn ulive_folios_take_pages(
        folios: *mut *mut bindings::folio,
        n: c_ulong,
        first_offset: c_ulong,
        max: c_ulong,
        out: *mut *mut bindings::page,
        err: *mut c_int,
    ) -> c_ulong;
    pub(crate) fn ulive_unpin_pages(pages: *mut *mut bindings::page, n: c_ulong);
    pub(crate) fn ulive_unpin_appended(
        pages: *mut *mut bindings::page,
        n: c_ulong,
        seams: *const c_ulong,
        nseams: c_ulong,
    );
    pub(crate) fn ulive_page_to_pfn(page: *mut bindings::page) -> c_ulong;

    pub(crate) fn ulive_dma_buf_assert_locked(dmabuf: *mut bindings::dma_buf);
    pub(crate) fn ulive_dma_set_mask_64(dev: *mut bindings::device) -> c_int;
    pub(crate) fn ulive_dma_max_segment(dev: *mut bindings::device) -> c_uint;
    pub(crate) fn ulive_dma_sync_sgtable_for_cpu(
        dev: *mut bindings::device,
        sgt: *mut bindings::sg_table,
        dir: bindings::dma_data_direction,
    );
    pub(crate) fn ulive_dma_sync_sgtable_for_device(
        dev: *mut bindings::device,
        sgt: *mut bindings::sg_table,
        dir: bindings::dma_data_direction,
    );
    pub(crate) fn ulive_sgtable_dma_nents(sgt: *mut bindings::sg_table) -> c_uint;

    pub(crate) fn ulive_vm_map_ram(pages: *mut *mut bindings::page, count: c_uint) -> *mut c_void;
    pub(crate) fn ulive_vm_unmap_ram(mem: *const c_void, count: c_uint);
    pub(crate) fn ulive_iosys_map_set_vaddr(map: *mut bindings::iosys_map, vaddr: *mut c_void);
    pub(crate) fn ulive_iosys_map_vaddr(map: *const bindings::iosys_map) -> *mut c_void;
    pub(crate) fn ulive_vma_is_shared(vma: *mut bindings::vm_area_struct) -> bool;
    pub(crate) fn ulive_vma_set_pfnmap(
        vma: *mut bindings::vm_area_struct,
        ops: *const bindings::vm_operations_struct,
        private: *mut c_void,
    );
    pub(crate) fn ulive_vmf_vma(vmf: *mut bindings::vm_fault) -> *mut bindings::vm_area_struct;
    pub(crate) fn ulive_vmf_pgoff(vmf: *mut bindings::vm_fault) -> c_ulong;
    pub(crate) fn ulive_vma_start(vma: *mut bindings::vm_area_struct) -> c_ulong;
    pub(crate) fn ulive_vma_pgoff(vma: *mut bindings::vm_area_struct) -> c_ulong;
    pub(crate) fn ulive_vma_pages(vma: *mut bindings::vm_area_struct) -> c_ulong;
    pub(crate) fn ulive_vma_private(vma: *mut bindings::vm_area_struct) -> *mut c_void;

    pub(crate) fn ulive_memfd_diff(
        file: *mut bindings::file,
        off: i64,
        held: *mut *mut bindings::page,
        nr: c_ulong,
        diff: *mut c_ulong,
        holes: *mut c_ulong,
        counts: *mut DiffCounts,
    );
    pub(crate) fn ulive_find_mappings(
        file: *mut bindings::file,
        off: u64,
        len: u64,
        out: *mut crate::sys::memfd::RawMapping,
        max: c_uint,
    ) -> c_int;
    pub(crate) fn ulive_mmu_interval_set_seq(
        mni: *mut bindings::mmu_interval_notifier,
        seq: c_ulong,
    );
    pub(crate) fn ulive_alloc_workqueue(
        name: *const kernel::ffi::c_char,
    ) -> *mut bindings::workqueue_struct;
    pub(crate) fn ulive_dma_buf_zap(dmabuf: *mut bindings::dma_buf, start: i64, len: i64);
}
