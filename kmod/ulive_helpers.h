/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Prototypes of the udmabuf-live C glue (ulive_params.c, ulive_shims.c, ulive_mm.c).
 * kmod/sys/ffi.rs declares the same functions for Rust; keep the two in step.
 */
#ifndef ULIVE_HELPERS_H
#define ULIVE_HELPERS_H

#include <linux/types.h>

struct device;
struct dma_buf;
struct file;
struct folio;
struct iosys_map;
struct module;
struct page;
struct sg_table;
struct vm_area_struct;
struct vm_fault;
struct vm_operations_struct;
struct mm_struct;
struct mmu_interval_notifier;
struct workqueue_struct;
struct user_struct;
struct mem_cgroup;
enum dma_data_direction;

/* Result of ulive_memfd_diff(). */
struct ulive_diff_counts {
	unsigned long matching;
	unsigned long stale;
	unsigned long holes;
	unsigned long unpopulated;
	unsigned long first_mismatch;	/* page index, or ULONG_MAX */
};

bool ulive_param_account_memlock(void);
void ulive_test_delay(void);
bool ulive_test_fail_swap(void);
int ulive_param_size_limit_mb(void);
int ulive_param_list_limit(void);
struct module *ulive_this_module(void);
int ulive_memfd_kind(struct file *file);
unsigned long ulive_memfd_min_folio_size(struct file *file);
int ulive_memfd_seals(struct file *file);
void ulive_inode_lock_shared(struct file *file);
bool ulive_inode_trylock_shared(struct file *file);
void ulive_inode_unlock_shared(struct file *file);
unsigned long ulive_page_to_pfn(struct page *page);
void ulive_dma_buf_assert_locked(struct dma_buf *dmabuf);
int ulive_dma_set_mask_64(struct device *dev);
unsigned int ulive_dma_max_segment(struct device *dev);
void ulive_dma_sync_sgtable_for_cpu(struct device *dev, struct sg_table *sgt,
				    enum dma_data_direction dir);
void ulive_dma_sync_sgtable_for_device(struct device *dev, struct sg_table *sgt,
				       enum dma_data_direction dir);
unsigned int ulive_sgtable_dma_nents(struct sg_table *sgt);
void *ulive_vm_map_ram(struct page **pages, unsigned int count);
void ulive_vm_unmap_ram(const void *mem, unsigned int count);
void ulive_iosys_map_set_vaddr(struct iosys_map *map, void *vaddr);
void *ulive_iosys_map_vaddr(const struct iosys_map *map);
bool ulive_vma_is_shared(struct vm_area_struct *vma);
void ulive_vma_set_pfnmap(struct vm_area_struct *vma, const struct vm_operations_struct *ops,
			  void *private);
struct vm_area_struct *ulive_vmf_vma(struct vm_fault *vmf);
unsigned long ulive_vmf_pgoff(struct vm_fault *vmf);
unsigned long ulive_vma_start(struct vm_area_struct *vma);
unsigned long ulive_vma_pgoff(struct vm_area_struct *vma);
unsigned long ulive_vma_pages(struct vm_area_struct *vma);
void *ulive_vma_private(struct vm_area_struct *vma);
/* One user mapping of part of a memfd (kmod/sys/memfd.rs FileMapping). */
struct ulive_file_mapping {
	unsigned long va;
	unsigned long len;
	u64 offset;
	struct mm_struct *mm;	/* with a reference on its users: mmput() it */
};

int ulive_find_mappings(struct file *file, u64 off, u64 len, struct ulive_file_mapping *out,
			unsigned int max);
void ulive_mmu_interval_set_seq(struct mmu_interval_notifier *mni, unsigned long seq);
struct workqueue_struct *ulive_alloc_workqueue(const char *name);
void ulive_dma_buf_zap(struct dma_buf *dmabuf, loff_t start, loff_t len);
int ulive_memfd_settle(struct file *file, struct folio **folios, unsigned long n);
unsigned long ulive_folios_take_pages(struct folio **folios, unsigned long n,
				      unsigned long first_offset, unsigned long max,
				      struct page **out, int *err);
void ulive_unpin_pages(struct page **pages, unsigned long n);
void ulive_unpin_appended(struct page **pages, unsigned long n, const unsigned long *seams,
			  unsigned long nseams);
void ulive_memfd_diff(struct file *file, loff_t off, struct page **held, unsigned long nr,
		      unsigned long *diff, unsigned long *holes, struct ulive_diff_counts *counts);
struct user_struct *ulive_current_user(unsigned long *limit_pages);
void ulive_free_uid(struct user_struct *user);
int ulive_user_charge(struct user_struct *user, unsigned long pages, unsigned long limit);
void ulive_user_uncharge(struct user_struct *user, unsigned long pages);
struct mem_cgroup *ulive_memcg_current(void);
void ulive_memcg_put(struct mem_cgroup *memcg);
struct mem_cgroup *ulive_memcg_enter(struct mem_cgroup *memcg);
u64 ulive_memfd_version(struct file *file);
bool ulive_memfd_holds_page(struct file *file, pgoff_t index, struct page *page);
bool ulive_still_mapped(struct mm_struct *mm, struct file *file, unsigned long va,
			unsigned long len, u64 offset);
bool ulive_vma_addr_mapped(struct vm_area_struct *vma, unsigned long addr);
int ulive_param_repopulate(void);
bool ulive_file_is_mapped(struct file *file);

#endif /* ULIVE_HELPERS_H */
