//! `udmabuf-ctl`: create, punch, write and verify udmabuf-live dma-bufs.
//! `main` only maps the outcome of `run` to an exit code; see `exit.rs` for the codes.

mod cli;
mod commands;
mod device;
mod exit;
mod format;
mod handle;
mod output;
mod pattern;
mod sys;
mod units;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Behave like other Unix tools in a pipeline (`udmabuf-ctl man | head`): die quietly
    // on a closed pipe instead of reporting EPIPE. Commands started by --exec get the
    // default disposition from std anyway.
    // SAFETY: called before any other thread exists; SIG_DFL is a valid disposition.
    unsafe { nix::libc::signal(nix::libc::SIGPIPE, nix::libc::SIG_DFL) };
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
    use cli::Command;
    match args.command {
        Command::Status(a) => commands::status::run(&a),
        Command::Bench(a) => commands::bench::run(&a),
        Command::Create(a) => commands::create::run(a),
        Command::Punch(a) => commands::punch::run(&a),
        Command::Write(a) => commands::write::run(&a),
        Command::Verify(a) => commands::verify::run(&a),
        Command::Info(a) => commands::info::run(&a),
        Command::List(a) => commands::list::run(&a),
        Command::Sync(a) => commands::sync::run(&a),
        Command::Completions(a) => commands::completions::run(&a),
        Command::Man(a) => commands::man::run(&a),
    }
}
