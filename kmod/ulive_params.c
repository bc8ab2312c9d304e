// SPDX-License-Identifier: GPL-2.0
/*
 * udmabuf-live C glue, parameters: the module parameters (module_param with sysfs
 * permissions, which Rust cannot declare) and their readers for kmod/sys/params.rs.
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

/* Same names, types, defaults and permissions as upstream drivers/dma-buf/udmabuf.c. */
static int size_limit_mb = 64;
module_param(size_limit_mb, int, 0644);
MODULE_PARM_DESC(size_limit_mb, "Max size of a dmabuf, in megabytes. Default is 64.");

static int list_limit = 1024;
module_param(list_limit, int, 0644);
MODULE_PARM_DESC(list_limit, "udmabuf_create_list->count limit. Default is 1024.");

/*
 * udmabuf-live's own. Upstream lets any user of the device pin without limit, so off by
 * default: a drop-in must not refuse what upstream allows (a VMM's guest RAM is far
 * above the default 8 MiB RLIMIT_MEMLOCK).
 */
static bool account_memlock;
module_param(account_memlock, bool, 0644);
MODULE_PARM_DESC(account_memlock,
		 "Charge every page a buffer pins to its creator's user (locked_vm, RLIMIT_MEMLOCK), as io_uring does. Default is off, as upstream.");

/*
 * What the worker does with a page the memfd no longer has: "lazy" (the default) lets
 * it go and leaves the buffer's page unpopulated until something needs it, so that a
 * hole punched to give memory back (a VMM's balloon) stays a hole; "eager" allocates a
 * new page for it at once, so importers always find every page present.
 */
static int repopulate = 1; /* 0: eager, 1: lazy */
static const char *const repopulate_names[] = { "eager", "lazy" };

static int repopulate_set(const char *val, const struct kernel_param *kp)
{
	int i = sysfs_match_string(repopulate_names, val);

	if (i < 0)
		return -EINVAL;
	WRITE_ONCE(repopulate, i);
	return 0;
}

static int repopulate_get(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%s\n", repopulate_names[READ_ONCE(repopulate)]);
}

static const struct kernel_param_ops repopulate_ops = {
	.set = repopulate_set,
	.get = repopulate_get,
};
module_param_cb(repopulate, &repopulate_ops, NULL, 0644);
MODULE_PARM_DESC(repopulate,
		 "Pages the memfd lost: \"lazy\" (default) populates them when something next needs them, \"eager\" at once.");

int ulive_param_repopulate(void)
{
	return READ_ONCE(repopulate);
}

/*
 * Test hooks, for the guest tests that must hit a race or an error path every time
 * rather than once in thousands of runs. Root only (0600); 0 (the default) is off.
 */
static uint test_delay_ms;
module_param(test_delay_ms, uint, 0600);
MODULE_PARM_DESC(test_delay_ms,
		 "Test hook: sleep this long in the windows the races tests widen (CREATE between finding and watching mappings; an update between taking its marks and installing its pages). Default 0.");

static atomic_t test_fail_swaps = ATOMIC_INIT(0);
static int test_fail_swaps_set(const char *val, const struct kernel_param *kp)
{
	int n, err = kstrtoint(val, 0, &n);

	if (err)
		return err;
	atomic_set(&test_fail_swaps, n);
	return 0;
}

static int test_fail_swaps_get(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%d\n", atomic_read(&test_fail_swaps));
}

static const struct kernel_param_ops test_fail_swaps_ops = {
	.set = test_fail_swaps_set,
	.get = test_fail_swaps_get,
};
module_param_cb(test_fail_swaps, &test_fail_swaps_ops, NULL, 0600);
MODULE_PARM_DESC(test_fail_swaps,
		 "Test hook: fail this many page swaps with ENOMEM after the new pages were pinned. Default 0.");

void ulive_test_delay(void)
{
	uint ms = READ_ONCE(test_delay_ms);

	if (unlikely(ms))
		msleep(ms);
}

bool ulive_test_fail_swap(void)
{
	return unlikely(atomic_read(&test_fail_swaps) > 0) &&
	       atomic_dec_if_positive(&test_fail_swaps) >= 0;
}

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
