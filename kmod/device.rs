// SPDX-License-Identifier: GPL-2.0
//! The `/dev/udmabuf-live` misc device: where the data flow starts. An ioctl is copied
//! in and checked here, then `buffer::create` pins and exports.

use crate::buffer;
use crate::ffi;
use crate::sys::miscdev::{IoctlHandler, Misc};
use crate::uapi::{self, UdmabufCreate, UdmabufCreateItem, UdmabufCreateList};
use kernel::{
    prelude::*,
    uaccess::{UserPtr, UserSlice},
};

/// The device's ioctl handler. Buffers outlive the fd that created them (their dma-buf
/// owns them), so there is no per-open state.
pub(crate) struct UliveDevice;

impl IoctlHandler for UliveDevice {
    fn ioctl(&self, misc: &Misc, cmd: u32, arg: usize) -> Result<isize> {
        let fd = match cmd {
            uapi::UDMABUF_CREATE => create(misc, arg)?,
            uapi::UDMABUF_CREATE_LIST => create_list(misc, arg)?,
            // Unknown commands get ENOTTY, as the VFS and upstream udmabuf do.
            _ => return Err(ENOTTY),
        };
        Ok(fd as isize)
    }
}

fn create(misc: &Misc, arg: usize) -> Result<i32> {
    let req: UdmabufCreate = UserSlice::new(UserPtr::from_addr(arg), size_of::<UdmabufCreate>()).reader().read()?;
    let item = UdmabufCreateItem { memfd: req.memfd, __pad: 0, offset: req.offset, size: req.size };
    create_from(misc, &[item], req.flags)
}

fn create_list(misc: &Misc, arg: usize) -> Result<i32> {
    let head_len = size_of::<UdmabufCreateList>();
    let head: UdmabufCreateList = UserSlice::new(UserPtr::from_addr(arg), head_len).reader().read()?;
    // Compared as upstream does: `u32 count > int list_limit` in C converts the limit.
    if head.count > ffi::list_limit() as u32 {
        return Err(EINVAL);
    }
    let count = head.count as usize;
    let len = count.checked_mul(size_of::<UdmabufCreateItem>()).ok_or(EINVAL)?;
    let mut reader = UserSlice::new(UserPtr::from_addr(arg.checked_add(head_len).ok_or(EFAULT)?), len).reader();
    let mut items = KVVec::with_capacity(count, GFP_KERNEL)?;
    for _ in 0..count {
        items.push(reader.read::<UdmabufCreateItem>()?, GFP_KERNEL)?;
    }
    create_from(misc, &items, head.flags)
}

fn create_from(misc: &Misc, items: &[UdmabufCreateItem], flags: u32) -> Result<i32> {
    buffer::create(misc.device()?, items, flags & uapi::UDMABUF_FLAGS_CLOEXEC != 0)
}
