//! What the boot server takes from the network before it trusts anything:
//! the `Authorization` header, `Range` and ETag headers, node report bodies
//! (and their bounds checks), and its own config file. Never a panic; a
//! parsed range always lies inside the file.
#![no_main]

use bootserver::input::{self, RangeRequest};
use config::api::{CheckinRequest, FailureReport, HelloRequest, ProgressReport};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let (selector, rest) = match data.split_first() {
        Some((s, r)) => (*s, r),
        None => return,
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match selector % 6 {
        0 => {
            let length = u64::from(selector) * 997 + rest.len() as u64;
            match input::parse_range(text, length) {
                RangeRequest::Part(r) => {
                    assert!(r.start < r.end && r.end <= length, "{text:?} -> {r:?}")
                }
                RangeRequest::Whole | RangeRequest::Unsatisfiable => {}
            }
            let _ = input::etag_matches(text, "\"abc\"");
        }
        1 => {
            if let Ok(header) = config::api::auth::AuthHeader::parse(text) {
                let key = config::node::NodeKey::new("0".repeat(64)).unwrap();
                let _ = header.verify(&key, "POST", "/api/v1/node/checkin", rest);
                let again =
                    config::api::auth::AuthHeader::parse(&header.to_header_value()).unwrap();
                assert_eq!(again, header);
            }
        }
        2 => {
            if let Ok(r) = serde_json::from_slice::<CheckinRequest>(rest) {
                let _ = input::check_checkin(&r);
            }
        }
        3 => {
            if let Ok(r) = serde_json::from_slice::<ProgressReport>(rest) {
                let _ = input::check_progress(&r);
            }
            if let Ok(r) = serde_json::from_slice::<FailureReport>(rest) {
                let _ = input::check_failure(&r);
            }
        }
        4 => {
            if let Ok(r) = serde_json::from_slice::<HelloRequest>(rest) {
                let _ = input::check_hardware(&r.hardware);
            }
        }
        _ => {
            if let Ok(c) =
                config::server::ServerConfig::from_toml(text, Path::new("bootserver.toml"))
            {
                let again =
                    config::server::ServerConfig::from_toml(&c.to_toml(), Path::new("again.toml"))
                        .expect("a config we accepted must survive its own TOML form");
                assert_eq!(c, again);
            }
        }
    }
});
