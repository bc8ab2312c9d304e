//! The command-line surface (clap definitions only; validation happens in the commands).

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "udmabuf-ctl", version, about, long_about = None)]
#[command(after_help = "Exit codes: 0 ok, 1 error, 2 usage, 3 device or module missing, 4 permission denied.")]
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
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Device node to open.
    #[arg(long, default_value = "/dev/udmabuf-live", env = "UDMABUF_CTL_DEVICE")]
    pub device: PathBuf,
    /// Print JSON instead of text.
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
}
