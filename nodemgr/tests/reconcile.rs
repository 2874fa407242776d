//! Reconciliation against a real boot server on loopback (in this process,
//! its own SQLite registry and CA), as root on this host: slices the server
//! assigns become slivers, changes follow, removals and lease ends run the
//! `stop` script first, and a node cut off from its server keeps its
//! slivers from the saved answer.

mod common;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bootserver::admin::{
    self, Admin, ConfigUrls, InitOptions, LeaseEnd, NewNode, NodeConfigFormat, NodeRef, SliceSpec,
};
use common::{name, Node};
use config::rspec::Rspec;
use config::Timestamp;
use nodemgr::admission::Capacity;
use nodemgr::inside::RunStatus;
use nodemgr::logins::Logins;
use nodemgr::reconcile::SavedAnswer;
use nodemgr::serve::poll_once;
use nodemgr::service::Service;

const KEY_A: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq8mCjRqUoFdjvQ2xAq3hQ6X7tq1z0Jg7oQyJ6l2S9u alice@example.org";
const KEY_B: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHvM0pNQ2sQmWz1J0xkGugdUDw4bQ5OQ2v9Lh0C8bJ1q bob@example.org";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A boot server with one node registered, serving on loopback, and the
/// node's side: its partition (node.toml, CA) and a node manager.
struct World {
    admin: Admin,
    server_dir: PathBuf,
    node: Node,
    service: Service,
    partition: PathBuf,
    saved: SavedAnswer,
    logins: Logins,
    /// The stop scripts report here (the network is the node's).
    stops: TcpListener,
}

impl World {
    fn new() -> World {
        let node = Node::new();
        let server_dir = node.dir.path().join("server");
        let port = free_port();
        let admin = Admin::init(
            &server_dir,
            &InitOptions {
                hosts: vec!["localhost".parse().unwrap()],
                ips: vec![[127, 0, 0, 1].into()],
                listen: ([127, 0, 0, 1], port).into(),
                urls: vec![format!("https://127.0.0.1:{port}").parse().unwrap()],
                site_certificate: None,
            },
        )
        .unwrap();
        admin.add_site(&"princeton".parse().unwrap(), "").unwrap();
        let spec = NewNode::new("princeton".parse().unwrap(), "node1.example.org", None).unwrap();
        let (_, config) = admin.add_node(&spec, &ConfigUrls::FromServer).unwrap();
        let partition = node.dir.path().join("partition");
        std::fs::create_dir_all(partition.join("trust")).unwrap();
        admin::files::write_node_config(
            &partition.join("node.toml"),
            &config,
            NodeConfigFormat::NodeToml,
        )
        .unwrap();
        std::fs::copy(server_dir.join("ca/ca.pem"), partition.join("trust/ca.pem")).unwrap();
        let serving = Admin::open(&server_dir).unwrap();
        std::thread::spawn(move || {
            serving
                .serve(None, |_| {}, std::future::pending())
                .unwrap_or_else(|e| panic!("bootserver serve: {e}"));
        });
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut settings = node.settings.clone();
        settings.script_timeout = Duration::from_secs(3);
        let manager = nodemgr::NodeManager::open(settings).unwrap();
        let service = Service::new(manager, Capacity::default());
        let saved = SavedAnswer::new(&node.settings.state_dir);
        let logins = Logins {
            node_passwd: node.dir.path().join("passwd.node"),
            passwd: node.dir.path().join("passwd"),
            homes: node.dir.path().join("homes"),
            shell: "/usr/sbin/vsh".into(),
        };
        std::fs::write(&logins.node_passwd, "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        let stops = TcpListener::bind("127.0.0.1:0").unwrap();
        stops.set_nonblocking(true).unwrap();
        World {
            admin,
            server_dir,
            node,
            service,
            partition,
            saved,
            logins,
            stops,
        }
    }

    fn client(&self) -> nodeclient::ServerClient {
        nodeclient::NodeIdentity::load(&self.partition, Path::new("/nonexistent/handover.json"))
            .unwrap()
            .client()
            .unwrap()
    }

    /// One poll of the server (as `nodemgr serve` does it).
    fn poll(&self) -> nodemgr::reconcile::Report {
        let mut client = self.client();
        let node = nodeclient::NodeIdentity::load(&self.partition, Path::new("/nonexistent"))
            .unwrap()
            .config
            .node_id;
        let (report, error) = poll_once(
            &self.service,
            Some(&mut client),
            Some(node),
            &self.saved,
            Some(&self.logins),
        );
        assert_eq!(error, None);
        report.unwrap()
    }

    /// The initscript a slice gets: it installs a `stop` script that tells
    /// the test it ran (over TCP: the sliver's files go with it).
    fn initscript(&self) -> String {
        let port = self.stops.local_addr().unwrap().port();
        format!(
            "#!/bin/sh\necho initscript ran > /root/initscript-ran\n\
             c=/home/$(ls /home | head -1)/PlanetLab-control\n\
             printf '#!/bin/sh\\necho stopped $(id -un) | nc 127.0.0.1 {port}\\n' > $c/stop\n\
             printf '#!/bin/sh\\necho serving fine\\n' > $c/status\n\
             chmod 755 $c/stop $c/status\n"
        )
    }

    fn slice(&self, slice: &str, rspec: Rspec, keys: &[&str]) {
        let n = slice.parse().unwrap();
        self.admin
            .create_slice(&SliceSpec {
                name: slice.parse().unwrap(),
                description: String::new(),
                rspec,
                initscript: Some(self.initscript()),
                lease: LeaseEnd::DaysFromNow(30),
            })
            .unwrap();
        let keys: Vec<_> = keys.iter().map(|k| k.parse().unwrap()).collect();
        self.admin.add_slice_keys(&n, &keys).unwrap();
        self.admin
            .add_nodes_to_slice(&n, &[NodeRef::Name("node1.example.org".into())])
            .unwrap();
    }

    fn sh(&self, slice: &str, script: &str) -> String {
        let (code, out, err) = self.node.sh(slice, script);
        assert_eq!(code, 0, "{script}: {err}");
        out
    }

    /// Waits (bounded) for a file inside a sliver: the post-start scripts
    /// run on a thread of their own.
    fn wait_inside(&self, slice: &str, path: &str) {
        for _ in 0..600 {
            let (code, _, _) = self.node.sh(slice, &format!("test -e {path}"));
            if code == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{path} never appeared in {slice}");
    }

    /// The `stop` reports received so far.
    fn stopped(&self) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok((mut conn, _)) = self.stops.accept() {
            conn.set_nonblocking(false).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut text = String::new();
            let _ = conn.read_to_string(&mut text);
            out.push(text.trim().to_string());
        }
        out
    }

    fn exists(&self, slice: &str) -> bool {
        self.node
            .manager
            .list()
            .unwrap()
            .iter()
            .any(|s| s.slice.as_str() == slice)
    }

    fn server_log(&self) -> Vec<String> {
        let wd = bootserver::workdir::WorkDir::open(&self.server_dir).unwrap();
        let conn = wd.open_db().unwrap();
        let node = config::NodeConfig::load(&self.partition.join("node.toml"))
            .unwrap()
            .node_id;
        bootserver::registry::node_events(&conn, node, 100)
            .unwrap()
            .into_iter()
            .map(|e| e.message)
            .collect()
    }
}

#[test]
fn slices_from_the_server_become_slivers_and_follow_its_changes() {
    need_slivers!();
    let w = World::new();
    w.slice(
        "pl_alpha",
        Rspec {
            pids: Some(100),
            ..Rspec::default()
        },
        &[KEY_A],
    );
    w.slice("pl_beta", Rspec::default(), &[KEY_B]);

    // Slice added → sliver created, started, initscript run once.
    let r = w.poll();
    assert_eq!(r.created, [name("pl_alpha"), name("pl_beta")], "{r:?}");
    assert!(r.failed.is_empty(), "{r:?}");
    for slice in ["pl_alpha", "pl_beta"] {
        assert!(w.node.manager.show(&name(slice)).unwrap().pid.is_some());
        w.wait_inside(slice, "/root/initscript-ran");
    }
    assert_eq!(
        w.sh("pl_alpha", "cat /home/pl_alpha/.ssh/authorized_keys"),
        format!("{KEY_A}\n")
    );
    // The status script's output is shown; the lease is visible.
    let details = w
        .service
        .show(&nodemgr::rcap::Principal::Node, &name("pl_alpha"))
        .unwrap();
    let status = details.status.unwrap();
    assert_eq!(status.status, RunStatus::Exited(0));
    assert_eq!(status.output, "serving fine\n");
    assert!(details.lease_left_secs.unwrap() > 29 * 86_400);
    assert!(w.sh("pl_alpha", "cat /etc/plnode/lease").starts_with("20"));
    // An ssh account per sliver, with the server's keys.
    let passwd = std::fs::read_to_string(&w.logins.passwd).unwrap();
    assert!(passwd.contains("\npl_alpha:x:"), "{passwd}");
    assert!(passwd.contains("\npl_beta:x:"), "{passwd}");

    // Nothing changed → nothing done.
    assert!(w.poll().is_quiet());

    // rspec changed → limits and the resources file changed.
    w.admin
        .set_rspec(
            &"pl_alpha".parse().unwrap(),
            &Rspec {
                pids: Some(42),
                cpu_share: 5,
                ..Rspec::default()
            },
        )
        .unwrap();
    // A key removed on the server stops working at the next poll.
    w.admin
        .remove_slice_keys(&"pl_beta".parse().unwrap(), &[KEY_B.parse().unwrap()])
        .unwrap();
    let r = w.poll();
    assert_eq!(r.changed, [name("pl_alpha"), name("pl_beta")], "{r:?}");
    let state = w.node.manager.show(&name("pl_alpha")).unwrap();
    assert_eq!(state.state.rspec.pids, Some(42));
    let resources = w.sh("pl_alpha", "cat /home/pl_alpha/PlanetLab-control/resources");
    assert!(resources.contains("pids = 42"), "{resources}");
    assert!(resources.contains("cpu_share = 5"), "{resources}");
    if state.limits_unavailable.is_none() {
        let pids = state.limits.iter().find(|(f, _)| f == "pids.max").unwrap();
        assert_eq!(pids.1, "42");
    } else {
        eprintln!("SKIP (limits): this host's cgroup2 has no controllers");
    }
    assert_eq!(
        w.sh("pl_beta", "cat /home/pl_beta/.ssh/authorized_keys"),
        ""
    );
    let home_keys = w.logins.homes.join("pl_beta/.ssh/authorized_keys");
    assert_eq!(std::fs::read_to_string(home_keys).unwrap(), "");

    // Slice removed → stop script, then the sliver goes.
    w.admin
        .remove_nodes_from_slice(
            &"pl_beta".parse().unwrap(),
            &[NodeRef::Name("node1.example.org".into())],
        )
        .unwrap();
    let r = w.poll();
    assert_eq!(r.removed, [name("pl_beta")], "{r:?}");
    assert!(!w.exists("pl_beta"));
    assert_eq!(w.stopped(), ["stopped pl_beta"]);
    assert!(!std::fs::read_to_string(&w.logins.passwd)
        .unwrap()
        .contains("pl_beta"));
    assert!(w.exists("pl_alpha"));
}

#[test]
fn a_lease_ends_with_the_stop_script_and_a_cut_off_node_keeps_its_slivers() {
    need_slivers!();
    let w = World::new();
    w.slice("pl_gamma", Rspec::default(), &[KEY_A]);
    w.slice("pl_delta", Rspec::default(), &[KEY_B]);
    let end = Timestamp::from_unix(Timestamp::now().unix() + 8);
    w.admin
        .renew(&"pl_delta".parse().unwrap(), LeaseEnd::At(end))
        .unwrap();
    let r = w.poll();
    assert_eq!(r.created.len(), 2, "{r:?}");
    w.wait_inside("pl_delta", "/home/pl_delta/PlanetLab-control/stop");

    // The server goes away: the node keeps going on its saved answer.
    let mut unreachable = nodeclient::ServerClient::new(
        &std::fs::read(w.partition.join("trust/ca.pem")).unwrap(),
        vec![format!("https://127.0.0.1:{}", free_port())
            .parse()
            .unwrap()],
        None,
        std::time::UNIX_EPOCH,
        None,
    )
    .unwrap();
    let (report, error) = poll_once(&w.service, Some(&mut unreachable), None, &w.saved, None);
    assert!(error.unwrap().contains("no boot server reachable"));
    assert!(report.unwrap().removed.is_empty());
    assert!(w
        .node
        .manager
        .show(&name("pl_gamma"))
        .unwrap()
        .pid
        .is_some());
    assert!(w
        .node
        .manager
        .show(&name("pl_delta"))
        .unwrap()
        .pid
        .is_some());

    // A node manager started afresh (a reboot) still cut off: the saved
    // answer is all it has, and it keeps the slivers.
    let fresh = Service::new(w.node.manager.clone(), Capacity::default());
    let (report, _) = poll_once(&fresh, Some(&mut unreachable), None, &w.saved, None);
    assert!(report.unwrap().is_quiet());

    // The lease ends while cut off: stop script, then removal.
    while Timestamp::now() <= end {
        std::thread::sleep(Duration::from_millis(200));
    }
    let (report, _) = poll_once(&w.service, Some(&mut unreachable), None, &w.saved, None);
    assert_eq!(report.unwrap().removed, [name("pl_delta")]);
    assert!(!w.exists("pl_delta"));
    assert_eq!(w.stopped(), ["stopped pl_delta"]);
    assert!(w.exists("pl_gamma"));

    // Back online, a renewed lease takes effect at the next poll.
    let later = Timestamp::from_unix(Timestamp::now().unix() + 90 * 86_400);
    w.admin
        .renew(&"pl_gamma".parse().unwrap(), LeaseEnd::At(later))
        .unwrap();
    let r = w.poll();
    assert_eq!(r.changed, [name("pl_gamma")], "{r:?}");
    assert_eq!(
        w.sh("pl_gamma", "cat /etc/plnode/lease"),
        format!("{later}\n")
    );
}

#[test]
fn one_slivers_failure_blocks_no_other_and_is_reported_to_the_server() {
    need_slivers!();
    let w = World::new();
    // Two guarantees the node cannot both keep (1,000 shares).
    let big = Rspec {
        guaranteed: true,
        cpu_share: 700,
        ..Rspec::default()
    };
    w.slice("pl_first", big.clone(), &[KEY_A]);
    w.slice("pl_second", big, &[KEY_A]);
    w.slice("pl_third", Rspec::default(), &[KEY_A]);
    let r = w.poll();
    assert_eq!(r.created, [name("pl_first"), name("pl_third")], "{r:?}");
    assert_eq!(r.failed.len(), 1, "{r:?}");
    assert!(r.failed[0].1.contains("admission control"), "{r:?}");
    // `nodemgr serve` reports it; so does this poll's caller here.
    let mut client = w.client();
    client
        .post::<_, config::api::Empty>(
            config::api::paths::PROGRESS,
            &config::api::ProgressReport {
                events: nodemgr::serve::events(&r),
            },
        )
        .unwrap();
    let log = w.server_log();
    assert!(
        log.iter()
            .any(|l| l.contains("sliver pl_second failed") && l.contains("admission control")),
        "{log:?}"
    );
}
