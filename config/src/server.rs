//! The boot server's own configuration: `bootserver.toml` in its working
//! directory, written by `bootserver init` and read by every other command.
//!
//! Relative paths in it are relative to the working directory, so the whole
//! directory can be moved. Parsing is strict like the node config: unknown
//! keys and out-of-range values are errors naming the file, line and field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{read_file_text, ConfigError, SourceText};
use crate::node::ServerUrl;
use crate::units::ByteSize;

/// The file name inside the working directory.
pub const FILE_NAME: &str = "bootserver.toml";

/// `bootserver.toml`: one section per concern; `[server]` and `[tls]` are
/// required, the others have defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Where to listen and how nodes reach the server.
    pub server: ServerSection,
    /// The server's TLS identity and the CA nodes trust.
    pub tls: TlsSection,
    /// Request authentication.
    #[serde(default)]
    pub auth: AuthSection,
    /// What the server tells nodes, and what it keeps about them.
    #[serde(default)]
    pub nodes: NodesSection,
    /// Bounds on what clients may make the server hold.
    #[serde(default)]
    pub limits: LimitsSection,
    /// Mirrors of the repository, and whether this server serves packages.
    #[serde(default, skip_serializing_if = "RepositorySection::is_default")]
    pub repository: RepositorySection,
}

/// `[repository]`: where nodes get the signed repository besides this server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositorySection {
    /// Mirrors of the signed repository (`[[repository.mirror]]`), named to
    /// every node in its release directive; nodes try them before this
    /// server and trust them only through the signed metadata.
    #[serde(default, rename = "mirror", skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<ServerMirror>,
    /// Serve the package files (`/repo/targets/…`) from this server too.
    /// Off when a CDN or mirror carries the packages and this server only
    /// the (small) metadata.
    #[serde(default = "default_serve_packages")]
    pub serve_packages: bool,
}

fn default_serve_packages() -> bool {
    true
}

impl Default for RepositorySection {
    fn default() -> RepositorySection {
        RepositorySection {
            mirrors: Vec::new(),
            serve_packages: true,
        }
    }
}

impl RepositorySection {
    fn is_default(&self) -> bool {
        *self == RepositorySection::default()
    }
}

/// One `[[repository.mirror]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerMirror {
    /// The repository's base URL on the mirror (`metadata/` and `targets/`
    /// below it).
    pub url: ServerUrl,
    /// A PEM file with the CA the mirror's certificate chains to (relative
    /// to the working directory); absent: the boot CD's CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

/// `[server]`: the listening address and the URLs nodes use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Where `bootserver serve` listens unless `--listen` says otherwise.
    pub listen: SocketAddr,
    /// How nodes reach this server; `node add` writes these into node
    /// configs. Empty means "the URLs on the boot CD".
    #[serde(default)]
    pub urls: Vec<ServerUrl>,
}

/// `[tls]`: PEM files, relative to the working directory unless absolute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The server's certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// The server's private key (PEM: PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// The CA certificate nodes trust for this server (goes onto the boot CD).
    pub ca: PathBuf,
    /// The CA's private key when `init` generated the CA (absent for a
    /// certificate from the site's own PKI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_key: Option<PathBuf>,
}

/// `[auth]`: request authentication (DESIGN.md §2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// How far, in seconds, a request's timestamp may be from the server's
    /// clock either way (default 300). Also how long nonces are remembered.
    #[serde(default = "default_clock_skew")]
    pub clock_skew_secs: u32,
}

fn default_clock_skew() -> u32 {
    300
}

impl Default for AuthSection {
    fn default() -> AuthSection {
        AuthSection {
            clock_skew_secs: default_clock_skew(),
        }
    }
}

/// `[nodes]`: what nodes are told, and how much of their history is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodesSection {
    /// Seconds between an installed node's check-ins (told to them in every
    /// reply; default 300).
    #[serde(default = "default_checkin_interval")]
    pub checkin_interval_secs: u64,
    /// Progress events and failure reports kept per node (newest win).
    #[serde(default = "default_event_log_limit")]
    pub event_log_limit: u32,
    /// Staff keys allowed to log in as root on nodes in `debug`.
    #[serde(default)]
    pub debug_ssh_keys: Vec<String>,
}

fn default_checkin_interval() -> u64 {
    300
}
fn default_event_log_limit() -> u32 {
    200
}

impl Default for NodesSection {
    fn default() -> NodesSection {
        NodesSection {
            checkin_interval_secs: default_checkin_interval(),
            event_log_limit: default_event_log_limit(),
            debug_ssh_keys: Vec::new(),
        }
    }
}

/// `[limits]`: bounds on what clients can make the server hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Largest request body accepted from a node (a failure report with its
    /// log tail is the largest legitimate one).
    #[serde(default = "default_max_body")]
    pub max_body: ByteSize,
    /// Open connections at once; more wait in the kernel's accept queue.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

fn default_max_body() -> ByteSize {
    ByteSize::mib(1)
}
fn default_max_connections() -> u32 {
    10_000
}

impl Default for LimitsSection {
    fn default() -> LimitsSection {
        LimitsSection {
            max_body: default_max_body(),
            max_connections: default_max_connections(),
        }
    }
}

impl ServerConfig {
    /// A config with defaults for everything but what `init` decides.
    pub fn new(listen: SocketAddr, urls: Vec<ServerUrl>, tls: TlsSection) -> ServerConfig {
        ServerConfig {
            server: ServerSection { listen, urls },
            tls,
            auth: AuthSection::default(),
            nodes: NodesSection::default(),
            limits: LimitsSection::default(),
            repository: RepositorySection::default(),
        }
    }

    /// Reads and validates `bootserver.toml`.
    pub fn load(path: &Path) -> Result<ServerConfig, ConfigError> {
        let text = read_file_text(path)?;
        ServerConfig::from_toml(&text, path)
    }

    /// Parses and validates TOML text; `source` names it in errors.
    pub fn from_toml(text: &str, source: &Path) -> Result<ServerConfig, ConfigError> {
        let src = SourceText::new(source, text);
        let config: ServerConfig = toml::from_str(text).map_err(|e| src.toml_error(&e))?;
        config.validate(&src)?;
        Ok(config)
    }

    fn validate(&self, src: &SourceText<'_>) -> Result<(), ConfigError> {
        let err = |field: &str, message: String| {
            Err(src.error(
                field_span(src.text, field),
                Some(field.to_string()),
                message,
            ))
        };
        let skew = self.auth.clock_skew_secs;
        if !(5..=86_400).contains(&skew) {
            return err(
                "auth.clock_skew_secs",
                format!("{skew} is out of range (5 to 86400 seconds)"),
            );
        }
        let interval = self.nodes.checkin_interval_secs;
        if !(5..=86_400).contains(&interval) {
            return err(
                "nodes.checkin_interval_secs",
                format!("{interval} is out of range (5 to 86400 seconds)"),
            );
        }
        let log = self.nodes.event_log_limit;
        if !(1..=100_000).contains(&log) {
            return err(
                "nodes.event_log_limit",
                format!("{log} is out of range (1 to 100000 events)"),
            );
        }
        let body = self.limits.max_body.bytes();
        if !(4096..=(64 << 20)).contains(&body) {
            return err(
                "limits.max_body",
                format!("{} is out of range (4KiB to 64MiB)", self.limits.max_body),
            );
        }
        if self.limits.max_connections == 0 {
            return err(
                "limits.max_connections",
                "at least one connection must be allowed".into(),
            );
        }
        if let Some(key) = self.nodes.debug_ssh_keys.iter().find(|k| {
            let k = k.trim();
            k.is_empty() || k.contains('\n') || !k.contains(' ')
        }) {
            return err(
                "nodes.debug_ssh_keys",
                format!("`{key}` is not an ssh public key line (type, key, optional comment)"),
            );
        }
        Ok(())
    }

    /// The TOML form, as `init` writes it.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).unwrap_or_default();
        format!("# Boot server configuration (written by `bootserver init`).\n# Relative paths are relative to this directory.\n\n{body}")
    }

    /// `path` resolved against the working directory `dir`.
    pub fn resolve(dir: &Path, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            dir.join(path)
        }
    }
}

/// The span of `key = …` under `[table]` for a dotted `table.key`, so a
/// validation error can point at its line.
fn field_span(text: &str, dotted: &str) -> Option<std::ops::Range<usize>> {
    let (table, key) = dotted.split_once('.')?;
    let mut in_table = false;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix('[') {
            in_table = rest.trim_end_matches(']').trim() == table;
        } else if in_table
            && trimmed
                .split_once('=')
                .is_some_and(|(k, _)| k.trim() == key)
        {
            let start = offset + (line.len() - line.trim_start().len());
            return Some(start..start + trimmed.len());
        }
        offset += line.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ServerConfig, ConfigError> {
        ServerConfig::from_toml(text, Path::new("bootserver.toml"))
    }

    const MINIMAL: &str =
        "[server]\nlisten = \"127.0.0.1:8443\"\nurls = [\"https://boot.example.org:8443\"]\n\n\
        [tls]\ncert = \"tls/server.pem\"\nkey = \"tls/server.key\"\nca = \"ca/ca.pem\"\n";

    #[test]
    fn a_minimal_config_gets_defaults_and_round_trips() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.auth.clock_skew_secs, 300);
        assert_eq!(c.limits.max_body, ByteSize::mib(1));
        assert_eq!(c.server.urls[0].host(), "boot.example.org");
        assert_eq!(parse(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn out_of_range_values_name_line_and_field() {
        let e = parse(&format!("{MINIMAL}\n[auth]\nclock_skew_secs = 1\n")).unwrap_err();
        assert_eq!(e.field(), Some("auth.clock_skew_secs"), "{e}");
        assert_eq!(e.line(), Some(11), "{e}");
        assert!(e.to_string().contains("out of range"), "{e}");
    }

    #[test]
    fn unknown_keys_and_bad_urls_are_refused() {
        let e = parse(&format!("{MINIMAL}\n[limits]\nmax_bodies = 5\n")).unwrap_err();
        assert!(e.to_string().contains("unknown field `max_bodies`"), "{e}");
        let e = parse(&MINIMAL.replace("https://boot", "http://boot")).unwrap_err();
        assert!(e.to_string().contains("https://"), "{e}");
    }

    #[test]
    fn mirrors_and_package_serving_are_optional() {
        let c = parse(MINIMAL).unwrap();
        assert!(c.repository.serve_packages);
        assert!(c.repository.mirrors.is_empty());
        assert!(!c.to_toml().contains("[repository]"));
        let c = parse(&format!(
            "{MINIMAL}\n[repository]\nserve_packages = false\n\n[[repository.mirror]]\nurl = \"https://cdn.example.org/repo\"\nca = \"mirror-ca.pem\"\n"
        ))
        .unwrap();
        assert!(!c.repository.serve_packages);
        assert_eq!(c.repository.mirrors[0].url.host(), "cdn.example.org");
        assert_eq!(parse(&c.to_toml()).unwrap(), c);
        let e = parse(&format!(
            "{MINIMAL}\n[[repository.mirror]]\nurl = \"ftp://cdn.example.org\"\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("https://"), "{e}");
    }

    #[test]
    fn relative_paths_resolve_against_the_working_directory() {
        let dir = Path::new("/srv/boot");
        assert_eq!(
            ServerConfig::resolve(dir, Path::new("tls/server.pem")),
            PathBuf::from("/srv/boot/tls/server.pem")
        );
        assert_eq!(
            ServerConfig::resolve(dir, Path::new("/etc/pki/x.pem")),
            PathBuf::from("/etc/pki/x.pem")
        );
    }
}
