//! Node configs as a node may find them (a USB stick, the CD's per-node
//! area, the kernel command line, an old PlanetLab `plnode.txt`) and boot
//! server configs, good and hostile, checked in under `tests/data/` and
//! used as the seeds of the `node_config`, `plnode_txt` and `server_config`
//! fuzz targets. Each hostile one is refused naming the field at fault;
//! each good one loads. Every file on disk is listed here, and every one
//! listed is on disk.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use config::ConfigError;

enum Expect {
    /// Loads, with this many import warnings.
    Accepted { warnings: usize },
    /// `ConfigError::Invalid` naming `field`, the message containing `why`.
    Invalid {
        field: &'static str,
        why: &'static str,
    },
    /// `ConfigError::Read`: not text at all.
    Unreadable,
}

use Expect::*;

const FIXTURES: &[(&str, Expect)] = &[
    ("good-dhcp.toml", Accepted { warnings: 0 }),
    ("good-static.toml", Accepted { warnings: 0 }),
    ("good-plnode.txt", Accepted { warnings: 0 }),
    (
        "good-plnode-dhcp-unknown-names.txt",
        Accepted { warnings: 2 },
    ),
    (
        "trust-root-smuggled.toml",
        Invalid {
            field: "trust",
            why: "unknown field `trust`",
        },
    ),
    (
        "server-url-plain-http.toml",
        Invalid {
            field: "server.urls",
            why: "is not an https:// URL",
        },
    ),
    (
        "server-url-white-space.toml",
        Invalid {
            field: "server.urls",
            why: "contains white space",
        },
    ),
    (
        "key-too-short.toml",
        Invalid {
            field: "node.key",
            why: "at least 32 are needed",
        },
    ),
    (
        "key-with-quote.toml",
        Invalid {
            field: "node.key",
            why: "without spaces or quotes",
        },
    ),
    (
        "hostname-shell-metacharacter.toml",
        Invalid {
            field: "node.hostname",
            why: "is not a valid host or domain name",
        },
    ),
    (
        "hostname-label-too-long.toml",
        Invalid {
            field: "node.hostname",
            why: "at most 63",
        },
    ),
    (
        "node-id-negative.toml",
        Invalid {
            field: "node.id",
            why: "expected u64",
        },
    ),
    (
        "node-id-too-large.toml",
        Invalid {
            field: "node.id",
            why: "expected u64",
        },
    ),
    (
        "prefix-out-of-range.toml",
        Invalid {
            field: "network.prefix",
            why: "out of range",
        },
    ),
    (
        "gateway-outside-network.toml",
        Invalid {
            field: "network.gateway",
            why: "is not another host in 10.0.2.0/24",
        },
    ),
    (
        "static-without-address.toml",
        Invalid {
            field: "network.address",
            why: "needs address and prefix",
        },
    ),
    (
        "duplicate-key.toml",
        Invalid {
            field: "node.hostname",
            why: "duplicate key",
        },
    ),
    ("not-utf8.toml", Unreadable),
    (
        "plnode-missing-node-key.txt",
        Invalid {
            field: "NODE_KEY",
            why: "must be set",
        },
    ),
    (
        "plnode-netmask-not-contiguous.txt",
        Invalid {
            field: "IP_NETMASK",
            why: "not contiguous",
        },
    ),
    (
        "plnode-network-disagrees.txt",
        Invalid {
            field: "IP_NETADDR",
            why: "is not the network of 10.0.2.15/24",
        },
    ),
    (
        "plnode-set-twice.txt",
        Invalid {
            field: "NODE_ID",
            why: "set twice",
        },
    ),
    (
        "plnode-shell-injection.txt",
        Invalid {
            field: "HOST_NAME",
            why: "is not a valid host or domain name",
        },
    ),
    (
        "plnode-unterminated-quote.txt",
        Invalid {
            field: "HOST_NAME",
            why: "unterminated quote",
        },
    ),
];

const SERVER_FIXTURES: &[(&str, Expect)] = &[
    ("good-minimal.toml", Accepted { warnings: 0 }),
    ("good-full.toml", Accepted { warnings: 0 }),
    (
        "clock-skew-a-week.toml",
        Invalid {
            field: "auth.clock_skew_secs",
            why: "out of range",
        },
    ),
    (
        "max-body-too-large.toml",
        Invalid {
            field: "limits.max_body",
            why: "out of range",
        },
    ),
    (
        "no-connections.toml",
        Invalid {
            field: "limits.max_connections",
            why: "at least one",
        },
    ),
    (
        "debug-ssh-key-two-lines.toml",
        Invalid {
            field: "nodes.debug_ssh_keys",
            why: "is not an ssh public key line",
        },
    ),
    (
        "listen-not-an-address.toml",
        Invalid {
            field: "server.listen",
            why: "invalid socket address",
        },
    ),
    (
        "unknown-section.toml",
        Invalid {
            field: "database",
            why: "unknown field `database`",
        },
    ),
];

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/node")
}

fn server_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/server")
}

/// Checks a refusal against its expectation.
fn check_refusal(name: &str, path: &Path, expect: &Expect, e: &ConfigError) {
    match (expect, e) {
        (Invalid { field, why }, ConfigError::Invalid { .. }) => {
            assert_eq!(e.field(), Some(*field), "{name}: {e}");
            let text = e.to_string();
            assert!(text.contains(why), "{name}: {text}");
            // The message says where: the file, and a line.
            assert!(text.starts_with(&format!("{}:", path.display())), "{text}");
        }
        (Unreadable, ConfigError::Read { .. }) => {}
        (Accepted { .. }, _) => panic!("{name}: refused: {e}"),
        _ => panic!("{name}: refused for another reason: {e}"),
    }
}

fn listed_and_on_disk(dir: &Path, listed: &[(&str, Expect)]) {
    let listed: BTreeSet<String> = listed.iter().map(|(n, _)| n.to_string()).collect();
    let on_disk: BTreeSet<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(on_disk, listed, "{}", dir.display());
}

#[test]
fn every_node_config_fixture_loads_or_is_refused_naming_its_field() {
    for (name, expect) in FIXTURES {
        let path = data().join(name);
        match (expect, config::load_any_node_config(&path)) {
            (Accepted { warnings }, Ok((config, found))) => {
                assert_eq!(found.len(), *warnings, "{name}: {found:?}");
                // What loads also survives its own TOML form.
                let again = config::NodeConfig::from_toml(&config.to_toml(), Path::new("again"))
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(again, config, "{name}");
            }
            (_, Ok(_)) => panic!("{name}: accepted"),
            (expect, Err(e)) => check_refusal(name, &path, expect, &e),
        }
    }
}

#[test]
fn every_server_config_fixture_loads_or_is_refused_naming_its_field() {
    for (name, expect) in SERVER_FIXTURES {
        let path = server_data().join(name);
        match (expect, config::server::ServerConfig::load(&path)) {
            (Accepted { .. }, Ok(config)) => {
                let again =
                    config::server::ServerConfig::from_toml(&config.to_toml(), Path::new("again"))
                        .unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(again, config, "{name}");
            }
            (_, Ok(_)) => panic!("{name}: accepted"),
            (expect, Err(e)) => check_refusal(name, &path, expect, &e),
        }
    }
}

#[test]
fn the_fixtures_on_disk_are_the_ones_listed() {
    listed_and_on_disk(&data(), FIXTURES);
    listed_and_on_disk(&server_data(), SERVER_FIXTURES);
}
