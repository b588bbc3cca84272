//! The results as markdown, and the dated section of docs/benchmarks.md.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

/// A markdown table with a title.
#[derive(Debug, Default)]
pub struct Table {
    /// `### title`.
    pub title: String,
    /// Column headers.
    pub header: Vec<String>,
    /// Cells.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table.
    pub fn new(title: &str, header: &[&str]) -> Table {
        Table {
            title: title.into(),
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: &[String]) {
        self.rows.push(cells.to_vec());
    }
}

/// "pass" or "**MISS**".
pub fn verdict(pass: bool) -> String {
    if pass {
        "pass".into()
    } else {
        "**MISS**".into()
    }
}

/// A whole run.
#[derive(Debug, Default)]
pub struct Report {
    /// The section heading, `Run: DATE ...`.
    pub heading: String,
    /// `- key: value` lines under the heading.
    pub facts: Vec<(String, String)>,
    /// Result tables.
    pub tables: Vec<Table>,
    /// Free-text notes after the tables.
    pub notes: Vec<String>,
}

impl Report {
    /// The section as markdown, starting with `## heading`.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "## {}\n", self.heading);
        for (k, v) in &self.facts {
            let _ = writeln!(out, "- {k}: {v}");
        }
        for t in &self.tables {
            let _ = writeln!(out, "\n### {}\n", t.title);
            let _ = writeln!(out, "| {} |", t.header.join(" | "));
            let _ = writeln!(out, "|{}", "---|".repeat(t.header.len()));
            for r in &t.rows {
                let _ = writeln!(out, "| {} |", r.join(" | "));
            }
        }
        if !self.notes.is_empty() {
            let _ = writeln!(out, "\nNotes:");
            for n in &self.notes {
                let _ = writeln!(out, "- {n}");
            }
        }
        out
    }
}

/// The top of docs/benchmarks.md when the file is new.
const PREAMBLE: &str = "# Benchmarks\n\n\
Measured by `corten-bench` (crates/bench). One command installs what is missing (etcd 3.4 \
from Debian, protoc), builds the release binaries and runs everything:\n\n    scripts/bench.sh\n\n\
Each run appends a dated section below (a second run on the same day replaces that day's \
section). What each number means is in the module docs of `crates/bench/src/main.rs`; \
every number is measured in that run, on that machine.\n";

/// Inserts `section` (markdown starting with `## heading`) into the file at `path`: replaces the
/// section with the same heading line if there is one, else appends it.
pub fn update_doc(path: &Path, section: &str) -> Result<()> {
    let existing = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => PREAMBLE.to_string(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let updated = splice(&existing, section);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, updated).with_context(|| format!("writing {}", path.display()))
}

fn splice(doc: &str, section: &str) -> String {
    let heading = section.lines().next().unwrap_or_default();
    let lines: Vec<&str> = doc.lines().collect();
    let Some(start) = lines.iter().position(|l| *l == heading) else {
        return format!("{}\n\n{}", doc.trim_end(), section);
    };
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.starts_with("## "))
        .map(|i| start + 1 + i)
        .unwrap_or(lines.len());
    let mut out = lines[..start].join("\n");
    out.push('\n');
    out.push_str(section.trim_end());
    out.push('\n');
    if end < lines.len() {
        out.push('\n');
        out.push_str(&lines[end..].join("\n"));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_appends_then_replaces_the_same_heading() {
        let doc = "# B\n\nintro\n";
        let a = splice(doc, "## Run: 2025-01-01\n\nfirst\n");
        assert_eq!(a, "# B\n\nintro\n\n## Run: 2025-01-01\n\nfirst\n");
        let b = splice(&a, "## Run: 2025-01-02\n\nsecond\n");
        let c = splice(&b, "## Run: 2025-01-01\n\nreplaced\n");
        assert_eq!(
            c,
            "# B\n\nintro\n\n## Run: 2025-01-01\n\nreplaced\n\n## Run: 2025-01-02\n\nsecond\n"
        );
    }

    #[test]
    fn markdown_tables() {
        let mut t = Table::new("T", &["a", "b"]);
        t.row(&["1".into(), verdict(false)]);
        let r = Report {
            heading: "Run: x".into(),
            facts: vec![("k".into(), "v".into())],
            tables: vec![t],
            notes: vec!["n".into()],
        };
        assert_eq!(
            r.markdown(),
            "## Run: x\n\n- k: v\n\n### T\n\n| a | b |\n|---|---|\n| 1 | **MISS** |\n\nNotes:\n- n\n"
        );
    }
}
