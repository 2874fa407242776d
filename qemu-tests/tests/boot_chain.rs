//! The boot chain end to end: a blank disk, state `reinstall`, through the
//! install to the hand-over into the installed system, then a second boot
//! from that disk in state `boot`. Each step is read from the guest's
//! serial console; the server's records are checked too.

use qemu_tests::qemu::Firmware;
use qemu_tests::ssh::{staff_key, Ssh};
use qemu_tests::world::{free_port, Boot, Follow, Lab, OS_VERSION};
use qemu_tests::ArtifactError;

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

#[test]
fn fresh_install_hands_over_then_boots_from_disk() {
    let (key, public) = staff_key().unwrap();
    let Some(lab) = lab("fresh-install", &[public]) else {
        return;
    };
    let ssh = Ssh::root(&key, free_port().unwrap());
    let node = lab.add_node("node1", &[]).unwrap();
    // A slice on the server, assigned to the node before it exists there.
    lab.server
        .assign_slice(
            "pl_chain",
            config::rspec::Rspec::default(),
            None,
            &[],
            node.id,
        )
        .unwrap();
    let iso = lab.node_iso(&node).unwrap();
    let disk = lab.blank_disk("disk", 4).unwrap();

    let mut qemu = lab
        .boot_forwarding(
            "first",
            Boot {
                firmware: Firmware::Bios,
                iso: iso.clone(),
                disks: vec![disk.clone()],
                rtc_base: None,
                extra_args: vec![],
            },
            &[(ssh.port, 22)],
        )
        .unwrap();
    let mut f = Follow::new(&mut qemu, &lab, node.id);
    f.expect("@banner plnode-init .* cd=", 120).unwrap();
    let config = f.step_ok("config", 60).unwrap();
    assert!(
        config.contains(&format!("source=cd node={}", node.id)),
        "{config}"
    );
    f.step_ok("network", 90).unwrap();
    f.step_ok("tls", 90).unwrap();
    let checkin = f.step_ok("checkin", 60).unwrap();
    assert!(checkin.contains("state=reinstall"), "{checkin}");
    for (step, secs) in [
        ("reinstall/preflight", 60),
        ("reinstall/metadata", 120),
        ("reinstall/download", 300),
        ("reinstall/partition", 60),
        ("reinstall/mkfs", 120),
        ("reinstall/install", 600),
        ("reinstall/commit", 60),
    ] {
        f.step_ok(step, secs).unwrap();
    }
    f.step_ok("boot/verify", 120).unwrap();
    let handover = f.step_ok("boot/handover", 60).unwrap();
    assert!(handover.contains(&format!("os={OS_VERSION}")), "{handover}");
    let first_handover = f.times.last().map(|t| t.1).unwrap_or_default();
    f.step_ok("supervisor/start", 60).unwrap();
    let checkin = f.step_ok("supervisor/checkin", 120).unwrap();
    assert!(
        checkin.contains("state=boot"),
        "the server moved the node to boot after the install: {checkin}"
    );

    let shown = lab.server.node(node.id).unwrap();
    assert_eq!(shown["boot_state"], "boot", "{shown:#}");
    assert_eq!(shown["report"]["run_level"], "boot", "{shown:#}");
    assert_eq!(shown["report"]["os_version"], OS_VERSION, "{shown:#}");
    // The node manager made the slice's sliver at its first poll.
    let start = std::time::Instant::now();
    let mut list = String::new();
    while !list.contains("\"pid\": ") {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(240),
            "the sliver pl_chain does not run on the node:\n{list}"
        );
        std::thread::sleep(std::time::Duration::from_secs(1));
        list = ssh
            .run("nodemgr list --json")
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
    }
    assert!(list.contains("\"pl_chain\""), "{list}");

    // The running root is the deployment, read-only: a stray write fails
    // with EROFS; what the system writes goes to RAM or the partition.
    let probe = ssh
        .run_ok(
            "for f in /probe /etc/probe /usr/probe; do touch $f 2>&1 || echo \"refused $f\"; done; \
             touch /var/log/probe /root/probe /tmp/probe /run/probe && echo writable-places-ok; \
             readlink /etc/resolv.conf; grep -c nameserver /etc/resolv.conf; cat /proc/self/cgroup",
        )
        .unwrap();
    for f in ["/probe", "/etc/probe", "/usr/probe"] {
        assert!(probe.contains(&format!("refused {f}")), "{probe}");
    }
    assert!(probe.contains("Read-only file system"), "{probe}");
    assert!(probe.contains("writable-places-ok"), "{probe}");
    assert!(probe.contains("/run/plnode/resolv.conf"), "{probe}");
    // A login runs under sshd, in that service's cgroup below system/.
    assert!(probe.contains("0::/system/sshd"), "{probe}");
    // A day's worth of activity in brief: logins, an updater run, logs.
    for round in 0..4 {
        ssh.run_ok(&format!(
            "echo login {round} >> /var/log/activity; ls -R /etc >/dev/null"
        ))
        .unwrap();
    }
    let update = ssh.run_ok("/sbin/init update 2>&1; echo exit=$?").unwrap();
    assert!(update.contains("exit=0"), "{update}");
    ssh.run_ok("/sbin/init check-next-boot").unwrap();

    // An orderly reboot, asked for through the server.
    lab.server.request_reboot(node.id).unwrap();
    f.expect("@step supervisor/shutdown ok Reboot", 120)
        .unwrap();
    drop(f);
    let log = qemu.tail(10_000);
    assert!(
        log.contains("stopping sshd") && !log.contains("did not stop within"),
        "every service stops on SIGTERM:\n{log}"
    );
    qemu.kill();

    let mut qemu = lab
        .boot(
            "second",
            Boot {
                firmware: Firmware::Bios,
                iso,
                disks: vec![disk],
                rtc_base: None,
                extra_args: vec![],
            },
        )
        .unwrap();
    let mut f = Follow::new(&mut qemu, &lab, node.id);
    let checkin = f.step_ok("checkin", 240).unwrap();
    assert!(checkin.contains("state=boot"), "{checkin}");
    let verify = f.step_ok("boot/verify", 180).unwrap();
    assert!(verify.contains(&format!("os={OS_VERSION}")), "{verify}");
    assert!(
        verify.contains("check=full"),
        "the full check asked for on the node ran and passed: {verify}"
    );
    f.step_ok("boot/handover", 60).unwrap();
    let second_handover = f.times.last().map(|t| t.1).unwrap_or_default();
    f.step_ok("supervisor/checkin", 120).unwrap();
    let log = qemu.tail(10_000);
    assert!(
        !log.contains("reinstall/"),
        "the second boot must not reinstall"
    );
    assert!(second_handover < first_handover, "booting from disk ({second_handover:.0} s) should be faster than installing ({first_handover:.0} s)");
    eprintln!("hand-over after install: {first_handover:.1} s; from disk: {second_handover:.1} s");
}
