//! The seeds of the fuzz targets whose parsers live in `init` and
//! `bootserver` (`fuzz/seeds/<target>/`, made by `cargo run -p plnode-fuzz
//! --example make-seeds`, superblocks by mkfs): each good one is understood
//! and each hostile one refused or defused, as its name says. Every seed
//! on disk is listed here, and every one listed is on disk.

use std::collections::BTreeSet;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use bootserver::input::{self, ByteRange, RangeRequest};
use config::api::auth::{AuthError, AuthHeader};
use config::api::{CheckinRequest, FailureReport, HelloRequest, ProgressReport};
use config::node::MacAddr;
use dhcproto::v4::MessageType;
use init::blockdev::{self, FsKind};
use init::kernel_cmdline::Cmdline;
use init::net::dhcp;

fn seeds(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target)
}

fn read(target: &str, name: &str) -> Vec<u8> {
    fs::read(seeds(target).join(name)).unwrap_or_else(|e| panic!("{target}/{name}: {e}"))
}

fn text(target: &str, name: &str) -> String {
    String::from_utf8(read(target, name)).unwrap()
}

/// Every file of `target`'s seed directory is one of `listed`, and back.
fn all_listed(target: &str, listed: impl IntoIterator<Item = &'static str>) {
    let listed: BTreeSet<String> = listed.into_iter().map(String::from).collect();
    let on_disk: BTreeSet<String> = fs::read_dir(seeds(target))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(on_disk, listed, "fuzz/seeds/{target}");
}

const XID: u32 = 0x1234_5678;
const MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]);

#[test]
fn dhcp_replies_for_this_client_only() {
    let accepted = [
        ("offer.bin", MessageType::Offer),
        ("ack.bin", MessageType::Ack),
        ("nak.bin", MessageType::Nak),
    ];
    for (name, kind) in accepted {
        let reply = dhcp::parse_reply(&read("dhcp_reply", name), XID, MAC).expect(name);
        assert_eq!(reply.kind, kind, "{name}");
        assert_eq!(reply.your_address, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(reply.server, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(reply.mask, Some(Ipv4Addr::new(255, 255, 255, 0)));
        assert_eq!(reply.router, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(reply.dns, [Ipv4Addr::new(10, 0, 2, 3)]);
        assert_eq!(reply.domain.as_deref(), Some("example.org"));
        assert_eq!(reply.lease_secs, Some(86_400));
    }
    let ignored = [
        "offer-other-transaction.bin",
        "offer-other-client.bin",
        "request-not-a-reply.bin",
        "reply-without-message-type.bin",
        "offer-truncated.bin",
        "offer-truncated-header.bin",
        "offer-domain-not-text-lease-zero.bin",
        "empty.bin",
    ];
    for name in ignored {
        assert!(
            dhcp::parse_reply(&read("dhcp_reply", name), XID, MAC).is_none(),
            "{name}: accepted"
        );
    }
    // Accepted today, though neither is a well-formed DHCP reply: dhcproto
    // does not check the magic cookie, and stops reading options at a
    // malformed one without an error, so the offer arrives without its
    // server, mask and router. `parse_reply` should refuse both.
    let lax = [
        "bad-magic-cookie.bin",
        "option-length-overruns-datagram.bin",
    ];
    for name in lax {
        let reply = dhcp::parse_reply(&read("dhcp_reply", name), XID, MAC);
        assert!(reply.is_some(), "{name}: now refused; move it to `ignored`");
    }
    all_listed(
        "dhcp_reply",
        accepted.iter().map(|(n, _)| *n).chain(ignored).chain(lax),
    );
}

/// What a probe should make of a device's first bytes: its kind and label.
type Recognised = Option<(FsKind, Option<&'static str>)>;

#[test]
fn superblocks_are_recognised_and_their_labels_defused() {
    let expect: &[(&str, Recognised)] = &[
        (
            "ext4-labelled-plnode.bin",
            Some((FsKind::Ext, Some("PLNODE"))),
        ),
        (
            "fat12-labelled-plnode.bin",
            Some((FsKind::Vfat, Some("PLNODE"))),
        ),
        (
            "fat32-labelled.bin",
            Some((FsKind::Vfat, Some("PLNODECFG"))),
        ),
        (
            "iso9660-labelled-plnode.bin",
            Some((FsKind::Iso9660, Some("PLNODE"))),
        ),
        // Control characters never reach a log line or a comparison.
        (
            "ext4-label-control-characters.bin",
            Some((FsKind::Ext, Some("?[2J?PLNODE"))),
        ),
        (
            "ext4-label-unterminated.bin",
            Some((FsKind::Ext, Some("AAAAAAAAAAAAAAAA"))),
        ),
        ("fat12-no-name.bin", Some((FsKind::Vfat, None))),
        ("ext4-truncated-superblock.bin", None),
        ("iso9660-truncated-descriptor.bin", None),
        ("boot-signature-without-fat.bin", None),
        ("empty.bin", None),
    ];
    for (name, expected) in expect {
        let found = blockdev::parse_superblock(&read("superblock", name));
        let found = found.map(|f| (f.kind, f.label));
        let expected = expected.map(|(k, l)| (k, l.map(String::from)));
        assert_eq!(found, expected, "{name}");
    }
    all_listed("superblock", expect.iter().map(|(n, _)| *n));
}

#[test]
fn kernel_command_lines_never_yield_a_path() {
    let parse = |name: &str| Cmdline::parse(&text("kernel_cmdline", name));
    let c = parse("typical.txt");
    assert!(c.config.is_none() && !c.debug && c.warnings.is_empty());
    let c = parse("config-debug-fullcheck.txt");
    assert!(c.debug && c.full_check && c.warnings.is_empty());
    let config = c.config.expect("plnode.config decoded");
    assert!(config::parse_any_node_config(&config, Path::new("cmdline")).is_ok());
    let c = parse("handover-after-kexec.txt");
    assert_eq!(c.handover.as_deref(), Some("2026.1-0a1b2c3d"));
    assert_eq!(c.disk.as_deref(), Some("vda"));
    // Paths and spaces are refused, with a warning each; nothing else changes.
    for name in ["handover-path-traversal.txt", "quoted-words.txt"] {
        let c = parse(name);
        assert_eq!((c.handover, c.disk), (None, None), "{name}");
        assert_eq!(c.warnings.len(), 2, "{name}: {:?}", c.warnings);
    }
    let c = parse("config-not-base64.txt");
    assert!(c.config.is_none());
    assert!(
        c.warnings[0].contains("not valid base64"),
        "{:?}",
        c.warnings
    );
    let c = parse("unknown-options.txt");
    assert!(c.debug, "known options still count");
    assert_eq!(c.warnings.len(), 3, "{:?}", c.warnings);
    all_listed(
        "kernel_cmdline",
        [
            "typical.txt",
            "config-debug-fullcheck.txt",
            "handover-after-kexec.txt",
            "handover-path-traversal.txt",
            "quoted-words.txt",
            "config-not-base64.txt",
            "unknown-options.txt",
        ],
    );
}

#[test]
fn authorization_headers_parse_only_when_well_formed() {
    let signed = AuthHeader::parse(&text("auth_header", "signed.txt")).unwrap();
    assert_eq!((signed.node_id.0, signed.timestamp), (7, 1_700_000_000));
    let refused = [
        ("field-twice.txt", "given twice"),
        ("unknown-field.txt", "unknown field `admin`"),
        ("missing-signature.txt", "missing sig"),
        ("signature-too-short.txt", "sig must be 64 hex digits"),
        ("node-not-a-number.txt", "node must be a number"),
        ("timestamp-overflows.txt", "ts must be unix seconds"),
        ("other-scheme.txt", "expected scheme"),
    ];
    for (name, why) in refused {
        match AuthHeader::parse(&text("auth_header", name)) {
            Err(AuthError::Malformed(reason)) => assert!(reason.contains(why), "{name}: {reason}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    all_listed(
        "auth_header",
        ["signed.txt"].into_iter().chain(refused.map(|(n, _)| n)),
    );
}

#[test]
fn ranges_stay_inside_the_file() {
    let length = 1000;
    let part = |start, end| RangeRequest::Part(ByteRange { start, end });
    let expect = [
        ("first-hundred.txt", part(0, 100)),
        ("from-offset.txt", part(100, 1000)),
        ("last-five-hundred.txt", part(500, 1000)),
        // A suffix longer than the file is the whole file (RFC 9110).
        ("huge-suffix.txt", part(0, 1000)),
        ("past-the-end.txt", RangeRequest::Unsatisfiable),
        // Invalid or unsupported: the header is ignored, the file sent whole.
        ("backwards.txt", RangeRequest::Whole),
        ("several-ranges.txt", RangeRequest::Whole),
        ("double-dash.txt", RangeRequest::Whole),
        ("other-unit.txt", RangeRequest::Whole),
        ("etag-list.txt", RangeRequest::Whole),
    ];
    for (name, expected) in &expect {
        let found = input::parse_range(&text("range_header", name), length);
        assert_eq!(format!("{found:?}"), format!("{expected:?}"), "{name}");
    }
    assert!(input::etag_matches(
        &text("range_header", "etag-list.txt"),
        "\"0123abcd\""
    ));
    all_listed("range_header", expect.iter().map(|(n, _)| *n));
}

#[test]
fn node_reports_are_bounded() {
    let body = |name: &str| read("node_reports", name);
    for name in ["checkin-from-cd.json", "checkin-from-node.json"] {
        let r: CheckinRequest = serde_json::from_slice(&body(name)).unwrap();
        input::check_checkin(&r).unwrap();
    }
    let r: ProgressReport = serde_json::from_slice(&body("progress.json")).unwrap();
    input::check_progress(&r).unwrap();
    let r: FailureReport = serde_json::from_slice(&body("failure.json")).unwrap();
    input::check_failure(&r).unwrap();
    let r: config::api::InstallReport = serde_json::from_slice(&body("install.json")).unwrap();
    input::check_install(&r).unwrap();
    let r: config::api::UpdateReport =
        serde_json::from_slice(&body("update-rolled-back.json")).unwrap();
    input::check_update(&r).unwrap();
    let r: HelloRequest = serde_json::from_slice(&body("hello.json")).unwrap();
    input::check_hardware(&r.hardware).unwrap();

    // Well-formed, but past the bounds of what the server keeps.
    let r: FailureReport = serde_json::from_slice(&body("failure-log-tail-too-long.json")).unwrap();
    let e = input::check_failure(&r).unwrap_err().to_string();
    assert!(e.contains("log_tail has 2001 entries"), "{e}");
    let r: ProgressReport =
        serde_json::from_slice(&body("progress-message-too-long.json")).unwrap();
    let e = input::check_progress(&r).unwrap_err().to_string();
    assert!(e.contains("events[0].message is 5000 bytes"), "{e}");
    let r: HelloRequest = serde_json::from_slice(&body("hello-too-many-nics.json")).unwrap();
    let e = input::check_hardware(&r.hardware).unwrap_err().to_string();
    assert!(e.contains("hardware.nics has 300 entries"), "{e}");
    // Not the type at all: refused by the parser, naming what is wrong.
    let e = serde_json::from_slice::<CheckinRequest>(&body("checkin-unknown-run-level.json"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown variant `root`"), "{e}");
    let e = serde_json::from_slice::<CheckinRequest>(&body("checkin-time-not-rfc3339.json"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not an RFC 3339 time"), "{e}");
    all_listed(
        "node_reports",
        [
            "checkin-from-cd.json",
            "checkin-from-node.json",
            "progress.json",
            "failure.json",
            "install.json",
            "update-rolled-back.json",
            "hello.json",
            "failure-log-tail-too-long.json",
            "progress-message-too-long.json",
            "hello-too-many-nics.json",
            "checkin-unknown-run-level.json",
            "checkin-time-not-rfc3339.json",
        ],
    );
}
