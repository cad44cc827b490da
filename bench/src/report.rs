//! The results of a run: one figure per measured cost, peers beside them, as a terminal table,
//! JSON for tracking, and a Markdown page for `bench/results/README.md`.

use std::fmt::Write as _;

use serde::Serialize;

use crate::stats::{Summary, growth_exponent, growth_words};

/// Whether a bigger number is good news.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Lower,
    Higher,
}

/// One figure at one fleet size.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// Apps in the generated repository.
    pub n: usize,
    #[serde(flatten)]
    pub summary: Summary,
}

/// One measured cost across fleet sizes.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// Stable key, also the chart's file name.
    pub id: &'static str,
    pub title: &'static str,
    pub unit: &'static str,
    pub better: Better,
    /// How it is measured, in one sentence.
    pub how: &'static str,
    pub points: Vec<Point>,
    /// `k` in `median ≈ c·N^k`, from the smallest to the largest N.
    pub growth_exponent: Option<f64>,
}

impl Figure {
    /// A figure with no points yet.
    pub fn new(id: &'static str, title: &'static str, unit: &'static str, better: Better, how: &'static str) -> Self {
        Figure { id, title, unit, better, how, points: Vec::new(), growth_exponent: None }
    }

    /// Adds the samples taken at size `n` (ignored when there are none).
    pub fn add(&mut self, n: usize, samples: &[f64]) {
        if let Some(summary) = Summary::of(samples) {
            self.points.push(Point { n, summary });
            let medians: Vec<(f64, f64)> = self.points.iter().map(|p| (p.n as f64, p.summary.median)).collect();
            self.growth_exponent = growth_exponent(&medians);
        }
    }
}

/// Keelson and a peer tool on the same inputs at one size.
#[derive(Debug, Clone, Serialize)]
pub struct PeerPoint {
    pub n: usize,
    pub ours: Summary,
    pub theirs: Summary,
    /// `ours.median / theirs.median`, in the figure's unit.
    pub ratio: f64,
}

/// A comparison with a peer tool.
#[derive(Debug, Clone, Serialize)]
pub struct PeerFigure {
    pub id: &'static str,
    pub title: &'static str,
    pub unit: &'static str,
    pub better: Better,
    /// The figure whose chart also shows this comparison.
    pub chart: &'static str,
    pub ours_label: &'static str,
    pub theirs_label: String,
    /// Whether `ours` is measured differently from the chart's own series (then it is drawn too).
    pub ours_is_separate_series: bool,
    pub points: Vec<PeerPoint>,
    /// Why a size has no point (the peer could not run).
    pub skipped: Vec<String>,
}

impl PeerFigure {
    /// Adds both tools' samples at size `n`.
    pub fn add(&mut self, n: usize, ours: &[f64], theirs: &[f64]) {
        if let (Some(ours), Some(theirs)) = (Summary::of(ours), Summary::of(theirs)) {
            let ratio = ours.median / theirs.median;
            self.points.push(PeerPoint { n, ours, theirs, ratio });
        }
    }
}

/// Where and how the run happened.
#[derive(Debug, Clone, Serialize)]
pub struct Host {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub memory_gib: f64,
}

/// Everything one run of the harness measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// RFC 3339 UTC.
    pub generated_at: String,
    /// The command line, as typed.
    pub command: String,
    /// `git describe`-style revision of the workspace (`-dirty` when it had local changes).
    pub keelson_revision: String,
    pub seed: u64,
    pub sizes: Vec<usize>,
    /// Repetitions per size.
    pub runs: Vec<usize>,
    pub host: Host,
    pub figures: Vec<Figure>,
    pub peers: Vec<PeerFigure>,
    /// What was not measured, and why.
    pub notes: Vec<String>,
    /// Wall time of the whole run, in seconds.
    pub total_seconds: f64,
}

/// Numbers with three significant digits, without scientific notation for everyday magnitudes.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1e6 {
        format!("{:.3e}", v)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a >= 0.001 {
        format!("{v:.3}")
    } else {
        format!("{:.2e}", v)
    }
}

fn growth(k: Option<f64>) -> String {
    match k {
        Some(k) => format!("N^{k:.2} ({})", growth_words(k)),
        None => "-".into(),
    }
}

impl Report {
    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<38} {:>6}  {:>10} {:>10} {:>10}  {:<12} growth",
            "figure", "N", "min", "median", "max", "unit"
        );
        for f in &self.figures {
            for (i, p) in f.points.iter().enumerate() {
                let name = if i == 0 { f.title } else { "" };
                let g = if i + 1 == f.points.len() { growth(f.growth_exponent) } else { String::new() };
                let s = &p.summary;
                let _ = writeln!(
                    out,
                    "{name:<38} {:>6}  {:>10} {:>10} {:>10}  {:<12} {g}",
                    p.n,
                    num(s.min),
                    num(s.median),
                    num(s.max),
                    f.unit
                );
            }
        }
        if !self.peers.is_empty() {
            let _ = writeln!(
                out,
                "\n{:<38} {:>6}  {:>10} {:>10} {:>12}  unit",
                "peer (same inputs, medians)", "N", "ours", "theirs", "ours/theirs"
            );
            for peer in &self.peers {
                for (i, p) in peer.points.iter().enumerate() {
                    let name = if i == 0 { peer.title } else { "" };
                    let _ = writeln!(
                        out,
                        "{name:<38} {:>6}  {:>10} {:>10} {:>12}  {}",
                        p.n,
                        num(p.ours.median),
                        num(p.theirs.median),
                        format!("{}×", num(p.ratio)),
                        peer.unit
                    );
                }
                for s in &peer.skipped {
                    let _ = writeln!(out, "{:<38} {s}", if peer.points.is_empty() { peer.title } else { "" });
                }
            }
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        out
    }

    /// `bench/results/README.md`: the table as Markdown, with the date and the exact command.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# Keelson benchmark results\n");
        let _ = writeln!(
            out,
            "Measured {} on {} ({} CPUs, {:.0} GiB, Linux {}), Keelson `{}`, seed {}.\n",
            &self.generated_at[..10.min(self.generated_at.len())],
            self.host.cpu_model,
            self.host.cpus,
            self.host.memory_gib,
            self.host.kernel,
            self.keelson_revision,
            self.seed
        );
        let _ = writeln!(out, "```sh\n{}\n```\n", self.command);
        let runs: Vec<String> = self.sizes.iter().zip(&self.runs).map(|(n, r)| format!("{r} at N={n}")).collect();
        let _ = writeln!(
            out,
            "Runs per size: {}. Each cell is min / **median** / max; growth is `k` in median ≈ c·N^k from the smallest to the largest N. Whole run: {:.0} s.\n",
            runs.join(", "),
            self.total_seconds
        );
        out.push_str("| figure | unit |");
        for n in &self.sizes {
            let _ = write!(out, " N = {n} |");
        }
        out.push_str(" growth |\n|---|---|");
        for _ in &self.sizes {
            out.push_str("---|");
        }
        out.push_str("---|\n");
        for f in &self.figures {
            let _ = write!(out, "| {} | {} |", f.title, f.unit);
            for n in &self.sizes {
                match f.points.iter().find(|p| p.n == *n) {
                    Some(p) => {
                        let _ = write!(
                            out,
                            " {} / **{}** / {} |",
                            num(p.summary.min),
                            num(p.summary.median),
                            num(p.summary.max)
                        );
                    }
                    None => out.push_str(" - |"),
                }
            }
            let _ = writeln!(out, " {} |", growth(f.growth_exponent));
        }
        if !self.peers.is_empty() {
            out.push_str("\n## Peers on the same inputs (medians; ratio = ours / theirs)\n\n| comparison | unit |");
            for n in &self.sizes {
                let _ = write!(out, " N = {n} |");
            }
            out.push_str("\n|---|---|");
            for _ in &self.sizes {
                out.push_str("---|");
            }
            out.push('\n');
            for peer in &self.peers {
                let _ =
                    write!(out, "| {} ({} vs {}) | {} |", peer.title, peer.ours_label, peer.theirs_label, peer.unit);
                for n in &self.sizes {
                    match peer.points.iter().find(|p| p.n == *n) {
                        Some(p) => {
                            let _ = write!(
                                out,
                                " {} vs {} = **{}×** |",
                                num(p.ours.median),
                                num(p.theirs.median),
                                num(p.ratio)
                            );
                        }
                        None => out.push_str(" - |"),
                    }
                }
                out.push('\n');
            }
        }
        out.push_str("\n## How each figure is measured\n\n");
        for f in &self.figures {
            let _ = writeln!(out, "- **{}** (`{}.svg`): {}", f.title, f.id, f.how);
        }
        if !self.notes.is_empty() {
            out.push_str("\n## Notes\n\n");
            for n in &self.notes {
                let _ = writeln!(out, "- {n}");
            }
        }
        out.push_str("\nCharts (log-log, one per figure; the grey line runs through the first median: ∝ N (linear) for times and sizes, flat (per-item cost independent of N) for rates):\n\n");
        for f in &self.figures {
            let _ = writeln!(out, "![{}]({}.svg)", f.title, f.id);
        }
        out
    }
}
