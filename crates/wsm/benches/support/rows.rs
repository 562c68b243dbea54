//! Result rows for `scripts/bench.sh`, which gathers every bench's figures into one table in
//! BENCHMARKS.md. With `BENCH_ROWS=<file>` set, a bench appends one tab-separated line per figure:
//! `figure, ours, baseline, ratio, goal, command`, units inside the values. A machine-readable
//! side channel keeps the script from parsing each bench's human output, which may change freely.
//! The plugin's bench (`benches/process.rs` at the workspace root) includes this file as well, so
//! the format has one definition.

use std::io::Write;
use std::path::PathBuf;

/// Where the rows go, and the command that reproduces them.
pub struct Rows {
    file: Option<PathBuf>,
    command: String,
}

impl Rows {
    /// Rows go to `BENCH_ROWS` when it is set, except in a smoke run: a smoke run's figures mean
    /// nothing and must not reach the table.
    pub fn from_env(command: &str, smoke: bool) -> Rows {
        Rows {
            file: std::env::var_os("BENCH_ROWS")
                .filter(|_| !smoke)
                .map(PathBuf::from),
            command: command.to_owned(),
        }
    }

    /// Appends one row. A row that cannot be written fails the bench: a table silently missing a
    /// figure would look complete.
    pub fn add(&self, figure: &str, ours: &str, baseline: &str, ratio: &str, goal: &str) {
        let Some(file) = &self.file else { return };
        let line = [figure, ours, baseline, ratio, goal, &self.command]
            .map(cell)
            .join("\t");
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
            .and_then(|mut f| writeln!(f, "{line}"))
            .unwrap_or_else(|e| {
                panic!(
                    "BENCH_ROWS={}: cannot append the row for {figure:?}: {e}",
                    file.display()
                )
            });
    }
}

/// One cell: tabs and line breaks would split the row, so they become spaces.
fn cell(text: &str) -> String {
    text.replace(['\t', '\n', '\r'], " ")
}

/// `x` rounded to a whole number with thousands separators (1,234,567), as BENCHMARKS.md writes
/// large figures.
pub fn grouped(x: f64) -> String {
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 && digits != "0" {
        out.insert(0, '-');
    }
    out
}
