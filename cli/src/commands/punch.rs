//! `udmabuf-ctl punch HANDLE --offset O --len L`: fallocate(PUNCH_HOLE|KEEP_SIZE) on the
//! memfd behind a handle. On shmem a partial page at either end is zeroed, not freed.

use super::{check_range, is_hugetlb, memfd_size};
use crate::cli::PunchArgs;
use crate::exit::CtlError;
use crate::output;
use crate::sys;
use anyhow::Result;
use nix::errno::Errno;
use nix::fcntl::{fallocate, FallocateFlags, SealFlag};
use serde::{Deserialize, Serialize};
use std::os::fd::AsRawFd;
use std::process::ExitCode;

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct Punched {
    pub handle: String,
    pub offset: u64,
    pub len: u64,
    pub memfd_size: u64,
    /// Whole pages the hole dropped from the memfd.
    pub pages_dropped: u64,
    /// Bytes of partial pages at either end, zeroed in place (no page dropped there).
    pub bytes_zeroed: u64,
}

/// What a punch of `offset..offset+len` does on a file of `page`-sized pages: the whole
/// pages it drops, and the bytes of partial pages it only zeroes.
pub fn punch_effect(offset: u64, len: u64, page: u64) -> (u64, u64) {
    let end = offset + len;
    let first = offset.div_ceil(page) * page;
    let last = end / page * page;
    if last > first {
        ((last - first) / page, len - (last - first))
    } else {
        (0, len)
    }
}

pub fn describe(p: &Punched) -> String {
    match (p.pages_dropped, p.bytes_zeroed) {
        (0, z) => format!(
            "no page dropped: {}+{} covers no whole page of the memfd of {}; the {z} bytes were zeroed in place \
             (use page-aligned --offset and --len to drop pages)",
            p.offset, p.len, p.handle
        ),
        (n, 0) => format!("punched {} bytes at offset {} of the memfd of {}: {n} pages dropped", p.len, p.offset, p.handle),
        (n, z) => format!(
            "punched {} bytes at offset {} of the memfd of {}: {n} pages dropped, {z} bytes of partial pages zeroed in place",
            p.len, p.offset, p.handle
        ),
    }
}

pub fn run(args: &PunchArgs) -> Result<ExitCode> {
    let (r, _live) = super::resolve(&args.handle, None, 0)?;
    let size = memfd_size(&r.memfd)?;
    let (offset, len) = (args.offset.0, args.len.0);
    check_range("punch", offset, len, size)?;
    if is_hugetlb(&r.memfd) && (offset % sys::HUGE_PAGE != 0 || len % sys::HUGE_PAGE != 0) {
        return Err(CtlError::Usage(format!(
            "punch: the memfd is hugetlb: --offset and --len must be multiples of 2 MiB (got {offset}, {len})"
        ))
        .into());
    }
    let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
    fallocate(r.memfd.as_raw_fd(), flags, offset as i64, len as i64).map_err(|e| -> anyhow::Error {
        match e {
            Errno::EPERM => {
                let seals = sys::get_seals(&r.memfd).unwrap_or(SealFlag::empty());
                CtlError::Permission(format!(
                    "fallocate(PUNCH_HOLE) on the memfd of {}: EPERM: the memfd is sealed against writes (seals: {})",
                    r.handle,
                    sys::seal_names(seals).join(",")
                ))
                .into()
            }
            Errno::EOPNOTSUPP => anyhow::anyhow!("fallocate(PUNCH_HOLE): this memfd's filesystem cannot punch holes"),
            e => anyhow::Error::new(e).context(format!("fallocate(PUNCH_HOLE) at {offset}+{len} on the memfd of {}", r.handle)),
        }
    })?;
    let (pages_dropped, bytes_zeroed) = punch_effect(offset, len, sys::page_size());
    let out = Punched { handle: r.handle.to_string(), offset, len, memfd_size: size, pages_dropped, bytes_zeroed };
    if args.json {
        output::json(&out)?;
    } else {
        println!("{}", describe(&out));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_pages_are_not_dropped() {
        assert_eq!(punch_effect(100, 100, 4096), (0, 100));
        assert_eq!(punch_effect(0, 8192, 4096), (2, 0));
        assert_eq!(punch_effect(100, 8192, 4096), (1, 4096));
        assert_eq!(punch_effect(4096, 4095, 4096), (0, 4095));
        let p =
            Punched { handle: "1:3:4".into(), offset: 100, len: 100, memfd_size: 1 << 20, pages_dropped: 0, bytes_zeroed: 100 };
        let t = describe(&p);
        assert!(t.starts_with("no page dropped") && !t.starts_with("punched"), "{t}");
        let p = Punched { offset: 0, len: 8192, pages_dropped: 2, bytes_zeroed: 0, ..p };
        assert!(describe(&p).ends_with("2 pages dropped"));
    }
}
