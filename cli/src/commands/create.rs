//! `udmabuf-ctl create`: memfd -> (fill) -> UDMABUF_CREATE, then release, hold or exec.

use crate::cli::CreateArgs;
use crate::exit::CtlError;
use crate::format::{self, Layout};
use crate::pattern::Pattern;
use crate::sys::{self, Mapping, HUGE_PAGE};
use crate::units::human;
use crate::{device, output};
use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::SealFlag;
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use nix::sys::signal::{SigSet, Signal};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    Shmem,
    Hugetlb,
}

impl Backing {
    fn granule(self) -> u64 {
        match self {
            Backing::Shmem => sys::page_size(),
            Backing::Hugetlb => HUGE_PAGE,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Backing::Shmem => "shmem",
            Backing::Hugetlb => "hugetlb",
        }
    }
}

#[derive(Debug)]
pub enum Mode {
    /// Create, report, release.
    Once,
    Hold,
    Exec(Vec<OsString>),
}

/// A validated `create` request.
#[derive(Debug)]
pub struct Config {
    pub size: u64,
    pub backing: Backing,
    pub layout: Option<Layout>,
    pub fill: Option<Pattern>,
    pub device: PathBuf,
    pub mode: Mode,
    pub json: bool,
}

impl Config {
    pub fn from_args(a: CreateArgs) -> Result<Self> {
        let backing = if a.hugetlb { Backing::Hugetlb } else { Backing::Shmem };
        let granule = backing.granule();
        let (size, layout) = match (a.size, &a.format) {
            (Some(s), None) => {
                if s.0 == 0 {
                    return Err(CtlError::Usage("--size must be at least one page".into()).into());
                }
                if s.0 % granule != 0 {
                    return Err(CtlError::Usage(format!(
                        "--size {} is not a multiple of the {} page size ({})",
                        s.0,
                        backing.name(),
                        human(granule)
                    ))
                    .into());
                }
                (s.0, None)
            }
            (None, Some(f)) => {
                let spec = format::lookup(f).map_err(CtlError::Usage)?;
                let (w, h) = (a.width.unwrap_or(0), a.height.unwrap_or(0));
                let l = format::layout(spec, w, h, a.stride_align).map_err(CtlError::Usage)?;
                let size = crate::units::align_up(l.size, granule)
                    .ok_or_else(|| CtlError::Usage(format!("{w}x{h} {f} is too large")))?;
                (size, Some(l))
            }
            _ => return Err(CtlError::Usage("give either --size or --format with --width and --height".into()).into()),
        };
        let mode = if a.hold {
            Mode::Hold
        } else if a.exec {
            Mode::Exec(a.command)
        } else {
            Mode::Once
        };
        Ok(Config { size, backing, layout, fill: a.fill, device: a.device.device, mode, json: a.json })
    }
}

/// What `create` reports (`--json` prints exactly this).
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct Created {
    /// `PID:MEMFD_FD:DMABUF_FD` while the buffer is held (`--hold`, `--exec`), else null.
    pub handle: Option<String>,
    pub pid: u32,
    pub memfd_fd: i32,
    pub dmabuf_fd: i32,
    pub size: u64,
    /// `shmem` or `hugetlb`.
    pub backing: String,
    pub device: String,
    /// The fill pattern, if any.
    pub fill: Option<String>,
    /// The DRM layout with --format, else null.
    pub layout: Option<Layout>,
    /// `once` (released at exit), `hold` or `exec`.
    pub mode: String,
}

/// The created objects; dropping it releases the buffer (mapping last).
struct Made {
    dmabuf: OwnedFd,
    memfd: OwnedFd,
    _map: Mapping,
}

pub fn run(args: CreateArgs) -> Result<ExitCode> {
    let cfg = Config::from_args(args)?;
    let made = make(&cfg)?;
    let pid = std::process::id();
    let handle = format!("{pid}:{}:{}", made.memfd.as_raw_fd(), made.dmabuf.as_raw_fd());
    let report = Created {
        handle: (!matches!(cfg.mode, Mode::Once)).then(|| handle.clone()),
        pid,
        memfd_fd: made.memfd.as_raw_fd(),
        dmabuf_fd: made.dmabuf.as_raw_fd(),
        size: cfg.size,
        backing: cfg.backing.name().into(),
        device: cfg.device.display().to_string(),
        fill: cfg.fill.map(|p| p.to_string()),
        layout: cfg.layout.clone(),
        mode: match cfg.mode {
            Mode::Once => "once",
            Mode::Hold => "hold",
            Mode::Exec(_) => "exec",
        }
        .into(),
    };
    match &cfg.mode {
        Mode::Once => {
            print_report(&report, cfg.json, false)?;
            drop(made);
            Ok(ExitCode::SUCCESS)
        }
        Mode::Hold => hold(&report, cfg.json, made),
        Mode::Exec(cmd) => exec(&report, &cfg, &handle, cmd, made),
    }
}

fn print_report(r: &Created, json: bool, to_stderr: bool) -> Result<()> {
    if json {
        return output::json(r);
    }
    let mut text = format!(
        "created {} {} dma-buf on {} (memfd fd {}, dma-buf fd {}{})\n",
        human(r.size),
        r.backing,
        r.device,
        r.memfd_fd,
        r.dmabuf_fd,
        r.fill.as_ref().map_or(String::new(), |f| format!(", filled with {f}"))
    );
    if let Some(l) = &r.layout {
        text += &format!(
            "layout  {} ({}) {}x{}, strides aligned to {} bytes, {} bytes used\n",
            l.fourcc, l.format, l.width, l.height, l.stride_align, l.size
        );
        for (i, p) in l.planes.iter().enumerate() {
            text += &format!(
                "  plane {i}: offset {:>10}  stride {:>6}  {}x{} samples  {} bytes\n",
                p.offset, p.stride, p.width, p.height, p.size
            );
        }
    }
    match (&r.handle, r.mode.as_str()) {
        (Some(h), "hold") => text += &format!("handle  {h}\nholding until SIGINT or SIGTERM\n"),
        (Some(h), _) => text += &format!("handle  {h}\n"),
        _ => text += "released at exit (use --hold or --exec to keep it)\n",
    }
    if to_stderr {
        eprint!("{text}");
    } else {
        use std::io::Write;
        let mut o = std::io::stdout().lock();
        o.write_all(text.as_bytes())?;
        o.flush()?;
    }
    Ok(())
}

fn hugepage_advice(size: u64) -> String {
    let free = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines().find_map(|l| l.strip_prefix("HugePages_Free:").and_then(|v| v.trim().parse::<u64>().ok()))
    });
    let need = size.div_ceil(HUGE_PAGE);
    format!(
        "huge pages not reserved: this buffer needs {need} free 2 MiB pages ({}); reserve them with \
         `echo N > /proc/sys/vm/nr_hugepages` (N = pages in use + {need}) or boot with hugepages=N",
        free.map_or("HugePages_Free unknown".into(), |f| format!("HugePages_Free is {f}"))
    )
}

fn make(cfg: &Config) -> Result<Made> {
    // The device first: no point filling a memfd for a device that is not there.
    let dev = device::open(&cfg.device)?;
    let mut flags = MemFdCreateFlag::MFD_ALLOW_SEALING | MemFdCreateFlag::MFD_CLOEXEC;
    if cfg.backing == Backing::Hugetlb {
        flags |= MemFdCreateFlag::MFD_HUGETLB | MemFdCreateFlag::MFD_HUGE_2MB;
    }
    let memfd = memfd_create(c"udmabuf-ctl", flags).map_err(|e| -> anyhow::Error {
        match (cfg.backing, e) {
            (Backing::Hugetlb, Errno::EINVAL | Errno::ENOENT | Errno::ENODEV) => CtlError::NoMemory(format!(
                "memfd_create(MFD_HUGETLB|MFD_HUGE_2MB): {e}: the kernel offers no 2 MiB hugetlbfs pages \
                 (CONFIG_HUGETLBFS; a 2 MiB huge page size)"
            ))
            .into(),
            (_, Errno::ENOMEM) => CtlError::NoMemory(format!("memfd_create: {e}")).into(),
            _ => anyhow::Error::new(e).context("memfd_create"),
        }
    })?;
    let size = i64::try_from(cfg.size).context("size too large")?;
    nix::unistd::ftruncate(&memfd, size).map_err(|e| -> anyhow::Error {
        match (cfg.backing, e) {
            (Backing::Hugetlb, Errno::ENOMEM | Errno::EINVAL) => {
                CtlError::NoMemory(format!("ftruncate of the hugetlb memfd to {}: {e}: {}", cfg.size, hugepage_advice(cfg.size))).into()
            }
            (_, Errno::ENOMEM | Errno::ENOSPC) => CtlError::NoMemory(format!("ftruncate of the memfd to {}: {e}", cfg.size)).into(),
            _ => anyhow::Error::new(e).context(format!("ftruncate of the memfd to {}", cfg.size)),
        }
    })?;
    // udmabuf refuses a memfd that could shrink under the buffer.
    sys::add_seals(&memfd, SealFlag::F_SEAL_SHRINK).context("F_ADD_SEALS(F_SEAL_SHRINK) on the memfd")?;
    // The mapping stays for the buffer's life: udmabuf-live watches the creator's mappings.
    let map = Mapping::new(&memfd, cfg.size, true).map_err(|e| -> anyhow::Error {
        match (cfg.backing, e) {
            (Backing::Hugetlb, Errno::ENOMEM | Errno::EINVAL) => {
                CtlError::NoMemory(format!("mmap of the hugetlb memfd: {e}: {}", hugepage_advice(cfg.size))).into()
            }
            (_, Errno::ENOMEM) => CtlError::NoMemory(format!("mmap of the memfd ({} bytes): {e}", cfg.size)).into(),
            _ => anyhow::Error::new(e).context("mmap of the memfd"),
        }
    })?;
    if let Some(p) = cfg.fill {
        fill(&map, 0, cfg.size, p);
    }
    let dmabuf = sys::udmabuf_create(&dev, &memfd, cfg.size).map_err(|e| create_error(&cfg.device, cfg.size, e))?;
    Ok(Made { dmabuf, memfd, _map: map })
}

/// Write `pattern` over `len` bytes of a memfd mapping from `offset`, in chunks.
pub fn fill(map: &Mapping, offset: u64, len: u64, pattern: Pattern) {
    const CHUNK: u64 = 1 << 20;
    let mut buf = vec![0u8; CHUNK.min(len) as usize];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(CHUNK) as usize;
        pattern.fill(offset + done, &mut buf[..n]);
        map.write(offset + done, &buf[..n]);
        done += n as u64;
    }
}

fn create_error(dev: &Path, size: u64, e: Errno) -> anyhow::Error {
    let d = dev.display();
    match e {
        Errno::EINVAL => {
            let module = if dev.file_name().is_some_and(|n| n == udmabuf_live_uapi::DEVICE_NAME) {
                udmabuf_live_uapi::MODULE_NAME
            } else {
                "udmabuf"
            };
            let limit = std::fs::read_to_string(format!("/sys/module/{module}/parameters/size_limit_mb"))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok());
            match limit {
                Some(mb) if size > mb << 20 => anyhow::anyhow!(
                    "UDMABUF_CREATE on {d}: EINVAL: {} is over the driver's limit of {mb} MiB \
                     (raise /sys/module/{module}/parameters/size_limit_mb)",
                    human(size)
                ),
                _ => anyhow::anyhow!("UDMABUF_CREATE on {d}: EINVAL: the driver refused the memfd (seals, size or alignment)"),
            }
        }
        Errno::ENOMEM => CtlError::NoMemory(format!("UDMABUF_CREATE on {d}: out of memory pinning {}", human(size))).into(),
        Errno::EACCES | Errno::EPERM => CtlError::Permission(format!("UDMABUF_CREATE on {d}: {e}")).into(),
        Errno::ENOTTY => anyhow::anyhow!("UDMABUF_CREATE on {d}: ENOTTY: this device does not speak the udmabuf ioctls"),
        e => anyhow::Error::new(e).context(format!("UDMABUF_CREATE on {d}")),
    }
}

const STOP_SIGNALS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

fn stop_set() -> SigSet {
    let mut set = SigSet::empty();
    for s in STOP_SIGNALS {
        set.add(s);
    }
    set
}

fn hold(report: &Created, json: bool, made: Made) -> Result<ExitCode> {
    // Block first: a signal sent right after the handle is read must end the wait, not
    // the process.
    let set = stop_set();
    set.thread_block().context("blocking SIGINT/SIGTERM")?;
    print_report(report, json, false)?;
    let sig = set.wait().context("sigwait")?;
    drop(made);
    if !json {
        eprintln!("udmabuf-ctl: {sig}: buffer released");
    }
    Ok(ExitCode::SUCCESS)
}

fn exec(report: &Created, cfg: &Config, handle: &str, cmd: &[OsString], made: Made) -> Result<ExitCode> {
    // With --exec stdout belongs to the command: the report goes to stderr unless --json.
    print_report(report, cfg.json, !cfg.json)?;
    sys::clear_cloexec(&made.memfd).context("clearing FD_CLOEXEC on the memfd")?;
    sys::clear_cloexec(&made.dmabuf).context("clearing FD_CLOEXEC on the dma-buf")?;
    let mut child = std::process::Command::new(&cmd[0]);
    child
        .args(&cmd[1..])
        .env("UDMABUF_DMABUF_FD", made.dmabuf.as_raw_fd().to_string())
        .env("UDMABUF_MEMFD_FD", made.memfd.as_raw_fd().to_string())
        .env("UDMABUF_SIZE", cfg.size.to_string())
        .env("UDMABUF_HANDLE", handle)
        .env("UDMABUF_DEVICE", &cfg.device);
    if let Some(l) = &cfg.layout {
        let join = |f: &dyn Fn(&format::Plane) -> u64| l.planes.iter().map(|p| f(p).to_string()).collect::<Vec<_>>().join(",");
        child
            .env("UDMABUF_FORMAT", &l.fourcc)
            .env("UDMABUF_WIDTH", l.width.to_string())
            .env("UDMABUF_HEIGHT", l.height.to_string())
            .env("UDMABUF_PLANES", l.planes.len().to_string())
            .env("UDMABUF_STRIDES", join(&|p| p.stride))
            .env("UDMABUF_OFFSETS", join(&|p| p.offset));
    }
    // The command gets the terminal's SIGINT itself; we wait for it and report its status
    // (the child starts with an empty signal mask).
    let set = stop_set();
    set.thread_block().context("blocking SIGINT/SIGTERM")?;
    let mut running = match child.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("udmabuf-ctl: cannot run {}: {e}", cmd[0].to_string_lossy());
            return Ok(ExitCode::from(if e.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 }));
        }
    };
    let status = running.wait().context("waiting for the command")?;
    drop(made);
    use std::os::unix::process::ExitStatusExt;
    let code = match (status.code(), status.signal()) {
        (Some(c), _) => c as u8,
        (None, Some(s)) => 128u8.saturating_add(s as u8),
        _ => 1,
    };
    Ok(ExitCode::from(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_round_trips() {
        let r = Created {
            handle: Some("10:3:4".into()),
            pid: 10,
            memfd_fd: 3,
            dmabuf_fd: 4,
            size: 4 << 20,
            backing: "shmem".into(),
            device: "/dev/udmabuf-live".into(),
            fill: Some("seq".into()),
            layout: Some(format::layout(format::lookup("NV12").unwrap(), 64, 64, 256).unwrap()),
            mode: "hold".into(),
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(!text.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        for k in ["handle", "pid", "memfd_fd", "dmabuf_fd", "size", "backing", "device", "fill", "layout", "mode"] {
            assert!(v.get(k).is_some(), "field {k} missing");
        }
        assert_eq!(v["handle"], "10:3:4");
        assert_eq!(v["layout"]["planes"][1]["offset"], 256 * 64);
        assert_eq!(serde_json::from_str::<Created>(&text).unwrap(), r);
    }

    fn cfg(args: &[&str]) -> Result<Config> {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from(["udmabuf-ctl", "create"].iter().chain(args)).unwrap();
        let crate::cli::Command::Create(a) = cli.command else { unreachable!() };
        Config::from_args(a)
    }

    #[test]
    fn validation() {
        assert_eq!(cfg(&["--size", "4M"]).unwrap().size, 4 << 20);
        assert_eq!(crate::exit::code_of(&cfg(&["--size", "1000"]).unwrap_err()), crate::exit::USAGE);
        assert_eq!(crate::exit::code_of(&cfg(&["--size", "0"]).unwrap_err()), crate::exit::USAGE);
        assert_eq!(crate::exit::code_of(&cfg(&["--size", "4K", "--hugetlb"]).unwrap_err()), crate::exit::USAGE);
        assert_eq!(cfg(&["--size", "4M", "--hugetlb"]).unwrap().size, 4 << 20);
        // XR24 1920x1080 = 8294400 bytes -> 2025 pages, or 4 huge pages.
        let c = cfg(&["--format", "XR24", "--width", "1920", "--height", "1080"]).unwrap();
        assert_eq!(c.size, 2025 * 4096);
        let c = cfg(&["--format", "XR24", "--width", "1920", "--height", "1080", "--hugetlb"]).unwrap();
        assert_eq!(c.size, 8 << 20);
        let e = cfg(&["--format", "ZZZZ", "--width", "1", "--height", "1"]).unwrap_err();
        assert_eq!(crate::exit::code_of(&e), crate::exit::USAGE);
        let e = cfg(&["--format", "NV12", "--width", "0", "--height", "1"]).unwrap_err();
        assert_eq!(crate::exit::code_of(&e), crate::exit::USAGE);
    }
}
