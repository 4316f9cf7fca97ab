//! Figures, bars and the results file.

use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Figure {
    pub group: String,
    pub name: String,
    pub value: f64,
    pub unit: String,
}

#[derive(Debug, Serialize)]
pub struct Bar {
    pub name: String,
    pub met: bool,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub quick: bool,
    pub machine: String,
    pub figures: Vec<Figure>,
    pub bars: Vec<Bar>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn new(quick: bool) -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        let mem = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .next()
                    .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
            })
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb / 1024 / 1024)
            .unwrap_or(0);
        Report {
            quick,
            machine: format!("{cores} cores, {mem} GiB"),
            figures: vec![],
            bars: vec![],
            notes: vec![],
        }
    }

    pub fn figure(&mut self, group: &str, name: &str, value: f64, unit: &str) {
        eprintln!("  {group:<10} {name:<58} {value:>14.3} {unit}");
        self.figures.push(Figure {
            group: group.into(),
            name: name.into(),
            value,
            unit: unit.into(),
        });
    }

    pub fn bar(&mut self, name: &str, met: bool, detail: String) {
        eprintln!(
            "  BAR {} {name}: {detail}",
            if met { "met   " } else { "MISSED" }
        );
        self.bars.push(Bar {
            name: name.into(),
            met,
            detail,
        });
    }

    pub fn note(&mut self, note: String) {
        eprintln!("  note: {note}");
        self.notes.push(note);
    }

    pub fn finish(self) -> anyhow::Result<()> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("results.json");
        std::fs::write(&path, serde_json::to_string_pretty(&self)?)?;
        let met = self.bars.iter().filter(|b| b.met).count();
        eprintln!("bars: {met} met, {} missed", self.bars.len() - met);
        eprintln!("results written to {}", path.display());
        Ok(())
    }
}

/// Percentile of sorted durations, in milliseconds.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

pub fn rate(n: usize, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// This process's resident memory, in KiB.
pub fn rss_kib() -> u64 {
    rss_kib_of("self")
}

/// A process's resident memory, in KiB: `process` is a pid or `self`.
pub fn rss_kib_of(process: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{process}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_string)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}
