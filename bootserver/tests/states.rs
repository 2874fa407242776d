//! Boot states: what the admins want, told at each check-in, apart from
//! what the node reports; reinstall → installed → boot; the per-node log.

mod common;

use common::Workdir;
use config::api::{
    paths, BootState, CheckinResponse, FailureReport, InstallReport, InstalledPackage,
    ProgressEvent, ProgressReport, RunLevel, SliversResponse, UpdateEvent, UpdateReport,
};
use config::Timestamp;

fn state_of(reply: &common::client::Reply) -> BootState {
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.parse::<CheckinResponse>().boot_state
}

#[test]
fn reinstall_then_installed_moves_the_node_to_boot() {
    let wd = Workdir::new();
    let (_, config) = wd.add_node("n1.example.org");
    let server = wd.start();
    let mut node = wd.client(&server, &config);

    assert_eq!(
        state_of(&node.checkin(RunLevel::Bootcd)),
        BootState::Reinstall
    );
    let progress = ProgressReport {
        events: (0..3)
            .map(|i| ProgressEvent {
                step: "reinstall/install".into(),
                percent: Some(i * 50),
                message: format!("installing package {i}"),
                at: Timestamp::now(),
            })
            .collect(),
    };
    assert_eq!(node.post_json(paths::PROGRESS, &progress).status, 200);
    let report = InstallReport {
        os_version: "plnode-1.0".into(),
        deployment: "1.0-0123abcd".into(),
        packages: vec![InstalledPackage {
            name: "base".into(),
            version: "1.0".into(),
            sha256: "00".repeat(32),
        }],
        install_secs: 42,
    };
    let reply = node.post_json(paths::INSTALLED, &report);
    assert_eq!(state_of(&reply), BootState::Boot);
    // The admins' state changed; the node's reported run level is its own.
    let shown = wd.node_json("1");
    assert_eq!(shown["boot_state"], "boot");
    assert_eq!(shown["report"]["run_level"], "installing");
    assert_eq!(shown["report"]["os_version"], "plnode-1.0");
    assert_eq!(state_of(&node.checkin(RunLevel::Boot)), BootState::Boot);
    assert_eq!(wd.node_json("1")["report"]["run_level"], "boot");

    let log = wd.ok(&["node", "log", "n1"]);
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        lines[0].starts_with("log of node 1 (n1.example.org)"),
        "{log}"
    );
    // Newest first: the run level change, then the install, then progress.
    assert!(lines[1].contains("run level installing -> boot"), "{log}");
    assert!(
        lines[2].contains("installed plnode-1.0") && lines[2].contains("reinstall -> boot"),
        "{log}"
    );
    assert!(lines[3].contains("installing package 2"), "{log}");
}

#[test]
fn an_install_report_does_not_override_a_state_an_admin_set_meanwhile() {
    let wd = Workdir::new();
    let (_, config) = wd.add_node("n1.example.org");
    let server = wd.start();
    let mut node = wd.client(&server, &config);
    assert_eq!(
        state_of(&node.checkin(RunLevel::Installing)),
        BootState::Reinstall
    );
    wd.ok(&["node", "state", "1", "debug"]);
    let report = InstallReport {
        os_version: "plnode-1.0".into(),
        deployment: "d".into(),
        packages: vec![],
        install_secs: 1,
    };
    assert_eq!(
        state_of(&node.post_json(paths::INSTALLED, &report)),
        BootState::Debug
    );
}

#[test]
fn debug_and_disabled_set_while_serving_are_told_at_the_next_checkin() {
    let wd = Workdir::new();
    let (_, config) = wd.add_node("n1.example.org");
    let server = wd.start();
    let mut node = wd.client(&server, &config);
    for state in ["debug", "disabled", "boot", "reinstall"] {
        let out = wd.ok(&["node", "state", "n1.example.org", state]);
        assert!(out.contains(&format!("-> {state}")), "{out}");
        assert_eq!(state_of(&node.checkin(RunLevel::Boot)).as_str(), state);
    }
    wd.fails(&["node", "state", "1", "rescue"]);
    let log = wd.ok(&["node", "log", "1"]);
    assert!(
        log.contains("boot state debug -> disabled (admin)"),
        "{log}"
    );
}

#[test]
fn failures_keep_the_log_tail_and_the_log_is_bounded_newest_first() {
    let wd = Workdir::new();
    wd.set_config("event_log_limit = 200", "event_log_limit = 5");
    let (_, config) = wd.add_node("n1.example.org");
    let server = wd.start();
    let mut node = wd.client(&server, &config);
    for i in 0..8 {
        let report = ProgressReport {
            events: vec![ProgressEvent {
                step: "reinstall/install".into(),
                percent: None,
                message: format!("event {i}"),
                at: Timestamp::now(),
            }],
        };
        assert_eq!(node.post_json(paths::PROGRESS, &report).status, 200);
    }
    let failure = FailureReport {
        step: "reinstall/metadata".into(),
        error: "timestamp.json expired".into(),
        log_tail: vec!["fetching metadata".into(), "verifying timestamp".into()],
        now_in: RunLevel::Debug,
        at: Timestamp::now(),
    };
    assert_eq!(node.post_json(paths::FAILURE, &failure).status, 200);

    let events = wd.json(&["node", "log", "1"]);
    let events = events.as_array().unwrap();
    assert_eq!(events.len(), 5);
    assert_eq!(events[0]["kind"], "failure");
    assert_eq!(events[0]["log_tail"][1], "verifying timestamp");
    let messages: Vec<&str> = events[1..]
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["event 7", "event 6", "event 5", "event 4"]);

    let text = wd.ok(&["node", "log", "1"]);
    assert!(
        text.contains("failure reinstall/metadata: timestamp.json expired (now in debug)"),
        "{text}"
    );
    assert!(text.contains("    | verifying timestamp"), "{text}");
    let shown = wd.node_json("1");
    assert_eq!(shown["report"]["last_error"]["step"], "reinstall/metadata");
    assert_eq!(shown["report"]["run_level"], "debug");
    // The admins' state is untouched by a failure.
    assert_eq!(shown["boot_state"], "reinstall");
}

#[test]
fn update_reports_bandwidth_caps_reboots_and_slivers_reach_the_node() {
    let wd = Workdir::new();
    let (_, config) = wd.add_node("n1.example.org");
    wd.ok(&["node", "bwcap", "1", "10mbit"]);
    let keys = wd.tmp.path().join("keys.pub");
    std::fs::write(
        &keys,
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHypothetical alice@example\n",
    )
    .unwrap();
    let rspec = wd.tmp.path().join("rspec.toml");
    std::fs::write(&rspec, "cpu_share = 4\nnet_max_rate = \"5mbit\"\n").unwrap();
    wd.ok(&[
        "slice",
        "create",
        "demo_web",
        "--rspec",
        rspec.to_str().unwrap(),
        "--days",
        "7",
    ]);
    wd.ok(&["slice", "add-node", "demo_web", "n1"]);
    wd.ok(&["slice", "add-key", "demo_web", keys.to_str().unwrap()]);
    let e = wd.fails(&[
        "slice",
        "renew",
        "demo_web",
        "--until",
        "2000-01-01T00:00:00Z",
    ]);
    assert!(e.contains("not in the future"), "{e}");

    let server = wd.start();
    let mut node = wd.client(&server, &config);
    let answer: CheckinResponse = node.checkin(RunLevel::Boot).parse();
    assert_eq!(answer.bwcap.unwrap().to_string(), "10mbit");
    assert!(!answer.reboot_requested);

    let slivers: SliversResponse = {
        let reply = node.request("GET", paths::SLIVERS, b"");
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.parse()
    };
    assert_eq!(slivers.slivers.len(), 1, "{slivers:?}");
    let s = &slivers.slivers[0];
    assert_eq!(s.name, "demo_web");
    assert_eq!(s.rspec.cpu_share, 4);
    assert_eq!(s.rspec.net_max_rate.to_string(), "5mbit");
    assert!(s.rspec.lease_end.unwrap().unix() > Timestamp::now().unix() + 6 * 86_400);
    assert_eq!(s.ssh_keys.len(), 1);
    assert_eq!(slivers.bwcap.unwrap().to_string(), "10mbit");

    wd.ok(&["node", "reboot", "1"]);
    let answer: CheckinResponse = node.checkin(RunLevel::Boot).parse();
    assert!(answer.reboot_requested);

    let update = UpdateReport {
        event: UpdateEvent::MarkedGood,
        os_version: "plnode-1.1".into(),
        deployment: "1.1-feedbeef".into(),
        reason: None,
        at: Timestamp::now(),
    };
    assert_eq!(node.post_json(paths::UPDATE, &update).status, 200);
    assert_eq!(wd.node_json("1")["report"]["os_version"], "plnode-1.1");
    assert!(wd
        .ok(&["node", "log", "1"])
        .contains("update marked good: plnode-1.1"));
}
