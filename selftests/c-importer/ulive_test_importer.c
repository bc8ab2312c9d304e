// SPDX-License-Identifier: GPL-2.0
/*
 * ulive_test_importer: a dma-buf importer for the udmabuf-live guest tests only.
 *
 * The test kernel has no importer that userspace can make pin, map or vmap a dma-buf:
 * vgem (7.2) imports with drm_gem_shmem_prime_import_no_map(), which only attaches.
 * This module does what real drivers do, on request through /dev/ulive-test-importer:
 *
 *  IMPORT   attach statically (the core pins the buffer at map) or dynamically (with an
 *           invalidate_mappings op, never pinned), and map the attachment for DMA;
 *  PFNS     the page frames the importer's mapping points at (from the DMA addresses;
 *           the test guest has no IOMMU, so they are physical). A dynamic import whose
 *           mapping was invalidated maps again first, as a dynamic importer must;
 *  VMAP     a kernel vmap of the buffer, and VREAD to read through it;
 *  RELEASE  unmap, detach (or vunmap) and drop the reference.
 *
 * Everything an open file imported is released when the file is closed.
 */
#include <linux/dma-buf.h>
#include <linux/dma-mapping.h>
#include <linux/dma-resv.h>
#include <linux/fs.h>
#include <linux/iosys-map.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/nospec.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

#define UTI_MAX_IMPORTS 8

/* Flags of struct uti_import. */
#define UTI_IMPORT_DYNAMIC 0x1

struct uti_import {
	__s32 fd;      /* in: the dma-buf */
	__u32 flags;   /* in: UTI_IMPORT_* */
	__u32 id;      /* out: slot */
	__u32 pad;
};

struct uti_pfns {
	__u32 id;            /* in */
	__u32 pad;
	__u64 count;         /* in: PFNs wanted (at most the buffer's pages) */
	__u64 pfns;          /* in: user pointer to count u64s */
	__u64 invalidations; /* out: invalidate_mappings calls so far */
	__u64 remaps;        /* out: mappings made again after an invalidation */
};

struct uti_vread {
	__u32 id;
	__u32 pad;
	__u64 offset;
	__u64 len;
	__u64 buf;           /* user pointer */
};

#define UTI_IOC_IMPORT  _IOWR('T', 0x01, struct uti_import)
#define UTI_IOC_PFNS    _IOWR('T', 0x02, struct uti_pfns)
#define UTI_IOC_RELEASE _IOW('T', 0x03, __u32)
#define UTI_IOC_VMAP    _IOWR('T', 0x04, struct uti_import)
#define UTI_IOC_VREAD   _IOW('T', 0x05, struct uti_vread)

enum uti_kind { UTI_FREE, UTI_STATIC, UTI_DYNAMIC, UTI_VMAP };

struct uti_slot {
	enum uti_kind kind;
	struct dma_buf *dmabuf;
	struct dma_buf_attachment *attach;
	struct sg_table *sgt;       /* under the reservation lock for dynamic imports */
	struct iosys_map map;
	bool invalidated;           /* dynamic: under the reservation lock */
	u64 invalidations;
	u64 remaps;
};

struct uti_file {
	struct mutex lock;          /* the slots */
	struct uti_slot slots[UTI_MAX_IMPORTS];
};

static struct miscdevice uti_misc;

/* Called by the exporter with the reservation lock held. */
static void uti_invalidate(struct dma_buf_attachment *attach)
{
	struct uti_slot *slot = attach->importer_priv;

	dma_resv_assert_held(attach->dmabuf->resv);
	slot->invalidated = true;
	slot->invalidations++;
}

static const struct dma_buf_attach_ops uti_dynamic_ops = {
	.allow_peer2peer = false,
	.invalidate_mappings = uti_invalidate,
};

static void uti_release_slot(struct uti_slot *slot)
{
	switch (slot->kind) {
	case UTI_STATIC:
		dma_buf_unmap_attachment_unlocked(slot->attach, slot->sgt, DMA_BIDIRECTIONAL);
		dma_buf_detach(slot->dmabuf, slot->attach);
		break;
	case UTI_DYNAMIC:
		dma_resv_lock(slot->dmabuf->resv, NULL);
		if (slot->sgt)
			dma_buf_unmap_attachment(slot->attach, slot->sgt, DMA_BIDIRECTIONAL);
		dma_resv_unlock(slot->dmabuf->resv);
		dma_buf_detach(slot->dmabuf, slot->attach);
		break;
	case UTI_VMAP:
		dma_buf_vunmap_unlocked(slot->dmabuf, &slot->map);
		break;
	case UTI_FREE:
		return;
	}
	dma_buf_put(slot->dmabuf);
	memset(slot, 0, sizeof(*slot));
}

static struct uti_slot *uti_free_slot(struct uti_file *f, u32 *id)
{
	u32 i;

	for (i = 0; i < UTI_MAX_IMPORTS; i++) {
		if (f->slots[i].kind == UTI_FREE) {
			*id = i;
			return &f->slots[i];
		}
	}
	return NULL;
}

static struct uti_slot *uti_slot(struct uti_file *f, u32 id, enum uti_kind a, enum uti_kind b)
{
	if (id >= UTI_MAX_IMPORTS)
		return NULL;
	id = array_index_nospec(id, UTI_MAX_IMPORTS);
	if (f->slots[id].kind != a && f->slots[id].kind != b)
		return NULL;
	return &f->slots[id];
}

static long uti_import(struct uti_file *f, void __user *uarg)
{
	struct uti_import req;
	struct uti_slot *slot;
	struct dma_buf *dmabuf;
	long ret;

	if (copy_from_user(&req, uarg, sizeof(req)))
		return -EFAULT;
	if (req.flags & ~UTI_IMPORT_DYNAMIC)
		return -EINVAL;
	slot = uti_free_slot(f, &req.id);
	if (!slot)
		return -ENOSPC;
	dmabuf = dma_buf_get(req.fd);
	if (IS_ERR(dmabuf))
		return PTR_ERR(dmabuf);
	slot->dmabuf = dmabuf;
	if (req.flags & UTI_IMPORT_DYNAMIC) {
		slot->attach = dma_buf_dynamic_attach(dmabuf, uti_misc.this_device, &uti_dynamic_ops, slot);
		if (IS_ERR(slot->attach)) {
			ret = PTR_ERR(slot->attach);
			goto put;
		}
		dma_resv_lock(dmabuf->resv, NULL);
		slot->sgt = dma_buf_map_attachment(slot->attach, DMA_BIDIRECTIONAL);
		dma_resv_unlock(dmabuf->resv);
		slot->kind = UTI_DYNAMIC;
	} else {
		slot->attach = dma_buf_attach(dmabuf, uti_misc.this_device);
		if (IS_ERR(slot->attach)) {
			ret = PTR_ERR(slot->attach);
			goto put;
		}
		slot->sgt = dma_buf_map_attachment_unlocked(slot->attach, DMA_BIDIRECTIONAL);
		slot->kind = UTI_STATIC;
	}
	if (IS_ERR(slot->sgt)) {
		ret = PTR_ERR(slot->sgt);
		slot->sgt = NULL;
		dma_buf_detach(dmabuf, slot->attach);
		goto put;
	}
	if (copy_to_user(uarg, &req, sizeof(req))) {
		uti_release_slot(slot);
		return -EFAULT;
	}
	return 0;
put:
	dma_buf_put(dmabuf);
	memset(slot, 0, sizeof(*slot));
	return ret;
}

static long uti_vmap(struct uti_file *f, void __user *uarg)
{
	struct uti_import req;
	struct uti_slot *slot;
	struct dma_buf *dmabuf;
	int ret;

	if (copy_from_user(&req, uarg, sizeof(req)))
		return -EFAULT;
	slot = uti_free_slot(f, &req.id);
	if (!slot)
		return -ENOSPC;
	dmabuf = dma_buf_get(req.fd);
	if (IS_ERR(dmabuf))
		return PTR_ERR(dmabuf);
	ret = dma_buf_vmap_unlocked(dmabuf, &slot->map);
	if (ret) {
		dma_buf_put(dmabuf);
		return ret;
	}
	slot->dmabuf = dmabuf;
	slot->kind = UTI_VMAP;
	if (copy_to_user(uarg, &req, sizeof(req))) {
		uti_release_slot(slot);
		return -EFAULT;
	}
	return 0;
}

/* The PFNs behind the importer's DMA mapping, page by page. */
static long uti_pfns(struct uti_file *f, void __user *uarg)
{
	struct uti_pfns req;
	struct uti_slot *slot;
	struct scatterlist *sg;
	u64 *pfns, n = 0;
	long ret = 0;
	unsigned int i;

	if (copy_from_user(&req, uarg, sizeof(req)))
		return -EFAULT;
	slot = uti_slot(f, req.id, UTI_STATIC, UTI_DYNAMIC);
	if (!slot)
		return -ENOENT;
	if (req.count > slot->dmabuf->size >> PAGE_SHIFT)
		return -EINVAL;
	pfns = kvcalloc(req.count ?: 1, sizeof(u64), GFP_KERNEL);
	if (!pfns)
		return -ENOMEM;

	dma_resv_lock(slot->dmabuf->resv, NULL);
	if (slot->kind == UTI_DYNAMIC && (slot->invalidated || !slot->sgt)) {
		if (slot->sgt)
			dma_buf_unmap_attachment(slot->attach, slot->sgt, DMA_BIDIRECTIONAL);
		slot->sgt = dma_buf_map_attachment(slot->attach, DMA_BIDIRECTIONAL);
		if (IS_ERR(slot->sgt)) {
			ret = PTR_ERR(slot->sgt);
			slot->sgt = NULL;
			goto unlock;
		}
		slot->invalidated = false;
		slot->remaps++;
	}
	for_each_sgtable_dma_sg(slot->sgt, sg, i) {
		dma_addr_t addr = sg_dma_address(sg);
		unsigned int len = sg_dma_len(sg), off;

		for (off = 0; off < len && n < req.count; off += PAGE_SIZE)
			pfns[n++] = (addr + off) >> PAGE_SHIFT;
	}
	req.invalidations = slot->invalidations;
	req.remaps = slot->remaps;
unlock:
	dma_resv_unlock(slot->dmabuf->resv);
	if (!ret && n != req.count)
		ret = -EIO;
	if (!ret && copy_to_user(u64_to_user_ptr(req.pfns), pfns, req.count * sizeof(u64)))
		ret = -EFAULT;
	if (!ret && copy_to_user(uarg, &req, sizeof(req)))
		ret = -EFAULT;
	kvfree(pfns);
	return ret;
}

static long uti_vread(struct uti_file *f, void __user *uarg)
{
	struct uti_vread req;
	struct uti_slot *slot;

	if (copy_from_user(&req, uarg, sizeof(req)))
		return -EFAULT;
	slot = uti_slot(f, req.id, UTI_VMAP, UTI_VMAP);
	if (!slot)
		return -ENOENT;
	if (req.offset > slot->dmabuf->size || req.len > slot->dmabuf->size - req.offset)
		return -EINVAL;
	if (slot->map.is_iomem)
		return -EOPNOTSUPP;
	if (copy_to_user(u64_to_user_ptr(req.buf), slot->map.vaddr + req.offset, req.len))
		return -EFAULT;
	return 0;
}

static long uti_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct uti_file *f = file->private_data;
	void __user *uarg = (void __user *)arg;
	struct uti_slot *slot;
	long ret;
	u32 id;

	mutex_lock(&f->lock);
	switch (cmd) {
	case UTI_IOC_IMPORT:
		ret = uti_import(f, uarg);
		break;
	case UTI_IOC_PFNS:
		ret = uti_pfns(f, uarg);
		break;
	case UTI_IOC_VMAP:
		ret = uti_vmap(f, uarg);
		break;
	case UTI_IOC_VREAD:
		ret = uti_vread(f, uarg);
		break;
	case UTI_IOC_RELEASE:
		ret = -EFAULT;
		if (copy_from_user(&id, uarg, sizeof(id)))
			break;
		ret = -ENOENT;
		slot = uti_slot(f, id, UTI_STATIC, UTI_DYNAMIC);
		if (!slot)
			slot = uti_slot(f, id, UTI_VMAP, UTI_VMAP);
		if (!slot)
			break;
		uti_release_slot(slot);
		ret = 0;
		break;
	default:
		ret = -ENOTTY;
	}
	mutex_unlock(&f->lock);
	return ret;
}

static int uti_open(struct inode *inode, struct file *file)
{
	struct uti_file *f = kzalloc(sizeof(*f), GFP_KERNEL);

	if (!f)
		return -ENOMEM;
	mutex_init(&f->lock);
	file->private_data = f;
	return 0;
}

static int uti_release(struct inode *inode, struct file *file)
{
	struct uti_file *f = file->private_data;
	int i;

	for (i = 0; i < UTI_MAX_IMPORTS; i++)
		uti_release_slot(&f->slots[i]);
	mutex_destroy(&f->lock);
	kfree(f);
	return 0;
}

static const struct file_operations uti_fops = {
	.owner = THIS_MODULE,
	.open = uti_open,
	.release = uti_release,
	.unlocked_ioctl = uti_ioctl,
};

static struct miscdevice uti_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "ulive-test-importer",
	.fops = &uti_fops,
};

static int __init uti_init(void)
{
	int ret = misc_register(&uti_misc);

	if (ret)
		return ret;
	/* The exporter DMA-maps for this device: give it a mask, as a real device has. */
	ret = dma_coerce_mask_and_coherent(uti_misc.this_device, DMA_BIT_MASK(64));
	if (ret)
		misc_deregister(&uti_misc);
	return ret;
}

static void __exit uti_exit(void)
{
	misc_deregister(&uti_misc);
}

module_init(uti_init);
module_exit(uti_exit);
MODULE_DESCRIPTION("dma-buf importer for the udmabuf-live guest tests (static, dynamic, vmap)");
MODULE_LICENSE("GPL");
MODULE_IMPORT_NS("DMA_BUF");
