//! The updater against a real boot server on 127.0.0.1 (the `bootserver`
//! command line run in-process, its own CA, SQLite database and published
//! repository), with a temporary directory standing in for the node's
//! partition: node.toml, trust/ (verifier state and the server's CA) and a
//! current deployment installed from the same signed repository.
//!
//! Attacks are served the way an attacker who owns the server's disk (or a
//! mirror that does not check) would serve them: the files are put into the
//! server's published store directly, bypassing `repo publish`'s checks.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bootserver::admin::{
    self, Admin, ConfigUrls, InitOptions, NewNode, NodeConfigFormat, RolloutSpec,
};
use bootserver::rollout::{bucket, FailureLimit, WavePlan, SCALE};
use config::api::{CheckinRequest, Hints, RunLevel};
use config::units::Period;
use init::deploy::{Denied, DeploymentId, Disk};
use init::node::updater::{Options, Outcome, Schedule, UpdateError, Updater};
use pkgsign::fetch::{DirFetcher, DownloadPolicy};
use pkgsign::metadata::{sign_document, MetaInfo, RoleType, Snapshot, Timestamp};
use pkgsign::repo::{Expiries, Repository, RoleSpec};
use pkgsign::{SecretKey, Verifier};

// ------------------------------------------------------------------ packages

/// Deterministic, incompressible bytes (so sizes on the wire are real).
fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 8) as u8
        })
        .collect()
}

/// A .tar.gz of directories and files (path, content, mode).
fn targz(dirs: &[&str], files: &[(&str, Vec<u8>, u32)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for d in dirs {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_mtime(1_795_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        builder.append_data(&mut h, d, std::io::empty()).unwrap();
    }
    for (path, content, mode) in files {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(*mode);
        h.set_size(content.len() as u64);
        h.set_mtime(1_795_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        builder.append_data(&mut h, path, &content[..]).unwrap();
    }
    let tar = builder.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

fn kernel_package() -> Vec<u8> {
    targz(
        &["lib", "lib/modules", "lib/modules/6.1.0-test"],
        &[
            ("vmlinuz", noise(300_000, 1), 0o644),
            ("lib/modules/6.1.0-test/modules.dep", b"\n".to_vec(), 0o644),
        ],
    )
}

/// `base` at `version`; `blob` bytes of noise make it as large as a test needs.
fn base_package(version: &str, blob: usize) -> Vec<u8> {
    targz(
        &["etc", "sbin", "usr", "usr/share"],
        &[
            (
                "etc/os-release",
                format!("NAME=plnode\nVERSION={version}\n").into_bytes(),
                0o644,
            ),
            ("sbin/init", b"#!/bin/sh\nexit 0\n".to_vec(), 0o755),
            (
                "usr/share/blob",
                noise(blob, version.len() as u32 + 7),
                0o644,
            ),
        ],
    )
}

fn sliver_ref_package() -> Vec<u8> {
    targz(
        &["etc", "bin"],
        &[
            ("etc/hostname", b"sliver\n".to_vec(), 0o644),
            ("bin/tool", noise(300_000, 3), 0o755),
            ("bin/setuid-tool", b"setuid\n".to_vec(), 0o4755),
        ],
    )
}

// ----------------------------------------------------------------- the server

/// The boot server's admin API on a working directory, in-process.
fn bootserver(workdir: &Path) -> Admin {
    Admin::open(workdir).unwrap_or_else(|e| panic!("{}: {e}", workdir.display()))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server {
    workdir: PathBuf,
    port: u16,
}

impl Server {
    /// Starts serving HTTPS on its port (until the test process ends).
    fn serve(&self) {
        let (admin, listen) = (
            bootserver(&self.workdir),
            ([127, 0, 0, 1], self.port).into(),
        );
        std::thread::spawn(move || {
            admin
                .serve(Some(listen), |_| {}, std::future::pending())
                .unwrap_or_else(|e| panic!("bootserver serve: {e}"));
        });
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `bootserver repo publish`: verified by the server before it serves it.
    fn publish(&self, repo: &Path) {
        bootserver(&self.workdir)
            .publish(repo, None)
            .unwrap_or_else(|e| panic!("bootserver repo publish: {e}"));
    }

    /// Puts `repo` into the server's store without any check, as an
    /// attacker with the server's disk (or a careless mirror) would.
    fn serve_unchecked(&self, repo: &Path) {
        let wd = bootserver::workdir::WorkDir::open(&self.workdir).unwrap();
        let (staging, index) = bootserver::repo_store::stage_copy(repo, &wd.repo_store()).unwrap();
        bootserver::repo_store::activate(&staging, &index, &wd.repo_store(), &wd.repo_link())
            .unwrap();
    }

    /// The node's log on the server, newest first.
    fn events(&self, node: u64) -> Vec<String> {
        let wd = bootserver::workdir::WorkDir::open(&self.workdir).unwrap();
        let conn = wd.open_db().unwrap();
        bootserver::registry::node_events(&conn, config::node::NodeId(node), 100)
            .unwrap()
            .into_iter()
            .map(|e| e.message)
            .collect()
    }
}

// ------------------------------------------------------------------ the world

struct World {
    dir: tempfile::TempDir,
    keys: Vec<SecretKey>,
    repo: Repository,
    server: Server,
    node_id: u64,
    partition: PathBuf,
}

fn expiring_in(secs: i64) -> Expiries {
    let t = floor::Timestamp::from_unix(floor::Timestamp::now().unix() + secs);
    Expiries {
        targets: t,
        snapshot: t,
        timestamp: t,
    }
}

/// How a world is set up.
struct Setup {
    /// Targets signed by this many keys (all required).
    targets_threshold: usize,
    /// Serve now (else call `server.serve()` later).
    serving: bool,
    /// The node reaches the server through this port instead (a proxy).
    node_port: Option<u16>,
    /// The partition lives here instead of in the temporary directory.
    partition: Option<PathBuf>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            targets_threshold: 1,
            serving: true,
            node_port: None,
            partition: None,
        }
    }
}

impl World {
    fn new() -> World {
        World::with(Setup::default())
    }

    fn with(setup: Setup) -> World {
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<SecretKey> = (0..setup.targets_threshold.max(1))
            .map(|_| SecretKey::generate().unwrap())
            .collect();
        let one = RoleSpec {
            keys: vec![keys[0].public().clone()],
            threshold: 1,
        };
        let mut roles: BTreeMap<RoleType, RoleSpec> = RoleType::ALL
            .into_iter()
            .map(|r| (r, one.clone()))
            .collect();
        roles.insert(
            RoleType::Targets,
            RoleSpec {
                keys: keys.iter().map(|k| k.public().clone()).collect(),
                threshold: keys.len() as u32,
            },
        );
        let repo_dir = dir.path().join("repo");
        let repo = Repository::init(
            &repo_dir,
            &roles,
            floor::Timestamp::from_unix(floor::Timestamp::now().unix() + 365 * 86_400),
            &keys,
        )
        .unwrap();
        let world_dir = dir.path().to_path_buf();
        let add = |name: &str, version: &str, bytes: Vec<u8>, base_image: bool| {
            let file = world_dir.join(format!("{name}-{version}.tar.gz"));
            fs::write(&file, bytes).unwrap();
            repo.add_package(&file, name, version, base_image, Default::default())
                .unwrap();
        };
        add("kernel", "6.1.0-test", kernel_package(), false);
        add("base", "2026.1", base_package("2026.1", 1000), true);
        add("sliver-ref", "1", sliver_ref_package(), true);
        repo.publish(&keys, &expiring_in(30 * 86_400)).unwrap();

        let port = free_port();
        let node_port = setup.node_port.unwrap_or(port);
        let server = Server {
            workdir: dir.path().join("server"),
            port,
        };
        let url = format!("https://127.0.0.1:{node_port}");
        let admin = Admin::init(
            &server.workdir,
            &InitOptions {
                hosts: vec!["localhost".parse().unwrap()],
                ips: vec![[127, 0, 0, 1].into()],
                listen: ([127, 0, 0, 1], port).into(),
                urls: vec![url.parse().unwrap()],
                site_certificate: None,
            },
        )
        .unwrap();
        let root = repo_dir.join("metadata/1.root.json");
        admin.publish(&repo_dir, Some(&root)).unwrap();
        admin.add_site(&"testsite".parse().unwrap(), "").unwrap();
        let node_toml = dir.path().join("node.toml");
        let spec = NewNode::new("testsite".parse().unwrap(), "node1.example.org", None).unwrap();
        let (_, node_config) = admin.add_node(&spec, &ConfigUrls::FromServer).unwrap();
        admin::files::write_node_config(&node_toml, &node_config, NodeConfigFormat::NodeToml)
            .unwrap();
        let node_id = config::NodeConfig::load(&node_toml).unwrap().node_id.0;
        if setup.serving {
            server.serve();
        }

        // The installed disk, as `reinstall` leaves it.
        let partition = setup
            .partition
            .unwrap_or_else(|| dir.path().join("partition"));
        let disk = Disk::new(&partition);
        disk.create_layout().unwrap();
        fs::copy(&node_toml, disk.node_config_path()).unwrap();
        fs::copy(
            server.workdir.join("ca/ca.pem"),
            disk.trust_dir().join("ca.pem"),
        )
        .unwrap();
        let mut verifier = Verifier::open(&disk.trust_dir(), &fs::read(&root).unwrap()).unwrap();
        let source = DirFetcher::new(repo_dir.clone());
        let verified = verifier
            .update(&source, std::time::SystemTime::now())
            .unwrap();
        let packages = init::deploy::node_packages(&verified).unwrap();
        let record = init::deploy::Build::fresh(
            &disk,
            &verified,
            &packages,
            &init::deploy::Plan::fresh(&packages),
            &source,
        )
        .run_fresh()
        .unwrap()
        .record;
        disk.activate(&record.id, false).unwrap();

        World {
            dir,
            keys,
            repo,
            server,
            node_id,
            partition,
        }
    }

    fn disk(&self) -> Disk {
        Disk::new(&self.partition)
    }

    fn updater(&self) -> Updater {
        Updater::open(Options {
            partition: self.partition.clone(),
            handover: self.dir.path().join("no-handover.json"),
            reboot: false,
            download: DownloadPolicy {
                max_attempts: 2,
                initial_backoff: Duration::from_millis(10),
                max_backoff: Duration::from_millis(20),
                ..DownloadPolicy::default()
            },
        })
        .unwrap()
    }

    /// Adds `base` at `version` to the staff's repository and signs a new
    /// version of the metadata (not yet on the server).
    fn release_base(&self, version: &str, blob: usize) {
        self.release_base_expiring(version, blob, 30 * 86_400);
    }

    fn release_base_expiring(&self, version: &str, blob: usize, secs: i64) {
        let file = self.dir.path().join(format!("base-{version}.tar.gz"));
        fs::write(&file, base_package(version, blob)).unwrap();
        self.repo
            .add_package(&file, "base", version, true, Default::default())
            .unwrap();
        self.repo.publish(&self.keys, &expiring_in(secs)).unwrap();
    }

    /// A copy of the staff's repository as it is now.
    fn copy_repo(&self, name: &str) -> PathBuf {
        let to = self.dir.path().join(name);
        for area in ["metadata", "targets"] {
            fs::create_dir_all(to.join(area)).unwrap();
            for e in fs::read_dir(self.repo.dir().join(area)).unwrap() {
                let e = e.unwrap();
                fs::copy(e.path(), to.join(area).join(e.file_name())).unwrap();
            }
        }
        to
    }

    fn current(&self) -> DeploymentId {
        self.disk().link("current").unwrap().unwrap()
    }

    fn staged(&self) -> Option<DeploymentId> {
        self.disk().link("staged").unwrap()
    }

    /// Every file of the verifier's state, with its content.
    fn trust_state(&self) -> BTreeMap<String, Vec<u8>> {
        fs::read_dir(self.disk().trust_dir())
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    fs::read(e.path()).unwrap(),
                )
            })
            .collect()
    }

    fn deployments(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.disk().deployments_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn cache_files(&self) -> Vec<String> {
        match fs::read_dir(self.partition.join("cache/targets")) {
            Ok(entries) => entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// What the CD does at the next boot: activate `staged` on trial; then
    /// what the supervisor does when the services come up healthy.
    fn boot_staged_and_prove_healthy(&self) {
        let disk = self.disk();
        let staged = disk.link("staged").unwrap().unwrap();
        let record = disk.record(&staged).unwrap();
        init::deploy::check_deployment(&disk, &record, true).unwrap();
        disk.activate(&staged, true).unwrap();
        disk.clear_link("staged").unwrap();
        disk.clear_bootcount().unwrap();
    }

    /// What the CD does when the new deployment's trial runs out.
    fn boot_staged_and_roll_back(&self) -> DeploymentId {
        let disk = self.disk();
        let staged = disk.link("staged").unwrap().unwrap();
        let before = disk.link("current").unwrap().unwrap();
        disk.activate(&staged, true).unwrap();
        disk.clear_link("staged").unwrap();
        disk.deny(Denied {
            deployment: staged.clone(),
            os_version: disk.record(&staged).unwrap().os_version,
            reason: "deployment did not come up healthy within 3 boots".into(),
            at: config::Timestamp::now(),
        })
        .unwrap();
        disk.set_link("current", &before).unwrap();
        disk.clear_link("previous").unwrap();
        disk.clear_bootcount().unwrap();
        staged
    }

    fn package_length(&self, name: &str) -> u64 {
        let status = self.repo.status().unwrap();
        status.targets.unwrap().targets[name].length
    }
}

fn staged(outcome: &Result<Outcome, UpdateError>) -> (DeploymentId, Vec<String>, Vec<String>) {
    match outcome {
        Ok(Outcome::Staged {
            deployment,
            downloaded,
            reused,
            ..
        }) => (deployment.clone(), downloaded.clone(), reused.clone()),
        other => panic!("expected a staged update, got {other:?}"),
    }
}

// --------------------------------------------------------------------- tests

#[test]
fn a_new_version_is_staged_with_only_the_changed_package_downloaded() {
    let w = World::new();
    let mut updater = w.updater();
    let running = w.current();
    w.release_base("2026.2", 200_000);
    w.server.publish(w.repo.dir());

    let report = updater.check();
    let (id, downloaded, reused) = staged(&report.result);
    assert!(id.as_str().starts_with("2026.2-"), "{id}");
    assert_eq!(downloaded, ["base"]);
    assert_eq!(reused, ["kernel", "sliver-ref"]);
    // Only `base` crossed the network (kernel and sliver-ref are ~300 kB each).
    let base_len = w.package_length("base");
    assert!(
        report.bytes >= base_len && report.bytes < base_len + 32 * 1024,
        "{} bytes received for a {base_len}-byte package",
        report.bytes
    );
    assert_eq!(w.staged(), Some(id.clone()));
    assert_eq!(w.current(), running, "the running deployment is untouched");
    // What the CD checks before activating it: every file, re-hashed.
    let disk = w.disk();
    let record = disk.record(&id).unwrap();
    init::deploy::check_deployment(&disk, &record, true).unwrap();
    assert_eq!(
        fs::read_to_string(disk.deployment_path(&id).join("root/etc/os-release")).unwrap(),
        "NAME=plnode\nVERSION=2026.2\n"
    );
    assert!(w.cache_files().is_empty(), "{:?}", w.cache_files());
    let events = w.server.events(w.node_id);
    assert!(
        events
            .iter()
            .any(|e| e.starts_with(&format!("update staged: 2026.2 (deployment {id})"))),
        "{events:#?}"
    );

    // After the CD activated it and it proved healthy, a third version
    // replaces it; the first one is then pruned, `previous` kept.
    w.boot_staged_and_prove_healthy();
    assert_eq!(w.disk().link("previous").unwrap(), Some(running.clone()));
    w.release_base("2026.3", 1000);
    w.server.publish(w.repo.dir());
    let (id3, _, _) = staged(&updater.check().result);
    w.boot_staged_and_prove_healthy();
    let report = updater.check();
    assert_eq!(
        report.result.unwrap(),
        Outcome::UpToDate {
            deployment: id3.clone()
        }
    );
    let mut expected = vec![id.to_string(), id3.to_string()];
    expected.sort();
    assert_eq!(w.deployments(), expected, "kept current and previous only");
}

#[test]
fn an_empty_check_is_three_small_requests_and_the_same_version_twice_does_nothing() {
    let w = World::new();
    let mut updater = w.updater();
    let first = updater.check();
    assert_eq!(
        first.result.as_ref().unwrap(),
        &Outcome::UpToDate {
            deployment: w.current()
        }
    );
    let trust = w.trust_state();
    let empty = updater.check();
    assert!(matches!(empty.result, Ok(Outcome::UpToDate { .. })));
    // No rollout: the release directive (304 Not Modified), `2.root.json`
    // (not found) and `timestamp.json` (304 Not Modified).
    assert_eq!(empty.requests, 3, "{empty:?}");
    assert_eq!(empty.not_modified, 2, "{empty:?}");
    assert!(empty.bytes < 300, "{empty:?}");
    assert_eq!(w.trust_state(), trust);

    // A staged version is not downloaded again.
    w.release_base("2026.2", 100_000);
    w.server.publish(w.repo.dir());
    let (id, _, _) = staged(&updater.check().result);
    let again = updater.check();
    assert_eq!(
        again.result.unwrap(),
        Outcome::AlreadyStaged {
            deployment: id.clone()
        }
    );
    assert_eq!(again.requests, 3);
    assert!(again.bytes < 300, "{} bytes", again.bytes);
    assert_eq!(w.staged(), Some(id));
}

/// Asserts a refused check left the node as it was.
fn assert_refused(
    w: &World,
    report: &init::node::updater::CheckReport,
    trust: &BTreeMap<String, Vec<u8>>,
    deployments: &[String],
    says: &str,
) {
    let err = match &report.result {
        Err(e) => floor::report::error_line(e),
        Ok(o) => panic!("expected a refusal, got {o:?}"),
    };
    assert!(err.contains(says), "{err}");
    assert_eq!(w.staged(), None);
    assert_eq!(&w.trust_state(), trust, "the trusted state moved");
    assert_eq!(w.deployments(), deployments);
    assert!(w.cache_files().is_empty(), "{:?}", w.cache_files());
    let events = w.server.events(w.node_id);
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("update failed") && e.contains(says)),
        "the server was not told: {events:#?}"
    );
}

#[test]
fn a_tampered_package_is_refused() {
    let w = World::new();
    let mut updater = w.updater();
    w.release_base("2026.2", 50_000);
    let evil = w.copy_repo("evil");
    let info = w.repo.status().unwrap().targets.unwrap().targets["base"].clone();
    let path = evil.join(&info.path);
    let mut bytes = fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&path, bytes).unwrap();
    w.server.serve_unchecked(&evil);
    let (trust, deployments) = (w.trust_state(), w.deployments());

    let report = updater.check();
    assert_refused(&w, &report, &trust, &deployments, "differs from the signed");
    assert!(matches!(report.result, Err(UpdateError::PackageRefused(_))));
    // A failure is reported once, not at every poll.
    let again = updater.check();
    assert!(again.result.is_err());
    let told = w
        .server
        .events(w.node_id)
        .iter()
        .filter(|e| e.starts_with("update failed"))
        .count();
    assert_eq!(told, 1);
}

#[test]
fn older_metadata_is_refused() {
    let w = World::new();
    let mut updater = w.updater();
    let old = w.copy_repo("old");
    w.release_base("2026.2", 1000);
    w.server.publish(w.repo.dir());
    staged(&updater.check().result);
    w.boot_staged_and_prove_healthy();
    assert!(matches!(
        updater.check().result,
        Ok(Outcome::UpToDate { .. })
    ));

    // A stale mirror (or an attacker replaying) serves the first version.
    w.server.serve_unchecked(&old);
    let (trust, deployments) = (w.trust_state(), w.deployments());
    let report = updater.check();
    assert_refused(&w, &report, &trust, &deployments, "rollback");
    assert!(matches!(report.result, Err(UpdateError::Metadata(_))));
}

#[test]
fn expired_metadata_is_refused() {
    let w = World::new();
    let mut updater = w.updater();
    // Signed correctly, but expired an hour ago (a freeze attack replays such).
    w.release_base_expiring("2026.2", 1000, -3600);
    w.server.serve_unchecked(w.repo.dir());
    let (trust, deployments) = (w.trust_state(), w.deployments());
    let report = updater.check();
    assert_refused(&w, &report, &trust, &deployments, "expired");
}

#[test]
fn under_signed_metadata_is_refused() {
    let w = World::with(Setup {
        targets_threshold: 2,
        ..Setup::default()
    });
    let mut updater = w.updater();
    w.release_base("2026.2", 1000);
    // Re-sign the new targets with one of its two keys only, and a snapshot
    // and timestamp that name it (as someone holding one key, and the
    // online snapshot and timestamp keys, could).
    let evil = w.copy_repo("evil");
    let meta = evil.join("metadata");
    let ts_bytes = fs::read(meta.join("timestamp.json")).unwrap();
    let (_, ts) = pkgsign::metadata::parse_unverified::<Timestamp>(&ts_bytes).unwrap();
    let snap_file = meta.join(format!("{}.snapshot.json", ts.meta.snapshot.version));
    let (_, snap) =
        pkgsign::metadata::parse_unverified::<Snapshot>(&fs::read(&snap_file).unwrap()).unwrap();
    let targets_file = meta.join(format!("{}.targets.json", snap.meta.targets.version));
    let (_, targets) = pkgsign::metadata::parse_unverified::<pkgsign::metadata::Targets>(
        &fs::read(&targets_file).unwrap(),
    )
    .unwrap();
    let one_key = sign_document(&targets, &[&w.keys[0]]).unwrap();
    fs::write(&targets_file, &one_key).unwrap();
    let snap = Snapshot::new(
        snap.version,
        snap.expires,
        MetaInfo::describe(targets.version, &one_key),
    );
    let snap_bytes = sign_document(&snap, &[&w.keys[0]]).unwrap();
    fs::write(&snap_file, &snap_bytes).unwrap();
    let ts = Timestamp::new(
        ts.version,
        ts.expires,
        MetaInfo::describe(snap.version, &snap_bytes),
    );
    fs::write(
        meta.join("timestamp.json"),
        sign_document(&ts, &[&w.keys[0]]).unwrap(),
    )
    .unwrap();
    w.server.serve_unchecked(&evil);
    let (trust, deployments) = (w.trust_state(), w.deployments());

    let report = updater.check();
    assert_refused(&w, &report, &trust, &deployments, "targets");
    let err = floor::report::error_line(&report.result.unwrap_err());
    assert!(
        err.contains("threshold") || err.contains("signature"),
        "{err}"
    );
}

#[test]
fn a_denylisted_version_is_not_staged_again_and_reported_once() {
    let w = World::new();
    let mut updater = w.updater();
    w.release_base("2026.2", 1000);
    w.server.publish(w.repo.dir());
    staged(&updater.check().result);
    let failed = w.boot_staged_and_roll_back();
    w.disk().prune().unwrap();

    let report = updater.check();
    assert_eq!(
        report.result.unwrap(),
        Outcome::Denied {
            deployment: failed.clone(),
            reason: "deployment did not come up healthy within 3 boots".into(),
            reported_now: true,
        }
    );
    assert_eq!(w.staged(), None);
    let again = updater.check();
    assert!(
        matches!(
            again.result,
            Ok(Outcome::Denied {
                reported_now: false,
                ..
            })
        ),
        "{again:?}"
    );
    assert!(again.bytes < 300, "no download: {again:?}");
    assert_eq!(w.staged(), None);
    assert!(!w.deployments().contains(&failed.to_string()));
    let denylist_reports = w
        .server
        .events(w.node_id)
        .iter()
        .filter(|e| e.contains("on the node's denylist"))
        .count();
    assert_eq!(denylist_reports, 1);

    // A fixed release is taken.
    w.release_base("2026.3", 1000);
    w.server.publish(w.repo.dir());
    let (id, _, _) = staged(&updater.check().result);
    assert!(id.as_str().starts_with("2026.3-"));
}

#[test]
fn a_changed_file_in_the_running_deployment_is_downloaded_instead_of_copied() {
    let w = World::new();
    let mut updater = w.updater();
    let running = w.current();
    let tool = w
        .disk()
        .deployment_path(&running)
        .join("sliver-ref/bin/tool");
    let mut bytes = fs::read(&tool).unwrap();
    bytes[10] ^= 1;
    fs::write(&tool, bytes).unwrap();
    w.release_base("2026.2", 1000);
    w.server.publish(w.repo.dir());

    let (id, downloaded, reused) = staged(&updater.check().result);
    assert_eq!(downloaded, ["base", "sliver-ref"]);
    assert_eq!(reused, ["kernel"]);
    let disk = w.disk();
    init::deploy::check_deployment(&disk, &disk.record(&id).unwrap(), true).unwrap();
    // Modes and setuid bits come from the signed package, not the copy.
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(disk.deployment_path(&id).join("sliver-ref/bin/setuid-tool"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o4755);
}

#[test]
fn a_full_disk_is_refused_cleanly() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIP a_full_disk_is_refused_cleanly: mounting a small tmpfs needs root");
        return;
    }
    let mount_dir = tempfile::tempdir().unwrap();
    let mount = SmallFs::mount(mount_dir.path(), 40 << 20);
    let w = World::with(Setup {
        partition: Some(mount.path.join("partition")),
        ..Setup::default()
    });
    let mut updater = w.updater();
    // 12 MiB of content that does not compress: 12 MiB to download and 12
    // MiB to unpack, plus margin and reserve, on a 40 MiB file system.
    w.release_base("2026.2", 12 << 20);
    w.server.publish(w.repo.dir());
    let (trust, deployments) = (w.trust_state(), w.deployments());
    let free_before = init::node::updater::space::free_bytes(&w.partition).unwrap();

    let report = updater.check();
    assert_refused(&w, &report, &trust, &deployments, "not enough space");
    assert!(matches!(report.result, Err(UpdateError::NoSpace { .. })));
    assert!(report.bytes < 64 * 1024, "nothing downloaded: {report:?}");
    let free_after = init::node::updater::space::free_bytes(&w.partition).unwrap();
    assert!(
        free_after + 64 * 1024 >= free_before,
        "{free_before} free before, {free_after} after"
    );
    // The running deployment is intact.
    let disk = w.disk();
    init::deploy::check_deployment(&disk, &disk.record(&w.current()).unwrap(), true).unwrap();
}

/// A tmpfs of a given size, unmounted on drop.
struct SmallFs {
    path: PathBuf,
}

impl SmallFs {
    fn mount(path: &Path, bytes: u64) -> SmallFs {
        nix::mount::mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={bytes}").as_str()),
        )
        .unwrap();
        SmallFs {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn while_the_server_is_down_the_node_keeps_its_deployment_then_catches_up() {
    let w = World::with(Setup {
        serving: false,
        ..Setup::default()
    });
    let running = w.current();
    w.release_base("2026.2", 1000);
    w.server.publish(w.repo.dir());
    let mut updater = w.updater();
    let schedule = Schedule {
        interval: Duration::from_millis(50),
        retry_min: Duration::from_millis(10),
        retry_max: Duration::from_millis(80),
    };
    let mut bases = Vec::new();
    let mut results = Vec::new();
    let (_waker, wake) = std::sync::mpsc::channel();
    updater.run(&schedule, &wake, &mut |report, wait| {
        results.push(format!("{:?}", report.result));
        match &report.result {
            Err(e) => {
                assert!(e.is_unreachable(), "{e}");
                assert_eq!(w.current(), running);
                assert_eq!(w.staged(), None);
                bases.push(wait.base);
                if bases.len() == 6 {
                    // The server comes back.
                    w.server.serve();
                }
                ControlFlow::Continue(())
            }
            Ok(Outcome::Staged { .. }) => ControlFlow::Break(()),
            Ok(other) => panic!("unexpected {other:?}"),
        }
    });
    let ms: Vec<u128> = bases.iter().map(|b| b.as_millis()).collect();
    assert_eq!(ms, [10, 20, 40, 80, 80, 80], "{results:#?}");
    assert!(w.staged().is_some());
    assert_eq!(w.current(), running);
}

/// A TCP proxy in front of the server that can cut a transfer midway and
/// then refuse connections, like a network that goes away.
struct Proxy {
    port: u16,
    state: Arc<Mutex<ProxyMode>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProxyMode {
    Open,
    /// Forward this many bytes from the server on one connection, then cut
    /// it and refuse everything after.
    CutAfter(u64),
    Refuse,
}

impl Proxy {
    fn start(port: u16, upstream: u16) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let state = Arc::new(Mutex::new(ProxyMode::Open));
        let st = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if *st.lock().unwrap() == ProxyMode::Refuse {
                    continue; // dropped: closed at once
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let st = st.clone();
                let (mut c_read, mut s_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_read, &mut s_write);
                    let _ = s_write.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let (mut from, mut to) = (server, client);
                    let mut buf = [0u8; 16 * 1024];
                    let mut sent = 0u64;
                    loop {
                        let n = match from.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let mode = *st.lock().unwrap();
                        if let ProxyMode::CutAfter(limit) = mode {
                            if sent + n as u64 > limit {
                                *st.lock().unwrap() = ProxyMode::Refuse;
                                break;
                            }
                        }
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        sent += n as u64;
                    }
                    let _ = to.shutdown(std::net::Shutdown::Both);
                    let _ = from.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Proxy { port, state }
    }

    fn set(&self, mode: ProxyMode) {
        *self.state.lock().unwrap() = mode;
    }
}

#[test]
fn an_interrupted_download_continues_where_it_stopped() {
    let proxy_port = free_port();
    let w = World::with(Setup {
        node_port: Some(proxy_port),
        ..Setup::default()
    });
    let proxy = Proxy::start(proxy_port, w.server.port);
    assert_eq!(proxy.port, proxy_port);
    w.release_base("2026.2", 3 << 20);
    w.server.publish(w.repo.dir());
    let base_len = w.package_length("base");
    let mut updater = w.updater();

    // The network goes away a megabyte into the download, for good.
    proxy.set(ProxyMode::CutAfter(1 << 20));
    let first = updater.check();
    assert!(
        matches!(&first.result, Err(e) if e.is_unreachable()),
        "{first:?}"
    );
    assert_eq!(w.staged(), None);
    let partial: Vec<String> = w.cache_files();
    assert_eq!(partial.len(), 1, "{partial:?}");
    assert!(partial[0].ends_with(".part"), "{partial:?}");
    let kept = fs::metadata(w.partition.join("cache/targets").join(&partial[0]))
        .unwrap()
        .len();
    assert!(
        kept > 500_000 && kept < base_len,
        "kept {kept} of {base_len}"
    );

    // It comes back; the next check asks only for the rest.
    proxy.set(ProxyMode::Open);
    let second = updater.check();
    let (id, downloaded, _) = staged(&second.result);
    assert_eq!(downloaded, ["base"]);
    assert!(
        second.bytes < base_len - kept + 64 * 1024,
        "{} bytes received for the {} missing",
        second.bytes,
        base_len - kept
    );
    assert!(second.bytes >= base_len - kept);
    let disk = w.disk();
    init::deploy::check_deployment(&disk, &disk.record(&id).unwrap(), true).unwrap();
    assert!(w.cache_files().is_empty());
}

#[test]
fn the_command_line_checks_once_and_says_what_it_decided() {
    let w = World::new();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_init"))
        .args(["update", "--partition"])
        .arg(&w.partition)
        .arg("--handover")
        .arg(w.dir.path().join("no-handover.json"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "@step update/check ok up to date: running {}",
            w.current()
        )),
        "{stdout}"
    );
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_init"))
        .args(["update", "--partition"])
        .arg(w.dir.path().join("nowhere"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("reading the node config"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

// ------------------------------------------------------------------ rollouts

impl World {
    fn admin(&self) -> Admin {
        bootserver(&self.server.workdir)
    }

    /// Starts a rollout of the published `base` version.
    fn rollout(&self, version: &str, waves: WavePlan, interval_secs: u64) {
        self.admin()
            .start_rollout(&RolloutSpec {
                release: version.to_string(),
                waves,
                interval: Period::from_secs(interval_secs),
                max_failures: FailureLimit::default(),
            })
            .unwrap_or_else(|e| panic!("rollout start {version}: {e}"));
    }

    /// A check-in as the node's supervisor makes it (its client, its
    /// key), returning the reply's hints.
    fn checkin_hints(&self) -> Hints {
        let disk = self.disk();
        let config = config::NodeConfig::load(&disk.node_config_path()).unwrap();
        let ca = fs::read(disk.trust_dir().join("ca.pem")).unwrap();
        let mut client = init::boot_server::ServerClient::new(
            &ca,
            config.server_urls.clone(),
            None,
            std::time::SystemTime::UNIX_EPOCH,
            Some((config.node_id, config.key.clone())),
        )
        .unwrap();
        let request = CheckinRequest {
            node_id: config.node_id,
            run_level: RunLevel::Boot,
            bootcd_version: None,
            os_version: None,
            deployment: Some(self.current().to_string()),
            hardware: None,
            health: None,
            uptime_secs: 1,
            node_time: config::Timestamp::now(),
        };
        init::node::supervisor::hints::checkin(&mut client, &request)
            .unwrap()
            .hints
    }
}

/// Waves that put `node` into the second of two.
fn second_wave_for(node: u64) -> WavePlan {
    let b = bucket(config::node::NodeId(node));
    assert!(b > 0, "node {node} hashes to the very start; pick another");
    WavePlan::new(vec![b, SCALE]).unwrap()
}

#[test]
fn a_node_takes_a_release_only_when_its_wave_opens_and_is_told_at_once() {
    let w = World::new();
    let mut updater = w.updater();
    let running = w.current();
    w.release_base("2026.2", 1000);
    w.server.publish(w.repo.dir());
    w.rollout("2026.2", second_wave_for(w.node_id), 3);

    // Its wave has not opened: nothing new, and the repository is not asked.
    let held = updater.check();
    match &held.result {
        Ok(Outcome::Held { reason }) => {
            assert!(reason.contains("wave 2 of 2 opens at"), "{reason}")
        }
        other => panic!("expected to hold, got {other:?}"),
    }
    assert_eq!(held.requests, 1, "only the release directive: {held:?}");
    assert_eq!(w.staged(), None);
    assert!(!w.checkin_hints().check_updates);
    let again = updater.check();
    assert!(matches!(again.result, Ok(Outcome::Held { .. })));
    assert_eq!(again.not_modified, 1, "{again:?}");

    // The wave opens: the next check-in says "check now", once.
    let mut waited = 0;
    while !w.checkin_hints().check_updates {
        waited += 1;
        assert!(waited < 100, "the wave did not open");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!w.checkin_hints().check_updates, "a hint is given once");
    let (id, downloaded, _) = staged(&updater.check().result);
    assert!(id.as_str().starts_with("2026.2-"), "{id}");
    assert_eq!(downloaded, ["base"]);
    assert_eq!(w.current(), running);

    let events = w.server.events(w.node_id);
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("update held: 2026.2") && e.contains("wave 2 of 2 opens at")),
        "{events:#?}"
    );
    let status = w.admin().rollout_status().unwrap();
    assert_eq!(status.waves[1].counts.took, 1, "{status:#?}");
    assert_eq!(status.waves[1].counts.nodes, 1);
}

#[test]
fn pause_stops_a_node_taking_the_release_and_resume_lets_it() {
    let w = World::new();
    let mut updater = w.updater();
    w.release_base("2026.2", 1000);
    w.server.publish(w.repo.dir());
    w.rollout("2026.2", WavePlan::one_wave(), 0);
    w.admin().pause_rollout().unwrap();
    for _ in 0..2 {
        match updater.check().result {
            Ok(Outcome::Held { reason }) => assert!(reason.contains("is paused"), "{reason}"),
            other => panic!("expected to hold, got {other:?}"),
        }
    }
    assert_eq!(w.staged(), None);
    w.admin().resume_rollout().unwrap();
    let (id, _, _) = staged(&updater.check().result);
    assert!(id.as_str().starts_with("2026.2-"), "{id}");
}

#[test]
fn a_release_in_the_repository_that_no_rollout_allows_is_never_installed() {
    let w = World::new();
    let mut updater = w.updater();
    let running = w.current();
    w.release_base("2026.2", 1000);
    w.server.publish(w.repo.dir());
    w.rollout("2026.2", WavePlan::one_wave(), 0);
    // Staff publish 2026.3 but roll nothing new out.
    w.release_base("2026.3", 1000);
    w.server.publish(w.repo.dir());
    for _ in 0..3 {
        match updater.check().result {
            Ok(Outcome::Waiting { allowed, published }) => {
                assert!(allowed.as_str().starts_with("2026.2-"), "{allowed}");
                assert!(published.as_str().starts_with("2026.3-"), "{published}");
            }
            other => panic!("expected to wait, got {other:?}"),
        }
        assert_eq!(w.staged(), None);
        assert_eq!(w.current(), running);
    }
    assert!(w.cache_files().is_empty(), "nothing downloaded");
    // Once it is rolled out, it is taken.
    w.rollout("2026.3", WavePlan::one_wave(), 0);
    let (id, _, _) = staged(&updater.check().result);
    assert!(id.as_str().starts_with("2026.3-"), "{id}");
    let rollouts = w.admin().rollouts(10).unwrap();
    assert_eq!(rollouts[1].state.as_str(), "superseded");
}

#[test]
fn an_abort_sends_a_node_that_took_the_release_back_to_its_previous_deployment() {
    let w = World::new();
    let mut updater = w.updater();
    let first = w.current();
    w.release_base("2026.2", 1000);
    w.server.publish(w.repo.dir());
    w.rollout("2026.2", WavePlan::one_wave(), 0);
    let (second, _, _) = staged(&updater.check().result);
    w.boot_staged_and_prove_healthy();
    assert_eq!(w.current(), second);
    let pinned = updater.check();
    assert_eq!(
        pinned.result.as_ref().unwrap(),
        &Outcome::UpToDate {
            deployment: second.clone()
        }
    );
    assert_eq!(pinned.requests, 1, "pinned to what runs: {pinned:?}");

    w.admin().abort_rollout().unwrap();
    assert!(w.checkin_hints().check_updates, "told to check at once");
    match updater.check().result {
        Ok(Outcome::Reverted {
            from,
            to: Some(to),
            newly: true,
        }) => {
            assert_eq!(from, second);
            assert_eq!(to, first);
        }
        other => panic!("expected a revert, got {other:?}"),
    }
    assert_eq!(w.staged(), Some(first.clone()));
    // What the CD then does: activate the staged (previous) deployment.
    w.boot_staged_and_prove_healthy();
    assert_eq!(w.current(), first);
    for _ in 0..2 {
        match updater.check().result {
            Ok(Outcome::Held { reason }) => assert!(reason.contains("aborted"), "{reason}"),
            other => panic!("expected to hold, got {other:?}"),
        }
        assert_eq!(w.staged(), None, "the aborted release is not taken again");
    }
    let events = w.server.events(w.node_id);
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("update reverted: 2026.2") && e.contains(first.as_str())),
        "{events:#?}"
    );
    let status = w.admin().rollout_status().unwrap();
    assert_eq!(status.total.reverted, 1, "{status:#?}");
}

// ------------------------------------------------------------------- mirrors

/// A CA of the mirror's own and a certificate for 127.0.0.1 it issued.
struct MirrorPki {
    ca_pem: String,
    cert: PathBuf,
    key: PathBuf,
}

fn mirror_pki(dir: &Path) -> MirrorPki {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test mirror CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
    let key = rcgen::KeyPair::generate().unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    fs::create_dir_all(dir).unwrap();
    let (cert_path, key_path) = (dir.join("mirror.pem"), dir.join("mirror.key"));
    fs::write(&cert_path, cert.pem()).unwrap();
    fs::write(&key_path, key.serialize_pem()).unwrap();
    MirrorPki {
        ca_pem: ca_cert.pem(),
        cert: cert_path,
        key: key_path,
    }
}

/// Debian's nginx serving a repository directory over HTTPS, started by
/// the test on a free port and stopped when dropped (only this process).
struct Nginx {
    child: std::process::Child,
    port: u16,
    prefix: PathBuf,
}

impl Nginx {
    /// `missing` is the status for a file that is not there: 404, or 403
    /// like an object store that does not allow listing.
    fn serve(root: &Path, pki: &MirrorPki, prefix: &Path, missing: u16) -> Option<Nginx> {
        let bin = Path::new("/usr/sbin/nginx");
        if !bin.is_file() {
            eprintln!(
                "SKIP: nginx is not installed (apt-get install -y --no-install-recommends nginx)"
            );
            return None;
        }
        fs::create_dir_all(prefix.join("logs")).unwrap();
        let port = free_port();
        let p = prefix.display();
        let conf = format!(
            "user root;
worker_processes 1;
daemon off;
pid {p}/nginx.pid;
error_log {p}/logs/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log {p}/logs/access.log;
    client_body_temp_path {p}/body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {root};
        location / {{ try_files $uri ={missing}; }}
    }}
}}
",
            cert = pki.cert.display(),
            key = pki.key.display(),
            root = root.display()
        );
        let conf_path = prefix.join("nginx.conf");
        fs::write(&conf_path, conf).unwrap();
        let child = std::process::Command::new(bin)
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(&conf_path)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut nginx = Nginx {
            child,
            port,
            prefix: prefix.to_path_buf(),
        };
        for _ in 0..400 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(nginx);
            }
            if let Ok(Some(status)) = nginx.child.try_wait() {
                panic!(
                    "nginx exited ({status}): {}",
                    fs::read_to_string(prefix.join("logs/error.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("nginx did not start listening on port {port}");
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Its access log: (request line, status) per request.
    fn requests(&self) -> Vec<(String, u16)> {
        fs::read_to_string(self.prefix.join("logs/access.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (_, rest) = l.split_once('"')?;
                let (request, rest) = rest.split_once('"')?;
                let status = rest.split_whitespace().next()?.parse().ok()?;
                Some((request.to_string(), status))
            })
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM is nginx's fast shutdown: the master stops its worker.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

impl World {
    /// Adds `[repository]` settings to the server's config (before it serves).
    fn configure_server(&self, text: &str) {
        let path = self.server.workdir.join(config::server::FILE_NAME);
        let mut config = fs::read_to_string(&path).unwrap();
        config.push_str(text);
        fs::write(&path, config).unwrap();
    }

    /// Gives the node's own config these mirrors.
    fn node_mirrors(&self, mirrors: Vec<config::node::Mirror>) {
        let path = self.disk().node_config_path();
        let mut config = config::NodeConfig::load(&path).unwrap();
        config.mirrors = mirrors;
        fs::write(&path, config.to_toml()).unwrap();
    }
}

#[test]
fn a_node_updates_from_an_nginx_mirror_while_the_boot_server_serves_no_packages() {
    let w = World::with(Setup {
        serving: false,
        ..Setup::default()
    });
    let pki = mirror_pki(&w.dir.path().join("mirror-pki"));
    w.release_base("2026.2", 300_000);
    let mirror_dir = w.copy_repo("mirror");
    // An object store without listing: missing files are 403.
    let Some(nginx) = Nginx::serve(&mirror_dir, &pki, &w.dir.path().join("nginx"), 403) else {
        return;
    };
    let ca_file = w.dir.path().join("mirror-ca.pem");
    fs::write(&ca_file, &pki.ca_pem).unwrap();
    w.configure_server(&format!(
        "\n[repository]\nserve_packages = false\n\n[[repository.mirror]]\nurl = \"{}\"\nca = \"{}\"\n",
        nginx.url(),
        ca_file.display()
    ));
    w.server.serve();
    w.server.publish(w.repo.dir());

    let mut updater = w.updater();
    let report = updater.check();
    let (id, downloaded, _) = staged(&report.result);
    assert!(id.as_str().starts_with("2026.2-"), "{id}");
    assert_eq!(downloaded, ["base"]);
    let requests = nginx.requests();
    assert!(
        requests
            .iter()
            .any(|(r, s)| r.starts_with("GET /targets/") && r.contains("base-2026.2") && *s == 200),
        "the package came from the mirror: {requests:#?}"
    );
    assert!(
        requests
            .iter()
            .any(|(r, s)| r.starts_with("GET /metadata/2.root.json") && *s == 403),
        "a 403 for the next root ended the walk: {requests:#?}"
    );
    // The boot server itself refuses packages here.
    let http = pkgsign::net::build_client(&pkgsign::net::ClientOptions::new(
        fs::read(w.disk().trust_dir().join("ca.pem")).unwrap(),
    ))
    .unwrap();
    let path = w.repo.status().unwrap().targets.unwrap().targets["base"]
        .path
        .clone();
    let refused = http
        .get(format!("https://127.0.0.1:{}/repo/{path}", w.server.port))
        .send()
        .unwrap();
    assert_eq!(refused.status().as_u16(), 404);
}

#[test]
fn a_mirror_serving_a_swapped_or_stale_file_is_skipped_for_the_next() {
    let w = World::new();
    let pki = mirror_pki(&w.dir.path().join("mirror-pki"));
    // Stale: a copy taken before the release.
    let stale_dir = w.copy_repo("stale");
    w.release_base("2026.2", 300_000);
    w.server.publish(w.repo.dir());
    // Swapped: the new metadata, but other bytes under the package's name.
    let swapped_dir = w.copy_repo("swapped");
    let path = w.repo.status().unwrap().targets.unwrap().targets["base"]
        .path
        .clone();
    let real = fs::read(swapped_dir.join(&path)).unwrap();
    let mut other = real.clone();
    let middle = other.len() / 2;
    other[middle] ^= 0xff;
    fs::write(swapped_dir.join(&path), &other).unwrap();
    let Some(stale) = Nginx::serve(&stale_dir, &pki, &w.dir.path().join("nginx-stale"), 404) else {
        return;
    };
    let Some(swapped) = Nginx::serve(&swapped_dir, &pki, &w.dir.path().join("nginx-swapped"), 404)
    else {
        return;
    };
    let mirror = |url: String| config::node::Mirror {
        url: url.parse().unwrap(),
        ca: Some(pki.ca_pem.clone()),
    };
    w.node_mirrors(vec![mirror(stale.url()), mirror(swapped.url())]);

    let mut updater = w.updater();
    let report = updater.check();
    let (id, downloaded, _) = staged(&report.result);
    assert!(id.as_str().starts_with("2026.2-"), "{id}");
    assert_eq!(downloaded, ["base"]);
    // The stale mirror's timestamp was asked for, and nothing else of it
    // counted; the swapped mirror's package was fetched and refused; the
    // boot server served the real one.
    let stale_requests = stale.requests();
    assert!(
        stale_requests
            .iter()
            .any(|(r, _)| r.starts_with("GET /metadata/timestamp.json")),
        "{stale_requests:#?}"
    );
    assert!(
        swapped
            .requests()
            .iter()
            .any(|(r, s)| r.contains("base-2026.2") && *s == 200),
        "{:#?}",
        swapped.requests()
    );
    let disk = w.disk();
    let record = disk.record(&id).unwrap();
    init::deploy::check_deployment(&disk, &record, true).unwrap();

    // A mirror whose certificate does not chain to the CA it was given is
    // skipped too (the CD's CA is not the mirror's).
    w.boot_staged_and_prove_healthy();
    w.release_base("2026.3", 1000);
    w.server.publish(w.repo.dir());
    w.node_mirrors(vec![config::node::Mirror {
        url: swapped.url().parse().unwrap(),
        ca: None,
    }]);
    let mut updater = w.updater();
    let (id3, _, _) = staged(&updater.check().result);
    assert!(id3.as_str().starts_with("2026.3-"), "{id3}");
}

#[test]
fn a_staged_release_the_rollout_does_not_allow_is_dropped() {
    let w = World::new();
    let mut updater = w.updater();
    // Staged before any rollout existed (whatever was published).
    w.release_base("2026.2", 1000);
    w.server.publish(w.repo.dir());
    let (early, _, _) = staged(&updater.check().result);
    assert_eq!(w.staged(), Some(early));
    // Staff publish 2026.3 and roll it out; this node's wave is later.
    w.release_base("2026.3", 1000);
    w.server.publish(w.repo.dir());
    w.rollout("2026.3", second_wave_for(w.node_id), 3600);
    match updater.check().result {
        Ok(Outcome::Held { .. }) => {}
        other => panic!("expected to hold, got {other:?}"),
    }
    assert_eq!(
        w.staged(),
        None,
        "the CD is not left a release nobody allowed"
    );
}
