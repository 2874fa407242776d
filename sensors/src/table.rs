//! Tables of untyped values, as the sensors answer them: comma-separated
//! values (RFC 4180 quoting; lines end with `\n`, as `/proc` files do), a
//! header line naming the columns first.
//!
//! The paper's path arguments narrow a table: `/slivers/princeton_codeen`
//! keeps the rows whose key (first column) is `princeton_codeen`,
//! `/slivers/name/memory_used_bytes` keeps those two columns in that order,
//! and both mix (`/net/eth0/rx_bytes`). An argument that names a column
//! selects it; any other selects rows by key.

use std::fmt::Write as _;

/// One column of a sensor's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// Its name in the header line and in path arguments.
    pub name: &'static str,
    /// What it holds, with its unit.
    pub about: &'static str,
}

/// Rows of text values under fixed columns; the first column is the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    columns: &'static [Column],
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these columns.
    pub fn new(columns: &'static [Column]) -> Table {
        Table {
            columns,
            rows: Vec::new(),
        }
    }

    /// Adds a row: one value per column (missing values are empty, extra
    /// ones dropped, so a row always fits).
    pub fn push(&mut self, mut row: Vec<String>) {
        row.resize(self.columns.len(), String::new());
        self.rows.push(row);
    }

    /// The columns.
    pub fn columns(&self) -> &'static [Column] {
        self.columns
    }

    /// The rows.
    pub fn rows(&self) -> &[Vec<String>] {
        &self.rows
    }

    /// Whether a row has this key.
    pub fn has_key(&self, key: &str) -> bool {
        self.rows.iter().any(|r| r[0] == key)
    }

    /// The table as CSV, narrowed by `selection` (checked against this
    /// table's columns with [`Selection::parse`]).
    pub fn to_csv(&self, selection: &Selection) -> String {
        let mut out = String::with_capacity(64 + self.rows.len() * 64);
        header(&mut out, self.columns, selection);
        for row in &self.rows {
            if selection.wants_row(row) {
                write_row(&mut out, row, selection);
            }
        }
        out
    }
}

/// The header line of `columns` as `selection` narrows them.
pub fn header(out: &mut String, columns: &[Column], selection: &Selection) {
    let names: Vec<&str> = match &selection.columns {
        Some(picked) => picked.iter().map(|&i| columns[i].name).collect(),
        None => columns.iter().map(|c| c.name).collect(),
    };
    write_fields(out, names.iter().copied());
}

/// One row as `selection` narrows its columns (the caller checked
/// [`Selection::wants_row`]).
pub fn write_row(out: &mut String, row: &[String], selection: &Selection) {
    match &selection.columns {
        Some(picked) => write_fields(
            out,
            picked
                .iter()
                .map(|&i| row.get(i).map(String::as_str).unwrap_or("")),
        ),
        None => write_fields(out, row.iter().map(String::as_str)),
    }
}

/// Values as one CSV line.
pub fn write_fields<'a>(out: &mut String, fields: impl Iterator<Item = &'a str>) {
    for (i, field) in fields.enumerate() {
        if i > 0 {
            out.push(',');
        }
        if field.contains([',', '"', '\n', '\r']) {
            out.push('"');
            for c in field.chars() {
                if c == '"' {
                    out.push('"');
                }
                out.push(c);
            }
            out.push('"');
        } else {
            out.push_str(field);
        }
    }
    out.push('\n');
}

/// A number with at most `decimals` decimals and no trailing zeros
/// (`0.5`, `12`), the way `/proc` shows fractions.
pub fn decimal(value: f64, decimals: usize) -> String {
    if !value.is_finite() {
        return String::new();
    }
    let mut s = String::new();
    let _ = write!(s, "{value:.decimals$}");
    if s.contains('.') {
        while s.ends_with('0') {
            s.pop();
        }
        if s.ends_with('.') {
            s.pop();
        }
    }
    if s == "-0" {
        s = "0".into();
    }
    s
}

/// What the path arguments after a sensor's name ask for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Column indexes in the order asked; `None`: every column.
    pub columns: Option<Vec<usize>>,
    /// Row keys asked for; empty: every row.
    pub keys: Vec<String>,
}

impl Selection {
    /// Every row and column.
    pub fn all() -> Selection {
        Selection::default()
    }

    /// Sorts path arguments into columns (those that name one) and keys.
    pub fn parse(columns: &[Column], args: &[String]) -> Selection {
        let mut picked = Vec::new();
        let mut keys = Vec::new();
        for arg in args {
            match columns.iter().position(|c| c.name == arg) {
                Some(i) => picked.push(i),
                None => keys.push(arg.clone()),
            }
        }
        Selection {
            columns: (!picked.is_empty()).then_some(picked),
            keys,
        }
    }

    /// Whether a row is wanted (by its key, the first value).
    pub fn wants_row(&self, row: &[String]) -> bool {
        self.keys.is_empty()
            || row
                .first()
                .is_some_and(|k| self.keys.iter().any(|w| w == k))
    }

    /// The first key that `table` has no row for.
    pub fn missing_key<'a>(&'a self, table: &Table) -> Option<&'a str> {
        self.keys
            .iter()
            .find(|k| !table.has_key(k))
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLS: &[Column] = &[
        Column {
            name: "name",
            about: "",
        },
        Column {
            name: "a",
            about: "",
        },
        Column {
            name: "b",
            about: "",
        },
    ];

    fn table() -> Table {
        let mut t = Table::new(COLS);
        t.push(vec!["x".into(), "1".into(), "2".into()]);
        t.push(vec!["y".into(), "3,4".into(), "say \"hi\"\n".into()]);
        t.push(vec!["z".into()]);
        t
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        assert_eq!(
            table().to_csv(&Selection::all()),
            "name,a,b\nx,1,2\ny,\"3,4\",\"say \"\"hi\"\"\n\"\nz,,\n"
        );
    }

    #[test]
    fn path_arguments_pick_rows_and_columns() {
        let t = table();
        let s = Selection::parse(COLS, &args(&["y"]));
        assert_eq!(s.keys, ["y"]);
        assert_eq!(t.to_csv(&s), "name,a,b\ny,\"3,4\",\"say \"\"hi\"\"\n\"\n");
        let s = Selection::parse(COLS, &args(&["b", "name"]));
        assert_eq!(t.to_csv(&s), "b,name\n2,x\n\"say \"\"hi\"\"\n\",y\n,z\n");
        let s = Selection::parse(COLS, &args(&["x", "a", "z"]));
        assert_eq!(t.to_csv(&s), "a\n1\n\n");
        let s = Selection::parse(COLS, &args(&["nothing"]));
        assert_eq!(s.missing_key(&t), Some("nothing"));
        assert_eq!(Selection::parse(COLS, &args(&["x"])).missing_key(&t), None);
    }

    #[test]
    fn decimals_are_short() {
        assert_eq!(decimal(0.5, 2), "0.5");
        assert_eq!(decimal(12.0, 2), "12");
        assert_eq!(decimal(1.234, 2), "1.23");
        assert_eq!(decimal(-0.0001, 2), "0");
        assert_eq!(decimal(f64::NAN, 2), "");
    }
}
