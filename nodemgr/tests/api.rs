//! The node manager's local API over its D-Bus socket, as root on this
//! host: who may do what (callers are told apart by their host uid, as
//! processes of slivers are), rcaps, admission control, brokers, signals,
//! logins. Limits and quotas are proven in the QEMU guest.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use common::{name, Node, NODEMGR};
use config::rspec::Rspec;
use config::units::Rate;
use nodemgr::admission::Capacity;
use nodemgr::api_client::{ApiClient, ClientError};
use nodemgr::rcap::Principal;
use nodemgr::service::Service;
use nodemgr::AuthorizedKeys;

/// A node with the service and its API running (in this process).
struct Served {
    node: Node,
    service: Service,
}

impl Served {
    fn new(capacity: Capacity) -> Served {
        let node = Node::new();
        // Callers of other uids must reach the socket.
        for dir in [node.dir.path().to_path_buf(), node.settings.run_dir.clone()] {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let service = Service::new(node.manager.clone(), capacity);
        common::start_api(&service);
        Served { node, service }
    }

    fn client(&self) -> ApiClient {
        ApiClient::connect(&self.node.settings.api_socket())
            .unwrap()
            .expect("the API listens")
    }

    /// Runs `nodemgr ARGS` as host uid `uid` (a process of some sliver,
    /// as far as the node manager can tell), through the API.
    fn cli_as(&self, uid: u32, args: &[&str]) -> Output {
        use std::os::unix::process::CommandExt;
        Command::new(NODEMGR)
            .args(self.node.cli_args())
            .args(args)
            .env_remove("RUST_LOG")
            .uid(uid)
            .gid(uid)
            .output()
            .expect("running nodemgr")
    }

    /// Root uid outside of `slice`'s sliver.
    fn uid_of(&self, slice: &str) -> u32 {
        self.node
            .manager
            .list()
            .unwrap()
            .into_iter()
            .find(|s| s.slice.as_str() == slice)
            .expect("the sliver exists")
            .ids
            .first
    }

    /// Makes a running sliver through acquire + bind as the node.
    fn sliver(&self, slice: &str, rspec: &Rspec) {
        let rcap = self.service.acquire(&Principal::Node, rspec).unwrap();
        self.service
            .bind(&Principal::Node, &name(slice), &rcap)
            .unwrap();
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn refused(e: ClientError) -> String {
    match e {
        ClientError::Remote { name, message } => format!("{name}: {message}"),
        other => panic!("expected a refusal, got {other}"),
    }
}

#[test]
fn a_sliver_cannot_act_on_another_slice_but_on_itself() {
    need_slivers!();
    let s = Served::new(Capacity::default());
    s.sliver("pl_alice", &Rspec::default());
    s.sliver("pl_bob", &Rspec::default());
    let alice = s.uid_of("pl_alice");

    for args in [
        &["stop", "pl_bob"][..],
        &["delete", "pl_bob"],
        &["show", "pl_bob"],
        &["enter", "pl_bob", "--", "true"],
    ] {
        let out = s.cli_as(alice, args);
        assert!(!out.status.success(), "{args:?}: {}", text(&out));
        assert!(
            text(&out).contains("may not act on slice pl_bob"),
            "{args:?}: {}",
            text(&out)
        );
    }
    // An ordinary slice acquires nothing.
    let rspec_file = s.node.dir.path().join("rspec.toml");
    std::fs::write(&rspec_file, "cpu_share = 2\n").unwrap();
    std::fs::set_permissions(&rspec_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = s.cli_as(alice, &["acquire", rspec_file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).contains("may not acquire"), "{}", text(&out));

    // It sees only itself, and may act on itself.
    let out = s.cli_as(alice, &["list", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["slice"], "pl_alice");
    let out = s.cli_as(alice, &["show", "pl_alice"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = s.cli_as(alice, &["stop", "pl_alice"]);
    assert!(out.status.success(), "{}", text(&out));
    // Bob is untouched.
    let bob = s.node.manager.show(&name("pl_bob")).unwrap();
    assert!(bob.pid.is_some());

    // A uid of no sliver is hung up on.
    let out = s.cli_as(4242, &["list"]);
    assert!(!out.status.success(), "{}", text(&out));

    // The socket is inside every sliver, under its well-known name.
    let (code, out, err) = s.node.sh(
        "pl_bob",
        "ls -l /run/plnode/api/nodemgr.sock; readlink /run/plnode/nodemgr.sock",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with('s'), "{out}");
    assert!(out.contains("api/nodemgr.sock"), "{out}");
}

#[test]
fn forged_and_reused_rcaps_are_refused() {
    need_slivers!();
    let s = Served::new(Capacity::default());
    let api = s.client();
    assert_eq!(api.who_am_i().unwrap(), "node");
    let forged = "0123456789abcdef0123456789abcdef";
    let e = refused(api.bind("pl_carol", forged).unwrap_err());
    assert!(e.contains("unknown rcap"), "{e}");
    assert!(s.node.manager.list().unwrap().is_empty());
    let e = refused(api.bind("pl_carol", "not-an-rcap").unwrap_err());
    assert!(e.contains("Invalid"), "{e}");

    let rcap = api.acquire("cpu_share = 3\npids = 64\n").unwrap();
    api.bind("pl_carol", &rcap).unwrap();
    let e = refused(api.bind("pl_dave", &rcap).unwrap_err());
    assert!(e.contains("already bound to slice pl_carol"), "{e}");
    let e = refused(api.bind("pl_carol", &rcap).unwrap_err());
    assert!(e.contains("already bound"), "{e}");
    let list = api.list().unwrap();
    assert_eq!(list.len(), 1);
    assert!(list[0].pid.is_some());
    let state = s.node.manager.show(&name("pl_carol")).unwrap().state;
    assert_eq!(state.rspec.cpu_share, 3);
    // The table on disk names fingerprints, never the rcap.
    let table = std::fs::read_to_string(s.node.settings.state_dir.join("rcaps.json")).unwrap();
    assert!(!table.contains(&rcap));
}

#[test]
fn admission_control_refuses_an_overcommitment() {
    need_slivers!();
    let s = Served::new(Capacity {
        cpu_shares: 100,
        bandwidth: Rate::mbit(10),
    });
    let api = s.client();
    let a = api
        .acquire("guaranteed = true\ncpu_share = 60\nnet_min_rate = \"4mbit\"\n")
        .unwrap();
    // Promised, not yet bound: counted.
    let e = refused(
        api.acquire("guaranteed = true\ncpu_share = 50\n")
            .unwrap_err(),
    );
    assert!(e.contains("50 guaranteed CPU shares asked, 40"), "{e}");
    let e = refused(
        api.acquire("guaranteed = true\ncpu_share = 10\nnet_min_rate = \"7mbit\"\n")
            .unwrap_err(),
    );
    assert!(e.contains("bandwidth"), "{e}");
    api.bind("pl_gold", &a).unwrap();
    // Bound: still counted.
    assert!(api.acquire("guaranteed = true\ncpu_share = 41\n").is_err());
    api.acquire("guaranteed = true\ncpu_share = 40\n").unwrap();
    // Best effort is always admitted.
    let b = api.acquire("cpu_share = 5000\n").unwrap();
    api.bind("pl_bronze", &b).unwrap();
    // A deleted sliver's guarantee is free again.
    api.delete("pl_gold").unwrap();
    api.acquire("guaranteed = true\ncpu_share = 60\n").unwrap();
    // Nonsense is refused as input.
    let e = refused(api.acquire("cpu_share = 0\n").unwrap_err());
    assert!(e.contains("out of range"), "{e}");
}

#[test]
fn a_broker_binds_for_another_slice_and_signals_tell_of_it() {
    need_slivers!();
    let s = Served::new(Capacity::default());
    s.sliver(
        "pl_broker",
        &Rspec {
            privileged: true,
            ..Rspec::default()
        },
    );
    s.sliver("pl_plain", &Rspec::default());
    let watcher = s.client();
    let mut signals = zbus::MessageStream::from(watcher.connection());
    // Make sure the watcher's connection is set up before the events.
    watcher.who_am_i().unwrap();

    let broker = s.uid_of("pl_broker");
    let rspec_file = s.node.dir.path().join("rspec.toml");
    std::fs::write(&rspec_file, "cpu_share = 7\n").unwrap();
    std::fs::set_permissions(&rspec_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = s.cli_as(broker, &["acquire", rspec_file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let rcap = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let out = s.cli_as(broker, &["bind", "pl_client", &rcap]);
    assert!(out.status.success(), "{}", text(&out));
    let client = s.node.manager.show(&name("pl_client")).unwrap();
    assert!(client.pid.is_some());
    assert_eq!(client.state.rspec.cpu_share, 7);
    // The broker may also change another slice's resources.
    let out = s.cli_as(broker, &["acquire", rspec_file.to_str().unwrap()]);
    let rcap = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let out = s.cli_as(broker, &["bind", "pl_plain", &rcap]);
    assert!(out.status.success(), "{}", text(&out));

    // The node's connection heard both.
    let mut heard = Vec::new();
    watcher.block_on(async {
        use futures_util::StreamExt;
        while heard.len() < 2 {
            let next = tokio::time::timeout(std::time::Duration::from_secs(60), signals.next())
                .await
                .expect("a signal within a minute")
                .expect("the connection stays up")
                .unwrap();
            let header = next.header();
            if header.member().map(|m| m.as_str()) == Some("SliverChanged") {
                let (slice, event): (String, String) = next.body().deserialize().unwrap();
                heard.push(format!("{slice} {event}"));
            }
        }
    });
    assert_eq!(heard, ["pl_client created", "pl_plain changed"]);
}

#[test]
fn a_slice_user_enters_its_own_sliver_only_and_as_itself() {
    need_slivers!();
    let s = Served::new(Capacity::default());
    s.sliver("pl_erin", &Rspec::default());
    s.sliver("pl_frank", &Rspec::default());
    // The account an ssh login as pl_erin runs under: the slice user's id.
    let erin_user = s.uid_of("pl_erin") + 1000;
    let out = s.cli_as(
        erin_user,
        &[
            "enter",
            "pl_erin",
            "--",
            "/bin/sh",
            "-c",
            "id -u; echo $HOME",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1000\n/home/pl_erin\n"
    );
    let out = s.cli_as(erin_user, &["enter", "pl_frank", "--", "true"]);
    assert!(!out.status.success());
    // vsh (the login shell) needs no slice name: the caller's uid says it.
    use std::os::unix::process::CommandExt;
    let vsh = Command::new(NODEMGR)
        .arg0("vsh")
        .args(["-c", "echo in $(hostname) as $(id -un); ps -o pid | wc -l"])
        .env("NODEMGR_SOCKET", s.node.settings.api_socket())
        .uid(erin_user)
        .gid(erin_user)
        .output()
        .unwrap();
    assert!(vsh.status.success(), "{}", text(&vsh));
    let out = String::from_utf8_lossy(&vsh.stdout);
    assert!(out.contains("as pl_erin"), "{out}");
    // The sliver's PID 1, the shell, ps and wc (and the header line).
    let lines: usize = out.lines().nth(1).unwrap().trim().parse().unwrap();
    assert!(lines <= 6, "{out}");

    // Keys set over the API reach the sliver.
    let key =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq8mCjRqUoFdjvQ2xAq3hQ6X7tq1z0Jg7oQyJ6l2S9u e@x";
    s.service
        .set_keys(
            &Principal::Node,
            &name("pl_erin"),
            &AuthorizedKeys::parse(key).unwrap(),
        )
        .unwrap();
    let (_, out, _) = s
        .node
        .sh("pl_erin", "cat /home/pl_erin/.ssh/authorized_keys");
    assert_eq!(out, format!("{key}\n"));
}

#[test]
fn a_hanging_script_is_killed_after_its_timeout_and_a_missing_one_skipped() {
    need_slivers!();
    let node = Node::new();
    let mut settings = node.settings.clone();
    settings.script_timeout = std::time::Duration::from_secs(2);
    let service = Service::new(
        nodemgr::NodeManager::open(settings).unwrap(),
        Capacity::default(),
    );
    let rcap = service
        .acquire(&Principal::Node, &Rspec::default())
        .unwrap();
    service
        .bind(&Principal::Node, &name("pl_hang"), &rcap)
        .unwrap();
    let slice = name("pl_hang");
    let none = service.control_script(&slice, "status", Some(100)).unwrap();
    assert_eq!(none.status, nodemgr::inside::RunStatus::Skipped);
    let (code, _, err) = node.sh(
        "pl_hang",
        "c=/home/pl_hang/PlanetLab-control; printf '#!/bin/sh\\necho started\\nsleep 1000\\n' > $c/status; chmod 755 $c/status",
    );
    assert_eq!(code, 0, "{err}");
    let hung = service.control_script(&slice, "status", Some(100)).unwrap();
    assert_eq!(hung.status, nodemgr::inside::RunStatus::TimedOut);
    assert_eq!(hung.output, "started\n");
    // The script and its sleep are gone.
    let (_, ps, _) = node.sh("pl_hang", "ps -o comm");
    assert!(!ps.contains("sleep"), "{ps}");
}
