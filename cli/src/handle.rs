//! Handles: how one `udmabuf-ctl` process reaches a buffer another process holds.
//!
//! A handle is `PID:MEMFD_FD:DMABUF_FD`, three decimal numbers: the process that holds
//! the buffer (e.g. `udmabuf-ctl create --hold`), the number of the memfd in that
//! process and the number of the dma-buf in that process. Example: `1234:3:4`.
//! Parsing is strict: no blanks, no signs, no leading zeros (other than `0` itself),
//! PID at least 1, every number within a C `int`.
//!
//! Commands duplicate the two fds into their own process with pidfd_open(2) and
//! pidfd_getfd(2). That needs ptrace access to the holder (PTRACE_MODE_ATTACH): the same
//! user with ptrace allowed (`/proc/sys/kernel/yama/ptrace_scope`), or root.

use crate::exit::CtlError;
use crate::sys;
use anyhow::Result;
use nix::errno::Errno;
use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handle {
    pub pid: i32,
    pub memfd: i32,
    pub dmabuf: i32,
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.pid, self.memfd, self.dmabuf)
    }
}

fn number(field: &str, what: &str) -> Result<i32, String> {
    if field.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if !field.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what} '{field}' is not a decimal number"));
    }
    if field.len() > 1 && field.starts_with('0') {
        return Err(format!("{what} '{field}' has a leading zero"));
    }
    field.parse::<i32>().map_err(|_| format!("{what} '{field}' is out of range"))
}

impl std::str::FromStr for Handle {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let wrap = |why: String| format!("invalid handle '{s}': {why} (expected PID:MEMFD_FD:DMABUF_FD, e.g. 1234:3:4)");
        let fields: Vec<&str> = s.split(':').collect();
        let [pid, memfd, dmabuf] = fields[..] else {
            return Err(wrap(format!("{} fields instead of 3", fields.len())));
        };
        let pid = number(pid, "PID").map_err(wrap)?;
        if pid == 0 {
            return Err(wrap("PID 0 is not a process".into()));
        }
        let memfd = number(memfd, "MEMFD_FD").map_err(wrap)?;
        let dmabuf = number(dmabuf, "DMABUF_FD").map_err(wrap)?;
        if memfd == dmabuf {
            return Err(wrap("the memfd and the dma-buf cannot be the same fd".into()));
        }
        Ok(Handle { pid, memfd, dmabuf })
    }
}

/// The holder's memfd and dma-buf, duplicated into this process.
pub struct Resolved {
    pub handle: Handle,
    pub memfd: OwnedFd,
    pub dmabuf: OwnedFd,
    /// `exp_name` of the dma-buf.
    pub exporter: String,
}

/// Does the memfd of a handle back its dma-buf?
#[derive(Debug, PartialEq, Eq)]
pub enum Backing {
    /// At least one sampled page is the same page (PFN) or holds the same bytes.
    Yes,
    /// Why not.
    No(String),
    /// Nothing could be compared (e.g. the memfd has no pages yet).
    Unknown,
}

/// How many resident pages of the memfd [`Resolved::check_backing`] compares at most.
pub const SAMPLE_PAGES: usize = 32;

/// Up to `max` indices of `true` entries of `resident`, spread over the whole range.
pub fn sample(resident: &[bool], max: usize) -> Vec<usize> {
    let present: Vec<usize> = resident.iter().enumerate().filter(|(_, r)| **r).map(|(i, _)| i).collect();
    if present.len() <= max {
        return present;
    }
    (0..max).map(|k| present[k * present.len() / max]).collect()
}

/// The verdict from compared pages: one page in common is enough (a punched and rewritten
/// page legitimately differs in a buffer that has not caught up), none in common is a
/// handle that mixes two buffers.
pub fn verdict(compared: usize, equal: usize, how: &str) -> Backing {
    match (compared, equal) {
        (0, _) => Backing::Unknown,
        (_, 0) => Backing::No(format!("none of {compared} sampled pages of the memfd is in the dma-buf ({how} differ)")),
        _ => Backing::Yes,
    }
}

/// The verdict from the PFNs of the sampled pages: `mine[i]` is the memfd's PFN of pick
/// `i`, `theirs[i]` the dma-buf's. Only picks with a PFN on both sides count; `None` when
/// no pick has: /proc/self/pagemap says "not present" for every page of a VM_PFNMAP or
/// VM_IO mapping (the page walker skips such VMAs, fs/proc/task_mmu.c and mm/pagewalk.c),
/// which is how the built-in udmabuf, the dma-buf heaps and GEM exporters map their
/// buffers, and PFN 0 for every page without CAP_SYS_ADMIN. The caller then compares bytes.
pub fn pfn_verdict(mine: &[Option<u64>], theirs: &[Option<u64>]) -> Option<Backing> {
    let known = |p: &Option<u64>| p.filter(|&pfn| pfn != 0);
    let pairs: Vec<(u64, u64)> = mine.iter().zip(theirs).filter_map(|(m, t)| Some((known(m)?, known(t)?))).collect();
    if pairs.is_empty() {
        return None;
    }
    Some(verdict(pairs.len(), pairs.iter().filter(|(m, t)| m == t).count(), "their PFNs"))
}

impl Handle {
    /// Duplicate both fds of the holder into this process and check what they are.
    pub fn resolve(&self) -> Result<Resolved> {
        let pidfd = sys::pidfd_open(self.pid).map_err(|e| match e {
            Errno::ESRCH => CtlError::Handle(format!(
                "handle {self}: no process {} (did the holder exit? start one with `udmabuf-ctl create --hold`)",
                self.pid
            ))
            .into(),
            Errno::ENOSYS => anyhow::anyhow!("handle {self}: this kernel has no pidfd_open (Linux 5.3 or later needed)"),
            e => anyhow::Error::new(e).context(format!("handle {self}: pidfd_open({})", self.pid)),
        })?;
        let memfd = self.getfd(&pidfd, self.memfd, "memfd")?;
        let dmabuf = self.getfd(&pidfd, self.dmabuf, "dma-buf")?;
        let not_a = |what: &str, fd| -> anyhow::Error {
            let target = sys::fd_target(self.pid, fd);
            let pid = self.pid;
            CtlError::Handle(format!("handle {self}: fd {fd} of process {pid} is not a {what} ({target})")).into()
        };
        if sys::get_seals(&memfd).is_err() {
            return Err(not_a("memfd", self.memfd));
        }
        if sys::dmabuf_exporter(&dmabuf).is_none() {
            return Err(not_a("dma-buf", self.dmabuf));
        }
        let exporter = sys::dmabuf_exporter(&dmabuf).unwrap_or_default();
        Ok(Resolved { handle: *self, memfd, dmabuf, exporter })
    }

    fn getfd(&self, pidfd: &OwnedFd, fd: i32, what: &str) -> Result<OwnedFd> {
        sys::pidfd_getfd(pidfd.as_raw_fd(), fd).map_err(|e| match e {
            Errno::EBADF => CtlError::Handle(format!("handle {self}: process {} has no fd {fd} (the {what})", self.pid)).into(),
            Errno::ESRCH => CtlError::Handle(format!("handle {self}: process {} exited", self.pid)).into(),
            Errno::EPERM | Errno::EACCES => CtlError::Permission(format!(
                "handle {self}: pidfd_getfd on process {} was refused: you need ptrace access to it \
                 (run as the same user with /proc/sys/kernel/yama/ptrace_scope allowing it, or as root)",
                self.pid
            ))
            .into(),
            Errno::ENOSYS => anyhow::anyhow!("handle {self}: this kernel has no pidfd_getfd (Linux 5.6 or later needed)"),
            e => anyhow::Error::new(e).context(format!("handle {self}: pidfd_getfd of the {what} (fd {fd})")),
        })
    }
}

impl Resolved {
    /// Check that the memfd really backs the dma-buf (`memfd_offset`: where the dma-buf
    /// starts in it), and refuse the handle (exit 8) if not. With CAP_SYS_ADMIN the PFNs
    /// of up to [`SAMPLE_PAGES`] resident memfd pages are compared with the dma-buf's
    /// (udmabuf-live: the PFNS ioctl on `live`; other exporters: /proc/self/pagemap of a
    /// mapping of the dma-buf); without it, or when pagemap cannot see the dma-buf's pages
    /// (VM_PFNMAP mappings such as the built-in udmabuf's, see [`pfn_verdict`]), their
    /// bytes through a mapping of each. Bytes cannot tell two buffers with the same
    /// content apart (e.g. both still zero): such a mixed handle is accepted. Only pages
    /// already in the memfd are looked at, so no hole is filled.
    pub fn check_backing(&self, memfd_offset: u64, live: Option<&std::fs::File>) -> Result<()> {
        match self.backing(memfd_offset, live)? {
            Backing::No(why) => Err(CtlError::Handle(format!(
                "handle {}: fd {} of process {} is not the memfd behind dma-buf fd {}: {why}",
                self.handle, self.handle.memfd, self.handle.pid, self.handle.dmabuf
            ))
            .into()),
            Backing::Yes | Backing::Unknown => Ok(()),
        }
    }

    pub fn backing(&self, moff: u64, live: Option<&std::fs::File>) -> Result<Backing> {
        use crate::sys::Mapping;
        let ps = sys::page_size();
        let dsize = sys::dmabuf_size(&self.dmabuf)?;
        let msize = sys::file_size(&self.memfd)?;
        if moff.checked_add(dsize).is_none_or(|e| e > msize) {
            return Ok(Backing::No(format!(
                "the dma-buf ({dsize} bytes from memfd offset {moff}) does not fit in the memfd ({msize} bytes)"
            )));
        }
        if dsize == 0 {
            return Ok(Backing::Unknown);
        }
        let mmap = Mapping::new(&self.memfd, moff + dsize, false)?;
        let resident = mmap.resident()?;
        let first = (moff / ps) as usize;
        let picks = sample(&resident[first..], SAMPLE_PAGES);
        if picks.is_empty() {
            return Ok(Backing::Unknown);
        }
        if sys::privileged() {
            for &p in &picks {
                mmap.touch(moff + p as u64 * ps);
            }
            let all_mine = sys::pagemap_pfns(mmap.addr() + first * ps as usize, (dsize / ps).max(1))?;
            let mine: Vec<Option<u64>> = picks.iter().map(|&p| all_mine[p]).collect();
            let theirs: Vec<Option<u64>> = match live {
                Some(dev) => {
                    let mut v = Vec::with_capacity(picks.len());
                    for &p in &picks {
                        let mut one = [0u64];
                        sys::live_pfns(dev, &self.dmabuf, p as u64, &mut one)?;
                        v.push(Some(one[0]));
                    }
                    v
                }
                None => {
                    // The built-in udmabuf refuses private mappings (Mapping is shared)
                    // and maps with VM_PFNMAP: pagemap shows none of these pages, and
                    // pfn_verdict leaves the answer to the bytes below.
                    let dmap = Mapping::new(&self.dmabuf, dsize, false)?;
                    for &p in &picks {
                        dmap.touch(p as u64 * ps);
                    }
                    let all = sys::pagemap_pfns(dmap.addr(), dsize / ps)?;
                    picks.iter().map(|&p| all[p]).collect()
                }
            };
            if let Some(v) = pfn_verdict(&mine, &theirs) {
                return Ok(v);
            }
        }
        let dmap = Mapping::new(&self.dmabuf, dsize, false)?;
        let _ = sys::dma_buf_sync(&self.dmabuf, sys::DMA_BUF_SYNC_START | sys::DMA_BUF_SYNC_READ);
        let (mut a, mut b) = (vec![0u8; ps as usize], vec![0u8; ps as usize]);
        let mut equal = 0;
        for &p in &picks {
            mmap.read_into(moff + p as u64 * ps, &mut a);
            dmap.read_into(p as u64 * ps, &mut b);
            equal += usize::from(a == b);
        }
        let _ = sys::dma_buf_sync(&self.dmabuf, sys::DMA_BUF_SYNC_END | sys::DMA_BUF_SYNC_READ);
        Ok(verdict(picks.len(), equal, "their bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let h: Handle = "1234:3:4".parse().unwrap();
        assert_eq!(h, Handle { pid: 1234, memfd: 3, dmabuf: 4 });
        assert_eq!(h.to_string(), "1234:3:4");
        let h: Handle = "1:0:2147483647".parse().unwrap();
        assert_eq!(h, Handle { pid: 1, memfd: 0, dmabuf: i32::MAX });
        assert_eq!(h.to_string().parse::<Handle>().unwrap(), h);
    }

    #[test]
    fn samples_spread_over_resident_pages() {
        let r = [true, false, true, true, false, true];
        assert_eq!(sample(&r, 10), [0, 2, 3, 5]);
        assert_eq!(sample(&r, 2), [0, 3]);
        assert!(sample(&[false; 4], 4).is_empty());
        let many = vec![true; 1000];
        let s = sample(&many, SAMPLE_PAGES);
        assert_eq!(s.len(), SAMPLE_PAGES);
        assert!(*s.last().unwrap() > 900);
    }

    #[test]
    fn one_common_page_is_enough() {
        assert_eq!(verdict(0, 0, "x"), Backing::Unknown);
        assert_eq!(verdict(5, 1, "x"), Backing::Yes);
        assert!(matches!(verdict(5, 0, "their PFNs"), Backing::No(w) if w.contains("none of 5 sampled pages")));
    }

    /// The built-in udmabuf's dma-buf mapping is VM_PFNMAP: pagemap shows its pages as not
    /// present. That says nothing about the handle (it was "none of 32 sampled pages is in
    /// the dma-buf" for a genuine handle); only pages with a PFN on both sides count.
    #[test]
    fn pfns_pagemap_cannot_see_do_not_count() {
        let mine = [Some(0x2305), Some(0x18a7), Some(0x18ed)];
        assert_eq!(pfn_verdict(&mine, &[None, None, None]), None);
        // Hidden PFNs (no CAP_SYS_ADMIN) on either side.
        assert_eq!(pfn_verdict(&mine, &[Some(0), Some(0), Some(0)]), None);
        assert_eq!(pfn_verdict(&[Some(0); 3], &mine), None);
        assert_eq!(pfn_verdict(&[], &[]), None);
        assert_eq!(pfn_verdict(&mine, &mine), Some(Backing::Yes));
        // One page in common, the others not visible or replaced: the same buffer.
        assert_eq!(pfn_verdict(&mine, &[None, Some(0x18a7), Some(0x9999)]), Some(Backing::Yes));
        // Every comparable page differs: another buffer's memfd.
        let other = pfn_verdict(&mine, &[Some(0x1111), None, Some(0x2222)]);
        assert!(matches!(&other, Some(Backing::No(w)) if w.contains("none of 2 sampled pages")), "{other:?}");
    }

    #[test]
    fn strict() {
        for s in [
            "",
            "1234",
            "1234:3",
            "1234:3:4:5",
            "1234::4",
            ":3:4",
            "1234:3:",
            "0:3:4",
            "-1:3:4",
            "+1:3:4",
            "1234:-3:4",
            " 1234:3:4",
            "1234:3:4 ",
            "1234: 3:4",
            "01234:3:4",
            "1234:03:4",
            "1234:3:4\n",
            "1234:3:2147483648",
            "99999999999:3:4",
            "1234:3:3",
            "a:3:4",
            "0x10:3:4",
            "1234;3;4",
            "1234/3/4",
        ] {
            assert!(s.parse::<Handle>().is_err(), "{s:?} was accepted");
        }
        let e = "1234:3".parse::<Handle>().unwrap_err();
        assert!(e.contains("PID:MEMFD_FD:DMABUF_FD"), "{e}");
    }
}
