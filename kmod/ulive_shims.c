// SPDX-License-Identifier: GPL-2.0
/*
 * udmabuf-live C glue, shims: one call each, for the static inline functions and macros
 * that bindgen cannot reach, written like the files of rust/helpers/. What the kernel's own Rust
 * helpers export (dma_resv_lock, dma_unmap_sgtable, mmget_not_zero, ...) is called
 * through kernel::bindings instead. Only kmod/sys/ calls these.
 */
#include <linux/dma-buf.h>
#include <linux/dma-mapping.h>
#include <linux/dma-resv.h>
#include <linux/fs.h>
#include <linux/hugetlb.h>
#include <linux/iversion.h>
#include <linux/iosys-map.h>
#include <linux/mm.h>
#include <linux/mmu_notifier.h>
#include <linux/module.h>
#include <linux/pagemap.h>
#include <linux/xarray.h>
#include <linux/sched/mm.h>
#include <linux/sched/user.h>
#include <linux/cred.h>
#include <linux/memcontrol.h>
#include <linux/mmap_lock.h>
#include <linux/workqueue.h>
#include <linux/moduleparam.h>
#include <linux/delay.h>
#include <linux/sysfs.h>
#include <linux/scatterlist.h>
#include <linux/shmem_fs.h>
#include <linux/vmalloc.h>
#include "ulive_helpers.h"

/* 1: shmem, 2: hugetlbfs, 0: anything else. */
int ulive_memfd_kind(struct file *file)
{
	if (shmem_file(file))
		return 1;
	if (is_file_hugepages(file))
		return 2;
	return 0;
}

/*
 * The seals of a shmem or hugetlbfs file, as memfd_get_seals() (not exported) reads
 * them. The caller holds the inode lock, as memfd_add_seals() takes it for write.
 */
/* Size of every folio of a hugetlbfs file; for shmem, the smallest a folio can be. */
unsigned long ulive_memfd_min_folio_size(struct file *file)
{
#ifdef CONFIG_HUGETLBFS
	if (is_file_hugepages(file))
		return huge_page_size(hstate_file(file));
#endif
	return PAGE_SIZE;
}

int ulive_memfd_seals(struct file *file)
{
	struct inode *inode = file_inode(file);

	if (shmem_file(file))
		return SHMEM_I(inode)->seals;
#ifdef CONFIG_HUGETLBFS
	if (is_file_hugepages(file))
		return HUGETLBFS_I(inode)->seals;
#endif
	return -EINVAL;
}

void ulive_inode_lock_shared(struct file *file)
{
	inode_lock_shared(file_inode(file));
}

bool ulive_inode_trylock_shared(struct file *file)
{
	return inode_trylock_shared(file_inode(file));
}

void ulive_inode_unlock_shared(struct file *file)
{
	inode_unlock_shared(file_inode(file));
}

unsigned long ulive_page_to_pfn(struct page *page)
{
	return page_to_pfn(page);
}

void ulive_dma_buf_assert_locked(struct dma_buf *dmabuf)
{
	dma_resv_assert_held(dmabuf->resv);
}

int ulive_dma_set_mask_64(struct device *dev)
{
	return dma_coerce_mask_and_coherent(dev, DMA_BIT_MASK(64));
}

unsigned int ulive_dma_max_segment(struct device *dev)
{
	/* Largest segment the device accepts, page aligned, as sg tables want it. */
	return dma_get_max_seg_size(dev) & PAGE_MASK;
}

void ulive_dma_sync_sgtable_for_cpu(struct device *dev, struct sg_table *sgt,
				    enum dma_data_direction dir)
{
	dma_sync_sgtable_for_cpu(dev, sgt, dir);
}

void ulive_dma_sync_sgtable_for_device(struct device *dev, struct sg_table *sgt,
				       enum dma_data_direction dir)
{
	dma_sync_sgtable_for_device(dev, sgt, dir);
}

unsigned int ulive_sgtable_dma_nents(struct sg_table *sgt)
{
	return sgt->nents;
}

void *ulive_vm_map_ram(struct page **pages, unsigned int count)
{
	return vm_map_ram(pages, count, NUMA_NO_NODE);
}

void ulive_vm_unmap_ram(const void *mem, unsigned int count)
{
	vm_unmap_ram(mem, count);
}

void ulive_iosys_map_set_vaddr(struct iosys_map *map, void *vaddr)
{
	iosys_map_set_vaddr(map, vaddr);
}

void *ulive_iosys_map_vaddr(const struct iosys_map *map)
{
	return map->is_iomem ? NULL : map->vaddr;
}

bool ulive_vma_is_shared(struct vm_area_struct *vma)
{
	return vma->vm_flags & (VM_SHARED | VM_MAYSHARE);
}

/* A dma-buf mapping is a PFN map: no struct page refcounting, no expansion, no dump. */
void ulive_vma_set_pfnmap(struct vm_area_struct *vma, const struct vm_operations_struct *ops,
			  void *private)
{
	vma->vm_ops = ops;
	vma->vm_private_data = private;
	vm_flags_set(vma, VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP);
}

struct vm_area_struct *ulive_vmf_vma(struct vm_fault *vmf)
{
	return vmf->vma;
}

unsigned long ulive_vmf_pgoff(struct vm_fault *vmf)
{
	return vmf->pgoff;
}

unsigned long ulive_vma_start(struct vm_area_struct *vma)
{
	return vma->vm_start;
}

unsigned long ulive_vma_pgoff(struct vm_area_struct *vma)
{
	return vma->vm_pgoff;
}

unsigned long ulive_vma_pages(struct vm_area_struct *vma)
{
	return vma_pages(vma);
}

void *ulive_vma_private(struct vm_area_struct *vma)
{
	return vma->vm_private_data;
}

/* Does any process map @file? (One read of its mapping tree; no lock.) */
bool ulive_file_is_mapped(struct file *file)
{
	return mapping_mapped(file->f_mapping);
}

void ulive_mmu_interval_set_seq(struct mmu_interval_notifier *mni, unsigned long seq)
{
	mmu_interval_set_seq(mni, seq);
}

struct workqueue_struct *ulive_alloc_workqueue(const char *name)
{
	return alloc_workqueue("%s", WQ_UNBOUND, 0, name);
}

/*
 * The current user, with a reference, and the page limit its charges are held to:
 * RLIMIT_MEMLOCK of the current task, or ULONG_MAX with CAP_IPC_LOCK. Recorded at
 * CREATE, since later charges (the worker's new pages) run in a kworker.
 */
struct user_struct *ulive_current_user(unsigned long *limit_pages)
{
	*limit_pages = capable(CAP_IPC_LOCK) ? ULONG_MAX : rlimit(RLIMIT_MEMLOCK) >> PAGE_SHIFT;
	return get_uid(current_user());
}

void ulive_free_uid(struct user_struct *user)
{
	free_uid(user);
}

/*
 * The memory cgroup of the current task's mm, with a reference (NULL without memcg):
 * where its own faults on the memfd are charged. get_mem_cgroup_from_current() is not
 * exported; for a process the two are the same cgroup.
 */
struct mem_cgroup *ulive_memcg_current(void)
{
	return current->mm ? get_mem_cgroup_from_mm(current->mm) : NULL;
}

void ulive_memcg_put(struct mem_cgroup *memcg)
{
	mem_cgroup_put(memcg);
}

/* Charge the current task's allocations to @memcg until the returned one is restored. */
struct mem_cgroup *ulive_memcg_enter(struct mem_cgroup *memcg)
{
	return set_active_memcg(memcg);
}
