// SPDX-License-Identifier: GPL-2.0
/*
 * udmabuf-live C glue, mm routines: the driver logic that must be C because it walks
 * kernel structures whose iterators and helpers are inline or unexported (the page
 * cache's xarray, a file's i_mmap tree, folio pin counts, page tables). Each function
 * says above it which locks it takes and which its caller must hold. Only kmod/sys/
 * calls these.
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

/*
 * Find the VMAs, in every process, that map @file over bytes [@off, @off + @len). For
 * each (at most @max) store the overlap in @out, with a reference on the VMA's mm
 * (mm_users, taken by mmget_not_zero(); a process whose mm is exiting is skipped) that
 * the caller drops with mmput(). Returns the count. Walks the file's own tree of
 * mappings (i_mmap, ordered by file offset): its interval-tree iterators are not
 * exported, so the walk goes node by node with the exported rb_next(), under
 * i_mmap_rwsem as rmap walkers do (a file VMA's bounds, offset and mm only change under
 * it, taken for write, and the mm outlives its VMAs). A file nobody maps costs one check.
 */
int ulive_find_mappings(struct file *file, u64 off, u64 len, struct ulive_file_mapping *out,
			unsigned int max)
{
	struct address_space *mapping = file->f_mapping;
	struct rb_node *node;
	unsigned int n = 0;

	if (!len || !max || !mapping_mapped(mapping))
		return 0;
	i_mmap_lock_read(mapping);
	for (node = rb_first_cached(&mapping->i_mmap); node; node = rb_next(node)) {
		struct vm_area_struct *vma = rb_entry(node, struct vm_area_struct, shared.rb);
		u64 vstart = (u64)vma->vm_pgoff << PAGE_SHIFT;
		u64 vend = vstart + (vma->vm_end - vma->vm_start);
		u64 s = max(vstart, off), e = min(vend, off + len);

		if (vstart >= off + len)
			break; /* the rest start further on in the file */
		if (s >= e || !mmget_not_zero(vma->vm_mm))
			continue;
		out[n].va = vma->vm_start + (s - vstart);
		out[n].len = e - s;
		out[n].offset = s;
		out[n].mm = vma->vm_mm;
		if (++n == max)
			break;
	}
	i_mmap_unlock_read(mapping);
	return n;
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
 * page cache. A NULL entry is a page the buffer has not populated. Counts matching
 * pages, pages the cache holds another page for, holes where the buffer holds a page
 * (a shadow or swap entry counts as a hole: it is not our page), and unpopulated pages
 * (these match whatever the cache holds: the cache's page there is what they take when
 * something needs them). Sets bit i of @diff (if not NULL; cleared by the caller) for
 * every page that does not match, and of @holes (if not NULL) for those of them that
 * are holes.
 *
 * Walks the page cache as filemap_get_entry() does: xas_find() resolves multi-index
 * (sibling) entries of large folios and skips holes, xas_retry() restarts on a node
 * being changed, and each folio is compared only with a reference taken by
 * folio_try_get() and after xas_reload() showed it still in place, so a folio that
 * truncation, a concurrent fault or migration is changing is never read. One lookup per
 * folio. Locking: RCU only; the caller keeps @held stable. Without the inode lock a
 * concurrent punch may be seen half done (callers that need it complete hold the lock).
 */
void ulive_memfd_diff(struct file *file, loff_t off, struct page **held, unsigned long nr,
		      unsigned long *diff, unsigned long *holes, struct ulive_diff_counts *counts)
{
	pgoff_t base = off >> PAGE_SHIFT, last = base + nr - 1;
	XA_STATE(xas, &file->f_mapping->i_pages, base);
	unsigned long i = 0, next, end;
	struct folio *folio;

	if (!nr)
		return;
	rcu_read_lock();
	while (i < nr) {
		folio = xas_find(&xas, last);
		if (xas_retry(&xas, folio))
			continue;
		/* Holes up to the entry found (which may start before page i). */
		next = folio ? max_t(unsigned long, xas.xa_index, base + i) - base : nr;
		if (!folio || xa_is_value(folio))
			next = min(next + (folio ? 1 : 0), nr);
		for (; i < next; i++) {
			if (!held[i]) {
				counts->unpopulated++;
				continue;
			}
			counts->holes++;
			if (diff)
				__set_bit(i, diff);
			if (holes)
				__set_bit(i, holes);
			if (counts->first_mismatch == ULONG_MAX)
				counts->first_mismatch = i;
		}
		if (!folio || xa_is_value(folio)) {
			xas_set(&xas, base + i);
			continue;
		}
		if (!folio_try_get(folio)) {
			xas_reset(&xas);
			continue;
		}
		if (unlikely(folio != xas_reload(&xas))) {
			folio_put(folio);
			xas_reset(&xas);
			continue;
		}
		/* Referenced and still in place: its index and size are stable. */
		end = min_t(unsigned long, nr, folio->index + folio_nr_pages(folio) - base);
		if (end <= i)
			end = i + 1; /* cannot happen; never loop without progress */
		for (; i < end; i++) {
			if (!held[i]) {
				counts->unpopulated++;
				continue;
			}
			if (base + i >= folio->index &&
			    held[i] == folio_page(folio, base + i - folio->index)) {
				counts->matching++;
				continue;
			}
			counts->stale++;
			if (diff)
				__set_bit(i, diff);
			if (counts->first_mismatch == ULONG_MAX)
				counts->first_mismatch = i;
		}
		folio_put(folio);
		xas_set(&xas, base + i);
	}
	rcu_read_unlock();
}

/*
 * Memlock accounting follows the buffer's creator *user*, as io_uring does: a charge
 * on the creator's mm could be escaped by creating in a child that exits and hands its
 * buffers to the parent. user_struct has locked_vm only with some options.
 */
#if defined(CONFIG_NET) || defined(CONFIG_IO_URING) || \
	defined(CONFIG_VFIO_PCI_ZDEV_KVM) || IS_ENABLED(CONFIG_IOMMUFD) || \
	defined(CONFIG_SECRETMEM)
#define ULIVE_HAVE_USER_LOCKED_VM 1
#endif

/* Charge @pages to @user's locked_vm unless that passes @limit: 0 or -ENOMEM. */
int ulive_user_charge(struct user_struct *user, unsigned long pages, unsigned long limit)
{
#ifdef ULIVE_HAVE_USER_LOCKED_VM
	unsigned long cur = atomic_long_read(&user->locked_vm), new;

	do {
		if (check_add_overflow(cur, pages, &new) || new > limit)
			return -ENOMEM;
	} while (!atomic_long_try_cmpxchg(&user->locked_vm, &cur, new));
#endif
	return 0;
}

void ulive_user_uncharge(struct user_struct *user, unsigned long pages)
{
#ifdef ULIVE_HAVE_USER_LOCKED_VM
	atomic_long_sub(pages, &user->locked_vm);
#endif
}

/*
 * Is @page still @file's page at page index @index? Identity only: the caller holds a
 * pin on @page, so its folio and the folio's index are stable while the folio is in the
 * page cache, and nothing of a cache entry that is not our folio is read. RCU only.
 */
bool ulive_memfd_holds_page(struct file *file, pgoff_t index, struct page *page)
{
	struct folio *folio = page_folio(page);
	XA_STATE(xas, &file->f_mapping->i_pages, index);
	void *entry;
	bool ret;

	rcu_read_lock();
	do {
		entry = xas_load(&xas);
	} while (xas_retry(&xas, entry));
	ret = entry == folio && index >= folio->index &&
	      folio_page(folio, index - folio->index) == page;
	rcu_read_unlock();
	return ret;
}

/*
 * The change counter of a shmem memfd's inode: shmem_truncate_range() bumps it after
 * every truncation and hole punch has removed its pages, and pinned pages leave the
 * page cache no other way (they cannot be swapped out, migrated or collapsed). So an
 * unchanged counter means none of our pages left since it was read. U64_MAX for
 * hugetlbfs, which keeps no such counter: its pages are compared one by one. No lock.
 */
u64 ulive_memfd_version(struct file *file)
{
	u64 v;

	if (!shmem_file(file))
		return U64_MAX;
	v = inode_peek_iversion(file_inode(file));
	smp_rmb(); /* the counter before the page cache it vouches for */
	return v;
}

/*
 * Does @mm still map @file at user address @va for @len bytes from file byte @offset
 * on, in one VMA? Read under @mm's mmap lock (the caller holds a reference on its
 * users), after the notifier for that range went live: a munmap, MAP_FIXED or mremap
 * between ulive_find_mappings() and the notifier's insertion was not seen by the
 * notifier, and is seen here.
 */
bool ulive_still_mapped(struct mm_struct *mm, struct file *file, unsigned long va,
			unsigned long len, u64 offset)
{
	struct vm_area_struct *vma;
	bool ok = false;

	if (!len)
		return false;
	mmap_read_lock(mm);
	vma = vma_lookup(mm, va);
	if (vma && vma->vm_file && vma->vm_file->f_mapping == file->f_mapping &&
	    va + len <= vma->vm_end &&
	    ((u64)vma->vm_pgoff << PAGE_SHIFT) + (va - vma->vm_start) == offset)
		ok = true;
	mmap_read_unlock(mm);
	return ok;
}

/*
 * Does @vma map a page at @addr already? For the fault handler (mmap lock held), to
 * stop pre-faulting at the first page an earlier fault already mapped.
 */
bool ulive_vma_addr_mapped(struct vm_area_struct *vma, unsigned long addr)
{
	struct follow_pfnmap_args args = { .vma = vma, .address = addr };

	if (follow_pfnmap_start(&args))
		return false;
	follow_pfnmap_end(&args);
	return true;
}
