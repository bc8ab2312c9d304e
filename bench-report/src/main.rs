//! `ulive-bench-report`: the host half of `make bench`.
//!
//! Reads the JSON report of each guest boot (`udmabuf-ctl bench --json-out`), takes each
//! cell's median over the boots with its spread (min-max), judges the median against
//! the cell's target (the targets come with the cells, from `udmabuf-ctl`'s one list),
//! prints every cell (a missed target as MISSED), replaces the generated part of
//! BENCHMARKS.md and draws the chart (SVG).
//!
//! usage: ulive-bench-report --md BENCHMARKS.md --svg BENCHMARKS.svg [--about TEXT]... BOOT.json...

mod chart;
mod report;

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    match run() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ulive-bench-report: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run() -> Result<ExitCode> {
    let mut md = None;
    let mut svg = None;
    let mut about = Vec::new();
    let mut profile = None;
    let mut inputs = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--md" => md = Some(PathBuf::from(args.next().context("--md needs a file")?)),
            "--svg" => svg = Some(PathBuf::from(args.next().context("--svg needs a file")?)),
            "--about" => about.push(args.next().context("--about needs a text")?),
            "--profile" => {
                profile = Some(PathBuf::from(
                    args.next().context("--profile needs a file")?,
                ))
            }
            "-h" | "--help" => {
                println!("usage: ulive-bench-report --md BENCHMARKS.md --svg CHART.svg [--about TEXT]... [--profile PROFILE.md] BOOT.json...");
                return Ok(ExitCode::SUCCESS);
            }
            _ if a.starts_with('-') => bail!("unknown option {a} (see --help)"),
            _ => inputs.push(PathBuf::from(a)),
        }
    }
    if inputs.is_empty() {
        bail!("no boot reports given (the JSON that `udmabuf-ctl bench --json-out` wrote in each guest boot)");
    }
    let boots = inputs
        .iter()
        .map(|p| {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?;
            serde_json::from_str::<report::Boot>(&text)
                .with_context(|| format!("parse {}", p.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let rows = report::aggregate(&boots);
    print!("{}", report::summary(&rows, boots.len()));
    if let Some(svg) = &svg {
        chart::draw(svg, &rows, &boots).with_context(|| format!("draw {}", svg.display()))?;
        println!("chart: {}", svg.display());
    }
    if let Some(md) = &md {
        let old = std::fs::read_to_string(md).unwrap_or_default();
        let chart_name = svg
            .as_ref()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned());
        let profile = profile
            .as_ref()
            .map(|p| std::fs::read_to_string(p).with_context(|| format!("read {}", p.display())))
            .transpose()?;
        let section = report::markdown(
            &rows,
            &boots,
            &about,
            chart_name.as_deref(),
            profile.as_deref(),
        );
        std::fs::write(md, report::splice(&old, &section))
            .with_context(|| format!("write {}", md.display()))?;
        println!("wrote {}", md.display());
    }
    Ok(ExitCode::SUCCESS)
}
