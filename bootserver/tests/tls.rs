//! TLS as a node sees it: the server is trusted only through the CA made by
//! `init`, under the names and addresses given there, with TLS 1.2 or 1.3.

mod common;

use common::client::{connect, raw_request, read_reply, tls_config, tls_config_versions};
use common::Workdir;

#[test]
fn a_client_trusting_the_servers_ca_is_served_under_every_name_given() {
    let wd = Workdir::new();
    let server = wd.start();
    for name in ["localhost", "127.0.0.1"] {
        let mut stream = connect(server.addr, tls_config(&wd.ca()), name).expect("handshake");
        use std::io::Write;
        stream
            .write_all(&raw_request("GET", "/status.json", &[], b""))
            .unwrap();
        let reply = read_reply(&mut stream, false).unwrap();
        assert_eq!(reply.status, 200, "{name}: {}", reply.text());
    }
    // The certificate also names 10.0.2.2 (the QEMU guest's view of the
    // host); the server listens on 127.0.0.1, so check the name itself.
    let cert = std::fs::read_to_string(wd.dir.join("tls/server.pem")).unwrap();
    let ca = wd.ca();
    bootserver::workdir::check_chain(
        &ca,
        &wd.dir.join("tls/server.pem"),
        &["localhost".into()],
        &["10.0.2.2".parse().unwrap(), "127.0.0.1".parse().unwrap()],
    )
    .expect("server certificate covers every --host and --ip");
    assert!(cert.contains("BEGIN CERTIFICATE"));
}

#[test]
fn tls_1_2_and_1_3_both_work() {
    let wd = Workdir::new();
    let server = wd.start();
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let stream = connect(
            server.addr,
            tls_config_versions(&wd.ca(), &[version]),
            "localhost",
        )
        .unwrap_or_else(|e| panic!("{version:?}: {e}"));
        assert_eq!(stream.conn.protocol_version(), Some(version.version));
    }
}

#[test]
fn a_client_that_trusts_a_different_ca_is_refused() {
    let wd = Workdir::new();
    let other = Workdir::new();
    let server = wd.start();
    let Err(err) = connect(server.addr, tls_config(&other.ca()), "localhost") else {
        panic!("a certificate from another CA must not be accepted");
    };
    let text = err.to_string();
    assert!(
        text.contains("UnknownIssuer") || text.contains("unknown issuer"),
        "{text}"
    );
}

#[test]
fn a_wrong_host_name_is_refused() {
    let wd = Workdir::new();
    let server = wd.start();
    let Err(err) = connect(server.addr, tls_config(&wd.ca()), "boot.example.org") else {
        panic!("a name not in the certificate must not be accepted");
    };
    let text = err.to_string();
    assert!(
        text.contains("NotValidForName") || text.contains("not valid for name"),
        "{text}"
    );
}
