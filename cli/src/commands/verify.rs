//! `udmabuf-ctl verify HANDLE`: does the dma-buf show exactly its memfd's pages?
//!
//! Three checks, in this order:
//! (a) `ioctl`: udmabuf-live's VERIFY ioctl compares every page the buffer holds with the
//!     memfd's page cache (skipped for other exporters: INFO answers EINVAL);
//! (b) `pfns`: with CAP_SYS_ADMIN, the buffer's PFNs (PFNS ioctl) against the PFNs
//!     /proc/self/pagemap gives for a fresh mapping of the memfd, read first so every page
//!     is faulted in (udmabuf-live only);
//! (c) `bytes`: the dma-buf's mapping against the memfd's mapping, byte for byte.
//! (a) runs first because mapping and reading the memfd fills its holes.

use super::memfd_size;
use crate::cli::VerifyArgs;
use crate::exit::{CtlError, INCOHERENT};
use crate::output;
use crate::sys::{self, Mapping};
use crate::units::human;
use anyhow::{Context, Result};
use nix::errno::Errno;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::os::fd::OwnedFd;
use std::process::ExitCode;

pub const OK: &str = "ok";
pub const MISMATCH: &str = "mismatch";
pub const SKIPPED: &str = "skipped";

/// (a) The VERIFY ioctl.
#[derive(Serialize, Deserialize, Debug, PartialEq, Default)]
pub struct IoctlCheck {
    /// `ok`, `mismatch` or `skipped`.
    pub status: String,
    /// Why it was skipped.
    pub reason: Option<String>,
    pub pages: u64,
    pub matching: u64,
    /// Pages the memfd has replaced with another page.
    pub stale: u64,
    /// Pages whose memfd offset is a hole now.
    pub holes: u64,
    /// Byte offset in the dma-buf of the first page that does not match.
    pub first_mismatch: Option<u64>,
}

/// One page whose PFN differs.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct PfnDiff {
    /// Byte offset of the page in the dma-buf.
    pub offset: u64,
    /// PFN of the memfd's page (null: not present in our mapping).
    pub expected: Option<u64>,
    /// PFN the dma-buf holds.
    pub got: u64,
}

/// (b) PFNs against /proc/self/pagemap.
#[derive(Serialize, Deserialize, Debug, PartialEq, Default)]
pub struct PfnCheck {
    pub status: String,
    pub reason: Option<String>,
    pub pages: u64,
    pub mismatched: u64,
    /// The first `--max-report` differing pages.
    pub diffs: Vec<PfnDiff>,
}

/// One page whose bytes differ.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct ByteDiff {
    /// Byte offset of the page in the dma-buf.
    pub offset: u64,
    /// Byte offset of the same page in the memfd.
    pub memfd_offset: u64,
    /// Byte offset in the dma-buf of the first byte that differs.
    pub first_byte: u64,
    /// How many bytes of the page differ.
    pub bytes_differing: u64,
    /// The memfd's byte at `first_byte`.
    pub expected: u8,
    /// The dma-buf's byte at `first_byte`.
    pub got: u8,
}

/// (c) Bytes of the dma-buf against bytes of the memfd.
#[derive(Serialize, Deserialize, Debug, PartialEq, Default)]
pub struct ByteCheck {
    pub status: String,
    pub reason: Option<String>,
    pub pages: u64,
    pub mismatched: u64,
    pub diffs: Vec<ByteDiff>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Default)]
pub struct Checks {
    pub ioctl: IoctlCheck,
    pub pfns: PfnCheck,
    pub bytes: ByteCheck,
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Default)]
pub struct Report {
    pub handle: String,
    pub exporter: String,
    pub size: u64,
    pub memfd_offset: u64,
    /// True when every check that ran found the buffer coherent.
    pub coherent: bool,
    pub checks: Checks,
}

fn skipped(reason: String) -> (String, Option<String>) {
    (SKIPPED.into(), Some(reason))
}

pub fn run(args: &VerifyArgs) -> Result<ExitCode> {
    let r = args.handle.resolve()?;
    let ps = sys::page_size();
    let exporter = sys::dmabuf_exporter(&r.dmabuf).unwrap_or_default();
    let size = sys::dmabuf_size(&r.dmabuf).context("lseek on the dma-buf")?;
    let msize = memfd_size(&r.memfd)?;
    let moff = args.memfd_offset.0;
    if !moff.is_multiple_of(ps) || moff.checked_add(size).is_none_or(|e| e > msize) {
        return Err(CtlError::Usage(format!(
            "--memfd-offset {moff}: a {size}-byte dma-buf from there does not fit a {msize}-byte memfd (or is not page aligned)"
        ))
        .into());
    }
    let pages = size / ps;

    // (a) first: mapping the memfd below fills its holes.
    let live = live_device(args, &r.dmabuf);
    let ioctl = match &live {
        Ok(dev) => check_ioctl(dev, &r.dmabuf, pages)?,
        Err(why) => {
            let (status, reason) = skipped(why.clone());
            IoctlCheck { status, reason, pages, ..Default::default() }
        }
    };

    let memfd_map = Mapping::new(&r.memfd, msize, false).context("mmap of the memfd")?;
    let base = moff as usize;
    // Fault every page in (the PFN check needs present pages).
    memfd_map.fault_in();

    // (b)
    let pfns = match (&live, sys::privileged()) {
        (Err(why), _) => {
            let (status, reason) = skipped(why.clone());
            PfnCheck { status, reason, pages, ..Default::default() }
        }
        (Ok(_), false) => {
            let (status, reason) = skipped("needs CAP_SYS_ADMIN (run as root) for PFNS and /proc/self/pagemap".into());
            PfnCheck { status, reason, pages, ..Default::default() }
        }
        (Ok(dev), true) => check_pfns(dev, &r.dmabuf, memfd_map.addr() + base, pages, args.max_report)?,
    };

    // (c)
    let bytes = check_bytes(&r.dmabuf, &memfd_map, moff, size, args.max_report)?;

    let checks = Checks { ioctl, pfns, bytes };
    let coherent = [&checks.ioctl.status, &checks.pfns.status, &checks.bytes.status].iter().all(|s| *s != MISMATCH);
    let report = Report { handle: r.handle.to_string(), exporter, size, memfd_offset: moff, coherent, checks };
    if args.json {
        output::json(&report)?;
    } else {
        print_human(&report, args.max_report);
    }
    Ok(if coherent { ExitCode::SUCCESS } else { ExitCode::from(INCOHERENT) })
}

/// udmabuf-live's device if the buffer is one of its own, else why (a) and (b) are skipped.
fn live_device(args: &VerifyArgs, dmabuf: &OwnedFd) -> Result<File, String> {
    match super::open_live(&args.device.device, dmabuf) {
        Ok((dev, _)) => Ok(dev),
        Err(e) => Err(format!("{e:#}")),
    }
}

fn check_ioctl(dev: &File, dmabuf: &OwnedFd, pages: u64) -> Result<IoctlCheck> {
    let v = sys::live_verify(dev, dmabuf).context("UDMABUF_LIVE_VERIFY")?;
    let ok = v.matching == v.pages && v.pages == pages;
    Ok(IoctlCheck {
        status: if ok { OK } else { MISMATCH }.into(),
        reason: None,
        pages: v.pages,
        matching: v.matching,
        stale: v.stale,
        holes: v.holes,
        first_mismatch: (v.first_mismatch != u64::MAX).then_some(v.first_mismatch),
    })
}

fn check_pfns(dev: &File, dmabuf: &OwnedFd, addr: usize, pages: u64, max: usize) -> Result<PfnCheck> {
    const CHUNK: u64 = 4096;
    let ps = sys::page_size();
    let mut check = PfnCheck { status: OK.into(), pages, ..Default::default() };
    let mut first = 0;
    while first < pages {
        let n = (pages - first).min(CHUNK);
        let mut got = vec![0u64; n as usize];
        match sys::live_pfns(dev, dmabuf, first, &mut got) {
            Ok(()) => {}
            Err(Errno::EPERM) => {
                let (status, reason) = skipped("the PFNS ioctl was refused (EPERM): needs CAP_SYS_ADMIN".into());
                return Ok(PfnCheck { status, reason, pages, ..Default::default() });
            }
            Err(e) => return Err(anyhow::Error::new(e).context("UDMABUF_LIVE_PFNS")),
        }
        let want = sys::pagemap_pfns(addr + (first * ps) as usize, n).context("reading /proc/self/pagemap")?;
        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
            if *w != Some(*g) {
                check.mismatched += 1;
                if check.diffs.len() < max {
                    check.diffs.push(PfnDiff { offset: (first + i as u64) * ps, expected: *w, got: *g });
                }
            }
        }
        first += n;
    }
    if check.mismatched > 0 {
        check.status = MISMATCH.into();
    }
    Ok(check)
}

fn check_bytes(dmabuf: &OwnedFd, memfd_map: &Mapping, moff: u64, size: u64, max: usize) -> Result<ByteCheck> {
    let ps = sys::page_size();
    let map = Mapping::new(dmabuf, size, false).map_err(|e| anyhow::Error::new(e).context("mmap of the dma-buf"))?;
    // Bracket the CPU reads as dma-buf users must (the exporter syncs caches and, for
    // udmabuf-live, brings pending updates in).
    sys::dma_buf_sync(dmabuf, sys::DMA_BUF_SYNC_START | sys::DMA_BUF_SYNC_READ).context("DMA_BUF_IOCTL_SYNC(START)")?;
    let mut check = ByteCheck { status: OK.into(), pages: size / ps, ..Default::default() };
    let mut want = vec![0u8; ps as usize];
    let mut got = vec![0u8; ps as usize];
    for off in (0..size).step_by(ps as usize) {
        memfd_map.read(moff + off, &mut want);
        map.read(off, &mut got);
        if want == got {
            continue;
        }
        check.mismatched += 1;
        if check.diffs.len() < max {
            let first = want.iter().zip(&got).position(|(a, b)| a != b).unwrap_or(0);
            let differing = want.iter().zip(&got).filter(|(a, b)| a != b).count() as u64;
            check.diffs.push(ByteDiff {
                offset: off,
                memfd_offset: moff + off,
                first_byte: off + first as u64,
                bytes_differing: differing,
                expected: want[first],
                got: got[first],
            });
        }
    }
    sys::dma_buf_sync(dmabuf, sys::DMA_BUF_SYNC_END | sys::DMA_BUF_SYNC_READ).context("DMA_BUF_IOCTL_SYNC(END)")?;
    if check.mismatched > 0 {
        check.status = MISMATCH.into();
    }
    Ok(check)
}

fn more(total: u64, shown: usize) -> String {
    if total > shown as u64 { format!("    ... and {} more\n", total - shown as u64) } else { String::new() }
}

pub fn render_human(r: &Report, max: usize) -> String {
    let mut s = format!("verify {}: {} dma-buf from {}, {} pages\n", r.handle, human(r.size), r.exporter, r.size / sys::page_size());
    let c = &r.checks;
    match c.ioctl.status.as_str() {
        SKIPPED => s += &format!("  ioctl  skipped: {}\n", c.ioctl.reason.as_deref().unwrap_or("")),
        OK => s += &format!("  ioctl  ok: {}/{} pages are the memfd's pages\n", c.ioctl.matching, c.ioctl.pages),
        _ => {
            s += &format!(
                "  ioctl  MISMATCH: {} of {} pages differ ({} replaced in the memfd, {} holes now), first at offset {:#x}\n",
                c.ioctl.pages - c.ioctl.matching,
                c.ioctl.pages,
                c.ioctl.stale,
                c.ioctl.holes,
                c.ioctl.first_mismatch.unwrap_or(0)
            )
        }
    }
    match c.pfns.status.as_str() {
        SKIPPED => s += &format!("  pfns   skipped: {}\n", c.pfns.reason.as_deref().unwrap_or("")),
        OK => s += &format!("  pfns   ok: {} PFNs match /proc/self/pagemap\n", c.pfns.pages),
        _ => {
            s += &format!("  pfns   MISMATCH: {} of {} pages have another PFN\n", c.pfns.mismatched, c.pfns.pages);
            for d in &c.pfns.diffs {
                let want = d.expected.map_or("not present".to_owned(), |p| format!("{p:#x}"));
                s += &format!("    page at offset {:#x} ({}): memfd pfn {want}, dma-buf pfn {:#x}\n", d.offset, d.offset, d.got);
            }
            s += &more(c.pfns.mismatched, c.pfns.diffs.len().min(max));
        }
    }
    match c.bytes.status.as_str() {
        SKIPPED => s += &format!("  bytes  skipped: {}\n", c.bytes.reason.as_deref().unwrap_or("")),
        OK => s += &format!("  bytes  ok: {} pages identical\n", c.bytes.pages),
        _ => {
            s += &format!("  bytes  MISMATCH: {} of {} pages differ\n", c.bytes.mismatched, c.bytes.pages);
            for d in &c.bytes.diffs {
                s += &format!(
                    "    page at offset {:#x} ({}): {} bytes differ, first at {:#x}: expected {:#04x} (memfd), got {:#04x} (dma-buf)\n",
                    d.offset, d.offset, d.bytes_differing, d.first_byte, d.expected, d.got
                );
            }
            s += &more(c.bytes.mismatched, c.bytes.diffs.len().min(max));
        }
    }
    s += if r.coherent { "coherent\n" } else { "NOT coherent\n" };
    s
}

fn print_human(r: &Report, max: usize) {
    print!("{}", render_human(r, max));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            handle: "7:3:4".into(),
            exporter: "udmabuf".into(),
            size: 16 * 4096,
            memfd_offset: 0,
            coherent: false,
            checks: Checks {
                ioctl: IoctlCheck { status: SKIPPED.into(), reason: Some("not ours".into()), pages: 16, ..Default::default() },
                pfns: PfnCheck { status: SKIPPED.into(), reason: Some("not ours".into()), pages: 16, ..Default::default() },
                bytes: ByteCheck {
                    status: MISMATCH.into(),
                    reason: None,
                    pages: 16,
                    mismatched: 2,
                    diffs: vec![ByteDiff {
                        offset: 0x4000,
                        memfd_offset: 0x4000,
                        first_byte: 0x4000,
                        bytes_differing: 4096,
                        expected: 0xab,
                        got: 0x11,
                    }],
                },
            },
        }
    }

    #[test]
    fn json_shape_round_trips() {
        let r = sample();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["coherent"], false);
        assert_eq!(v["checks"]["ioctl"]["status"], "skipped");
        assert_eq!(v["checks"]["bytes"]["diffs"][0]["offset"], 0x4000);
        assert_eq!(v["checks"]["bytes"]["diffs"][0]["expected"], 0xab);
        assert_eq!(v["checks"]["bytes"]["diffs"][0]["got"], 0x11);
        for k in ["status", "reason", "pages", "mismatched", "diffs"] {
            assert!(v["checks"]["bytes"].get(k).is_some(), "{k}");
            assert!(v["checks"]["pfns"].get(k).is_some(), "{k}");
        }
        for k in ["status", "reason", "pages", "matching", "stale", "holes", "first_mismatch"] {
            assert!(v["checks"]["ioctl"].get(k).is_some(), "{k}");
        }
        assert_eq!(serde_json::from_value::<Report>(v).unwrap(), r);
    }

    #[test]
    fn human_names_offsets() {
        let text = render_human(&sample(), 8);
        assert!(text.contains("page at offset 0x4000 (16384): 4096 bytes differ"), "{text}");
        assert!(text.contains("expected 0xab (memfd), got 0x11 (dma-buf)"), "{text}");
        assert!(text.contains("... and 1 more"), "{text}");
        assert!(text.ends_with("NOT coherent\n"));
    }
}
