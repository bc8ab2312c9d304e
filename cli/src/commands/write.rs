//! `udmabuf-ctl write HANDLE --offset O --pattern P [--len L]`: write through a shared
//! mapping of the memfd (hugetlbfs has no write(2); a mapping works for both backings).

use super::{check_range, memfd_size};
use crate::cli::WriteArgs;
use crate::commands::create::fill;
use crate::exit::CtlError;
use crate::output;
use crate::sys::{self, Mapping};
use anyhow::Result;
use nix::errno::Errno;
use serde::{Deserialize, Serialize};
use std::process::ExitCode;

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct Written {
    pub handle: String,
    pub offset: u64,
    pub len: u64,
    pub pattern: String,
}

pub fn run(args: &WriteArgs) -> Result<ExitCode> {
    let (r, _live) = super::resolve(&args.handle, None, 0)?;
    let size = memfd_size(&r.memfd)?;
    let offset = args.offset.0;
    let len = match args.len {
        Some(l) => l.0,
        None => size.saturating_sub(offset),
    };
    check_range("write", offset, len, size)?;
    let map = Mapping::new(&r.memfd, size, true).map_err(|e| -> anyhow::Error {
        match e {
            Errno::EPERM | Errno::EACCES => CtlError::Permission(format!(
                "mmap(PROT_WRITE) of the memfd of {}: {e}: the memfd is sealed against writes (seals: {})",
                r.handle,
                sys::get_seals(&r.memfd).map(|s| sys::seal_names(s).join(",")).unwrap_or_default()
            ))
            .into(),
            Errno::ENOMEM if super::is_hugetlb(&r.memfd) => CtlError::NoMemory(format!(
                "mmap of the hugetlb memfd of {}: ENOMEM: no free huge pages to fill its holes \
                 (echo N > /proc/sys/vm/nr_hugepages)",
                r.handle
            ))
            .into(),
            Errno::ENOMEM => CtlError::NoMemory(format!("mmap of the memfd of {}: ENOMEM", r.handle)).into(),
            e => anyhow::Error::new(e).context(format!("mmap of the memfd of {}", r.handle)),
        }
    })?;
    fill(&map, offset, len, args.pattern);
    drop(map);
    let out = Written { handle: r.handle.to_string(), offset, len, pattern: args.pattern.to_string() };
    if args.json {
        output::json(&out)?;
    } else {
        println!("wrote {len} bytes of {} at offset {offset} of the memfd of {}", args.pattern, r.handle);
    }
    Ok(ExitCode::SUCCESS)
}
