//! A mirror of the signed repository for scenarios: Debian's nginx serving
//! a repository directory over HTTPS with a certificate from a CA of its
//! own (made here with rcgen), reachable from a guest at 10.0.2.2. Started
//! by the scenario on a free port and stopped when dropped; nothing else
//! is touched.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::artifacts::ArtifactError;
use crate::world::{free_port, HOST_FROM_GUEST};

/// Debian's nginx binary.
pub const NGINX: &str = "/usr/sbin/nginx";

/// A running nginx mirror.
#[derive(Debug)]
pub struct Mirror {
    child: Child,
    pub port: u16,
    dir: PathBuf,
    /// The mirror's own CA (PEM), which nodes are given for it.
    pub ca_pem: String,
}

fn fail<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> ArtifactError + '_ {
    move |e| ArtifactError::Failed(format!("{what}: {e}"))
}

impl Mirror {
    /// Serves `root` (with `metadata/` and `targets/`), answering 403 for a
    /// file that is not there, as an object store without listing does.
    /// `Err(Unavailable)` when nginx is not installed.
    pub fn start(root: &Path, dir: &Path) -> Result<Mirror, ArtifactError> {
        if !Path::new(NGINX).is_file() {
            return Err(ArtifactError::Unavailable(
                "nginx is not installed (apt-get install -y --no-install-recommends nginx)".into(),
            ));
        }
        fs::create_dir_all(dir.join("logs")).map_err(fail("creating the mirror directory"))?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())
            .map_err(fail("mirror CA parameters"))?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "plnode test mirror CA");
        let ca_key = rcgen::KeyPair::generate().map_err(fail("mirror CA key"))?;
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .map_err(fail("mirror CA certificate"))?;
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .map_err(fail("mirror certificate parameters"))?;
        for ip in [HOST_FROM_GUEST, std::net::Ipv4Addr::LOCALHOST] {
            params
                .subject_alt_names
                .push(rcgen::SanType::IpAddress(ip.into()));
        }
        let key = rcgen::KeyPair::generate().map_err(fail("mirror key"))?;
        let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(fail("mirror certificate"))?;
        let (cert_path, key_path) = (dir.join("mirror.pem"), dir.join("mirror.key"));
        fs::write(&cert_path, cert.pem()).map_err(fail("writing the mirror certificate"))?;
        fs::write(&key_path, key.serialize_pem()).map_err(fail("writing the mirror key"))?;

        let port = free_port().map_err(|e| ArtifactError::Failed(format!("{e:#}")))?;
        let p = dir.display();
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
        location / {{ try_files $uri =403; }}
    }}
}}
",
            cert = cert_path.display(),
            key = key_path.display(),
            root = root.display()
        );
        let conf_path = dir.join("nginx.conf");
        fs::write(&conf_path, conf).map_err(fail("writing nginx.conf"))?;
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .spawn()
            .map_err(fail("starting nginx"))?;
        let mut mirror = Mirror {
            child,
            port,
            dir: dir.to_path_buf(),
            ca_pem: ca_cert.pem(),
        };
        for _ in 0..400 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(mirror);
            }
            if let Ok(Some(status)) = mirror.child.try_wait() {
                return Err(ArtifactError::Failed(format!(
                    "nginx exited ({status}): {}",
                    fs::read_to_string(dir.join("logs/error.log")).unwrap_or_default()
                )));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Err(ArtifactError::Failed(format!(
            "nginx did not start listening on port {port}"
        )))
    }

    /// The mirror's URL as a guest reaches it.
    pub fn guest_url(&self) -> String {
        format!("https://{HOST_FROM_GUEST}:{}", self.port)
    }

    /// Its access log: (request line, status) per request.
    pub fn requests(&self) -> Vec<(String, u16)> {
        fs::read_to_string(self.dir.join("logs/access.log"))
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

impl Drop for Mirror {
    fn drop(&mut self) {
        // SIGTERM is nginx's fast shutdown: the master stops its worker.
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}
