// SPDX-License-Identifier: GPL-2.0
/*
 * udmabuf-live C glue, parameters: the module parameters (module_param with sysfs
 * permissions, which Rust cannot declare) and their readers for kmod/sys/params.rs.
 */
#include <linux/atomic.h>
#include <linux/delay.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/string.h>
#include <linux/sysfs.h>
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

static int test_fail_swaps;
module_param(test_fail_swaps, int, 0600);
MODULE_PARM_DESC(test_fail_swaps,
		 "Test hook: fail this many page swaps with ENOMEM after the new pages were pinned. Default 0.");

void ulive_test_delay(void)
{
	uint ms = READ_ONCE(test_delay_ms);

	if (unlikely(ms))
		msleep(ms);
}

/* Takes one of the failures asked for, if any are left (a race with a write from sysfs
 * loses one side's count at worst, which a test hook may). */
bool ulive_test_fail_swap(void)
{
	int n = READ_ONCE(test_fail_swaps);

	while (unlikely(n > 0))
		if (try_cmpxchg(&test_fail_swaps, &n, n - 1))
			return true;
	return false;
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
