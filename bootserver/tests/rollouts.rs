//! Rollouts through the real binary and server: `rollout start | status |
//! pause | resume | abort`, what `GET /api/v1/node/release` tells each node
//! (conditional, signed, no database write), the check-in hint, and the
//! automatic halt when failures in a wave pass the limit.

mod common;

use common::repo::SignedRepo;
use common::{NodeClient, Workdir};
use config::api::auth::{verify_response, RESPONSE_SIG_HEADER};
use config::api::{paths, ReleaseAllow, ReleaseDirective, RunLevel, UpdateEvent, UpdateReport};
use config::node::NodeId;

/// A working directory publishing a node OS release at `version` (kernel,
/// base, sliver-ref), with `nodes` registered nodes; returns the release id.
fn world(nodes: usize, version: &str) -> (Workdir, SignedRepo, Vec<config::NodeConfig>, String) {
    let wd = Workdir::new();
    let repo = SignedRepo::new(&wd.tmp.path().join("staff-repo"));
    repo.add("kernel", "6.1", b"kernel");
    repo.add("base", version, version.as_bytes());
    repo.add("sliver-ref", "1", b"sliver");
    repo.publish();
    wd.ok(&[
        "repo",
        "publish",
        repo.dir.to_str().unwrap(),
        "--root",
        repo.root_json().to_str().unwrap(),
    ]);
    let configs = (0..nodes)
        .map(|i| wd.add_node(&format!("n{i}.example.org")).1)
        .collect();
    let release = bootserver::publish::published_release(
        &bootserver::workdir::WorkDir::open(&wd.dir).unwrap(),
    )
    .unwrap();
    assert_eq!(release.os_version, version);
    (wd, repo, configs, release.deployment.to_string())
}

/// `GET release` as a node asks it, with its cached ETag if any.
fn release(
    client: &mut NodeClient,
    etag: Option<&str>,
) -> (common::client::Reply, config::api::auth::Nonce) {
    let nonce = common::client::fresh_nonce();
    let mut bytes = client.signed_request(
        "GET",
        paths::RELEASE,
        b"",
        common::client::unix_now(),
        nonce,
    );
    if let Some(tag) = etag {
        // Insert the header before the blank line ending the head.
        let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let header = format!("\r\nIf-None-Match: {tag}");
        bytes.splice(head_end..head_end, header.into_bytes());
    }
    (client.send_raw(&bytes), nonce)
}

fn directive(reply: &common::client::Reply) -> ReleaseDirective {
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.parse()
}

fn data_version(wd: &Workdir) -> (i64, i64) {
    let conn = rusqlite::Connection::open(wd.dir.join("registry.db")).unwrap();
    let nonces: i64 = conn
        .query_row("SELECT count(*) FROM nonces", [], |r| r.get(0))
        .unwrap();
    let events: i64 = conn
        .query_row("SELECT count(*) FROM node_events", [], |r| r.get(0))
        .unwrap();
    (nonces, events)
}

#[test]
fn the_release_directive_is_conditional_signed_and_writes_nothing() {
    let (wd, _repo, configs, _) = world(1, "2026.1");
    let server = wd.start();
    let mut node = wd.client(&server, &configs[0]);

    let (first, _) = release(&mut node, None);
    let d = directive(&first);
    assert_eq!(
        d.allow,
        ReleaseAllow::Latest,
        "no rollout: whatever is published"
    );
    assert_eq!(d.timestamp_version, Some(1));
    let etag = first.header("etag").unwrap().to_string();
    let before = data_version(&wd);
    for _ in 0..5 {
        let (again, nonce) = release(&mut node, Some(&etag));
        assert_eq!(again.status, 304, "{}", again.text());
        assert!(again.body.is_empty());
        // Signed over the body the node already has, for this request.
        let sig = again.header(RESPONSE_SIG_HEADER).unwrap();
        verify_response(&configs[0].key, nonce, &first.body, sig).unwrap();
    }
    assert_eq!(
        data_version(&wd),
        before,
        "no nonce, no event: nothing written"
    );
    // Another node's key does not make a valid request.
    let (_, other) = wd.add_node("other.example.org");
    let mut forger = NodeClient::with_identity(
        server.addr,
        &wd.ca(),
        "localhost",
        configs[0].node_id,
        other.key.clone(),
    );
    let (refused, _) = release(&mut forger, None);
    assert_eq!(refused.status, 401);
    assert_eq!(refused.error_code(), "bad_signature");
}

#[test]
fn rollouts_start_only_published_releases_and_move_through_their_states() {
    let (wd, _repo, configs, release_id) = world(3, "2026.1");
    let e = wd.fails(&["rollout", "status"]);
    assert!(e.contains("no rollout has been started"), "{e}");
    let e = wd.fails(&["rollout", "start", "2026.9"]);
    assert!(
        e.contains("`2026.9` is not the published release") && e.contains(&release_id),
        "{e}"
    );
    let e = wd.fails(&["rollout", "start", "2026.1", "--waves", "10%,5%,100%"]);
    assert!(e.contains("must grow"), "{e}");

    let out = wd.ok(&[
        "rollout",
        "start",
        "2026.1",
        "--waves",
        "1%,50%,100%",
        "--interval",
        "1h",
        "--max-failures",
        "5%",
    ]);
    assert!(
        out.contains(&format!("rollout 1 of {release_id}")) && out.contains("active"),
        "{out}"
    );
    let status = wd.json(&["rollout", "status"]);
    assert_eq!(status["rollout"]["state"], "active");
    assert_eq!(status["open_waves"], 1);
    assert_eq!(status["waves"].as_array().unwrap().len(), 3);
    assert_eq!(status["total"]["nodes"], 3);
    assert_eq!(status["total"]["not_reported"], 3);
    assert!(status["waves"][1]["opens_at"].is_string());
    let table = wd.ok(&["rollout", "status"]);
    assert!(
        table.contains("NOT REPORTED") && table.contains("1%–50%"),
        "{table}"
    );

    let e = wd.fails(&["rollout", "resume"]);
    assert!(e.contains("rollout 1 is active: it cannot resume"), "{e}");
    assert!(wd.ok(&["rollout", "pause"]).contains("paused"));
    assert!(wd.ok(&["rollout", "resume"]).contains("active"));
    assert!(wd.ok(&["rollout", "abort"]).contains("aborted"));
    let e = wd.fails(&["rollout", "pause"]);
    assert!(e.contains("is aborted"), "{e}");

    // A new rollout of the same release after an abort, everyone at once.
    assert!(wd
        .ok(&["rollout", "start", &release_id, "--now"])
        .contains("one wave"));
    let list = wd.json(&["rollout", "list"]);
    assert_eq!(list[0]["state"], "active");
    assert_eq!(list[1]["state"], "aborted");

    let server = wd.start();
    let mut node = wd.client(&server, &configs[0]);
    let d = directive(&release(&mut node, None).0);
    assert_eq!(
        d.allow,
        ReleaseAllow::Release {
            deployment: release_id.parse().unwrap()
        }
    );
    let note = d.rollout.unwrap();
    assert_eq!((note.id, note.wave, note.waves), (2, 1, 1));

    // `node update-now`: the next check-in says "check updates", once.
    wd.ok(&["node", "update-now", "n1.example.org"]);
    let mut n1 = wd.client(&server, &configs[1]);
    let hinted = n1.checkin(RunLevel::Boot);
    assert_eq!(
        hinted.json()["hints"]["check_updates"],
        true,
        "{}",
        hinted.text()
    );
    let plain = n1.checkin(RunLevel::Boot);
    assert!(
        plain.json()["hints"].get("check_updates").is_none(),
        "{}",
        plain.text()
    );
}

/// Node ids whose stable hash puts them into the first wave of a
/// `50%,100%` plan, and into the second.
fn split(configs: &[config::NodeConfig]) -> (Vec<usize>, Vec<usize>) {
    let plan: bootserver::rollout::WavePlan = "50%,100%".parse().unwrap();
    (0..configs.len()).partition(|i| plan.wave_of(configs[*i].node_id) == 0)
}

fn report(client: &mut NodeClient, event: UpdateEvent, release: &str) -> u16 {
    let r = UpdateReport {
        event,
        os_version: "2026.1".into(),
        deployment: release.into(),
        reason: Some("test".into()),
        at: config::Timestamp::now(),
    };
    client.post_json(paths::UPDATE, &r).status
}

#[test]
fn failures_past_the_limit_halt_the_rollout_and_no_later_wave_takes_it() {
    let (wd, _repo, configs, release_id) = world(40, "2026.1");
    let (first, second) = split(&configs);
    assert!(
        first.len() >= 5 && second.len() >= 5,
        "{first:?} {second:?}"
    );
    wd.ok(&[
        "rollout",
        "start",
        "2026.1",
        "--waves",
        "50%,100%",
        "--interval",
        "1h",
        "--max-failures",
        "1",
    ]);
    let server = wd.start();
    let mut clients: Vec<NodeClient> = configs.iter().map(|c| wd.client(&server, c)).collect();
    let allows = |c: &mut NodeClient| directive(&release(c, None).0).allow;
    let release_allowed = ReleaseAllow::Release {
        deployment: release_id.parse().unwrap(),
    };
    assert_eq!(allows(&mut clients[first[0]]), release_allowed);
    assert_eq!(allows(&mut clients[second[0]]), ReleaseAllow::Hold);

    // The first wave: some take it, one fails (at the limit), one more
    // fails (past it): halted.
    assert_eq!(
        report(&mut clients[first[0]], UpdateEvent::Staged, &release_id),
        200
    );
    assert_eq!(
        report(&mut clients[first[0]], UpdateEvent::MarkedGood, &release_id),
        200
    );
    assert_eq!(
        report(&mut clients[first[1]], UpdateEvent::RolledBack, &release_id),
        200
    );
    assert_eq!(
        wd.json(&["rollout", "status"])["rollout"]["state"],
        "active"
    );
    // A report about another release does not count.
    assert_eq!(
        report(
            &mut clients[first[2]],
            UpdateEvent::Failed,
            "2025.9-00000000"
        ),
        200
    );
    assert_eq!(
        wd.json(&["rollout", "status"])["rollout"]["state"],
        "active"
    );
    assert_eq!(
        report(&mut clients[first[2]], UpdateEvent::Failed, &release_id),
        200
    );
    let status = wd.json(&["rollout", "status"]);
    assert_eq!(status["rollout"]["state"], "halted", "{status:#}");
    let note = status["rollout"]["note"].as_str().unwrap();
    assert!(note.contains("2 of") && note.contains("wave 1"), "{note}");
    assert_eq!(status["waves"][0]["failed"], 2);
    assert_eq!(status["waves"][0]["healthy"], 1);
    assert_eq!(status["waves"][1]["took"], 0);

    // Halted: no node takes it, in any wave; the wave clock stands still.
    for i in [first[3], second[0], second[1]] {
        assert_eq!(allows(&mut clients[i]), ReleaseAllow::Hold);
    }
    let log = wd.ok(&["node", "log", &configs[first[2]].node_id.to_string()]);
    assert!(log.contains("rollout 1 halted"), "{log}");

    // Abort: those that took it are told to go back.
    wd.ok(&["rollout", "abort"]);
    let d = directive(&release(&mut clients[first[0]], None).0);
    assert_eq!(d.allow, ReleaseAllow::Hold);
    assert_eq!(
        d.revert.as_ref().map(|r| r.to_string()),
        Some(release_id.clone())
    );
    let mut ran_it = wd.client(&server, &configs[first[0]]);
    let mut body =
        common::client::checkin_body(NodeId(configs[first[0]].node_id.0), RunLevel::Boot);
    body.deployment = Some(release_id.clone());
    let hinted = ran_it.post_json(paths::CHECKIN, &body);
    assert_eq!(
        hinted.json()["hints"]["check_updates"],
        true,
        "{}",
        hinted.text()
    );
    assert_eq!(
        report(&mut clients[first[0]], UpdateEvent::Reverted, &release_id),
        200
    );
    let status = wd.json(&["rollout", "status"]);
    assert_eq!(status["waves"][0]["reverted"], 1, "{status:#}");
}

#[test]
fn a_report_delivered_late_does_not_undo_a_later_one() {
    let (wd, _repo, configs, release_id) = world(1, "2026.1");
    wd.ok(&["rollout", "start", "2026.1", "--now"]);
    let server = wd.start();
    let mut node = wd.client(&server, &configs[0]);
    let now = config::Timestamp::now().unix();
    let send = |node: &mut NodeClient, event, at: i64| {
        let r = UpdateReport {
            event,
            os_version: "2026.1".into(),
            deployment: release_id.clone(),
            reason: None,
            at: config::Timestamp::from_unix(at),
        };
        assert_eq!(node.post_json(paths::UPDATE, &r).status, 200);
    };
    send(&mut node, UpdateEvent::Activated, now - 5);
    send(&mut node, UpdateEvent::MarkedGood, now);
    // Kept by the node while the server was away, sent after.
    send(&mut node, UpdateEvent::Staged, now - 60);
    let status = wd.json(&["rollout", "status"]);
    assert_eq!(status["total"]["healthy"], 1, "{status:#}");
    // The same second: the step further along stays.
    send(&mut node, UpdateEvent::Activated, now);
    assert_eq!(wd.json(&["rollout", "status"])["total"]["healthy"], 1);
    send(&mut node, UpdateEvent::RolledBack, now + 1);
    assert_eq!(wd.json(&["rollout", "status"])["total"]["failed"], 1);
}
