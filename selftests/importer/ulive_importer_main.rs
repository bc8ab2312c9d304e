// SPDX-License-Identifier: GPL-2.0
//! ulive_importer: a TEST dma-buf importer for the udmabuf-live selftests and benchmark.
//! It takes any dma-buf fd (udmabuf-live's or the kernel's udmabuf), attaches its own
//! misc device to it statically or dynamically, maps it as a device driver would (and
//! vmaps it, as a driver that reads its imports with the CPU does), and reports what it
//! sees: segment counts, map latency, the bytes and the page frames behind the mapping,
//! the bytes behind the vmap, and the invalidations it received. The ABI is
//! `abi/src/abi.rs` (the crate `ulive-importer-abi`, which the tests use).
//!
//! Data flow: `sys/miscdev.rs` (the module's `kmod/sys/miscdev.rs`, compiled here too)
//! opens `/dev/ulive-importer` and dispatches ioctls to `importer.rs`, which attaches,
//! maps and reads through `sys/dmabuf.rs`.
//!
//! `sys/` is the only unsafe code; `ffi.rs` declares the C glue in `ulimp_helpers.c`.
//!
//! Lock order (outermost first):
//! 1. `ImporterFile::attached` ("ulive_importer_file") - every ioctl of one open file
//! 2. dma-buf reservation lock (`dmabuf->resv`)       - map, unmap, vmap, vunmap,
//!    invalidate callback
//!
//! The invalidate callback takes no lock. User memory is only copied with neither lock
//! held (the reservation lock nests inside mmap_lock).

use kernel::prelude::*;
use sys::miscdev::MiscRegistration;

mod ffi;
mod importer;
mod sys;

#[path = "../../uapi/src/abi.rs"]
#[allow(dead_code, unreachable_pub)]
mod udmabuf_abi;
// `abi` (below) reaches the _IOC helpers of `udmabuf_abi` through `super::`.
use udmabuf_abi::{io, ior, iow};
#[path = "abi/src/abi.rs"]
#[allow(dead_code, unreachable_pub)]
mod abi;

module! {
    type: UliveImporter,
    name: "ulive_importer",
    authors: ["udmabuf-live developers"],
    description: "Test dma-buf importer for the udmabuf-live selftests (not for production)",
    license: "GPL",
    imports_ns: ["DMA_BUF"],
}

#[pin_data]
struct UliveImporter {
    #[pin]
    _misc: MiscRegistration<importer::Importer>,
}

impl kernel::InPlaceModule for UliveImporter {
    fn init(module: &'static ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            _misc <- MiscRegistration::register(c"ulive-importer", importer::Importer, module)
        })
    }
}
