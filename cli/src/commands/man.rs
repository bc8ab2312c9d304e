//! `udmabuf-ctl man [--out-dir DIR]`: man pages generated from the clap definition, with
//! an EXIT STATUS section generated from the exit-code table (`exit.rs`).

use crate::cli::{Cli, ManArgs};
use anyhow::{Context, Result};
use clap::CommandFactory;
use std::io::Write;
use std::process::ExitCode;

/// The main page: clap_mangen's sections, without the `--help` epilogue (the exit-code
/// table as one paragraph), plus EXIT STATUS with one code per tagged paragraph.
pub fn main_page() -> Result<Vec<u8>> {
    let cmd = Cli::command().after_help(None::<&str>).after_long_help(None::<&str>);
    let man = clap_mangen::Man::new(cmd);
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    man.render_subcommands_section(&mut out)?;
    out.write_all(crate::exit::man_section().as_bytes())?;
    man.render_version_section(&mut out)?;
    Ok(out)
}

pub fn run(args: &ManArgs) -> Result<ExitCode> {
    let page = main_page().context("rendering the man page")?;
    match &args.out_dir {
        None => std::io::stdout().write_all(&page)?,
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(Cli::command(), dir).with_context(|| format!("writing man pages to {}", dir.display()))?;
            let main = dir.join("udmabuf-ctl.1");
            std::fs::write(&main, page).with_context(|| format!("writing {}", main.display()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn exit_status_section_one_code_per_line() {
        let page = String::from_utf8(super::main_page().unwrap()).unwrap();
        assert!(page.contains(".SH \"EXIT STATUS\"\n.TP\n\\fB0\\fR\n"), "{page}");
        assert!(!page.contains(".SH EXTRA"), "the exit codes are still an EXTRA paragraph");
        for r in crate::exit::TABLE {
            let tag = format!(".TP\n\\fB{}\\fR\n", r.code);
            assert!(page.contains(&tag), "code {} has no paragraph of its own", r.code);
        }
        assert!(page.contains(".SH OPTIONS"));
    }
}
