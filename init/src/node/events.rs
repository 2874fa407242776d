//! The node's event journal, as the supervisor and the updater write it
//! (`config::events`: one JSON line per event in `/run/plnode/events.jsonl`,
//! followed by the sensor server's `events` sensor). Recording is best
//! effort: a journal that cannot be written costs a log line, never a
//! check-in or an update.

use config::api::{BootState, UpdateEvent, UpdateReport};
use config::events::{EventKind, NodeEvent};
use floor::journal::JournalError;

/// Appends one event to the node's journal (where there is none, as on a
/// build host without `/run/plnode`, nothing is written).
pub fn record(event: &NodeEvent) {
    match config::events::journal().append(&event.to_line()) {
        Ok(()) => {}
        Err(JournalError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            tracing::debug!("no event journal here: {}", event.to_line());
        }
        Err(e) => tracing::warn!("{}", floor::report::error_line(&e)),
    }
}

/// A check-in the boot server answered with `state`.
pub fn checkin(state: &BootState) {
    record(&NodeEvent::now(
        EventKind::Checkin,
        &state.to_string(),
        "run_level=boot",
    ));
}

/// A check-in that failed.
pub fn checkin_failed(reason: &dyn std::fmt::Display) {
    record(&NodeEvent::now(
        EventKind::Checkin,
        "failed",
        &reason.to_string(),
    ));
}

/// An update step reported to the boot server.
pub fn update(report: &UpdateReport) {
    record(&update_event(report));
}

/// The journal's form of an update report.
pub fn update_event(report: &UpdateReport) -> NodeEvent {
    let step = match report.event {
        UpdateEvent::Staged => "staged",
        UpdateEvent::Activated => "activated",
        UpdateEvent::MarkedGood => "marked_good",
        UpdateEvent::RolledBack => "rolled_back",
        UpdateEvent::Failed => "failed",
        UpdateEvent::Held => "held",
        UpdateEvent::Reverted => "reverted",
    };
    let reason = report
        .reason
        .as_deref()
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    NodeEvent::at(
        report.at,
        EventKind::Update,
        step,
        &format!(
            "os_version={} deployment={}{reason}",
            report.os_version, report.deployment
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_events_name_the_step_and_the_deployment() {
        let report = UpdateReport {
            event: UpdateEvent::MarkedGood,
            os_version: "2026.11.2".into(),
            deployment: "2026.11.2-abcdef01".into(),
            reason: Some("healthy\nafter 3 boots".into()),
            at: config::Timestamp::from_unix(1_798_761_600),
        };
        let e = update_event(&report);
        assert_eq!(e.kind, EventKind::Update);
        assert_eq!(e.subject, "marked_good");
        assert_eq!(
            e.detail,
            "os_version=2026.11.2 deployment=2026.11.2-abcdef01: healthy after 3 boots"
        );
        assert_eq!(e.time, report.at);
    }
}
