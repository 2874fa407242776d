//! The server against real clients on loopback: node-wide sensors against
//! the kernel's files read by the test itself, HTTP behaviour (HEAD, 405,
//! 400, refused peers, stalled clients, bounds), caching, a slow source
//! that blocks nothing else, the event stream, and `/metrics` through
//! `promtool`.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{get, raw, request, settings, Server, Stream};
use config::events::{EventKind, NodeEvent};

fn proc(name: &str) -> String {
    fs::read_to_string(format!("/proc/{name}")).unwrap()
}

fn server() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(settings(dir.path()));
    (dir, s)
}

#[test]
fn the_index_lists_every_sensor_with_its_columns() {
    let (_dir, s) = server();
    let r = get(s.addr, "/");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("content-type").unwrap(),
        "text/csv; charset=utf-8; header=present"
    );
    let rows = r.rows();
    assert_eq!(rows[0], ["sensor", "kind", "columns", "about"]);
    for (name, kind, columns) in [
        ("load", "snapshot", "load1"),
        ("load5", "snapshot", "load5"),
        ("uptime", "snapshot", "uptime_secs idle_secs"),
        ("events", "streaming", "kind time subject detail"),
        (
            "connections",
            "streaming",
            "slice time protocol source destination uid",
        ),
    ] {
        let row = rows
            .iter()
            .find(|r| r[0] == name)
            .unwrap_or_else(|| panic!("{name}"));
        assert_eq!((row[1].as_str(), row[2].as_str()), (kind, columns));
    }
    for name in [
        "meminfo", "cpu", "disk", "net", "node", "slivers", "metrics",
    ] {
        assert!(rows.iter().any(|r| r[0] == name), "{name}");
    }
}

#[test]
fn load_and_uptime_match_proc() {
    let (_dir, s) = server();
    for (path, field) in [("/load", 0), ("/load5", 1)] {
        let before: f64 = proc("loadavg")
            .split_whitespace()
            .nth(field)
            .unwrap()
            .parse()
            .unwrap();
        let r = get(s.addr, path);
        let after: f64 = proc("loadavg")
            .split_whitespace()
            .nth(field)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(r.status, 200);
        let rows = r.rows();
        assert_eq!(rows.len(), 2, "{}", r.body);
        let value: f64 = rows[1][0].parse().unwrap();
        assert!(
            value == before || value == after,
            "{value} not {before} or {after}"
        );
    }
    let before: f64 = proc("uptime")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let r = get(s.addr, "/uptime");
    let after: f64 = proc("uptime")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(r.rows()[0], ["uptime_secs", "idle_secs"]);
    let up: f64 = r.rows()[1][0].parse().unwrap();
    assert!(before <= up && up <= after, "{before} <= {up} <= {after}");
}

#[test]
fn meminfo_rows_are_the_kernels_fields_in_bytes() {
    let (_dir, s) = server();
    let r = get(s.addr, "/meminfo/MemTotal");
    assert_eq!(r.status, 200, "{}", r.body);
    let kib: u64 = proc("meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    let rows = r.rows();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0], ["field", "value", "unit"]);
    assert_eq!(
        rows[1],
        [
            "MemTotal".to_string(),
            (kib * 1024).to_string(),
            "bytes".into()
        ]
    );
    // Every field of the kernel's file is a row.
    let all = get(s.addr, "/meminfo/field");
    let names: Vec<String> = all
        .rows()
        .into_iter()
        .skip(1)
        .map(|r| r[0].clone())
        .collect();
    let kernel: Vec<String> = proc("meminfo")
        .lines()
        .map(|l| l.split(':').next().unwrap().to_string())
        .collect();
    assert_eq!(names, kernel);
}

fn cpu_seconds(stat: &str, cpu: &str, mode: usize) -> f64 {
    let label = if cpu == "all" {
        "cpu".to_string()
    } else {
        format!("cpu{cpu}")
    };
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(label.as_str()))
        .unwrap();
    let ticks: f64 = line
        .split_whitespace()
        .nth(1 + mode)
        .unwrap()
        .parse()
        .unwrap();
    ticks / 100.0
}

#[test]
fn cpu_rows_lie_between_two_reads_of_proc_stat() {
    let (_dir, s) = server();
    let before = proc("stat");
    let r = get(s.addr, "/cpu");
    let after = proc("stat");
    let rows = r.rows();
    assert_eq!(rows[0][..4], ["cpu", "user", "nice", "system"]);
    assert_eq!(rows[1][0], "all");
    let cpus = before.lines().filter(|l| l.starts_with("cpu")).count();
    assert_eq!(rows.len(), 1 + cpus);
    for row in &rows[1..] {
        for mode in 0..4 {
            let v: f64 = row[1 + mode].parse().unwrap();
            let (lo, hi) = (
                cpu_seconds(&before, &row[0], mode),
                cpu_seconds(&after, &row[0], mode),
            );
            assert!(
                lo - 1e-9 <= v && v <= hi + 1e-9,
                "cpu {} mode {mode}: {lo} <= {v} <= {hi}",
                row[0]
            );
        }
    }
    // A column and a row selected: one value.
    let idle = get(s.addr, "/cpu/0/idle");
    assert_eq!(idle.rows().len(), 2);
    assert_eq!(idle.rows()[0], ["idle"]);
}

#[test]
fn net_rows_lie_between_two_reads_of_proc_net_dev() {
    let (_dir, s) = server();
    let counters = |text: &str| -> Vec<u64> {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with("lo:"))
            .unwrap();
        line.split_once(':')
            .unwrap()
            .1
            .split_whitespace()
            .map(|w| w.parse().unwrap())
            .collect()
    };
    let before = counters(&proc("net/dev"));
    let r = get(s.addr, "/net/lo");
    let after = counters(&proc("net/dev"));
    let rows = r.rows();
    assert_eq!(rows[0][..3], ["interface", "rx_bytes", "rx_packets"]);
    assert_eq!(rows.len(), 2, "{}", r.body);
    let value = |i: usize| -> u64 { rows[1][i].parse().unwrap() };
    for (col, kernel) in [(1, 0), (2, 1), (5, 8), (6, 9)] {
        assert!(
            before[kernel] <= value(col) && value(col) <= after[kernel],
            "column {col}: {} <= {} <= {}",
            before[kernel],
            value(col),
            after[kernel]
        );
    }
}

#[test]
fn disk_rows_match_statvfs_of_a_file_system_the_test_fills() {
    if !common::root() {
        eprintln!("SKIP: mounting a tmpfs needs root");
        return;
    }
    let (dir, s) = server();
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    nix::mount::mount(
        Some("sensors-test"),
        &mnt,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=8m,nr_inodes=1000"),
    )
    .unwrap();
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _unmount = Unmount(mnt.clone());
    fs::write(mnt.join("a"), vec![7u8; 1 << 20]).unwrap();
    let encoded = mnt.display().to_string().replace('/', "%2F");
    let r = get(s.addr, &format!("/disk/{encoded}"));
    assert_eq!(r.status, 200, "{}", r.body);
    let st = nix::sys::statvfs::statvfs(&mnt).unwrap();
    let rows = r.rows();
    assert_eq!(
        rows[0],
        [
            "mount",
            "device",
            "fstype",
            "size_bytes",
            "used_bytes",
            "avail_bytes",
            "inodes",
            "inodes_used"
        ]
    );
    let row = &rows[1];
    assert_eq!(row[0], mnt.display().to_string());
    assert_eq!(
        (row[1].as_str(), row[2].as_str()),
        ("sensors-test", "tmpfs")
    );
    let frsize = st.fragment_size() as u64;
    assert_eq!(row[3], (st.blocks() as u64 * frsize).to_string());
    assert_eq!(row[3], (8u64 << 20).to_string());
    assert_eq!(
        row[4],
        ((st.blocks() - st.blocks_free()) as u64 * frsize).to_string()
    );
    assert_eq!(row[4], (1u64 << 20).to_string());
    assert_eq!(row[6], "1000");
    assert_eq!(row[7], (st.files() - st.files_free()).to_string());
}

#[test]
fn node_row_comes_from_the_node_config_the_hand_over_note_and_check_ins() {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path());
    fs::write(
        &settings.node_config,
        fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../config/examples/node-dhcp.toml"),
        )
        .unwrap(),
    )
    .unwrap();
    let expected = config::NodeConfig::load(&settings.node_config).unwrap();
    let handover = config::handover::Handover {
        deployment: "2026.11.1-0badcafe".into(),
        os_version: "2026.11.1".into(),
        trial_boots_left: None,
        cd_version: "2026.11".into(),
        kernel_release: "6.1.0-56-amd64".into(),
        server_urls: vec![],
        clock_floor: config::Timestamp::from_unix(0),
    };
    fs::write(&settings.handover, serde_json::to_vec(&handover).unwrap()).unwrap();
    let journal = settings.journal.clone();
    let s = Server::start(settings);
    let r = get(s.addr, "/node");
    assert_eq!(r.status, 200, "{}", r.body);
    let rows = r.rows();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[0],
        [
            "node_id",
            "hostname",
            "os_version",
            "cd_version",
            "boot_state",
            "deployment",
            "kernel"
        ]
    );
    assert_eq!(
        rows[1],
        [
            expected.node_id.to_string(),
            expected.fqdn(),
            "2026.11.1".into(),
            "2026.11".into(),
            "boot".into(),
            "2026.11.1-0badcafe".into(),
            "6.1.0-56-amd64".into()
        ]
    );
    // The boot server names another state at a check-in: the row follows.
    journal
        .append(&NodeEvent::now(EventKind::Checkin, "debug", "run_level=boot").to_line())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = get(s.addr, "/node/boot_state");
        if r.rows()[1][0] == "debug" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "boot state never followed: {}",
            r.body
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A corrupt note is an error that names it.
    fs::write(dir.path().join("handover.json"), "{").unwrap();
    let r = get(s.addr, "/node");
    assert_eq!(r.status, 503);
    assert!(
        r.body.contains("handover.json: not a hand-over note"),
        "{}",
        r.body
    );
}

#[test]
fn head_gives_the_headers_only() {
    let (_dir, s) = server();
    let got = get(s.addr, "/uptime");
    let head = request(s.addr, "HEAD", "/uptime");
    assert_eq!(head.status, 200);
    assert_eq!(head.body, "");
    assert_eq!(head.header("content-type"), got.header("content-type"));
    let stream = request(s.addr, "HEAD", "/events");
    assert_eq!(stream.status, 200);
    assert_eq!(stream.body, "");
}

#[test]
fn other_methods_get_405_with_allow() {
    let (_dir, s) = server();
    for (method, path) in [
        ("POST", "/load"),
        ("PUT", "/slivers"),
        ("DELETE", "/"),
        ("POST", "/metrics"),
    ] {
        let r = request(s.addr, method, path);
        assert_eq!(r.status, 405, "{method} {path}: {r:?}");
        let allow = r.header("allow").unwrap_or_default();
        let mut methods: Vec<&str> = allow.split(',').map(str::trim).collect();
        methods.sort();
        assert_eq!(methods, ["GET", "HEAD"], "{method} {path}");
    }
}

#[test]
fn a_malformed_request_line_gets_400() {
    let (_dir, s) = server();
    for line in [
        "GARBAGE\r\n\r\n",
        "GET /load HTTP/9.9\r\n\r\n",
        "GET\r\n\r\n",
        "GET /lo ad HTTP/1.1\r\n\r\n",
    ] {
        let r = raw(s.addr, line);
        assert_eq!(r.status, 400, "{line:?}: {r:?}");
    }
}

#[test]
fn unknown_sensors_rows_and_kinds_get_404() {
    let (_dir, s) = server();
    for path in [
        "/nothing",
        "/meminfo/NoSuchField",
        "/cpu/999",
        "/events/reboot",
        "/connections/Bad-Name",
    ] {
        let r = get(s.addr, path);
        assert_eq!(r.status, 404, "{path}: {r:?}");
    }
}

#[test]
fn non_loopback_peers_are_refused_when_bound_wider() {
    if !common::root() {
        eprintln!("SKIP: a network namespace needs root");
        return;
    }
    let ns = match common::NetNs::with_address("10.203.0.1") {
        Ok(ns) => ns,
        Err(e) => {
            eprintln!("SKIP: {e}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let listener = ns.run(|| std::net::TcpListener::bind("0.0.0.0:0").unwrap());
    let port = listener.local_addr().unwrap().port();
    let s = Server::on(settings(dir.path()), listener);
    let _ = s.addr;
    let (local, other) = ns.run(move || {
        let local = get(format!("127.0.0.1:{port}").parse().unwrap(), "/uptime");
        let other = get(format!("10.203.0.1:{port}").parse().unwrap(), "/uptime");
        (local, other)
    });
    assert_eq!(local.status, 200, "{local:?}");
    assert_eq!(other.status, 403, "{other:?}");
    assert!(other.body.contains("only local clients"), "{other:?}");

    // Told to allow that network, it serves it.
    let mut allowed = settings(dir.path());
    allowed.limits.allow = vec!["10.203.0.0/24".parse().unwrap()];
    let listener = ns.run(|| std::net::TcpListener::bind("0.0.0.0:0").unwrap());
    let port = listener.local_addr().unwrap().port();
    let _s2 = Server::on(allowed, listener);
    let other = ns.run(move || get(format!("10.203.0.1:{port}").parse().unwrap(), "/uptime"));
    assert_eq!(other.status, 200, "{other:?}");
}

#[test]
fn a_client_that_stalls_its_request_is_dropped() {
    let (_dir, s) = server();
    let mut c = common::connect(s.addr);
    c.write_all(b"GET /load HTTP/1.1\r\nHost: x\r\n").unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    // The request timeout is 2 s in the tests; the read's own timeout
    // (60 s) only stops a hung test.
    let r = c.read_to_end(&mut buf);
    assert!(r.is_ok() || buf.is_empty(), "{r:?}");
    eprintln!("stalled request dropped after {:?}", started.elapsed());
    // Meanwhile and afterwards, others are served.
    assert_eq!(get(s.addr, "/uptime").status, 200);
}

#[test]
fn a_client_that_never_reads_is_dropped_and_stalls_nobody() {
    let (dir, s) = server();
    // A small receive window, so the server's writes stall soon.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&s.addr.into()).unwrap();
    let mut c: std::net::TcpStream = socket.into();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    c.write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // Feed the stream until the server's buffers are full.
    let journal = floor::journal::Journal::new(dir.path().join("run/events.jsonl"), 64 << 20);
    let detail = "x".repeat(900);
    for i in 0..12_000 {
        journal
            .append(&NodeEvent::now(EventKind::Sliver, &format!("pl_{i}"), &detail).to_line())
            .unwrap();
    }
    // Others are served while that client sits there.
    assert_eq!(get(s.addr, "/uptime").status, 200);
    // The write timeout (2 s in the tests) ends its connection: reading
    // what is buffered then reaches the end.
    std::thread::sleep(Duration::from_secs(5));
    let mut sink = vec![0u8; 1 << 16];
    let mut total = 0usize;
    loop {
        match c.read(&mut sink) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the stalled connection was not closed: {e} after {total} bytes"),
        }
    }
    assert!(
        total < 12_000 * 900,
        "the server never stalled ({total} bytes)"
    );
    eprintln!("stalled reader dropped after {total} bytes");
}

#[test]
fn connections_past_the_bound_get_503() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings(dir.path());
    settings.limits.max_connections = 2;
    let s = Server::start(settings);
    let _a = common::connect(s.addr);
    let _b = common::connect(s.addr);
    // The accept loop takes them in order; give it a moment to hold both.
    std::thread::sleep(Duration::from_millis(200));
    let r = get(s.addr, "/uptime");
    assert_eq!(r.status, 503, "{r:?}");
    drop(_a);
    drop(_b);
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(s.addr, "/uptime").status != 200 {
        assert!(Instant::now() < deadline, "permits never came back");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn readings_are_reused_for_the_time_to_live() {
    let dir = tempfile::tempdir().unwrap();
    let mut cached = settings(dir.path());
    cached.cache_ttl = Duration::from_secs(3600);
    let s = Server::start(cached);
    let first = get(s.addr, "/uptime").body;
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(get(s.addr, "/uptime").body, first);
    let (_d, fresh) = server();
    let a = get(fresh.addr, "/uptime").body;
    std::thread::sleep(Duration::from_millis(30));
    assert_ne!(get(fresh.addr, "/uptime").body, a);
}

#[test]
fn a_source_that_hangs_blocks_no_other_sensor() {
    let dir = tempfile::tempdir().unwrap();
    let fake_proc = dir.path().join("proc");
    fs::create_dir(&fake_proc).unwrap();
    for name in ["uptime", "meminfo", "stat"] {
        std::os::unix::fs::symlink(format!("/proc/{name}"), fake_proc.join(name)).unwrap();
    }
    // Reading a FIFO with no writer blocks: the load sensor's source hangs.
    let fifo = fake_proc.join("loadavg");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut s = settings(dir.path());
    s.proc_dir = fake_proc;
    s.sensor_timeout = Duration::from_millis(500);
    // Kept once read: the FIFO gives one reading only.
    s.cache_ttl = Duration::from_secs(3600);
    let server = Server::start(s);
    let addr = server.addr;
    let hung = std::thread::spawn(move || get(addr, "/load"));
    for _ in 0..5 {
        assert_eq!(get(server.addr, "/uptime").status, 200);
        assert_eq!(get(server.addr, "/meminfo/MemTotal").status, 200);
    }
    let hung = hung.join().unwrap();
    assert_eq!(hung.status, 503, "{hung:?}");
    assert!(
        hung.body.contains("loadavg did not answer within 500ms"),
        "{}",
        hung.body
    );
    // Another request joins the read in flight instead of starting one more.
    assert_eq!(get(server.addr, "/load").status, 503);
    // Metrics say which source is down and carry the others.
    let m = get(server.addr, "/metrics");
    assert_eq!(m.status, 200);
    assert!(
        m.body.contains("plnode_sensor_up{source=\"loadavg\"} 0"),
        "{}",
        m.body
    );
    assert!(
        m.body.contains("plnode_sensor_up{source=\"uptime\"} 1"),
        "{}",
        m.body
    );
    // Release the blocked reader.
    let mut w = fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    w.write_all(b"0.50 0.40 0.30 1/100 4242\n").unwrap();
    drop(w);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = get(server.addr, "/load");
        if r.status == 200 {
            assert_eq!(r.rows()[1], ["0.5"]);
            break;
        }
        assert!(Instant::now() < deadline, "{r:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn events_stream_as_they_are_appended() {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path());
    let journal = settings.journal.clone();
    // Something from before the server started is not streamed.
    journal
        .append(&NodeEvent::now(EventKind::Update, "staged", "old").to_line())
        .unwrap();
    let s = Server::start(settings);
    let mut all = Stream::open(s.addr, "/events");
    assert!(all.head.starts_with("HTTP/1.0 200"), "{}", all.head);
    assert_eq!(all.line().unwrap(), "kind,time,subject,detail");
    let mut slivers = Stream::open(s.addr, "/events/sliver/subject/detail");
    assert_eq!(slivers.line().unwrap(), "subject,detail");
    let mut latencies = Vec::new();
    for (kind, subject, detail) in [
        (EventKind::Checkin, "boot", "run_level=boot"),
        (EventKind::Sliver, "princeton_codeen", "started"),
        (
            EventKind::Update,
            "marked_good",
            "os_version=2 deployment=2-abc: ok, healthy",
        ),
    ] {
        let event = NodeEvent::now(kind, subject, detail);
        let at = Instant::now();
        journal.append(&event.to_line()).unwrap();
        let line = all.line().unwrap();
        latencies.push(at.elapsed());
        let detail_csv = if detail.contains(',') {
            format!("\"{detail}\"")
        } else {
            detail.to_string()
        };
        assert_eq!(
            line,
            format!("{kind},{},{subject},{detail_csv}", event.time)
        );
    }
    assert_eq!(slivers.line().unwrap(), "princeton_codeen,started");
    eprintln!("event latencies: {latencies:?}");
    // A rotation loses nothing for a follower that keeps up.
    let small = floor::journal::Journal::new(journal.path(), 200);
    for i in 0..5 {
        small
            .append(&NodeEvent::now(EventKind::Sliver, &format!("pl_{i}"), "created").to_line())
            .unwrap();
        assert!(all.line().unwrap().contains(&format!("pl_{i},created")));
    }
}

#[test]
fn streams_are_chunked_over_http_1_1() {
    let (_dir, s) = server();
    let mut c = common::connect(s.addr);
    c.write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = c.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
}

#[test]
fn metrics_pass_promtool_and_match_the_tables() {
    let (_dir, s) = server();
    let m = get(s.addr, "/metrics");
    assert_eq!(m.status, 200);
    assert!(m
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let total_kib: u64 = proc("meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    assert!(
        m.body.contains(&format!(
            "plnode_memory_bytes{{field=\"MemTotal\"}} {}\n",
            total_kib * 1024
        )),
        "{}",
        m.body
    );
    assert!(m
        .body
        .contains("plnode_network_receive_bytes_total{interface=\"lo\"}"));
    assert!(m.body.contains("# TYPE plnode_cpu_seconds_total counter"));
    let open = raw(
        s.addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text; version=1.0.0\r\nConnection: close\r\n\r\n",
    );
    assert!(open
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    assert!(open.body.ends_with("# EOF\n"), "{}", open.body);
    match common::promtool_check(&m.body) {
        None => eprintln!("SKIP (promtool): not installed (apt-get install prometheus)"),
        Some(report) => assert!(
            !report.starts_with("FAILED"),
            "promtool: {report}\n{}",
            m.body
        ),
    }
}

fn followers(addr: std::net::SocketAddr, sensor: &str) -> String {
    let m = get(addr, "/metrics");
    let prefix = format!("plnode_sensor_followers{{sensor=\"{sensor}\"}} ");
    m.body
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {prefix}in {}", m.body))
        .to_string()
}

#[test]
fn a_stream_ends_when_its_client_goes_away() {
    let (_dir, s) = server();
    assert_eq!(followers(s.addr, "events"), "0");
    let mut stream = Stream::open(s.addr, "/events");
    assert_eq!(stream.line().unwrap(), "kind,time,subject,detail");
    let mut chunked = common::connect(s.addr);
    chunked
        .write_all(b"GET /connections HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 512];
    let _ = chunked.read(&mut buf).unwrap();
    assert_eq!(followers(s.addr, "events"), "1");
    assert_eq!(followers(s.addr, "connections"), "1");
    // The clients leave; nothing is streamed meanwhile.
    drop(stream);
    drop(chunked);
    let deadline = Instant::now() + Duration::from_secs(60);
    while followers(s.addr, "events") != "0" || followers(s.addr, "connections") != "0" {
        assert!(
            Instant::now() < deadline,
            "the streams outlived their clients"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
