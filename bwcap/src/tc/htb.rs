//! HTB's netlink attributes, which `netlink-packet-route` does not know:
//! `tc_htb_glob` (`TCA_HTB_INIT`), `tc_htb_opt` (`TCA_HTB_PARMS`) with its two
//! `tc_ratespec`s, and the 64-bit rates (`TCA_HTB_RATE64`/`CEIL64`), built on
//! the crate's generic attribute (`TcOption::Other`).
//!
//! The encoder writes what iproute2's `tc` writes for the same command, byte
//! for byte, except the rate tables (`TCA_HTB_RTAB`/`CTAB`): the kernel
//! ignores them when a rate spec says `TC_LINKLAYER_ETHERNET` (it computes
//! transmission times from the rate itself), so they would only cost 2 KiB
//! per message. The tests compare against `tc`'s captured messages with those
//! two attributes removed.

use netlink_packet_core::{DefaultNla, Nla, NlasIterator};
use netlink_packet_route::tc::TcOption;

/// `TCA_HTB_PARMS`: a class's `tc_htb_opt`.
pub const TCA_HTB_PARMS: u16 = 1;
/// `TCA_HTB_INIT`: the qdisc's `tc_htb_glob`.
pub const TCA_HTB_INIT: u16 = 2;
/// `TCA_HTB_CTAB`: legacy ceil rate table (not sent).
pub const TCA_HTB_CTAB: u16 = 3;
/// `TCA_HTB_RTAB`: legacy rate table (not sent).
pub const TCA_HTB_RTAB: u16 = 4;
/// `TCA_HTB_DIRECT_QLEN`: length of the direct queue.
pub const TCA_HTB_DIRECT_QLEN: u16 = 5;
/// `TCA_HTB_RATE64`: the rate when it does not fit `tc_ratespec.rate`.
pub const TCA_HTB_RATE64: u16 = 6;
/// `TCA_HTB_CEIL64`: the ceiling when it does not fit.
pub const TCA_HTB_CEIL64: u16 = 7;

/// `TC_HTB_PROTOVER`: the HTB protocol version the kernel expects.
const HTB_PROTOCOL_VERSION: u32 = 3;
/// `TC_LINKLAYER_ETHERNET`: lengths are bytes, no ATM cell padding.
const LINKLAYER_ETHERNET: u8 = 1;
/// The MTU `tc` assumes for HTB's rate tables; it decides `cell_log`.
const TC_HTB_MTU: u32 = 1600;

/// Nanoseconds per psched tick (the kernel's `PSCHED_SHIFT` is 6).
pub const NS_PER_TICK: u64 = 64;

const RATESPEC_LEN: usize = 12;
/// Size of `struct tc_htb_opt`.
pub const HTB_OPT_LEN: usize = 2 * RATESPEC_LEN + 5 * 4;
/// Size of `struct tc_htb_glob`.
pub const HTB_GLOB_LEN: usize = 5 * 4;

/// What an HTB class is told: rates in bytes per second (the kernel's unit),
/// bursts as transmission times in psched ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct HtbClassParams {
    /// Guaranteed rate, bytes/s (never 0).
    pub rate: u64,
    /// Ceiling, bytes/s (never 0).
    pub ceil: u64,
    /// Burst at `rate`, psched ticks.
    pub buffer: u32,
    /// Burst at `ceil`, psched ticks.
    pub cbuffer: u32,
    /// Bytes served per round when classes share spare capacity.
    pub quantum: u32,
    /// Priority for spare capacity (0 first).
    pub prio: u32,
    /// Minimum length a packet is charged, bytes (0: its real length).
    pub mpu: u16,
    /// Bytes added to every packet's length before charging.
    pub overhead: u16,
    /// Depth above the leaves (0: a leaf). Read from the kernel; ignored when sending.
    pub level: u32,
}

/// `tc_ratespec` as `tc` fills it for an Ethernet link: the kernel keeps
/// only `rate`, `mpu`, `overhead` and `linklayer`; `cell_log` and
/// `cell_align` describe the (unsent) rate table and are written as `tc`
/// writes them, so the messages stay byte-identical.
fn encode_ratespec(out: &mut Vec<u8>, rate: u64, mpu: u16, overhead: u16) {
    let mut cell_log = 0u8;
    while (TC_HTB_MTU >> cell_log) > 255 {
        cell_log += 1;
    }
    out.push(cell_log);
    out.push(LINKLAYER_ETHERNET);
    out.extend_from_slice(&overhead.to_ne_bytes());
    out.extend_from_slice(&(-1i16).to_ne_bytes());
    out.extend_from_slice(&mpu.to_ne_bytes());
    out.extend_from_slice(&legacy_rate(rate).to_ne_bytes());
}

/// The 32-bit rate field: saturated when the real rate needs the 64-bit attribute.
fn legacy_rate(rate: u64) -> u32 {
    u32::try_from(rate).unwrap_or(u32::MAX)
}

fn needs_rate64(rate: u64) -> bool {
    rate > u64::from(u32::MAX)
}

/// The `TCA_OPTIONS` content of an HTB class: `[RATE64] [CEIL64] PARMS`, in
/// `tc`'s order.
pub fn class_options(p: &HtbClassParams) -> Vec<TcOption> {
    let mut options = Vec::with_capacity(3);
    if needs_rate64(p.rate) {
        options.push(u64_option(TCA_HTB_RATE64, p.rate));
    }
    if needs_rate64(p.ceil) {
        options.push(u64_option(TCA_HTB_CEIL64, p.ceil));
    }
    let mut opt = Vec::with_capacity(HTB_OPT_LEN);
    encode_ratespec(&mut opt, p.rate, p.mpu, p.overhead);
    encode_ratespec(&mut opt, p.ceil, p.mpu, p.overhead);
    for field in [p.buffer, p.cbuffer, p.quantum, 0, p.prio] {
        opt.extend_from_slice(&field.to_ne_bytes());
    }
    options.push(TcOption::Other(DefaultNla::new(TCA_HTB_PARMS, opt)));
    options
}

fn u64_option(kind: u16, value: u64) -> TcOption {
    TcOption::Other(DefaultNla::new(kind, value.to_ne_bytes().to_vec()))
}

/// The `TCA_OPTIONS` content of the HTB qdisc: `tc_htb_glob` with the
/// default class's minor number and `tc`'s default `r2q` of 10 (unused: every
/// class gets an explicit quantum).
pub fn qdisc_options(default_class: u16) -> Vec<TcOption> {
    let mut glob = Vec::with_capacity(HTB_GLOB_LEN);
    for field in [HTB_PROTOCOL_VERSION, 10, u32::from(default_class), 0, 0] {
        glob.extend_from_slice(&field.to_ne_bytes());
    }
    vec![TcOption::Other(DefaultNla::new(TCA_HTB_INIT, glob))]
}

/// The burst of `bytes` at `rate` bytes/s as a transmission time in psched
/// ticks, rounded down like `tc` (at least 1 tick, at most `u32::MAX`).
pub fn burst_ticks(bytes: u64, rate: u64) -> u32 {
    let ticks =
        u128::from(bytes) * 1_000_000_000 / u128::from(NS_PER_TICK) / u128::from(rate.max(1));
    u32::try_from(ticks.max(1)).unwrap_or(u32::MAX)
}

/// The bytes a burst of `ticks` carries at `rate` bytes/s.
pub fn burst_bytes(ticks: u32, rate: u64) -> u64 {
    let bytes = u128::from(ticks) * u128::from(NS_PER_TICK) * u128::from(rate) / 1_000_000_000;
    u64::try_from(bytes).unwrap_or(u64::MAX)
}

/// A problem in HTB attributes the kernel sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HtbDecodeError {
    /// An attribute's header or length is broken.
    #[error("malformed HTB attribute: {0}")]
    Malformed(String),
    /// `TCA_HTB_PARMS` is missing.
    #[error("HTB class without TCA_HTB_PARMS")]
    MissingParms,
    /// `TCA_HTB_INIT` is missing.
    #[error("HTB qdisc without TCA_HTB_INIT")]
    MissingInit,
    /// An attribute has the wrong size.
    #[error("HTB attribute {kind} is {len} bytes, expected {expected}")]
    BadLength {
        /// The attribute type.
        kind: u16,
        /// Its length.
        len: usize,
        /// The length it must have.
        expected: usize,
    },
}

fn ne_u16(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}
fn ne_u32(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn ne_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_ne_bytes(a)
}

/// Walks nested attributes, checking every header.
fn attributes(nested: &[u8]) -> Result<Vec<(u16, &[u8])>, HtbDecodeError> {
    let mut out = Vec::new();
    for nla in NlasIterator::new(nested) {
        let nla = nla.map_err(|e| HtbDecodeError::Malformed(e.to_string()))?;
        let (kind, length) = (nla.kind(), usize::from(nla.length()));
        // The checked buffer's length is at least the header and at most what is there.
        let bytes: &[u8] = nla.into_inner();
        out.push((kind, bytes.get(4..length).unwrap_or(&[])));
    }
    Ok(out)
}

fn exact(kind: u16, value: &[u8], expected: usize) -> Result<&[u8], HtbDecodeError> {
    if value.len() < expected {
        return Err(HtbDecodeError::BadLength {
            kind,
            len: value.len(),
            expected,
        });
    }
    Ok(value)
}

/// Decodes a class's `TCA_OPTIONS` content (the nested attributes).
pub fn decode_class_options(nested: &[u8]) -> Result<HtbClassParams, HtbDecodeError> {
    let mut params = None;
    let mut rate64 = None;
    let mut ceil64 = None;
    for (kind, value) in attributes(nested)? {
        match kind {
            TCA_HTB_PARMS => {
                let v = exact(kind, value, HTB_OPT_LEN)?;
                params = Some(HtbClassParams {
                    overhead: ne_u16(v, 2),
                    mpu: ne_u16(v, 6),
                    rate: u64::from(ne_u32(v, 8)),
                    ceil: u64::from(ne_u32(v, RATESPEC_LEN + 8)),
                    buffer: ne_u32(v, 2 * RATESPEC_LEN),
                    cbuffer: ne_u32(v, 2 * RATESPEC_LEN + 4),
                    quantum: ne_u32(v, 2 * RATESPEC_LEN + 8),
                    level: ne_u32(v, 2 * RATESPEC_LEN + 12),
                    prio: ne_u32(v, 2 * RATESPEC_LEN + 16),
                });
            }
            TCA_HTB_RATE64 => rate64 = Some(ne_u64(exact(kind, value, 8)?)),
            TCA_HTB_CEIL64 => ceil64 = Some(ne_u64(exact(kind, value, 8)?)),
            _ => {}
        }
    }
    let mut params = params.ok_or(HtbDecodeError::MissingParms)?;
    if let Some(rate) = rate64 {
        params.rate = rate;
    }
    if let Some(ceil) = ceil64 {
        params.ceil = ceil;
    }
    Ok(params)
}

/// What an HTB qdisc says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HtbQdiscParams {
    /// Minor number of the class unclassified packets go to.
    pub default_class: u32,
    /// `r2q`.
    pub rate2quantum: u32,
    /// Packets sent unshaped because no class took them.
    pub direct_packets: u32,
}

/// Decodes the HTB qdisc's `TCA_OPTIONS` content.
pub fn decode_qdisc_options(nested: &[u8]) -> Result<HtbQdiscParams, HtbDecodeError> {
    for (kind, value) in attributes(nested)? {
        if kind == TCA_HTB_INIT {
            let v = exact(kind, value, HTB_GLOB_LEN)?;
            return Ok(HtbQdiscParams {
                rate2quantum: ne_u32(v, 4),
                default_class: ne_u32(v, 8),
                direct_packets: ne_u32(v, 16),
            });
        }
    }
    Err(HtbDecodeError::MissingInit)
}

/// The raw bytes of an option list, as they appear inside `TCA_OPTIONS`.
pub fn emit_options(options: &[TcOption]) -> Vec<u8> {
    use netlink_packet_core::Emitable;
    let slice: &[TcOption] = options;
    let mut out = vec![0u8; slice.buffer_len()];
    slice.emit(&mut out);
    out
}

/// The value bytes of a generic attribute.
pub fn nla_value(nla: &impl Nla) -> Vec<u8> {
    let mut out = vec![0u8; nla.value_len()];
    nla.emit_value(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_ticks_match_tc() {
        // tc: 1600 bytes at 100mbit = 128 us = 2000 ticks.
        assert_eq!(burst_ticks(1600, 12_500_000), 2000);
        assert_eq!(burst_ticks(3028, 625), 75_700_000);
        assert_eq!(burst_bytes(2000, 12_500_000), 1600);
        assert_eq!(burst_ticks(0, 1), 1);
        assert_eq!(burst_ticks(u64::MAX, 1), u32::MAX);
    }

    #[test]
    fn class_options_round_trip() {
        let p = HtbClassParams {
            rate: 5_000_000_000,
            ceil: 625,
            buffer: 7,
            cbuffer: 9,
            quantum: 1514,
            prio: 2,
            mpu: 1514,
            overhead: 4,
            level: 0,
        };
        let bytes = emit_options(&class_options(&p));
        assert_eq!(decode_class_options(&bytes).unwrap(), p);
    }

    #[test]
    fn truncated_attributes_are_errors_not_panics() {
        let p = HtbClassParams {
            rate: 1,
            ceil: 1,
            ..Default::default()
        };
        let bytes = emit_options(&class_options(&p));
        for len in 0..bytes.len() {
            let _ = decode_class_options(&bytes[..len]);
        }
        assert_eq!(decode_class_options(&[]), Err(HtbDecodeError::MissingParms));
        let short = [8u8, 0, 1, 0, 0, 0, 0, 0];
        assert!(matches!(
            decode_class_options(&short),
            Err(HtbDecodeError::BadLength { kind: 1, .. })
        ));
    }
}
