//! `udmabuf-ctl man [--out-dir DIR]`: man pages generated from the clap definition.

use crate::cli::{Cli, ManArgs};
use anyhow::{Context, Result};
use clap::CommandFactory;
use std::process::ExitCode;

pub fn run(args: &ManArgs) -> Result<ExitCode> {
    let cmd = Cli::command();
    match &args.out_dir {
        None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout()).context("rendering the man page")?,
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir).with_context(|| format!("writing man pages to {}", dir.display()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
