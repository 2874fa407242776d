//! bwcap against the real kernel, without rate measurements: the layout it
//! builds, idempotence, removal, repair, bad input, classification, and a
//! sliver's inability to touch traffic control. Each test has its own
//! network namespaces and cgroups (root only; skipped otherwise).

mod common;

use std::path::Path;
use std::process::Command;

use bwcap::layout::{CLASS_DEFAULT, CLASS_ICMP, CLASS_IP_OPTIONS, CLASS_NODE, CLASS_NODE_CAP};
use bwcap::tc::handle;
use common::{at, node, T0};
use config::units::Rate;

fn class_of(usage: &bwcap::Usage, minor: u16) -> Option<&bwcap::usage::ClassUsage> {
    usage.classes.iter().find(|c| c.minor == minor)
}

#[test]
fn the_layout_is_planetlabs_and_a_second_pass_changes_nothing() {
    let Some(n) = node("idem") else { return };
    let a = n.sliver("alpha", Rate::kbit(5), Rate::mbit(10));
    let b = n.sliver("beta", Rate::mbit(1), Rate::mbit(500));
    let desired = n.desired(Some(Rate::mbit(100)), vec![a.clone(), b.clone()]);
    let first = n.apply_ok(&desired, T0);
    assert!(first.netlink_messages >= 12, "{first:?}");
    assert!(
        first.netlink_sends < first.netlink_messages,
        "many messages per send: {first:?}"
    );
    assert_eq!(first.programs_attached, 4, "node, slivers/, alpha, beta");

    let cgroups = [
        n.bed.cgroup_root.as_path(),
        &n.bed.cgroup_root.join("slivers"),
        a.cgroup.as_path(),
        b.cgroup.as_path(),
    ]
    .map(Path::to_path_buf);
    let refs: Vec<&Path> = cgroups.iter().map(|p| p.as_path()).collect();
    let before = n.snapshot(&refs);
    let cap = &before.classes[&handle(1, CLASS_NODE_CAP)].1;
    assert_eq!((cap.rate, cap.ceil), (12_500_000, 12_500_000));
    let alpha = &before.classes[&handle(1, 0x10)];
    assert_eq!(alpha.0, handle(1, CLASS_NODE_CAP));
    assert_eq!((alpha.1.rate, alpha.1.ceil), (625, 1_250_000));
    // beta's ceiling is the node cap, not its own 500 Mbit/s.
    let beta = &before.classes[&handle(1, 0x11)];
    assert_eq!((beta.1.rate, beta.1.ceil), (125_000, 12_500_000));
    for minor in [
        CLASS_NODE,
        CLASS_DEFAULT,
        CLASS_ICMP,
        CLASS_IP_OPTIONS,
        0x10,
        0x11,
    ] {
        let leaf = &before.qdiscs[&handle(minor, 0)];
        assert_eq!(leaf.0, handle(1, minor), "leaf of 1:{minor:x}");
    }
    assert_eq!(before.qdiscs[&handle(CLASS_ICMP, 0)].2, Some(16));
    assert_eq!(before.programs[&cgroups[2]][0].1, "bwcap1_s_10");
    assert_eq!(gso_max_segs(&n), Some(bwcap::layout::EGRESS_GSO_MAX_SEGS));

    // `bwcap show`: the classes like `tc -s class show`, with names and budgets.
    let shown = n.usage(T0.saturating_add_secs(5)).render();
    assert!(
        shown.starts_with("bwcap on bwn0: node cap 100mbit;"),
        "{shown}"
    );
    assert!(
        shown.contains(
            "class htb 1:10 parent 1:1 leaf 10: prio 0 quantum 1514 rate 5kbit ceil 10mbit"
        ),
        "{shown}"
    );
    assert!(
        shown.contains("[slice alpha]") && shown.contains("[icmp echo]"),
        "{shown}"
    );
    assert!(
        shown.contains(" budget 10546875KiB/day: used 0 bytes (0 %)"),
        "{shown}"
    );
    assert!(shown.contains(" last minute 0 bytes 0 pkt"), "{shown}");

    let second = n.apply_ok(&desired, T0.saturating_add_secs(10));
    assert!(second.is_noop(), "{:?}", second.changes);
    assert_eq!(second.netlink_messages, 0);
    assert_eq!(
        n.snapshot(&refs),
        before,
        "same classes, queues and program ids"
    );

    // `remove` takes it all away again.
    let removed = n
        .bed
        .in_node(|| n.bwcap.remove(&n.bed.node_if))
        .unwrap()
        .expect("remove");
    assert_eq!(removed.programs_detached, 4);
    let after = n.snapshot(&refs);
    assert!(after.classes.is_empty(), "{:?}", after.classes);
    assert!(after.programs.values().all(Vec::is_empty));
    assert_eq!(
        gso_max_segs(&n),
        Some(65535),
        "the veth's own limit is back"
    );
}

fn gso_max_segs(n: &common::Node) -> Option<u32> {
    n.bed
        .in_node(|| {
            let index = bwcap::link::index(&n.bed.node_if).unwrap();
            bwcap::tc::RouteSocket::open()
                .unwrap()
                .gso_max_segs(index)
                .unwrap()
        })
        .unwrap()
}

#[test]
fn removed_slivers_lose_their_class_and_come_back_with_their_counters() {
    let Some(n) = node("remove") else { return };
    let a = n.sliver("alpha", Rate::kbit(5), Rate::mbit(50));
    let b = n.sliver("beta", Rate::kbit(5), Rate::mbit(50));
    let both = n.desired(Some(Rate::mbit(100)), vec![a.clone(), b.clone()]);
    n.apply_ok(&both, T0);
    let receiver = n.bed.receiver(5001).unwrap();

    // alpha sends 3 MB; the next pass counts it.
    let pid = n.send_all(&a.cgroup, 1, 3_000_000, 5001);
    n.wait(pid);
    drop(receiver);
    n.apply_ok(&both, at(60));
    let counted = n.usage(at(60));
    let alpha = counted
        .slivers
        .iter()
        .find(|s| s.slice.as_str() == "alpha")
        .unwrap();
    assert!(
        alpha.total_bytes > 3_000_000,
        "headers included: {}",
        alpha.total_bytes
    );
    assert_eq!(alpha.budget_used, alpha.total_bytes);
    assert_eq!(alpha.last_minute.bytes, alpha.total_bytes);
    let (bytes, used, class) = (alpha.total_bytes, alpha.budget_used, alpha.class);

    // alpha goes: its class and program go, its record stays.
    let report = n.apply_ok(&n.desired(Some(Rate::mbit(100)), vec![b.clone()]), at(120));
    assert!(
        report.changes.iter().any(|c| c == "deleting class 1:10"),
        "{:?}",
        report.changes
    );
    assert_eq!(report.programs_detached, 1);
    let snap = n.snapshot(&[&a.cgroup]);
    assert!(!snap.classes.contains_key(&handle(1, 0x10)));
    assert!(snap.programs[&a.cgroup].is_empty());
    let gone = n.usage(at(120));
    assert!(gone
        .slivers
        .iter()
        .any(|s| s.slice.as_str() == "alpha" && s.removed_at == Some(at(120))));

    // Deleted and created again within the day: same class, same counters.
    n.bed.remove_sliver_cgroup("alpha").unwrap();
    let a = n.sliver("alpha", Rate::kbit(5), Rate::mbit(50));
    n.apply_ok(&both, at(3600));
    let back = n.usage(at(3600));
    let alpha = back
        .slivers
        .iter()
        .find(|s| s.slice.as_str() == "alpha")
        .unwrap();
    assert_eq!(
        (alpha.class, alpha.total_bytes, alpha.budget_used),
        (class, bytes, used)
    );
    assert_eq!(alpha.removed_at, None);
    assert_eq!(
        n.snapshot(&[&a.cgroup]).programs[&a.cgroup][0].1,
        "bwcap1_s_10"
    );

    // A day after a removal the record is forgotten and the class id free.
    n.apply_ok(&n.desired(Some(Rate::mbit(100)), vec![b.clone()]), at(7200));
    n.apply_ok(
        &n.desired(Some(Rate::mbit(100)), vec![b]),
        at(7200 + 86_400),
    );
    let forgotten = n.usage(at(7200 + 86_400));
    assert!(forgotten
        .slivers
        .iter()
        .all(|s| s.slice.as_str() != "alpha"));
}

#[test]
fn a_new_node_cap_changes_every_ceiling_in_one_pass() {
    let Some(n) = node("cap") else { return };
    let a = n.sliver("alpha", Rate::kbit(5), Rate::mbit(50));
    n.apply_ok(&n.desired(Some(Rate::mbit(100)), vec![a.clone()]), T0);
    let report = n.apply_ok(&n.desired(Some(Rate::mbit(20)), vec![a.clone()]), at(1));
    assert!(
        report
            .changes
            .iter()
            .all(|c| c.starts_with("changing class")),
        "{:?}",
        report.changes
    );
    let snap = n.snapshot(&[]);
    assert_eq!(snap.classes[&handle(1, CLASS_NODE_CAP)].1.ceil, 2_500_000);
    assert_eq!(snap.classes[&handle(1, 0x10)].1.ceil, 2_500_000);
    assert_eq!(snap.classes[&handle(1, CLASS_NODE)].1.ceil, 2_500_000);
    // No cap: the link's speed (a veth says 10 Gbit/s).
    let report = n.apply_ok(&n.desired(None, vec![a]), at(2));
    assert!(report.cap_is_line_rate);
    assert_eq!(report.node_cap, Rate::mbit(10_000));
    assert_eq!(n.snapshot(&[]).classes[&handle(1, 0x10)].1.ceil, 6_250_000);
}

#[test]
fn a_layout_damaged_by_hand_is_repaired_at_the_next_pass() {
    let Some(n) = node("repair") else { return };
    let a = n.sliver("alpha", Rate::kbit(5), Rate::mbit(10));
    let b = n.sliver("beta", Rate::kbit(5), Rate::mbit(10));
    let desired = n.desired(Some(Rate::mbit(100)), vec![a.clone(), b.clone()]);
    n.apply_ok(&desired, T0);
    let refs = [a.cgroup.as_path(), b.cgroup.as_path()];
    let good = n.snapshot(&refs);
    let tc = |args: &[&str]| {
        let out = n.bed.tc(args).unwrap();
        assert!(
            out.status.success(),
            "tc {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let dev = n.bed.node_if.as_str();
    // A class deleted, a leaf queue deleted, a ceiling changed, a stray class added.
    tc(&["class", "del", "dev", dev, "classid", "1:10"]);
    tc(&[
        "qdisc", "del", "dev", dev, "parent", "1:11", "handle", "11:",
    ]);
    tc(&[
        "class", "change", "dev", dev, "parent", "1:1", "classid", "1:3", "htb", "rate", "1mbit",
        "ceil", "7mbit",
    ]);
    tc(&[
        "class", "add", "dev", dev, "parent", "1:1", "classid", "1:99", "htb", "rate", "1mbit",
    ]);
    // and beta's classifier detached.
    bwcap::bpf::Cgroup::open(&b.cgroup)
        .unwrap()
        .detach_ours()
        .unwrap();
    assert_ne!(n.snapshot(&refs), good);
    let report = n.apply_ok(&desired, at(10));
    assert!(!report.is_noop());
    let repaired = n.snapshot(&refs);
    assert_eq!(repaired.classes, good.classes);
    assert_eq!(repaired.qdiscs, good.qdiscs);
    assert_eq!(repaired.programs[&b.cgroup][0].1, "bwcap1_s_11");

    // The whole root qdisc deleted.
    tc(&["qdisc", "del", "dev", dev, "root"]);
    n.apply_ok(&desired, at(20));
    let rebuilt = n.snapshot(&refs);
    assert_eq!(
        (rebuilt.classes, rebuilt.qdiscs),
        (good.classes, good.qdiscs)
    );
    assert!(n.apply_ok(&desired, at(30)).is_noop());
}

#[test]
fn bad_input_is_one_clear_error_and_changes_nothing() {
    let Some(n) = node("badinput") else { return };
    let a = n.sliver("alpha", Rate::kbit(5), Rate::mbit(10));
    let good = n.desired(Some(Rate::mbit(100)), vec![a.clone()]);
    n.apply_ok(&good, T0);
    let before = n.snapshot(&[&a.cgroup]);
    let error = |d: &bwcap::DesiredState| match n.apply(d, at(5)) {
        Ok(r) => panic!("accepted: {:?}", r.changes),
        Err(e) => floor::report::error_line(&e),
    };

    let mut zero_cap = good.clone();
    zero_cap.node_cap = Some(Rate::from_bits_per_sec(0));
    assert_eq!(
        error(&zero_cap),
        "node cap 0bit: 0bit is below 8bit (HTB needs a rate of at least 1 byte/s)"
    );
    let mut absurd = good.clone();
    absurd.slivers[0].rspec.net_max_rate = Rate::mbit(5_000_000);
    assert!(error(&absurd).contains("net_max_rate 5tbit is above 1tbit"));
    let mut unknown = good.clone();
    unknown.interface = "bwnope0".parse().unwrap();
    assert!(error(&unknown).starts_with("interface bwnope0: not found: "));
    let mut no_cgroup = good.clone();
    let mut missing = n.sliver("beta", Rate::kbit(5), Rate::mbit(10));
    missing.cgroup = n.bed.cgroup_root.join("slivers/nowhere");
    no_cgroup.slivers.push(missing);
    assert!(
        error(&no_cgroup).starts_with("sliver beta: "),
        "{}",
        error(&no_cgroup)
    );
    let mut not_cgroup = good.clone();
    not_cgroup.slivers[0].cgroup = std::env::temp_dir();
    assert!(error(&not_cgroup).contains("not a cgroup v2 directory"));
    assert_eq!(n.snapshot(&[&a.cgroup]), before, "nothing changed");

    // The command line says it in one line and exits non-zero.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.toml");
    std::fs::write(&state, "interface = \"bwn0\"\nnode_cap = \"0\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bwcap"))
        .arg("--state-dir")
        .arg(dir.path().join("s"))
        .arg("apply")
        .arg(&state)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("bwcap: error: ") && stderr.contains("state.toml: node cap 0bit"),
        "{stderr}"
    );
}

#[test]
fn a_process_in_a_sliver_cannot_change_traffic_control() {
    let Some(n) = node("tamper") else { return };
    let a = n.sliver("alpha", Rate::kbit(5), Rate::mbit(10));
    n.apply_ok(&n.desired(Some(Rate::mbit(100)), vec![a.clone()]), T0);
    let before = n.snapshot(&[&a.cgroup]);
    let result = n.run(
        "tamper",
        &a.cgroup,
        &["--interface".into(), n.bed.node_if.to_string()],
    );
    let eperm = i64::from(libc::EPERM);
    assert_eq!(result["delete_root_qdisc"], eperm, "{result}");
    assert_eq!(result["change_class"], eperm, "{result}");
    assert_eq!(result["bpf_load"], eperm, "{result}");
    assert_eq!(n.snapshot(&[&a.cgroup]), before);
}

#[test]
fn packets_reach_the_class_their_cgroup_and_kind_say() {
    let Some(n) = node("classify") else { return };
    let a = n.sliver("alpha", Rate::kbit(5), Rate::mbit(50));
    n.apply_ok(&n.desired(Some(Rate::mbit(100)), vec![a.clone()]), T0);
    let receiver = n.bed.receiver(5001).unwrap();
    let packets = |minor: u16| class_of(&n.usage(at(1)), minor).map_or(0, |c| c.stats.packets);
    let to = format!("{}:9", n.bed.peer_addr);

    // IPv4 options from a sliver: the IP-options class, not the sliver's.
    let before = (packets(CLASS_IP_OPTIONS), packets(0x10));
    let sent = n.run(
        "options",
        &a.cgroup,
        &["--to".into(), to.clone(), "--count".into(), "5".into()],
    );
    assert_eq!(sent["sent"], 5);
    assert_eq!(packets(CLASS_IP_OPTIONS) - before.0, 5);
    assert_eq!(packets(0x10), before.1);

    // TCP from the sliver: its class. From the node's own cgroup: the node class.
    let pid = n.send_all(&a.cgroup, 1, 500_000, 5001);
    n.wait(pid);
    assert!(packets(0x10) > before.1 + 300);
    let node_before = packets(CLASS_NODE);
    let pid = n.send_all(&n.bed.cgroup_root, 2, 500_000, 5001);
    n.wait(pid);
    assert!(packets(CLASS_NODE) > node_before + 300);
    // A sliver cgroup bwcap does not know yet: the default class.
    let stranger = n.bed.sliver_cgroup("stranger").unwrap();
    let default_before = packets(CLASS_DEFAULT);
    let pid = n.send_all(&stranger, 3, 500_000, 5001);
    n.wait(pid);
    assert!(packets(CLASS_DEFAULT) > default_before + 300);
    drop(receiver);
}
