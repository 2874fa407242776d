//! The `Authorization` header of a node request, the first thing the boot
//! server reads from the network: never a panic; a parsed header prints
//! back to a value that parses to the same header, and a signature made
//! with one key never verifies with another.
//!
//! Seeds: `fuzz/seeds/auth_header`.
#![no_main]

use config::api::auth::{sign_request, AuthHeader};
use config::node::NodeKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(header) = AuthHeader::parse(text) else {
        return;
    };
    let again = AuthHeader::parse(&header.to_header_value()).expect("own output parses");
    assert_eq!(again, header);
    let (Ok(ours), Ok(theirs)) = (NodeKey::new("0".repeat(64)), NodeKey::new("1".repeat(64)))
    else {
        unreachable!("64 hex digits make a key");
    };
    let path = "/api/v1/node/checkin";
    let _ = header.verify(&ours, "POST", path, data);
    let signed = sign_request(
        &ours,
        header.node_id,
        "POST",
        path,
        data,
        header.timestamp,
        header.nonce,
    );
    assert!(signed.verify(&ours, "POST", path, data).is_ok());
    assert!(signed.verify(&theirs, "POST", path, data).is_err());
    assert!(
        signed.verify(&ours, "POST", path, b"another body").is_err() || data == b"another body"
    );
});
