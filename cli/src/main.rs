//! `udmabuf-ctl`: create, punch, write and verify udmabuf-live dma-bufs.
//! `main` only maps the outcome of `run` to an exit code; see `exit.rs` for the codes.

mod cli;
mod commands;
mod device;
mod exit;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("udmabuf-ctl: {err:#}");
            exit::code_for(&err)
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let args = cli::Cli::parse();
    match args.command {
        cli::Command::Status(a) => commands::status::run(&a),
        cli::Command::Bench(a) => commands::bench::run(&a),
    }
}
