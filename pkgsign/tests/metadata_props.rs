//! Property tests: signed metadata round-trips exactly, and no single-byte
//! change to a signed document is accepted as different content.

use std::collections::BTreeMap;

use pkgsign::metadata::{
    sign_document, Envelope, Hashes, Keyring, MetaInfo, Role, RoleType, Root, Sha256Digest,
    Snapshot, TargetInfo, Targets, Timestamp,
};
use pkgsign::SecretKey;
use proptest::prelude::*;
use serde_json::{Map, Value};

fn name() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9._+-]{0,20}"
}

fn custom_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<String>().prop_map(Value::String),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn target_info() -> impl Strategy<Value = TargetInfo> {
    (
        name(),
        any::<u64>(),
        any::<[u8; 32]>(),
        name(),
        any::<Option<u64>>(),
        any::<bool>(),
        prop::collection::btree_map(any::<String>(), custom_value(), 0..3),
    )
        .prop_map(
            |(version, length, digest, file, unpacked_length, base_image, custom)| TargetInfo {
                version,
                length,
                hashes: Hashes {
                    sha256: Sha256Digest(digest),
                },
                path: format!("targets/{}.{file}.tar.gz", hex::encode(digest)),
                unpacked_length,
                base_image,
                custom: custom.into_iter().collect::<Map<String, Value>>(),
            },
        )
}

fn expiry() -> impl Strategy<Value = floor::Timestamp> {
    (0i64..4_102_444_800).prop_map(floor::Timestamp::from_unix)
}

fn keyring(role: RoleType, keys: &[SecretKey], threshold: u32) -> Keyring {
    Keyring {
        role,
        keys: keys.iter().map(|k| (*k.id(), k.public().clone())).collect(),
        threshold,
    }
}

fn round_trip<T: Role + PartialEq + std::fmt::Debug>(
    doc: &T,
    keys: &[SecretKey],
) -> Result<(), TestCaseError> {
    let refs: Vec<&SecretKey> = keys.iter().collect();
    let bytes = sign_document(doc, &refs).unwrap();
    let envelope = Envelope::parse(&bytes).unwrap();
    let back: T = envelope
        .verify(&keyring(T::TYPE, keys, keys.len() as u32))
        .unwrap();
    prop_assert_eq!(&back, doc);
    // Re-signing what was parsed gives the same bytes: one encoding per value.
    prop_assert_eq!(sign_document(&back, &refs).unwrap(), bytes);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn targets_round_trip(version in 1u64.., expires in expiry(),
                          targets in prop::collection::btree_map(name(), target_info(), 0..6)) {
        let keys = vec![SecretKey::generate().unwrap(), SecretKey::generate().unwrap()];
        round_trip(&Targets::new(version, expires, targets), &keys)?;
    }

    #[test]
    fn snapshot_and_timestamp_round_trip(version in 1u64.., inner in 1u64.., expires in expiry(), body in any::<Vec<u8>>()) {
        let keys = vec![SecretKey::generate().unwrap()];
        round_trip(&Snapshot::new(version, expires, MetaInfo::describe(inner, &body)), &keys)?;
        round_trip(&Timestamp::new(version, expires, MetaInfo::describe(inner, &body)), &keys)?;
    }

    #[test]
    fn root_round_trip(version in 1u64.., expires in expiry(), counts in prop::array::uniform4(1usize..4)) {
        let mut roles = BTreeMap::new();
        let mut all = Vec::new();
        for (role, n) in RoleType::ALL.into_iter().zip(counts) {
            let keys: Vec<SecretKey> = (0..n).map(|_| SecretKey::generate().unwrap()).collect();
            roles.insert(role, (keys.iter().map(|k| k.public().clone()).collect(), n as u32));
            if role == RoleType::Root {
                all = keys;
            }
        }
        round_trip(&Root::new(version, expires, &roles), &all)?;
    }

    #[test]
    fn a_changed_byte_is_never_accepted_as_other_content(
        targets in prop::collection::btree_map(name(), target_info(), 1..3),
        position in any::<prop::sample::Index>(), new_byte in any::<u8>())
    {
        let keys = vec![SecretKey::generate().unwrap()];
        let doc = Targets::new(1, floor::Timestamp::from_unix(2_000_000_000), targets);
        let mut bytes = sign_document(&doc, &[&keys[0]]).unwrap();
        let at = position.index(bytes.len());
        prop_assume!(bytes[at] != new_byte);
        bytes[at] = new_byte;
        let accepted = Envelope::parse(&bytes).ok().and_then(|e| e.verify::<Targets>(&keyring(RoleType::Targets, &keys, 1)).ok());
        if let Some(accepted) = accepted {
            prop_assert_eq!(accepted, doc);
        }
    }
}
