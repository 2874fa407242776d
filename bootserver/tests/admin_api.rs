//! The admin API in-process, as the QEMU harness and the benchmarks use it:
//! typed calls, typed answers, and a failed call stores nothing.

use bootserver::admin::{
    files, Admin, AdminError, ConfigUrls, InitOptions, LeaseEnd, NewNode, NodeConfigFormat,
    NodeRef, NodeSort, SliceSpec,
};
use bootserver::registry::RegistryError;
use config::api::{BootState, WireNetwork};
use config::node::NodeId;

fn admin(tmp: &tempfile::TempDir) -> Admin {
    let admin = Admin::init(
        &tmp.path().join("server"),
        &InitOptions {
            hosts: vec!["localhost".parse().unwrap()],
            ips: vec!["127.0.0.1".parse().unwrap()],
            listen: "127.0.0.1:8443".parse().unwrap(),
            urls: vec![],
            site_certificate: None,
        },
    )
    .unwrap();
    admin.add_site(&"demo".parse().unwrap(), "").unwrap();
    admin
}

#[test]
fn a_node_is_registered_with_a_config_the_node_accepts() {
    let tmp = tempfile::tempdir().unwrap();
    let admin = admin(&tmp);
    let spec = NewNode::new("demo".parse().unwrap(), "n1.example.org", None).unwrap();
    let (node, config) = admin.add_node(&spec, &ConfigUrls::FromServer).unwrap();
    assert_eq!(node.fqdn, "n1.example.org");
    assert_eq!(node.boot_state, BootState::Reinstall);
    assert_eq!(config.node_id, node.id);
    assert_eq!(
        config.server_urls,
        admin.workdir().config.server.urls,
        "the server's URLs by default"
    );

    let path = tmp.path().join("n1.txt");
    files::write_node_config(&path, &config, NodeConfigFormat::PlnodeTxt).unwrap();
    let (read_back, _) = config::load_any_node_config(&path).unwrap();
    assert_eq!(read_back.key, config.key);

    // A rekey hands out a config with a new key; the old one is gone.
    let by_name = NodeRef::Name("n1".into());
    let (_, rekeyed) = admin.rekey(&by_name, &ConfigUrls::FromBootCd).unwrap();
    assert_ne!(rekeyed.key, config.key);
    assert!(rekeyed.server_urls.is_empty());
    let (_, again) = admin
        .node_config(&NodeRef::Id(node.id), &ConfigUrls::FromServer)
        .unwrap();
    assert_eq!(again.key, rekeyed.key);
}

#[test]
fn a_node_whose_config_the_node_would_refuse_is_not_registered() {
    let tmp = tempfile::tempdir().unwrap();
    let admin = admin(&tmp);
    let mut spec = NewNode::new("demo".parse().unwrap(), "n2", None).unwrap();
    spec.network.addressing = WireNetwork::Static {
        address: "10.0.2.15".parse().unwrap(),
        prefix: 24,
        gateway: Some("10.0.3.1".parse().unwrap()),
        dns: vec![],
    };
    match admin.add_node(&spec, &ConfigUrls::FromServer) {
        Err(AdminError::InvalidNodeConfig { field, reason, .. }) => {
            assert_eq!(field.as_deref(), Some("network.gateway"));
            assert!(reason.contains("10.0.3.1"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(admin.list_nodes(None, NodeSort::Id).unwrap().is_empty());
}

#[test]
fn state_changes_say_what_they_changed_and_unknown_nodes_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let admin = admin(&tmp);
    let spec = NewNode::new("demo".parse().unwrap(), "n1", None).unwrap();
    let (node, _) = admin.add_node(&spec, &ConfigUrls::FromServer).unwrap();
    let node_ref = NodeRef::Id(node.id);

    let change = admin.set_boot_state(&node_ref, BootState::Debug).unwrap();
    assert_eq!(change.previous, BootState::Reinstall);
    assert_eq!(change.node.boot_state, BootState::Debug);
    let rebooting = admin.request_reboot(&node_ref).unwrap();
    assert!(rebooting.reboot_requested_at.is_some());
    let (_, log) = admin.node_log(&node_ref, 10).unwrap();
    assert_eq!(log.len(), 2, "{log:?}");

    let missing = NodeRef::Id(NodeId(99));
    assert!(matches!(
        admin.set_boot_state(&missing, BootState::Boot),
        Err(AdminError::Registry(RegistryError::NotFound { .. }))
    ));
}

#[test]
fn slice_membership_changes_all_or_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let admin = admin(&tmp);
    let spec = NewNode::new("demo".parse().unwrap(), "n1", None).unwrap();
    admin.add_node(&spec, &ConfigUrls::FromServer).unwrap();
    let name = "demo_web".parse().unwrap();
    admin
        .create_slice(&SliceSpec {
            name: "demo_web".parse().unwrap(),
            description: String::new(),
            rspec: Default::default(),
            initscript: None,
            lease: LeaseEnd::DaysFromNow(7),
        })
        .unwrap();
    let n1 = NodeRef::Name("n1".into());
    assert!(admin
        .add_nodes_to_slice(&name, &[n1.clone(), NodeRef::Name("n9".into())])
        .is_err());
    assert!(admin.show_slice(&name).unwrap().nodes.is_empty());
    let added = admin
        .add_nodes_to_slice(&name, std::slice::from_ref(&n1))
        .unwrap();
    assert!(added[0].changed);
    let again = admin.add_nodes_to_slice(&name, &[n1]).unwrap();
    assert!(!again[0].changed);
    assert_eq!(admin.show_slice(&name).unwrap().nodes, ["n1"]);
}
