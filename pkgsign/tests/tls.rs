//! The node's HTTPS client against a real rustls server with rcgen
//! certificates: only the given CA is trusted, the host name is checked,
//! and every failure is explained with its category.

mod common;

use std::fs;
use std::net::TcpListener;
use std::time::{Duration, SystemTime};

use common::server::{Pki, TestServer};
use pkgsign::net::{build_client, explain, ClientOptions, Failure, FailureKind};

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn served_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("hello.txt"), b"hello").unwrap();
    dir
}

fn get(options: &ClientOptions, url: &str) -> Result<String, Failure> {
    let client = build_client(options).unwrap();
    let response = client.get(url).send().map_err(|e| explain(&e))?;
    response.text().map_err(|e| explain(&e))
}

fn serve(
    pki: &Pki,
    names: &[&str],
    not_before: i64,
    not_after: i64,
) -> (tempfile::TempDir, TestServer) {
    let dir = served_dir();
    let server = TestServer::start(
        dir.path().to_path_buf(),
        pki.leaf_valid(names, not_before, not_after),
    );
    (dir, server)
}

#[test]
fn trusted_ca_and_matching_name_succeed() {
    let pki = Pki::new("test CA");
    let (_dir, server) = serve(&pki, &["127.0.0.1"], now() - 3600, now() + 3600);
    let body = get(
        &ClientOptions::new(pki.ca_pem.clone().into()),
        &format!("{}/hello.txt", server.base_url()),
    )
    .unwrap();
    assert_eq!(body, "hello");
}

#[test]
fn certificate_from_another_ca_is_not_trusted() {
    let pki = Pki::new("server CA");
    let other = Pki::new("some other CA");
    let (_dir, server) = serve(&pki, &["127.0.0.1"], now() - 3600, now() + 3600);
    let failure = get(
        &ClientOptions::new(other.ca_pem.into()),
        &format!("{}/hello.txt", server.base_url()),
    )
    .unwrap_err();
    eprintln!("{failure}");
    assert_eq!(failure.kind, FailureKind::UntrustedCertificate, "{failure}");
    assert!(
        failure
            .to_string()
            .starts_with("certificate not trusted (unknown CA): 127.0.0.1:"),
        "{failure}"
    );
}

#[test]
fn host_name_mismatch_is_reported() {
    let pki = Pki::new("test CA");
    let (_dir, server) = serve(&pki, &["boot.example.org"], now() - 3600, now() + 3600);
    let failure = get(
        &ClientOptions::new(pki.ca_pem.into()),
        &format!("{}/hello.txt", server.base_url()),
    )
    .unwrap_err();
    eprintln!("{failure}");
    assert_eq!(failure.kind, FailureKind::HostNameMismatch, "{failure}");
}

#[test]
fn expired_certificate_is_reported_as_a_clock_problem() {
    let pki = Pki::new("test CA");
    let (_dir, server) = serve(&pki, &["127.0.0.1"], now() - 10 * 86_400, now() - 86_400);
    let failure = get(
        &ClientOptions::new(pki.ca_pem.into()),
        &format!("{}/hello.txt", server.base_url()),
    )
    .unwrap_err();
    eprintln!("{failure}");
    assert_eq!(failure.kind, FailureKind::CertificateTime, "{failure}");
    assert!(failure.to_string().contains("check the clock"));
}

#[test]
fn clock_floor_accepts_a_certificate_the_system_clock_thinks_is_not_yet_valid() {
    // What a node with a dead RTC sees: the certificate starts "in the future".
    let pki = Pki::new("test CA");
    let (_dir, server) = serve(
        &pki,
        &["127.0.0.1"],
        now() + 10 * 86_400,
        now() + 20 * 86_400,
    );
    let url = format!("{}/hello.txt", server.base_url());
    let mut options = ClientOptions::new(pki.ca_pem.into());
    let failure = get(&options, &url).unwrap_err();
    assert_eq!(failure.kind, FailureKind::CertificateTime, "{failure}");
    options.clock_floor = Some(SystemTime::now() + Duration::from_secs(11 * 86_400));
    assert_eq!(get(&options, &url).unwrap(), "hello");
}

#[test]
fn connection_refused_is_reported() {
    let pki = Pki::new("test CA");
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let failure = get(
        &ClientOptions::new(pki.ca_pem.into()),
        &format!("https://127.0.0.1:{port}/x"),
    )
    .unwrap_err();
    eprintln!("{failure}");
    assert_eq!(failure.kind, FailureKind::ConnectionRefused, "{failure}");
}

#[test]
fn silent_server_times_out() {
    let pki = Pki::new("test CA");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts and never answers, not even the TLS handshake.
    let holder = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        std::thread::sleep(Duration::from_secs(2));
        drop(stream);
    });
    let mut options = ClientOptions::new(pki.ca_pem.into());
    options.read_timeout = Duration::from_millis(500);
    let failure = get(&options, &format!("https://127.0.0.1:{port}/x")).unwrap_err();
    eprintln!("{failure}");
    assert_eq!(failure.kind, FailureKind::Timeout, "{failure}");
    holder.join().unwrap();
}

#[test]
fn unknown_host_is_a_dns_failure() {
    let pki = Pki::new("test CA");
    let failure = get(
        &ClientOptions::new(pki.ca_pem.into()),
        "https://no-such-host.invalid/x",
    )
    .unwrap_err();
    eprintln!("{failure}");
    assert_eq!(failure.kind, FailureKind::Dns, "{failure}");
}

#[test]
fn a_ca_file_without_certificates_is_refused() {
    let err = build_client(&ClientOptions::new(b"not a certificate".to_vec())).unwrap_err();
    assert!(err.to_string().contains("no PEM certificate"), "{err}");
}
