// SPDX-License-Identifier: GPL-2.0
//! udmabuf-live: a drop-in replacement for udmabuf whose dma-bufs follow their memfd.
//!
//! Data flows:
//! - ioctl -> buffer -> exporter ops: `ioctl.rs` copies an ioctl on /dev/udmabuf-live
//!   in and checks it; `buffer.rs` checks the memfd ranges, pins them and exports a
//!   dma-buf; `exporter.rs` answers the dma-buf core (importers, CPU mmap, vmap) from
//!   the pinned pages.
//! - notifier -> worker -> importers: `watchers.rs` puts an mmu interval notifier on
//!   every mapping of the memfd ranges, in every process; `notifier.rs` marks the pages
//!   a punch invalidates and queues the buffer's work; `worker.rs` compares them with
//!   the memfd after the truncation, swaps in what changed and tells the importers.
//!
//! Layers: the driver logic above is safe Rust (every module but `sys` denies
//! `unsafe_code`); `sys/` is the one unsafe layer, thin safe wrappers over the kernel's
//! C APIs, as rust/kernel is for nova-core. Beneath it, the C glue, by kind:
//! `ulive_params.c` (module parameters: `module_param` with sysfs permissions),
//! `ulive_shims.c` (one-line calls of inline functions and macros) and `ulive_mm.c`. The
//! driver logic that lives in C is in `ulive_mm.c` only, because it walks structures
//! whose iterators are inline or unexported: the memfd's page cache (`ulive_memfd_diff`,
//! `ulive_memfd_holds_page`), a file's i_mmap tree (`ulive_find_mappings`), folio pins
//! (`ulive_folios_take_pages`, the unpinners, `ulive_memfd_settle`), page tables
//! (`ulive_vma_addr_mapped`) and `user_struct` counters (the memlock charge).
//!
//! The repopulation policy (module parameter `repopulate`): under `lazy` (the default)
//! the worker lets a punched page go and leaves its slot unpopulated, so a balloon's
//! punch really returns memory; `populate` (worker.rs) brings the memfd's page in when
//! something needs it (a map, the first pin, vmap, CPU access, SYNC, or a CPU fault on
//! that page). Under `eager` the worker brings every page in at once.
//!
//! Lock order (outermost first):
//! 0. `Buffer::slot` ("udmabuf_live_dmabuf_slot") - worker, SYNC, CPU access
//! 1. memfd inode lock (`i_rwsem`, shared)        - create, worker (seal check, pinning)
//! 2. mmap_lock of the faulting process           - CPU faults on a dma-buf mmap
//! 3. dma-buf reservation lock (`dmabuf->resv`)   - map/unmap, pin/unpin, vmap/vunmap
//! 4. `Buffer::state` ("udmabuf_live_buffer_state")
//! 5. `Tracker::inner` ("udmabuf_live_dirty", spinlock; also taken in the mmu notifier
//!    callback, under the core's invalidation locks)
//!
//! `Buffer::notifiers` ("udmabuf_live_notifiers") is taken on its own, never under a
//! lock above: registering a notifier (CREATE, a re-arm in SYNC, INFO or the worker)
//! may take the mmap_lock of the watched process. A map or a CPU fault, which hold
//! locks ranking before it, ask the worker to re-arm instead.
//!
//! The lazy checks under 3 (map_dma_buf, first pin, first vmap) need 1 too: they only
//! *try* it (`inode_trylock_shared`), and leave the work to the worker if it is taken, so
//! 3 never waits for 1. `begin_cpu_access` takes 1 as the worker does; the kernel orders
//! i_rwsem before mmap_lock (mm/filemap.c), and 7.2's in-kernel callers of
//! dma_buf_begin_cpu_access hold neither. Waits under the slot lock are bounded: the
//! fence wait of an update gives up after a timeout and keeps the old pages instead.
//!
//! Pinning may also wait for a folio's lock (`ulive_memfd_settle`, for a folio shmem is
//! still setting up) under 1 (create, worker), 2 (a CPU fault populating its page) or 3
//! (the lazy check and `populate` in map_dma_buf); no lock of ours is taken under a
//! folio lock. CREATE finds the memfd's mappings (its
//! `i_mmap_rwsem`) and registers the notifiers (the first one of a process takes the
//! mmap_lock) before it takes any inode lock: hugetlbfs takes its inode lock under the
//! mmap_lock in mmap, and i_mmap_rwsem ranks below both.
//!
//! Nothing is copied from or to user memory while `Buffer::state` is held.

use kernel::{debugfs, prelude::*, sync::Arc};
use sys::{miscdev::MiscRegistration, params};

// The driver logic is safe Rust: only `sys/` may use `unsafe`. The KUnit tests
// (`#[kunit_tests]` modules in these files, compiled in on CONFIG_KUNIT=y kernels) stay
// under the deny too: the unsafe glue the macro generates (the C entry point of each case
// and the suite table) comes from an external macro, which rustc does not report, while
// `unsafe` written in a test is refused like any other (tried: a planted `unsafe` block
// in a test fails the build with "usage of an `unsafe` block").
#[deny(unsafe_code)]
mod buffer;
#[deny(unsafe_code)]
mod dirty;
#[deny(unsafe_code)]
mod exporter;
#[deny(unsafe_code)]
mod inspect;
#[deny(unsafe_code)]
mod ioctl;
#[deny(unsafe_code)]
mod notifier;
#[deny(unsafe_code)]
mod one_or_many;
#[deny(unsafe_code)]
mod registry;
mod sys;
#[path = "../uapi/src/abi.rs"]
#[allow(dead_code, unreachable_pub)]
mod uapi;
#[deny(unsafe_code)]
mod watchers;
#[deny(unsafe_code)]
mod worker;

module! {
    type: UdmabufLive,
    name: "udmabuf_live",
    authors: ["udmabuf-live developers"],
    description: "udmabuf with live updates: dma-bufs that stay coherent with their memfd",
    license: "GPL",
    imports_ns: ["DMA_BUF"],
}

/// The module: the device (which owns the workqueue) and the debugfs view. Fields drop
/// in order: the device goes first, so no buffer is created while the rest goes.
struct UdmabufLive {
    _miscdev: Pin<KBox<MiscRegistration<ioctl::UliveDevice>>>,
    _buffers_file: Pin<KBox<debugfs::File<registry::BufferList>>>,
    _debugfs: debugfs::Dir,
}

impl kernel::Module for UdmabufLive {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let registry = Arc::pin_init(registry::Registry::new(), GFP_KERNEL)?;
        let dir = debugfs::Dir::new(c"udmabuf_live");
        let buffers_file = KBox::pin_init(
            dir.read_only_file(
                c"buffers",
                Ok::<_, Error>(registry::BufferList(registry.clone())),
            ),
            GFP_KERNEL,
        )?;
        let device = ioctl::UliveDevice {
            queue: sys::wq::OwnedQueue::new(c"udmabuf_live")?,
            registry,
        };
        let miscdev = KBox::pin_init(
            MiscRegistration::register(c"udmabuf-live", device, module),
            GFP_KERNEL,
        )?;
        pr_info!(
            "loaded (size_limit_mb={}, list_limit={}, repopulate={})\n",
            params::size_limit_bytes() >> 20,
            params::list_limit(),
            params::repopulate().name()
        );
        Ok(Self {
            _miscdev: miscdev,
            _buffers_file: buffers_file,
            _debugfs: dir,
        })
    }
}
