/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Prototypes of the ulive_importer C glue (ulimp_helpers.c). ffi.rs declares the same
 * functions for Rust; keep the two in step.
 */
#ifndef ULIMP_HELPERS_H
#define ULIMP_HELPERS_H

#include <linux/types.h>

struct device;
struct dma_buf;
struct module;
struct page;
struct scatterlist;
struct sg_table;
enum dma_data_direction;

void ulimp_dma_buf_lock(struct dma_buf *dmabuf);
int ulimp_dma_buf_lock_interruptible(struct dma_buf *dmabuf);
void ulimp_dma_buf_unlock(struct dma_buf *dmabuf);
void ulimp_dma_buf_assert_locked(struct dma_buf *dmabuf);
int ulimp_dma_set_mask_64(struct device *dev);
void ulimp_dma_sync_sgtable_for_cpu(struct device *dev, struct sg_table *sgt,
				    enum dma_data_direction dir);
struct scatterlist *ulimp_sg_next(struct scatterlist *sg);
struct page *ulimp_sg_page(struct scatterlist *sg, unsigned long n);
unsigned long ulimp_page_to_pfn(struct page *page);
bool ulimp_pfn_dma_pinned(unsigned long pfn);

#endif /* ULIMP_HELPERS_H */
