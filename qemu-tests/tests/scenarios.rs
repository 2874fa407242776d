//! Breaking the chain on purpose: each test boots the
//! real CD in QEMU against a real boot server and checks both what the guest
//! printed and what the server recorded.

use std::path::Path;
use std::time::{Duration, Instant};

use qemu_tests::powercut::PowerCuts;
use qemu_tests::qemu::{Disk, Firmware};
use qemu_tests::world::{flip_byte, same_disk_contents, Boot, Follow, Lab, CD_SERVER_PORT};
use qemu_tests::ArtifactError;

fn bios(iso: &Path, disks: Vec<Disk>) -> Boot {
    Boot {
        firmware: Firmware::Bios,
        iso: iso.to_path_buf(),
        disks,
        rtc_base: None,
        extra_args: vec![],
    }
}

/// A blank disk and a pristine copy to compare it with afterwards.
fn blank_pair(lab: &Lab, name: &str, gib: u64) -> (Disk, Disk) {
    (
        lab.blank_disk(name, gib).unwrap(),
        lab.blank_disk(&format!("{name}-pristine"), gib).unwrap(),
    )
}

/// The served file of package `name`.
fn served_package(lab: &Lab, name: &str) -> std::path::PathBuf {
    let targets = lab.served_repo().unwrap().join("targets");
    std::fs::read_dir(&targets)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|f| f.to_string_lossy().contains(&format!(".{name}-")))
        })
        .unwrap_or_else(|| panic!("no {name} package in {}", targets.display()))
}

#[test]
fn a_tampered_package_is_refused_and_the_disk_left_alone() {
    let Some(lab) = Lab::for_test("tampered") else {
        return;
    };
    let node = lab.add_node("node-tampered", &[]).unwrap();
    let iso = lab.node_iso(&node).unwrap();
    let (disk, pristine) = blank_pair(&lab, "disk", 4);
    // One byte flipped after signing, on the server.
    let base = served_package(&lab, "base");
    let len = std::fs::metadata(&base).unwrap().len();
    flip_byte(&base, len / 2).unwrap();

    let mut qemu = lab.boot("boot", bios(&iso, vec![disk.clone()])).unwrap();
    let mut f = Follow::new(&mut qemu, &lab, node.id);
    let checkin = f.step_ok("checkin", 240).unwrap();
    assert!(checkin.contains("state=reinstall"), "{checkin}");
    let line = f.expect("@step reinstall/download fail", 300).unwrap();
    assert!(
        line.contains("package base") && line.contains("differs from the signed"),
        "{line}"
    );
    f.expect("@step debug start", 60).unwrap();
    assert!(
        !qemu.tail(10_000).contains("@step reinstall/partition"),
        "nothing may be partitioned after a bad download"
    );
    std::thread::sleep(Duration::from_secs(2));
    qemu.kill();

    let shown = lab.server.node(node.id).unwrap();
    assert_eq!(
        shown["report"]["last_error"]["step"], "reinstall/download",
        "{shown:#}"
    );
    let log = lab.server.node_log(node.id);
    assert!(
        log.contains("reinstall/download") && log.contains("differs from the signed"),
        "{log}"
    );
    assert!(
        same_disk_contents(&disk.path, &pristine.path).unwrap(),
        "the disk was written to"
    );
}

#[test]
fn older_signed_metadata_is_refused_after_newer() {
    let Some(lab) = Lab::for_test("rollback") else {
        return;
    };
    // Keep what the server serves now (targets v1) to serve it again later.
    let old = lab.dir.join("old-served");
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(lab.served_repo().unwrap())
        .arg(&old)
        .status()
        .unwrap();
    assert!(cp.success());
    lab.publish("2026.11.2", &["base"], None).unwrap();

    let node = lab.add_node("node-rollback", &[]).unwrap();
    let iso = lab.node_iso(&node).unwrap();
    let disk = lab.blank_disk("disk", 4).unwrap();
    let mut qemu = lab.boot("install", bios(&iso, vec![disk.clone()])).unwrap();
    let mut f = Follow::new(&mut qemu, &lab, node.id);
    let meta = f.step_ok("reinstall/metadata", 300).unwrap();
    assert!(
        meta.contains("targets=2") && meta.contains("base=2026.11.2"),
        "{meta}"
    );
    f.step_ok("supervisor/checkin", 400).unwrap();
    lab.server
        .set_state(node.id, config::api::BootState::Reinstall)
        .unwrap();
    f.expect("@step supervisor/shutdown ok Reboot", 120)
        .unwrap();
    drop(f);
    qemu.kill();
    let installed = lab.dir.join("installed.qcow2");
    std::fs::copy(&disk.path, &installed).unwrap();

    // The server (or a mirror, or a man in the middle with a stolen TLS
    // key) now serves the older, validly signed metadata.
    let link = lab.server.workdir.join("repo");
    let tmp = lab.server.workdir.join("repo.attack");
    std::os::unix::fs::symlink(&old, &tmp).unwrap();
    std::fs::rename(&tmp, &link).unwrap();

    let mut qemu = lab
        .boot("attacked", bios(&iso, vec![disk.clone()]))
        .unwrap();
    let mut f = Follow::new(&mut qemu, &lab, node.id);
    f.step_ok("checkin", 240).unwrap();
    let line = f.expect("@step reinstall/metadata fail", 120).unwrap();
    assert!(
        line.to_lowercase().contains("rollback") || line.contains("older"),
        "{line}"
    );
    f.expect("@step debug start", 60).unwrap();
    drop(f);
    qemu.kill();
    assert!(
        same_disk_contents(&disk.path, &installed).unwrap(),
        "a refused update must leave the installed disk as it was"
    );
}

#[test]
fn a_server_certified_by_another_ca_is_refused() {
    let Some(lab) = Lab::for_test("wrong-server") else {
        return;
    };
    let other = lab.extra_server("other-ca", false).unwrap();
    let config = lab.dir.join("impostor.toml");
    other.add_node("node-wrong-server", &config).unwrap();
    let node = qemu_tests::world::NodeReg {
        id: 1,
        config,
        hostname: "node-wrong-server".into(),
    };
    let iso = lab.node_iso(&node).unwrap();
    let (disk, pristine) = blank_pair(&lab, "disk", 4);
    let mut qemu = lab.boot("boot", bios(&iso, vec![disk.clone()])).unwrap();
    let mut f = Follow::new(&mut qemu, &lab, node.id);
    f.step_ok("network", 240).unwrap();
    let refused = f
        .expect("refused or unreachable: certificate not trusted", 120)
        .unwrap();
    assert!(refused.contains(&format!(":{}", other.port)), "{refused}");
    drop(f);
    qemu.kill();
    assert!(
        same_disk_contents(&disk.path, &pristine.path).unwrap(),
        "nothing may be written to the disk"
    );
}

#[test]
fn a_node_with_a_wrong_key_is_rejected_and_waits() {
    let Some(lab) = Lab::for_test("wrong-key") else {
        return;
    };
    let node = lab.add_node("node-wrong-key", &[]).unwrap();
    let iso = lab.node_iso(&node).unwrap();
    // The server's key changes after the CD was made.
    let newer = lab.dir.join("rekeyed.toml");
    lab.server.rekey(node.id, &newer).unwrap();
    let disk = lab.blank_disk("disk", 4).unwrap();
    let mut qemu = lab.boot("boot", bios(&iso, vec![disk])).unwrap();
    let mut f = Follow::new(&mut qemu, &lab, node.id);
    let line = f.expect("@step checkin fail", 300).unwrap();
    assert!(
        line.contains("bad_signature") && line.contains("does not accept this node's identity"),
        "{line}"
    );
    f.expect("@step debug start", 60).unwrap();
    drop(f);
    qemu.kill();
    assert!(
        lab.server.auth_failures(node.id).unwrap() >= 1,
        "the server counts the failed authentication"
    );
}

#[test]
fn a_small_disk_is_refused_and_a_usb_stick_never_touched() {
    let Some(lab) = Lab::for_test("small-disk") else {
        return;
    };
    let node = lab.add_node("node-small", &[]).unwrap();
    let iso = lab.node_iso(&node).unwrap();
    let (disk, pristine) = blank_pair(&lab, "small", 1);
    let stick = lab
        .fat_stick(
            "stick",
            "DATA",
            &[("holiday-photos.txt", b"not for installing onto")],
        )
        .unwrap();
    let stick_copy = lab.dir.join("stick-pristine.img");
    std::fs::copy(&stick.path, &stick_copy).unwrap();
    let mut qemu = lab
        .boot("boot", bios(&iso, vec![disk.clone(), stick.clone()]))
        .unwrap();
    let mut f = Follow::new(&mut qemu, &lab, node.id);
    f.step_ok("checkin", 300).unwrap();
    let line = f.expect("@step reinstall/preflight fail", 120).unwrap();
    assert!(
        line.contains("vda is too small") && line.contains("is removable media"),
        "{line}"
    );
    f.expect("@step debug start", 60).unwrap();
    drop(f);
    qemu.kill();
    assert!(
        same_disk_contents(&disk.path, &pristine.path).unwrap(),
        "the small disk was written to"
    );
    assert!(
        same_disk_contents(&stick.path, &stick_copy).unwrap(),
        "the USB stick was written to"
    );
    let shown = lab.server.node(node.id).unwrap();
    assert_eq!(
        shown["report"]["last_error"]["step"], "reinstall/preflight",
        "{shown:#}"
    );
}

#[test]
fn static_network_from_a_plnode_txt_stick_installs_under_uefi() {
    let lab = match Lab::new_on_cd_port("plnode-stick") {
        Ok(l) => l,
        Err(ArtifactError::Unavailable(why)) => return eprintln!("SKIP: {why}"),
        Err(e) => panic!("{e}"),
    };
    let txt = lab.dir.join("plnode.txt");
    let mut spec = bootserver::admin::NewNode::new(
        qemu_tests::world::SITE.parse().unwrap(),
        "node-static",
        None,
    )
    .unwrap();
    spec.network.addressing = config::api::WireNetwork::Static {
        address: "10.0.2.15".parse().unwrap(),
        prefix: 24,
        gateway: Some("10.0.2.2".parse().unwrap()),
        dns: vec!["10.0.2.3".parse().unwrap()],
    };
    lab.server
        .add_node_with(
            &spec,
            &bootserver::admin::ConfigUrls::FromBootCd,
            &txt,
            bootserver::admin::NodeConfigFormat::PlnodeTxt,
        )
        .unwrap();
    let text = std::fs::read(&txt).unwrap();
    assert!(String::from_utf8_lossy(&text).contains("IP_METHOD=\"static\""));
    let stick = lab
        .fat_stick("stick", "PLNODE", &[("plnode.txt", &text)])
        .unwrap();
    let disk = lab.blank_disk("disk", 4).unwrap();
    // The base CD, not customised: the config comes from the stick.
    let boot = Boot {
        firmware: Firmware::Uefi,
        iso: lab.shared.iso.clone(),
        disks: vec![disk, stick],
        rtc_base: None,
        extra_args: vec![],
    };
    let mut qemu = lab.boot("boot", boot).unwrap();
    let mut f = Follow::new(&mut qemu, &lab, 1);
    let config = f.step_ok("config", 300).unwrap();
    assert!(
        config.contains("source=usb") && config.contains("host=node-static"),
        "{config}"
    );
    let net = f.step_ok("network", 120).unwrap();
    assert!(
        net.contains("ip=10.0.2.15/24") && net.contains("via=static"),
        "{net}"
    );
    let tls = f.step_ok("tls", 120).unwrap();
    assert!(tls.contains(&format!(":{CD_SERVER_PORT}")), "{tls}");
    f.step_ok("reinstall/preflight", 120).unwrap();
    f.step_ok("reinstall/commit", 600).unwrap();
    f.step_ok("boot/handover", 120).unwrap();
    f.step_ok("supervisor/checkin", 180).unwrap();
}

#[test]
fn a_clock_years_off_is_corrected_and_the_node_installs() {
    let Some(lab) = Lab::for_test("wrong-rtc") else {
        return;
    };
    let node = lab.add_node("node-rtc", &[]).unwrap();
    let iso = lab.node_iso(&node).unwrap();
    let disk = lab.blank_disk("disk", 4).unwrap();
    let boot = Boot {
        rtc_base: Some("2015-03-01T00:00:00".into()),
        ..bios(&iso, vec![disk])
    };
    let mut qemu = lab.boot("boot", boot).unwrap();
    let mut f = Follow::new(&mut qemu, &lab, node.id);
    let floor = f.step_ok("clock", 300).unwrap();
    assert!(
        floor.contains("clock set from 2015-") && floor.contains("(CD build time)"),
        "{floor}"
    );
    // A clock days behind is refused as stale and set from the signed
    // error reply; one a few seconds off from the check-in reply.
    let from_server = f
        .expect("@step clock ok clock set from .* \\(server", 120)
        .unwrap();
    assert!(from_server.contains("to 20"), "{from_server}");
    f.step_ok("tls", 120).unwrap();
    // Signed metadata has an expiry: this only passes with a right clock.
    f.step_ok("reinstall/metadata", 120).unwrap();
    f.step_ok("reinstall/commit", 600).unwrap();
    // The install report goes out after the commit; the hand-over waits for it.
    f.step_ok("boot/handover", 120).unwrap();
    drop(f);
    qemu.kill();
    let shown = lab.server.node(node.id).unwrap();
    assert_eq!(
        shown["boot_state"], "boot",
        "the install completed: {shown:#}"
    );
}

#[test]
fn power_cuts_during_an_install_always_end_in_a_working_os() {
    let Some(lab) = Lab::for_test("power-cut") else {
        return;
    };
    let mut cuts = PowerCuts::from_env("PLNODE_POWER_CUT_TRIALS", 5);
    let (trials, seed) = (cuts.trials, cuts.seed);
    let node = lab.add_node("node-power", &[]).unwrap();
    let iso = lab.node_iso(&node).unwrap();
    let mut unbootable = 0;
    for trial in 1..=trials {
        lab.server
            .set_state(node.id, config::api::BootState::Reinstall)
            .unwrap();
        let disk = lab.blank_disk(&format!("disk{trial}"), 4).unwrap();
        let mut qemu = lab
            .boot(&format!("trial{trial}-cut"), bios(&iso, vec![disk.clone()]))
            .unwrap();
        let mut f = Follow::new(&mut qemu, &lab, node.id);
        // The window where the disk is written: from partitioning to the commit.
        f.expect("@step reinstall/partition start", 400).unwrap();
        let cut_after = cuts.next_within(Duration::from_secs(9));
        std::thread::sleep(cut_after);
        drop(f);
        let tail = qemu.tail(3);
        qemu.kill();
        eprintln!(
            "trial {trial}: power cut {:.1} s into the install; last lines: {}",
            cut_after.as_secs_f64(),
            tail.replace('\n', " | ")
        );

        let mut qemu = lab
            .boot(&format!("trial{trial}-after"), bios(&iso, vec![disk]))
            .unwrap();
        let mut f = Follow::new(&mut qemu, &lab, node.id);
        let started = Instant::now();
        match f.step_ok("supervisor/checkin", 600) {
            Ok(_) => eprintln!(
                "trial {trial}: the next boot ended in a working OS after {:.0} s",
                started.elapsed().as_secs_f64()
            ),
            Err(e) => {
                unbootable += 1;
                eprintln!("trial {trial}: NOT BOOTABLE: {e}");
            }
        }
    }
    assert_eq!(
        unbootable, 0,
        "{unbootable} of {trials} power cuts left a node that did not come up (seed {seed})"
    );
}
