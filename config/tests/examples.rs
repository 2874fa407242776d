//! The example files shipped in `config/examples/` must stay valid.

use std::path::Path;

use config::node::{Addressing, InterfaceChoice};
use config::rspec::Rspec;

fn example(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

#[test]
fn node_examples_parse() {
    let dhcp = config::NodeConfig::load(&example("node-dhcp.toml")).unwrap();
    assert_eq!(dhcp.network.addressing, Addressing::Dhcp);
    let fixed = config::NodeConfig::load(&example("node-static.toml")).unwrap();
    assert!(matches!(fixed.network.interface, InterfaceChoice::Mac(_)));
    assert_eq!(fixed.server_urls.len(), 2);
}

#[test]
fn either_form_loads_by_content() {
    let (c, warnings) = config::load_any_node_config(&example("plnode.txt")).unwrap();
    assert_eq!(c.fqdn(), "planetlab-3.cs.example.edu");
    assert!(warnings.is_empty());
    let (c, _) = config::load_any_node_config(&example("node-static.toml")).unwrap();
    assert_eq!(c.hostname.as_str(), "planetlab-2");
}

#[test]
fn rspec_example_parses_and_validates() {
    let text = std::fs::read_to_string(example("rspec.toml")).unwrap();
    let r: Rspec = toml::from_str(&text).unwrap();
    r.validate().unwrap();
    assert_eq!(r.cpu_share, 2);
}

#[test]
fn a_missing_file_names_the_path() {
    let e = config::NodeConfig::load(Path::new("/nonexistent/node.toml")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/node.toml: cannot read"),
        "{e}"
    );
}
