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
#include <linux/module.h>
#include <linux/scatterlist.h>

#include "ulimp_helpers.h"

struct module *ulimp_this_module(void)
{
	return THIS_MODULE;
}

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

/* As upstream udmabuf does for its misc device. */
int ulimp_dma_set_mask_64(struct device *dev)
{
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
