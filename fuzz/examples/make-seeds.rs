//! Regenerates the seeds under `fuzz/seeds/` that are made in code: DHCP
//! replies, kernel command lines, `Authorization` and `Range` headers and
//! node report bodies, each good or hostile and named for what it is.
//! (`fuzz/seeds/superblock/` holds heads of real file systems made by
//! mkfs; see `fuzz/seeds/README.md`.)
//!
//! ```text
//! cargo run -p plnode-fuzz --example make-seeds [SEEDS_DIR]
//! ```
//!
//! `fuzz/tests/seeds.rs` says what each seed must do.

use std::error::Error;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use config::api::auth::{sign_request, Nonce};
use config::node::{NodeId, NodeKey};
use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode};
use dhcproto::Encodable;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// The client the `dhcp_reply` target and the seed test listen as.
const XID: u32 = 0x1234_5678;
const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

/// A reply as QEMU's user-mode network (slirp) sends one.
fn reply(xid: u32, mac: &[u8], kind: MessageType) -> Message {
    let mut msg = Message::new_with_id(
        xid,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::new(10, 0, 2, 15),
        Ipv4Addr::new(10, 0, 2, 2),
        Ipv4Addr::UNSPECIFIED,
        mac,
    );
    msg.set_opcode(Opcode::BootReply);
    let o = msg.opts_mut();
    o.insert(DhcpOption::MessageType(kind));
    o.insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 2, 2)));
    o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
    o.insert(DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 2, 2)]));
    o.insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::new(
        10, 0, 2, 3,
    )]));
    o.insert(DhcpOption::DomainName("example.org".into()));
    o.insert(DhcpOption::AddressLeaseTime(86_400));
    msg
}

fn dhcp_seeds(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir)?;
    let write = |name: &str, bytes: &[u8]| fs::write(dir.join(name), bytes);
    write("offer.bin", &reply(XID, &MAC, MessageType::Offer).to_vec()?)?;
    write("ack.bin", &reply(XID, &MAC, MessageType::Ack).to_vec()?)?;
    write("nak.bin", &reply(XID, &MAC, MessageType::Nak).to_vec()?)?;
    // Replies meant for someone else: another transaction, another client.
    write(
        "offer-other-transaction.bin",
        &reply(XID + 1, &MAC, MessageType::Offer).to_vec()?,
    )?;
    write(
        "offer-other-client.bin",
        &reply(XID, &[0x52, 0x54, 0, 0, 0, 1], MessageType::Offer).to_vec()?,
    )?;
    // Another client's request seen on the wire, not a reply.
    let mut request = reply(XID, &MAC, MessageType::Request);
    request.set_opcode(Opcode::BootRequest);
    write("request-not-a-reply.bin", &request.to_vec()?)?;
    // A reply without a message type: nothing to act on.
    let mut untyped = reply(XID, &MAC, MessageType::Offer);
    untyped
        .opts_mut()
        .remove(dhcproto::v4::OptionCode::MessageType);
    write("reply-without-message-type.bin", &untyped.to_vec()?)?;
    let offer = reply(XID, &MAC, MessageType::Offer).to_vec()?;
    // Cut inside the options.
    write("offer-truncated.bin", &offer[..offer.len() - 12])?;
    // Cut inside the fixed header.
    write("offer-truncated-header.bin", &offer[..100])?;
    // The DNS option claims 200 bytes; the datagram ends long before.
    let options = 240;
    let mut overrun = offer[..options].to_vec();
    overrun.extend_from_slice(&[53, 1, 2, 6, 200, 10, 0, 2, 3]);
    write("option-length-overruns-datagram.bin", &overrun)?;
    // A wrong magic cookie: not DHCP at all.
    let mut cookie = offer.clone();
    cookie[236..240].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    write("bad-magic-cookie.bin", &cookie)?;
    // A domain name that is not text, and a lease of 0 seconds.
    let mut odd = reply(XID, &MAC, MessageType::Offer);
    odd.opts_mut().insert(DhcpOption::AddressLeaseTime(0));
    let mut bytes = odd.to_vec()?;
    if let Some(at) = bytes.windows(11).position(|w| w == b"example.org") {
        bytes[at..at + 3].copy_from_slice(&[0xff, 0xfe, 0x00]);
    }
    write("offer-domain-not-text-lease-zero.bin", &bytes)?;
    write("empty.bin", b"")?;
    Ok(())
}

fn cmdline_seeds(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir)?;
    let write = |name: &str, text: &str| fs::write(dir.join(name), text);
    let base = "BOOT_IMAGE=/boot/vmlinuz console=tty0 console=ttyS0,115200n8 panic=-1";
    write("typical.txt", &format!("{base}\n"))?;
    let node =
        fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples/node-dhcp.toml"))?;
    let config = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(node);
    write(
        "config-debug-fullcheck.txt",
        &format!("{base} plnode.config={config} plnode.debug plnode.fullcheck\n"),
    )?;
    write(
        "handover-after-kexec.txt",
        &format!("{base} plnode.handover=2026.1-0a1b2c3d plnode.disk=vda\n"),
    )?;
    write(
        "handover-path-traversal.txt",
        &format!("{base} plnode.handover=../../../../etc plnode.disk=/dev/sda\n"),
    )?;
    write(
        "config-not-base64.txt",
        &format!("{base} plnode.config=not*base64!\n"),
    )?;
    write(
        "quoted-words.txt",
        &format!("{base} \"plnode.handover=a b\" plnode.debug=\"yes\" \"unterminated\n"),
    )?;
    write(
        "unknown-options.txt",
        &format!("{base} plnode.rootshell=1 plnode. plnode.=x plnode.debug\n"),
    )?;
    Ok(())
}

fn auth_seeds(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir)?;
    let write = |name: &str, text: &str| fs::write(dir.join(name), text);
    let key = NodeKey::new("3f6c1a9e0b7d42e5a8c4f1e2d3b4a5968778695a4b3c2d1e0f1a2b3c4d5e6f70")
        .map_err(|e| e.to_string())?;
    let header = sign_request(
        &key,
        NodeId(7),
        "POST",
        "/api/v1/node/checkin",
        b"{}",
        1_700_000_000,
        Nonce::from_random_bytes(*b"0123456789abcdef"),
    )
    .to_header_value();
    write("signed.txt", &header)?;
    let (scheme, fields) = header.split_once(' ').ok_or("scheme and fields")?;
    write("field-twice.txt", &format!("{header},node=8"))?;
    write("unknown-field.txt", &format!("{header},admin=1"))?;
    write(
        "missing-signature.txt",
        &format!(
            "{scheme} {}",
            fields.split(",sig=").next().unwrap_or(fields)
        ),
    )?;
    write("signature-too-short.txt", &header[..header.len() - 2])?;
    write(
        "node-not-a-number.txt",
        &header.replacen("node=7", "node=-7", 1),
    )?;
    write(
        "timestamp-overflows.txt",
        &header.replacen("ts=1700000000", "ts=99999999999999999999", 1),
    )?;
    write("other-scheme.txt", "Basic YWRtaW46YWRtaW4=")?;
    Ok(())
}

fn range_seeds(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir)?;
    for (name, text) in [
        ("first-hundred.txt", "bytes=0-99"),
        ("last-five-hundred.txt", "bytes=-500"),
        ("from-offset.txt", "bytes=100-"),
        ("backwards.txt", "bytes=5-1"),
        ("several-ranges.txt", "bytes=0-99,200-299"),
        ("past-the-end.txt", "bytes=18446744073709551615-"),
        ("huge-suffix.txt", "bytes=-18446744073709551615"),
        ("double-dash.txt", "bytes=--1"),
        ("other-unit.txt", "items=0-1"),
        ("etag-list.txt", "W/\"0123abcd\", \"other\""),
    ] {
        fs::write(dir.join(name), text)?;
    }
    Ok(())
}

fn report_seeds(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir)?;
    let write = |name: &str, value: serde_json::Value| -> Result<()> {
        Ok(fs::write(
            dir.join(name),
            serde_json::to_vec_pretty(&value)?,
        )?)
    };
    let hardware = serde_json::json!({
        "cpu_model": "QEMU Virtual CPU version 2.5+", "cpus": 2, "ram_bytes": 2147483648u64,
        "disks": [{"name": "vda", "size_bytes": 8589934592u64, "removable": false}],
        "nics": [{"name": "eth0", "mac": "52:54:00:12:34:56", "link": true, "driver": "virtio_net"}]
    });
    write(
        "checkin-from-cd.json",
        serde_json::json!({
            "node_id": 7, "run_level": "bootcd", "bootcd_version": "2026.11.1",
            "hardware": hardware, "uptime_secs": 12, "node_time": "2026-11-27T12:00:00Z"
        }),
    )?;
    write(
        "checkin-from-node.json",
        serde_json::json!({
            "node_id": 7, "run_level": "boot", "os_version": "2026.11.1",
            "deployment": "2026.11.1-0a1b2c3d",
            "health": {"services_up": 3, "services_total": 3, "disk_free_bytes": 1000000u64,
                       "disk_total_bytes": 8000000u64, "load1": 0.25},
            "uptime_secs": 86400, "node_time": "2026-11-27T12:00:00Z"
        }),
    )?;
    write(
        "progress.json",
        serde_json::json!({"events": [
            {"step": "reinstall/install", "percent": 40, "message": "kernel", "at": "2026-11-27T12:00:00Z"}
        ]}),
    )?;
    write(
        "failure.json",
        serde_json::json!({
            "step": "reinstall/metadata", "error": "metadata/timestamp.json: rollback",
            "log_tail": ["@step reinstall/metadata start@"], "now_in": "debug",
            "at": "2026-11-27T12:00:00Z"
        }),
    )?;
    write(
        "install.json",
        serde_json::json!({
            "os_version": "2026.11.1", "deployment": "2026.11.1-0a1b2c3d",
            "packages": [{"name": "base", "version": "1", "sha256": "00".repeat(32)}],
            "install_secs": 95
        }),
    )?;
    write(
        "update-rolled-back.json",
        serde_json::json!({
            "event": "rolled_back", "os_version": "2026.11.2", "deployment": "2026.11.2-1a2b3c4d",
            "reason": "service sshd failed", "at": "2026-11-27T12:00:00Z"
        }),
    )?;
    write(
        "hello.json",
        serde_json::json!({"bootcd_version": "2026.11.1", "hardware": hardware}),
    )?;
    // Past the server's bounds: the status page and tables would carry them.
    write(
        "failure-log-tail-too-long.json",
        serde_json::json!({
            "step": "boot/verify", "error": "x",
            "log_tail": vec!["line"; 2001], "now_in": "debug", "at": "2026-11-27T12:00:00Z"
        }),
    )?;
    write(
        "progress-message-too-long.json",
        serde_json::json!({"events": [
            {"step": "boot/verify", "message": "m".repeat(5000), "at": "2026-11-27T12:00:00Z"}
        ]}),
    )?;
    write(
        "hello-too-many-nics.json",
        serde_json::json!({"hardware": {
            "cpu_model": "x", "cpus": 1, "ram_bytes": 1, "disks": [],
            "nics": vec![serde_json::json!({"name": "eth0", "mac": "52:54:00:12:34:56", "link": true}); 300]
        }}),
    )?;
    write(
        "checkin-unknown-run-level.json",
        serde_json::json!({
            "node_id": 7, "run_level": "root", "uptime_secs": 1, "node_time": "2026-11-27T12:00:00Z"
        }),
    )?;
    write(
        "checkin-time-not-rfc3339.json",
        serde_json::json!({
            "node_id": 7, "run_level": "boot", "uptime_secs": 1, "node_time": "yesterday"
        }),
    )?;
    Ok(())
}

fn main() -> Result<()> {
    let seeds = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds"));
    dhcp_seeds(&seeds.join("dhcp_reply"))?;
    cmdline_seeds(&seeds.join("kernel_cmdline"))?;
    auth_seeds(&seeds.join("auth_header"))?;
    range_seeds(&seeds.join("range_header"))?;
    report_seeds(&seeds.join("node_reports"))?;
    println!("seeds written to {}", seeds.display());
    Ok(())
}
