//! Reading what the kernel reports: the messages of a class or qdisc dump,
//! decoded into the few facts bwcap compares and counts. Every length is
//! checked; nothing here panics on a malformed reply (see the fuzz target
//! `bwcap_inputs`).

use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, Nla, NlasIterator, NLMSG_DONE, NLMSG_ERROR,
};
use netlink_packet_route::tc::{TcAttribute, TcMessage, TcOption, TcQdiscFqCodelOption, TcStats2};
use netlink_packet_route::RouteNetlinkMessage;

use super::htb::{self, HtbClassParams, HtbDecodeError};

/// `TCA_STATS_PKT64`: the packet count when it no longer fits 32 bits.
const TCA_STATS_PKT64: u16 = 8;
/// `TCA_OPTIONS`.
const TCA_OPTIONS: u16 = 2;

/// A reply the decoder could not make sense of.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The netlink framing or a generic attribute is broken.
    #[error("malformed netlink message: {0}")]
    Netlink(#[from] netlink_packet_core::DecodeError),
    /// The HTB attributes are broken.
    #[error("class or qdisc {handle}: {source}")]
    Htb {
        /// The object, as `tc` prints it.
        handle: String,
        /// What is wrong.
        #[source]
        source: HtbDecodeError,
    },
    /// A message is shorter than its header says, or its length is absurd.
    #[error(
        "netlink message at byte {offset}: length {length} does not fit the {available} bytes left"
    )]
    Framing {
        /// Where the message starts in the received buffer.
        offset: usize,
        /// The length its header claims.
        length: usize,
        /// The bytes actually there.
        available: usize,
    },
}

/// A class as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelClass {
    /// `major:minor`.
    pub handle: u32,
    /// The parent's handle (`TC_H_ROOT` for a top-level class).
    pub parent: u32,
    /// The handle of the qdisc under a leaf class (0 for an inner class).
    pub leaf: u32,
    /// The class's qdisc kind (`htb`, or a leaf qdisc's own classes).
    pub kind: String,
    /// HTB parameters, for an HTB class.
    pub htb: Option<HtbClassParams>,
    /// Counters.
    pub stats: Stats,
}

/// A qdisc as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelQdisc {
    /// The interface.
    pub ifindex: i32,
    /// `major:0`.
    pub handle: u32,
    /// The class (or `TC_H_ROOT`) it hangs under.
    pub parent: u32,
    /// `htb`, `pfifo`, `fq_codel`, `noqueue`, ...
    pub kind: String,
    /// What its options say, where bwcap reads them.
    pub options: QdiscOptions,
    /// Counters.
    pub stats: Stats,
}

/// The options bwcap reads from a qdisc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QdiscOptions {
    /// An HTB qdisc's global settings.
    Htb(htb::HtbQdiscParams),
    /// A leaf queue's settings.
    Leaf(LeafOptions),
    /// A kind bwcap does not read.
    Other,
}

/// The settings of a leaf queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeafOptions {
    /// Packet limit.
    pub limit: Option<u32>,
    /// Flow queues (`fq_codel`).
    pub flows: Option<u32>,
}

/// Counters of a class or qdisc (`TCA_STATS2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Stats {
    /// Bytes sent (as charged: all headers of every segment).
    pub bytes: u64,
    /// Packets sent.
    pub packets: u64,
    /// Packets dropped.
    pub drops: u32,
    /// Times the class was over its limit.
    pub overlimits: u32,
    /// Bytes waiting in the queue.
    pub backlog_bytes: u32,
    /// Packets waiting in the queue.
    pub backlog_packets: u32,
    /// Requeues.
    pub requeues: u32,
}

/// One message of a dump reply (or of a batch's acknowledgements).
#[derive(Debug)]
pub enum Reply {
    /// `RTM_NEWTCLASS`.
    Class(KernelClass),
    /// `RTM_NEWQDISC`.
    Qdisc(KernelQdisc),
    /// `NLMSG_ERROR`: an acknowledgement (`errno` 0) or a refusal.
    Ack {
        /// The request's sequence number.
        sequence: u32,
        /// 0 for success, else a positive errno.
        errno: i32,
        /// The kernel's extended message (`NLMSGERR_ATTR_MSG`), if any.
        message: Option<String>,
    },
    /// `RTM_NEWLINK`: an interface.
    Link {
        /// Its index.
        index: i32,
        /// Its largest GSO burst, in segments (`IFLA_GSO_MAX_SEGS`).
        gso_max_segs: Option<u32>,
    },
    /// `NLMSG_DONE`: the end of a dump.
    Done {
        /// The dump's sequence number.
        sequence: u32,
    },
    /// Anything else (ignored).
    Other,
}

/// Splits a received buffer into netlink messages and decodes each.
pub fn decode_replies(buf: &[u8]) -> Result<Vec<Reply>, DecodeError> {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < buf.len() {
        let available = buf.len() - offset;
        if available < 16 {
            return Err(DecodeError::Framing {
                offset,
                length: 16,
                available,
            });
        }
        let length = u32::from_ne_bytes([
            buf[offset],
            buf[offset + 1],
            buf[offset + 2],
            buf[offset + 3],
        ]) as usize;
        if length < 16 || length > available {
            return Err(DecodeError::Framing {
                offset,
                length,
                available,
            });
        }
        out.push(decode_message(&buf[offset..offset + length])?);
        offset += (length + 3) & !3;
    }
    Ok(out)
}

fn decode_message(bytes: &[u8]) -> Result<Reply, DecodeError> {
    let message_type = u16::from_ne_bytes([bytes[4], bytes[5]]);
    let flags = u16::from_ne_bytes([bytes[6], bytes[7]]);
    let sequence = u32::from_ne_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if message_type == NLMSG_ERROR {
        return decode_ack(&bytes[16..], flags, sequence);
    }
    if message_type == NLMSG_DONE {
        return Ok(Reply::Done { sequence });
    }
    if message_type == RTM_NEWLINK {
        return decode_link(&bytes[16..]);
    }
    let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes)?;
    Ok(match message.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewTrafficClass(tc)) => {
            Reply::Class(decode_class(&tc)?)
        }
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewQueueDiscipline(tc)) => {
            Reply::Qdisc(decode_qdisc(&tc)?)
        }
        _ => Reply::Other,
    })
}

const RTM_NEWLINK: u16 = 16;
const IFLA_GSO_MAX_SEGS: u16 = 40;
/// `sizeof(struct ifinfomsg)`.
const IFINFOMSG_LEN: usize = 16;

/// An interface: only its index and GSO limit are read, so the rest of its
/// many attributes cannot make the reply undecodable.
fn decode_link(payload: &[u8]) -> Result<Reply, DecodeError> {
    let Some(header) = payload.get(..IFINFOMSG_LEN) else {
        return Err(DecodeError::Framing {
            offset: 16,
            length: IFINFOMSG_LEN,
            available: payload.len(),
        });
    };
    let index = i32::from_ne_bytes([header[4], header[5], header[6], header[7]]);
    let mut gso_max_segs = None;
    for nla in NlasIterator::new(&payload[IFINFOMSG_LEN..]) {
        let nla = nla?;
        if nla.kind() == IFLA_GSO_MAX_SEGS {
            gso_max_segs = <[u8; 4]>::try_from(nla.value())
                .ok()
                .map(u32::from_ne_bytes);
        }
    }
    Ok(Reply::Link {
        index,
        gso_max_segs,
    })
}

/// `NLM_F_CAPPED`: the acknowledgement echoes only the request's header.
const NLM_F_CAPPED: u16 = 0x100;
/// `NLMSGERR_ATTR_MSG`: the extended acknowledgement's text.
const NLMSGERR_ATTR_MSG: u16 = 1;

fn decode_ack(payload: &[u8], flags: u16, sequence: u32) -> Result<Reply, DecodeError> {
    let Some(code) = payload.get(..4) else {
        return Err(DecodeError::Framing {
            offset: 16,
            length: 4,
            available: payload.len(),
        });
    };
    let code = i32::from_ne_bytes([code[0], code[1], code[2], code[3]]);
    let echoed = &payload[4..];
    // The echoed request: its header only (capped), or the whole message.
    let echoed_len = if flags & NLM_F_CAPPED != 0 || echoed.len() < 4 {
        16
    } else {
        u32::from_ne_bytes([echoed[0], echoed[1], echoed[2], echoed[3]]) as usize
    };
    let mut message = None;
    if let Some(tlvs) = echoed.get(((echoed_len + 3) & !3)..) {
        for nla in NlasIterator::new(tlvs) {
            let Ok(nla) = nla else { break };
            if nla.kind() == NLMSGERR_ATTR_MSG {
                let text = nla.value();
                let text = text.split(|b| *b == 0).next().unwrap_or(&[]);
                message = Some(String::from_utf8_lossy(text).into_owned());
            }
        }
    }
    Ok(Reply::Ack {
        sequence,
        errno: code.checked_neg().unwrap_or(i32::MAX),
        message,
    })
}

fn kind_of(tc: &TcMessage) -> String {
    tc.attributes
        .iter()
        .find_map(|a| match a {
            TcAttribute::Kind(k) => Some(k.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// The raw `TCA_OPTIONS` content, whichever way the generic parser kept it.
fn raw_options(tc: &TcMessage) -> Option<Vec<u8>> {
    tc.attributes.iter().find_map(|a| match a {
        TcAttribute::Options(options) => match options.as_slice() {
            [TcOption::Other(nla)] if nla.kind() == TCA_OPTIONS => Some(htb::nla_value(nla)),
            _ => None,
        },
        TcAttribute::Other(nla) if nla.kind() == TCA_OPTIONS => Some(htb::nla_value(nla)),
        _ => None,
    })
}

fn stats_of(tc: &TcMessage) -> Stats {
    let mut stats = Stats::default();
    let mut have_stats2 = false;
    for attribute in &tc.attributes {
        match attribute {
            TcAttribute::Stats2(list) => {
                have_stats2 = true;
                for s in list {
                    match s {
                        TcStats2::Basic(b) => {
                            stats.bytes = b.bytes;
                            stats.packets = stats.packets.max(u64::from(b.packets));
                        }
                        TcStats2::Queue(q) => {
                            stats.drops = q.drops;
                            stats.overlimits = q.overlimits;
                            stats.backlog_bytes = q.backlog;
                            stats.backlog_packets = q.qlen;
                            stats.requeues = q.requeues;
                        }
                        TcStats2::Other(nla) if nla.kind() == TCA_STATS_PKT64 => {
                            let v = htb::nla_value(nla);
                            if let Ok(b) = <[u8; 8]>::try_from(v.as_slice()) {
                                stats.packets = u64::from_ne_bytes(b);
                            }
                        }
                        _ => {}
                    }
                }
            }
            TcAttribute::Stats(s) if !have_stats2 => {
                stats.bytes = s.bytes;
                stats.packets = u64::from(s.packets);
                stats.drops = s.drops;
                stats.overlimits = s.overlimits;
                stats.backlog_bytes = s.backlog;
                stats.backlog_packets = s.qlen;
            }
            _ => {}
        }
    }
    stats
}

/// Decodes an `RTM_NEWTCLASS` message.
pub fn decode_class(tc: &TcMessage) -> Result<KernelClass, DecodeError> {
    let handle: u32 = tc.header.handle.into();
    let kind = kind_of(tc);
    let htb = if kind == "htb" {
        let options = raw_options(tc).unwrap_or_default();
        Some(
            htb::decode_class_options(&options).map_err(|source| DecodeError::Htb {
                handle: super::handle_text(handle),
                source,
            })?,
        )
    } else {
        None
    };
    Ok(KernelClass {
        handle,
        parent: tc.header.parent.into(),
        leaf: tc.header.info,
        kind,
        htb,
        stats: stats_of(tc),
    })
}

/// Decodes an `RTM_NEWQDISC` message.
pub fn decode_qdisc(tc: &TcMessage) -> Result<KernelQdisc, DecodeError> {
    let handle: u32 = tc.header.handle.into();
    let kind = kind_of(tc);
    let options = match kind.as_str() {
        "htb" => {
            let raw = raw_options(tc).unwrap_or_default();
            QdiscOptions::Htb(htb::decode_qdisc_options(&raw).map_err(|source| {
                DecodeError::Htb {
                    handle: super::handle_text(handle),
                    source,
                }
            })?)
        }
        "pfifo" | "bfifo" => {
            let limit = raw_options(tc)
                .and_then(|raw| <[u8; 4]>::try_from(raw.get(..4)?).ok())
                .map(u32::from_ne_bytes);
            QdiscOptions::Leaf(LeafOptions { limit, flows: None })
        }
        "fq_codel" => {
            let mut leaf = LeafOptions::default();
            for attribute in &tc.attributes {
                if let TcAttribute::Options(options) = attribute {
                    for option in options {
                        match option {
                            TcOption::FqCodel(TcQdiscFqCodelOption::Limit(l)) => {
                                leaf.limit = Some(*l)
                            }
                            TcOption::FqCodel(TcQdiscFqCodelOption::Flows(f)) => {
                                leaf.flows = Some(*f)
                            }
                            _ => {}
                        }
                    }
                }
            }
            QdiscOptions::Leaf(leaf)
        }
        _ => QdiscOptions::Other,
    };
    Ok(KernelQdisc {
        ifindex: tc.header.index,
        handle,
        parent: tc.header.parent.into(),
        kind,
        options,
        stats: stats_of(tc),
    })
}

#[cfg(test)]
mod tests {
    //! The decoder on replies the kernel (6.18) sent to `tc -s class show`
    //! and `tc -s qdisc show` (`tests/data/capture-tc.sh`).

    use super::*;
    use crate::tc::{handle, TC_H_ROOT};

    fn classes() -> Vec<KernelClass> {
        let bytes = include_bytes!("../../tests/data/tc/class_dump.bin");
        decode_replies(bytes)
            .unwrap()
            .into_iter()
            .filter_map(|r| match r {
                Reply::Class(c) => Some(c),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn class_dump_decodes_to_what_tc_was_told() {
        let classes = classes();
        let find = |minor| {
            classes
                .iter()
                .find(|c| c.handle == handle(1, minor))
                .unwrap_or_else(|| panic!("class 1:{minor:x} in the dump"))
        };
        let cap = find(1);
        assert_eq!(cap.parent, TC_H_ROOT);
        let p = cap.htb.unwrap();
        assert_eq!((p.rate, p.ceil), (12_500_000, 12_500_000));
        assert_eq!(p.buffer, htb::burst_ticks(125_000, 12_500_000));
        assert_eq!(p.level, 7, "an inner class reports the top level");

        let sliver = find(0x10);
        assert_eq!(sliver.parent, handle(1, 1));
        assert_eq!(sliver.leaf, handle(0x10, 0));
        let p = sliver.htb.unwrap();
        assert_eq!((p.rate, p.ceil, p.quantum), (625, 2_500_000, 1514));

        let big = find(0x11);
        let p = big.htb.unwrap();
        assert_eq!((p.rate, p.ceil), (5_000_000_000, 5_000_000_000));

        let icmp = find(4);
        assert_eq!(icmp.htb.unwrap().mpu, 1514);

        let default = find(3);
        assert!(default.stats.packets > 0, "{:?}", default.stats);
        assert!(default.stats.bytes > 0);
    }

    #[test]
    fn qdisc_dump_decodes() {
        let bytes = include_bytes!("../../tests/data/tc/qdisc_dump.bin");
        let qdiscs: Vec<KernelQdisc> = decode_replies(bytes)
            .unwrap()
            .into_iter()
            .filter_map(|r| match r {
                Reply::Qdisc(q) => Some(q),
                _ => None,
            })
            .collect();
        let root = qdiscs.iter().find(|q| q.parent == TC_H_ROOT).unwrap();
        assert_eq!(root.kind, "htb");
        assert_eq!(root.handle, handle(1, 0));
        match root.options {
            QdiscOptions::Htb(h) => assert_eq!((h.default_class, h.rate2quantum), (3, 10)),
            other => panic!("{other:?}"),
        }
        let leaf = qdiscs.iter().find(|q| q.parent == handle(1, 0x10)).unwrap();
        assert_eq!(leaf.kind, "pfifo");
        assert_eq!(leaf.handle, handle(0x10, 0));
        assert_eq!(
            leaf.options,
            QdiscOptions::Leaf(LeafOptions {
                limit: Some(1000),
                flows: None
            })
        );
    }

    #[test]
    fn every_prefix_of_a_dump_is_an_error_or_decodes() {
        let bytes = include_bytes!("../../tests/data/tc/class_dump.bin");
        for len in 0..bytes.len() {
            let _ = decode_replies(&bytes[..len]);
        }
        let mut flipped = bytes.to_vec();
        for i in 0..flipped.len() {
            flipped[i] ^= 0xff;
            let _ = decode_replies(&flipped);
            flipped[i] ^= 0xff;
        }
    }

    #[test]
    fn acks_carry_the_kernels_message() {
        // NLMSG_ERROR, flags CAPPED|ACK_TLVS, seq 7: -ENOENT, the echoed
        // header, then NLMSGERR_ATTR_MSG "Class not found".
        let text = b"Class not found\0";
        let mut msg = Vec::new();
        let total = 16 + 4 + 16 + 4 + text.len();
        msg.extend_from_slice(&(total as u32).to_ne_bytes());
        msg.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        msg.extend_from_slice(&0x300u16.to_ne_bytes());
        msg.extend_from_slice(&7u32.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&(-2i32).to_ne_bytes());
        msg.extend_from_slice(&[0u8; 16]);
        msg.extend_from_slice(&((4 + text.len()) as u16).to_ne_bytes());
        msg.extend_from_slice(&1u16.to_ne_bytes());
        msg.extend_from_slice(text);
        match decode_replies(&msg).unwrap().as_slice() {
            [Reply::Ack {
                sequence: 7,
                errno: 2,
                message: Some(m),
            }] => assert_eq!(m, "Class not found"),
            other => panic!("{other:?}"),
        }
    }
}
