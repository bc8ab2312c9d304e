// SPDX-License-Identifier: GPL-2.0
//! One open file of `/dev/ulive-importer`: at most one attachment, its mapping, its vmap
//! and its counters, driven by the ioctls of `abi/src/abi.rs`.
//!
//! `ImporterFile::attached` ("ulive_importer_file") serialises the ioctls of a file and
//! is taken before the reservation lock. The invalidate callback runs under the
//! reservation lock and touches only the atomics of [`Invalidations`]. Nothing is
//! copied to or from user memory while either lock is held.

use crate::abi::*;
use crate::sys::{
    dmabuf::{Attachment, DmaBufRef, InvalidateNotify, Locked},
    miscdev::{Misc, MiscDevice},
    PAGE_SIZE,
};
use kernel::{
    device::Device,
    new_mutex,
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{Atomic, Relaxed},
        Mutex,
    },
    time::{Instant, Monotonic},
    uaccess::{UserPtr, UserSlice},
};

/// What the exporter's `invalidate_mappings` updates. Both fields are written and, for
/// the decisions that matter (remap or not), read with the reservation lock held.
pub(crate) struct Invalidations {
    count: Atomic<u64>,
    /// The current mapping (if any) was invalidated and must be replaced before use.
    stale: Atomic<bool>,
}

impl InvalidateNotify for Invalidations {
    fn invalidate_mappings(&self) {
        // Under the reservation lock: count and mark, nothing else (no sleep, no alloc).
        // The mapping itself is dropped by the next MAP or READ.
        self.count.add(1, Relaxed);
        self.stale.store(true, Relaxed);
    }
}

#[derive(Default)]
struct Counters {
    maps: u64,
    remaps: u64,
}

struct Attached {
    att: Attachment<Invalidations>,
    counters: Counters,
}

/// Replace the mapping (if any) with a new one. Returns the duration of the
/// `dma_buf_map_attachment` call alone, in nanoseconds.
fn map_fresh(locked: &mut Locked<'_, Invalidations>, counters: &mut Counters) -> Result<u64> {
    let replaces_stale = locked.mapping().is_some() && locked.notify().stale.load(Relaxed);
    locked.unmap();
    // Cleared before mapping: an invalidation during the map marks the new mapping stale.
    locked.notify().stale.store(false, Relaxed);
    let start = Instant::<Monotonic>::now();
    locked.map()?;
    let map_ns = start.elapsed().as_nanos();
    counters.maps += 1;
    if replaces_stale {
        counters.remaps += 1;
    }
    Ok(u64::try_from(map_ns).unwrap_or(0))
}

/// Map if there is no mapping or it was invalidated (what READ and PFNS use).
fn map_if_needed(locked: &mut Locked<'_, Invalidations>, counters: &mut Counters) -> Result {
    if locked.mapping().is_none() || locked.notify().stale.load(Relaxed) {
        map_fresh(locked, counters)?;
    }
    Ok(())
}

/// The part of a READ/VREAD request the buffer can serve: (offset, length), cut at the end
/// of the buffer and at `IMPORTER_READ_MAX`; EINVAL if it starts past the end.
fn read_range(req: &ImporterRead, size: usize) -> Result<(usize, usize)> {
    let size = size as u64;
    if req.offset > size {
        return Err(EINVAL);
    }
    // Both bounded by the buffer size, a usize.
    Ok((
        req.offset as usize,
        req.len.min(size - req.offset).min(IMPORTER_READ_MAX) as usize,
    ))
}

/// The device `/dev/ulive-importer`; each open file has an [`ImporterFile`].
pub(crate) struct Importer;

impl MiscDevice for Importer {
    type File = Pin<KBox<ImporterFile>>;

    fn registered(dev: &Device) -> Result {
        crate::sys::device::set_up_dma(dev)
    }

    fn open(&self, misc: &Misc) -> Result<Self::File> {
        KBox::pin_init(ImporterFile::new(misc.device()?), GFP_KERNEL)
    }

    fn ioctl(&self, file: Pin<&ImporterFile>, _misc: &Misc, cmd: u32, arg: usize) -> Result<isize> {
        ImporterFile::ioctl(file, cmd, arg)
    }
}

#[pin_data]
pub(crate) struct ImporterFile {
    /// The importer's device (64-bit DMA mask), which it attaches to dma-bufs.
    dev: ARef<Device>,
    #[pin]
    attached: Mutex<Option<Attached>>,
}

impl ImporterFile {
    fn new(dev: ARef<Device>) -> impl PinInit<Self, Error> {
        try_pin_init!(Self { dev, attached <- new_mutex!(None, "ulive_importer_file") })
    }

    fn ioctl(this: Pin<&Self>, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            IMPORTER_ATTACH => this.attach(arg),
            IMPORTER_MAP => this.map(arg),
            IMPORTER_READ => this.read(arg),
            IMPORTER_STATS => this.stats(arg),
            IMPORTER_DETACH => this.detach(),
            IMPORTER_PFNS => this.pfns(arg),
            IMPORTER_VMAP => this.vmap(),
            IMPORTER_VUNMAP => this.vunmap(),
            IMPORTER_VREAD => this.vread(arg),
            _ => Err(ENOTTY),
        }
    }
}

impl ImporterFile {
    fn attach(&self, arg: usize) -> Result<isize> {
        let req: ImporterAttach =
            UserSlice::new(UserPtr::from_addr(arg), size_of::<ImporterAttach>())
                .reader()
                .read()?;
        let dynamic = match req.dynamic {
            0 => false,
            1 => true,
            _ => return Err(EINVAL),
        };
        let mut attached = self.attached.lock();
        if attached.is_some() {
            return Err(EBUSY);
        }
        let buf = DmaBufRef::get(req.dmabuf_fd)?;
        let notify = KBox::pin(
            Invalidations {
                count: Atomic::new(0),
                stale: Atomic::new(false),
            },
            GFP_KERNEL,
        )?;
        let att = Attachment::new(buf, self.dev.clone(), notify, dynamic)?;
        *attached = Some(Attached {
            att,
            counters: Counters::default(),
        });
        Ok(0)
    }

    fn map(&self, arg: usize) -> Result<isize> {
        let result = {
            let mut attached = self.attached.lock();
            let a = Option::as_mut(&mut *attached).ok_or(ENXIO)?;
            let mut locked = a.att.lock()?;
            let map_ns = map_fresh(&mut locked, &mut a.counters)?;
            let m = locked.mapping().ok_or(EINVAL)?;
            ImporterMap {
                nents: m.dma_segments(),
                orig_nents: m.cpu_segments(),
                bytes: m.dma_bytes(),
                map_ns,
            }
        };
        UserSlice::new(UserPtr::from_addr(arg), size_of::<ImporterMap>())
            .writer()
            .write(&result)?;
        Ok(0)
    }

    fn read(&self, arg: usize) -> Result<isize> {
        let req: ImporterRead = UserSlice::new(UserPtr::from_addr(arg), size_of::<ImporterRead>())
            .reader()
            .read()?;
        let user_ptr = usize::try_from(req.user_ptr).map_err(|_| EFAULT)?;
        let bounce = {
            let mut attached = self.attached.lock();
            let a = Option::as_mut(&mut *attached).ok_or(ENXIO)?;
            let (offset, len) = read_range(&req, a.att.size())?;
            // Allocated before the reservation lock is taken.
            let mut bounce = KVVec::from_elem(0u8, len, GFP_KERNEL)?;
            let mut locked = a.att.lock()?;
            map_if_needed(&mut locked, &mut a.counters)?;
            let m = locked.mapping().ok_or(EINVAL)?;
            m.sync_for_cpu();
            m.read(offset, &mut bounce)?;
            bounce
        };
        // Both locks are dropped: copy out (this may fault and take mmap_lock).
        UserSlice::new(UserPtr::from_addr(user_ptr), bounce.len())
            .writer()
            .write_slice(&bounce)?;
        Ok(bounce.len() as isize)
    }

    fn stats(&self, arg: usize) -> Result<isize> {
        let stats = match self.attached.lock().as_ref() {
            None => ImporterStats::default(),
            Some(Attached { att, counters }) => {
                let mapped = att.is_mapped();
                ImporterStats {
                    invalidations: att.notify().count.load(Relaxed),
                    maps: counters.maps,
                    remaps: counters.remaps,
                    size: att.size() as u64,
                    attached: 1,
                    mapped: u32::from(mapped),
                    stale: u32::from(mapped && att.notify().stale.load(Relaxed)),
                    dynamic: u32::from(att.is_dynamic()),
                    vmapped: u32::from(att.is_vmapped()),
                    reserved: 0,
                }
            }
        };
        UserSlice::new(UserPtr::from_addr(arg), size_of::<ImporterStats>())
            .writer()
            .write(&stats)?;
        Ok(0)
    }

    fn detach(&self) -> Result<isize> {
        let old = self.attached.lock().take().ok_or(ENXIO)?;
        // Vunmap and unmap (under the reservation lock), detach and put, outside the
        // file's mutex.
        drop(old);
        Ok(0)
    }

    fn pfns(&self, arg: usize) -> Result<isize> {
        let req: ImporterPfns = UserSlice::new(UserPtr::from_addr(arg), size_of::<ImporterPfns>())
            .reader()
            .read()?;
        let flags = req.flags;
        if !matches!(flags, 0 | IMPORTER_PFNS_DMA | IMPORTER_PFNS_PINNED) {
            return Err(EINVAL);
        }
        if req.reserved != 0 {
            return Err(EINVAL);
        }
        let user_ptr = usize::try_from(req.user_ptr).map_err(|_| EFAULT)?;
        let pfns = {
            let mut attached = self.attached.lock();
            let a = Option::as_mut(&mut *attached).ok_or(ENXIO)?;
            let pages = a.att.size().div_ceil(PAGE_SIZE) as u64;
            if req.first_page > pages {
                return Err(EINVAL);
            }
            // Both bounded by the page count, a usize.
            let first = req.first_page as usize;
            let count = req.count.min(pages - req.first_page).min(IMPORTER_PFNS_MAX) as usize;
            // Allocated before the reservation lock is taken.
            let mut pfns = KVVec::from_elem(0u64, count, GFP_KERNEL)?;
            let mut locked = a.att.lock()?;
            if flags == IMPORTER_PFNS_PINNED {
                // The mapping as it is: an invalidated one is what this asks about.
                locked
                    .mapping()
                    .ok_or(ENXIO)?
                    .pages_pinned(first, &mut pfns)?;
                pfns
            } else {
                map_if_needed(&mut locked, &mut a.counters)?;
                let m = locked.mapping().ok_or(EINVAL)?;
                if flags == IMPORTER_PFNS_DMA {
                    m.dma_pfns(first, &mut pfns)?;
                } else {
                    m.page_pfns(first, &mut pfns)?;
                }
                pfns
            }
        };
        // Both locks are dropped: copy out.
        let bytes = pfns.as_bytes();
        UserSlice::new(UserPtr::from_addr(user_ptr), bytes.len())
            .writer()
            .write_slice(bytes)?;
        Ok(pfns.len() as isize)
    }

    fn vmap(&self) -> Result<isize> {
        let mut attached = self.attached.lock();
        let a = Option::as_mut(&mut *attached).ok_or(ENXIO)?;
        a.att.lock()?.vmap()?;
        Ok(0)
    }

    fn vunmap(&self) -> Result<isize> {
        let mut attached = self.attached.lock();
        let a = Option::as_mut(&mut *attached).ok_or(ENXIO)?;
        if !a.att.is_vmapped() {
            return Err(ENXIO);
        }
        a.att.lock()?.vunmap();
        Ok(0)
    }

    fn vread(&self, arg: usize) -> Result<isize> {
        let req: ImporterRead = UserSlice::new(UserPtr::from_addr(arg), size_of::<ImporterRead>())
            .reader()
            .read()?;
        let user_ptr = usize::try_from(req.user_ptr).map_err(|_| EFAULT)?;
        let bounce = {
            let attached = self.attached.lock();
            let a = Option::as_ref(&*attached).ok_or(ENXIO)?;
            if !a.att.is_vmapped() {
                return Err(ENXIO);
            }
            let (offset, len) = read_range(&req, a.att.size())?;
            let mut bounce = KVVec::from_elem(0u8, len, GFP_KERNEL)?;
            // The file's mutex keeps the vmap (VUNMAP and DETACH take it).
            a.att.vmap_read(offset, &mut bounce)?;
            bounce
        };
        // The file's mutex is dropped: copy out.
        UserSlice::new(UserPtr::from_addr(user_ptr), bounce.len())
            .writer()
            .write_slice(&bounce)?;
        Ok(bounce.len() as isize)
    }
}
