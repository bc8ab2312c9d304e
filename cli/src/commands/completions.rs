//! `udmabuf-ctl completions SHELL`: a completion script generated from the clap definition.

use crate::cli::{Cli, CompletionsArgs};
use anyhow::Result;
use clap::CommandFactory;
use std::process::ExitCode;

pub fn run(args: &CompletionsArgs) -> Result<ExitCode> {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "udmabuf-ctl", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}
