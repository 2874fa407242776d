//! The whole boot chain for a scenario: signed repository, boot server,
//! registered node, customised CD, a QEMU guest with a blank disk.
//!
//! What every scenario shares is built once per machine state and cached
//! under the target directory ([`Shared`]): the static init, the release
//! key, a boot server CA with a server certificate for 10.0.2.2 (the host as
//! a QEMU guest sees it), the node OS packages in a signed repository, and
//! the base CD. Each scenario gets a [`Lab`]: its own boot server (the real
//! `bootserver` binary, its own SQLite database, the shared certificate as
//! "the site's own PKI"), its own nodes, CDs and disks.

use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use bootserver::admin::{
    self, Admin, ConfigUrls, InitOptions, NewNode, NodeConfigFormat, NodeRef, SiteCertificate,
};
use config::api::BootState;
use config::node::NodeId;
use pkgsign::metadata::RoleType;
use pkgsign::repo::{Expiries, Repository, RoleSpec};
use pkgsign::SecretKey;

use crate::artifacts::{self, target_dir, workspace_root, ArtifactError};
use crate::qemu::{Disk, DiskBus, Firmware, Qemu, QemuConfig};

/// Bump when what [`Shared`] builds changes shape.
const CACHE_VERSION: &str = "world-4";
/// The address of the host's loopback as a QEMU user-mode guest sees it.
pub const HOST_FROM_GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// The version of the node OS packages in the shared repository.
pub const OS_VERSION: &str = "2026.11.1";
pub const CD_VERSION: &str = "2026.11-test";
/// The boot server port on the shared CD. Labs pick free ports and put
/// them in node configs; a node config without server URLs (PlanetLab's
/// plnode.txt has none) makes the node use this one, so only the lab that
/// serves on it ([`Lab::new_on_cd_port`]) may boot such a node.
pub const CD_SERVER_PORT: u16 = 18443;

/// Artefacts shared by every scenario (see the module docs).
#[derive(Debug, Clone)]
pub struct Shared {
    pub dir: PathBuf,
    pub init: PathBuf,
    /// One key holds every repository role (threshold 1) and signs the CD.
    pub release_key: PathBuf,
    pub release_pub: PathBuf,
    /// The published repository (kernel, base, sliver-ref at OS_VERSION).
    pub repo: PathBuf,
    pub ca_pem: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// The signed base CD (no node config).
    pub iso: PathBuf,
}

fn fail<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> ArtifactError + '_ {
    move |e| ArtifactError::Failed(format!("{what}: {e}"))
}

/// A CA and a server certificate for `localhost`, 127.0.0.1 and 10.0.2.2.
fn make_pki(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf), ArtifactError> {
    let mut ca_params =
        rcgen::CertificateParams::new(Vec::<String>::new()).map_err(fail("CA parameters"))?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "plnode test site CA");
    let ca_key = rcgen::KeyPair::generate().map_err(fail("CA key"))?;
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(fail("CA certificate"))?;
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .map_err(fail("server parameters"))?;
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress(HOST_FROM_GUEST.into()));
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress(Ipv4Addr::LOCALHOST.into()));
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "plnode test boot server");
    let key = rcgen::KeyPair::generate().map_err(fail("server key"))?;
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(fail("server certificate"))?;
    let (ca_pem, cert_pem, key_pem) = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    fs::write(&ca_pem, ca_cert.pem()).map_err(fail("writing the CA"))?;
    fs::write(&cert_pem, cert.pem()).map_err(fail("writing the server certificate"))?;
    fs::write(&key_pem, key.serialize_pem()).map_err(fail("writing the server key"))?;
    Ok((ca_pem, cert_pem, key_pem))
}

/// A key for every repository role and a repository signed with it.
pub fn new_repository(dir: &Path, key: &SecretKey) -> Result<Repository, ArtifactError> {
    let spec = RoleSpec {
        keys: vec![key.public().clone()],
        threshold: 1,
    };
    let roles: BTreeMap<RoleType, RoleSpec> = RoleType::ALL
        .into_iter()
        .map(|r| (r, spec.clone()))
        .collect();
    let expires = floor::Timestamp::now().plus(Duration::from_secs(365 * 86_400));
    Repository::init(dir, &roles, expires, std::slice::from_ref(key))
        .map_err(fail("creating the repository"))
}

/// Publishes pending packages, everything valid for `days`.
pub fn publish(repo: &Repository, key: &SecretKey, days: u64) -> Result<(), ArtifactError> {
    let t = floor::Timestamp::now().plus(Duration::from_secs(days * 86_400));
    repo.publish(
        std::slice::from_ref(key),
        &Expiries {
            targets: t,
            snapshot: t,
            timestamp: t,
        },
    )
    .map_err(fail("publishing"))?;
    Ok(())
}

/// Builds the node OS packages (config/examples/nodeos.toml, with the
/// given init and version) into `repo`'s pending set. `supervisor_toml`
/// replaces the services file of `base` (e.g. for a base that fails).
pub fn build_packages(
    repo: &Path,
    init: &Path,
    version: &str,
    only: Option<&[&str]>,
    supervisor_toml: Option<&str>,
) -> Result<(), ArtifactError> {
    build_packages_with(repo, init, version, only, supervisor_toml, |_| {})
}

/// [`build_packages`], with a last change to the spec.
pub fn build_packages_with(
    repo: &Path,
    init: &Path,
    version: &str,
    only: Option<&[&str]>,
    supervisor_toml: Option<&str>,
    adjust: impl FnOnce(&mut mkimage::spec::ImageSpec),
) -> Result<(), ArtifactError> {
    let examples = workspace_root().join("config/examples");
    let spec_path = examples.join("nodeos.toml");
    let mut spec =
        mkimage::spec::ImageSpec::load(&spec_path).map_err(fail("reading the image spec"))?;
    spec.version = version.to_string();
    adjust(&mut spec);
    let scratch = tempfile::tempdir().map_err(fail("making a scratch directory"))?;
    if let (Some(text), Some(base)) = (supervisor_toml, spec.base.as_mut()) {
        let path = scratch.path().join("supervisor.toml");
        fs::write(&path, text).map_err(fail("writing supervisor.toml"))?;
        for f in &mut base.files {
            if f.dest == "/etc/plnode/supervisor.toml" {
                f.path = path.clone();
            }
        }
    }
    let mut binaries = BTreeMap::new();
    binaries.insert("init".to_string(), init.to_path_buf());
    // The node manager is in every base (config/examples/nodeos.toml).
    binaries.insert("nodemgr".to_string(), artifacts::build_nodemgr()?);
    binaries.insert("sensors".to_string(), artifacts::build_sensors()?);
    binaries.insert("bwcap".to_string(), artifacts::build_bwcap()?);
    let opts = mkimage::build::BuildOptions {
        spec,
        spec_dir: examples,
        binaries,
        mtime: mkimage::archive::Mtime(1_795_000_000),
        only: only.map(|names| names.iter().map(|n| n.to_string()).collect()),
        out_dir: None,
        repo: Some(repo.to_path_buf()),
    };
    mkimage::build::build(&opts).map_err(fail("mkimage build"))?;
    Ok(())
}

fn file_digest(path: &Path) -> Result<String, ArtifactError> {
    use sha2::Digest;
    let bytes = fs::read(path).map_err(fail("reading init"))?;
    Ok(hex::encode(sha2::Sha256::digest(&bytes)))
}

/// Holds an exclusive lock on a file while alive (between test processes).
struct DirLock {
    _file: fs::File,
}

impl DirLock {
    fn take(path: &Path) -> Result<DirLock, ArtifactError> {
        use std::os::fd::AsRawFd;
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(fail("opening the cache lock"))?;
        // SAFETY: flock on a file descriptor we own; released when it closes.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(ArtifactError::Failed(format!(
                "locking {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            )));
        }
        Ok(DirLock { _file: f })
    }
}

impl Shared {
    /// The shared artefacts, built on first use (by whichever test process
    /// comes first; the others wait on a lock and reuse them).
    pub fn get() -> Result<&'static Shared, ArtifactError> {
        static SHARED: OnceLock<Result<Shared, String>> = OnceLock::new();
        let r = SHARED.get_or_init(|| {
            Shared::build().map_err(|e| match e {
                ArtifactError::Unavailable(m) => format!("UNAVAILABLE:{m}"),
                ArtifactError::Failed(m) => m,
            })
        });
        match r {
            Ok(s) => Ok(s),
            Err(m) => match m.strip_prefix("UNAVAILABLE:") {
                Some(rest) => Err(ArtifactError::Unavailable(rest.to_string())),
                None => Err(ArtifactError::Failed(m.clone())),
            },
        }
    }

    fn build() -> Result<Shared, ArtifactError> {
        crate::qemu::available(Firmware::Bios)
            .map_err(|e| ArtifactError::Unavailable(e.to_string()))?;
        let init = artifacts::build_init()?;
        let base = target_dir().join("qemu-world");
        fs::create_dir_all(&base).map_err(fail("creating the cache"))?;
        let _lock = DirLock::take(&base.join(".lock"))?;
        let nodemgr = artifacts::build_nodemgr()?;
        let sensors = artifacts::build_sensors()?;
        let bwcap = artifacts::build_bwcap()?;
        let stamp_key = format!(
            "{CACHE_VERSION} init={} nodemgr={} sensors={} bwcap={}",
            file_digest(&init)?,
            file_digest(&nodemgr)?,
            file_digest(&sensors)?,
            file_digest(&bwcap)?
        );
        let dir = base.join("current");
        let shared = Shared {
            init: init.clone(),
            release_key: dir.join("release.key"),
            release_pub: dir.join("release.pub"),
            repo: dir.join("repo"),
            ca_pem: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            iso: dir.join("plnode.iso"),
            dir: dir.clone(),
        };
        if fs::read_to_string(dir.join("stamp")).ok().as_deref() == Some(stamp_key.as_str()) {
            return Ok(shared);
        }
        eprintln!(
            "qemu-tests: building the shared keys, repository and CD in {}",
            dir.display()
        );
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(fail("creating the cache"))?;
        let key = SecretKey::generate().map_err(fail("generating the release key"))?;
        key.save_new(&shared.release_key)
            .map_err(fail("saving the release key"))?;
        fs::write(
            &shared.release_pub,
            key.public()
                .to_pem()
                .map_err(fail("encoding the public key"))?,
        )
        .map_err(fail("writing the public key"))?;
        make_pki(&dir)?;
        let repo = new_repository(&shared.repo, &key)?;
        build_packages(&shared.repo, &init, OS_VERSION, None, None)?;
        publish(&repo, &key, 365)?;
        let url = format!("https://{HOST_FROM_GUEST}:{CD_SERVER_PORT}");
        let trust = artifacts::CdTrust {
            release_key: shared.release_key.clone(),
            release_pub: shared.release_pub.clone(),
            root_json: shared.repo.join("metadata/root.json"),
            repo: shared.repo.clone(),
            ca_pem: shared.ca_pem.clone(),
            ca_key_pem: PathBuf::new(),
        };
        let opts = artifacts::cd_options(&shared.iso, &init, &trust, CD_VERSION, &url)?;
        artifacts::build_cd(&opts)?;
        fs::write(dir.join("stamp"), &stamp_key).map_err(fail("writing the stamp"))?;
        Ok(shared)
    }
}

/// A boot server running in this process: the `bootserver` admin API on
/// its own working directory and SQLite database, serving on 127.0.0.1
/// until the test process ends (or [`BootServer::restart`]).
#[derive(Debug)]
pub struct BootServer {
    pub workdir: PathBuf,
    pub port: u16,
    serving: std::sync::Mutex<Option<Serving>>,
}

/// The thread serving, and how to stop it.
#[derive(Debug)]
struct Serving {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl BootServer {
    /// Serves `workdir` on 127.0.0.1:`port` in a thread of this process.
    fn serve(workdir: &Path, port: u16) -> anyhow::Result<BootServer> {
        let server = BootServer {
            workdir: workdir.to_path_buf(),
            port,
            serving: std::sync::Mutex::new(None),
        };
        server.start_serving()?;
        Ok(server)
    }

    fn start_serving(&self) -> anyhow::Result<()> {
        let listen = format!("127.0.0.1:{}", self.port);
        let admin = Admin::open(&self.workdir)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serve_at = listen.parse()?;
        let serve_listen = listen.clone();
        let thread = std::thread::Builder::new()
            .name(format!("bootserver-{}", self.port))
            .spawn(move || {
                let shutdown = async {
                    let _ = stopped.await;
                };
                if let Err(e) = admin.serve(Some(serve_at), |_| {}, shutdown) {
                    let e = anyhow::Error::from(e);
                    eprintln!("bootserver serve on {serve_listen} stopped: {e:#}");
                }
            })?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                bail!("the boot server did not start listening on {listen} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        *self.serving.lock().unwrap_or_else(|e| e.into_inner()) = Some(Serving { stop, thread });
        Ok(())
    }

    /// Stops serving (requests in flight finish), lets `change` edit the
    /// server's bootserver.toml, and serves again on the same port: what
    /// staff do to change its configuration. Nodes see a short outage.
    pub fn restart(&self, change: impl FnOnce(&str) -> String) -> anyhow::Result<()> {
        let serving = self
            .serving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(s) = serving {
            let _ = s.stop.send(());
            let _ = s.thread.join();
        }
        let cfg = self.workdir.join(config::server::FILE_NAME);
        let text = fs::read_to_string(&cfg)?;
        fs::write(&cfg, change(&text))?;
        self.start_serving()
    }
}

/// The site every lab's nodes belong to.
pub const SITE: &str = "testsite";

impl BootServer {
    /// The URL a guest uses.
    pub fn guest_url(&self) -> String {
        format!("https://{HOST_FROM_GUEST}:{}", self.port)
    }

    /// The admin API on this server's working directory.
    pub fn admin(&self) -> anyhow::Result<Admin> {
        Ok(Admin::open(&self.workdir)?)
    }

    /// Registers `hostname` at [`SITE`] (DHCP, state `reinstall`) and writes
    /// its node.toml, with this server's URLs, to `config`; returns its id.
    pub fn add_node(&self, hostname: &str, config: &Path) -> anyhow::Result<u64> {
        let spec = NewNode::new(SITE.parse()?, hostname, None)?;
        self.add_node_with(
            &spec,
            &ConfigUrls::FromServer,
            config,
            NodeConfigFormat::NodeToml,
        )
    }

    /// Registers the node `spec` describes and writes its config to `config`
    /// in `format`; returns its id.
    pub fn add_node_with(
        &self,
        spec: &NewNode,
        urls: &ConfigUrls,
        config: &Path,
        format: NodeConfigFormat,
    ) -> anyhow::Result<u64> {
        let (node, node_config) = self.admin()?.add_node(spec, urls)?;
        admin::files::write_node_config(config, &node_config, format)?;
        Ok(node.id.0)
    }

    /// Sets the boot state the node is told at its next check-in.
    pub fn set_state(&self, node: u64, state: BootState) -> anyhow::Result<()> {
        self.admin()?
            .set_boot_state(&NodeRef::Id(NodeId(node)), state)?;
        Ok(())
    }

    /// Asks the running node to reboot at its next check-in.
    pub fn request_reboot(&self, node: u64) -> anyhow::Result<()> {
        self.admin()?.request_reboot(&NodeRef::Id(NodeId(node)))?;
        Ok(())
    }

    /// Gives the node a new key and writes its new node.toml to `config`.
    pub fn rekey(&self, node: u64, config: &Path) -> anyhow::Result<()> {
        let (_, node_config) = self
            .admin()?
            .rekey(&NodeRef::Id(NodeId(node)), &ConfigUrls::FromServer)?;
        admin::files::write_node_config(config, &node_config, NodeConfigFormat::NodeToml)?;
        Ok(())
    }

    /// Verifies the signed repository at `repo` and serves it.
    pub fn publish(&self, repo: &Path) -> anyhow::Result<()> {
        self.admin()?.publish(repo, None)?;
        Ok(())
    }

    fn open(&self) -> anyhow::Result<rusqlite::Connection> {
        let wd = bootserver::workdir::WorkDir::open(&self.workdir)?;
        Ok(wd.open_db()?)
    }

    /// The registry's record of a node, as `node show --json` prints it.
    pub fn node(&self, node: u64) -> anyhow::Result<serde_json::Value> {
        let conn = self.open()?;
        let n = bootserver::registry::get_node(&conn, config::node::NodeId(node))?;
        Ok(serde_json::to_value(&n)?)
    }

    /// Failed authentications the server counted for `node`.
    pub fn auth_failures(&self, node: u64) -> anyhow::Result<u64> {
        let conn = self.open()?;
        Ok(bootserver::registry::auth_failures(&conn, node)?
            .iter()
            .map(|f| f.count)
            .sum())
    }

    /// The node's log, newest first, one line per event.
    pub fn node_log(&self, node: u64) -> String {
        let events = self.open().and_then(|c| {
            Ok(bootserver::registry::node_events(
                &c,
                config::node::NodeId(node),
                40,
            )?)
        });
        match events {
            Ok(events) if events.is_empty() => "(nothing reported)".into(),
            Ok(events) => events
                .iter()
                .map(|e| {
                    let mut line = format!("{} {:?} {} {}", e.at, e.kind, e.step, e.message);
                    for t in e.log_tail.iter().rev().take(15).rev() {
                        line.push_str(&format!("\n    | {t}"));
                    }
                    line
                })
                .collect::<Vec<_>>()
                .join("\n"),
            Err(e) => format!("(cannot read the node log: {e})"),
        }
    }
}

impl BootServer {
    /// `bootserver slice create` + `slice add-key` + `slice add-node`: a
    /// slice with `rspec`, `initscript` and the users' `keys`, assigned to
    /// `node`, its lease ending in 30 days.
    pub fn assign_slice(
        &self,
        slice: &str,
        rspec: config::rspec::Rspec,
        initscript: Option<&str>,
        keys: &[String],
        node: u64,
    ) -> anyhow::Result<()> {
        use bootserver::admin::{LeaseEnd, SliceSpec};
        let admin = self.admin()?;
        let name: bootserver::model::SliceName = slice.parse()?;
        admin.create_slice(&SliceSpec {
            name: name.clone(),
            description: String::new(),
            rspec,
            initscript: initscript.map(str::to_string),
            lease: LeaseEnd::DaysFromNow(30),
        })?;
        let keys = keys
            .iter()
            .map(|k| k.parse())
            .collect::<Result<Vec<bootserver::model::SshPublicKey>, _>>()?;
        admin.add_slice_keys(&name, &keys)?;
        admin.add_nodes_to_slice(
            &name,
            &[bootserver::admin::NodeRef::Id(config::node::NodeId(node))],
        )?;
        Ok(())
    }
}

/// A registered node: its id and config file.
#[derive(Debug, Clone)]
pub struct NodeReg {
    pub id: u64,
    pub config: PathBuf,
    pub hostname: String,
}

/// One scenario's world.
#[derive(Debug)]
pub struct Lab {
    pub shared: &'static Shared,
    pub dir: PathBuf,
    pub server: BootServer,
}

/// `key = value` in the `[nodes]` section of a bootserver.toml's text,
/// replacing the key's line when there is one.
fn set_nodes_setting(text: &str, key: &str, value: &str) -> anyhow::Result<String> {
    let line = format!("{key} = {value}");
    let existing = regex::Regex::new(&format!(r"(?m)^{}\s*=.*$", regex::escape(key)))?;
    Ok(if existing.is_match(text) {
        existing.replace(text, regex::NoExpand(&line)).into_owned()
    } else if text.contains("[nodes]") {
        text.replacen("[nodes]", &format!("[nodes]\n{line}"), 1)
    } else {
        format!("{text}\n[nodes]\n{line}\n")
    })
}

/// A TCP port on 127.0.0.1 that nothing listens on now.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// Where a guest should find the installed disk etc.
#[derive(Debug)]
pub struct Boot {
    pub firmware: Firmware,
    pub iso: PathBuf,
    pub disks: Vec<Disk>,
    pub rtc_base: Option<String>,
    pub extra_args: Vec<String>,
}

impl Lab {
    /// A new lab for scenario `name`; `Err(Unavailable)` means SKIP.
    pub fn new(name: &str) -> Result<Lab, ArtifactError> {
        Lab::create(name, None, &[])
    }

    /// A lab whose boot server hands these staff ssh keys (public key
    /// lines) to its nodes, for root logins.
    pub fn with_staff_keys(name: &str, keys: &[String]) -> Result<Lab, ArtifactError> {
        Lab::create(name, None, keys)
    }

    /// A lab whose boot server listens on the CD's own port.
    pub fn new_on_cd_port(name: &str) -> Result<Lab, ArtifactError> {
        Lab::create(name, Some(CD_SERVER_PORT), &[])
    }

    /// A lab for a test: `None` (after printing SKIP and why) where QEMU or
    /// the tools are missing; panics on any other failure.
    pub fn for_test(name: &str) -> Option<Lab> {
        match Lab::new(name) {
            Ok(l) => Some(l),
            Err(ArtifactError::Unavailable(why)) => {
                eprintln!("SKIP: {why}");
                None
            }
            Err(e) => panic!("{e}"),
        }
    }

    fn create(name: &str, port: Option<u16>, staff_keys: &[String]) -> Result<Lab, ArtifactError> {
        let shared = Shared::get()?;
        let dir = target_dir()
            .join("qemu-runs")
            .join(format!("{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(fail("creating the lab directory"))?;
        let server = Lab::start_server(shared, &dir.join("server"), true, port, staff_keys)
            .map_err(|e| ArtifactError::Failed(format!("{e:#}")))?;
        Ok(Lab {
            shared,
            dir,
            server,
        })
    }

    /// Starts another boot server for this lab. With `site_pki` false it
    /// makes its own CA, which the shared CD does not trust.
    pub fn extra_server(&self, name: &str, site_pki: bool) -> anyhow::Result<BootServer> {
        Lab::start_server(self.shared, &self.dir.join(name), site_pki, None, &[])
    }

    fn start_server(
        shared: &Shared,
        workdir: &Path,
        site_pki: bool,
        port: Option<u16>,
        staff_keys: &[String],
    ) -> anyhow::Result<BootServer> {
        let port = match port {
            Some(p) => p,
            None => free_port()?,
        };
        let listen = format!("127.0.0.1:{port}");
        let url = format!("https://{HOST_FROM_GUEST}:{port}");
        let options = InitOptions {
            hosts: vec!["localhost".parse().map_err(anyhow::Error::msg)?],
            ips: vec![HOST_FROM_GUEST.into(), Ipv4Addr::LOCALHOST.into()],
            listen: listen.parse()?,
            urls: vec![url.parse().map_err(anyhow::Error::msg)?],
            site_certificate: site_pki.then(|| SiteCertificate {
                cert: shared.server_cert.clone(),
                key: shared.server_key.clone(),
                ca: shared.ca_pem.clone(),
            }),
        };
        Admin::init(workdir, &options)?;
        // Scenarios want quick check-ins from the installed node.
        let cfg = workdir.join(config::server::FILE_NAME);
        let text = fs::read_to_string(&cfg)?;
        let mut text = set_nodes_setting(&text, "checkin_interval_secs", "5")?;
        if !staff_keys.is_empty() {
            let keys: Vec<String> = staff_keys
                .iter()
                .map(|k| toml::Value::String(k.trim().to_string()).to_string())
                .collect();
            text = set_nodes_setting(&text, "debug_ssh_keys", &format!("[{}]", keys.join(", ")))?;
        }
        fs::write(&cfg, text)?;
        // The first publish names the root the CDs carry.
        let root = shared.repo.join("metadata/1.root.json");
        let admin = Admin::open(workdir)?;
        admin.publish(&shared.repo, Some(&root))?;
        admin.add_site(&SITE.parse()?, "")?;
        drop(admin);
        BootServer::serve(workdir, port)
    }

    /// Registers a node at [`SITE`] (DHCP, state `reinstall`, changed by
    /// each of `changes`) and returns its id and config path.
    pub fn add_node(
        &self,
        hostname: &str,
        changes: &[fn(&mut NewNode)],
    ) -> anyhow::Result<NodeReg> {
        let config = self.dir.join(format!("{hostname}.toml"));
        let mut spec = NewNode::new(SITE.parse()?, hostname, None)?;
        for change in changes {
            change(&mut spec);
        }
        let id = self.server.add_node_with(
            &spec,
            &ConfigUrls::FromServer,
            &config,
            NodeConfigFormat::NodeToml,
        )?;
        Ok(NodeReg {
            id,
            config,
            hostname: hostname.to_string(),
        })
    }

    /// The base CD customised with `node`'s config.
    pub fn node_iso(&self, node: &NodeReg) -> anyhow::Result<PathBuf> {
        let out = self.dir.join(format!("{}.iso", node.hostname));
        bootcd::customize::customize(&self.shared.iso, &node.config, &out)
            .map_err(|e| anyhow!("bootcd customize: {e}"))?;
        Ok(out)
    }

    /// A blank qcow2 disk of `gib` GiB.
    pub fn blank_disk(&self, name: &str, gib: u64) -> anyhow::Result<Disk> {
        let path = self.dir.join(format!("{name}.qcow2"));
        let out = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&path)
            .arg(format!("{gib}G"))
            .output()
            .context("running qemu-img")?;
        if !out.status.success() {
            bail!("qemu-img create: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(Disk {
            path,
            format: "qcow2",
            bus: DiskBus::Virtio,
            snapshot: false,
        })
    }

    /// Starts a guest.
    pub fn boot(&self, run_name: &str, boot: Boot) -> anyhow::Result<Qemu> {
        self.boot_forwarding(run_name, boot, &[])
    }

    /// [`Lab::boot`] with host ports forwarded to the guest: (host, guest).
    pub fn boot_forwarding(
        &self,
        run_name: &str,
        boot: Boot,
        forwards: &[(u16, u16)],
    ) -> anyhow::Result<Qemu> {
        let work = self.dir.join(run_name);
        fs::create_dir_all(&work)?;
        let mut cfg = QemuConfig::new(boot.firmware, &work).cdrom(&boot.iso);
        for d in boot.disks {
            cfg = cfg.disk(d);
        }
        cfg.rtc_base = boot.rtc_base;
        cfg.host_forwards = forwards.to_vec();
        cfg.extra_args = boot.extra_args;
        Qemu::start(&cfg).map_err(|e| anyhow!("{e}"))
    }

    /// The directory the boot server serves the repository from now.
    pub fn served_repo(&self) -> anyhow::Result<PathBuf> {
        fs::canonicalize(self.server.workdir.join("repo"))
            .context("resolving the served repository")
    }

    /// This lab's working copy of the shared repository (made on first use),
    /// where new versions are built and signed.
    pub fn repo_copy(&self) -> anyhow::Result<PathBuf> {
        let copy = self.dir.join("repo");
        if !copy.exists() {
            let out = Command::new("cp")
                .arg("-a")
                .arg(&self.shared.repo)
                .arg(&copy)
                .output()
                .context("running cp")?;
            if !out.status.success() {
                bail!(
                    "copying the repository: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        Ok(copy)
    }

    /// Builds `only` at `version` (with `supervisor_toml` as base's services
    /// file, if given), signs a new repository version and has the boot
    /// server publish it.
    pub fn publish(
        &self,
        version: &str,
        only: &[&str],
        supervisor_toml: Option<&str>,
    ) -> anyhow::Result<()> {
        self.publish_release(version, only, supervisor_toml, None)
    }

    /// [`Lab::publish`], with the `kernel` package (when in `only`) made
    /// from `kernel` instead of the CD's kernel; one repository version
    /// carries every package built.
    pub fn publish_release(
        &self,
        version: &str,
        only: &[&str],
        supervisor_toml: Option<&str>,
        kernel: Option<&OtherKernel>,
    ) -> anyhow::Result<()> {
        let copy = self.sign_release(version, only, supervisor_toml, kernel)?;
        self.server.publish(&copy)
    }

    /// [`Lab::publish_release`] without the last step: the new version is
    /// built and signed in this lab's working copy of the repository (which
    /// is returned), not yet published by the boot server.
    pub fn sign_release(
        &self,
        version: &str,
        only: &[&str],
        supervisor_toml: Option<&str>,
        kernel: Option<&OtherKernel>,
    ) -> anyhow::Result<PathBuf> {
        let copy = self.repo_copy()?;
        build_packages_with(
            &copy,
            &self.shared.init,
            version,
            Some(only),
            supervisor_toml,
            |spec| {
                if let (Some(k), Some(other)) = (spec.kernel.as_mut(), kernel) {
                    k.release = None;
                    k.image = Some(other.image.clone());
                    k.modules_dir = Some(other.modules_dir.clone());
                }
            },
        )
        .map_err(|e| anyhow!("{e}"))?;
        let repo = Repository::open(&copy)?;
        let key = SecretKey::load(&self.shared.release_key)?;
        publish(&repo, &key, 365).map_err(|e| anyhow!("{e}"))?;
        Ok(copy)
    }

    /// A raw disk image holding a FAT file system labelled `label` with
    /// `files`, made with mtools.
    pub fn fat_stick(
        &self,
        name: &str,
        label: &str,
        files: &[(&str, &[u8])],
    ) -> anyhow::Result<Disk> {
        let path = self.dir.join(format!("{name}.img"));
        fs::File::create(&path)?.set_len(64 << 20)?;
        let image = path.to_string_lossy().into_owned();
        let run = |args: &[&str]| -> anyhow::Result<()> {
            let out = Command::new(args[0])
                .args(&args[1..])
                .output()
                .with_context(|| format!("running {}", args[0]))?;
            if !out.status.success() {
                bail!(
                    "{}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(())
        };
        run(&["mformat", "-i", &image, "-v", label, "-F", "::"])?;
        for (file, bytes) in files {
            let local = self.dir.join(format!("{name}-{}", file.replace('/', "_")));
            fs::write(&local, bytes)?;
            run(&[
                "mcopy",
                "-i",
                &image,
                &local.to_string_lossy(),
                &format!("::{file}"),
            ])?;
        }
        Ok(Disk {
            path,
            format: "raw",
            bus: DiskBus::Usb,
            snapshot: false,
        })
    }

    /// The server's view of a node and its log, for failure messages.
    pub fn diagnostics(&self, node: u64) -> String {
        format!(
            "--- the boot server's log for node {node}, newest first ---\n{}",
            self.server.node_log(node)
        )
    }
}

/// Follows a guest through the markers of a scenario, each with its own
/// time limit; on failure, the error carries the console tail and the
/// server's log for the node.
#[derive(Debug)]
pub struct Follow<'a> {
    pub qemu: &'a mut Qemu,
    pub lab: &'a Lab,
    pub node: u64,
    pub started: Instant,
    /// (marker, seconds since QEMU start) of every step passed.
    pub times: Vec<(String, f64)>,
}

impl<'a> Follow<'a> {
    pub fn new(qemu: &'a mut Qemu, lab: &'a Lab, node: u64) -> Follow<'a> {
        Follow {
            qemu,
            lab,
            node,
            started: Instant::now(),
            times: Vec::new(),
        }
    }

    /// Waits for a console line matching `pattern` (a regex).
    pub fn expect(&mut self, pattern: &str, secs: u64) -> anyhow::Result<String> {
        match self.qemu.wait_for(pattern, Duration::from_secs(secs)) {
            Ok(m) => {
                eprintln!("[{:7.1}s] {}", m.elapsed.as_secs_f64(), m.line);
                self.times
                    .push((pattern.to_string(), m.elapsed.as_secs_f64()));
                Ok(m.line)
            }
            Err(e) => Err(anyhow!("{e}\n{}", self.lab.diagnostics(self.node))),
        }
    }

    /// Waits for `@step NAME ok…@`, failing at once on `@step NAME fail…@`.
    pub fn step_ok(&mut self, name: &str, secs: u64) -> anyhow::Result<String> {
        let escaped = regex::escape(name);
        let line = self.expect(&format!(r"@step {escaped} (ok|fail|skip)"), secs)?;
        if !line.contains(&format!("@step {name} ok")) {
            bail!(
                "step {name} failed: {line}\n{}\n{}",
                self.qemu.tail(crate::qemu::TAIL_LINES),
                self.lab.diagnostics(self.node)
            );
        }
        Ok(line)
    }
}

/// Whether two disk images hold the same data (`qemu-img compare`).
pub fn same_disk_contents(a: &Path, b: &Path) -> anyhow::Result<bool> {
    let out = Command::new("qemu-img")
        .arg("compare")
        .arg("-q")
        .arg(a)
        .arg(b)
        .output()
        .context("running qemu-img compare")?;
    match out.status.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => bail!(
            "qemu-img compare {} {}: {}",
            a.display(),
            b.display(),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Flips every bit of the byte at `offset` of `path` (a tampered file).
pub fn flip_byte(path: &Path, offset: u64) -> anyhow::Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset))?;
    f.read_exact(&mut b)?;
    b[0] ^= 0xff;
    f.seek(SeekFrom::Start(offset))?;
    f.write_all(&b)?;
    Ok(())
}

/// The shipped supervisor.toml (config/examples) with timings for tests
/// and benchmarks, plus `extra`: the updater checks every 10 s (±50%)
/// instead of every 15 minutes, a deployment on trial has 60 s to come up,
/// and two quick exits mark a service failed.
pub fn quick_update_services(extra: &str) -> String {
    let shipped = include_str!("../../config/examples/supervisor.toml");
    let mut text = shipped.to_string();
    for (from, to) in [
        (r#""--interval", "900""#, r#""--interval", "10""#),
        ("health_deadline_secs = 120", "health_deadline_secs = 60"),
        ("crash_restarts = 5", "crash_restarts = 2"),
    ] {
        assert!(text.contains(from), "supervisor.toml no longer has {from}");
        text = text.replace(from, to);
    }
    text + extra
}

/// A Debian kernel other than the CD's, unpacked from its package.
#[derive(Debug, Clone)]
pub struct OtherKernel {
    pub release: String,
    pub image: PathBuf,
    pub modules_dir: PathBuf,
}

/// The newest `linux-image-6.1.0-N-amd64` Debian offers besides the CD's
/// kernel (the newest in /boot), fetched with `apt-get download`, unpacked
/// with `dpkg-deb` and indexed with `depmod`, once per target directory.
/// `Err(Unavailable)` when apt cannot fetch one.
pub fn other_kernel() -> Result<OtherKernel, ArtifactError> {
    let dir = target_dir().join("qemu-world").join("other-kernel");
    fs::create_dir_all(&dir).map_err(fail("creating the kernel cache"))?;
    let _lock = DirLock::take(&dir.join(".lock"))?;
    let ready = dir.join("ready");
    if let Ok(release) = fs::read_to_string(&ready) {
        let release = release.trim().to_string();
        let root = dir.join("root");
        return Ok(OtherKernel {
            image: root.join(format!("boot/vmlinuz-{release}")),
            modules_dir: root.join(format!("lib/modules/{release}")),
            release,
        });
    }
    let mut installed: Vec<String> = fs::read_dir("/boot")
        .map_err(fail("reading /boot"))?
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_prefix("vmlinuz-")
                .map(str::to_string)
        })
        .collect();
    installed.sort();
    let cd_release = installed.pop().unwrap_or_default();
    let run = |cmd: &mut Command, what: &str| -> Result<String, ArtifactError> {
        let out = cmd
            .output()
            .map_err(|e| ArtifactError::Unavailable(format!("{what}: {e}")))?;
        if !out.status.success() {
            return Err(ArtifactError::Unavailable(format!(
                "{what}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let fetch = || -> Result<String, ArtifactError> {
        let listed = run(
            Command::new("apt-cache").args([
                "search",
                "--names-only",
                r"^linux-image-6\.1\.0-[0-9]+-amd64$",
            ]),
            "apt-cache search for Debian kernels",
        )?;
        let abi = |name: &str| -> u32 {
            name.trim_start_matches("linux-image-6.1.0-")
                .trim_end_matches("-amd64")
                .parse()
                .unwrap_or(0)
        };
        let mut candidates: Vec<String> = listed
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|p| p.trim_start_matches("linux-image-") != cd_release)
            .map(str::to_string)
            .collect();
        candidates.sort_by_key(|p| std::cmp::Reverse(abi(p)));
        let package = candidates.first().ok_or_else(|| {
            ArtifactError::Unavailable(format!(
                "apt offers no Debian 6.1 kernel besides {cd_release} (apt-get update?)"
            ))
        })?;
        let release = package.trim_start_matches("linux-image-").to_string();
        let _ = fs::remove_dir_all(dir.join("root"));
        for e in fs::read_dir(&dir)
            .map_err(fail("reading the kernel cache"))?
            .flatten()
        {
            if e.path().extension().is_some_and(|x| x == "deb") {
                let _ = fs::remove_file(e.path());
            }
        }
        run(
            Command::new("apt-get")
                .arg("download")
                .arg(package)
                .current_dir(&dir),
            &format!("apt-get download {package}"),
        )?;
        Ok(release)
    };
    // Package lists may be missing or stale on a fresh machine: refresh
    // them once and try again.
    let release = match fetch() {
        Ok(r) => r,
        Err(_) => {
            run(
                Command::new("apt-get").args(["update", "-qq"]),
                "apt-get update",
            )?;
            fetch()?
        }
    };
    let deb = fs::read_dir(&dir)
        .map_err(fail("reading the kernel cache"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| {
            ArtifactError::Failed(format!(
                "apt-get download of linux-image-{release} left no .deb"
            ))
        })?;
    let root = dir.join("root");
    run(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root),
        "dpkg-deb -x",
    )?;
    run(
        Command::new("depmod").arg("-b").arg(&root).arg(&release),
        "depmod",
    )?;
    let _ = fs::remove_file(&deb);
    fs::write(&ready, &release).map_err(fail("marking the kernel cache ready"))?;
    Ok(OtherKernel {
        image: root.join(format!("boot/vmlinuz-{release}")),
        modules_dir: root.join(format!("lib/modules/{release}")),
        release,
    })
}
