//! Where the signed repository is read from: mirrors first (named by the
//! node config and by the boot server's release directive), then the boot
//! servers. A source is trusted only through the signed metadata: the
//! verifier checks everything any source sends, and a source that fails —
//! cannot be reached, refuses, serves a swapped or stale file — is skipped
//! for the next one.
//!
//! A mirror's TLS is checked against the CA the node is given for it, or
//! the CD's boot server CA when none is; either only authenticates the
//! transport (DESIGN.md §2, mirrors).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use config::node::{Mirror, ServerUrl};
use pkgsign::fetch::{DownloadPolicy, HttpFetcher};
use pkgsign::net::{build_client, ClientOptions, NetError};
use sha2::{Digest, Sha256};

/// One place the repository can be read from.
#[derive(Debug, Clone)]
pub struct Source {
    /// Its base URL, for messages.
    pub label: String,
    /// `true` for a mirror, `false` for a boot server.
    pub mirror: bool,
    pub http: HttpFetcher,
}

/// Why a source could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("mirror {url}: its CA")]
    MirrorClient {
        url: String,
        #[source]
        source: NetError,
    },
    #[error("repository URL {url}")]
    Url {
        url: String,
        #[source]
        source: NetError,
    },
}

/// Builds the sources of one check, keeping one HTTPS client per mirror
/// and CA across checks (a client holds its connections).
pub struct Sources {
    boot_ca: Vec<u8>,
    proxy: Option<String>,
    clock_floor: SystemTime,
    policy: DownloadPolicy,
    clients: HashMap<String, reqwest::blocking::Client>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources")
            .field("mirror_clients", &self.clients.len())
            .finish()
    }
}

/// Mirrors of `first` then of `second`, each URL once.
pub fn merged(first: &[Mirror], second: &[Mirror]) -> Vec<Mirror> {
    let mut out: Vec<Mirror> = Vec::new();
    for m in first.iter().chain(second) {
        if !out.iter().any(|o| o.url == m.url) {
            out.push(m.clone());
        }
    }
    out
}

impl Sources {
    pub fn new(
        boot_ca: Vec<u8>,
        proxy: Option<String>,
        clock_floor: SystemTime,
        policy: DownloadPolicy,
    ) -> Sources {
        Sources {
            boot_ca,
            proxy,
            clock_floor,
            policy,
            clients: HashMap::new(),
        }
    }

    fn mirror_client(&mut self, m: &Mirror) -> Result<reqwest::blocking::Client, SourceError> {
        let ca = m.ca.as_deref().map(str::as_bytes).unwrap_or(&self.boot_ca);
        let key = format!("{}#{}", m.url, hex::encode(Sha256::digest(ca)));
        if let Some(c) = self.clients.get(&key) {
            return Ok(c.clone());
        }
        let mut options = ClientOptions::new(ca.to_vec());
        options.proxy = self.proxy.clone();
        options.clock_floor = Some(self.clock_floor);
        options.connect_timeout = Duration::from_secs(10);
        options.read_timeout = Duration::from_secs(30);
        let client = build_client(&options).map_err(|source| SourceError::MirrorClient {
            url: m.url.to_string(),
            source,
        })?;
        self.clients.insert(key, client.clone());
        Ok(client)
    }

    /// The mirrors in order, then the boot servers starting at
    /// `first_server` (the one that answered last), each with `boot_client`.
    pub fn list(
        &mut self,
        mirrors: &[Mirror],
        servers: &[ServerUrl],
        first_server: usize,
        boot_client: &reqwest::blocking::Client,
    ) -> Result<Vec<Source>, SourceError> {
        let mut out = Vec::new();
        for m in mirrors {
            let client = self.mirror_client(m)?;
            let http = HttpFetcher::new(m.url.as_str(), client, self.policy.clone()).map_err(
                |source| SourceError::Url {
                    url: m.url.to_string(),
                    source,
                },
            )?;
            out.push(Source {
                label: m.url.to_string(),
                mirror: true,
                http,
            });
        }
        let n = servers.len();
        for k in 0..n {
            let url = &servers[(first_server + k) % n];
            let base = crate::boot_server::repo_base(url);
            let http = HttpFetcher::new(&base, boot_client.clone(), self.policy.clone()).map_err(
                |source| SourceError::Url {
                    url: base.clone(),
                    source,
                },
            )?;
            out.push(Source {
                label: base,
                mirror: false,
                http,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mirror(url: &str) -> Mirror {
        Mirror {
            url: url.parse().unwrap(),
            ca: None,
        }
    }

    fn some_ca() -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem().into_bytes()
    }

    #[test]
    fn mirrors_come_first_each_once_then_the_servers_from_the_last_good_one() {
        let all = merged(
            &[mirror("https://a.example.org/repo")],
            &[
                mirror("https://b.example.org/repo"),
                mirror("https://a.example.org/repo/"),
            ],
        );
        let urls: Vec<&str> = all.iter().map(|m| m.url.as_str()).collect();
        assert_eq!(
            urls,
            ["https://a.example.org/repo", "https://b.example.org/repo"]
        );

        let ca = some_ca();
        let mut sources = Sources::new(
            ca.clone(),
            None,
            SystemTime::UNIX_EPOCH,
            DownloadPolicy::default(),
        );
        let servers: Vec<ServerUrl> = vec![
            "https://boot1.example.org".parse().unwrap(),
            "https://boot2.example.org".parse().unwrap(),
        ];
        let client = build_client(&ClientOptions::new(ca)).unwrap();
        let labels: Vec<String> = match sources.list(&all, &servers, 1, &client) {
            Ok(l) => l.into_iter().map(|s| s.label).collect(),
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            labels,
            [
                "https://a.example.org/repo",
                "https://b.example.org/repo",
                "https://boot2.example.org/repo",
                "https://boot1.example.org/repo"
            ]
        );
        // A mirror's CA that is not one is an error naming the mirror.
        let bad = Mirror {
            url: "https://c.example.org".parse().unwrap(),
            ca: Some("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n".into()),
        };
        let e = sources
            .list(&[bad], &servers, 0, &client)
            .expect_err("no usable CA");
        assert!(e.to_string().contains("c.example.org"), "{e}");
    }
}
