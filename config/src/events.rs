//! The node's event journal: one JSON object per line in
//! `/run/plnode/events.jsonl` ([`JOURNAL`]), appended to by the node's
//! services (the supervisor's check-ins, update reports, sliver lifecycle)
//! and followed by the sensor server's `events` sensor. The file mechanics
//! (append with `O_APPEND`, size cap with rotation, following) are
//! [`floor::journal`]; this module fixes what a line says.
//!
//! ```text
//! {"time":"2027-01-01T00:00:00Z","kind":"sliver","subject":"princeton_codeen","detail":"started"}
//! ```

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// Where the node's event journal is.
pub const JOURNAL: &str = "/run/plnode/events.jsonl";
/// The journal is rotated (to `events.jsonl.1`) at this size.
pub const JOURNAL_MAX_BYTES: u64 = 1 << 20;
/// The longest subject kept; longer ones are cut (at a character boundary).
pub const MAX_SUBJECT: usize = 128;
/// The longest detail kept; longer ones are cut (at a character boundary).
/// Subject and detail, even with every byte escaped, fit a journal line.
pub const MAX_DETAIL: usize = 1024;

/// The node's event journal at its usual place.
pub fn journal() -> floor::journal::Journal {
    floor::journal::Journal::new(JOURNAL, JOURNAL_MAX_BYTES)
}

/// What kind of thing happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A check-in with the boot server: subject the boot state it named
    /// (`boot`, `debug`, ...), or `failed` with the reason as detail.
    Checkin,
    /// An update step: subject the step (`staged`, `activated`,
    /// `marked_good`, `rolled_back`, `failed`), detail the OS version,
    /// deployment and reason.
    Update,
    /// A sliver's lifecycle: subject the slice, detail what happened
    /// (`created`, `started`, `stopped`, `deleted`, `lease expired`, ...).
    Sliver,
}

impl EventKind {
    /// Every kind, in the order the sensors list them.
    pub const ALL: [EventKind; 3] = [EventKind::Checkin, EventKind::Update, EventKind::Sliver];

    /// The name in the journal and in the sensors' rows.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Checkin => "checkin",
            EventKind::Update => "update",
            EventKind::Sliver => "sliver",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEvent {
    /// When it happened (the writer's clock).
    pub time: Timestamp,
    /// What kind of thing happened.
    pub kind: EventKind,
    /// What it happened to (see [`EventKind`]); one line, at most
    /// [`MAX_SUBJECT`] bytes.
    pub subject: String,
    /// What happened; one line, at most [`MAX_DETAIL`] bytes.
    pub detail: String,
}

/// A journal line that is not a [`NodeEvent`].
#[derive(Debug, thiserror::Error)]
#[error("not a node event: {source}")]
pub struct EventError {
    /// What the JSON parser said.
    #[from]
    source: serde_json::Error,
}

/// Control characters (line breaks above all) become spaces, and the text
/// is cut to `max` bytes: a record stays one readable line.
fn one_line(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.len() > max {
        let mut cut = max;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

impl NodeEvent {
    /// An event that happens now; subject and detail are made one line and
    /// cut to their limits.
    pub fn now(kind: EventKind, subject: &str, detail: &str) -> NodeEvent {
        NodeEvent::at(Timestamp::now(), kind, subject, detail)
    }

    /// An event at `time`; subject and detail as for [`NodeEvent::now`].
    pub fn at(time: Timestamp, kind: EventKind, subject: &str, detail: &str) -> NodeEvent {
        NodeEvent {
            time,
            kind,
            subject: one_line(subject, MAX_SUBJECT),
            detail: one_line(detail, MAX_DETAIL),
        }
    }

    /// The journal line (JSON, no line break; within
    /// [`floor::journal::MAX_LINE`] for events made by [`NodeEvent::at`]).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a journal line. Subject and detail are made one line and cut to
    /// their limits, as a writer would have.
    pub fn parse_line(line: &str) -> Result<NodeEvent, EventError> {
        let raw: NodeEvent = serde_json::from_str(line)?;
        Ok(NodeEvent::at(raw.time, raw.kind, &raw.subject, &raw.detail))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_round_trips() {
        let e = NodeEvent::at(
            Timestamp::from_unix(1_798_761_600),
            EventKind::Sliver,
            "princeton_codeen",
            "started",
        );
        let line = e.to_line();
        assert_eq!(
            line,
            r#"{"time":"2027-01-01T00:00:00Z","kind":"sliver","subject":"princeton_codeen","detail":"started"}"#
        );
        assert_eq!(NodeEvent::parse_line(&line).unwrap(), e);
    }

    #[test]
    fn events_are_one_line_and_bounded() {
        let long = "é".repeat(MAX_DETAIL);
        let e = NodeEvent::now(EventKind::Update, "a\nb", &format!("x\r\n{long}"));
        assert_eq!(e.subject, "a b");
        assert!(e.detail.starts_with("x  é"));
        assert!(e.detail.len() <= MAX_DETAIL);
        let line = e.to_line();
        assert!(!line.contains('\n'));
        assert!(line.len() <= floor::journal::MAX_LINE);
        let quotes = "\"".repeat(MAX_DETAIL + MAX_SUBJECT);
        let e = NodeEvent::now(EventKind::Update, &quotes, &quotes);
        assert!(e.to_line().len() <= floor::journal::MAX_LINE);
    }

    #[test]
    fn foreign_lines_are_refused() {
        for bad in [
            "",
            "{}",
            "not json",
            r#"{"time":"2027-01-01T00:00:00Z","kind":"reboot","subject":"","detail":""}"#,
            r#"{"time":"yesterday","kind":"sliver","subject":"","detail":""}"#,
            r#"{"time":"2027-01-01T00:00:00Z","kind":"sliver","subject":"","detail":"","x":1}"#,
        ] {
            assert!(NodeEvent::parse_line(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_journal_is_at_its_documented_place() {
        assert_eq!(journal().path(), std::path::Path::new(JOURNAL));
        assert_eq!(
            journal().rotated_path(),
            std::path::Path::new("/run/plnode/events.jsonl.1")
        );
    }
}
