//! The server's working directory: configuration, TLS identity, the
//! registry database and the published repository, all in one place.
//!
//! ```text
//! DIR/
//!   bootserver.toml        configuration (config::server::ServerConfig)
//!   ca/ca.pem ca.key       the CA boot CDs carry (generated unless the site brings its own)
//!   tls/server.pem .key    the server certificate, for every host name and address
//!   registry.db            SQLite (WAL: registry.db-wal, registry.db-shm beside it)
//!   repo -> repo.d/<id>    the published repository, switched by renaming a symlink
//!   repo.d/                published snapshots (the current one and the one before)
//!   repo-trust/            pkgsign verifier state: the newest repository metadata accepted
//! ```

use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use config::node::{DnsName, ServerUrl};
use config::server::{ServerConfig, TlsSection, FILE_NAME};
use floor::durable::{self, DurableError};
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::{ServerName, UnixTime};

use crate::db::{self, DbError, OpenMode};
use crate::pki::{self, PkiError};

#[derive(Debug, thiserror::Error)]
pub enum WorkDirError {
    #[error("{} is not a boot server working directory (no {FILE_NAME}); create one with `bootserver init`", .0.display())]
    NotInitialised(PathBuf),
    #[error("{} already holds a boot server ({what}); refusing to overwrite it", path.display())]
    AlreadyInitialised { path: PathBuf, what: String },
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Durable(#[from] DurableError),
    #[error("the certificate {} is not valid for `{name}` under the CA {}", cert.display(), ca.display())]
    CertMismatch {
        cert: PathBuf,
        ca: PathBuf,
        name: String,
        #[source]
        source: Box<rustls::Error>,
    },
    #[error("the CA certificate {} is unusable", ca.display())]
    BadCa {
        ca: PathBuf,
        #[source]
        source: Box<rustls::Error>,
    },
    #[error("cannot build a certificate verifier for {}", ca.display())]
    Verifier {
        ca: PathBuf,
        #[source]
        source: rustls::client::VerifierBuilderError,
    },
    #[error("`{name}` is not a server name")]
    ServerName {
        name: String,
        #[source]
        source: rustls_pki_types::InvalidDnsNameError,
    },
    /// A URL made from a host name or address does not parse (`config`
    /// gives the reason as text).
    #[error("`{url}` is not a usable server URL: {reason}")]
    Url { url: String, reason: String },
    #[error("give at least one --host or --ip: the server certificate must name how nodes reach the server")]
    NoServerNames,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WorkDirError + '_ {
    move |source| WorkDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An opened working directory.
#[derive(Debug, Clone)]
pub struct WorkDir {
    root: PathBuf,
    pub config: ServerConfig,
}

/// A certificate from the site's own PKI instead of a generated CA.
#[derive(Debug, Clone)]
pub struct SiteCertificate {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA certificate that issued it (what boot CDs will trust).
    pub ca: PathBuf,
}

#[derive(Debug, Clone)]
pub struct InitOptions {
    pub hosts: Vec<DnsName>,
    pub ips: Vec<IpAddr>,
    pub listen: SocketAddr,
    /// URLs nodes use; empty derives them from the host names, addresses
    /// and the listening port.
    pub urls: Vec<ServerUrl>,
    pub site_certificate: Option<SiteCertificate>,
}

pub const DB_FILE: &str = "registry.db";

impl WorkDir {
    /// Opens an existing working directory.
    pub fn open(root: &Path) -> Result<WorkDir, WorkDirError> {
        let file = root.join(FILE_NAME);
        if !file.exists() {
            return Err(WorkDirError::NotInitialised(root.to_path_buf()));
        }
        let config = ServerConfig::load(&file)?;
        let root = root.canonicalize().map_err(io_err(root))?;
        Ok(WorkDir { root, config })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn db_path(&self) -> PathBuf {
        self.root.join(DB_FILE)
    }
    pub fn cert_path(&self) -> PathBuf {
        ServerConfig::resolve(&self.root, &self.config.tls.cert)
    }
    pub fn key_path(&self) -> PathBuf {
        ServerConfig::resolve(&self.root, &self.config.tls.key)
    }
    pub fn ca_path(&self) -> PathBuf {
        ServerConfig::resolve(&self.root, &self.config.tls.ca)
    }
    /// The symlink naming the published repository snapshot.
    pub fn repo_link(&self) -> PathBuf {
        self.root.join("repo")
    }
    /// Where published snapshots live.
    pub fn repo_store(&self) -> PathBuf {
        self.root.join("repo.d")
    }
    /// pkgsign's verifier state for `repo publish`.
    pub fn trust_dir(&self) -> PathBuf {
        self.root.join("repo-trust")
    }

    /// Opens the registry for an admin command.
    pub fn open_db(&self) -> Result<rusqlite::Connection, DbError> {
        db::open(&self.db_path(), OpenMode::Existing)
    }

    /// The TLS server configuration from the configured files.
    pub fn tls_config(&self) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        pki::server_tls_config(&self.cert_path(), &self.key_path())
    }

    /// Creates a working directory. Everything is built in a staging
    /// directory beside `root` and renamed into place at the end, so a
    /// failure leaves nothing behind.
    pub fn init(root: &Path, options: &InitOptions) -> Result<WorkDir, WorkDirError> {
        if options.hosts.is_empty() && options.ips.is_empty() && options.site_certificate.is_none()
        {
            return Err(WorkDirError::NoServerNames);
        }
        if root.join(FILE_NAME).exists() {
            return Err(WorkDirError::AlreadyInitialised {
                path: root.to_path_buf(),
                what: FILE_NAME.into(),
            });
        }
        if root.exists() {
            let mut entries = fs::read_dir(root).map_err(io_err(root))?;
            if let Some(entry) = entries.next() {
                let name = entry.map_err(io_err(root))?.file_name();
                return Err(WorkDirError::AlreadyInitialised {
                    path: root.to_path_buf(),
                    what: format!("it is not empty: {}", name.to_string_lossy()),
                });
            }
        }
        let parent = match root.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent).map_err(io_err(&parent))?;
        let base = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "bootserver".into());
        let staging = parent.join(format!(".{base}.init-{}", std::process::id()));
        let result = build(&staging, root, options);
        match result {
            Ok(()) => {
                // Replaces an empty directory, or creates the name.
                fs::rename(&staging, root).map_err(|e| {
                    let _ = fs::remove_dir_all(&staging);
                    WorkDirError::Io {
                        path: root.to_path_buf(),
                        source: e,
                    }
                })?;
                durable::sync_dir(&parent)?;
                WorkDir::open(root)
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&staging);
                Err(e)
            }
        }
    }
}

fn build(staging: &Path, final_root: &Path, options: &InitOptions) -> Result<(), WorkDirError> {
    let _ = fs::remove_dir_all(staging);
    fs::create_dir(staging).map_err(io_err(staging))?;
    // The directory holds node keys and the CA key.
    fs::set_permissions(staging, fs::Permissions::from_mode(0o700)).map_err(io_err(staging))?;

    let host_names: Vec<String> = options.hosts.iter().map(|h| h.to_string()).collect();
    let tls = match &options.site_certificate {
        Some(site) => {
            let abs = |p: &Path| p.canonicalize().map_err(io_err(p));
            let tls = TlsSection {
                cert: abs(&site.cert)?,
                key: abs(&site.key)?,
                ca: abs(&site.ca)?,
                ca_key: None,
            };
            pki::server_tls_config(&tls.cert, &tls.key)?;
            check_chain(&tls.ca, &tls.cert, &host_names, &options.ips)?;
            tls
        }
        None => {
            let pki::GeneratedPki { ca, server } = pki::generate(&host_names, &options.ips)?;
            for sub in ["ca", "tls"] {
                let d = staging.join(sub);
                fs::create_dir(&d).map_err(io_err(&d))?;
            }
            write_file(&staging.join("ca/ca.pem"), ca.cert_pem.as_bytes(), 0o644)?;
            write_file(&staging.join("ca/ca.key"), ca.key_pem.as_bytes(), 0o600)?;
            write_file(
                &staging.join("tls/server.pem"),
                server.cert_pem.as_bytes(),
                0o644,
            )?;
            write_file(
                &staging.join("tls/server.key"),
                server.key_pem.as_bytes(),
                0o600,
            )?;
            check_chain(
                &staging.join("ca/ca.pem"),
                &staging.join("tls/server.pem"),
                &host_names,
                &options.ips,
            )?;
            TlsSection {
                cert: "tls/server.pem".into(),
                key: "tls/server.key".into(),
                ca: "ca/ca.pem".into(),
                ca_key: Some("ca/ca.key".into()),
            }
        }
    };

    let urls = if options.urls.is_empty() && options.listen.port() != 0 {
        default_urls(&options.hosts, &options.ips, options.listen.port())?
    } else if options.urls.is_empty() {
        // A port picked at each start cannot go into node configs: they
        // get the URLs from the boot CD (or `node add --url`).
        Vec::new()
    } else {
        options.urls.clone()
    };
    let config = ServerConfig::new(options.listen, urls, tls);
    // What we write must read back: check before it is on disk.
    ServerConfig::from_toml(&config.to_toml(), &final_root.join(FILE_NAME))?;
    write_file(&staging.join(FILE_NAME), config.to_toml().as_bytes(), 0o644)?;

    let db_path = staging.join(DB_FILE);
    drop(db::open(&db_path, OpenMode::Create)?);
    fs::set_permissions(&db_path, fs::Permissions::from_mode(0o600)).map_err(io_err(&db_path))?;
    let store = staging.join("repo.d");
    fs::create_dir(&store).map_err(io_err(&store))?;
    durable::sync_dir(staging)?;
    Ok(())
}

/// `https://NAME:PORT` for every host name, then every address.
fn default_urls(
    hosts: &[DnsName],
    ips: &[IpAddr],
    port: u16,
) -> Result<Vec<ServerUrl>, WorkDirError> {
    let mut urls = Vec::new();
    for host in hosts {
        urls.push(format!("https://{host}:{port}"));
    }
    for ip in ips {
        urls.push(match ip {
            IpAddr::V4(v4) => format!("https://{v4}:{port}"),
            IpAddr::V6(v6) => format!("https://[{v6}]:{port}"),
        });
    }
    urls.into_iter()
        .map(|url| {
            url.parse()
                .map_err(|reason| WorkDirError::Url { url, reason })
        })
        .collect()
}

/// Checks that `cert` chains to `ca` and is valid for every name and
/// address, the way a node will check it.
pub fn check_chain(
    ca: &Path,
    cert: &Path,
    names: &[String],
    ips: &[IpAddr],
) -> Result<(), WorkDirError> {
    let ca_certs = pki::load_certs(ca)?;
    let chain = pki::load_certs(cert)?;
    let mut roots = rustls::RootCertStore::empty();
    for c in ca_certs {
        roots.add(c).map_err(|source| WorkDirError::BadCa {
            ca: ca.to_path_buf(),
            source: Box::new(source),
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|source| WorkDirError::Verifier {
                ca: ca.to_path_buf(),
                source,
            })?;
    let targets = names
        .iter()
        .cloned()
        .chain(ips.iter().map(IpAddr::to_string));
    for name in targets {
        let server_name =
            ServerName::try_from(name.clone()).map_err(|source| WorkDirError::ServerName {
                name: name.clone(),
                source,
            })?;
        verifier
            .verify_server_cert(&chain[0], &chain[1..], &server_name, &[], UnixTime::now())
            .map_err(|source| WorkDirError::CertMismatch {
                cert: cert.to_path_buf(),
                ca: ca.to_path_buf(),
                name: name.clone(),
                source: Box::new(source),
            })?;
    }
    Ok(())
}

/// Writes a file so that a crash leaves the old or the new content, with
/// `mode` (the directory holds node and CA keys).
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), WorkDirError> {
    Ok(durable::write_atomic_mode(path, bytes, mode)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> InitOptions {
        InitOptions {
            hosts: vec!["localhost".parse().unwrap()],
            ips: vec!["127.0.0.1".parse().unwrap(), "10.0.2.2".parse().unwrap()],
            listen: "127.0.0.1:8443".parse().unwrap(),
            urls: vec![],
            site_certificate: None,
        }
    }

    #[test]
    fn init_creates_a_complete_directory_and_refuses_a_second_time() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("srv");
        let wd = WorkDir::init(&root, &options()).unwrap();
        assert!(wd.db_path().exists());
        wd.tls_config().unwrap();
        let urls: Vec<_> = wd
            .config
            .server
            .urls
            .iter()
            .map(|u| u.to_string())
            .collect();
        assert_eq!(
            urls,
            [
                "https://localhost:8443",
                "https://127.0.0.1:8443",
                "https://10.0.2.2:8443"
            ]
        );
        let mode = fs::metadata(root.join("ca/ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let e = WorkDir::init(&root, &options()).unwrap_err();
        assert!(e.to_string().contains("refusing to overwrite"), "{e}");
        // No staging directory is left next to it.
        let names: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["srv"]);
    }

    #[test]
    fn a_site_certificate_must_cover_the_names_given() {
        let tmp = tempfile::tempdir().unwrap();
        let pki::GeneratedPki { ca, server: cert } =
            pki::generate(&["boot.example.org".into()], &[]).unwrap();
        for (name, text) in [
            ("ca.pem", &ca.cert_pem),
            ("s.pem", &cert.cert_pem),
            ("s.key", &cert.key_pem),
        ] {
            fs::write(tmp.path().join(name), text).unwrap();
        }
        let site = SiteCertificate {
            cert: tmp.path().join("s.pem"),
            key: tmp.path().join("s.key"),
            ca: tmp.path().join("ca.pem"),
        };
        let mut opts = options();
        opts.site_certificate = Some(site.clone());
        let e = WorkDir::init(&tmp.path().join("a"), &opts).unwrap_err();
        assert!(
            matches!(e, WorkDirError::CertMismatch { ref name, .. } if name == "localhost"),
            "{e}"
        );
        assert!(!tmp.path().join("a").exists());
        opts.hosts = vec!["boot.example.org".parse().unwrap()];
        opts.ips = vec![];
        let wd = WorkDir::init(&tmp.path().join("b"), &opts).unwrap();
        assert_eq!(
            wd.ca_path(),
            tmp.path().canonicalize().unwrap().join("ca.pem")
        );
    }
}
