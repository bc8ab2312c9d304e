//! The command-line surface: clap definitions only. Each command turns its arguments
//! into a validated configuration (`commands/<name>.rs`) before touching the system.

use crate::format::DEFAULT_STRIDE_ALIGN;
use crate::handle::Handle;
use crate::pattern::Pattern;
use crate::units::Bytes;
use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

const HANDLE_HELP: &str = "Handle of the buffer: PID:MEMFD_FD:DMABUF_FD (printed by `create --hold`). \
The fds are duplicated from process PID with pidfd_getfd(2), which needs ptrace access to it (same user, or root).";

const SIZE_HELP: &str = "Byte counts: a decimal or 0x-hex number with an optional binary unit \
K/KiB, M/MiB, G/GiB, T/TiB (1024-based) or B, e.g. 4096, 64K, 4M, 1G.";

const PATTERN_HELP: &str = "Patterns are functions of the absolute memfd offset o: zero; 0xNN (that byte); \
seq (byte o%4 of the little-endian u32 o/4); random:SEED (byte o%8 of the little-endian u64 number o/8 of the \
SplitMix64 stream seeded with SEED).";

#[derive(Parser, Debug)]
#[command(name = "udmabuf-ctl", version, about, long_about = None)]
#[command(after_help = crate::exit::help_text())]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Open the device and report the module behind it.
    Status(StatusArgs),
    /// Compare create, map and sg-segment costs with the built-in udmabuf (needs the
    /// test importer module, /dev/ulive-importer).
    Bench(BenchArgs),
    /// Make a memfd, optionally fill it, and create a dma-buf over it.
    Create(CreateArgs),
    /// Punch a hole in the memfd behind a handle (fallocate PUNCH_HOLE|KEEP_SIZE).
    Punch(PunchArgs),
    /// Write a pattern into the memfd behind a handle, through a shared mapping.
    Write(WriteArgs),
    /// Check that the dma-buf behind a handle shows exactly its memfd's pages.
    Verify(VerifyArgs),
    /// Show the state of a udmabuf-live buffer (the INFO ioctl).
    Info(InfoArgs),
    /// List the live dma-bufs of every process (udmabuf-live ones by default).
    List(ListArgs),
    /// Apply a buffer's pending live updates now (the SYNC ioctl).
    Sync(SyncArgs),
    /// Dump the dma-buf's bytes as an importer sees them (through its mmap), as hex or to a file.
    Read(ReadArgs),
    /// Hold a static pin (mapped static attachment) or a kernel vmap on a buffer through the
    /// test importer (/dev/ulive-importer) until SIGINT/SIGTERM.
    Hold(HoldArgs),
    /// Show a dma-buf in the running Wayland compositor (zwp_linux_dmabuf_v1, xdg-shell
    /// toplevel); commit it again on SIGUSR1 or a line on stdin.
    Present(PresentArgs),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
    /// Print the man page (roff), or write one page per command into a directory.
    Man(ManArgs),
    /// Print the exit-code table (the source of the README's table and the man page's).
    #[command(hide = true)]
    ExitCodes(ExitCodesArgs),
}

/// The device to talk to.
#[derive(Args, Debug, Clone)]
pub struct DeviceArg {
    /// Device node: /dev/udmabuf-live, or /dev/udmabuf for the kernel's own driver.
    #[arg(long, value_name = "PATH", default_value = "/dev/udmabuf-live", env = "UDMABUF_CTL_DEVICE")]
    pub device: PathBuf,
}

/// The device for a command that takes a handle: found from the dma-buf's exporter.
#[derive(Args, Debug, Clone)]
pub struct HandleDeviceArg {
    /// udmabuf-live's device node, if it is not /dev/udmabuf-live. By default the device is
    /// found from the dma-buf's exporter; a node of another driver than the buffer's is
    /// ignored with a warning.
    #[arg(long, value_name = "PATH")]
    pub device: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub device: DeviceArg,
    /// Print JSON (one line) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Measured iterations per cell (after a few warm-up rounds).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub iterations: u32,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
    /// Our device.
    #[arg(long, default_value = "/dev/udmabuf-live")]
    pub ours: PathBuf,
    /// The reference: the kernel's built-in udmabuf.
    #[arg(long, default_value = "/dev/udmabuf")]
    pub builtin: PathBuf,
    /// The test importer's device (selftests/importer/, module ulive_importer).
    #[arg(long, default_value = "/dev/ulive-importer")]
    pub importer: PathBuf,
    /// Instead of the timed cells, profile the paths of the missed ones with the kernel's
    /// function profiler (tracefs; needs CONFIG_FUNCTION_PROFILER) and print a Markdown
    /// report: --iterations operations per workload.
    #[arg(long, conflicts_with = "json")]
    pub profile: bool,
    /// With --profile: only the workloads whose name contains TEXT.
    #[arg(long, value_name = "TEXT", requires = "profile")]
    pub profile_only: Option<String>,
    /// With --profile: more kernel functions to profile, names or ftrace globs (`mmu_*`),
    /// comma-separated. Few and coarse: tracing costs time at every call.
    #[arg(long, value_name = "FUNCTIONS", value_delimiter = ',', requires = "profile")]
    pub profile_functions: Vec<String>,
}

#[derive(Args, Debug)]
#[command(after_help = format!("{SIZE_HELP}\n{PATTERN_HELP}\n\n\
The memfd stays mapped in this process for as long as the buffer is held: udmabuf-live \
watches the memfd's mappings, in every process (mmu notifiers), to see hole punches, and \
this one covers the whole buffer. Without --hold or --exec the buffer is released when the \
command exits.\n\n\
--exec sets UDMABUF_DMABUF_FD, UDMABUF_MEMFD_FD, UDMABUF_SIZE, UDMABUF_HANDLE and \
UDMABUF_DEVICE, and with --format also UDMABUF_FORMAT (fourcc code), UDMABUF_FOURCC (its number, 0x hex), \
UDMABUF_MODIFIER (0x hex; 0 = DRM_FORMAT_MOD_LINEAR), UDMABUF_WIDTH, UDMABUF_HEIGHT, UDMABUF_PLANES, \
UDMABUF_STRIDES and UDMABUF_OFFSETS (comma-separated, one per plane).\n\n\
The size is checked against the driver's size_limit_mb before the memfd is filled. A fill \
shows its progress on stderr when stdout is a terminal."))]
pub struct CreateArgs {
    /// Buffer size (e.g. 4M); a multiple of the page size (2M with --hugetlb).
    #[arg(long, short, value_name = "SIZE", required_unless_present = "format", conflicts_with = "format")]
    pub size: Option<Bytes>,
    /// DRM format (fourcc code such as XR24, NV12, YU12, P010, or a DRM name such as XRGB8888).
    #[arg(long, value_name = "FOURCC", requires_all = ["width", "height"])]
    pub format: Option<String>,
    /// Width in pixels (with --format).
    #[arg(long, value_name = "PIXELS", requires = "format")]
    pub width: Option<u64>,
    /// Height in pixels (with --format).
    #[arg(long, value_name = "PIXELS", requires = "format")]
    pub height: Option<u64>,
    /// Stride alignment in bytes for --format (a power of two).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_STRIDE_ALIGN, requires = "format")]
    pub stride_align: u64,
    /// Back the memfd with 2 MiB huge pages (needs pages in /proc/sys/vm/nr_hugepages).
    #[arg(long)]
    pub hugetlb: bool,
    /// Fill the memfd with PATTERN before creating the buffer.
    #[arg(long, value_name = "PATTERN")]
    pub fill: Option<Pattern>,
    #[command(flatten)]
    pub device: DeviceArg,
    /// Keep the buffer (and the memfd and its mapping) until SIGINT/SIGTERM; prints its handle first.
    #[arg(long, conflicts_with = "exec")]
    pub hold: bool,
    /// Run the command after `--` with both fds inherited, wait, and exit with its status.
    #[arg(long, requires = "command")]
    pub exec: bool,
    /// The command for --exec.
    #[arg(last = true, value_name = "CMD", requires = "exec")]
    pub command: Vec<OsString>,
    /// Print JSON (one line) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
#[command(after_help = SIZE_HELP)]
pub struct PunchArgs {
    #[arg(help = HANDLE_HELP)]
    pub handle: Handle,
    /// Start of the hole in the memfd (page aligned; 2M aligned for hugetlb).
    #[arg(long, value_name = "BYTES")]
    pub offset: Bytes,
    /// Length of the hole.
    #[arg(long, value_name = "BYTES")]
    pub len: Bytes,
    /// Print JSON (one line) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
#[command(after_help = format!("{SIZE_HELP}\n{PATTERN_HELP}"))]
pub struct WriteArgs {
    #[arg(help = HANDLE_HELP)]
    pub handle: Handle,
    /// Where to start writing in the memfd.
    #[arg(long, value_name = "BYTES", default_value = "0")]
    pub offset: Bytes,
    /// What to write.
    #[arg(long, value_name = "PATTERN")]
    pub pattern: Pattern,
    /// How much to write (default: up to the end of the memfd).
    #[arg(long, value_name = "BYTES")]
    pub len: Option<Bytes>,
    /// Print JSON (one line) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
#[command(after_help = "Checks: (a) the VERIFY ioctl of udmabuf-live (skipped for other exporters); \
(b) with CAP_SYS_ADMIN, the buffer's PFNs (PFNS ioctl) against /proc/self/pagemap of a fresh mapping \
of the memfd; (c) the bytes of the dma-buf against the bytes of the memfd, page by page. \
Mapping the memfd fills its holes (reading a hole allocates a page), so (a) runs first; (b) and (c) run \
after this command has mapped the dma-buf and begun CPU access, so they see what an importer sees.\n\n\
Verdict: exit 0 when no check that ran found a mismatch, 5 otherwise. On a buffer that is not watched (its \
creator's mapping is gone), pages behind the memfd in (a) are the lazy update, not an incoherence: (a) reports \
`not_watched` (\"not watched: updated at the next map or SYNC\") and leaves the verdict to (b) and (c). \
A handle whose memfd does not back the dma-buf exits 8.")]
pub struct VerifyArgs {
    #[arg(help = HANDLE_HELP)]
    pub handle: Handle,
    #[command(flatten)]
    pub device: HandleDeviceArg,
    /// Offset in the memfd where the dma-buf starts (buffers made by `create` start at 0).
    #[arg(long, value_name = "BYTES", default_value = "0")]
    pub memfd_offset: Bytes,
    /// Report at most N differing pages per check.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub max_report: usize,
    /// Print JSON (one line) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    #[arg(help = HANDLE_HELP)]
    pub handle: Handle,
    #[command(flatten)]
    pub device: HandleDeviceArg,
    /// Print JSON (one line) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
#[command(after_help = "Scans /proc/*/fd for dma-bufs and reads their exporter from /proc/PID/fdinfo. \
Processes you may not inspect are left out (run as root to see all).")]
pub struct ListArgs {
    /// List the dma-bufs of every exporter, not only udmabuf-live's.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub device: DeviceArg,
    /// Print JSON (one line) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct SyncArgs {
    #[arg(help = HANDLE_HELP)]
    pub handle: Handle,
    /// How long to wait for updates deferred by pins or vmaps (milliseconds; 0: no wait).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub timeout_ms: u32,
    #[command(flatten)]
    pub device: HandleDeviceArg,
    /// Print JSON (one line) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
#[command(after_help = format!("{SIZE_HELP}\n\nThe bytes are read through a mapping of the dma-buf, bracketed by \
DMA_BUF_IOCTL_SYNC as importers do (for udmabuf-live this applies pending updates)."))]
pub struct ReadArgs {
    #[arg(help = HANDLE_HELP)]
    pub handle: Handle,
    /// Where to start in the dma-buf.
    #[arg(long, value_name = "BYTES", default_value = "0")]
    pub offset: Bytes,
    /// How much to read (default: up to the end of the dma-buf).
    #[arg(long, value_name = "BYTES")]
    pub len: Option<Bytes>,
    /// Write the raw bytes to FILE (`-`: standard output) instead of a hex dump.
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
#[command(after_help = "Needs the test importer module (selftests/importer/, ulive_importer). While the pin or the \
vmap is held, udmabuf-live defers live updates of the buffer (state `stale`): `sync` then times out (exit 7) \
until this command is stopped.")]
pub struct HoldArgs {
    #[arg(help = HANDLE_HELP)]
    pub handle: Handle,
    /// A static attachment, mapped: the exporter pins the pages.
    #[arg(long, conflicts_with = "vmap", required_unless_present = "vmap")]
    pub pin: bool,
    /// A kernel vmap of the buffer.
    #[arg(long)]
    pub vmap: bool,
    /// The test importer's device.
    #[arg(long, value_name = "PATH", default_value = "/dev/ulive-importer")]
    pub importer: PathBuf,
    /// Print JSON (one line) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
#[command(after_help = "The buffer: HANDLE (with --format, --width, --height), or, without HANDLE, the one that \
`udmabuf-ctl create --format ... --exec -- udmabuf-ctl present` hands over (UDMABUF_DMABUF_FD, UDMABUF_FORMAT, \
UDMABUF_WIDTH, UDMABUF_HEIGHT, UDMABUF_STRIDES, UDMABUF_OFFSETS). The layout is create --format's: DRM format, \
LINEAR modifier, the planes' offsets and strides.\n\n\
The compositor is WAYLAND_DISPLAY's (a name under XDG_RUNTIME_DIR, or a path). After each commit has been \
shown (its frame callback is done) a line `shown N` is printed on stdout. A line on stdin or SIGUSR1 commits \
the same wl_buffer again with full damage (that is how to show new contents after writing to the memfd); \
SIGINT, SIGTERM or the compositor closing the window end it (exit 0).")]
pub struct PresentArgs {
    /// Handle of the buffer (PID:MEMFD_FD:DMABUF_FD); default: UDMABUF_DMABUF_FD from `create --exec`.
    #[arg(requires_all = ["format", "width", "height"])]
    pub handle: Option<Handle>,
    /// DRM format of the buffer (as `create --format`); default: UDMABUF_FORMAT.
    #[arg(long, value_name = "FOURCC")]
    pub format: Option<String>,
    /// Width in pixels; default: UDMABUF_WIDTH.
    #[arg(long, value_name = "PIXELS")]
    pub width: Option<u64>,
    /// Height in pixels; default: UDMABUF_HEIGHT.
    #[arg(long, value_name = "PIXELS")]
    pub height: Option<u64>,
    /// Stride alignment the buffer was created with (as `create --stride-align`).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_STRIDE_ALIGN)]
    pub stride_align: u64,
    /// Only print the formats and modifiers the compositor offers, and exit.
    #[arg(long, conflicts_with_all = ["handle", "format", "width", "height"])]
    pub list_formats: bool,
    /// Exit after the first commit has been shown (instead of waiting for SIGUSR1, stdin or SIGTERM).
    #[arg(long)]
    pub once: bool,
    /// The window title.
    #[arg(long, default_value = "udmabuf-ctl present")]
    pub title: String,
    /// Print JSON: --list-formats as one document; otherwise one line per event.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ExitCodesArgs {
    /// The README's Markdown table.
    #[arg(long, conflicts_with = "man")]
    pub markdown: bool,
    /// The man page's EXIT STATUS section (roff).
    #[arg(long)]
    pub man: bool,
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to generate for.
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write udmabuf-ctl.1 and udmabuf-ctl-COMMAND.1 into this directory instead of
    /// printing the main page.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("udmabuf-ctl").chain(args.iter().copied()))
    }

    #[test]
    fn create_needs_exactly_one_size_source() {
        assert!(parse(&["create", "--size", "4M"]).is_ok());
        assert!(parse(&["create", "--format", "XR24", "--width", "64", "--height", "64"]).is_ok());
        assert!(parse(&["create"]).is_err());
        assert!(parse(&["create", "--size", "4M", "--format", "XR24", "--width", "1", "--height", "1"]).is_err());
        assert!(parse(&["create", "--format", "XR24", "--width", "64"]).is_err());
        assert!(parse(&["create", "--size", "4M", "--width", "64"]).is_err());
        assert!(parse(&["create", "--size", "4MB"]).is_err());
    }

    #[test]
    fn create_exec_and_hold() {
        let c = parse(&["create", "--size", "4M", "--exec", "--", "sh", "-c", "echo $UDMABUF_SIZE"]).unwrap();
        let Command::Create(a) = c.command else { panic!() };
        assert!(a.exec);
        assert_eq!(a.command, ["sh", "-c", "echo $UDMABUF_SIZE"]);
        assert!(parse(&["create", "--size", "4M", "--exec"]).is_err());
        assert!(parse(&["create", "--size", "4M", "--", "true"]).is_err());
        assert!(parse(&["create", "--size", "4M", "--hold", "--exec", "--", "true"]).is_err());
    }

    #[test]
    fn handle_commands() {
        let c = parse(&["punch", "12:3:4", "--offset", "8K", "--len", "0x2000"]).unwrap();
        let Command::Punch(a) = c.command else { panic!() };
        assert_eq!((a.handle.pid, a.offset.0, a.len.0), (12, 8192, 8192));
        assert!(parse(&["punch", "12:3", "--offset", "0", "--len", "4K"]).is_err());
        assert!(parse(&["write", "12:3:4", "--pattern", "bogus"]).is_err());
        assert!(parse(&["write", "12:3:4", "--pattern", "random:7", "--len", "4K"]).is_ok());
        assert!(parse(&["sync", "12:3:4", "--timeout-ms", "0"]).is_ok());
        assert!(parse(&["verify", "12:3:4", "--json"]).is_ok());
    }

    #[test]
    fn present_options() {
        assert!(parse(&["present"]).is_ok());
        assert!(parse(&["present", "--list-formats"]).is_ok());
        assert!(parse(&["present", "1:2:3", "--format", "XR24", "--width", "250", "--height", "100"]).is_ok());
        assert!(parse(&["present", "1:2:3"]).is_err(), "a handle needs its layout");
        assert!(parse(&["present", "--list-formats", "--format", "XR24"]).is_err());
    }
}
