//! The node manager on an installed node, one boot and one reboot: the
//! boot server assigns two slices to the node, `nodemgr serve` makes their
//! slivers and runs their initscripts; an ssh login as a slice lands inside
//! its sliver and sees only its own processes; a fork bomb in a sliver
//! stops at pids.max while the node goes on; a slice removed on the server
//! goes at the next poll; after a reboot the slivers are back. It also
//! measures, for the note, the time from `slice add-node` to a running
//! sliver and to a successful login.
//!
//! Changes after boot reach the node through the boot server's
//! `slices_changed` check-in hint (the lab's nodes check in every 5 s): the
//! supervisor wakes `nodemgr serve`, which polls at once instead of at its
//! 10-minute interval.

use std::time::{Duration, Instant};

use config::rspec::Rspec;
use config::units::{ByteSize, Rate};
use qemu_tests::qemu::Firmware;
use qemu_tests::ssh::{staff_key, Ssh};
use qemu_tests::world::{free_port, Boot, Follow, Lab};
use qemu_tests::ArtifactError;

const INITSCRIPT: &str = "#!/bin/sh\necho \"initscript of $(ls /home) ran\" > /etc/hello\n";

fn lab(name: &str, staff_keys: &[String]) -> Option<Lab> {
    match Lab::with_staff_keys(name, staff_keys) {
        Ok(l) => Some(l),
        Err(ArtifactError::Unavailable(why)) => {
            eprintln!("SKIP: {why}");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

fn rspec(pids: u32) -> Rspec {
    Rspec {
        pids: Some(pids),
        disk: Some(ByteSize::mib(16)),
        net_max_rate: Rate::mbit(8),
        ..Rspec::default()
    }
}

/// Waits (bounded) until `check` holds on the node; the time it took.
fn until(what: &str, secs: u64, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        if check() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("{what}: not within {secs} s");
}

fn running(staff: &Ssh, slice: &str) -> bool {
    staff
        .run(&format!(
            "nodemgr list --json | grep -A3 '\"{slice}\"' | grep -q '\"pid\": [0-9]'"
        ))
        .is_ok_and(|o| o.status.success())
}

#[test]
fn slices_become_slivers_users_log_in_and_slivers_survive_a_reboot() {
    let (key, public) = staff_key().unwrap();
    let Some(lab) = lab("node-services", std::slice::from_ref(&public)) else {
        return;
    };
    let node = lab.add_node("node1", &[]).unwrap();
    // The site's cap for the node, which reaches it in the slivers answer.
    lab.server
        .admin()
        .unwrap()
        .set_bwcap(
            &bootserver::admin::NodeRef::Id(config::node::NodeId(node.id)),
            Some(Rate::mbit(20)),
        )
        .unwrap();
    // Two slices before the node exists: made at nodemgr's first poll.
    for slice in ["pl_alpha", "pl_beta"] {
        lab.server
            .assign_slice(
                slice,
                rspec(64),
                Some(INITSCRIPT),
                std::slice::from_ref(&public),
                node.id,
            )
            .unwrap();
    }
    let iso = lab.node_iso(&node).unwrap();
    let disk = lab.blank_disk("disk", 4).unwrap();
    let port = free_port().unwrap();
    let staff = Ssh::root(&key, port);
    let as_slice = |slice: &str| Ssh {
        user: slice.into(),
        ..staff.clone()
    };
    let boot = || Boot {
        firmware: Firmware::Bios,
        iso: iso.clone(),
        disks: vec![disk.clone()],
        rtc_base: None,
        extra_args: vec![],
    };

    let mut qemu = lab.boot_forwarding("first", boot(), &[(port, 22)]).unwrap();
    let mut f = Follow::new(&mut qemu, &lab, node.id);
    f.step_ok("boot/handover", 1500).unwrap();
    f.step_ok("service/nodemgr", 180).unwrap();

    // Both slivers run, their initscripts ran.
    for slice in ["pl_alpha", "pl_beta"] {
        until(&format!("sliver {slice} running"), 180, || {
            running(&staff, slice)
        });
        let ran = || {
            staff
                .run(&format!("nodemgr enter {slice} -- cat /etc/hello"))
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(slice))
        };
        let start = Instant::now();
        while !ran() {
            // nodemgr tries a failed helper again after 90 s + 5 s.
            if start.elapsed() > Duration::from_secs(240) {
                // Where the node's processes are, for the report.
                let dump = staff
                    .run(
                        "ps -o pid,ppid,stat,args; for p in /proc/[0-9]*; do \
                         echo \"== $p $(cat $p/cmdline | tr '\\0' ' ') wchan=$(cat $p/wchan)\"; \
                         cat $p/stack 2>/dev/null; done; cat /sys/fs/cgroup/slivers/*/cgroup.procs",
                    )
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                panic!("initscript of {slice}: not within 240 s\n{dump}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    // The caps: the node's from the server, each sliver's from its rspec,
    // programmed by nodemgr through bwcap and shown by `bwcap show`.
    let mut shown = String::new();
    until("bwcap shows both slivers under the node cap", 120, || {
        shown = staff.run_ok("bwcap show").unwrap_or_default();
        shown.contains("node cap 20mbit")
            && shown.contains("[slice pl_alpha]")
            && shown.contains("[slice pl_beta]")
    });
    assert!(shown.contains("8mbit"), "the rspec's ceiling: {shown}");

    // The rspec's disk quota holds against the sliver's own root.
    let quota = as_slice("pl_alpha")
        .run_ok("dd if=/dev/zero of=$HOME/fill bs=1M count=64 2>&1; rm -f $HOME/fill; echo end")
        .unwrap();
    assert!(quota.contains("Disk quota exceeded"), "{quota}");

    // The sensors: a sliver reads /slivers and sees both; /metrics passes promtool.
    qemu_tests::checks::sensors(&staff, &["pl_alpha", "pl_beta"]).unwrap();

    // An ssh login as the slice lands inside, as the slice's user, and
    // sees its sliver's processes only.
    let inside = as_slice("pl_alpha")
        .run_ok("id -un; cat /etc/hello; ps -o pid,comm | wc -l; ps -o comm")
        .unwrap();
    let lines: Vec<&str> = inside.lines().collect();
    assert_eq!(lines[0], "pl_alpha", "{inside}");
    assert!(lines[1].contains("pl_alpha"), "{inside}");
    let count: usize = lines[2].trim().parse().unwrap();
    assert!(count <= 8, "the sliver shows {count} lines of ps: {inside}");
    // The node runs dropbear, the supervisor, the updater, nodemgr serve:
    // none of them is visible (the sliver's PID 1 is the nodemgr binary).
    let commands = &lines[3..];
    assert!(
        !commands
            .iter()
            .any(|c| c.contains("dropbear") || c.contains("init")),
        "{inside}"
    );

    // A fork bomb stops at pids.max (64); the node goes on.
    // (The shell itself runs out of processes: how the session ends does
    // not matter, what the cgroup allowed does.)
    let _ = as_slice("pl_beta")
        .run("i=0; while [ $i -lt 200 ]; do sleep 300 >/dev/null 2>&1 & i=$((i+1)); done 2>/dev/null; echo done")
        .unwrap();
    let pids = staff
        .run_ok("cat /sys/fs/cgroup/slivers/pl_beta/pids.current /sys/fs/cgroup/slivers/pl_beta/pids.max")
        .unwrap();
    let mut v = pids.split_whitespace();
    let (current, max): (u32, u32) = (
        v.next().unwrap().parse().unwrap(),
        v.next().unwrap().parse().unwrap(),
    );
    assert_eq!(max, 64, "{pids}");
    assert!(current <= 64 && current > 32, "{pids}");
    assert!(staff.run_ok("nodemgr list").unwrap().contains("pl_alpha"));
    f.step_ok("supervisor/checkin", 400).unwrap();

    // The figures: a third slice, from add-node to a running sliver and
    // to a login (through the hint).
    let added = Instant::now();
    lab.server
        .assign_slice(
            "pl_gamma",
            rspec(64),
            None,
            std::slice::from_ref(&public),
            node.id,
        )
        .unwrap();
    until("sliver pl_gamma running", 180, || {
        running(&staff, "pl_gamma")
    });
    let to_running = added.elapsed();
    until("a login as pl_gamma", 180, || {
        as_slice("pl_gamma")
            .run("id -un")
            .is_ok_and(|o| o.status.success())
    });
    let to_login = added.elapsed();
    eprintln!(
        "FIGURE: slice add-node to a running sliver {:.1} s, to a successful login {:.1} s (QEMU, TCG)",
        to_running.as_secs_f64(),
        to_login.as_secs_f64()
    );

    // A slice removed on the server goes at the next poll.
    let admin = lab.server.admin().unwrap();
    admin
        .remove_nodes_from_slice(
            &"pl_gamma".parse().unwrap(),
            &[bootserver::admin::NodeRef::Id(config::node::NodeId(
                node.id,
            ))],
        )
        .unwrap();
    until("pl_gamma gone", 180, || {
        staff.run("nodemgr list").is_ok_and(|o| {
            o.status.success() && !String::from_utf8_lossy(&o.stdout).contains("pl_gamma")
        })
    });
    assert!(!as_slice("pl_gamma").run("true").unwrap().status.success());

    // After a reboot the slivers are back.
    lab.server.request_reboot(node.id).unwrap();
    f.expect("@step supervisor/shutdown ok", 300).unwrap();
    assert!(f.qemu.wait_exit(Duration::from_secs(120)));
    drop(f);
    let mut qemu = lab
        .boot_forwarding("second", boot(), &[(port, 22)])
        .unwrap();
    let mut f = Follow::new(&mut qemu, &lab, node.id);
    f.step_ok("service/nodemgr", 900).unwrap();
    for slice in ["pl_alpha", "pl_beta"] {
        until(&format!("sliver {slice} back"), 180, || {
            running(&staff, slice)
        });
    }
    assert_eq!(
        as_slice("pl_alpha")
            .run_ok("cat /etc/hello")
            .unwrap()
            .trim(),
        "initscript of pl_alpha ran"
    );
    f.qemu.kill();
}
