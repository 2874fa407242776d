//! Bad input from the network: size limits, malformed JSON, bad fields,
//! unknown paths. Each gets a 4xx with a JSON error that says what was
//! wrong, and nothing is stored.

mod common;

use common::client::{fresh_nonce, raw_request, unix_now};
use common::Workdir;
use config::api::{paths, HardwareSummary, HelloRequest, NicInfo, RunLevel};

/// Nothing about the node changed: no contact, no log entry.
fn assert_nothing_stored(wd: &Workdir) {
    let shown = wd.node_json("1");
    assert!(shown["report"]["last_contact"].is_null(), "{shown}");
    assert!(shown["report"]["run_level"].is_null(), "{shown}");
    assert_eq!(wd.json(&["node", "log", "1"]), serde_json::json!([]));
}

#[test]
fn a_body_over_the_limit_is_refused_with_413_before_it_is_read() {
    let wd = Workdir::new();
    wd.set_config("max_body = \"1MiB\"", "max_body = \"8KiB\"");
    let (_, config) = wd.add_node("n1.example.org");
    let server = wd.start();
    let mut node = wd.client(&server, &config);
    let mut body = serde_json::to_vec(&common::client::checkin_body(
        config.node_id,
        RunLevel::Boot,
    ))
    .unwrap();
    body.extend(std::iter::repeat_n(b' ', 10_000));
    let reply = node.request("POST", paths::CHECKIN, &body);
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert_eq!(reply.error_code(), "too_large");
    assert!(reply.json()["message"]
        .as_str()
        .unwrap()
        .contains("8192 bytes"));

    // Chunked, without a Content-Length: cut off while reading.
    let auth = config::api::auth::sign_request(
        &config.key,
        config.node_id,
        "POST",
        paths::CHECKIN,
        &body,
        unix_now(),
        fresh_nonce(),
    );
    let mut req = format!(
        "POST {} HTTP/1.1\r\nHost: localhost\r\nAuthorization: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        paths::CHECKIN,
        auth.to_header_value()
    )
    .into_bytes();
    for chunk in body.chunks(4096) {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let reply = node.send_raw(&req);
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert_eq!(reply.error_code(), "too_large");
    assert_nothing_stored(&wd);
}

#[test]
fn malformed_json_and_bad_fields_say_what_is_wrong_and_store_nothing() {
    let wd = Workdir::new();
    let (_, config) = wd.add_node("n1.example.org");
    let server = wd.start();
    let mut node = wd.client(&server, &config);

    let reply = node.request("POST", paths::CHECKIN, b"{\"node_id\": 1, \"run_level\": ");
    assert_eq!(reply.status, 400);
    assert_eq!(reply.error_code(), "bad_request");
    let message = reply.json()["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("not a valid check-in") && message.contains("line 1"),
        "{message}"
    );

    let reply = node.request("POST", paths::CHECKIN, br#"{"node_id": 1, "run_level": "flying", "uptime_secs": 1, "node_time": "2027-01-01T00:00:00Z"}"#);
    assert_eq!(reply.status, 400);
    assert!(reply.text().contains("flying"), "{}", reply.text());

    // Another node's id in the body.
    let mut body = common::client::checkin_body(config.node_id, RunLevel::Boot);
    body.node_id = config::node::NodeId(2);
    let reply = node.post_json(paths::CHECKIN, &body);
    assert_eq!(reply.status, 400);
    assert!(
        reply.text().contains("not the authenticated node"),
        "{}",
        reply.text()
    );

    // An over-long field is named.
    let mut body = common::client::checkin_body(config.node_id, RunLevel::Boot);
    body.os_version = Some("x".repeat(1000));
    let reply = node.post_json(paths::CHECKIN, &body);
    assert_eq!(reply.status, 400);
    assert!(
        reply.text().contains("os_version is 1000 bytes"),
        "{}",
        reply.text()
    );

    let reply = node.request("POST", paths::PROGRESS, br#"{"events": []}"#);
    assert_eq!(reply.status, 400);
    assert!(reply.text().contains("events is empty"), "{}", reply.text());
    let reply = node.request("POST", paths::PROGRESS, br#"{"events": [{"step": "x", "percent": 300, "message": "m", "at": "2027-01-01T00:00:00Z"}]}"#);
    assert_eq!(reply.status, 400, "{}", reply.text());

    assert_nothing_stored(&wd);
}

#[test]
fn unknown_paths_and_methods_get_json_errors() {
    let wd = Workdir::new();
    let (_, config) = wd.add_node("n1.example.org");
    let server = wd.start();
    let mut node = wd.client(&server, &config);
    let reply = node.get("/api/v1/node/nothing", &[]);
    assert_eq!(reply.status, 404);
    assert_eq!(reply.error_code(), "not_found");
    let reply = node.send_raw(&raw_request("GET", paths::CHECKIN, &[], b""));
    assert_eq!(reply.status, 405);
    assert_eq!(reply.error_code(), "method_not_allowed");
    let reply = node.get("/status?sort=password", &[]);
    assert_eq!(reply.status, 400);
    assert!(
        reply.text().contains("cannot sort by `password`"),
        "{}",
        reply.text()
    );
}

#[test]
fn an_unregistered_machine_saying_hello_is_recorded_for_admins() {
    let wd = Workdir::new();
    wd.add_node("n1.example.org");
    let server = wd.start();
    let mut client = common::NodeClient::with_identity(
        server.addr,
        &wd.ca(),
        "localhost",
        config::node::NodeId(0),
        config::node::NodeKey::new("0".repeat(64)).unwrap(),
    );
    let hello = HelloRequest {
        bootcd_version: Some("2026.11.1".into()),
        hardware: HardwareSummary {
            cpu_model: "QEMU Virtual CPU".into(),
            cpus: 1,
            ram_bytes: 256 << 20,
            disks: vec![],
            nics: vec![NicInfo {
                name: "eth0".into(),
                mac: "52:54:00:ab:cd:ef".parse().unwrap(),
                link: true,
                driver: None,
            }],
        },
    };
    let body = serde_json::to_vec(&hello).unwrap();
    for _ in 0..2 {
        let reply = client.send_raw(&raw_request("POST", paths::HELLO, &[], &body));
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert!(reply.json()["message"]
            .as_str()
            .unwrap()
            .contains("not registered"));
    }
    let reply = client.send_raw(&raw_request(
        "POST",
        paths::HELLO,
        &[],
        b"{\"hardware\": 5}",
    ));
    assert_eq!(reply.status, 400);

    let list = wd.json(&["node", "unregistered"]);
    assert_eq!(list[0]["macs"][0], "52:54:00:ab:cd:ef");
    assert_eq!(list[0]["count"], 2);
    assert_eq!(
        list[0]["peer"].as_str().unwrap().split(':').next(),
        Some("127.0.0.1")
    );
    let table = wd.ok(&["node", "unregistered"]);
    assert!(table.contains("52:54:00:ab:cd:ef"), "{table}");
    wd.ok(&["node", "unregistered", "--forget"]);
    assert_eq!(wd.json(&["node", "unregistered"]), serde_json::json!([]));
}

#[test]
fn admin_commands_refuse_bad_input_clearly() {
    let wd = Workdir::new();
    wd.add_node("n1.example.org");
    let e = wd.fails(&["node", "add", "n1.example.org", "--site", "demo"]);
    assert!(e.contains("already exists"), "{e}");
    let e = wd.fails(&["node", "add", "n2", "--site", "nowhere"]);
    assert!(e.contains("no site `nowhere`"), "{e}");
    let e = wd.fails(&["node", "add", "n2", "--site", "demo", "--network", "static"]);
    assert!(e.contains("--address"), "{e}");
    let e = wd.fails(&[
        "node",
        "add",
        "n2",
        "--site",
        "demo",
        "--network",
        "static",
        "--address",
        "10.0.2.15/24",
        "--gateway",
        "10.0.3.1",
    ]);
    assert!(
        e.contains("gateway 10.0.3.1 is not another host in 10.0.2.0/24"),
        "{e}"
    );
    let e = wd.fails(&["node", "show", "n9"]);
    assert!(e.contains("no node `n9`"), "{e}");
    let e = wd.fails(&["node", "bwcap", "1", "fast"]);
    assert!(e.contains("fast"), "{e}");
    let e = fails_anywhere(&["-d", "/nonexistent/srv", "node", "list"]);
    assert!(e.contains("not a boot server working directory"), "{e}");

    // A static node's config round-trips through the node's parser.
    let out = wd.tmp.path().join("n3.txt");
    wd.ok(&[
        "node",
        "add",
        "n3.example.org",
        "--site",
        "demo",
        "--network",
        "static",
        "--address",
        "10.0.2.15/24",
        "--gateway",
        "10.0.2.2",
        "--dns",
        "10.0.2.3",
        "--mac",
        "52:54:00:12:34:56",
        "--plnode-txt",
        "-o",
        out.to_str().unwrap(),
    ]);
    let (parsed, _) = config::load_any_node_config(&out).unwrap();
    assert_eq!(parsed.fqdn(), "n3.example.org");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("IP_METHOD=\"static\""), "{text}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

fn fails_anywhere(args: &[&str]) -> String {
    common::fails(args)
}
