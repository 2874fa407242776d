//! Telling the boot server what the node is doing, without waiting for it.
//!
//! Progress events queue up and a background thread posts them in batches;
//! a slow or absent server never holds up a boot. Failure reports are sent
//! at once (the node is about to stop in `debug`, the report matters more
//! than the delay).

use std::collections::HashMap;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use config::api::{paths, Empty, FailureReport, ProgressEvent, ProgressReport, RunLevel};
use config::Timestamp;

use crate::boot_server::ServerClient;
use crate::console;

/// Posts progress to the server in the background.
#[derive(Debug, Clone)]
pub struct Reporter {
    queue: Sender<ProgressEvent>,
    server: Arc<Mutex<ServerClient>>,
    /// Per step: the last percent sent and when, to keep the log readable.
    sent: Arc<Mutex<HashMap<String, (u8, Instant)>>>,
}

/// Whether a progress event is worth sending, given the last one sent for
/// its step: a new step, a 5-point move, the end, or 5 s of silence.
pub fn worth_sending(last: Option<(u8, Instant)>, percent: Option<u8>, now: Instant) -> bool {
    match (last, percent) {
        (_, None) | (None, _) => true,
        (Some((before, at)), Some(p)) => {
            p == 100 || p.abs_diff(before) >= 5 || now.duration_since(at) >= Duration::from_secs(5)
        }
    }
}

fn lock(m: &Mutex<ServerClient>) -> std::sync::MutexGuard<'_, ServerClient> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Reporter {
    pub fn start(server: Arc<Mutex<ServerClient>>) -> Reporter {
        let (queue, rx) = channel();
        let for_thread = server.clone();
        let _ = std::thread::Builder::new()
            .name("reporter".into())
            .spawn(move || post_loop(rx, for_thread));
        Reporter {
            queue,
            server,
            sent: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Queues a progress event (never blocks); frequent updates of one
    /// step are thinned out (see [`worth_sending`]).
    pub fn progress(&self, step: &str, percent: Option<u8>, message: impl Into<String>) {
        let now = Instant::now();
        {
            let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
            if !worth_sending(sent.get(step).copied(), percent, now) {
                return;
            }
            if let Some(p) = percent {
                sent.insert(step.to_string(), (p, now));
            }
        }
        let _ = self.queue.send(ProgressEvent {
            step: step.to_string(),
            percent,
            message: message.into(),
            at: Timestamp::now(),
        });
    }

    /// Sends a failure report now, with the console's tail.
    pub fn failure(&self, step: &str, error: &str, now_in: RunLevel) {
        let report = FailureReport {
            step: step.into(),
            error: error.into(),
            log_tail: console::tail(60),
            now_in,
            at: Timestamp::now(),
        };
        if let Err(e) = lock(&self.server).post::<_, Empty>(paths::FAILURE, &report) {
            console::line(&format!(
                "could not report the failure to the boot server: {e}"
            ));
        }
    }

    /// Access to the server for the caller's own requests.
    pub fn server(&self) -> std::sync::MutexGuard<'_, ServerClient> {
        lock(&self.server)
    }
}

fn post_loop(rx: Receiver<ProgressEvent>, server: Arc<Mutex<ServerClient>>) {
    let mut pending: Vec<ProgressEvent> = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(e) => {
                pending.push(e);
                // Gather whatever else is already queued into one request.
                while let Ok(e) = rx.try_recv() {
                    pending.push(e);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) if pending.is_empty() => return,
            Err(RecvTimeoutError::Disconnected) => {}
        }
        if pending.is_empty() {
            continue;
        }
        let report = ProgressReport {
            events: pending.clone(),
        };
        match lock(&server).post::<_, Empty>(paths::PROGRESS, &report) {
            Ok(_) => pending.clear(),
            Err(e) => {
                // Keep the newest events; try again on the next round.
                tracing::debug!("progress report not delivered: {e}");
                let excess = pending.len().saturating_sub(200);
                pending.drain(..excess);
                std::thread::sleep(Duration::from_secs(2));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_thinned_but_keeps_steps_and_the_end() {
        let t0 = Instant::now();
        assert!(worth_sending(None, Some(3), t0));
        assert!(!worth_sending(
            Some((3, t0)),
            Some(4),
            t0 + Duration::from_millis(100)
        ));
        assert!(worth_sending(
            Some((3, t0)),
            Some(8),
            t0 + Duration::from_millis(100)
        ));
        assert!(worth_sending(
            Some((3, t0)),
            Some(4),
            t0 + Duration::from_secs(6)
        ));
        assert!(worth_sending(Some((98, t0)), Some(100), t0));
        assert!(worth_sending(Some((98, t0)), None, t0));
    }
}
