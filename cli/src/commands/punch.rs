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
}

pub fn run(args: &PunchArgs) -> Result<ExitCode> {
    let r = args.handle.resolve()?;
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
    let out = Punched { handle: r.handle.to_string(), offset, len, memfd_size: size };
    if args.json {
        output::json(&out)?;
    } else {
        println!("punched {len} bytes at offset {offset} of the memfd of {}", r.handle);
    }
    Ok(ExitCode::SUCCESS)
}
