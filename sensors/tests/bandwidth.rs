//! The `bandwidth` sensor against a real bwcap layout: a bench of network
//! namespaces and a veth pair (bwcap's own), a sliver cgroup shaped by
//! bwcap, a sender inside it, and the sensor's rows and series checked
//! against the kernel's class counters as `tc -s -j class show` prints
//! them (read by the test, not by bwcap).

mod common;

use std::fs;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use bwcap::testbed::{in_netns, Testbed, TestbedError};
use bwcap::{Bwcap, DesiredState, SliverSpec};
use common::{get, settings, Server};
use config::rspec::Rspec;
use config::units::Rate;
use config::Timestamp;

const DATAGRAMS: u64 = 300;
const PAYLOAD: usize = 900;

/// The kernel's byte and packet counters of class `1:<minor>`, from the
/// `Sent N bytes M pkt` line under it in `tc -s class show` (iproute2 6.1
/// prints no JSON for HTB classes).
fn tc_counters(bed: &Testbed, minor: u16) -> (u64, u64) {
    let out = bed
        .tc(&["-s", "class", "show", "dev", bed.node_if.as_str()])
        .expect("running tc");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let head = format!("class htb 1:{minor:x} ");
    let mut lines = text.lines();
    lines
        .by_ref()
        .find(|l| l.starts_with(&head))
        .unwrap_or_else(|| panic!("no class 1:{minor:x} in\n{text}"));
    let sent: Vec<&str> = lines
        .next()
        .expect("the counters' line")
        .split_whitespace()
        .collect();
    assert_eq!(
        (sent[0], sent[2], sent[4]),
        ("Sent", "bytes", "pkt"),
        "{text}"
    );
    (sent[1].parse().unwrap(), sent[3].parse().unwrap())
}

/// Sends `DATAGRAMS` UDP datagrams to `to` from a process that joined the
/// node's namespace and the sliver's cgroup before it ran (bash's
/// `/dev/udp`: one `printf`, one datagram).
fn send_from_sliver(bed: &Testbed, cgroup: &std::path::Path, to: SocketAddr) {
    let netns = fs::File::open(bed.node_netns()).expect("the node namespace");
    let procs = fs::OpenOptions::new()
        .write(true)
        .open(cgroup.join("cgroup.procs"))
        .expect("the sliver's cgroup.procs");
    let (netns_fd, procs_fd) = (netns.as_raw_fd(), procs.as_raw_fd());
    let script = format!(
        "exec 3>/dev/udp/{}/{}; for i in $(seq {DATAGRAMS}); do printf '%0{PAYLOAD}d' 0 >&3; done",
        to.ip(),
        to.port()
    );
    let mut command = Command::new("bash");
    command.args(["-c", &script]).stdin(Stdio::null());
    // SAFETY: only async-signal-safe calls (setns, write) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::setns(netns_fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // "0" moves the writer itself.
            if libc::write(procs_fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = command.output().expect("starting bash");
    assert!(
        out.status.success(),
        "the sender failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bandwidth_rows_and_series_match_the_kernels_class_counters() {
    let bed = match Testbed::new("sensors") {
        Ok(bed) => bed,
        Err(TestbedError::Unavailable(why)) => {
            eprintln!("SKIP: {why}");
            return;
        }
        Err(e) => panic!("the bench: {}", floor::report::error_line(&e)),
    };
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("bwcap");
    let bwcap = Bwcap::new(&state_dir);
    let cgroup = bed.sliver_cgroup("pl_alpha").unwrap();
    let spec = SliverSpec::new(
        "pl_alpha".parse().unwrap(),
        cgroup.clone(),
        Rspec {
            net_min_rate: Rate::mbit(1),
            net_max_rate: Rate::mbit(50),
            ..Rspec::default()
        },
    );
    let desired = DesiredState {
        interface: bed.node_if.clone(),
        node_cap: Some(Rate::mbit(100)),
        node_cgroup: Some(bed.cgroup_root.clone()),
        slivers: vec![spec.clone()],
    };
    bed.in_node(|| bwcap.apply(&desired, Timestamp::now()))
        .unwrap()
        .unwrap_or_else(|e| panic!("apply: {}", floor::report::error_line(&e)));
    let minor = bed
        .in_node(|| bwcap.usage(Timestamp::now()))
        .unwrap()
        .unwrap()
        .slivers[0]
        .class;

    // A socket in the peer namespace that takes the datagrams (unread:
    // what the sender's class counted is what matters).
    let sink = in_netns(&bed.peer_netns(), || UdpSocket::bind((bed.peer_addr, 9009)))
        .unwrap()
        .unwrap();
    send_from_sliver(&bed, &cgroup, sink.local_addr().unwrap());
    // The last datagrams leave the queue.
    std::thread::sleep(Duration::from_millis(300));
    let (bytes, packets) = tc_counters(&bed, minor);
    assert!(
        packets >= DATAGRAMS && bytes >= DATAGRAMS * PAYLOAD as u64,
        "the class counted {bytes} bytes in {packets} packets"
    );

    // The sensor server, wholly inside the node's namespace (its netlink
    // reads too); its clients there as well.
    let mut s = settings(dir.path());
    s.bwcap_state_dir = state_dir.clone();
    let server = bed
        .in_node(move || {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            Server::on(s, listener)
        })
        .unwrap();
    let addr = server.addr;
    let (table, one, metrics) = bed
        .in_node(|| {
            (
                get(addr, "/bandwidth"),
                get(addr, "/bandwidth/pl_alpha/day_bytes/budget_left_bytes"),
                get(addr, "/metrics"),
            )
        })
        .unwrap();

    assert_eq!(table.status, 200, "{}", table.body);
    let rows = table.rows();
    assert_eq!(
        rows[0],
        [
            "name",
            "minute_bytes",
            "minute_packets",
            "hour_bytes",
            "hour_packets",
            "day_bytes",
            "day_packets",
            "guaranteed_bps",
            "ceiling_bps",
            "budget_bytes",
            "budget_left_bytes",
            "budget_state",
            "period_end"
        ]
    );
    assert_eq!(rows.len(), 2, "{}", table.body);
    let alpha = &rows[1];
    assert_eq!(alpha[0], "pl_alpha");
    for window in [1, 3, 5] {
        assert_eq!(alpha[window], bytes.to_string(), "{}", table.body);
        assert_eq!(alpha[window + 1], packets.to_string(), "{}", table.body);
    }
    assert_eq!(alpha[7], "1000000");
    assert_eq!(alpha[8], "50000000");
    let budget = bwcap::DEFAULT_DAILY_BUDGET.bytes();
    assert_eq!(alpha[9], budget.to_string());
    assert_eq!(alpha[10], (budget - bytes).to_string());
    assert_eq!(alpha[11], "normal");
    let period_end: Timestamp = alpha[12].parse().unwrap();
    assert!(period_end > Timestamp::now());

    assert_eq!(one.status, 200, "{}", one.body);
    assert_eq!(
        one.rows(),
        [
            vec!["day_bytes".to_string(), "budget_left_bytes".into()],
            vec![bytes.to_string(), (budget - bytes).to_string()],
        ]
    );

    assert_eq!(metrics.status, 200, "{}", metrics.body);
    for line in [
        format!("plnode_sliver_transmit_bytes_total{{slice=\"pl_alpha\"}} {bytes}"),
        format!("plnode_sliver_transmit_packets_total{{slice=\"pl_alpha\"}} {packets}"),
        format!(
            "plnode_sliver_budget_left_bytes{{slice=\"pl_alpha\"}} {}",
            budget - bytes
        ),
        "plnode_sliver_ceiling_bytes_per_second{slice=\"pl_alpha\"} 6250000".into(),
        "plnode_sensor_up{source=\"bandwidth\"} 1".into(),
    ] {
        assert!(
            metrics.body.contains(&line),
            "{line} not in\n{}",
            metrics.body
        );
    }
    match common::promtool_check(&metrics.body) {
        None => eprintln!("SKIP (promtool): not installed (apt-get install prometheus)"),
        Some(report) => assert!(!report.starts_with("FAILED"), "promtool: {report}"),
    }
    drop(server);
}

#[test]
fn before_bwcaps_first_pass_the_table_is_empty_and_the_source_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.bwcap_state_dir = dir.path().join("no-bwcap-yet");
    let server = Server::start(s);
    let r = get(server.addr, "/bandwidth");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.rows().len(), 1, "the header only: {}", r.body);
    let m = get(server.addr, "/metrics");
    assert!(
        m.body.contains("plnode_sensor_up{source=\"bandwidth\"} 1"),
        "{}",
        m.body
    );
}

#[test]
fn a_damaged_bwcap_state_marks_the_source_down_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("bwcap");
    fs::create_dir_all(&state).unwrap();
    fs::write(state.join("state.json"), b"{ not json").unwrap();
    let mut s = settings(dir.path());
    s.bwcap_state_dir = state;
    let server = Server::start(s);
    let r = get(server.addr, "/bandwidth");
    assert!(r.status >= 500, "{} {}", r.status, r.body);
    assert!(r.body.contains("state.json"), "{}", r.body);
    let m = get(server.addr, "/metrics");
    assert!(
        m.body.contains("plnode_sensor_up{source=\"bandwidth\"} 0"),
        "{}",
        m.body
    );
    // The other sources still answer.
    assert!(m.body.contains("plnode_load1 "), "{}", m.body);
}
