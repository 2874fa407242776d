//! Crash safety: kill -9 the server in the middle of a burst of writes,
//! restart it, and check the database is consistent — SQLite's own
//! integrity check plus what the application promises: every report a
//! node was told "ok" for is stored whole, no report is stored in part,
//! and an acknowledged request can never be replayed.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::client::{checkin_body, fresh_nonce, unix_now};
use common::Workdir;
use config::api::{paths, ProgressEvent, ProgressReport, RunLevel};
use config::Timestamp;

const NODES: usize = 12;
const WRITERS: usize = 6;
const EVENTS_PER_REPORT: usize = 5;
/// Acknowledged requests before the kill (the burst goes on around it).
const ACKS_BEFORE_KILL: usize = 400;

/// An acknowledged request: node id, its exact bytes, the report's label.
type Acked = (usize, Vec<u8>, Option<String>);

#[test]
fn kill_9_during_a_burst_of_writes_leaves_a_consistent_database() {
    let wd = Workdir::new();
    wd.set_config("event_log_limit = 200", "event_log_limit = 100000");
    let nodes: Vec<config::NodeConfig> = (0..NODES)
        .map(|i| wd.add_node(&format!("n{i}.example.org")).1)
        .collect();
    let server = wd.start();
    let addr = server.addr;

    let acked = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // Every acknowledged request: its bytes, and for progress reports the label.
    let acknowledged: Arc<Mutex<Vec<Acked>>> = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for w in 0..WRITERS {
        let (acked, stop, acknowledged) = (acked.clone(), stop.clone(), acknowledged.clone());
        let mine: Vec<config::NodeConfig> =
            nodes.iter().skip(w).step_by(WRITERS).cloned().collect();
        let ca = wd.ca();
        threads.push(std::thread::spawn(move || {
            let mut clients: Vec<_> = mine
                .iter()
                .map(|c| common::NodeClient::new(addr, &ca, "localhost", c))
                .collect();
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let i = n % clients.len();
                let client = &mut clients[i];
                let node_index = mine[i].node_id.0 as usize;
                let (body, path, label) = if n.is_multiple_of(3) {
                    let body =
                        serde_json::to_vec(&checkin_body(mine[i].node_id, RunLevel::Boot)).unwrap();
                    (body, paths::CHECKIN, None)
                } else {
                    let label = format!("w{w}-r{n}");
                    let report = ProgressReport {
                        events: (0..EVENTS_PER_REPORT)
                            .map(|e| ProgressEvent {
                                step: "reinstall/install".into(),
                                percent: None,
                                message: format!("{label}-e{e}"),
                                at: Timestamp::now(),
                            })
                            .collect(),
                    };
                    (
                        serde_json::to_vec(&report).unwrap(),
                        paths::PROGRESS,
                        Some(label),
                    )
                };
                let bytes = client.signed_request("POST", path, &body, unix_now(), fresh_nonce());
                // The server dies under us: any I/O error ends this writer.
                match client.try_send_raw(&bytes) {
                    Ok(reply) if reply.status == 200 => {
                        acknowledged
                            .lock()
                            .unwrap()
                            .push((node_index, bytes, label));
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(reply) => panic!("unexpected reply {}: {}", reply.status, reply.text()),
                    Err(_) => break,
                }
                n += 1;
            }
        }));
    }
    while acked.load(Ordering::Relaxed) < ACKS_BEFORE_KILL {
        std::thread::yield_now();
    }
    server.kill9();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() >= ACKS_BEFORE_KILL);

    // SQLite's view: the file and its WAL recover to a consistent state.
    let db = rusqlite::Connection::open(wd.dir.join("registry.db")).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let fk_violations: i64 = db
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(fk_violations, 0);

    // The application's view: reports are stored whole or not at all.
    let mut stmt = db
        .prepare("SELECT message FROM node_events WHERE kind = 'progress'")
        .unwrap();
    let mut per_report: HashMap<String, usize> = HashMap::new();
    for message in stmt.query_map([], |r| r.get::<_, String>(0)).unwrap() {
        let message = message.unwrap();
        let label = message.rsplit_once("-e").unwrap().0.to_string();
        *per_report.entry(label).or_default() += 1;
    }
    for (label, count) in &per_report {
        assert_eq!(*count, EVENTS_PER_REPORT, "report {label} stored in part");
    }
    // Every acknowledged report is there.
    for (_, _, label) in &acknowledged {
        if let Some(label) = label {
            assert_eq!(
                per_report.get(label),
                Some(&EVENTS_PER_REPORT),
                "acknowledged report {label} lost"
            );
        }
    }
    // Every node with an acknowledged check-in has its contact recorded.
    let contacted: i64 = db
        .query_row(
            "SELECT count(*) FROM nodes WHERE last_contact IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(contacted > 0);
    drop(stmt);
    drop(db);

    // Restarted, the server refuses every acknowledged request replayed,
    // and takes new ones.
    let server = wd.start();
    let mut clients: HashMap<usize, common::NodeClient> = HashMap::new();
    for (node_index, bytes, _) in acknowledged.iter().step_by(7) {
        let config = &nodes[node_index - 1];
        let client = clients
            .entry(*node_index)
            .or_insert_with(|| wd.client(&server, config));
        let reply = client.send_raw(bytes);
        assert_eq!(reply.status, 401, "replay after restart: {}", reply.text());
        assert_eq!(reply.error_code(), "replayed_nonce");
    }
    let mut fresh = wd.client(&server, &nodes[0]);
    assert_eq!(fresh.checkin(RunLevel::Boot).status, 200);
    let status = fresh.get("/status.json", &[]).json();
    assert_eq!(status["nodes"].as_array().unwrap().len(), NODES);
}
