//! The `events` sensor's side of the node's event journal
//! (`config::events`, `floor::journal`): one task follows the journal and
//! hands each new event to every subscriber; it also remembers the last
//! check-in, which the `node` sensor shows as the boot state.
//!
//! The task wakes on inotify events of the journal's directory (an append,
//! a rotation, the file made) and, in case inotify is missing or the
//! directory appears later, every second at the latest.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use config::events::{EventKind, NodeEvent};
use floor::journal::Journal;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::broadcast;

/// New events, for whoever subscribes.
#[derive(Debug)]
pub struct EventsHub {
    sender: broadcast::Sender<Arc<NodeEvent>>,
}

impl EventsHub {
    /// A receiver of the events appended from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<NodeEvent>> {
        self.sender.subscribe()
    }

    /// Clients following the stream now.
    pub fn followers(&self) -> usize {
        self.sender.receiver_count()
    }
}

/// Its row in the `events` sensor (key first).
pub fn row(event: &NodeEvent) -> Vec<String> {
    vec![
        event.kind.to_string(),
        event.time.to_string(),
        event.subject.clone(),
        event.detail.clone(),
    ]
}

/// The journal's kinds, which path arguments of `events` may select.
pub fn is_kind(key: &str) -> bool {
    EventKind::ALL.iter().any(|k| k.as_str() == key)
}

struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

fn watch(dir: &Path) -> Option<AsyncFd<InotifyFd>> {
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
    inotify
        .add_watch(
            dir,
            AddWatchFlags::IN_MODIFY
                | AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_MOVED_FROM
                | AddWatchFlags::IN_DELETE,
        )
        .ok()?;
    // SAFETY: InotifyFd owns the descriptor it returns, which stays open
    // until the AsyncFd (and with it the InotifyFd) is dropped.
    unsafe { AsyncFd::register_with_interest(InotifyFd(inotify), Interest::READABLE) }.ok()
}

fn note_checkin(last_checkin: &Mutex<Option<NodeEvent>>, event: &NodeEvent) {
    if event.kind == EventKind::Checkin {
        *last_checkin.lock().unwrap_or_else(|p| p.into_inner()) = Some(event.clone());
    }
}

fn parse(line: &str, journal: &Journal) -> Option<NodeEvent> {
    match NodeEvent::parse_line(line) {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::warn!(
                "{}: a line is skipped: {}",
                journal.path().display(),
                floor::report::error_line(&e)
            );
            None
        }
    }
}

/// Starts following `journal` (on the current tokio runtime). What the
/// journal holds already only sets the last check-in.
pub fn start(journal: Journal, last_checkin: Arc<Mutex<Option<NodeEvent>>>) -> Arc<EventsHub> {
    let hub = Arc::new(EventsHub {
        sender: broadcast::channel(1024).0,
    });
    let sender = hub.sender.clone();
    tokio::spawn(async move {
        for line in std::fs::read_to_string(journal.rotated_path())
            .unwrap_or_default()
            .lines()
        {
            if let Ok(e) = NodeEvent::parse_line(line) {
                note_checkin(&last_checkin, &e);
            }
        }
        let mut follower = journal.follow_from_start();
        let mut first = true;
        let dir = journal
            .path()
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut inotify = watch(&dir);
        loop {
            match follower.read_new() {
                Ok(lines) => {
                    for line in lines {
                        if let Some(e) = parse(&line, &journal) {
                            note_checkin(&last_checkin, &e);
                            if !first {
                                // Nobody listening is not an error.
                                let _ = sender.send(Arc::new(e));
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!("{}", floor::report::error_line(&e)),
            }
            first = false;
            match &inotify {
                Some(fd) => {
                    tokio::select! {
                        ready = fd.readable() => {
                            if let Ok(mut guard) = ready {
                                // Drain the queue; which file changed does
                                // not matter, the follower looks.
                                while fd.get_ref().0.read_events().is_ok() {}
                                guard.clear_ready();
                            }
                        }
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
                None => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    inotify = watch(&dir);
                }
            }
        }
    });
    hub
}
