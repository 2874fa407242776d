//! The boot server's `bootserver.toml`: never a panic, and an accepted
//! config survives its own TOML form.
//!
//! Seeds: `fuzz/seeds/server_config`.
#![no_main]

use std::path::Path;

use config::server::ServerConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = ServerConfig::from_toml(text, Path::new("bootserver.toml")) {
        let again = ServerConfig::from_toml(&config.to_toml(), Path::new("again.toml"))
            .expect("a config we accepted must survive its own TOML form");
        assert_eq!(config, again);
    }
});
