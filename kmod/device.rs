// SPDX-License-Identifier: GPL-2.0
//! The `/dev/udmabuf-live` misc device: the ioctl entry point of the data flow
//! (ioctl -> buffer -> exporter ops).

use kernel::{
    fs::File,
    miscdevice::{MiscDevice, MiscDeviceRegistration},
    prelude::*,
};

/// Per-open state of the device. Buffers outlive the fd that created them (they are
/// owned by their dma-buf), so there is nothing to keep per open file yet.
pub(crate) struct UliveDevice;

#[vtable]
impl MiscDevice for UliveDevice {
    type Ptr = KBox<Self>;

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<KBox<Self>> {
        KBox::new(UliveDevice, GFP_KERNEL).map_err(Into::into)
    }

    fn ioctl(_me: &UliveDevice, _file: &File, _cmd: u32, _arg: usize) -> Result<isize> {
        // Unknown commands get ENOTTY, as the VFS and upstream udmabuf do.
        Err(ENOTTY)
    }
}
