// SPDX-License-Identifier: GPL-2.0
//! udmabuf-live: a drop-in replacement for udmabuf whose dma-bufs follow their memfd.
//!
//! Data flow:
//! - `device.rs`: an ioctl on /dev/udmabuf-live is copied in and checked;
//! - `buffer.rs`: the memfd ranges are checked, pinned and exported as a dma-buf;
//! - `exporter.rs`: the dma-buf ops (importers, CPU mmap, vmap) read the pinned pages.
//!
//! `sys/` is the only unsafe code: thin wrappers over the C APIs (memfd and folios,
//! sg tables, dma-buf, CPU mappings). `ffi.rs` declares the C glue in `ulive_helpers.c`.
//!
//! Lock order (outermost first):
//! 1. memfd inode lock (`i_rwsem`, shared)        - create (seal check and pinning)
//! 2. mmap_lock of the faulting process           - CPU faults on a dma-buf mmap
//! 3. dma-buf reservation lock (`dmabuf->resv`)   - map/unmap, pin/unpin, vmap/vunmap
//! 4. `Buffer::state` ("udmabuf_live_buffer_state")
//!
//! Nothing is copied from or to user memory while `Buffer::state` is held.

use kernel::prelude::*;
use sys::miscdev::MiscRegistration;

mod buffer;
mod device;
mod exporter;
mod ffi;
mod inspect;
mod notifier;
mod sys;
mod worker;
#[path = "../uapi/src/abi.rs"]
#[allow(dead_code, unreachable_pub)]
mod uapi;

module! {
    type: UdmabufLive,
    name: "udmabuf_live",
    authors: ["udmabuf-live developers"],
    description: "udmabuf with live updates: dma-bufs that stay coherent with their memfd",
    license: "GPL",
    imports_ns: ["DMA_BUF"],
}

#[pin_data]
struct UdmabufLive {
    #[pin]
    _miscdev: MiscRegistration<device::UliveDevice>,
}

impl kernel::InPlaceModule for UdmabufLive {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        pr_info!(
            "udmabuf-live loaded (size_limit_mb={}, list_limit={})\n",
            ffi::size_limit_mb(),
            ffi::list_limit()
        );
        try_pin_init!(Self {
            _miscdev <- MiscRegistration::register(
                c"udmabuf-live",
                device::UliveDevice { queue: sys::wq::OwnedQueue::new(c"udmabuf_live")? },
            ),
        })
    }
}
