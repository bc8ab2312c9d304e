// SPDX-License-Identifier: GPL-2.0
/*
 * udmabuf-live C glue: everything the Rust side needs that bindgen cannot reach
 * (static inline functions, macros, module_param with sysfs permissions).
 * Every symbol carries the ulive_ prefix; kmod/ffi.rs declares them for Rust.
 */
#include <linux/moduleparam.h>

/* Same names, types, defaults and permissions as upstream drivers/dma-buf/udmabuf.c. */
static int size_limit_mb = 64;
module_param(size_limit_mb, int, 0644);
MODULE_PARM_DESC(size_limit_mb, "Max size of a dmabuf, in megabytes. Default is 64.");

static int list_limit = 1024;
module_param(list_limit, int, 0644);
MODULE_PARM_DESC(list_limit, "udmabuf_create_list->count limit. Default is 1024.");

int ulive_param_size_limit_mb(void)
{
	return READ_ONCE(size_limit_mb);
}

int ulive_param_list_limit(void)
{
	return READ_ONCE(list_limit);
}
