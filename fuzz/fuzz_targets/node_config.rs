//! A node config of either form (TOML or plnode.txt), from anywhere a node
//! may find one (a USB stick, the CD's per-node area, the kernel command
//! line): never a panic, and an accepted config survives a TOML round trip.
//!
//! Seeds: `config/tests/data/node`, `config/examples`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((config, _)) = config::parse_any_node_config(text, Path::new("fuzz.toml")) {
        let again = config::NodeConfig::from_toml(&config.to_toml(), Path::new("again.toml"))
            .expect("a config we accepted must survive its own TOML form");
        assert_eq!(config, again);
    }
});
