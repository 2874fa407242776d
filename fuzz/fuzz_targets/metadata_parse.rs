//! Signed metadata parsing: canonical JSON, the envelope and every role,
//! plus the other small JSON documents pkgsign reads (detached signatures,
//! install manifests). Must never panic; a parsed value must re-encode to
//! bytes that parse back to the same value.
//!
//! Seeds: `pkgsign/tests/data` (hostile documents and the metadata of every
//! attack scenario).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pkgsign::canonical;
use pkgsign::detached::DetachedSignature;
use pkgsign::install::Manifest;
use pkgsign::metadata::{Envelope, Root, Snapshot, Targets, Timestamp};

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = canonical::parse(data) {
        // Parsed values hold no floats, so they always have an encoding.
        let encoded = canonical::encode(&value).expect("parsed value must encode");
        let again = canonical::parse(&encoded).expect("canonical output must parse");
        assert_eq!(again, value);
        assert_eq!(
            canonical::encode(&again).expect("encode"),
            encoded,
            "encoding is not unique"
        );
    }
    if let Ok(envelope) = Envelope::parse(data) {
        let _ = envelope.claimed_type();
        if let Ok(root) = envelope.decode::<Root>() {
            for role in pkgsign::RoleType::ALL {
                if let Ok(ring) = root.keyring(role) {
                    let _ = envelope.check_threshold(&ring);
                }
            }
        }
        if let Ok(t) = envelope.decode::<Targets>() {
            for info in t.targets.values() {
                let _ = info.unpacked_limit();
            }
        }
        let _ = envelope.decode::<Snapshot>();
        let _ = envelope.decode::<Timestamp>();
    }
    let _ = DetachedSignature::from_json(data);
    let _ = Manifest::from_json(data);
});
