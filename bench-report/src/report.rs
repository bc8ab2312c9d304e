//! Cells over boots: median, spread, verdict; the Markdown section.

use serde::Deserialize;

/// What the report needs of one boot's JSON (`udmabuf-ctl bench --json-out`).
#[derive(Debug, Deserialize)]
pub struct Boot {
    pub kernel: String,
    pub cpus: usize,
    pub clocksource: String,
    pub iterations: u32,
    pub cells: Vec<Cell>,
    #[serde(default)]
    pub latency: Vec<Series>,
}

#[derive(Debug, Deserialize)]
pub struct Series {
    pub name: String,
    pub samples_ns: Vec<u64>,
}

/// A cell as `udmabuf-ctl bench` writes it (its `bench_cells::Cell`).
#[derive(Clone, Debug, Deserialize)]
pub struct Cell {
    pub id: String,
    pub label: String,
    pub unit: Unit,
    pub goal: Goal,
    pub value: Option<f64>,
    pub detail: String,
    pub note: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    Ratio,
    Mib,
    Count,
}

#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(tag = "op", content = "value", rename_all = "snake_case")]
pub enum Goal {
    AtMost(f64),
    AtLeast(f64),
    Report,
}

/// One cell over all boots.
#[derive(Debug)]
pub struct Row {
    pub cell: Cell,
    /// The measured values, one per boot that measured it.
    pub values: Vec<f64>,
    /// The figures of the boot whose value is the median.
    pub detail: String,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Met,
    Missed,
    Reported,
    NotMeasured,
}

impl Row {
    /// Nearest-rank median (for 3 boots: the middle one).
    pub fn median(&self) -> Option<f64> {
        let mut v = self.values.clone();
        v.sort_by(f64::total_cmp);
        (!v.is_empty()).then(|| v[v.len().div_ceil(2) - 1])
    }
    pub fn spread(&self) -> Option<(f64, f64)> {
        let min = self.values.iter().copied().reduce(f64::min)?;
        let max = self.values.iter().copied().reduce(f64::max)?;
        Some((min, max))
    }
    pub fn verdict(&self) -> Verdict {
        match (self.cell.goal, self.median()) {
            (_, None) => Verdict::NotMeasured,
            (Goal::Report, _) => Verdict::Reported,
            (Goal::AtMost(t), Some(m)) => {
                if m <= t {
                    Verdict::Met
                } else {
                    Verdict::Missed
                }
            }
            (Goal::AtLeast(t), Some(m)) => {
                if m >= t {
                    Verdict::Met
                } else {
                    Verdict::Missed
                }
            }
        }
    }
}

/// The cells of every boot by id, in the order the first boot that has them lists them.
pub fn aggregate(boots: &[Boot]) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    for b in boots {
        for c in &b.cells {
            let i = match rows.iter().position(|r| r.cell.id == c.id) {
                Some(i) => i,
                None => {
                    rows.push(Row {
                        cell: c.clone(),
                        values: Vec::new(),
                        detail: c.detail.clone(),
                    });
                    rows.len() - 1
                }
            };
            if let Some(v) = c.value {
                rows[i].values.push(v);
            }
        }
    }
    for r in &mut rows {
        if let Some(m) = r.median() {
            let at = boots
                .iter()
                .flat_map(|b| &b.cells)
                .find(|c| c.id == r.cell.id && c.value == Some(m));
            if let Some(c) = at {
                r.detail = c.detail.clone();
            }
        }
    }
    rows
}

fn num(unit: Unit, v: f64) -> String {
    match unit {
        Unit::Ratio => format!("{v:.3}x"),
        Unit::Mib => format!("{v:.1} MiB"),
        Unit::Count => format!("{v:.0}"),
    }
}

pub fn target(unit: Unit, g: Goal) -> String {
    match g {
        Goal::AtMost(t) => format!("<= {}", num(unit, t)),
        Goal::AtLeast(t) => format!(">= {}", num(unit, t)),
        Goal::Report => "reported".into(),
    }
}

fn verdict_text(r: &Row) -> String {
    match r.verdict() {
        Verdict::Met => "met".into(),
        Verdict::Missed => "**MISSED**".into(),
        Verdict::Reported => String::new(),
        Verdict::NotMeasured => format!(
            "not measured: {}",
            r.cell.note.as_deref().unwrap_or("no value")
        ),
    }
}

fn median_text(r: &Row) -> String {
    r.median().map_or_else(
        || r.cell.note.clone().unwrap_or_else(|| "n/a".into()),
        |m| num(r.cell.unit, m),
    )
}

fn spread_text(r: &Row) -> String {
    match r.spread() {
        Some((a, b)) => format!("{} - {}", num(r.cell.unit, a), num(r.cell.unit, b)),
        None => String::new(),
    }
}

/// The plain summary `make bench` prints: every cell, a missed target marked MISSED.
pub fn summary(rows: &[Row], boots: usize) -> String {
    let mut s = format!("== bench: medians over {boots} boot(s), spread min-max\n");
    for r in rows {
        let mark = match r.verdict() {
            Verdict::Met => "met   ",
            Verdict::Missed => "MISSED",
            Verdict::Reported => "      ",
            Verdict::NotMeasured => "n/a   ",
        };
        s.push_str(&format!(
            "{mark} {} [{}] target {}: {}\n",
            median_text(r),
            spread_text(r),
            target(r.cell.unit, r.cell.goal),
            r.cell.label
        ));
    }
    let missed = rows
        .iter()
        .filter(|r| r.verdict() == Verdict::Missed)
        .count();
    let met = rows.iter().filter(|r| r.verdict() == Verdict::Met).count();
    s.push_str(&format!("== {met} targets met, {missed} MISSED\n"));
    s
}

pub const BEGIN: &str =
    "<!-- ulive-bench-report: begin (generated by `make bench`; edit outside these marks) -->";
pub const END: &str = "<!-- ulive-bench-report: end -->";

/// The generated section: how it was made, then one table of every cell.
/// `profile`: the Markdown of `udmabuf-ctl bench --profile` from one boot, if any.
pub fn markdown(
    rows: &[Row],
    boots: &[Boot],
    about: &[String],
    chart: Option<&str>,
    profile: Option<&str>,
) -> String {
    let mut s = String::new();
    s.push_str(&format!("{BEGIN}\n\n"));
    if let Some(b) = boots.first() {
        s.push_str(&format!(
            "- {} guest boots; each cell is one figure per boot, shown as the median of the boots with the \
             spread (min - max) beside it; the verdict judges the median\n",
            boots.len()
        ));
        s.push_str(&format!(
            "- guest: kernel {}, {} CPU(s), clocksource `{}`; {} iterations per create/map cell, at most 100 per live cell\n",
            b.kernel, b.cpus, b.clocksource, b.iterations
        ));
    }
    for a in about {
        s.push_str(&format!("- {a}\n"));
    }
    if let Some(c) = chart {
        s.push_str(&format!(
            "\n![ratios per cell and punch latency]({c})\n\nThe chart: [{c}]({c}).\n"
        ));
    }
    let missed = rows
        .iter()
        .filter(|r| r.verdict() == Verdict::Missed)
        .count();
    let met = rows.iter().filter(|r| r.verdict() == Verdict::Met).count();
    s.push_str(&format!("\n**{met} targets met, {missed} missed.**\n\n"));
    s.push_str("| # | cell | median | spread | target | verdict | figures (median boot) |\n|---:|---|---:|---|---|---|---|\n");
    for (i, r) in rows.iter().enumerate() {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            i + 1,
            r.cell.label,
            median_text(r),
            spread_text(r),
            target(r.cell.unit, r.cell.goal),
            verdict_text(r),
            r.detail
        ));
    }
    if let Some(p) = profile {
        s.push_str("\n### Function profile of the missed cells' paths (boot 1)\n\n");
        s.push_str("<details><summary>One table per workload: function, calls and us per operation</summary>\n\n");
        s.push_str(p.trim());
        s.push_str("\n\n</details>\n");
    }
    s.push_str(&format!("\n{END}\n"));
    s
}

/// `old` with its generated section replaced by `section` (appended when it has none).
pub fn splice(old: &str, section: &str) -> String {
    match (old.find(BEGIN), old.find(END)) {
        (Some(a), Some(b)) if b > a => format!(
            "{}{}{}",
            &old[..a],
            section.trim_end(),
            &old[b + END.len()..]
        ),
        _ if old.trim().is_empty() => {
            format!("# Benchmarks: udmabuf-live against the built-in udmabuf\n\n{section}")
        }
        _ => format!("{}\n\n{section}", old.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot(values: &[(&str, Option<f64>, Goal)]) -> Boot {
        Boot {
            kernel: "7.2".into(),
            cpus: 2,
            clocksource: "tsc".into(),
            iterations: 10,
            cells: values
                .iter()
                .map(|(id, v, g)| Cell {
                    id: (*id).into(),
                    label: format!("label of {id}"),
                    unit: Unit::Ratio,
                    goal: *g,
                    value: *v,
                    detail: format!("detail {v:?}"),
                    note: v.is_none().then(|| "policy not available".into()),
                })
                .collect(),
            latency: Vec::new(),
        }
    }

    #[test]
    fn median_spread_and_verdict_over_boots() {
        let g = Goal::AtMost(2.0);
        let boots = [
            boot(&[("a", Some(1.0), g), ("b", Some(3.0), Goal::AtLeast(50.0))]),
            boot(&[("a", Some(2.5), g), ("b", Some(60.0), Goal::AtLeast(50.0))]),
            boot(&[
                ("a", Some(1.5), g),
                ("b", Some(55.0), Goal::AtLeast(50.0)),
                ("c", None, g),
            ]),
        ];
        let rows = aggregate(&boots);
        assert_eq!(rows.len(), 3);
        assert_eq!(
            (rows[0].median(), rows[0].spread()),
            (Some(1.5), Some((1.0, 2.5)))
        );
        assert_eq!(rows[0].verdict(), Verdict::Met);
        assert_eq!(rows[0].detail, "detail Some(1.5)");
        assert_eq!(rows[1].median(), Some(55.0));
        assert_eq!(rows[1].verdict(), Verdict::Met);
        assert_eq!(rows[2].verdict(), Verdict::NotMeasured);
        let one = aggregate(&boots[..1]);
        assert_eq!(one[1].verdict(), Verdict::Missed);
        let s = summary(&one, 1);
        assert!(
            s.contains("MISSED 3.000x [3.000x - 3.000x] target >= 50.000x: label of b"),
            "{s}"
        );
        let md = markdown(
            &rows,
            &boots,
            &["command: `make bench`".into()],
            Some("chart.svg"),
            Some("#### a workload\n\n| function | calls | us |"),
        );
        assert!(
            md.contains("per operation</summary>\n\n#### a workload\n"),
            "{md}"
        );
        assert!(md.contains("| 1 | label of a | 1.500x | 1.000x - 2.500x | <= 2.000x | met | detail Some(1.5) |"), "{md}");
        assert!(md.contains("| 3 | label of c | policy not available |  | <= 2.000x | not measured: policy not available |"), "{md}");
        assert!(
            md.contains("![ratios per cell and punch latency](chart.svg)")
                && md.contains("- command: `make bench`"),
            "{md}"
        );
    }

    #[test]
    fn splice_keeps_the_hand_written_text() {
        let old = format!("# T\n\nintro\n\n{BEGIN}\nold table\n{END}\n\n## Notes\nkept\n");
        let new = splice(&old, &format!("{BEGIN}\nnew\n{END}\n"));
        assert_eq!(
            new,
            format!("# T\n\nintro\n\n{BEGIN}\nnew\n{END}\n\n## Notes\nkept\n")
        );
        assert!(splice("", "X").starts_with("# Benchmarks"));
        assert_eq!(splice("hand", "X"), "hand\n\nX");
    }
}
