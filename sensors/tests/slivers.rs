//! Per-sliver sensors against real slivers made by nodemgr on this host
//! (as root, in a cgroup of the test's own): rows against nodemgr's state
//! and the cgroup files read by the test, a sliver reading the sensors
//! itself, outgoing connections matched to their slice, and `/metrics`.
//! This host's cgroup2 has no controllers: memory.current and the limits'
//! files are absent, and the rows say so (empty, or the rspec's limit).

mod common;

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{get, settings, Server, Slivers, Stream};
use config::rspec::Rspec;
use config::units::ByteSize;
use nodemgr::{AuthorizedKeys, SliceName};

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq8mCjRqUoFdjvQ2xAq3hQ6X7tq1z0Jg7oQyJ6l2S9u alice@example.org";

macro_rules! need_slivers {
    () => {
        if let Some(why) = common::slivers_unavailable() {
            eprintln!("SKIP: {why}");
            return;
        }
    };
}

fn name(s: &str) -> SliceName {
    SliceName::new(s).unwrap()
}

fn alpha_rspec() -> Rspec {
    Rspec {
        cpu_share: 3,
        memory: Some(ByteSize::mib(128)),
        disk: Some(ByteSize::mib(64)),
        pids: Some(100),
        lease_end: Some("2027-03-01T00:00:00Z".parse().unwrap()),
        ..Rspec::default()
    }
}

/// pl_alpha running (with a sleeper inside), pl_beta created and stopped.
fn two_slivers(slivers: &Slivers) -> std::process::Child {
    let keys = AuthorizedKeys::parse(KEY).unwrap();
    slivers
        .manager
        .create(&name("pl_alpha"), &alpha_rspec(), &keys)
        .unwrap();
    slivers.manager.start(&name("pl_alpha")).unwrap();
    slivers
        .manager
        .create(&name("pl_beta"), &Rspec::default(), &keys)
        .unwrap();
    slivers.spawn_in("pl_alpha", "exec sleep 600")
}

fn cgroup_file(slivers: &Slivers, slice: &str, file: &str) -> Option<String> {
    fs::read_to_string(slivers.cgroup.path().join("slivers").join(slice).join(file)).ok()
}

fn procs(slivers: &Slivers, slice: &str) -> usize {
    cgroup_file(slivers, slice, "cgroup.procs").map_or(0, |t| t.lines().count())
}

fn cpu_usec(slivers: &Slivers, slice: &str) -> Option<u64> {
    cgroup_file(slivers, slice, "cpu.stat")?
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec ")?.parse().ok())
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sliver_rows_match_nodemgr_and_the_cgroup_files() {
    need_slivers!();
    let dir = tempfile::tempdir().unwrap();
    let slivers = Slivers::new(dir.path());
    let mut sleeper = two_slivers(&slivers);
    // PID 1, and what `nodemgr enter` starts for the sleeper: wait until
    // the count holds still.
    let mut last = 0;
    wait_for("the sleeper inside pl_alpha", || {
        let now = procs(&slivers, "pl_alpha");
        let settled = now >= 2 && now == last;
        last = now;
        std::thread::sleep(Duration::from_millis(200));
        settled
    });
    let mut s = settings(dir.path());
    s.nodemgr = slivers.settings.clone();
    let server = Server::start(s);

    let procs_before = procs(&slivers, "pl_alpha");
    let cpu_before = cpu_usec(&slivers, "pl_alpha").unwrap();
    let r = get(server.addr, "/slivers");
    let cpu_after = cpu_usec(&slivers, "pl_alpha").unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let rows = r.rows();
    assert_eq!(
        rows[0],
        [
            "name",
            "state",
            "cpu_share",
            "cpu_secs",
            "memory_used_bytes",
            "memory_limit_bytes",
            "processes",
            "disk_used_bytes",
            "disk_quota_bytes",
            "lease_end"
        ]
    );
    assert_eq!(rows.len(), 3, "{}", r.body);
    let (alpha, beta) = (&rows[1], &rows[2]);

    // pl_alpha: what nodemgr keeps, and what its cgroup says.
    let state =
        nodemgr::state::SliverState::load(&slivers.settings.sliver_states(), &name("pl_alpha"))
            .unwrap()
            .unwrap();
    assert_eq!(alpha[0], "pl_alpha");
    assert_eq!(alpha[1], "running");
    assert_eq!(alpha[2], state.rspec.cpu_share.to_string());
    let cpu: f64 = alpha[3].parse().unwrap();
    assert!(
        cpu_before as f64 / 1e6 <= cpu + 1e-9 && cpu <= cpu_after as f64 / 1e6 + 1e-9,
        "{cpu_before} <= {cpu} s <= {cpu_after}"
    );
    assert_eq!(
        alpha[4],
        cgroup_file(&slivers, "pl_alpha", "memory.current")
            .map_or(String::new(), |v| v.trim().to_string())
    );
    let limit = cgroup_file(&slivers, "pl_alpha", "memory.max")
        .map_or((128u64 << 20).to_string(), |v| v.trim().to_string());
    assert_eq!(alpha[5], limit);
    let procs_after = procs(&slivers, "pl_alpha");
    assert!(
        [procs_before, procs_after].contains(&alpha[6].parse().unwrap()),
        "{} processes, not {procs_before} or {procs_after}",
        alpha[6]
    );
    let dirs =
        nodemgr::storage::SliverDirs::new(slivers.settings.slivers_fs.root(), &name("pl_alpha"));
    assert_eq!(alpha[7], dirs.usage(&state.ids).to_string());
    assert_eq!(alpha[8], (64u64 << 20).to_string());
    assert_eq!(alpha[9], "2027-03-01T00:00:00Z");

    // pl_beta: stopped, nothing running, the node's defaults.
    assert_eq!(beta[..3], ["pl_beta", "stopped", "1"]);
    // Never started: its CPU time is its cgroup's, if it has one yet.
    match cpu_usec(&slivers, "pl_beta") {
        Some(usec) => assert_eq!(beta[3].parse::<f64>().unwrap(), usec as f64 / 1e6),
        None => assert_eq!(beta[3], ""),
    }
    assert_eq!(beta[5], (512u64 << 20).to_string());
    assert_eq!(beta[6], "0");
    assert_eq!(beta[8], (1u64 << 30).to_string());
    assert_eq!(beta[9], "");

    // The paper's forms: one sliver, some columns.
    let one = get(server.addr, "/slivers/pl_beta/name/state");
    assert_eq!(
        one.rows(),
        [vec!["name", "state"], vec!["pl_beta", "stopped"]]
    );
    assert_eq!(get(server.addr, "/slivers/pl_gamma").status, 404);

    // A sliver reads the sensors over the node's loopback and sees both.
    let mut reader = slivers.spawn_in(
        "pl_alpha",
        &format!(
            "wget -qO- http://127.0.0.1:{}/slivers/name",
            server.addr.port()
        ),
    );
    let status = reader.wait().unwrap();
    let mut out = String::new();
    reader
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(status.success(), "{status}: {out}");
    assert_eq!(out, "name\npl_alpha\npl_beta\n");

    // The same figures as series labelled by slice.
    let m = get(server.addr, "/metrics");
    assert!(
        m.body
            .contains("plnode_sliver_cpu_share{slice=\"pl_alpha\"} 3\n"),
        "{}",
        m.body
    );
    assert!(
        m.body
            .contains("plnode_sliver_running{slice=\"pl_beta\"} 0\n"),
        "{}",
        m.body
    );
    assert!(
        m.body
            .contains("plnode_sliver_lease_end_timestamp_seconds{slice=\"pl_alpha\"} 1803859200"),
        "{}",
        m.body
    );

    let _ = sleeper.kill();
    let _ = sleeper.wait();
    slivers.manager.delete(&name("pl_alpha")).unwrap();
    slivers.manager.delete(&name("pl_beta")).unwrap();
    let r = get(server.addr, "/slivers");
    assert_eq!(r.rows().len(), 1, "{}", r.body);
}

#[test]
fn outgoing_connections_of_a_sliver_are_streamed_under_its_slice() {
    need_slivers!();
    let dir = tempfile::tempdir().unwrap();
    let slivers = Slivers::new(dir.path());
    let mut sleeper = two_slivers(&slivers);
    let state =
        nodemgr::state::SliverState::load(&slivers.settings.sliver_states(), &name("pl_alpha"))
            .unwrap()
            .unwrap();
    let mut s = settings(dir.path());
    s.nodemgr = slivers.settings.clone();
    let server = Server::start(s);

    // A peer on loopback that holds what it accepts.
    let peer = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = peer.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let (conn, _) = peer.accept().unwrap();
        conn
    });

    let mut stream = Stream::open(server.addr, "/connections/pl_alpha");
    assert_eq!(
        stream.line().unwrap(),
        "slice,time,protocol,source,destination,uid"
    );
    let mut nc = slivers.spawn_in("pl_alpha", &format!("sleep 60 | nc 127.0.0.1 {port}"));
    let made = Instant::now();
    let held = held.join().unwrap();
    let line = stream.line().unwrap();
    eprintln!(
        "connection streamed {:?} after the peer accepted it",
        made.elapsed()
    );
    let fields: Vec<&str> = line.split(',').collect();
    assert_eq!(fields[0], "pl_alpha", "{line}");
    assert_eq!(fields[2], "tcp");
    assert_eq!(fields[3], held.peer_addr().unwrap().to_string());
    assert_eq!(fields[4], format!("127.0.0.1:{port}"));
    // nc runs as root inside: the range's first host id.
    assert_eq!(fields[5], state.ids.first.to_string());

    // A later subscriber gets the recent ones first; the test's own
    // connections (not a sliver's) are nobody's.
    let mut later = Stream::open(server.addr, "/connections");
    assert_eq!(
        later.line().unwrap(),
        "slice,time,protocol,source,destination,uid"
    );
    assert_eq!(later.line().unwrap(), line);

    let _ = nc.kill();
    let _ = nc.wait();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    drop(held);
}
