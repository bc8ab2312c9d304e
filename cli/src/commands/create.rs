//! `udmabuf-ctl create`: memfd -> (fill) -> UDMABUF_CREATE, then release, hold or exec.

use crate::cli::CreateArgs;
use crate::exit::{self, CtlError};
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
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode, ExitStatus};

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
    /// Odd sizes of subsampled formats.
    pub warnings: Vec<String>,
}

impl Config {
    pub fn from_args(a: CreateArgs) -> Result<Self> {
        let backing = if a.hugetlb { Backing::Hugetlb } else { Backing::Shmem };
        let granule = backing.granule();
        let mut warnings = Vec::new();
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
                warnings = format::subsampling_warnings(spec, w, h);
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
        Ok(Config { size, backing, layout, fill: a.fill, device: a.device.device, mode, json: a.json, warnings })
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
    /// Warnings (odd sizes of subsampled formats); also printed on stderr.
    pub warnings: Vec<String>,
}

/// The created objects; dropping it releases the buffer (mapping last).
struct Made {
    dmabuf: OwnedFd,
    memfd: OwnedFd,
    _map: Mapping,
}

pub fn run(args: CreateArgs) -> Result<ExitCode> {
    let cfg = Config::from_args(args)?;
    for w in &cfg.warnings {
        eprintln!("udmabuf-ctl: warning: {w}");
    }
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
        warnings: cfg.warnings.clone(),
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
            "layout  {} ({}, fourcc {:#010x}) {}x{}, modifier {} ({:#x}), strides aligned to {} bytes, {} bytes used\n",
            l.fourcc, l.format, l.fourcc_code, l.width, l.height, l.modifier_name, l.modifier, l.stride_align, l.size
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
    let free = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find_map(|l| l.strip_prefix("HugePages_Free:").and_then(|v| v.trim().parse::<u64>().ok())));
    let need = size.div_ceil(HUGE_PAGE);
    format!(
        "huge pages not reserved: this buffer needs {need} free 2 MiB pages ({}); reserve them with \
         `echo N > /proc/sys/vm/nr_hugepages` (N = pages in use + {need}) or boot with hugepages=N",
        free.map_or("HugePages_Free unknown".into(), |f| format!("HugePages_Free is {f}"))
    )
}

fn make(cfg: &Config) -> Result<Made> {
    // The device and its size limit first: no point filling a memfd for a device that is
    // not there, or for a buffer it will refuse.
    let dev = device::open(&cfg.device)?;
    let module = device::module_of_node(Path::new(device::SYSFS), &cfg.device);
    check_size_limit(Path::new(device::SYSFS), &module, cfg.size)?;
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
                CtlError::NoMemory(format!("ftruncate of the hugetlb memfd to {}: {e}: {}", cfg.size, hugepage_advice(cfg.size)))
                    .into()
            }
            (_, Errno::ENOMEM | Errno::ENOSPC) => {
                CtlError::NoMemory(format!("ftruncate of the memfd to {}: {e}", cfg.size)).into()
            }
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
        use std::io::IsTerminal;
        let progress = std::io::stdout().is_terminal() && cfg.size >= PROGRESS_MIN;
        fill_with_progress(&map, 0, cfg.size, p, progress);
    }
    let dmabuf = sys::udmabuf_create(&dev, &memfd, cfg.size).map_err(|e| create_error(&cfg.device, cfg.size, e))?;
    Ok(Made { dmabuf, memfd, _map: map })
}

/// Fills of at least this many bytes show a progress bar (when stdout is a terminal).
const PROGRESS_MIN: u64 = 64 << 20;

/// Write `pattern` over `len` bytes of a memfd mapping from `offset`, in chunks.
pub fn fill(map: &Mapping, offset: u64, len: u64, pattern: Pattern) {
    fill_with_progress(map, offset, len, pattern, false)
}

/// [`fill`], with a progress bar on stderr if `progress`.
pub fn fill_with_progress(map: &Mapping, offset: u64, len: u64, pattern: Pattern, progress: bool) {
    const CHUNK: u64 = 1 << 20;
    let bar = progress.then(|| {
        let b = indicatif::ProgressBar::new(len);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("filling {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
        {
            b.set_style(style);
        }
        b
    });
    let mut buf = vec![0u8; CHUNK.min(len) as usize];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(CHUNK) as usize;
        pattern.fill(offset + done, &mut buf[..n]);
        map.write(offset + done, &buf[..n]);
        done += n as u64;
        if let Some(b) = &bar {
            b.set_position(done);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
}

/// Refuse, before anything is allocated or filled, a buffer over the driver's
/// `size_limit_mb` (udmabuf and udmabuf-live both have it): exit 2 with the parameter to
/// raise. `sysfs` is the sysfs root (a fake tree in the tests).
pub fn check_size_limit(sysfs: &Path, module: &str, size: u64) -> Result<()> {
    let Some(mb) = device::param(sysfs, module, "size_limit_mb").and_then(|s| s.parse::<u64>().ok()) else { return Ok(()) };
    if size <= mb.saturating_mul(1 << 20) {
        return Ok(());
    }
    let need = size.div_ceil(1 << 20);
    Err(CtlError::Usage(format!(
        "{} is over {module}'s limit of {mb} MiB (parameter size_limit_mb): raise it with \
         `echo {need} > {}/module/{module}/parameters/size_limit_mb` (as root), or ask for less",
        human(size),
        sysfs.display()
    ))
    .into())
}

/// What decides whether an ENOMEM from UDMABUF_CREATE is the locked-memory limit.
#[derive(Debug, Clone, Copy)]
pub struct MemlockFacts {
    /// udmabuf_live's `account_memlock` parameter (None: not readable, or not udmabuf-live).
    pub accounting: Option<bool>,
    /// RLIMIT_MEMLOCK's soft limit in bytes (None: unlimited).
    pub limit: Option<u64>,
    pub cap_ipc_lock: bool,
}

impl MemlockFacts {
    pub fn current(module: &str) -> Self {
        let accounting = (module == udmabuf_live_uapi::MODULE_NAME)
            .then(|| device::param(Path::new(device::SYSFS), module, "account_memlock"))
            .flatten()
            .map(|v| v == "Y" || v == "1");
        let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK)
            .ok()
            .and_then(|(soft, _)| (soft != nix::libc::RLIM_INFINITY).then_some(soft));
        MemlockFacts { accounting, limit, cap_ipc_lock: sys::has_cap(sys::CAP_IPC_LOCK) }
    }
}

/// The error for an ENOMEM from UDMABUF_CREATE: the memlock limit (exit 10) when
/// udmabuf-live charges it and the buffer is over it, else out of memory (exit 6).
pub fn enomem_error(dev: &str, size: u64, f: MemlockFacts) -> anyhow::Error {
    let limit_text = |l: u64| format!("{} (`ulimit -l` says {})", human(l), l / 1024);
    match (f.accounting, f.limit, f.cap_ipc_lock) {
        (Some(true), Some(l), false) if size > l => CtlError::Memlock(format!(
            "UDMABUF_CREATE on {dev}: ENOMEM: {} is over this user's locked-memory limit RLIMIT_MEMLOCK of {}, which \
             udmabuf_live charges its buffers to (parameter account_memlock=Y). Raise it (`ulimit -l {}`, limits.conf, \
             LimitMEMLOCK=), run with CAP_IPC_LOCK, or load the module with account_memlock=N",
            human(size),
            limit_text(l),
            size.div_ceil(1024)
        ))
        .into(),
        (Some(true), Some(l), false) => CtlError::NoMemory(format!(
            "UDMABUF_CREATE on {dev}: out of memory pinning {}; note that udmabuf_live charges buffers to this user's \
             RLIMIT_MEMLOCK of {} (account_memlock=Y), which the user's other locked memory counts against too",
            human(size),
            limit_text(l)
        ))
        .into(),
        _ => CtlError::NoMemory(format!("UDMABUF_CREATE on {dev}: out of memory pinning {}", human(size))).into(),
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
        Errno::ENOMEM => {
            let module = device::module_of_node(Path::new(device::SYSFS), dev);
            enomem_error(&d.to_string(), size, MemlockFacts::current(&module))
        }
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
            .env("UDMABUF_FOURCC", format!("{:#010x}", l.fourcc_code))
            .env("UDMABUF_MODIFIER", format!("{:#x}", l.modifier))
            .env("UDMABUF_WIDTH", l.width.to_string())
            .env("UDMABUF_HEIGHT", l.height.to_string())
            .env("UDMABUF_PLANES", l.planes.len().to_string())
            .env("UDMABUF_STRIDES", join(&|p| p.stride))
            .env("UDMABUF_OFFSETS", join(&|p| p.offset));
    }
    // We block the stop signals to wait for them; the command must not inherit that.
    let set = exec_wait_set();
    set.thread_block().context("blocking SIGINT/SIGTERM")?;
    let mut running = match spawn_clean(&mut child) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("udmabuf-ctl: cannot run {}: {e}", cmd[0].to_string_lossy());
            let code = if e.kind() == std::io::ErrorKind::NotFound { exit::EXEC_NOT_FOUND } else { exit::EXEC_FAILED };
            return Ok(ExitCode::from(code));
        }
    };
    let status = wait_forwarding(&mut running, &set).context("waiting for the command")?;
    drop(made);
    Ok(ExitCode::from(status_code(status)))
}

/// The signals `create --exec` waits for: the stop signals (forwarded) and SIGCHLD.
fn exec_wait_set() -> SigSet {
    let mut set = stop_set();
    set.add(Signal::SIGCHLD);
    set
}

/// Spawn `cmd` with an empty signal mask and the default disposition of the signals
/// we block or ignore (SIGPIPE is ignored by the Rust runtime), whatever this thread has.
pub fn spawn_clean(cmd: &mut std::process::Command) -> std::io::Result<Child> {
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // calls (signal, sigemptyset, sigprocmask).
    unsafe {
        cmd.pre_exec(|| {
            use nix::libc;
            for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGPIPE, libc::SIGCHLD] {
                libc::signal(s, libc::SIG_DFL);
            }
            let mut empty = std::mem::zeroed::<libc::sigset_t>();
            libc::sigemptyset(&mut empty);
            if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    cmd.spawn()
}

/// Wait for the command, passing on the stop signals sent to us with kill(2) (a signal
/// from the terminal, such as Ctrl-C, already reached the command's process group; it is
/// not sent twice). `set` must be blocked in this thread.
pub fn wait_forwarding(child: &mut Child, set: &SigSet) -> std::io::Result<ExitStatus> {
    use nix::libc;
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(st);
        }
        // SIGCHLD may go to another thread of the process: poll as well.
        let timeout = libc::timespec { tv_sec: 0, tv_nsec: 50_000_000 };
        // SAFETY: a zeroed siginfo_t is a valid output buffer; `set` is a valid sigset.
        let mut info = unsafe { std::mem::zeroed::<libc::siginfo_t>() };
        // SAFETY: valid pointers for the duration of the call.
        let sig = unsafe { libc::sigtimedwait(set.as_ref(), &mut info, &timeout) };
        if sig > 0 && sig != libc::SIGCHLD && info.si_code <= 0 {
            // SI_USER, SI_QUEUE, SI_TKILL: sent by a process; the command did not get it.
            // SAFETY: plain system call.
            unsafe { libc::kill(child.id() as libc::pid_t, sig) };
        }
    }
}

/// The exit code for the command's status: its own code, or 128+N for signal N.
pub fn status_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => c as u8,
        (None, Some(s)) => 128u8.saturating_add(s as u8),
        _ => 1,
    }
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
            warnings: vec![],
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(!text.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        for k in ["handle", "pid", "memfd_fd", "dmabuf_fd", "size", "backing", "device", "fill", "layout", "mode"] {
            assert!(v.get(k).is_some(), "field {k} missing");
        }
        assert_eq!(v["handle"], "10:3:4");
        assert_eq!(v["layout"]["planes"][1]["offset"], 256 * 64);
        assert_eq!(v["layout"]["fourcc_code"], 0x3231_564e);
        assert_eq!(v["layout"]["modifier"], 0);
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

    /// The size limit is read before anything is filled: a usage error naming the parameter.
    #[test]
    fn size_limit_is_checked_first() {
        let root = crate::device::tests::fake_sysfs("limit");
        assert!(check_size_limit(&root, "udmabuf", 64 << 20).is_ok());
        let e = check_size_limit(&root, "udmabuf", 512 << 20).unwrap_err();
        assert_eq!(crate::exit::code_of(&e), crate::exit::USAGE);
        let msg = e.to_string();
        assert!(msg.contains("limit of 64 MiB") && msg.contains("size_limit_mb") && msg.contains("echo 512 >"), "{msg}");
        assert!(msg.contains("/module/udmabuf/parameters/size_limit_mb"), "{msg}");
        assert!(check_size_limit(&root, "udmabuf_live", 256 << 20).is_ok());
        assert!(check_size_limit(&root, "no_such_module", 1 << 40).is_ok());
    }

    /// ENOMEM over RLIMIT_MEMLOCK with accounting on is the memlock limit, exit 10.
    #[test]
    fn memlock_limit_is_named() {
        let over = MemlockFacts { accounting: Some(true), limit: Some(8 << 20), cap_ipc_lock: false };
        let e = enomem_error("/dev/udmabuf-live", 16 << 20, over);
        assert_eq!(crate::exit::code_of(&e), crate::exit::MEMLOCK);
        let msg = e.to_string();
        for want in ["RLIMIT_MEMLOCK", "8 MiB", "`ulimit -l` says 8192", "ulimit -l 16384", "CAP_IPC_LOCK", "account_memlock"] {
            assert!(msg.contains(want), "'{want}' missing: {msg}");
        }
        assert!(!msg.contains("out of memory"), "{msg}");
        // Accounting off, CAP_IPC_LOCK, unlimited, or within the limit: out of memory.
        for f in [
            MemlockFacts { accounting: Some(false), ..over },
            MemlockFacts { accounting: None, ..over },
            MemlockFacts { cap_ipc_lock: true, ..over },
            MemlockFacts { limit: None, ..over },
        ] {
            assert_eq!(crate::exit::code_of(&enomem_error("d", 16 << 20, f)), crate::exit::NO_MEMORY, "{f:?}");
        }
        let e = enomem_error("d", 4 << 20, over);
        assert_eq!(crate::exit::code_of(&e), crate::exit::NO_MEMORY);
        assert!(e.to_string().contains("RLIMIT_MEMLOCK"), "{e}");
    }

    fn blocked_stop_signals() -> SigSet {
        let set = exec_wait_set();
        set.thread_block().unwrap();
        set
    }

    fn status_line<'a>(text: &'a str, key: &str) -> &'a str {
        text.lines().find_map(|l| l.strip_prefix(key)).map(str::trim).unwrap_or("missing")
    }

    /// The command of --exec starts with an empty signal mask although we block the stop
    /// signals, and with SIGPIPE at its default.
    #[test]
    fn exec_child_has_a_clean_signal_mask() {
        let set = blocked_stop_signals();
        let mut cmd = std::process::Command::new("cat");
        cmd.arg("/proc/self/status").stdout(std::process::Stdio::piped());
        let out = spawn_clean(&mut cmd).unwrap().wait_with_output().unwrap();
        set.thread_unblock().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(status_line(&text, "SigBlk:"), "0000000000000000", "{text}");
        let ign = u64::from_str_radix(status_line(&text, "SigIgn:"), 16).unwrap();
        for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGPIPE] {
            assert_eq!(ign & (1 << (s as u64 - 1)), 0, "{s} is ignored in the child: {text}");
        }
    }

    /// A SIGTERM sent to us (kill) reaches the command, and we report 128+15.
    #[test]
    fn exec_forwards_sigterm_and_reports_the_signal() {
        let set = blocked_stop_signals();
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("20");
        let mut child = spawn_clean(&mut cmd).unwrap();
        let start = std::time::Instant::now();
        std::thread::sleep(std::time::Duration::from_millis(100));
        // To this thread only (SI_TKILL), as a kill(1) of the process would be seen here.
        // SAFETY: plain system calls.
        unsafe { nix::libc::syscall(nix::libc::SYS_tgkill, nix::libc::getpid(), nix::libc::gettid(), nix::libc::SIGTERM) };
        let status = wait_forwarding(&mut child, &set).unwrap();
        set.thread_unblock().unwrap();
        assert!(start.elapsed() < std::time::Duration::from_secs(10), "the command ran to its end");
        assert_eq!(status_code(status), 128 + 15);
    }
}
