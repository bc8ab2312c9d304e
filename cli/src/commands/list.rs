//! `udmabuf-ctl list`: every live dma-buf on the system (udmabuf-live's by default).
//!
//! Scans /proc/*/fd for dma-bufs (their links read `/dmabuf:NAME`, or `anon_inode:dmabuf`
//! on older kernels) and reads `exp_name` from /proc/PID/fdinfo/FD, which the dma-buf core
//! prints as `size:\t…`, `count:\t…`, `exp_name:\t…` (dma_buf_show_fdinfo). For
//! udmabuf-live buffers the INFO ioctl adds the live state when the fd can be reached
//! (pidfd_getfd: same user or root).
//!
//! The HANDLE column is `PID:MEMFD_FD:DMABUF_FD` for a dma-buf whose memfd is open in the
//! same process: among that process's memfds, the one that backs the dma-buf (the check
//! every handle command makes; a lone memfd with nothing to compare yet is taken as is).

use super::info::LiveInfo;
use crate::cli::ListArgs;
use crate::output;
use crate::sys;
use crate::units::human;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::process::ExitCode;

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct Entry {
    pub pid: i32,
    /// The process's name (/proc/PID/comm).
    pub comm: String,
    pub fd: i32,
    /// The fd of the memfd behind the dma-buf in the same process, if found.
    pub memfd_fd: Option<i32>,
    /// `PID:MEMFD_FD:DMABUF_FD`, for the other commands, when the memfd was found.
    pub handle: Option<String>,
    /// The dma-buf's inode: the same buffer open in several places has one inode.
    pub ino: Option<u64>,
    pub size: Option<u64>,
    pub exporter: String,
    /// The name set with DMA_BUF_SET_NAME, if any.
    pub name: Option<String>,
    /// INFO, for udmabuf-live buffers this process could reach.
    pub live: Option<LiveInfo>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct Listing {
    pub buffers: Vec<Entry>,
    /// Processes whose fds could not be read (run as root to see them).
    pub unreadable_processes: u64,
}

fn is_dmabuf_link(target: &str) -> bool {
    target.starts_with("/dmabuf:") || target == "anon_inode:dmabuf"
}

pub fn run(args: &ListArgs) -> Result<ExitCode> {
    let me = std::process::id() as i32;
    let mut buffers = Vec::new();
    let mut unreadable = 0;
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")?
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .filter(|&p| p != me)
        .collect();
    pids.sort_unstable();
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            // Gone already, or not ours to read.
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                unreadable += 1;
            }
            continue;
        };
        let mut fdnums: Vec<i32> = fds.flatten().filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok())).collect();
        fdnums.sort_unstable();
        let targets: Vec<(i32, String)> = fdnums
            .iter()
            .filter_map(|&fd| {
                std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok().map(|t| (fd, t.to_string_lossy().into_owned()))
            })
            .collect();
        let memfds: Vec<i32> = targets.iter().filter(|(_, t)| t.starts_with("/memfd:")).map(|(fd, _)| *fd).collect();
        for (fd, target) in &targets {
            let fd = *fd;
            if !is_dmabuf_link(target) {
                continue;
            }
            let Some(info) = sys::fdinfo(&pid.to_string(), &fd.to_string()) else { continue };
            let exporter = info.get("exp_name").cloned().unwrap_or_default();
            if !args.all && exporter != udmabuf_live_uapi::MODULE_NAME {
                continue;
            }
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).map(|s| s.trim().to_owned()).unwrap_or_default();
            buffers.push(Entry {
                pid,
                comm,
                fd,
                memfd_fd: None,
                handle: None,
                ino: info.get("ino").and_then(|v| v.parse().ok()),
                size: info.get("size").and_then(|v| v.parse().ok()),
                exporter,
                name: info.get("name").cloned(),
                live: None,
            });
            let e = buffers.last_mut().unwrap();
            e.memfd_fd = find_memfd(pid, fd, &memfds);
            e.handle = e.memfd_fd.map(|m| format!("{pid}:{m}:{fd}"));
        }
    }
    // INFO for our buffers, when the device and the fds can be reached.
    if buffers.iter().any(|b| b.exporter == udmabuf_live_uapi::MODULE_NAME) {
        if let Ok(dev) = std::fs::OpenOptions::new().read(true).write(true).open(&args.device.device) {
            for b in buffers.iter_mut().filter(|b| b.exporter == udmabuf_live_uapi::MODULE_NAME) {
                let Ok(pidfd) = sys::pidfd_open(b.pid) else { continue };
                let Ok(fd) = sys::pidfd_getfd(std::os::fd::AsRawFd::as_raw_fd(&pidfd), b.fd) else { continue };
                if let Ok(i) = sys::live_info(&dev, &fd) {
                    b.live = Some(LiveInfo::from(&i));
                }
            }
        }
    }
    let listing = Listing { buffers, unreadable_processes: unreadable };
    if args.json {
        output::json(&listing)?;
    } else {
        print_human(&listing);
    }
    Ok(ExitCode::SUCCESS)
}

/// The memfd of process `pid` that backs its dma-buf `dmabuf`, among `memfds`.
fn find_memfd(pid: i32, dmabuf: i32, memfds: &[i32]) -> Option<i32> {
    use crate::handle::{Backing, Handle};
    let live_dev =
        std::fs::OpenOptions::new().read(true).write(true).open(format!("/dev/{}", udmabuf_live_uapi::DEVICE_NAME)).ok();
    let mut unknown = Vec::new();
    for &m in memfds {
        let Ok(r) = (Handle { pid, memfd: m, dmabuf }).resolve() else { continue };
        let dev = live_dev.as_ref().filter(|d| sys::live_info(*d, &r.dmabuf).is_ok());
        match r.backing(0, dev) {
            Ok(Backing::Yes) => return Some(m),
            Ok(Backing::Unknown) => unknown.push(m),
            _ => {}
        }
    }
    (unknown.len() == 1).then(|| unknown[0])
}

fn print_human(l: &Listing) {
    if l.buffers.is_empty() {
        println!("no dma-bufs");
    } else {
        print!("{}", render_human(l));
    }
    if l.unreadable_processes > 0 {
        eprintln!("udmabuf-ctl: {} processes could not be inspected (run as root to see them)", l.unreadable_processes);
    }
}

pub fn render_human(l: &Listing) -> String {
    let mut s = format!(
        "{:>7} {:<15} {:<16} {:>4} {:>5} {:>8} {:>10} {:<14} {:>5} {:>7} STATE\n",
        "PID", "COMMAND", "HANDLE", "FD", "MEMFD", "INODE", "SIZE", "EXPORTER", "GEN", "UPDATES"
    );
    {
        for b in &l.buffers {
            let opt = |v: Option<u64>| v.map_or("?".to_owned(), |v| v.to_string());
            let (gen, upd, state) = match &b.live {
                Some(i) => (i.generation.to_string(), i.updates.to_string(), i.state_text()),
                None if b.exporter == udmabuf_live_uapi::MODULE_NAME => {
                    ("?".into(), "?".into(), "unknown (fd not reachable)".into())
                }
                None => ("-".into(), "-".into(), "n/a (not udmabuf-live)".into()),
            };
            s += &format!(
                "{:>7} {:<15} {:<16} {:>4} {:>5} {:>8} {:>10} {:<14} {:>5} {:>7} {}\n",
                b.pid,
                b.comm,
                b.handle.as_deref().unwrap_or("-"),
                b.fd,
                b.memfd_fd.map_or("-".to_owned(), |m| m.to_string()),
                opt(b.ino),
                b.size.map_or("?".to_owned(), human),
                b.exporter,
                gen,
                upd,
                state
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dmabuf_links() {
        assert!(is_dmabuf_link("/dmabuf:"));
        assert!(is_dmabuf_link("/dmabuf:scanout"));
        assert!(is_dmabuf_link("anon_inode:dmabuf"));
        assert!(!is_dmabuf_link("/memfd:udmabuf-ctl (deleted)"));
        assert!(!is_dmabuf_link("anon_inode:[pidfd]"));
    }

    #[test]
    fn json_shape_round_trips() {
        let l = Listing {
            buffers: vec![Entry {
                pid: 5,
                comm: "udmabuf-ctl".into(),
                fd: 4,
                memfd_fd: Some(3),
                handle: Some("5:3:4".into()),
                ino: Some(99),
                size: Some(4096),
                exporter: "udmabuf_live".into(),
                name: None,
                live: None,
            }],
            unreadable_processes: 0,
        };
        let v = serde_json::to_value(&l).unwrap();
        for k in ["pid", "comm", "fd", "memfd_fd", "handle", "ino", "size", "exporter", "name", "live"] {
            assert!(v["buffers"][0].get(k).is_some(), "{k}");
        }
        assert_eq!(serde_json::from_value::<Listing>(v).unwrap(), l);
        let text = render_human(&l);
        assert!(text.lines().next().unwrap().contains(" HANDLE ") && text.contains(" MEMFD "), "{text}");
        assert!(text.contains("5:3:4"), "{text}");
        assert!(text.contains("unknown (fd not reachable)"), "{text}");
    }
}
