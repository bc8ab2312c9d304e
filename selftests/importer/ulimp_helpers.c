// SPDX-License-Identifier: GPL-2.0
/*
 * ulive_importer C glue: the static inline functions and macros the Rust side needs.
 * Every symbol carries the ulimp_ prefix; ffi.rs declares them for Rust and only the
 * wrappers in sys/ call them.
 */
#include <linux/dma-buf.h>
#include <linux/dma-mapping.h>
#include <linux/dma-resv.h>
#include <linux/mm.h>
#include <linux/scatterlist.h>

#include "ulimp_helpers.h"

/* ---- the reservation lock of a dma-buf ---- */

void ulimp_dma_buf_lock(struct dma_buf *dmabuf)
{
	dma_resv_lock(dmabuf->resv, NULL);
}

/* 0, or -EINTR when a signal arrived while waiting. */
int ulimp_dma_buf_lock_interruptible(struct dma_buf *dmabuf)
{
	return dma_resv_lock_interruptible(dmabuf->resv, NULL);
}

void ulimp_dma_buf_unlock(struct dma_buf *dmabuf)
{
	dma_resv_unlock(dmabuf->resv);
}

void ulimp_dma_buf_assert_locked(struct dma_buf *dmabuf)
{
	dma_resv_assert_held(dmabuf->resv);
}

/* ---- DMA mapping ---- */

/* The DMA limits of the one importer device (a misc device has none of its own). */
static struct device_dma_parameters ulimp_dma_parms;

/*
 * Give the importer's device the DMA limits of a GPU: a 64-bit mask and segments of
 * any length an unsigned int holds. Without dma_parms the DMA API's default segment
 * limit is 64 KiB, which an exporter must respect (dma_get_max_seg_size()).
 */
int ulimp_dma_set_mask_64(struct device *dev)
{
	if (!dev->dma_parms)
		dev->dma_parms = &ulimp_dma_parms;
	dma_set_max_seg_size(dev, UINT_MAX);
	return dma_coerce_mask_and_coherent(dev, DMA_BIT_MASK(64));
}

void ulimp_dma_sync_sgtable_for_cpu(struct device *dev, struct sg_table *sgt,
				    enum dma_data_direction dir)
{
	dma_sync_sgtable_for_cpu(dev, sgt, dir);
}

/* ---- scatterlists ---- */

struct scatterlist *ulimp_sg_next(struct scatterlist *sg)
{
	return sg_next(sg);
}

/*
 * Page @n of the CPU segment @sg, or NULL when the table carries no pages (exporters
 * of peer-to-peer memory, or the dma-buf core's CONFIG_DMABUF_DEBUG wrapper). The
 * segment's pages are pfn-contiguous; pfn arithmetic does not assume a contiguous
 * memmap.
 */
struct page *ulimp_sg_page(struct scatterlist *sg, unsigned long n)
{
	struct page *first = sg_page(sg);

	return first ? pfn_to_page(page_to_pfn(first) + n) : NULL;
}

unsigned long ulimp_page_to_pfn(struct page *page)
{
	return page_to_pfn(page);
}

/*
 * Is the folio of page @pfn DMA-pinned? Test-only: it reads the page's counts even if
 * the page went back to the allocator, which is exactly what it is there to detect.
 */
bool ulimp_pfn_dma_pinned(unsigned long pfn)
{
	return pfn_valid(pfn) && folio_maybe_dma_pinned(page_folio(pfn_to_page(pfn)));
}
