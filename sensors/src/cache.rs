//! Readings kept briefly, read once however many ask, and never waited on
//! longer than a deadline.
//!
//! Each source has a slot. A request takes the slot's reading when it is
//! younger than the time to live; otherwise it joins the read in flight or
//! starts one on the blocking pool. However many requests arrive, a source
//! is read by at most one thread at a time, so a source that hangs (a
//! `statvfs` on a dead mount) holds one thread, not one per request; each
//! request waits at most the deadline and then answers that the source did
//! not answer, while other sources are served as usual. Failures are kept
//! like readings, so a failing source is not retried by every request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt, Shared};

use crate::sources::{Reading, Rows, Source, SourceError, Sources};

/// A reading or why there is none, shared by every request that asked.
pub type Outcome = Arc<Result<Reading, SourceError>>;

type InFlight = Shared<BoxFuture<'static, Outcome>>;

#[derive(Default)]
struct Slot {
    last: Option<(Instant, Outcome)>,
    in_flight: Option<InFlight>,
}

/// The per-source cache.
pub struct Cache {
    sources: Arc<Sources>,
    ttl: Duration,
    deadline: Duration,
    slots: HashMap<Source, Arc<Mutex<Slot>>>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("ttl", &self.ttl)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

fn lock(slot: &Mutex<Slot>) -> std::sync::MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

impl Cache {
    /// A cache over `sources` keeping readings for `ttl` (zero: every
    /// request reads, though concurrent ones share a read) and waiting at
    /// most `deadline` for one.
    pub fn new(sources: Arc<Sources>, ttl: Duration, deadline: Duration) -> Cache {
        let slots = Source::ALL
            .into_iter()
            .map(|s| (s, Arc::new(Mutex::new(Slot::default()))))
            .collect();
        Cache {
            sources,
            ttl,
            deadline,
            slots,
        }
    }

    /// The sources read.
    pub fn sources(&self) -> &Arc<Sources> {
        &self.sources
    }

    /// A reading of every row of `source`, fresh within the time to live.
    pub async fn get(&self, source: Source) -> Outcome {
        let Some(slot) = self.slots.get(&source) else {
            return Arc::new(Err(SourceError::Task(source.name())));
        };
        let wait = {
            let mut s = lock(slot);
            if let Some((at, outcome)) = &s.last {
                if at.elapsed() < self.ttl {
                    return outcome.clone();
                }
            }
            match &s.in_flight {
                Some(f) => f.clone(),
                None => {
                    let f = self.start(source, slot.clone());
                    s.in_flight = Some(f.clone());
                    f
                }
            }
        };
        match tokio::time::timeout(self.deadline, wait).await {
            Ok(outcome) => outcome,
            Err(_) => Arc::new(Err(SourceError::TimedOut(source.name(), self.deadline))),
        }
    }

    /// A reading of some rows of `source`: the cached reading when it is
    /// fresh, else a read of only those rows (not cached).
    pub async fn get_rows(&self, source: Source, keys: &[String]) -> Outcome {
        if let Some(slot) = self.slots.get(&source) {
            if let Some((at, outcome)) = &lock(slot).last {
                if at.elapsed() < self.ttl {
                    return outcome.clone();
                }
            }
        }
        let sources = self.sources.clone();
        let keys = keys.to_vec();
        let read = tokio::task::spawn_blocking(move || sources.read(source, Rows::Keys(&keys)));
        match tokio::time::timeout(self.deadline, read).await {
            Ok(Ok(r)) => Arc::new(r),
            Ok(Err(_)) => Arc::new(Err(SourceError::Task(source.name()))),
            Err(_) => Arc::new(Err(SourceError::TimedOut(source.name(), self.deadline))),
        }
    }

    fn start(&self, source: Source, slot: Arc<Mutex<Slot>>) -> InFlight {
        let sources = self.sources.clone();
        let task = tokio::task::spawn_blocking(move || {
            let outcome: Outcome = Arc::new(sources.read(source, Rows::All));
            let mut s = lock(&slot);
            s.last = Some((Instant::now(), outcome.clone()));
            s.in_flight = None;
            outcome
        });
        async move {
            task.await
                .unwrap_or_else(|_| Arc::new(Err(SourceError::Task(source.name()))))
        }
        .boxed()
        .shared()
    }
}
