// SPDX-License-Identifier: GPL-2.0
//! udmabuf-live: a drop-in replacement for udmabuf whose dma-bufs follow their memfd.
//!
//! Data flow:
//! - `device.rs`: ioctl on /dev/udmabuf-live -> buffer -> exporter ops.
//!
//! `ffi.rs` declares the C glue in `ulive_helpers.c` (module parameters and inline helpers).

use kernel::{miscdevice::{MiscDeviceOptions, MiscDeviceRegistration}, prelude::*};

mod device;
mod ffi;
#[path = "../uapi/src/abi.rs"]
#[allow(dead_code)]
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
    _miscdev: MiscDeviceRegistration<device::UliveDevice>,
}

impl kernel::InPlaceModule for UdmabufLive {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        pr_info!(
            "udmabuf-live loaded (size_limit_mb={}, list_limit={})\n",
            ffi::size_limit_mb(),
            ffi::list_limit()
        );
        try_pin_init!(Self {
            _miscdev <- MiscDeviceRegistration::register(MiscDeviceOptions { name: c"udmabuf-live" }),
        })
    }
}
