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
