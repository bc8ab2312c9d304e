//! The one list of `udmabuf-ctl bench` cells: what each compares and its target.
//!
//! Every measurement of the bench ends as a [`Cell`]: one figure from one guest boot
//! (mostly a ratio ours / reference), with the target it is held to. The JSON report
//! carries the cells with their labels and targets, so the host report
//! (`ulive-bench-report`, run by `make bench`) needs no definitions of its own: it takes
//! the median over the boots and judges it against the target written here.

use serde::{Deserialize, Serialize};

/// What a figure is counted in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// A ratio (shown as `1.23x`).
    Ratio,
    /// Mebibytes.
    Mib,
    /// A count (DMA segments).
    Count,
}

/// The target a figure is held to.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", content = "value", rename_all = "snake_case")]
pub enum Goal {
    AtMost(f64),
    AtLeast(f64),
    /// Reported, with no target.
    Report,
}

impl Goal {
    /// `Some(true)` when `v` meets the target, `None` when there is none.
    pub fn met(self, v: f64) -> Option<bool> {
        match self {
            Goal::AtMost(t) => Some(v <= t),
            Goal::AtLeast(t) => Some(v >= t),
            Goal::Report => None,
        }
    }
}

/// A kind of cell: a key, the label template (`{}` takes the subject) and the target.
pub struct Def {
    pub key: &'static str,
    pub label: &'static str,
    pub unit: Unit,
    pub goal: Goal,
}

/// Every kind of cell the bench produces, and its target (issues 13 and 15).
pub const DEFS: &[Def] = &[
    Def { key: "create", label: "create (the ioctl alone), {}: ours / built-in", unit: Unit::Ratio, goal: Goal::AtMost(1.05) },
    Def { key: "close", label: "close (the release), {}: ours / built-in", unit: Unit::Ratio, goal: Goal::Report },
    Def { key: "create_close", label: "create+close, {}: ours / built-in", unit: Unit::Ratio, goal: Goal::AtMost(1.05) },
    Def {
        key: "map_unwatched",
        label: "map_dma_buf, nothing watches the memfd, {}: ours / built-in",
        unit: Unit::Ratio,
        goal: Goal::AtMost(1.05),
    },
    Def { key: "map", label: "map_dma_buf, {}: ours / built-in", unit: Unit::Ratio, goal: Goal::Report },
    Def { key: "sg_entries", label: "sg entries of a map, {}: ours (most seen)", unit: Unit::Count, goal: Goal::AtMost(32.0) },
    Def {
        key: "update_vs_recreate",
        label: "live update (4 KiB punch..SYNC, 64 MiB shmem) against close+re-create of a built-in one, {}: speed-up",
        unit: Unit::Ratio,
        goal: Goal::AtLeast(50.0),
    },
    Def {
        key: "update_scaling",
        label: "live update of a 4 KiB hole, 256 MiB / 16 MiB buffer, {}",
        unit: Unit::Ratio,
        goal: Goal::AtMost(1.5),
    },
    Def {
        key: "punch_vs_bare",
        label: "punch..SYNC on ours / the bare punch (memfd covered by nothing), {}",
        unit: Unit::Ratio,
        goal: Goal::AtMost(2.0),
    },
    Def {
        key: "punch_vs_builtin",
        label: "punch..SYNC on ours / the same punch under a built-in udmabuf, {}",
        unit: Unit::Ratio,
        goal: Goal::AtMost(2.0),
    },
    Def {
        key: "hole_per_page",
        label: "update cost per extra page (2 MiB hole against 4 KiB) / the memfd's own write-fault refill per page, {}",
        unit: Unit::Ratio,
        goal: Goal::AtMost(1.0),
    },
    Def {
        key: "kmem_per_buffer",
        label: "kernel memory (slab + vmalloc) of 64 live 64 MiB buffers, {}: ours / built-in",
        unit: Unit::Ratio,
        goal: Goal::AtMost(1.1),
    },
    Def {
        key: "fault_cost",
        label: "4 KiB punch in 64 MiB until visible through a CPU mmap: whole-buffer mmap / one-page mmap, {}",
        unit: Unit::Ratio,
        goal: Goal::AtMost(1.5),
    },
    Def {
        key: "memret_avail_lazy",
        label: "memory return (64 MiB buffer nobody maps, MADV_REMOVE 32 MiB): MemAvailable rise, {}",
        unit: Unit::Mib,
        goal: Goal::AtLeast(31.0),
    },
    Def {
        key: "memret_blocks_lazy",
        label: "memory return: the memfd's allocated blocks drop, {}",
        unit: Unit::Mib,
        goal: Goal::AtLeast(32.0),
    },
    Def { key: "memret_avail", label: "memory return: MemAvailable rise, {}", unit: Unit::Mib, goal: Goal::Report },
    Def {
        key: "memret_blocks",
        label: "memory return: the memfd's allocated blocks drop, {}",
        unit: Unit::Mib,
        goal: Goal::Report,
    },
    Def {
        key: "memret_pinned",
        label: "memory return: punched but still held (blocks dropped - MemAvailable rise), {}",
        unit: Unit::Mib,
        goal: Goal::Report,
    },
];

/// One figure of one boot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// Unique in a report: key, subject and policy.
    pub id: String,
    pub key: String,
    pub label: String,
    pub unit: Unit,
    pub goal: Goal,
    /// The repopulation policy it ran under (`lazy`, `eager`), if it depends on it.
    pub policy: Option<String>,
    /// `None` when it could not be measured (see `note`).
    pub value: Option<f64>,
    /// The figures behind the value (e.g. `ours 61.2 us, bare 30.4 us`).
    pub detail: String,
    pub note: Option<String>,
}

/// The definition of `key`; a key without one (a bug: the unit tests name every key the
/// bench uses) is reported with no target rather than ending the run.
fn def(key: &str) -> Def {
    DEFS.iter().find(|d| d.key == key).map_or(
        Def { key: "undefined", label: "UNDEFINED CELL {}", unit: Unit::Ratio, goal: Goal::Report },
        |d| Def { key: d.key, label: d.label, unit: d.unit, goal: d.goal },
    )
}

impl Cell {
    /// A measured cell of kind `key` about `subject`.
    pub fn new(key: &str, subject: &str, policy: Option<&str>, value: f64, detail: String) -> Self {
        let d = def(key);
        let id = match policy {
            Some(p) => format!("{key}/{subject}@{p}"),
            None => format!("{key}/{subject}"),
        };
        let subject = match policy {
            Some(p) => format!("{subject}, repopulate={p}"),
            None => subject.to_owned(),
        };
        Self {
            id,
            key: key.to_owned(),
            label: d.label.replace("{}", &subject),
            unit: d.unit,
            goal: d.goal,
            policy: policy.map(str::to_owned),
            value: value.is_finite().then_some(value),
            detail,
            note: None,
        }
    }

    /// A cell that could not be measured here, and why.
    pub fn missing(key: &str, subject: &str, policy: Option<&str>, why: &str) -> Self {
        let mut c = Self::new(key, subject, policy, f64::NAN, String::new());
        c.note = Some(why.to_owned());
        c
    }
}

/// Nanoseconds as microseconds with one decimal.
pub fn us(ns: f64) -> String {
    format!("{:.1} us", ns / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_and_labels_take_a_subject() {
        for (i, d) in DEFS.iter().enumerate() {
            assert!(DEFS[i + 1..].iter().all(|o| o.key != d.key), "duplicate key {}", d.key);
            assert!(d.label.contains("{}"), "{} has no subject slot", d.key);
        }
    }

    #[test]
    fn cells_take_label_target_and_policy_from_the_definition() {
        let c = Cell::new("punch_vs_bare", "4 KiB hole in 64 MiB shmem", Some("lazy"), 1.5, "x".into());
        assert_eq!(c.id, "punch_vs_bare/4 KiB hole in 64 MiB shmem@lazy");
        assert_eq!(c.goal, Goal::AtMost(2.0));
        assert!(c.label.contains("4 KiB hole in 64 MiB shmem, repopulate=lazy"), "{}", c.label);
        assert_eq!(c.goal.met(1.5), Some(true));
        assert_eq!(Goal::AtLeast(50.0).met(40.0), Some(false));
        assert_eq!(Goal::Report.met(1.0), None);
        let m = Cell::missing("fault_cost", "shmem", Some("eager"), "policy not available");
        assert_eq!((m.value, m.note.as_deref()), (None, Some("policy not available")));
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains(r#""goal":{"op":"at_most","value":2.0}"#), "{json}");
        assert_eq!(serde_json::from_str::<Cell>(&json).unwrap(), c);
    }
}
