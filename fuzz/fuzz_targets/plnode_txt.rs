//! PlanetLab's plnode.txt import: never a panic, and an imported config
//! exports to plnode.txt and imports back to the same value.
//!
//! Seeds: `config/tests/data/node`, `config/examples`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(imported) = config::plnode::parse(text, Path::new("plnode.txt")) {
        let again = config::plnode::parse(
            &config::plnode::to_plnode_txt(&imported.config),
            Path::new("again.txt"),
        )
        .expect("an imported config must survive its own plnode.txt form");
        assert_eq!(imported.config, again.config);
    }
});
