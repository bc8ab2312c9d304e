// SPDX-License-Identifier: GPL-2.0
//! The udmabuf-live ABI. Dependency-free and `no_std`: compiled by cargo as part of the
//! `udmabuf-live-uapi` crate and by Kbuild as a module of the kernel crate, so both
//! sides use one definition. `include/linux/udmabuf_live.h` is its C twin.
//!
//! The first part is upstream udmabuf (include/uapi/linux/udmabuf.h), bit for bit, so
//! that `/dev/udmabuf-live` is a drop-in replacement for `/dev/udmabuf`.

/// Name of the misc device the module registers (`/dev/udmabuf-live`).
pub const DEVICE_NAME: &str = "udmabuf-live";
/// Kernel module name, as in `/sys/module/<name>`.
pub const MODULE_NAME: &str = "udmabuf_live";

/// ioctl type letter shared with upstream udmabuf.
pub const UDMABUF_IOCTL_TYPE: u8 = b'u';

/// `flags`: create the dma-buf fd with O_CLOEXEC.
pub const UDMABUF_FLAGS_CLOEXEC: u32 = 0x01;

/// `UDMABUF_CREATE` argument: one memfd range.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdmabufCreate {
    pub memfd: u32,
    pub flags: u32,
    pub offset: u64,
    pub size: u64,
}

/// One entry of `UDMABUF_CREATE_LIST`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdmabufCreateItem {
    pub memfd: u32,
    pub __pad: u32,
    pub offset: u64,
    pub size: u64,
}

/// `UDMABUF_CREATE_LIST` header; `count` items follow it directly.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdmabufCreateList {
    pub flags: u32,
    pub count: u32,
}

const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = 8;
const IOC_SIZESHIFT: u32 = 16;
const IOC_DIRSHIFT: u32 = 30;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// `_IOC(dir, type, nr, size)` as in include/uapi/asm-generic/ioctl.h.
pub const fn ioc(dir: u32, ty: u8, nr: u8, size: usize) -> u32 {
    (dir << IOC_DIRSHIFT) | ((ty as u32) << IOC_TYPESHIFT) | ((nr as u32) << IOC_NRSHIFT) | ((size as u32) << IOC_SIZESHIFT)
}
/// `_IO(type, nr)`.
pub const fn io(ty: u8, nr: u8) -> u32 {
    ioc(0, ty, nr, 0)
}
/// `_IOR(type, nr, T)`.
pub const fn ior<T>(ty: u8, nr: u8) -> u32 {
    ioc(IOC_READ, ty, nr, core::mem::size_of::<T>())
}
/// `_IOW(type, nr, T)`.
pub const fn iow<T>(ty: u8, nr: u8) -> u32 {
    ioc(IOC_WRITE, ty, nr, core::mem::size_of::<T>())
}
/// `_IOWR(type, nr, T)`.
pub const fn iowr<T>(ty: u8, nr: u8) -> u32 {
    ioc(IOC_READ | IOC_WRITE, ty, nr, core::mem::size_of::<T>())
}

/// `_IOW('u', 0x42, struct udmabuf_create)`.
pub const UDMABUF_CREATE: u32 = iow::<UdmabufCreate>(UDMABUF_IOCTL_TYPE, 0x42);
/// `_IOW('u', 0x43, struct udmabuf_create_list)`.
pub const UDMABUF_CREATE_LIST: u32 = iow::<UdmabufCreateList>(UDMABUF_IOCTL_TYPE, 0x43);
