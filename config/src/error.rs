//! Errors that point at the place in the input that is wrong.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Where in a configuration file a problem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file (or another name for the source, such as `kernel command line`).
    pub source: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        Ok(())
    }
}

/// A configuration input that could not be read or is not valid.
///
/// Displays as `FILE:LINE:COLUMN: FIELD: MESSAGE`, the form editors jump to.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The text was read but is not a valid configuration: bad syntax, a
    /// wrong type, an unknown field or a value that breaks a rule.
    #[error("{location}: {}{message}", field_prefix(field))]
    Invalid {
        /// Where the problem is (file, and line and column when known).
        location: Location,
        /// Dotted path of the offending field, e.g. `network.prefix`.
        field: Option<String>,
        /// What is wrong, for people; says what would be right.
        message: String,
    },
    /// The file could not be read (missing, unreadable, not UTF-8).
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
}

fn field_prefix(field: &Option<String>) -> String {
    match field {
        Some(f) => format!("{f}: "),
        None => String::new(),
    }
}

impl ConfigError {
    /// The field the error is about, if it names one.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { field, .. } => field.as_deref(),
            ConfigError::Read { .. } => None,
        }
    }

    /// The line the error is about, if known.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Invalid { location, .. } => location.line,
            ConfigError::Read { .. } => None,
        }
    }
}

/// Maps byte offsets of one text to lines, columns and TOML field paths.
pub(crate) struct SourceText<'a> {
    pub name: &'a Path,
    pub text: &'a str,
}

impl<'a> SourceText<'a> {
    pub fn new(name: &'a Path, text: &'a str) -> Self {
        SourceText { name, text }
    }

    pub fn location(&self, offset: usize) -> Location {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let column = before[line_start..].chars().count() + 1;
        Location {
            source: self.name.to_path_buf(),
            line: Some(line),
            column: Some(column),
        }
    }

    /// An error at `span`, naming `field` (or guessing it from the TOML text).
    pub fn error(
        &self,
        span: Option<Range<usize>>,
        field: Option<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        let location = match &span {
            Some(span) => self.location(span.start),
            None => Location {
                source: self.name.to_path_buf(),
                line: None,
                column: None,
            },
        };
        let field = field.or_else(|| span.and_then(|s| self.toml_field_at(s.start)));
        ConfigError::Invalid {
            location,
            field,
            message: message.into(),
        }
    }

    /// The dotted TOML key path of the `key = value` line (or `[table]`
    /// header) at `offset`: the table header above it plus the key.
    fn toml_field_at(&self, offset: usize) -> Option<String> {
        let offset = floor_char_boundary(self.text, offset.min(self.text.len()));
        let line_start = self.text[..offset].rfind('\n').map(|i| i + 1).unwrap_or(0);
        let line_end = self.text[offset..]
            .find('\n')
            .map(|i| offset + i)
            .unwrap_or(self.text.len());
        let line = self.text[line_start..line_end].trim();
        if let Some(header) = table_header(line) {
            return Some(header.to_string());
        }
        let key = line.split_once('=')?.0.trim().trim_matches('"');
        if key.is_empty() {
            return None;
        }
        let table = self.text[..line_start]
            .lines()
            .rev()
            .find_map(|l| table_header(l.trim()));
        Some(match table {
            Some(t) => format!("{t}.{key}"),
            None => key.to_string(),
        })
    }

    /// Converts a `toml` parse/deserialise error into ours.
    pub fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let message = e.message().trim().to_string();
        let span = e.span();
        // For unknown/missing fields the message names the key; the span
        // points at it (unknown) or at its table header (missing).
        let named = backticked(&message);
        let field = match (&span, named) {
            (Some(s), Some(name)) if message.starts_with("missing field") => {
                let table = self.toml_field_at(s.start);
                Some(match table {
                    Some(t) if !t.contains('=') => format!("{t}.{name}"),
                    _ => name,
                })
            }
            _ => None,
        };
        self.error(span, field, message)
    }
}

fn table_header(line: &str) -> Option<&str> {
    let inner = line.strip_prefix('[')?;
    let inner = inner.strip_prefix('[').unwrap_or(inner);
    let end = inner.find(']')?;
    Some(inner[..end].trim())
}

fn backticked(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Reads a whole configuration file, with an error that names it.
pub(crate) fn read_file_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}
