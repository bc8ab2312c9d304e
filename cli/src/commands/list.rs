//! `udmabuf-ctl list`: every live dma-buf on the system (udmabuf-live's by default).
//!
//! Scans /proc/*/fd for dma-bufs (their links read `/dmabuf:NAME`, or `anon_inode:dmabuf`
//! on older kernels) and reads `exp_name` from /proc/PID/fdinfo/FD, which the dma-buf core
//! prints as `size:\t…`, `count:\t…`, `exp_name:\t…` (dma_buf_show_fdinfo). For
//! udmabuf-live buffers the INFO ioctl adds the live state when the fd can be reached
//! (pidfd_getfd: same user or root).

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
        for fd in fdnums {
            let Ok(target) = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")) else { continue };
            if !is_dmabuf_link(&target.to_string_lossy()) {
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
                ino: info.get("ino").and_then(|v| v.parse().ok()),
                size: info.get("size").and_then(|v| v.parse().ok()),
                exporter,
                name: info.get("name").cloned(),
                live: None,
            });
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

fn print_human(l: &Listing) {
    if l.buffers.is_empty() {
        println!("no dma-bufs");
    } else {
        println!("{:>7} {:<15} {:>4} {:>8} {:>10} {:<14} {:>5} {:>7} STATE", "PID", "COMMAND", "FD", "INODE", "SIZE", "EXPORTER", "GEN", "UPDATES");
        for b in &l.buffers {
            let opt = |v: Option<u64>| v.map_or("?".to_owned(), |v| v.to_string());
            let (gen, upd, state) = match &b.live {
                Some(i) => (i.generation.to_string(), i.updates.to_string(), i.state_text()),
                None => ("-".into(), "-".into(), "-".into()),
            };
            println!(
                "{:>7} {:<15} {:>4} {:>8} {:>10} {:<14} {:>5} {:>7} {}",
                b.pid,
                b.comm,
                b.fd,
                opt(b.ino),
                b.size.map_or("?".to_owned(), human),
                b.exporter,
                gen,
                upd,
                state
            );
        }
    }
    if l.unreadable_processes > 0 {
        eprintln!("udmabuf-ctl: {} processes could not be inspected (run as root to see them)", l.unreadable_processes);
    }
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
                ino: Some(99),
                size: Some(4096),
                exporter: "udmabuf_live".into(),
                name: None,
                live: None,
            }],
            unreadable_processes: 0,
        };
        let v = serde_json::to_value(&l).unwrap();
        for k in ["pid", "comm", "fd", "ino", "size", "exporter", "name", "live"] {
            assert!(v["buffers"][0].get(k).is_some(), "{k}");
        }
        assert_eq!(serde_json::from_value::<Listing>(v).unwrap(), l);
    }
}
