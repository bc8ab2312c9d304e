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
//!
//! Verdict rule (one rule, also in `--help` and the README): the buffer is coherent when
//! no check that ran found a mismatch. (b) and (c) look at the buffer after this command
//! has mapped it and begun CPU access (DMA_BUF_IOCTL_SYNC), as any importer would, so they
//! see what an importer sees. (a) looks before that: on a buffer that is not watched
//! (its creator's mapping is gone), pages that are behind the memfd are not an
//! incoherence but the documented lazy update ("not watched: updated at the next map or
//! SYNC"); (a) then reports `not_watched` and does not decide the verdict, so a second
//! `verify` gives the same verdict as the first.

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
/// (a) on a buffer that is not watched and was behind its memfd before the map.
pub const NOT_WATCHED: &str = "not_watched";

/// (a) The VERIFY ioctl.
#[derive(Serialize, Deserialize, Debug, PartialEq, Default)]
pub struct IoctlCheck {
    /// `ok`, `mismatch`, `not_watched` or `skipped`.
    pub status: String,
    /// Why it was skipped, or what `not_watched` means.
    pub reason: Option<String>,
    /// The counts are null when the check was skipped.
    pub pages: Option<u64>,
    pub matching: Option<u64>,
    /// Pages the memfd has replaced with another page.
    pub stale: Option<u64>,
    /// Pages whose memfd offset is a hole now.
    pub holes: Option<u64>,
    /// Pages not populated (lazy policy; coherent: each comes in as the memfd's page when
    /// needed).
    pub unpopulated: Option<u64>,
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
    /// Null when skipped.
    pub pages: Option<u64>,
    pub mismatched: Option<u64>,
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
    /// Null when skipped.
    pub pages: Option<u64>,
    pub mismatched: Option<u64>,
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
    /// True when no check that ran found a mismatch (`not_watched` is not one).
    pub coherent: bool,
    /// udmabuf-live only: the buffer is watched (null for other exporters).
    pub watched: Option<bool>,
    pub checks: Checks,
}

pub fn run(args: &VerifyArgs) -> Result<ExitCode> {
    let r = args.handle.resolve()?;
    let ps = sys::page_size();
    let exporter = r.exporter.clone();
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

    // (a) first: mapping the memfd below fills its holes, and mapping the dma-buf brings
    // an unwatched buffer's pending update in.
    let live: Result<(File, udmabuf_live_uapi::UdmabufLiveInfo), String> =
        match super::live_node(args.device.device.as_deref(), &exporter) {
            Some(node) => super::open_live(&node, &r.dmabuf).map_err(|e| format!("{e:#}")),
            None => Err(format!("the dma-buf's exporter is '{exporter}', not {}", udmabuf_live_uapi::MODULE_NAME)),
        };
    let watched = live.as_ref().ok().map(|(_, i)| i.state & udmabuf_live_uapi::UDMABUF_LIVE_STATE_WATCHED != 0);
    let ioctl = match &live {
        Ok((dev, _)) => check_ioctl(dev, &r.dmabuf, pages, watched == Some(true))?,
        Err(why) => IoctlCheck { status: SKIPPED.into(), reason: Some(why.clone()), ..Default::default() },
    };
    // A handle whose memfd is another buffer's is a bad handle (exit 8), not an incoherence.
    r.check_backing(moff, live.as_ref().ok().map(|(f, _)| f))?;

    // What an importer sees from here on: map the dma-buf and begin CPU access.
    let dmap = Mapping::new(&r.dmabuf, size, false).map_err(|e| anyhow::Error::new(e).context("mmap of the dma-buf"))?;
    sys::dma_buf_sync(&r.dmabuf, sys::DMA_BUF_SYNC_START | sys::DMA_BUF_SYNC_READ).context("DMA_BUF_IOCTL_SYNC(START)")?;

    let memfd_map = Mapping::new(&r.memfd, msize, false).context("mmap of the memfd")?;
    let base = moff as usize;
    // Fault every page in (the PFN check needs present pages).
    memfd_map.fault_in();

    // (b)
    let pfns = match (&live, sys::privileged()) {
        (Err(why), _) => PfnCheck { status: SKIPPED.into(), reason: Some(why.clone()), ..Default::default() },
        (Ok(_), false) => PfnCheck {
            status: SKIPPED.into(),
            reason: Some("needs CAP_SYS_ADMIN (run as root) for PFNS and /proc/self/pagemap".into()),
            ..Default::default()
        },
        (Ok((dev, _)), true) => check_pfns(dev, &r.dmabuf, memfd_map.addr() + base, pages, args.max_report)?,
    };

    // (c)
    let bytes = check_bytes(&dmap, &memfd_map, moff, size, args.max_report);
    sys::dma_buf_sync(&r.dmabuf, sys::DMA_BUF_SYNC_END | sys::DMA_BUF_SYNC_READ).context("DMA_BUF_IOCTL_SYNC(END)")?;

    let checks = Checks { ioctl, pfns, bytes };
    let coherent = coherent(&checks);
    let report = Report { handle: r.handle.to_string(), exporter, size, memfd_offset: moff, coherent, watched, checks };
    if args.json {
        output::json(&report)?;
    } else {
        print_human(&report, args.max_report);
    }
    Ok(if coherent { ExitCode::SUCCESS } else { ExitCode::from(INCOHERENT) })
}

/// The verdict rule: no check that ran found a mismatch.
pub fn coherent(c: &Checks) -> bool {
    [&c.ioctl.status, &c.pfns.status, &c.bytes.status].iter().all(|s| *s != MISMATCH)
}

fn check_ioctl(dev: &File, dmabuf: &OwnedFd, pages: u64, watched: bool) -> Result<IoctlCheck> {
    let v = sys::live_verify(dev, dmabuf).context("UDMABUF_LIVE_VERIFY")?;
    Ok(ioctl_check(&v, pages, watched))
}

/// (a)'s result from VERIFY's counts.
pub fn ioctl_check(v: &udmabuf_live_uapi::UdmabufLiveVerify, pages: u64, watched: bool) -> IoctlCheck {
    let ok = v.matching + v.unpopulated == v.pages && v.pages == pages;
    let (status, reason) = match (ok, watched) {
        (true, _) => (OK, None),
        (false, true) => (MISMATCH, None),
        (false, false) => (
            NOT_WATCHED,
            Some("not watched: updated at the next map or SYNC (this verify maps the buffer before checks b and c)".to_owned()),
        ),
    };
    IoctlCheck {
        status: status.into(),
        reason,
        pages: Some(v.pages),
        matching: Some(v.matching),
        stale: Some(v.stale),
        holes: Some(v.holes),
        unpopulated: Some(v.unpopulated),
        first_mismatch: (v.first_mismatch != u64::MAX).then_some(v.first_mismatch),
    }
}

fn check_pfns(dev: &File, dmabuf: &OwnedFd, addr: usize, pages: u64, max: usize) -> Result<PfnCheck> {
    const CHUNK: u64 = 4096;
    let ps = sys::page_size();
    let mut check = PfnCheck { status: OK.into(), pages: Some(pages), mismatched: Some(0), ..Default::default() };
    let mut mismatched = 0;
    let mut first = 0;
    while first < pages {
        let n = (pages - first).min(CHUNK);
        let mut got = vec![0u64; n as usize];
        match sys::live_pfns(dev, dmabuf, first, &mut got) {
            Ok(()) => {}
            Err(Errno::EPERM) => {
                let reason = Some("the PFNS ioctl was refused (EPERM): needs CAP_SYS_ADMIN".into());
                return Ok(PfnCheck { status: SKIPPED.into(), reason, ..Default::default() });
            }
            Err(e) => return Err(anyhow::Error::new(e).context("UDMABUF_LIVE_PFNS")),
        }
        let want = sys::pagemap_pfns(addr + (first * ps) as usize, n).context("reading /proc/self/pagemap")?;
        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
            if *w != Some(*g) {
                mismatched += 1;
                if check.diffs.len() < max {
                    check.diffs.push(PfnDiff { offset: (first + i as u64) * ps, expected: *w, got: *g });
                }
            }
        }
        first += n;
    }
    check.mismatched = Some(mismatched);
    if mismatched > 0 {
        check.status = MISMATCH.into();
    }
    Ok(check)
}

fn check_bytes(map: &Mapping, memfd_map: &Mapping, moff: u64, size: u64, max: usize) -> ByteCheck {
    let ps = sys::page_size();
    let mut check = ByteCheck { status: OK.into(), pages: Some(size / ps), ..Default::default() };
    let mut mismatched = 0;
    let mut want = vec![0u8; ps as usize];
    let mut got = vec![0u8; ps as usize];
    for off in (0..size).step_by(ps as usize) {
        memfd_map.read_into(moff + off, &mut want);
        map.read_into(off, &mut got);
        if want == got {
            continue;
        }
        mismatched += 1;
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
    check.mismatched = Some(mismatched);
    if mismatched > 0 {
        check.status = MISMATCH.into();
    }
    check
}

fn n(v: Option<u64>) -> u64 {
    v.unwrap_or(0)
}

fn more(total: u64, shown: usize) -> String {
    if total > shown as u64 {
        format!("    ... and {} more\n", total - shown as u64)
    } else {
        String::new()
    }
}

pub fn render_human(r: &Report, max: usize) -> String {
    let mut s =
        format!("verify {}: {} dma-buf from {}, {} pages\n", r.handle, human(r.size), r.exporter, r.size / sys::page_size());
    let c = &r.checks;
    match c.ioctl.status.as_str() {
        SKIPPED => s += &format!("  ioctl  skipped: {}\n", c.ioctl.reason.as_deref().unwrap_or("")),
        OK => {
            s += &format!("  ioctl  ok: {}/{} pages are the memfd's pages", n(c.ioctl.matching), n(c.ioctl.pages));
            if n(c.ioctl.unpopulated) > 0 {
                s += &format!(", {} not populated yet (each comes in as the memfd's page when needed)", n(c.ioctl.unpopulated));
            }
            s += "\n";
        }
        NOT_WATCHED => {
            s += &format!(
                "  ioctl  not watched: updated at the next map or SYNC; {} of {} pages were behind the memfd before this verify mapped the buffer (not counted as incoherent)\n",
                n(c.ioctl.pages) - n(c.ioctl.matching) - n(c.ioctl.unpopulated),
                n(c.ioctl.pages)
            )
        }
        _ => {
            s += &format!(
                "  ioctl  MISMATCH: {} of {} pages differ ({} replaced in the memfd, {} holes now), first at offset {:#x}\n",
                n(c.ioctl.pages) - n(c.ioctl.matching) - n(c.ioctl.unpopulated),
                n(c.ioctl.pages),
                n(c.ioctl.stale),
                n(c.ioctl.holes),
                c.ioctl.first_mismatch.unwrap_or(0)
            )
        }
    }
    match c.pfns.status.as_str() {
        SKIPPED => s += &format!("  pfns   skipped: {}\n", c.pfns.reason.as_deref().unwrap_or("")),
        OK => s += &format!("  pfns   ok: {} PFNs match /proc/self/pagemap\n", n(c.pfns.pages)),
        _ => {
            s += &format!("  pfns   MISMATCH: {} of {} pages have another PFN\n", n(c.pfns.mismatched), n(c.pfns.pages));
            for d in &c.pfns.diffs {
                let want = d.expected.map_or("not present".to_owned(), |p| format!("{p:#x}"));
                s += &format!("    page at offset {:#x} ({}): memfd pfn {want}, dma-buf pfn {:#x}\n", d.offset, d.offset, d.got);
            }
            s += &more(n(c.pfns.mismatched), c.pfns.diffs.len().min(max));
        }
    }
    match c.bytes.status.as_str() {
        SKIPPED => s += &format!("  bytes  skipped: {}\n", c.bytes.reason.as_deref().unwrap_or("")),
        OK => s += &format!("  bytes  ok: {} pages identical\n", n(c.bytes.pages)),
        _ => {
            s += &format!("  bytes  MISMATCH: {} of {} pages differ\n", n(c.bytes.mismatched), n(c.bytes.pages));
            for d in &c.bytes.diffs {
                s += &format!(
                    "    page at offset {:#x} ({}): {} bytes differ, first at {:#x}: expected {:#04x} (memfd), got {:#04x} (dma-buf)\n",
                    d.offset, d.offset, d.bytes_differing, d.first_byte, d.expected, d.got
                );
            }
            s += &more(n(c.bytes.mismatched), c.bytes.diffs.len().min(max));
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
            watched: None,
            checks: Checks {
                ioctl: IoctlCheck { status: SKIPPED.into(), reason: Some("not ours".into()), ..Default::default() },
                pfns: PfnCheck { status: SKIPPED.into(), reason: Some("not ours".into()), ..Default::default() },
                bytes: ByteCheck {
                    status: MISMATCH.into(),
                    reason: None,
                    pages: Some(16),
                    mismatched: Some(2),
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
        for k in ["status", "reason", "pages", "matching", "stale", "holes", "unpopulated", "first_mismatch"] {
            assert!(v["checks"]["ioctl"].get(k).is_some(), "{k}");
        }
        // Skipped checks have no counts: not `"matching":0`.
        assert!(v["checks"]["ioctl"]["matching"].is_null(), "{v}");
        assert!(v["checks"]["pfns"]["mismatched"].is_null(), "{v}");
        assert_eq!(v["checks"]["bytes"]["mismatched"], 2);
        assert_eq!(serde_json::from_value::<Report>(v).unwrap(), r);
    }

    /// The verify of an unwatched buffer whose update is still pending (first run) and
    /// the one after it (the map brought the update in) give the same verdict.
    #[test]
    fn unwatched_buffer_has_one_verdict() {
        let behind = udmabuf_live_uapi::UdmabufLiveVerify {
            pages: 16,
            matching: 14,
            stale: 2,
            first_mismatch: 0x4000,
            ..Default::default()
        };
        let caught_up =
            udmabuf_live_uapi::UdmabufLiveVerify { pages: 16, matching: 16, first_mismatch: u64::MAX, ..Default::default() };
        let ok = |pages| ByteCheck { status: OK.into(), pages: Some(pages), mismatched: Some(0), ..Default::default() };
        let pf = |pages| PfnCheck { status: OK.into(), pages: Some(pages), mismatched: Some(0), ..Default::default() };
        let first = Checks { ioctl: ioctl_check(&behind, 16, false), pfns: pf(16), bytes: ok(16) };
        let second = Checks { ioctl: ioctl_check(&caught_up, 16, false), pfns: pf(16), bytes: ok(16) };
        assert_eq!(first.ioctl.status, NOT_WATCHED);
        assert!(first.ioctl.reason.as_deref().unwrap().contains("not watched: updated at the next map or SYNC"));
        assert!(coherent(&first) && coherent(&second));
        // A watched buffer that is behind is incoherent.
        let watched = Checks { ioctl: ioctl_check(&behind, 16, true), pfns: pf(16), bytes: ok(16) };
        assert!(!coherent(&watched));
        let r = Report { coherent: true, watched: Some(false), checks: first, size: 16 * 4096, ..Default::default() };
        let text = render_human(&r, 8);
        assert!(text.contains("ioctl  not watched: updated at the next map or SYNC; 2 of 16 pages"), "{text}");
        assert!(text.ends_with("coherent\n") && !text.contains("NOT coherent"), "{text}");
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
