//! The chart of `make bench` (SVG, plotters): on top every ratio cell's median over the
//! boots with its spread and its target, numbered as in BENCHMARKS.md's table; below the
//! distribution (CDF) of the punch..visible latency of a 4 KiB hole in 64 MiB shmem,
//! ours against the bare punch, all boots pooled.

use crate::report::{Boot, Goal, Row, Unit};
use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::path::Path;

/// Ratio cells as (number in the table, min, median, max, target).
fn ratio_points(rows: &[Row]) -> Vec<(usize, f64, f64, f64, Option<f64>)> {
    rows.iter()
        .enumerate()
        .filter(|(_, r)| r.cell.unit == Unit::Ratio)
        .filter_map(|(i, r)| {
            let m = r.median()?;
            let (lo, hi) = r.spread()?;
            let t = match r.cell.goal {
                Goal::AtMost(t) | Goal::AtLeast(t) => Some(t),
                Goal::Report => None,
            };
            Some((i + 1, lo, m, hi, t))
        })
        .collect()
}

/// The pooled samples of each latency series, sorted, in microseconds.
fn latency_series(boots: &[Boot]) -> Vec<(String, Vec<f64>)> {
    let mut out: Vec<(String, Vec<f64>)> = Vec::new();
    for s in boots.iter().flat_map(|b| &b.latency) {
        let us = s.samples_ns.iter().map(|&n| n as f64 / 1000.0);
        match out.iter_mut().find(|(n, _)| *n == s.name) {
            Some((_, v)) => v.extend(us),
            None => out.push((s.name.clone(), us.collect())),
        }
    }
    for (_, v) in &mut out {
        v.sort_by(f64::total_cmp);
    }
    out
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{e}")
}

pub fn draw(path: &Path, rows: &[Row], boots: &[Boot]) -> Result<()> {
    let root = SVGBackend::new(path, (1400, 1000)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (top, bottom) = root.split_vertically(560);

    let pts = ratio_points(rows);
    let n = pts.iter().map(|p| p.0).max().unwrap_or(1) as f64;
    let lo = pts
        .iter()
        .map(|p| p.1.min(p.4.unwrap_or(p.1)))
        .fold(1.0, f64::min)
        .max(0.01)
        * 0.8;
    let hi = pts
        .iter()
        .map(|p| p.3.max(p.4.unwrap_or(p.3)))
        .fold(1.0, f64::max)
        * 1.25;
    let mut c = ChartBuilder::on(&top)
        .caption(
            "ratio per cell: median of the boots, bar = min-max, red dash = target",
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..n + 1.0, (lo..hi).log_scale())
        .map_err(err)?;
    c.configure_mesh()
        .x_desc("cell # (BENCHMARKS.md table)")
        .y_desc("ratio (log)")
        .x_labels(((n as usize) / 2).max(2))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()
        .map_err(err)?;
    c.draw_series(
        pts.iter().map(|&(i, lo, m, hi, _)| {
            ErrorBar::new_vertical(i as f64, lo, m, hi, BLUE.filled(), 6)
        }),
    )
    .map_err(err)?;
    c.draw_series(
        pts.iter()
            .map(|&(i, _, m, _, _)| Circle::new((i as f64, m), 4, BLUE.filled())),
    )
    .map_err(err)?;
    c.draw_series(pts.iter().filter_map(|&(i, _, _, _, t)| {
        t.map(|t| {
            PathElement::new(
                vec![(i as f64 - 0.4, t), (i as f64 + 0.4, t)],
                RED.stroke_width(2),
            )
        })
    }))
    .map_err(err)?;
    c.draw_series(LineSeries::new(
        [(0.0, 1.0), (n + 1.0, 1.0)],
        BLACK.mix(0.3),
    ))
    .map_err(err)?;

    let series = latency_series(boots);
    let xmax = series
        .iter()
        .filter_map(|(_, v)| v.last().copied())
        .fold(1.0, f64::max)
        * 1.2;
    let xmin = series
        .iter()
        .filter_map(|(_, v)| v.first().copied())
        .fold(xmax, f64::min)
        .max(0.1)
        * 0.8;
    let mut c = ChartBuilder::on(&bottom)
        .caption("punch..visible, 4 KiB hole in 64 MiB shmem: ours (punch..SYNC) against the bare punch, all boots", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((xmin..xmax).log_scale(), 0.0..1.0)
        .map_err(err)?;
    c.configure_mesh()
        .x_desc("microseconds (log)")
        .y_desc("fraction of rounds at or below")
        .draw()
        .map_err(err)?;
    let colors = [BLACK, MAGENTA, BLUE, GREEN, RED, CYAN];
    for (k, (name, v)) in series.iter().enumerate() {
        let color = colors[k % colors.len()];
        let len = v.len().max(1) as f64;
        c.draw_series(LineSeries::new(
            v.iter()
                .enumerate()
                .map(|(i, &x)| (x, (i + 1) as f64 / len)),
            color.stroke_width(2),
        ))
        .map_err(err)?
        .label(format!("{name} (n={})", v.len()))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{aggregate, Series};

    #[test]
    fn draws_an_svg_with_both_panels() {
        let json = r#"{"kernel":"7.2","cpus":2,"clocksource":"tsc","iterations":3,
            "cells":[{"id":"a","label":"a","unit":"ratio","goal":{"op":"at_most","value":2.0},"value":1.4,"detail":"","note":null},
                     {"id":"m","label":"m","unit":"mib","goal":{"op":"report"},"value":30.0,"detail":"","note":null}],
            "latency":[{"name":"bare punch","samples_ns":[20000,30000,25000]}]}"#;
        let mut b: Boot = serde_json::from_str(json).unwrap();
        b.latency.push(Series {
            name: "ours".into(),
            samples_ns: vec![50000, 70000],
        });
        let boots = [b];
        let rows = aggregate(&boots);
        assert_eq!(ratio_points(&rows), vec![(1, 1.4, 1.4, 1.4, Some(2.0))]);
        assert_eq!(latency_series(&boots)[0].1, vec![20.0, 25.0, 30.0]);
        let path =
            std::env::temp_dir().join(format!("ulive-bench-chart-{}.svg", std::process::id()));
        draw(&path, &rows, &boots).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(
            svg.starts_with("<svg")
                && svg.contains("bare punch (n=3)")
                && svg.contains("ours (n=2)"),
            "{svg}"
        );
    }
}
