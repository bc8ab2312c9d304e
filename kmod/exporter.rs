// SPDX-License-Identifier: GPL-2.0
//! The dma-buf exporter ops of a [`Buffer`]: what importers, CPU mmaps and vmaps see.
//! Every op reads the page array under `Buffer::state`.

use crate::buffer::Buffer;
use crate::sys::{
    dmabuf::{Attachment, Exporter},
    sgt::{Direction, MappedSgTable},
    vm::{Fault, FaultResult, VMap, VMapAddr},
};
use kernel::prelude::*;

impl Exporter for Buffer {
    fn pin(&self, _att: &Attachment<'_>) -> Result {
        self.state.lock().pins += 1;
        Ok(())
    }

    fn unpin(&self, _att: &Attachment<'_>) {
        let mut state = self.state.lock();
        state.pins = state.pins.saturating_sub(1);
    }

    fn map(&self, att: &Attachment<'_>, dir: Direction) -> Result<MappedSgTable> {
        let dev = att.device()?;
        let state = self.state.lock();
        MappedSgTable::new(&state.pages, dev, dir)
    }

    fn begin_cpu_access(&self, dir: Direction) -> Result {
        let mut state = self.state.lock();
        if state.cpu_sgt.is_none() {
            state.cpu_sgt = Some(MappedSgTable::new(&state.pages, self.misc_dev.dma_device(), dir)?);
        }
        if let Some(sgt) = &state.cpu_sgt {
            sgt.sync_for_cpu(dir);
        }
        Ok(())
    }

    fn end_cpu_access(&self, dir: Direction) -> Result {
        let state = self.state.lock();
        let sgt = state.cpu_sgt.as_ref().ok_or(EINVAL)?;
        sgt.sync_for_device(dir);
        Ok(())
    }

    fn mmap(&self, shared: bool) -> Result {
        // Private mappings would COW pages that are not ours to copy.
        if shared { Ok(()) } else { Err(EINVAL) }
    }

    fn fault(&self, fault: &Fault) -> FaultResult {
        let pgoff = fault.pgoff();
        if pgoff >= self.nr_pages {
            return FaultResult::SIGBUS;
        }
        let state = self.state.lock();
        let ret = fault.insert(pgoff, &state.pages, pgoff);
        if ret.is_error() {
            return ret;
        }
        // Pre-fault the rest of the VMA, as upstream does: a buffer is usually read
        // whole. A failure here is not fatal; the access itself will fault again.
        for other in fault.vma_pgoffs() {
            if other != pgoff && (other >= self.nr_pages || fault.insert(other, &state.pages, other).is_error()) {
                break;
            }
        }
        ret
    }

    fn vmap(&self) -> Result<VMapAddr> {
        let mut state = self.state.lock();
        if state.vmap.is_some() {
            return Err(EBUSY);
        }
        let vmap = VMap::new(&state.pages)?;
        let addr = vmap.addr();
        state.vmap = Some(vmap);
        Ok(addr)
    }

    fn vunmap(&self, addr: VMapAddr) {
        let mut state = self.state.lock();
        if state.vmap.as_ref().map(VMap::addr) == Some(addr) {
            state.vmap = None;
        }
    }
}
