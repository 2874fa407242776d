//! The check-in reply's hints are authenticated like every reply: a reply
//! whose signature does not verify for this very request is refused whole,
//! so a forged or replayed "check updates now" wakes nothing. The forger
//! here has even stolen the boot server's TLS key (it serves with the real
//! server certificate), but not the node's key.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bootserver::admin::{Admin, ConfigUrls, InitOptions, NewNode, NodeRef};
use config::api::{CheckinRequest, RunLevel};
use config::node::{NodeConfig, NodeId};
use init::boot_server::{ServerClient, ServerError};
use init::node::supervisor::{hints, spec::SupervisorSpec};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A reply the fake server sends: extra headers and a body.
#[derive(Clone, Default)]
struct Canned {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// An HTTPS server with the boot server's own certificate that answers
/// every request with what `canned` holds.
fn fake_server(tls: Arc<rustls::ServerConfig>, canned: Arc<Mutex<Canned>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (tls, canned) = (tls.clone(), canned.clone());
            std::thread::spawn(move || serve_one(stream, tls, canned));
        }
    });
    port
}

fn serve_one(stream: TcpStream, tls: Arc<rustls::ServerConfig>, canned: Arc<Mutex<Canned>>) {
    let Ok(conn) = rustls::ServerConnection::new(tls) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(conn, stream);
    loop {
        let mut reader = BufReader::new(&mut tls);
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let reply = canned.lock().unwrap().clone();
        let mut head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            reply.body.len()
        );
        for (k, v) in &reply.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        if tls.write_all(head.as_bytes()).is_err() || tls.write_all(&reply.body).is_err() {
            return;
        }
        let _ = tls.flush();
    }
}

fn client_for(port: u16, ca: &[u8], config: &NodeConfig) -> ServerClient {
    ServerClient::new(
        ca,
        vec![format!("https://127.0.0.1:{port}").parse().unwrap()],
        None,
        SystemTime::UNIX_EPOCH,
        Some((config.node_id, config.key.clone())),
    )
    .unwrap()
}

fn request(node: NodeId) -> CheckinRequest {
    CheckinRequest {
        node_id: node,
        run_level: RunLevel::Boot,
        bootcd_version: None,
        os_version: None,
        deployment: None,
        hardware: None,
        health: None,
        uptime_secs: 1,
        node_time: config::Timestamp::now(),
    }
}

const UPDATER: &str =
    "[[service]]\nname = \"updater\"\ncommand = [\"x\"]\nwake_on = [\"check_updates\"]\n";

#[test]
fn a_forged_or_replayed_check_now_hint_is_refused_and_wakes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let workdir = dir.path().join("server");
    let port = free_port();
    let admin = Admin::init(
        &workdir,
        &InitOptions {
            hosts: vec!["localhost".parse().unwrap()],
            ips: vec![[127, 0, 0, 1].into()],
            listen: ([127, 0, 0, 1], port).into(),
            urls: vec![format!("https://127.0.0.1:{port}").parse().unwrap()],
            site_certificate: None,
        },
    )
    .unwrap();
    admin.add_site(&"testsite".parse().unwrap(), "").unwrap();
    let spec = NewNode::new("testsite".parse().unwrap(), "node1.example.org", None).unwrap();
    let (node, config) = admin.add_node(&spec, &ConfigUrls::FromServer).unwrap();
    let serving = Admin::open(&workdir).unwrap();
    std::thread::spawn(move || {
        let _ = serving.serve(
            Some(([127, 0, 0, 1], port).into()),
            |_| {},
            std::future::pending(),
        );
    });
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let ca = std::fs::read(workdir.join("ca/ca.pem")).unwrap();
    let services = SupervisorSpec::parse(UPDATER, Path::new("supervisor.toml"))
        .unwrap()
        .services;

    // The genuine article: staff asked for a check; the signed reply says so.
    admin.update_now(&NodeRef::Id(node.id)).unwrap();
    let mut genuine = client_for(port, &ca, &config);
    let reply = hints::checkin(&mut genuine, &request(node.id)).unwrap();
    assert!(reply.hints.check_updates);
    assert_eq!(
        hints::to_wake(&services, &reply.hints),
        [("updater", config::api::Hint::CheckUpdates)]
    );
    let again = hints::checkin(&mut genuine, &request(node.id)).unwrap();
    assert!(!again.hints.check_updates, "the hint is given once");

    // Capture a real signed reply with the hint, to replay it.
    admin.update_now(&NodeRef::Id(node.id)).unwrap();
    let captured = {
        let body = serde_json::to_vec(&request(node.id)).unwrap();
        let nonce = init::boot_server::fresh_nonce();
        let ts = config::Timestamp::now().unix();
        let auth = config::api::auth::sign_request(
            &config.key,
            config.node_id,
            "POST",
            config::api::paths::CHECKIN,
            &body,
            ts,
            nonce,
        );
        let client =
            pkgsign::net::build_client(&pkgsign::net::ClientOptions::new(ca.clone())).unwrap();
        let resp = client
            .post(format!(
                "https://127.0.0.1:{port}{}",
                config::api::paths::CHECKIN
            ))
            .header("authorization", auth.to_header_value())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        let sig = resp
            .headers()
            .get(config::api::auth::RESPONSE_SIG_HEADER)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let body = resp.bytes().unwrap().to_vec();
        assert!(String::from_utf8_lossy(&body).contains("check_updates"));
        (body, sig)
    };

    // The forger: the real server's certificate, canned replies.
    let tls = bootserver::workdir::WorkDir::open(&workdir)
        .unwrap()
        .tls_config()
        .unwrap();
    let canned = Arc::new(Mutex::new(Canned::default()));
    let fake = fake_server(tls, canned.clone());
    let mut node_client = client_for(fake, &ca, &config);

    // 1. No signature at all.
    *canned.lock().unwrap() = Canned {
        headers: vec![],
        body: captured.0.clone(),
    };
    let refused = hints::checkin(&mut node_client, &request(node.id)).unwrap_err();
    assert!(
        matches!(&refused, ServerError::BadReply { reason, .. } if reason.contains("no response signature")),
        "{refused}"
    );

    // 2. Signed with another key.
    let other = config::node::NodeKey::new("f".repeat(64)).unwrap();
    let forged_sig = config::api::auth::sign_response(
        &other,
        config::api::auth::Nonce::from_random_bytes([7; 16]),
        &captured.0,
    );
    *canned.lock().unwrap() = Canned {
        headers: vec![(
            config::api::auth::RESPONSE_SIG_HEADER.to_string(),
            forged_sig,
        )],
        body: captured.0.clone(),
    };
    let refused = hints::checkin(&mut node_client, &request(node.id)).unwrap_err();
    assert!(
        matches!(&refused, ServerError::BadReply { reason, .. } if reason.contains("response signature")),
        "{refused}"
    );

    // 3. A genuine reply and its genuine signature, replayed: it answered
    // another request (another nonce), so it does not verify for this one.
    *canned.lock().unwrap() = Canned {
        headers: vec![(
            config::api::auth::RESPONSE_SIG_HEADER.to_string(),
            captured.1.clone(),
        )],
        body: captured.0.clone(),
    };
    let refused = hints::checkin(&mut node_client, &request(node.id)).unwrap_err();
    assert!(
        matches!(&refused, ServerError::BadReply { reason, .. } if reason.contains("response signature")),
        "{refused}"
    );
}

const NODEMGR: &str =
    "[[service]]\nname = \"nodemgr\"\ncommand = [\"x\"]\nwake_on = [\"slices_changed\"]\n";

#[test]
fn the_slices_changed_hint_follows_what_the_node_fetched_and_a_forged_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let workdir = dir.path().join("server");
    let port = free_port();
    let admin = Admin::init(
        &workdir,
        &InitOptions {
            hosts: vec!["localhost".parse().unwrap()],
            ips: vec![[127, 0, 0, 1].into()],
            listen: ([127, 0, 0, 1], port).into(),
            urls: vec![format!("https://127.0.0.1:{port}").parse().unwrap()],
            site_certificate: None,
        },
    )
    .unwrap();
    admin.add_site(&"testsite".parse().unwrap(), "").unwrap();
    let spec = NewNode::new("testsite".parse().unwrap(), "node1.example.org", None).unwrap();
    let (node, config) = admin.add_node(&spec, &ConfigUrls::FromServer).unwrap();
    let serving = Admin::open(&workdir).unwrap();
    std::thread::spawn(move || {
        let _ = serving.serve(
            Some(([127, 0, 0, 1], port).into()),
            |_| {},
            std::future::pending(),
        );
    });
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let ca = std::fs::read(workdir.join("ca/ca.pem")).unwrap();
    let services = SupervisorSpec::parse(NODEMGR, Path::new("supervisor.toml"))
        .unwrap()
        .services;
    let mut genuine = client_for(port, &ca, &config);
    let fetch = |c: &mut ServerClient| {
        c.get::<config::api::SliversResponse>(config::api::paths::SLIVERS)
            .unwrap()
    };

    // No slices: no hint.
    let reply = hints::checkin(&mut genuine, &request(node.id)).unwrap();
    assert!(!reply.hints.slices_changed);
    // A slice assigned: the hint, until the node fetched its slivers.
    let slice: bootserver::model::SliceName = "pl_hinted".parse().unwrap();
    admin
        .create_slice(&bootserver::admin::SliceSpec {
            name: slice.clone(),
            description: String::new(),
            rspec: config::rspec::Rspec::default(),
            initscript: None,
            lease: bootserver::admin::LeaseEnd::DaysFromNow(30),
        })
        .unwrap();
    admin
        .add_nodes_to_slice(&slice, &[NodeRef::Id(node.id)])
        .unwrap();
    let reply = hints::checkin(&mut genuine, &request(node.id)).unwrap();
    assert!(reply.hints.slices_changed);
    assert_eq!(
        hints::to_wake(&services, &reply.hints),
        [("nodemgr", config::api::Hint::SlicesChanged)]
    );
    assert!(
        hints::checkin(&mut genuine, &request(node.id))
            .unwrap()
            .hints
            .slices_changed
    );
    assert_eq!(fetch(&mut genuine).slivers.len(), 1);
    let reply = hints::checkin(&mut genuine, &request(node.id)).unwrap();
    assert!(!reply.hints.slices_changed, "fetched: nothing new");
    // Keys, rspecs and leases count too.
    admin
        .add_slice_keys(
            &slice,
            &["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq8mCjRqUoFdjvQ2xAq3hQ6X7tq1z0Jg7oQyJ6l2S9u a@b"
                .parse()
                .unwrap()],
        )
        .unwrap();
    assert!(
        hints::checkin(&mut genuine, &request(node.id))
            .unwrap()
            .hints
            .slices_changed
    );
    fetch(&mut genuine);
    admin
        .renew(&slice, bootserver::admin::LeaseEnd::DaysFromNow(60))
        .unwrap();
    assert!(
        hints::checkin(&mut genuine, &request(node.id))
            .unwrap()
            .hints
            .slices_changed
    );

    // A forged reply carrying the hint: unsigned, or signed with another
    // key, it is refused whole and wakes nothing.
    let body = serde_json::to_vec(&reply_with_hint(&reply)).unwrap();
    assert!(String::from_utf8_lossy(&body).contains("slices_changed"));
    let tls = bootserver::workdir::WorkDir::open(&workdir)
        .unwrap()
        .tls_config()
        .unwrap();
    let canned = Arc::new(Mutex::new(Canned::default()));
    let fake = fake_server(tls, canned.clone());
    let mut node_client = client_for(fake, &ca, &config);
    *canned.lock().unwrap() = Canned {
        headers: vec![],
        body: body.clone(),
    };
    assert!(hints::checkin(&mut node_client, &request(node.id)).is_err());
    let other = config::node::NodeKey::new("e".repeat(64)).unwrap();
    let forged = config::api::auth::sign_response(
        &other,
        config::api::auth::Nonce::from_random_bytes([3; 16]),
        &body,
    );
    *canned.lock().unwrap() = Canned {
        headers: vec![(config::api::auth::RESPONSE_SIG_HEADER.to_string(), forged)],
        body,
    };
    let refused = hints::checkin(&mut node_client, &request(node.id)).unwrap_err();
    assert!(
        matches!(&refused, ServerError::BadReply { reason, .. } if reason.contains("response signature")),
        "{refused}"
    );
}

fn reply_with_hint(reply: &config::api::CheckinResponse) -> config::api::CheckinResponse {
    let mut forged = reply.clone();
    forged.hints.slices_changed = true;
    forged
}
