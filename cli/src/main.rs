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
use std::ffi::OsString;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Behave like other Unix tools in a pipeline (`udmabuf-ctl man | head`): die quietly
    // on a closed pipe instead of reporting EPIPE. Commands started by --exec get the
    // default disposition back (see commands/create.rs).
    // SAFETY: called before any other thread exists; SIG_DFL is a valid disposition.
    unsafe { nix::libc::signal(nix::libc::SIGPIPE, nix::libc::SIG_DFL) };
    let argv: Vec<OsString> = std::env::args_os().collect();
    let json = wants_json(&argv);
    let args = match cli::Cli::try_parse_from(&argv) {
        Ok(a) => a,
        // --help and --version are "errors" that print to stdout and exit 0.
        Err(e) if !e.use_stderr() || !json => e.exit(),
        Err(e) => {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or_default();
            let text = first.strip_prefix("error: ").unwrap_or(first).to_owned();
            let _ = e.print();
            let _ = output::json_error(exit::USAGE, &text);
            return ExitCode::from(exit::USAGE);
        }
    };
    match run(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("udmabuf-ctl: {err:#}");
            let code = exit::code_of(&err);
            if json {
                let _ = output::json_error(code, &format!("{err:#}"));
            }
            ExitCode::from(code)
        }
    }
}

/// `--json` among the options (not in the command after `--` of `create --exec`).
fn wants_json(argv: &[OsString]) -> bool {
    argv.iter().skip(1).take_while(|a| *a != "--").any(|a| a == "--json")
}

fn run(args: cli::Cli) -> anyhow::Result<ExitCode> {
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
        Command::Read(a) => commands::read::run(&a),
        Command::Hold(a) => commands::hold::run(&a),
        Command::Present(a) => commands::present::run(&a),
        Command::Completions(a) => commands::completions::run(&a),
        Command::Man(a) => commands::man::run(&a),
        Command::ExitCodes(a) => {
            print!(
                "{}",
                if a.markdown {
                    exit::markdown()
                } else if a.man {
                    exit::man_section()
                } else {
                    exit::help_text() + "\n"
                }
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_flag_is_found_before_the_command() {
        let v = |s: &[&str]| s.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(wants_json(&v(&["udmabuf-ctl", "info", "1:2:3", "--json"])));
        assert!(!wants_json(&v(&["udmabuf-ctl", "info", "1:2:3"])));
        assert!(!wants_json(&v(&["udmabuf-ctl", "create", "--size", "4K", "--exec", "--", "prog", "--json"])));
        assert!(!wants_json(&v(&["--json"])));
    }
}
