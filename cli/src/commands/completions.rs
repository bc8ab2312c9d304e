//! `udmabuf-ctl completions SHELL`: a completion script generated from the clap definition.
//!
//! clap_complete's bash generator names the states of its subcommand `case` with the
//! binary's hyphen turned into `__` in one place and `__subcmd__` in the other, so for
//! `udmabuf-ctl` no subcommand state ever matched and options after a subcommand did not
//! complete. [`script`] repairs the generated bash script.

use crate::cli::{Cli, CompletionsArgs};
use anyhow::Result;
use clap::CommandFactory;
use clap_complete::Shell;
use std::io::Write;
use std::process::ExitCode;

pub const BIN: &str = "udmabuf-ctl";

/// Make the bash script's `case` labels agree with the state names it assigns.
pub fn fix_bash(script: &str, bin: &str) -> String {
    let good = bin.replace('-', "__");
    let bad = bin.replace('-', "__subcmd__");
    if good == bad {
        script.to_owned()
    } else {
        script.replace(&bad, &good)
    }
}

/// The completion script for `shell`.
pub fn script(shell: Shell) -> String {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, BIN, &mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    if shell == Shell::Bash {
        fix_bash(&text, BIN)
    } else {
        text
    }
}

pub fn run(args: &CompletionsArgs) -> Result<ExitCode> {
    let mut o = std::io::stdout().lock();
    o.write_all(script(args.shell).as_bytes())?;
    o.flush()?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Source the bash script and complete `udmabuf-ctl create --f` the way bash does.
    fn bash_complete(script: &str, words: &[&str]) -> String {
        let dir = std::env::temp_dir().join(format!("udmabuf-ctl-compl-{}-{}", std::process::id(), words.len()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("udmabuf-ctl.bash");
        std::fs::write(&path, script).unwrap();
        let cword = words.len() - 1;
        let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
        let prog = format!(
            "source '{}'\n\
             complete -p udmabuf-ctl || exit 3\n\
             fn=$(complete -p udmabuf-ctl | sed -n 's/.* -F \\([^ ]*\\) .*/\\1/p')\n\
             COMP_WORDS=({})\nCOMP_CWORD={cword}\nCOMP_LINE=\"${{COMP_WORDS[*]}}\"\nCOMP_POINT=${{#COMP_LINE}}\n\
             \"$fn\" udmabuf-ctl '{}' '{}'\n\
             printf 'reply: %s\\n' \"${{COMPREPLY[@]}}\"\n",
            path.display(),
            quoted.join(" "),
            words[cword],
            words[cword - 1]
        );
        let out = std::process::Command::new("bash").arg("--norc").arg("-c").arg(prog).output().expect("running bash");
        assert!(out.status.success(), "bash failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn bash_completes_options_after_the_subcommand() {
        let text = bash_complete(&script(Shell::Bash), &["udmabuf-ctl", "create", "--f"]);
        assert!(text.contains("-F _udmabuf__ctl udmabuf-ctl"), "{text}");
        let replies: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("reply: ")).collect();
        assert!(replies.contains(&"--fill") && replies.contains(&"--format"), "{text}");
        assert!(!replies.contains(&"--size"), "{text}");
        let text = bash_complete(&script(Shell::Bash), &["udmabuf-ctl", "verify", "1:2:3", "--max"]);
        assert!(text.contains("reply: --max-report"), "{text}");
        let text = bash_complete(&script(Shell::Bash), &["udmabuf-ctl", "cr"]);
        assert!(text.contains("reply: create"), "{text}");
    }

    #[test]
    fn the_bash_fix_is_needed_and_done() {
        let mut cmd = Cli::command();
        let mut raw = Vec::new();
        clap_complete::generate(Shell::Bash, &mut cmd, BIN, &mut raw);
        let raw = String::from_utf8(raw).unwrap();
        let fixed = fix_bash(&raw, BIN);
        assert!(!fixed.contains("udmabuf__subcmd__ctl"));
        assert!(fixed.contains("udmabuf__ctl__subcmd__create)"));
        assert_eq!(fix_bash("x_y", "plain"), "x_y");
    }

    #[test]
    fn zsh_and_fish_mention_the_options() {
        for shell in [Shell::Zsh, Shell::Fish] {
            let s = script(shell);
            for want in ["fill", "format", "hugetlb", "max-report", "timeout-ms"] {
                assert!(s.contains(want), "{shell}: no {want}");
            }
            assert!(s.contains("udmabuf-ctl"), "{shell}");
        }
    }
}
