//! Tables (Markdown, so that a run pastes into `BENCHMARKS.md`), machine-readable figure
//! lines, and the statistics both use.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use lockheed::testing::{RequestCounts, RequestRecord};

/// One table of results, printed as Markdown.
pub struct Table {
    title: String,
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
    notes: Vec<String>,
}

impl Table {
    pub fn new(title: &str, headers: &[&str]) -> Self {
        Self {
            title: title.to_owned(),
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        assert_eq!(cells.len(), self.headers.len(), "a row of {}", self.title);
        self.rows.push(cells);
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub fn print(&self) {
        let mut out = format!("\n### {}\n\n", self.title);
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        out.push_str(&line(&self.headers));
        let rule: Vec<String> = self
            .headers
            .iter()
            .enumerate()
            .map(|(i, _)| if i == 0 { "---".into() } else { "---:".into() })
            .collect();
        out.push_str(&line(&rule));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for note in &self.notes {
                let _ = writeln!(out, "{note}");
            }
        }
        println!("{out}");
    }
}

/// A machine-readable line for one figure: `figure <name> <value> <unit>`
/// (`grep ^figure` collects them).
pub fn figure(name: &str, value: f64, unit: &str) {
    println!("figure {name} {value:.4} {unit}");
}

/// The nearest-rank percentile `p` (0 to 100) of `samples`, which it sorts.
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    assert!(!samples.is_empty(), "a percentile of nothing");
    samples.sort_unstable();
    // Nearest rank: the smallest sample with at least p% of the samples at or below it.
    let rank = (p / 100.0 * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

/// Milliseconds, with precision suited to the size.
pub fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1e3)
    } else if ms >= 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

/// A ratio or count with two decimals, or one for large values.
pub fn num(value: f64) -> String {
    if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// Requests per verb, as the server counted them (or a remote server reported them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts(pub BTreeMap<String, u64>);

impl Counts {
    pub fn of(counts: &RequestCounts) -> Self {
        Self(
            counts
                .iter()
                .map(|(verb, n)| (verb.as_str().to_owned(), n))
                .collect(),
        )
    }

    /// Counts the requests of some log records.
    pub fn of_records<'a>(records: impl IntoIterator<Item = &'a RequestRecord>) -> Self {
        let mut counts = Self::default();
        for record in records {
            *counts.0.entry(record.verb.as_str().to_owned()).or_default() += 1;
        }
        counts
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    pub fn get(&self, verb: &str) -> u64 {
        self.0.get(verb).copied().unwrap_or(0)
    }

    pub fn writes(&self) -> u64 {
        ["create", "update", "patch", "delete"]
            .iter()
            .map(|v| self.get(v))
            .sum()
    }

    /// Adds up another count.
    pub fn add(&mut self, other: &Self) {
        for (verb, n) in &other.0 {
            *self.0.entry(verb.clone()).or_default() += n;
        }
    }

    /// `2 (get 1, update 1)`, each count divided by `per` (the operations counted).
    pub fn per(&self, per: u64) -> String {
        let per = per.max(1) as f64;
        let each = |n: u64| {
            let v = n as f64 / per;
            if (v - v.round()).abs() < 1e-9 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        };
        let verbs: Vec<String> = self
            .0
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(verb, n)| format!("{} {}", verb.to_uppercase(), each(*n)))
            .collect();
        format!("{} ({})", each(self.total()), verbs.join(" + "))
    }
}
