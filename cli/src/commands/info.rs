//! `udmabuf-ctl info HANDLE`: the INFO ioctl, with the memfd's and the dma-buf's basics.

use super::{is_hugetlb, memfd_size, resolve_live};
use crate::cli::InfoArgs;
use crate::output;
use crate::sys;
use crate::units::human;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::process::ExitCode;
use udmabuf_live_uapi as uapi;

/// UDMABUF_LIVE_INFO, spelled out.
#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
pub struct LiveInfo {
    /// `shmem`, `hugetlb` or `mixed`.
    pub backing: String,
    pub size: u64,
    pub generation: u64,
    pub updates: u64,
    pub pages_swapped: u64,
    /// Names of the set state bits: `pending`, `stale`, `watched`, `vmapped`.
    pub state: Vec<String>,
    pub pins: u32,
    /// Mappings of the memfd ranges watched now, in every process.
    pub notifiers: u32,
    pub ranges: u32,
    /// The module's repopulation policy now: `lazy` or `eager`.
    pub repopulate: String,
    /// Pages the memfd lost that nothing has needed since (lazy policy): not populated.
    pub unpopulated: u64,
}

impl From<&uapi::UdmabufLiveInfo> for LiveInfo {
    fn from(i: &uapi::UdmabufLiveInfo) -> Self {
        let backing = match i.backing {
            uapi::UDMABUF_LIVE_BACKING_SHMEM => "shmem".to_owned(),
            uapi::UDMABUF_LIVE_BACKING_HUGETLB => "hugetlb".to_owned(),
            uapi::UDMABUF_LIVE_BACKING_MIXED => "mixed".to_owned(),
            other => format!("unknown({other})"),
        };
        let bits = [
            (uapi::UDMABUF_LIVE_STATE_PENDING, "pending"),
            (uapi::UDMABUF_LIVE_STATE_STALE, "stale"),
            (uapi::UDMABUF_LIVE_STATE_WATCHED, "watched"),
            (uapi::UDMABUF_LIVE_STATE_VMAPPED, "vmapped"),
        ];
        LiveInfo {
            backing,
            size: i.size,
            generation: i.generation,
            updates: i.updates,
            pages_swapped: i.pages_swapped,
            state: bits.iter().filter(|(b, _)| i.state & b != 0).map(|(_, n)| (*n).to_owned()).collect(),
            pins: i.pins,
            notifiers: i.notifiers,
            ranges: i.ranges,
            repopulate: match i.repopulate {
                uapi::UDMABUF_LIVE_REPOPULATE_LAZY => "lazy".to_owned(),
                uapi::UDMABUF_LIVE_REPOPULATE_EAGER => "eager".to_owned(),
                other => format!("unknown({other})"),
            },
            unpopulated: i.unpopulated,
        }
    }
}

impl LiveInfo {
    /// The state in words: whether the buffer is watched, then the other bits.
    pub fn state_text(&self) -> String {
        let has = |b: &str| self.state.iter().any(|s| s == b);
        let mut words = vec![if has("watched") { "watched" } else { "not watched" }];
        if has("pending") {
            words.push("update pending");
        }
        if has("stale") {
            words.push("stale (update deferred by a pin or vmap)");
        }
        if has("vmapped") {
            words.push("vmapped");
        }
        words.join(", ")
    }

    /// What the state means for someone reading the buffer, for `info`.
    pub fn state_explained(&self) -> Option<&'static str> {
        if self.state.iter().any(|s| s == "stale") {
            Some("importers and mmaps see the old pages until the last pin or vmap goes (then SYNC applies the update)")
        } else if !self.state.iter().any(|s| s == "watched") {
            Some("not watched: no mapping of the memfd, in any process, covers every page, so punches are seen lazily: updated at the next map or SYNC")
        } else {
            None
        }
    }
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct MemfdInfo {
    pub size: u64,
    /// `shmem` or `hugetlb`.
    pub backing: String,
    pub seals: Vec<String>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct InfoOut {
    pub handle: String,
    pub exporter: String,
    pub dmabuf_size: u64,
    pub memfd: MemfdInfo,
    pub live: LiveInfo,
}

pub fn run(args: &InfoArgs) -> Result<ExitCode> {
    let (r, _dev, raw) = resolve_live(&args.handle, args.device.device.as_deref())?;
    let out = InfoOut {
        handle: r.handle.to_string(),
        exporter: sys::dmabuf_exporter(&r.dmabuf).unwrap_or_default(),
        dmabuf_size: sys::dmabuf_size(&r.dmabuf).context("lseek on the dma-buf")?,
        memfd: MemfdInfo {
            size: memfd_size(&r.memfd)?,
            backing: if is_hugetlb(&r.memfd) { "hugetlb" } else { "shmem" }.into(),
            seals: sys::get_seals(&r.memfd)
                .map(|s| sys::seal_names(s).iter().map(|n| n.to_string()).collect())
                .unwrap_or_default(),
        },
        live: LiveInfo::from(&raw),
    };
    if args.json {
        output::json(&out)?;
    } else {
        let l = &out.live;
        println!("buffer     {} ({} {}, exporter {})", out.handle, human(l.size), l.backing, out.exporter);
        println!("memfd      {} {}, seals {}", human(out.memfd.size), out.memfd.backing, out.memfd.seals.join(","));
        println!("state      {}", l.state_text());
        if let Some(why) = l.state_explained() {
            println!("           ({why})");
        }
        println!("generation {}  updates {}  pages swapped {}", l.generation, l.updates, l.pages_swapped);
        println!("pins       {}  watched mappings {}  ranges {}", l.pins, l.notifiers, l.ranges);
        println!(
            "repopulate {}  unpopulated pages {}{}",
            l.repopulate,
            l.unpopulated,
            if l.unpopulated > 0 { " (punched; each comes in when something needs it)" } else { "" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_info_names_and_round_trip() {
        let raw = uapi::UdmabufLiveInfo {
            dmabuf_fd: 4,
            backing: uapi::UDMABUF_LIVE_BACKING_HUGETLB,
            size: 4 << 20,
            generation: 3,
            updates: 2,
            pages_swapped: 1024,
            state: uapi::UDMABUF_LIVE_STATE_WATCHED | uapi::UDMABUF_LIVE_STATE_PENDING,
            pins: 0,
            notifiers: 1,
            ranges: 1,
            repopulate: uapi::UDMABUF_LIVE_REPOPULATE_LAZY,
            __pad: 0,
            unpopulated: 7,
        };
        let l = LiveInfo::from(&raw);
        assert_eq!(l.backing, "hugetlb");
        assert_eq!(l.state, ["pending", "watched"]);
        let v = serde_json::to_value(&l).unwrap();
        assert_eq!((l.repopulate.as_str(), l.unpopulated), ("lazy", 7));
        for k in [
            "backing",
            "size",
            "generation",
            "updates",
            "pages_swapped",
            "state",
            "pins",
            "notifiers",
            "ranges",
            "repopulate",
            "unpopulated",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert_eq!(serde_json::from_value::<LiveInfo>(v).unwrap(), l);
        assert_eq!(LiveInfo::from(&uapi::UdmabufLiveInfo { backing: 9, ..raw }).backing, "unknown(9)");
        assert_eq!(l.state_text(), "watched, update pending");
    }

    /// An unwatched buffer's state is said in words, not `-`.
    #[test]
    fn unwatched_state_in_words() {
        let l = LiveInfo::from(&uapi::UdmabufLiveInfo { state: 0, ..Default::default() });
        assert_eq!(l.state_text(), "not watched");
        assert!(l.state_explained().unwrap().contains("updated at the next map or SYNC"));
        let l = LiveInfo::from(&uapi::UdmabufLiveInfo { state: uapi::UDMABUF_LIVE_STATE_WATCHED, ..Default::default() });
        assert_eq!(l.state_explained(), None);
    }
}
