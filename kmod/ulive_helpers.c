// SPDX-License-Identifier: GPL-2.0
/*
 * udmabuf-live C glue: what the Rust side needs that bindgen cannot reach
 * (static inline functions, macros, module_param with sysfs permissions).
 * Every symbol carries the ulive_ prefix; kmod/ffi.rs declares them for Rust and
 * only the wrappers in kmod/sys/ call them.
 */
#include <linux/dma-buf.h>
#include <linux/dma-mapping.h>
#include <linux/dma-resv.h>
#include <linux/fs.h>
#include <linux/hugetlb.h>
#include <linux/iosys-map.h>
#include <linux/mm.h>
#include <linux/mmu_notifier.h>
#include <linux/module.h>
#include <linux/pagemap.h>
#include <linux/xarray.h>
#include <linux/sched/mm.h>
#include <linux/workqueue.h>
#include <linux/moduleparam.h>
#include <linux/scatterlist.h>
#include <linux/shmem_fs.h>
#include <linux/vmalloc.h>

#include "ulive_helpers.h"

/* Same names, types, defaults and permissions as upstream drivers/dma-buf/udmabuf.c. */
static int size_limit_mb = 64;
module_param(size_limit_mb, int, 0644);
MODULE_PARM_DESC(size_limit_mb, "Max size of a dmabuf, in megabytes. Default is 64.");

static int list_limit = 1024;
module_param(list_limit, int, 0644);
MODULE_PARM_DESC(list_limit, "udmabuf_create_list->count limit. Default is 1024.");

/* udmabuf-live's own: upstream lets any user of the device pin without limit. */
static bool account_memlock = true;
module_param(account_memlock, bool, 0644);
MODULE_PARM_DESC(account_memlock,
		 "Charge pinned pages to the creating process's RLIMIT_MEMLOCK (pinned_vm, VmPin), as RDMA does. Default is on.");

bool ulive_param_account_memlock(void)
{
	return READ_ONCE(account_memlock);
}

int ulive_param_size_limit_mb(void)
{
	return READ_ONCE(size_limit_mb);
}

int ulive_param_list_limit(void)
{
	return READ_ONCE(list_limit);
}

struct module *ulive_this_module(void)
{
	return THIS_MODULE;
}

/* ---- memfd ---- */

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

void ulive_inode_unlock_shared(struct file *file)
{
	inode_unlock_shared(file_inode(file));
}

/* ---- folios and pages ---- */

unsigned long ulive_page_to_pfn(struct page *page)
{
	return page_to_pfn(page);
}

/* ---- dma-buf, reservation object, DMA mapping ---- */

void ulive_dma_buf_lock(struct dma_buf *dmabuf)
{
	dma_resv_lock(dmabuf->resv, NULL);
}

void ulive_dma_buf_unlock(struct dma_buf *dmabuf)
{
	dma_resv_unlock(dmabuf->resv);
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
	return dma_max_mapping_size(dev) > UINT_MAX ? (UINT_MAX & PAGE_MASK)
						    : (dma_max_mapping_size(dev) & PAGE_MASK);
}

void ulive_dma_unmap_sgtable(struct device *dev, struct sg_table *sgt,
			     enum dma_data_direction dir, unsigned long attrs)
{
	dma_unmap_sgtable(dev, sgt, dir, attrs);
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

/* ---- CPU mappings ---- */

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

/*
 * Find the VMAs of the current process that map @file over bytes [@off, @off + @len).
 * For each (at most @max) store the overlap in @out. Returns the count. Walks the
 * file's own tree of mappings (i_mmap, ordered by file offset), not the process's VMAs:
 * its interval-tree iterators are not exported, so the walk goes node by node with the
 * exported rb_next(), under i_mmap_rwsem as rmap walkers do (a file VMA's bounds and
 * offset only change under it, taken for write). A file nobody maps costs one check.
 */
int ulive_find_mappings(struct file *file, u64 off, u64 len, struct ulive_file_mapping *out,
			unsigned int max)
{
	struct address_space *mapping = file->f_mapping;
	struct mm_struct *mm = current->mm;
	struct rb_node *node;
	unsigned int n = 0;

	if (!mm || !len || !max || !mapping_mapped(mapping))
		return 0;
	i_mmap_lock_read(mapping);
	for (node = rb_first_cached(&mapping->i_mmap); node; node = rb_next(node)) {
		struct vm_area_struct *vma = rb_entry(node, struct vm_area_struct, shared.rb);
		u64 vstart = (u64)vma->vm_pgoff << PAGE_SHIFT;
		u64 vend = vstart + (vma->vm_end - vma->vm_start);
		u64 s = max(vstart, off), e = min(vend, off + len);

		if (vstart >= off + len)
			break; /* the rest start further on in the file */
		if (vma->vm_mm != mm || s >= e)
			continue;
		out[n].va = vma->vm_start + (s - vstart);
		out[n].len = e - s;
		out[n].offset = s;
		if (++n == max)
			break;
	}
	i_mmap_unlock_read(mapping);
	return n;
}

struct mm_struct *ulive_current_mm(void)
{
	return current->mm;
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
 * Zap the CPU mmaps of a dma-buf over bytes [@start, @start + @len).
 *
 * The worker may get here while the dma-buf's last file reference is being dropped:
 * the release op, which unpublishes the dma-buf and so waits for the worker, runs from
 * the dentry's d_release, after the file's inode (and the address_space the mmaps hang
 * off) has been put. So take a reference on the file first: if there is none to take,
 * the file is going, and since every mmap holds a file reference there is nothing to
 * zap. The file itself is not freed before the release op has returned.
 */
void ulive_dma_buf_zap(struct dma_buf *dmabuf, loff_t start, loff_t len)
{
	struct file *file = get_file_active(&dmabuf->file);

	if (!file)
		return;
	unmap_mapping_range(file->f_mapping, start, len, 1);
	fput(file);
}

/*
 * Make the @n folios memfd_pin_folios() just pinned safe to hand out. It takes whatever
 * the page cache holds, including shmem folios that are not uptodate, whose bytes are
 * still those of the page's previous user:
 *  - a folio a fault on the memfd is setting up: shmem_get_folio_gfp() adds a new folio
 *    to the page cache locked and clears it only afterwards;
 *  - a folio fallocate() allocated: shmem leaves those !uptodate (and unlocked) until
 *    the first read or fault clears them.
 * shmem_read_folio() waits for the folio lock and clears a folio that is not uptodate,
 * exactly as a read of the memfd would. hugetlbfs adds its folios cleared and uptodate;
 * for it, waiting for the lock is enough. Returns 0; -EAGAIN if a folio left the page
 * cache meanwhile (the caller unpins all and pins again); or an errno.
 */
int ulive_memfd_settle(struct file *file, struct folio **folios, unsigned long n)
{
	unsigned long i;

	for (i = 0; i < n; i++) {
		struct folio *folio = folios[i], *cur;

		if (likely(folio_test_uptodate(folio)))
			continue;
		if (shmem_file(file)) {
			cur = shmem_read_folio(file->f_mapping, folio->index);
			if (IS_ERR(cur))
				return PTR_ERR(cur);
			folio_put(cur);
			if (cur != folio)
				return -EAGAIN;
		} else {
			if (folio_lock_killable(folio))
				return -EINTR;
			folio_unlock(folio);
		}
		if (!folio_test_uptodate(folio))
			return -EAGAIN;
	}
	return 0;
}

/*
 * Turn the pins memfd_pin_folios() took on @folios[0..@n) (one each) into one pin per
 * page, for the pages from byte @first_offset of the first folio on, at most @max of
 * them, stored in @out. Every folio pin is consumed: it became the pins of the pages
 * stored, or it was dropped. Returns how many pages were stored; *@err is 0 or the
 * errno that stopped it. One call per batch: this is the hot loop of UDMABUF_CREATE.
 */
unsigned long ulive_folios_take_pages(struct folio **folios, unsigned long n,
				      unsigned long first_offset, unsigned long max,
				      struct page **out, int *err)
{
	unsigned long i, done = 0, first = first_offset >> PAGE_SHIFT;

	*err = 0;
	for (i = 0; i < n; i++, first = 0) {
		struct folio *folio = folios[i];
		unsigned long nr = folio_nr_pages(folio), k, take;

		if (nr == 1 && !first && done < max) {
			out[done++] = &folio->page;
			continue;
		}
		if (first >= nr || done == max) {
			unpin_folio(folio);
			continue;
		}
		take = min(nr - first, max - done);
		if (take > 1) {
			*err = folio_add_pins(folio, take - 1);
			if (*err) {
				unpin_folios(folios + i, n - i);
				return done;
			}
		}
		for (k = 0; k < take; k++)
			out[done + k] = folio_page(folio, first + k);
		done += take;
	}
	return done;
}

/* Physically contiguous entries from which a run is unpinned by range. */
#define ULIVE_UNPIN_RUN 64

/*
 * Drop the one pin each of the @n pages holds on its folio. unpin_user_pages() reads
 * the struct page of every entry to group them by folio, which for the 512 pages of a
 * hugetlb folio is 511 reads too many; a long run of physically contiguous entries is
 * unpinned with unpin_user_page_range_dirty_lock(), which reads one per folio. The
 * rest (small folios, short runs) goes to unpin_user_pages() in as few calls as
 * possible: calling the range function per small page costs more than it saves.
 */
void ulive_unpin_pages(struct page **pages, unsigned long n)
{
	unsigned long i = 0, rest = 0, j;

	while (i < n) {
		for (j = i + 1; j < n; j++) {
			/* With a virtual memmap, adjacent struct pages are adjacent pfns. */
			if (pages[j] != pages[j - 1] + 1 ||
			    (!IS_ENABLED(CONFIG_SPARSEMEM_VMEMMAP) &&
			     page_to_pfn(pages[j]) != page_to_pfn(pages[j - 1]) + 1))
				break;
		}
		if (j - i >= ULIVE_UNPIN_RUN) {
			if (rest < i)
				unpin_user_pages(pages + rest, i - rest);
			unpin_user_page_range_dirty_lock(pages[i], j - i, false);
			rest = j;
		}
		i = j;
	}
	if (rest < n)
		unpin_user_pages(pages + rest, n - rest);
}

/*
 * Drop the one pin each of the @n pages holds, for an array exactly as
 * ulive_folios_take_pages() appended it: segment by segment (one per append; @seams
 * holds the first index of every segment after the first), each entry is followed by
 * the next pages of its folio up to the folio's or the segment's end. So one struct page
 * read and one range unpin per folio suffice, without comparing entries: a 2 MiB hugetlb
 * folio costs what upstream's unpin_folio() costs, not 512 reads.
 */
void ulive_unpin_appended(struct page **pages, unsigned long n, const unsigned long *seams,
			  unsigned long nseams)
{
	unsigned long s, start = 0;

	for (s = 0; s <= nseams; s++) {
		unsigned long end = s < nseams ? clamp(seams[s], start, n) : n;
		unsigned long i = start;

		while (i < end) {
			struct page *page = pages[i];
			struct folio *folio = page_folio(page);
			unsigned long run = min(folio_nr_pages(folio) - folio_page_idx(folio, page),
						end - i);

			unpin_user_page_range_dirty_lock(page, run, false);
			i += run;
		}
		start = end;
	}
}

/*
 * Compare the @nr pages in @held, which back file bytes from @off on, with @file's
 * page cache. Counts matching pages, pages the cache holds another page for, and holes;
 * sets bit i of @diff (if not NULL; cleared by the caller) for every page that does not
 * match. Identity only: runs under RCU and takes no references, so a concurrent
 * truncation may be seen half done (callers re-check later). One page-cache lookup per
 * folio: the rest of a matching folio is compared by pointer.
 */
void ulive_memfd_diff(struct file *file, loff_t off, struct page **held, unsigned long nr,
		      unsigned long *diff, struct ulive_diff_counts *counts)
{
	pgoff_t base = off >> PAGE_SHIFT;
	XA_STATE(xas, &file->f_mapping->i_pages, base);
	struct folio *folio;
	unsigned long i = 0;

	rcu_read_lock();
	folio = xas_load(&xas);
	while (i < nr) {
		unsigned long n, end;

		if (xas_retry(&xas, folio)) {
			folio = xas_reload(&xas);
			continue;
		}
		if (!folio || xa_is_value(folio)) {
			counts->holes++;
			if (diff)
				__set_bit(i, diff);
			if (counts->first_mismatch == ULONG_MAX)
				counts->first_mismatch = i;
			i++;
			folio = xas_next(&xas);
			continue;
		}
		/* Pages of this folio from index base + i on, within the range. */
		n = folio_nr_pages(folio) - (base + i - folio->index);
		end = min(nr, i + n);
		for (; i < end; i++) {
			if (held[i] == folio_page(folio, base + i - folio->index)) {
				counts->matching++;
				continue;
			}
			counts->stale++;
			if (diff)
				__set_bit(i, diff);
			if (counts->first_mismatch == ULONG_MAX)
				counts->first_mismatch = i;
		}
		if (i >= nr)
			break;
		if (n > 1) {
			/* A large folio is one multi-index entry: jump past it. */
			xas_set(&xas, base + i);
			folio = xas_load(&xas);
		} else {
			folio = xas_next(&xas);
		}
	}
	rcu_read_unlock();
}

/* The current task's mm with an mmgrab() reference (the struct, not the address space). */
struct mm_struct *ulive_mmgrab_current(void)
{
	struct mm_struct *mm = current->mm;

	if (mm)
		mmgrab(mm);
	return mm;
}

void ulive_mmdrop(struct mm_struct *mm)
{
	mmdrop(mm);
}

/*
 * Charge @pages pinned pages to @mm->pinned_vm within the current task's
 * RLIMIT_MEMLOCK, unless it has CAP_IPC_LOCK: what RDMA's ib_umem_get() does. An atomic
 * counter, so neither CREATE nor release takes the mmap lock, which the process's own
 * page faults contend for (account_locked_vm() takes it for write).
 */
int ulive_charge_pinned_vm(struct mm_struct *mm, unsigned long pages)
{
	unsigned long limit = rlimit(RLIMIT_MEMLOCK) >> PAGE_SHIFT;

	if (atomic64_add_return(pages, &mm->pinned_vm) > limit && !capable(CAP_IPC_LOCK)) {
		atomic64_sub(pages, &mm->pinned_vm);
		return -ENOMEM;
	}
	return 0;
}

void ulive_uncharge_pinned_vm(struct mm_struct *mm, unsigned long pages)
{
	atomic64_sub(pages, &mm->pinned_vm);
}

