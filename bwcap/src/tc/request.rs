//! The requests bwcap sends, and their rtnetlink encoding.

use std::fmt;

use netlink_packet_core::{
    DefaultNla, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::tc::{TcAttribute, TcHeader, TcMessage, TcOption, TcQdiscFqCodelOption};
use netlink_packet_route::RouteNetlinkMessage;

use super::htb::{self, HtbClassParams};
use super::{handle, handle_text, HTB_MAJOR, TC_H_ROOT};

/// `TCA_OPTIONS`, for options that are a plain struct rather than attributes.
const TCA_OPTIONS: u16 = 2;

/// Where a class hangs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Parent {
    /// Directly under the HTB qdisc (the kernel reports such a class's
    /// parent as `root`).
    Qdisc,
    /// Under class `1:<minor>`.
    Class(u16),
}

impl Parent {
    /// The parent handle to send when creating a class.
    pub fn request_handle(self) -> u32 {
        match self {
            Parent::Qdisc => handle(HTB_MAJOR, 0),
            Parent::Class(minor) => handle(HTB_MAJOR, minor),
        }
    }

    /// The parent handle the kernel reports in a dump.
    pub fn dumped_handle(self) -> u32 {
        match self {
            Parent::Qdisc => TC_H_ROOT,
            Parent::Class(minor) => handle(HTB_MAJOR, minor),
        }
    }
}

/// The queue under a leaf class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeafQdisc {
    /// `fq_codel` with a packet limit and a number of flow queues.
    FqCodel {
        /// Packets queued at most.
        limit: u32,
        /// Flow queues (hash buckets).
        flows: u32,
    },
    /// `pfifo`: one FIFO of at most `limit` packets.
    Pfifo {
        /// Packets queued at most.
        limit: u32,
    },
}

impl LeafQdisc {
    /// The qdisc's kind name (`fq_codel`, `pfifo`).
    pub fn kind(&self) -> &'static str {
        match self {
            LeafQdisc::FqCodel { .. } => "fq_codel",
            LeafQdisc::Pfifo { .. } => "pfifo",
        }
    }

    fn attributes(&self) -> Vec<TcAttribute> {
        match *self {
            LeafQdisc::FqCodel { limit, flows } => vec![
                TcAttribute::Kind(self.kind().into()),
                TcAttribute::Options(vec![
                    TcOption::FqCodel(TcQdiscFqCodelOption::Limit(limit)),
                    TcOption::FqCodel(TcQdiscFqCodelOption::Flows(flows)),
                ]),
            ],
            LeafQdisc::Pfifo { limit } => vec![
                TcAttribute::Kind(self.kind().into()),
                // struct tc_fifo_qopt { __u32 limit; }: a struct, not attributes.
                TcAttribute::Other(DefaultNla::new(TCA_OPTIONS, limit.to_ne_bytes().to_vec())),
            ],
        }
    }
}

/// One change to the kernel's traffic control state on one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcRequest {
    /// `tc qdisc add dev IF root handle 1: htb default DEFAULT`.
    AddRootQdisc {
        /// Minor number of the class unclassified packets go to.
        default_class: u16,
    },
    /// `tc qdisc del dev IF root`.
    DeleteRootQdisc,
    /// `tc class add dev IF parent P classid 1:ID htb ...`.
    AddClass {
        /// The class's minor number.
        id: u16,
        /// Its parent.
        parent: Parent,
        /// Rates, bursts, quantum.
        params: HtbClassParams,
    },
    /// `tc class change dev IF parent P classid 1:ID htb ...`.
    ChangeClass {
        /// The class's minor number.
        id: u16,
        /// Its parent.
        parent: Parent,
        /// The new rates, bursts, quantum.
        params: HtbClassParams,
    },
    /// `tc class del dev IF classid 1:ID`.
    DeleteClass {
        /// The class's minor number.
        id: u16,
    },
    /// `tc qdisc add dev IF parent 1:CLASS handle CLASS: KIND ...`.
    AddLeaf {
        /// Minor number of the class the queue goes under (also the leaf's major).
        class: u16,
        /// The queue.
        qdisc: LeafQdisc,
    },
    /// `tc qdisc del dev IF parent PARENT handle HANDLE`.
    DeleteQdisc {
        /// The qdisc's handle.
        handle: u32,
        /// Its parent.
        parent: u32,
    },
    /// `ip link set dev IF gso_max_segs SEGS`: the interface's largest
    /// GSO/TSO burst, in segments.
    SetGsoMaxSegs {
        /// Segments.
        segs: u32,
    },
}

impl fmt::Display for TcRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TcRequest::AddRootQdisc { default_class } => {
                write!(
                    f,
                    "adding the root HTB qdisc 1: (default class 1:{default_class:x})"
                )
            }
            TcRequest::DeleteRootQdisc => f.write_str("deleting the root qdisc"),
            TcRequest::AddClass { id, .. } => write!(f, "adding class 1:{id:x}"),
            TcRequest::ChangeClass { id, .. } => write!(f, "changing class 1:{id:x}"),
            TcRequest::DeleteClass { id } => write!(f, "deleting class 1:{id:x}"),
            TcRequest::AddLeaf { class, qdisc } => {
                write!(
                    f,
                    "adding {} {class:x}: under class 1:{class:x}",
                    qdisc.kind()
                )
            }
            TcRequest::DeleteQdisc { handle, parent } => write!(
                f,
                "deleting qdisc {} (parent {})",
                handle_text(*handle),
                handle_text(*parent)
            ),
            TcRequest::SetGsoMaxSegs { segs } => {
                write!(
                    f,
                    "setting the interface's GSO bursts to at most {segs} segments"
                )
            }
        }
    }
}

impl TcRequest {
    /// The rtnetlink message, with `sequence` as its sequence number and an
    /// acknowledgement requested.
    pub fn to_message(&self, ifindex: i32, sequence: u32) -> NetlinkMessage<RouteNetlinkMessage> {
        let header = |handle: u32, parent: u32| TcHeader {
            index: ifindex,
            handle: handle.into(),
            parent: parent.into(),
            ..TcHeader::default()
        };
        let create = NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE;
        let plain = NLM_F_REQUEST | NLM_F_ACK;
        let class_attributes = |params: &HtbClassParams| {
            vec![
                TcAttribute::Kind("htb".into()),
                TcAttribute::Options(htb::class_options(params)),
            ]
        };
        let (flags, inner) = match self {
            TcRequest::AddRootQdisc { default_class } => (
                create,
                RouteNetlinkMessage::NewQueueDiscipline(TcMessage::from_parts(
                    header(handle(HTB_MAJOR, 0), TC_H_ROOT),
                    vec![
                        TcAttribute::Kind("htb".into()),
                        TcAttribute::Options(htb::qdisc_options(*default_class)),
                    ],
                )),
            ),
            TcRequest::DeleteRootQdisc => (
                plain,
                RouteNetlinkMessage::DelQueueDiscipline(TcMessage::from_parts(
                    header(0, TC_H_ROOT),
                    vec![],
                )),
            ),
            TcRequest::AddClass { id, parent, params } => (
                create,
                RouteNetlinkMessage::NewTrafficClass(TcMessage::from_parts(
                    header(handle(HTB_MAJOR, *id), parent.request_handle()),
                    class_attributes(params),
                )),
            ),
            TcRequest::ChangeClass { id, parent, params } => (
                plain,
                RouteNetlinkMessage::NewTrafficClass(TcMessage::from_parts(
                    header(handle(HTB_MAJOR, *id), parent.request_handle()),
                    class_attributes(params),
                )),
            ),
            TcRequest::DeleteClass { id } => (
                plain,
                RouteNetlinkMessage::DelTrafficClass(TcMessage::from_parts(
                    header(handle(HTB_MAJOR, *id), 0),
                    vec![],
                )),
            ),
            TcRequest::AddLeaf { class, qdisc } => (
                create,
                RouteNetlinkMessage::NewQueueDiscipline(TcMessage::from_parts(
                    header(handle(*class, 0), handle(HTB_MAJOR, *class)),
                    qdisc.attributes(),
                )),
            ),
            TcRequest::DeleteQdisc { handle, parent } => (
                plain,
                RouteNetlinkMessage::DelQueueDiscipline(TcMessage::from_parts(
                    header(*handle, *parent),
                    vec![],
                )),
            ),
            TcRequest::SetGsoMaxSegs { segs } => {
                let mut link = LinkMessage::default();
                link.header.index = ifindex as u32;
                link.attributes.push(LinkAttribute::GsoMaxSegs(*segs));
                (plain, RouteNetlinkMessage::SetLink(link))
            }
        };
        let mut nl_header = NetlinkHeader::default();
        nl_header.flags = flags;
        nl_header.sequence_number = sequence;
        let mut message = NetlinkMessage::new(nl_header, NetlinkPayload::InnerMessage(inner));
        message.finalize();
        message
    }

    /// The message's bytes (see [`TcRequest::to_message`]).
    pub fn encode(&self, ifindex: i32, sequence: u32) -> Vec<u8> {
        let message = self.to_message(ifindex, sequence);
        let mut out = vec![0u8; message.buffer_len()];
        message.serialize(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    //! The encoder against iproute2's `tc` (6.1): `tests/data/tc/*.bin` are
    //! the messages `tc` sent for the commands named in
    //! `tests/data/capture-tc.sh`, captured with strace.

    use super::*;
    use crate::tc::htb::burst_ticks;

    const IFINDEX: i32 = 2;

    /// The captured message with its sequence number zeroed and the legacy
    /// rate tables (`TCA_HTB_RTAB`/`CTAB`) cut out of `TCA_OPTIONS`.
    fn without_rate_tables(captured: &[u8]) -> Vec<u8> {
        let mut msg = captured.to_vec();
        msg[8..12].copy_from_slice(&[0; 4]);
        let tc_header_end = 16 + 20;
        let mut out = msg[..tc_header_end].to_vec();
        let mut at = tc_header_end;
        while at < msg.len() {
            let len = u16::from_ne_bytes([msg[at], msg[at + 1]]) as usize;
            let kind = u16::from_ne_bytes([msg[at + 2], msg[at + 3]]);
            let padded = (len + 3) & !3;
            if kind == TCA_OPTIONS {
                let mut nested = Vec::new();
                let mut inner = at + 4;
                while inner < at + len {
                    let ilen = u16::from_ne_bytes([msg[inner], msg[inner + 1]]) as usize;
                    let ikind = u16::from_ne_bytes([msg[inner + 2], msg[inner + 3]]);
                    if ikind != htb::TCA_HTB_RTAB && ikind != htb::TCA_HTB_CTAB {
                        nested.extend_from_slice(&msg[inner..inner + ((ilen + 3) & !3)]);
                    }
                    inner += (ilen + 3) & !3;
                }
                out.extend_from_slice(&((nested.len() + 4) as u16).to_ne_bytes());
                out.extend_from_slice(&kind.to_ne_bytes());
                out.extend_from_slice(&nested);
            } else {
                out.extend_from_slice(&msg[at..at + padded]);
            }
            at += padded;
        }
        let total = out.len() as u32;
        out[..4].copy_from_slice(&total.to_ne_bytes());
        out
    }

    /// The captured message with its sequence number zeroed.
    fn as_captured(captured: &[u8]) -> Vec<u8> {
        let mut msg = captured.to_vec();
        msg[8..12].copy_from_slice(&[0; 4]);
        msg
    }

    fn ours(request: TcRequest) -> Vec<u8> {
        request.encode(IFINDEX, 0)
    }

    fn class(rate: u64, ceil: u64, burst: u64, cburst: u64, quantum: u32) -> HtbClassParams {
        HtbClassParams {
            rate,
            ceil,
            buffer: burst_ticks(burst, rate),
            cbuffer: burst_ticks(cburst, ceil),
            quantum,
            ..HtbClassParams::default()
        }
    }

    #[test]
    fn root_qdisc_matches_tc() {
        // tc qdisc add dev v0 root handle 1: htb default 3
        let tc = include_bytes!("../../tests/data/tc/qdisc_add_htb_root.bin");
        assert_eq!(
            ours(TcRequest::AddRootQdisc { default_class: 3 }),
            without_rate_tables(tc)
        );
    }

    #[test]
    fn node_cap_class_matches_tc() {
        // ... class add ... parent 1: classid 1:1 htb rate 100mbit ceil 100mbit
        //     burst 125000 cburst 125000 quantum 15140
        let tc = include_bytes!("../../tests/data/tc/class_add_node_cap.bin");
        let request = TcRequest::AddClass {
            id: 1,
            parent: Parent::Qdisc,
            params: class(12_500_000, 12_500_000, 125_000, 125_000, 15140),
        };
        assert_eq!(ours(request), without_rate_tables(tc));
    }

    #[test]
    fn sliver_class_matches_tc() {
        // ... parent 1:1 classid 1:10 htb rate 5kbit ceil 10mbit burst 3028
        //     cburst 12500 quantum 1514
        let tc = include_bytes!("../../tests/data/tc/class_add_sliver.bin");
        let request = TcRequest::AddClass {
            id: 0x10,
            parent: Parent::Class(1),
            params: class(625, 1_250_000, 3028, 12_500, 1514),
        };
        assert_eq!(ours(request), without_rate_tables(tc));
    }

    #[test]
    fn rates_beyond_32_bits_match_tc() {
        // ... classid 1:11 htb rate 40gbit ceil 40gbit burst 50000000 cburst 50000000
        let tc = include_bytes!("../../tests/data/tc/class_add_rate64.bin");
        let request = TcRequest::AddClass {
            id: 0x11,
            parent: Parent::Class(1),
            params: class(5_000_000_000, 5_000_000_000, 50_000_000, 50_000_000, 1514),
        };
        assert_eq!(ours(request), without_rate_tables(tc));
    }

    #[test]
    fn packet_rate_class_matches_tc() {
        // ... classid 1:4 htb rate 121120bit ceil 121120bit burst 15140
        //     cburst 15140 mpu 1514 quantum 1514
        let tc = include_bytes!("../../tests/data/tc/class_add_icmp.bin");
        let mut params = class(15_140, 15_140, 15_140, 15_140, 1514);
        params.mpu = 1514;
        let request = TcRequest::AddClass {
            id: 4,
            parent: Parent::Class(1),
            params,
        };
        assert_eq!(ours(request), without_rate_tables(tc));
    }

    #[test]
    fn class_change_matches_tc() {
        // tc class change ... classid 1:10 htb rate 5kbit ceil 20mbit burst 3028 cburst 25000
        let tc = include_bytes!("../../tests/data/tc/class_change_sliver.bin");
        let request = TcRequest::ChangeClass {
            id: 0x10,
            parent: Parent::Class(1),
            params: class(625, 2_500_000, 3028, 25_000, 1514),
        };
        assert_eq!(ours(request), without_rate_tables(tc));
    }

    #[test]
    fn leaf_qdiscs_match_tc() {
        let tc = include_bytes!("../../tests/data/tc/qdisc_add_pfifo_leaf.bin");
        let request = TcRequest::AddLeaf {
            class: 0x10,
            qdisc: LeafQdisc::Pfifo { limit: 1000 },
        };
        assert_eq!(ours(request), as_captured(tc));
        let tc = include_bytes!("../../tests/data/tc/qdisc_add_fq_codel_leaf.bin");
        let request = TcRequest::AddLeaf {
            class: 0x11,
            qdisc: LeafQdisc::FqCodel {
                limit: 1000,
                flows: 64,
            },
        };
        assert_eq!(ours(request), as_captured(tc));
    }

    #[test]
    fn deletions_match_tc() {
        let tc = include_bytes!("../../tests/data/tc/class_del_sliver.bin");
        assert_eq!(ours(TcRequest::DeleteClass { id: 0x11 }), as_captured(tc));
        let tc = include_bytes!("../../tests/data/tc/qdisc_del_root.bin");
        assert_eq!(ours(TcRequest::DeleteRootQdisc), as_captured(tc));
    }
}
