// SPDX-License-Identifier: GPL-2.0
//! The ioctls of the `/dev/udmabuf-live` misc device: where the data flow starts. An
//! ioctl is copied in and checked here, then `buffer::create` pins and exports, or the
//! buffer answers INFO, SYNC, VERIFY and PFNS.

use crate::buffer::{self, Buffer};

use crate::registry::Registry;
use crate::sys::{
    dmabuf::DmaBufRef,
    miscdev::{Misc, MiscDevice},
    params,
    wq::OwnedQueue,
};
use crate::uapi::{
    self, UdmabufCreate, UdmabufCreateItem, UdmabufCreateList, UdmabufLiveInfo, UdmabufLivePfns,
    UdmabufLiveSync, UdmabufLiveVerify,
};
use kernel::{
    prelude::*,
    sync::Arc,
    uaccess::{UserPtr, UserSlice},
};

/// The device's ioctl handler. Buffers outlive the fd that created them (their dma-buf
/// owns them), so there is no per-open state; the workqueue for live updates is the
/// module's and outlives every buffer.
pub(crate) struct UliveDevice {
    pub(crate) queue: OwnedQueue,
    pub(crate) registry: Arc<Registry>,
}

impl MiscDevice for UliveDevice {
    /// Open files share the device: nothing is kept per file.
    type File = ();

    fn registered(dev: &kernel::device::Device) -> Result {
        crate::sys::device::set_dma_mask_64(dev)
    }

    fn open(&self, _misc: &Misc) -> Result {
        Ok(())
    }

    fn ioctl(&self, _file: (), misc: &Misc, cmd: u32, arg: usize) -> Result<isize> {
        let fd = match cmd {
            uapi::UDMABUF_CREATE => self.create(misc, arg)?,
            uapi::UDMABUF_CREATE_LIST => self.create_list(misc, arg)?,
            uapi::UDMABUF_LIVE_INFO => info(arg)?,
            uapi::UDMABUF_LIVE_SYNC => sync(arg)?,
            uapi::UDMABUF_LIVE_VERIFY => verify(arg)?,
            uapi::UDMABUF_LIVE_PFNS => pfns(arg)?,
            // Unknown commands get ENOTTY, as the VFS and upstream udmabuf do.
            _ => return Err(ENOTTY),
        };
        Ok(fd as isize)
    }
}

impl UliveDevice {
    fn create(&self, misc: &Misc, arg: usize) -> Result<i32> {
        let req: UdmabufCreate =
            UserSlice::new(UserPtr::from_addr(arg), size_of::<UdmabufCreate>())
                .reader()
                .read()?;
        let item = UdmabufCreateItem {
            memfd: req.memfd,
            __pad: 0,
            offset: req.offset,
            size: req.size,
        };
        self.create_from(misc, &[item], req.flags)
    }

    fn create_list(&self, misc: &Misc, arg: usize) -> Result<i32> {
        let head_len = size_of::<UdmabufCreateList>();
        let head: UdmabufCreateList = UserSlice::new(UserPtr::from_addr(arg), head_len)
            .reader()
            .read()?;
        // Compared as upstream does: `u32 count > int list_limit` in C converts the limit.
        if head.count > params::list_limit() {
            return Err(EINVAL);
        }
        let count = head.count as usize;
        let len = count
            .checked_mul(size_of::<UdmabufCreateItem>())
            .ok_or(EINVAL)?;
        let mut reader = UserSlice::new(
            UserPtr::from_addr(arg.checked_add(head_len).ok_or(EFAULT)?),
            len,
        )
        .reader();
        let mut items = KVVec::with_capacity(count, GFP_KERNEL)?;
        for _ in 0..count {
            items.push(reader.read::<UdmabufCreateItem>()?, GFP_KERNEL)?;
        }
        self.create_from(misc, &items, head.flags)
    }

    fn create_from(&self, misc: &Misc, items: &[UdmabufCreateItem], flags: u32) -> Result<i32> {
        buffer::create(
            misc.device()?,
            self.queue.handle(),
            &self.registry,
            items,
            flags & uapi::UDMABUF_FLAGS_CLOEXEC != 0,
        )
    }
}

/// Read the ioctl argument `T` and the dma-buf of ours its first field names.
fn read_arg<T: kernel::transmute::FromBytes + HasFd>(arg: usize) -> Result<(T, DmaBufRef<Buffer>)> {
    let req: T = UserSlice::new(UserPtr::from_addr(arg), size_of::<T>())
        .reader()
        .read()?;
    let fd = i32::try_from(req.fd()).map_err(|_| EBADF)?;
    Ok((req, DmaBufRef::from_fd(fd)?))
}

fn write_back<T: kernel::transmute::AsBytes>(arg: usize, value: &T) -> Result<i32> {
    UserSlice::new(UserPtr::from_addr(arg), size_of::<T>())
        .writer()
        .write(value)?;
    Ok(0)
}

fn info(arg: usize) -> Result<i32> {
    let (req, dmabuf) = read_arg::<UdmabufLiveInfo>(arg)?;
    // INFO is a sync point for watching: mappings that appeared since the buffer became
    // unwatched get their notifier (a failure leaves it unwatched; the lazy checks hold).
    let _ = dmabuf.exporter().rewatch();
    let info = UdmabufLiveInfo {
        dmabuf_fd: req.dmabuf_fd,
        ..dmabuf.exporter().info()
    };
    write_back(arg, &info)
}

fn sync(arg: usize) -> Result<i32> {
    let (req, dmabuf) = read_arg::<UdmabufLiveSync>(arg)?;
    dmabuf.exporter().sync(req.timeout_ms)?;
    Ok(0)
}

fn verify(arg: usize) -> Result<i32> {
    let (req, dmabuf) = read_arg::<UdmabufLiveVerify>(arg)?;
    let v = UdmabufLiveVerify {
        dmabuf_fd: req.dmabuf_fd,
        ..dmabuf.exporter().verify()
    };
    write_back(arg, &v)
}

fn pfns(arg: usize) -> Result<i32> {
    if !crate::sys::capable_sys_admin() {
        return Err(EPERM);
    }
    let (req, dmabuf) = read_arg::<UdmabufLivePfns>(arg)?;
    let pfns = dmabuf.exporter().pfns(req.first_page, req.count)?;
    drop(dmabuf);
    let len = pfns.len().checked_mul(size_of::<u64>()).ok_or(EINVAL)?;
    let mut out = UserSlice::new(UserPtr::from_addr(req.pfns as usize), len).writer();
    for pfn in pfns.iter() {
        out.write(pfn)?;
    }
    Ok(0)
}

/// The live-update ioctl arguments start with the dma-buf fd.
trait HasFd {
    fn fd(&self) -> u32;
}

/// Every udmabuf-live ioctl argument names its dma-buf in `dmabuf_fd`.
macro_rules! has_fd {
    ($($t:ty),*) => {$(
        impl HasFd for $t {
            fn fd(&self) -> u32 {
                self.dmabuf_fd
            }
        }
    )*};
}
has_fd!(
    UdmabufLiveInfo,
    UdmabufLiveSync,
    UdmabufLiveVerify,
    UdmabufLivePfns
);
