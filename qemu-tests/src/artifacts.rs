//! What the scenarios boot: the musl `init`, trust roots made for the test
//! run, and a CD built from them with `bootcd`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use bootcd::build::{BuildOptions, BuildReport};
use config::node::ServerUrl;
use mkimage::archive::Mtime;
use pkgsign::metadata::RoleType;
use pkgsign::repo::{Repository, RoleSpec};
use pkgsign::SecretKey;

pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// A prerequisite is missing on this machine: the caller prints SKIP.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Failed(String),
}

/// The workspace root (this crate's parent directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Cargo's target directory for this run (`CARGO_TARGET_DIR` or `target/`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        None => workspace_root().join("target"),
    }
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Whether the Rust standard library for musl is installed.
pub fn musl_target_installed() -> bool {
    let Ok(out) = Command::new("rustc").args(["--print", "sysroot"]).output() else {
        return false;
    };
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Path::new(&sysroot)
        .join("lib/rustlib")
        .join(MUSL_TARGET)
        .join("lib")
        .is_dir()
}

/// Builds `init` as the CD needs it (static, musl, `node` profile) and
/// returns its path. Cargo's own caching makes repeated calls cheap.
///
/// Same target directory as the running tests, so the init a developer
/// built by hand is reused; the `node` profile and the musl target have
/// their own lock files there, so this does not wait for the outer cargo.
///
/// `PLNODE_INIT=/path/to/init` uses that binary instead of building one.
pub fn build_init() -> Result<PathBuf, ArtifactError> {
    if let Some(given) = std::env::var_os("PLNODE_INIT") {
        let given = PathBuf::from(given);
        if !given.is_file() {
            return Err(ArtifactError::Failed(format!(
                "PLNODE_INIT={}: no such file",
                given.display()
            )));
        }
        return Ok(given);
    }
    if !musl_target_installed() {
        return Err(ArtifactError::Unavailable(format!(
            "the Rust target {MUSL_TARGET} is not installed (rustup target add {MUSL_TARGET})"
        )));
    }
    let target = target_dir();
    let status = Command::new(cargo())
        .current_dir(workspace_root())
        .args([
            "build",
            "--quiet",
            "-p",
            "init",
            "--profile",
            "node",
            "--target",
            MUSL_TARGET,
        ])
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .map_err(|e| ArtifactError::Failed(format!("running cargo: {e}")))?;
    if !status.success() {
        return Err(ArtifactError::Failed(format!(
            "cargo build -p init --target {MUSL_TARGET} failed ({status})"
        )));
    }
    let init = target.join(MUSL_TARGET).join("node").join("init");
    if !init.is_file() {
        return Err(ArtifactError::Failed(format!(
            "{} was not built",
            init.display()
        )));
    }
    Ok(init)
}

/// Builds the static `nodemgr` (musl, `node` profile) like [`build_init`];
/// `PLNODE_NODEMGR=/path` uses that binary instead.
pub fn build_nodemgr() -> Result<PathBuf, ArtifactError> {
    build_node_binary("nodemgr", "PLNODE_NODEMGR")
}

/// Builds the static `sensors`; `PLNODE_SENSORS=/path` uses that binary instead.
pub fn build_sensors() -> Result<PathBuf, ArtifactError> {
    build_node_binary("sensors", "PLNODE_SENSORS")
}

/// Builds the static `bwcap`; `PLNODE_BWCAP=/path` uses that binary instead.
pub fn build_bwcap() -> Result<PathBuf, ArtifactError> {
    build_node_binary("bwcap", "PLNODE_BWCAP")
}

/// Builds package `name`'s binary of the same name for the node (musl,
/// `node` profile), or takes the file `$env` names.
fn build_node_binary(name: &str, env: &str) -> Result<PathBuf, ArtifactError> {
    if let Some(given) = std::env::var_os(env) {
        let given = PathBuf::from(given);
        if !given.is_file() {
            return Err(ArtifactError::Failed(format!(
                "{env}={}: no such file",
                given.display()
            )));
        }
        return Ok(given);
    }
    if !musl_target_installed() {
        return Err(ArtifactError::Unavailable(format!(
            "the Rust target {MUSL_TARGET} is not installed (rustup target add {MUSL_TARGET})"
        )));
    }
    let target = target_dir();
    let status = Command::new(cargo())
        .current_dir(workspace_root())
        .args([
            "build",
            "--quiet",
            "-p",
            name,
            "--profile",
            "node",
            "--target",
            MUSL_TARGET,
        ])
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .map_err(|e| ArtifactError::Failed(format!("running cargo: {e}")))?;
    if !status.success() {
        return Err(ArtifactError::Failed(format!(
            "cargo build -p {name} --target {MUSL_TARGET} failed ({status})"
        )));
    }
    let binary = target.join(MUSL_TARGET).join("node").join(name);
    if !binary.is_file() {
        return Err(ArtifactError::Failed(format!(
            "{} was not built",
            binary.display()
        )));
    }
    Ok(binary)
}

/// Trust roots for a test CD, all in one directory: a signing key (also
/// every role's key of a fresh repository, threshold 1), its public key,
/// the repository's `root.json`, and a boot server CA.
#[derive(Debug, Clone)]
pub struct CdTrust {
    pub release_key: PathBuf,
    pub release_pub: PathBuf,
    pub root_json: PathBuf,
    pub repo: PathBuf,
    pub ca_pem: PathBuf,
    pub ca_key_pem: PathBuf,
}

impl CdTrust {
    pub fn generate(dir: &Path) -> Result<CdTrust, ArtifactError> {
        let fail =
            |what: &str, e: &dyn std::fmt::Display| ArtifactError::Failed(format!("{what}: {e}"));
        std::fs::create_dir_all(dir).map_err(|e| fail("creating the trust directory", &e))?;
        let key = SecretKey::generate().map_err(|e| fail("generating a key", &e))?;
        let release_key = dir.join("release.key");
        key.save_new(&release_key)
            .map_err(|e| fail("saving the key", &e))?;
        let release_pub = dir.join("release.pub");
        let public_pem = key
            .public()
            .to_pem()
            .map_err(|e| fail("encoding the public key", &e))?;
        std::fs::write(&release_pub, public_pem).map_err(|e| fail("writing the public key", &e))?;

        let spec = RoleSpec {
            keys: vec![key.public().clone()],
            threshold: 1,
        };
        let roles: BTreeMap<RoleType, RoleSpec> = RoleType::ALL
            .into_iter()
            .map(|r| (r, spec.clone()))
            .collect();
        let repo = dir.join("repo");
        let expires = floor::Timestamp::now().plus(std::time::Duration::from_secs(365 * 86_400));
        Repository::init(&repo, &roles, expires, &[key])
            .map_err(|e| fail("creating the repository", &e))?;

        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
            .map_err(|e| fail("CA parameters", &e))?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "plnode test boot server CA");
        let ca_key = rcgen::KeyPair::generate().map_err(|e| fail("CA key", &e))?;
        let ca = params
            .self_signed(&ca_key)
            .map_err(|e| fail("CA certificate", &e))?;
        let ca_pem = dir.join("ca.pem");
        std::fs::write(&ca_pem, ca.pem()).map_err(|e| fail("writing the CA", &e))?;
        let ca_key_pem = dir.join("ca.key");
        std::fs::write(&ca_key_pem, ca_key.serialize_pem())
            .map_err(|e| fail("writing the CA key", &e))?;
        Ok(CdTrust {
            release_key,
            release_pub,
            root_json: repo.join("metadata/root.json"),
            repo,
            ca_pem,
            ca_key_pem,
        })
    }
}

/// Options for a signed test CD at `output` talking to `server_url`.
pub fn cd_options(
    output: &Path,
    init: &Path,
    trust: &CdTrust,
    cd_version: &str,
    server_url: &str,
) -> Result<BuildOptions, ArtifactError> {
    let url: ServerUrl = server_url
        .parse()
        .map_err(|e: String| ArtifactError::Failed(e))?;
    let mut opts = BuildOptions::new(
        output.to_path_buf(),
        init.to_path_buf(),
        trust.root_json.clone(),
        trust.ca_pem.clone(),
        vec![url],
        cd_version.to_string(),
        Mtime(1_795_000_000),
    );
    opts.signing_key = Some(trust.release_key.clone());
    Ok(opts)
}

/// Builds a CD (see [`cd_options`]), reporting a missing tool as unavailable.
pub fn build_cd(opts: &BuildOptions) -> Result<BuildReport, ArtifactError> {
    bootcd::build::build(opts).map_err(|e| match e {
        bootcd::build::BuildError::Tool(tool @ bootcd::tools::ToolError::Missing { .. })
        | bootcd::build::BuildError::Tool(tool @ bootcd::tools::ToolError::MissingFile { .. }) => {
            ArtifactError::Unavailable(tool.to_string())
        }
        other => ArtifactError::Failed(format!("bootcd build: {other}")),
    })
}
