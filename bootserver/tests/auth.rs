//! Request authentication: what a good request gets, and how each kind of
//! bad one is refused (status, error code) and counted per node.

mod common;

use common::client::{checkin_body, fresh_nonce, raw_request, unix_now};
use common::{NodeClient, Workdir};
use config::api::auth::{verify_response, RESPONSE_SIG_HEADER};
use config::api::{paths, ApiError, BootState, CheckinResponse, RunLevel};
use config::node::{NodeId, NodeKey};

fn failures(wd: &Workdir, node: &str) -> Vec<(String, u64)> {
    let shown = wd.node_json(node);
    shown["auth_failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["reason"].as_str().unwrap().to_string(),
                f["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_good_checkin_gets_the_boot_state_and_a_reply_signed_for_its_nonce() {
    let wd = Workdir::new();
    let (id, config) = wd.add_node("n1.example.org");
    let server = wd.start();
    let mut node = wd.client(&server, &config);

    // `request` checks X-Plnode-Response-Sig against this request's nonce.
    let reply = node.checkin(RunLevel::Bootcd);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.header(RESPONSE_SIG_HEADER).is_some());
    let answer: CheckinResponse = reply.parse();
    assert_eq!(answer.boot_state, BootState::Reinstall);
    assert_eq!(answer.hostname, "n1.example.org");
    assert!((answer.server_time.unix() - unix_now()).abs() <= 5);

    let shown = wd.node_json(&id.to_string());
    assert_eq!(shown["report"]["run_level"], "bootcd");
    assert_eq!(shown["report"]["bootcd_version"], "2026.11.1");
    assert_eq!(
        shown["report"]["hardware"]["nics"][0]["mac"],
        "52:54:00:12:34:56"
    );
    assert!(shown["report"]["last_contact"].is_string());
    assert!(failures(&wd, "1").is_empty());
    // JSON output never carries the key.
    assert!(!wd
        .ok(&["--json", "node", "show", "1"])
        .contains(config.key.expose()));
}

#[test]
fn a_bad_signature_is_refused_and_counted() {
    let wd = Workdir::new();
    let (_, config) = wd.add_node("n1.example.org");
    let server = wd.start();
    let wrong_key = NodeKey::new("f".repeat(64)).unwrap();
    let mut forger = NodeClient::with_identity(
        server.addr,
        &wd.ca(),
        "localhost",
        config.node_id,
        wrong_key,
    );
    let reply = forger.checkin(RunLevel::Boot);
    assert_eq!(reply.status, 401);
    assert_eq!(reply.error_code(), "bad_signature");
    // Nothing signed for a client that did not prove the key.
    assert!(reply.header(RESPONSE_SIG_HEADER).is_none());

    // A body changed after signing fails the same way.
    let mut node = wd.client(&server, &config);
    let body = serde_json::to_vec(&checkin_body(config.node_id, RunLevel::Boot)).unwrap();
    let untouched = node.signed_request("POST", paths::CHECKIN, &body, unix_now(), fresh_nonce());
    assert_eq!(node.send_raw(&untouched).status, 200);
    let mut tampered =
        node.signed_request("POST", paths::CHECKIN, &body, unix_now(), fresh_nonce());
    let pos = tampered.windows(6).position(|w| w == b"\"boot\"").unwrap();
    tampered[pos..pos + 6].copy_from_slice(b"\"debu\"");
    let reply = node.send_raw(&tampered);
    assert_eq!(reply.status, 401);
    assert_eq!(reply.error_code(), "bad_signature");

    assert_eq!(failures(&wd, "1"), [("bad_signature".to_string(), 2)]);
    let shown = wd.node_json("1");
    // The refused requests changed nothing the node reports.
    assert_eq!(shown["report"]["run_level"], "boot");
}

#[test]
fn a_stale_timestamp_is_refused_with_the_server_time_signed() {
    let wd = Workdir::new();
    let (_, config) = wd.add_node("n1.example.org");
    let server = wd.start();
    let mut node = wd.client(&server, &config);
    let body = serde_json::to_vec(&checkin_body(config.node_id, RunLevel::Bootcd)).unwrap();
    for offset in [-3600, 3600] {
        let nonce = fresh_nonce();
        let bytes = node.signed_request("POST", paths::CHECKIN, &body, unix_now() + offset, nonce);
        let reply = node.send_raw(&bytes);
        assert_eq!(reply.status, 401, "{}", reply.text());
        let error: ApiError = reply.parse();
        assert_eq!(error.error, "stale_timestamp");
        let server_time = error
            .server_time
            .expect("server_time in a stale_timestamp reply");
        assert!((server_time.unix() - unix_now()).abs() <= 5);
        // Signed for this nonce: a node with a wrong clock may trust it.
        let sig = reply.header(RESPONSE_SIG_HEADER).expect("signed reply");
        verify_response(&config.key, nonce, &reply.body, sig).unwrap();
    }
    assert_eq!(failures(&wd, "1"), [("stale_timestamp".to_string(), 2)]);
    assert!(wd.node_json("1")["report"]["last_contact"].is_null());
}

#[test]
fn a_captured_request_sent_again_byte_for_byte_is_refused() {
    let wd = Workdir::new();
    let (_, config) = wd.add_node("n1.example.org");
    let server = wd.start();
    let mut node = wd.client(&server, &config);
    let report = config::api::ProgressReport {
        events: vec![config::api::ProgressEvent {
            step: "reinstall/partition".into(),
            percent: Some(10),
            message: "partitioning /dev/vda".into(),
            at: config::Timestamp::now(),
        }],
    };
    let body = serde_json::to_vec(&report).unwrap();
    let captured = node.signed_request("POST", paths::PROGRESS, &body, unix_now(), fresh_nonce());
    assert_eq!(node.send_raw(&captured).status, 200);

    // Same connection, then a new one (another attacker on the path).
    let again = node.send_raw(&captured);
    assert_eq!(again.status, 401, "{}", again.text());
    assert_eq!(again.error_code(), "replayed_nonce");
    let mut attacker = wd.client(&server, &config);
    let again = attacker.send_raw(&captured);
    assert_eq!(again.error_code(), "replayed_nonce");

    assert_eq!(failures(&wd, "1"), [("replayed_nonce".to_string(), 2)]);
    // Stored once only.
    let log = wd.json(&["node", "log", "1"]);
    let progress: Vec<_> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "progress")
        .collect();
    assert_eq!(progress.len(), 1);

    // After a restart the nonce is still known (it is in the database).
    drop(server);
    let server = wd.start();
    let mut attacker = wd.client(&server, &config);
    assert_eq!(attacker.send_raw(&captured).error_code(), "replayed_nonce");
}

#[test]
fn an_unknown_node_and_a_missing_header_are_refused_and_counted() {
    let wd = Workdir::new();
    let (_, config) = wd.add_node("n1.example.org");
    let server = wd.start();
    let mut stranger = NodeClient::with_identity(
        server.addr,
        &wd.ca(),
        "localhost",
        NodeId(999),
        config.key.clone(),
    );
    let reply = stranger.checkin(RunLevel::Bootcd);
    assert_eq!(reply.status, 401);
    assert_eq!(reply.error_code(), "unknown_node");

    let mut anon = wd.client(&server, &config);
    let reply = anon.send_raw(&raw_request("POST", paths::CHECKIN, &[], b"{}"));
    assert_eq!(reply.status, 401);
    assert_eq!(reply.error_code(), "unauthenticated");
    let reply = anon.send_raw(&raw_request(
        "POST",
        paths::CHECKIN,
        &[("Authorization", "Bearer abc")],
        b"{}",
    ));
    assert_eq!(reply.error_code(), "unauthenticated");
    assert!(reply.json()["message"]
        .as_str()
        .unwrap()
        .contains("PLNODE-HMAC-SHA256"));

    let status = anon.get("/status.json", &[]).json();
    assert_eq!(status["unknown_node_auth_failures"], 3);
    // Known nodes were not blamed.
    assert!(failures(&wd, "1").is_empty());
}

#[test]
fn after_a_rekey_only_the_new_key_authenticates() {
    let wd = Workdir::new();
    let (_, old) = wd.add_node("n1.example.org");
    let server = wd.start();
    let new_path = wd.tmp.path().join("n1-new.toml");
    wd.ok(&["node", "rekey", "1", "-o", new_path.to_str().unwrap()]);
    let new = config::NodeConfig::load(&new_path).unwrap();
    assert_ne!(new.key, old.key);
    assert_eq!(
        wd.client(&server, &old)
            .checkin(RunLevel::Boot)
            .error_code(),
        "bad_signature"
    );
    assert_eq!(wd.client(&server, &new).checkin(RunLevel::Boot).status, 200);

    // Writing the config again does not change the key (PlanetLab's boot
    // image download did, and locked nodes out).
    let again = wd.tmp.path().join("n1-again.toml");
    wd.ok(&["node", "config", "1", "-o", again.to_str().unwrap()]);
    assert_eq!(config::NodeConfig::load(&again).unwrap().key, new.key);
}
