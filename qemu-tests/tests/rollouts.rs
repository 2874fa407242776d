//! A rollout in waves on two installed nodes, booted at the same time: the
//! node in the first wave takes the new release (from an nginx mirror with
//! a CA of its own, while the boot server serves no packages), the node in
//! the second wave holds until its wave opens and then takes it too; an
//! abort brings the first node back to its previous deployment. Each step
//! is read from the guests' serial consoles, the boot server's records and
//! the mirror's access log.

use std::path::Path;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::{Duration, Instant};

use bootserver::admin::{ConfigUrls, NewNode, NodeConfigFormat, RolloutSpec};
use bootserver::rollout::{FailureLimit, WavePlan};
use config::node::NodeId;
use config::units::Period;
use config::Timestamp;
use qemu_tests::mirror::Mirror;
use qemu_tests::qemu::{Disk, Firmware, Qemu};
use qemu_tests::world::{quick_update_services, Boot, Follow, Lab, NodeReg, SITE};
use qemu_tests::ArtifactError;

/// The release both nodes install.
const FIRST: &str = "2026.11.2";
/// The release rolled out.
const NEW: &str = "2026.11.3";
/// Time between the two waves.
const WAVE_INTERVAL: u64 = 60;

fn bios(iso: &Path, disk: &Disk) -> Boot {
    Boot {
        firmware: Firmware::Bios,
        iso: iso.to_path_buf(),
        disks: vec![disk.clone()],
        rtc_base: None,
        extra_args: vec![],
    }
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
        .trim_end_matches('@')
}

/// Waits for the guest's orderly reboot and QEMU's exit (`-no-reboot`).
fn wait_for_reboot(f: &mut Follow, secs: u64) {
    f.expect("@step supervisor/shutdown ok Reboot", secs)
        .unwrap();
    assert!(
        f.qemu.wait_exit(Duration::from_secs(60)),
        "QEMU did not exit after the guest rebooted"
    );
}

/// What a node thread tells the test.
#[derive(Debug)]
enum Event {
    /// Installed and running `deployment`, its updater pinned.
    Installed { node: u64, deployment: String },
    /// The first-wave node runs the new release, marked good.
    Good,
    /// The second-wave node held, then staged the new release at this instant.
    Staged(Instant),
    /// The first-wave node is back on this deployment.
    Back(String),
    /// A node thread failed (its panic says why).
    Failed,
}

/// Tells the test when a node thread fails, so it stops waiting.
struct FailureGuard<'a>(&'a Sender<Event>);

impl Drop for FailureGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.0.send(Event::Failed);
        }
    }
}

/// Registers a node with a fixed id (its wave depends on it).
fn add_node(lab: &Lab, hostname: &str, id: u64) -> NodeReg {
    let config = lab.dir.join(format!("{hostname}.toml"));
    let mut spec = NewNode::new(SITE.parse().unwrap(), hostname, None).unwrap();
    spec.id = Some(NodeId(id));
    let id = lab
        .server
        .add_node_with(
            &spec,
            &ConfigUrls::FromServer,
            &config,
            NodeConfigFormat::NodeToml,
        )
        .unwrap();
    NodeReg {
        id,
        config,
        hostname: hostname.to_string(),
    }
}

/// Installs the node and reports its deployment.
fn install(lab: &Lab, node: &NodeReg, qemu: &mut Qemu, events: &Sender<Event>) {
    let mut f = Follow::new(qemu, lab, node.id);
    let verify = f.step_ok("boot/verify", 900).unwrap();
    assert!(verify.contains(&format!("os={FIRST}")), "{verify}");
    f.step_ok("supervisor/healthy", 240).unwrap();
    f.expect("@step update/check ok up to date", 120).unwrap();
    events
        .send(Event::Installed {
            node: node.id,
            deployment: field(&verify, "deployment").to_string(),
        })
        .unwrap();
}

/// The first-wave node: takes the release, then goes back after the abort.
fn first_wave(
    lab: &Lab,
    node: &NodeReg,
    iso: &Path,
    disk: &Disk,
    go: &Receiver<()>,
    events: &Sender<Event>,
) {
    let _guard = FailureGuard(events);
    let boot = |name: &str| -> Qemu { lab.boot(name, bios(iso, disk)).unwrap() };
    let mut qemu = boot("a-install");
    install(lab, node, &mut qemu, events);
    go.recv().unwrap();
    let mut f = Follow::new(&mut qemu, lab, node.id);
    let staged = f.step_ok("update/stage", 300).unwrap();
    assert!(staged.contains(&format!("(os {NEW};")), "{staged}");
    wait_for_reboot(&mut f, 120);
    drop(f);

    let mut qemu = boot("a-new");
    let mut f = Follow::new(&mut qemu, lab, node.id);
    let verify = f.step_ok("boot/verify", 300).unwrap();
    assert!(verify.contains(&format!("os={NEW}")), "{verify}");
    let previous = field(&verify, "previous").to_string();
    f.step_ok("supervisor/trial", 240).unwrap();
    events.send(Event::Good).unwrap();
    go.recv().unwrap();
    // The abort: told at the next check-in, the updater stages the
    // previous deployment and reboots through the CD.
    let back = f
        .expect(r"@step update/check ok the rollout of .* was aborted", 180)
        .unwrap();
    assert!(back.contains(&previous), "{back}");
    wait_for_reboot(&mut f, 120);
    drop(f);

    let mut qemu = boot("a-back");
    let mut f = Follow::new(&mut qemu, lab, node.id);
    let verify = f.step_ok("boot/verify", 300).unwrap();
    assert!(verify.contains(&format!("os={FIRST}")), "{verify}");
    f.step_ok("supervisor/trial", 240).unwrap();
    let held = f.expect(r"@step update/check ok held: ", 120).unwrap();
    assert!(held.contains("aborted"), "{held}");
    events
        .send(Event::Back(field(&verify, "deployment").to_string()))
        .unwrap();
}

/// The second-wave node: holds while its wave is closed, then takes it.
fn second_wave(
    lab: &Lab,
    node: &NodeReg,
    iso: &Path,
    disk: &Disk,
    go: &Receiver<()>,
    events: &Sender<Event>,
) {
    let _guard = FailureGuard(events);
    let mut qemu = lab.boot("b-install", bios(iso, disk)).unwrap();
    install(lab, node, &mut qemu, events);
    go.recv().unwrap();
    let mut f = Follow::new(&mut qemu, lab, node.id);
    let held = f.expect(r"@step update/check ok held: ", 120).unwrap();
    assert!(held.contains("wave 2 of 2 opens at"), "{held}");
    let staged = f.step_ok("update/stage", WAVE_INTERVAL + 240).unwrap();
    let at = Instant::now();
    assert!(staged.contains(&format!("(os {NEW};")), "{staged}");
    events.send(Event::Staged(at)).unwrap();
}

#[test]
fn a_rollout_in_two_waves_then_an_abort() {
    let Some(lab) = Lab::for_test("rollouts") else {
        return;
    };
    let plan: WavePlan = "50%,100%".parse().unwrap();
    let id_in = |wave: usize| {
        (100..10_000u64)
            .find(|id| plan.wave_of(NodeId(*id)) == wave)
            .unwrap()
    };
    lab.publish(FIRST, &["base"], Some(&quick_update_services("")))
        .unwrap();
    let admin = lab.server.admin().unwrap();
    let rollout = |version: &str, waves: WavePlan, interval: u64| {
        admin
            .start_rollout(&RolloutSpec {
                release: version.to_string(),
                waves,
                interval: Period::from_secs(interval),
                max_failures: FailureLimit::default(),
            })
            .unwrap()
    };
    // Everyone on FIRST: installed nodes take nothing else until told.
    rollout(FIRST, WavePlan::one_wave(), 0);
    let a = add_node(&lab, "node-wave1", id_in(0));
    let b = add_node(&lab, "node-wave2", id_in(1));
    let (iso_a, iso_b) = (lab.node_iso(&a).unwrap(), lab.node_iso(&b).unwrap());
    let (disk_a, disk_b) = (
        lab.blank_disk("disk-a", 4).unwrap(),
        lab.blank_disk("disk-b", 4).unwrap(),
    );
    let mirror = match Mirror::start(&lab.repo_copy().unwrap(), &lab.dir.join("mirror")) {
        Ok(m) => m,
        Err(ArtifactError::Unavailable(why)) => {
            eprintln!("SKIP: {why}");
            return;
        }
        Err(e) => panic!("{e}"),
    };

    let (events_tx, events) = channel();
    let (go_a_tx, go_a) = channel();
    let (go_b_tx, go_b) = channel();
    let started = Instant::now();
    std::thread::scope(|scope| {
        let (ev_a, ev_b) = (events_tx.clone(), events_tx.clone());
        let (lab, a, b) = (&lab, &a, &b);
        let (iso_a, iso_b, disk_a, disk_b) = (&iso_a, &iso_b, &disk_a, &disk_b);
        scope.spawn(move || first_wave(lab, a, iso_a, disk_a, &go_a, &ev_a));
        scope.spawn(move || second_wave(lab, b, iso_b, disk_b, &go_b, &ev_b));
        drop(events_tx);
        let next = |what: &str| -> Event {
            match events.recv_timeout(Duration::from_secs(1500)) {
                Ok(Event::Failed) | Err(_) => {
                    panic!("no {what}: a node thread failed (see above)")
                }
                Ok(event) => event,
            }
        };

        // While both install (from the boot server, which still serves
        // FIRST), the new release is built and signed.
        let signed = lab
            .sign_release(NEW, &["base"], Some(&quick_update_services("")), None)
            .unwrap();
        let mut first = String::new();
        for _ in 0..2 {
            match next("install") {
                Event::Installed { node, deployment } if node == a.id => first = deployment,
                Event::Installed { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        eprintln!(
            "[{:7.1}s] both nodes installed on {first}",
            started.elapsed().as_secs_f64()
        );

        // From now on packages come from the mirror only.
        let ca = lab.dir.join("mirror-ca.pem");
        std::fs::write(&ca, &mirror.ca_pem).unwrap();
        let mirror_url = mirror.guest_url();
        lab.server
            .restart(|text| {
                format!(
                    "{text}\n[repository]\nserve_packages = false\n\n[[repository.mirror]]\nurl = \"{mirror_url}\"\nca = \"{}\"\n",
                    ca.display()
                )
            })
            .unwrap();
        lab.server.publish(&signed).unwrap();
        let rolled = rollout(NEW, plan.clone(), WAVE_INTERVAL);
        let (start_instant, start_time) = (Instant::now(), Timestamp::now());
        let status = admin.rollout_status().unwrap();
        let opens = status.waves[1].opens_at.expect("wave 2 opens later");
        eprintln!(
            "[{:7.1}s] rollout {} of {} started; wave 2 opens at {opens}",
            started.elapsed().as_secs_f64(),
            rolled.id,
            rolled.deployment
        );
        go_a_tx.send(()).unwrap();
        go_b_tx.send(()).unwrap();

        let (mut good, mut staged_b) = (false, None);
        while !(good && staged_b.is_some()) {
            match next("the rollout's progress") {
                Event::Good => good = true,
                Event::Staged(at) => staged_b = Some(at),
                other => panic!("unexpected {other:?}"),
            }
        }
        let b_at =
            start_time.unix() + staged_b.unwrap().duration_since(start_instant).as_secs() as i64;
        assert!(
            b_at >= opens.unix() - 1,
            "the second-wave node staged at {} before its wave opened at {opens}",
            Timestamp::from_unix(b_at)
        );
        eprintln!(
            "[{:7.1}s] wave 1 runs {NEW}; wave 2 took it after its wave opened; aborting",
            started.elapsed().as_secs_f64()
        );

        admin.abort_rollout().unwrap();
        go_a_tx.send(()).unwrap();
        match next("the first node back") {
            Event::Back(deployment) => assert_eq!(deployment, first),
            other => panic!("unexpected {other:?}"),
        }
        eprintln!(
            "[{:7.1}s] the first-wave node is back on {first}",
            started.elapsed().as_secs_f64()
        );
    });

    let requests = mirror.requests();
    let fetched = requests
        .iter()
        .filter(|(r, s)| {
            r.starts_with("GET /targets/") && r.contains(&format!("base-{NEW}")) && *s == 200
        })
        .count();
    assert_eq!(
        fetched, 2,
        "both nodes took the package from the mirror: {requests:#?}"
    );
    assert!(
        requests
            .iter()
            .any(|(r, s)| r.contains(".root.json") && *s == 403),
        "the mirror's 403 for the next root ended the walk: {requests:#?}"
    );
    let status = lab.server.admin().unwrap().rollout_status().unwrap();
    assert_eq!(status.waves[0].counts.reverted, 1, "{status:#?}");
    assert!(status.waves[1].counts.took >= 1, "{status:#?}");
    let log = lab.server.node_log(a.id);
    for event in ["update staged", "update marked good", "update reverted"] {
        assert!(log.contains(event), "the server heard `{event}`:\n{log}");
    }
}
