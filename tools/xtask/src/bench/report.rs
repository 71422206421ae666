//! The one report writer of the benchmarks: a [`Report`] is Markdown prose and
//! [`Table`]s in order; each table renders as a Markdown table and as a JSON array of
//! objects from the same cells, so the two files cannot disagree. `write` puts them in
//! `target/bench/<name>.{md,json}` and prints the Markdown.

use serde_json::{Map, Value};

use crate::{Outcome, fail, host};

/// One cell: its Markdown text and its JSON value.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    md: String,
    json: Value,
}

/// A cell shown as `md` and stored as `json`.
pub fn cell(md: impl std::fmt::Display, json: impl Into<Value>) -> Cell {
    Cell {
        md: md.to_string(),
        json: json.into(),
    }
}

impl From<&str> for Cell {
    fn from(s: &str) -> Cell {
        cell(s, s)
    }
}

impl From<String> for Cell {
    fn from(s: String) -> Cell {
        Cell {
            json: Value::String(s.clone()),
            md: s,
        }
    }
}

impl From<u64> for Cell {
    fn from(n: u64) -> Cell {
        cell(n, n)
    }
}

impl From<bool> for Cell {
    fn from(b: bool) -> Cell {
        cell(b, b)
    }
}

/// A table: columns, each a Markdown header and a JSON key (an empty header keeps the
/// column out of the Markdown: JSON-only detail), and rows of cells.
#[derive(Debug, Clone, Default)]
pub struct Table {
    columns: Vec<(String, String)>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    /// A table with these `(Markdown header, JSON key)` columns.
    pub fn new(columns: &[(&str, &str)]) -> Table {
        Table {
            columns: columns
                .iter()
                .map(|&(h, k)| (h.to_string(), k.to_string()))
                .collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; its cells fill the columns in order (missing ones are empty).
    pub fn row(&mut self, cells: impl IntoIterator<Item = Cell>) {
        self.rows.push(cells.into_iter().collect());
    }

    /// `| header | … |`, the separator, one line per row.
    pub fn markdown(&self) -> String {
        let shown: Vec<usize> = (0..self.columns.len())
            .filter(|&i| !self.columns[i].0.is_empty())
            .collect();
        let line = |cells: Vec<&str>| format!("| {} |\n", cells.join(" | "));
        let mut md = line(shown.iter().map(|&i| self.columns[i].0.as_str()).collect());
        md.push_str(&format!("|{}\n", "---|".repeat(shown.len())));
        for row in &self.rows {
            md.push_str(&line(
                shown
                    .iter()
                    .map(|&i| row.get(i).map_or("", |c| c.md.as_str()))
                    .collect(),
            ));
        }
        md
    }

    /// One object per row, keyed by the columns' JSON keys.
    pub fn json(&self) -> Value {
        self.rows
            .iter()
            .map(|row| {
                let mut o = Map::new();
                for (i, (_, key)) in self.columns.iter().enumerate() {
                    o.insert(
                        key.clone(),
                        row.get(i).map_or(Value::Null, |c| c.json.clone()),
                    );
                }
                Value::Object(o)
            })
            .collect()
    }
}

/// A benchmark's results: Markdown (prose and tables, in order) and a JSON object (the
/// tables under their keys, and single values).
#[derive(Debug, Clone)]
pub struct Report {
    name: String,
    md: String,
    json: Map<String, Value>,
}

impl Report {
    /// An empty report for `target/bench/<name>.{md,json}`.
    pub fn new(name: &str) -> Report {
        Report {
            name: name.to_string(),
            md: String::new(),
            json: Map::new(),
        }
    }

    /// Appends Markdown prose.
    pub fn text(&mut self, md: impl AsRef<str>) -> &mut Report {
        self.md.push_str(md.as_ref());
        self
    }

    /// Appends `table` to the Markdown and stores it under `key` in the JSON.
    pub fn table(&mut self, key: &str, table: &Table) -> &mut Report {
        self.md.push_str(&table.markdown());
        self.json.insert(key.to_string(), table.json());
        self
    }

    /// Stores a single value under `key` in the JSON.
    pub fn value(&mut self, key: &str, value: impl Into<Value>) -> &mut Report {
        self.json.insert(key.to_string(), value.into());
        self
    }

    /// Writes `target/bench/<name>.json` and `.md` and prints the Markdown.
    pub fn write(&self) -> Outcome {
        let name = &self.name;
        let dir = host::target_dir().join("bench");
        std::fs::create_dir_all(&dir)
            .or_else(|e| fail(format!("create {}: {e}", dir.display())))?;
        let write = |file: String, text: &str| {
            std::fs::write(dir.join(&file), text).or_else(|e| fail(format!("write {file}: {e}")))
        };
        write(
            format!("{name}.json"),
            &serde_json::to_string_pretty(&Value::Object(self.json.clone()))
                .expect("JSON serializes"),
        )?;
        write(format!("{name}.md"), &self.md)?;
        print!("{}", self.md);
        println!("written: target/bench/{name}.json, target/bench/{name}.md");
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn markdown_and_json_come_from_the_same_cells() {
        let mut t = Table::new(&[("VMM", "vmm"), ("median", "median_ms"), ("", "all_ms")]);
        t.row([
            "QEMU".into(),
            cell("1.5 ms", 1.5),
            cell("", json!([1.5, 2.0])),
        ]);
        t.row(["uhyve".into()]);
        assert_eq!(
            t.markdown(),
            "| VMM | median |\n|---|---|\n| QEMU | 1.5 ms |\n| uhyve |  |\n"
        );
        assert_eq!(
            t.json(),
            json!([
                { "vmm": "QEMU", "median_ms": 1.5, "all_ms": [1.5, 2.0] },
                { "vmm": "uhyve", "median_ms": null, "all_ms": null },
            ])
        );
        let mut r = Report::new("x");
        r.text("intro\n\n").table("rows", &t).value("runs", 3);
        assert!(r.md.starts_with("intro\n\n| VMM |"));
        assert_eq!(r.json["runs"], json!(3));
        assert_eq!(r.json["rows"], t.json());
    }
}
