//! The kernel's socket table over `NETLINK_SOCK_DIAG` (what `ss` reads):
//! a dump of the IPv4 and IPv6 TCP and UDP sockets in chosen states, with
//! each socket's owner, cookie and cgroup (`INET_DIAG_CGROUP_ID`, the id of
//! the cgroup v2 group that made the socket; kernel 5.9 and later).
//!
//! Messages are built and decoded with `netlink-packet-sock-diag`; this
//! module adds the cgroup attribute (which that crate leaves generic) and
//! turns replies into [`SocketEntry`] values. [`parse_reply`] is fuzzed.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use netlink_packet_core::{
    DecodeError, NetlinkHeader, NetlinkMessage, NetlinkPayload, Nla as _, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::constants::{
    AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP, TCP_ESTABLISHED, TCP_LISTEN, TCP_SYN_SENT,
};
use netlink_packet_sock_diag::inet::{
    nlas::Nla, ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr as NetlinkAddr};

/// `INET_DIAG_CGROUP_ID` (linux/inet_diag.h): a u64, the socket's cgroup.
pub const INET_DIAG_CGROUP_ID: u16 = 21;

/// The transport protocol of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// Its name in the rows.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    fn number(self) -> u8 {
        match self {
            Protocol::Tcp => IPPROTO_TCP,
            Protocol::Udp => IPPROTO_UDP,
        }
    }
}

/// The state of a TCP socket as the kernel numbers them (a UDP socket
/// with a peer is `ESTABLISHED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketState {
    /// Connected.
    Established,
    /// Connecting (a SYN sent).
    SynSent,
    /// Listening.
    Listen,
    /// Any other state.
    Other(u8),
}

impl SocketState {
    fn from_kernel(state: u8) -> SocketState {
        match state {
            TCP_ESTABLISHED => SocketState::Established,
            TCP_SYN_SENT => SocketState::SynSent,
            TCP_LISTEN => SocketState::Listen,
            other => SocketState::Other(other),
        }
    }
}

/// One socket of a dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketEntry {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Its state.
    pub state: SocketState,
    /// Local address and port.
    pub source: SocketAddr,
    /// Remote address and port.
    pub destination: SocketAddr,
    /// Its owner (host uid).
    pub uid: u32,
    /// The kernel's unique id of the socket.
    pub cookie: u64,
    /// The cgroup v2 group that made it, when the kernel says.
    pub cgroup_id: Option<u64>,
}

/// Why a dump failed.
#[derive(Debug, thiserror::Error)]
pub enum DiagError {
    /// The netlink socket failed.
    #[error("sock_diag netlink socket: {what}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The system's reason.
        #[source]
        source: io::Error,
    },
    /// The kernel refused the request (no `inet_diag`/`tcp_diag`/`udp_diag`?).
    #[error("sock_diag: the kernel refused a {protocol} dump (are the tcp_diag and udp_diag modules loaded?)")]
    Refused {
        /// The dump.
        protocol: &'static str,
        /// Its reason.
        #[source]
        source: io::Error,
    },
    /// A reply did not decode.
    #[error("sock_diag: a reply does not decode: {0}")]
    Decode(String),
}

/// The request for a dump of one family and protocol in some states.
pub fn request(family: u8, protocol: Protocol, states: StateFlags, sequence: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = sequence;
    let socket_id = if family == AF_INET6 {
        SocketId::new_v6()
    } else {
        SocketId::new_v4()
    };
    let mut packet = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: protocol.number(),
            extensions: ExtensionFlags::empty(),
            states,
            socket_id,
        })
        .into(),
    );
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    buf
}

/// Decodes one datagram of a dump's replies into `out`; true when it ends
/// the dump. A reply that does not decode is an error (never a panic).
pub fn parse_reply(
    bytes: &[u8],
    protocol: Protocol,
    out: &mut Vec<SocketEntry>,
) -> Result<bool, DiagError> {
    let mut offset = 0;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        let message = NetlinkMessage::<SockDiagMessage>::deserialize(rest)
            .map_err(|e: DecodeError| DiagError::Decode(e.to_string()))?;
        let length = message.header.length as usize;
        if length == 0 || length > rest.len() {
            return Err(DiagError::Decode(format!(
                "a message claims {length} bytes of the {} left",
                rest.len()
            )));
        }
        match message.payload {
            NetlinkPayload::Done(_) => return Ok(true),
            NetlinkPayload::Error(e) => {
                return Err(DiagError::Refused {
                    protocol: protocol.as_str(),
                    source: e.to_io(),
                })
            }
            NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                out.push(entry(&response, protocol));
            }
            _ => {}
        }
        // Messages are aligned to 4 bytes.
        offset += (length + 3) & !3;
    }
    Ok(false)
}

fn entry(response: &InetResponse, protocol: Protocol) -> SocketEntry {
    let h = &response.header;
    let id = &h.socket_id;
    let cgroup_id = response.nlas.iter().find_map(|nla| match nla {
        Nla::Other(other) if other.kind() == INET_DIAG_CGROUP_ID && other.value_len() == 8 => {
            let mut value = [0u8; 8];
            other.emit_value(&mut value);
            Some(u64::from_ne_bytes(value))
        }
        _ => None,
    });
    SocketEntry {
        protocol,
        state: SocketState::from_kernel(h.state),
        source: SocketAddr::new(unmap(id.source_address), id.source_port),
        destination: SocketAddr::new(unmap(id.destination_address), id.destination_port),
        uid: h.uid,
        cookie: u64::from_ne_bytes(id.cookie),
        cgroup_id,
    }
}

/// IPv4 peers of IPv6 sockets are shown as IPv4.
fn unmap(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// A netlink socket for dumps.
#[derive(Debug)]
pub struct DiagSocket {
    socket: Socket,
    buffer: Vec<u8>,
    sequence: u32,
}

impl DiagSocket {
    /// Opens and binds the socket.
    pub fn open() -> Result<DiagSocket, DiagError> {
        let io = |what| move |source| DiagError::Io { what, source };
        let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(io("opening"))?;
        socket.bind_auto().map_err(io("binding"))?;
        socket
            .connect(&NetlinkAddr::new(0, 0))
            .map_err(io("connecting"))?;
        // A dump never takes long; this only stops a wedged kernel from
        // holding the thread for ever.
        let timeout = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        // SAFETY: setsockopt with a valid fd and a timeval of the right size.
        let r = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(DiagError::Io {
                what: "setting a receive timeout",
                source: io::Error::last_os_error(),
            });
        }
        Ok(DiagSocket {
            socket,
            buffer: Vec::with_capacity(64 * 1024),
            sequence: 0,
        })
    }

    /// The sockets of `protocol` over IPv4 and IPv6 in `states`.
    pub fn dump(
        &mut self,
        protocol: Protocol,
        states: StateFlags,
    ) -> Result<Vec<SocketEntry>, DiagError> {
        let mut out = Vec::new();
        for family in [AF_INET, AF_INET6] {
            self.sequence = self.sequence.wrapping_add(1);
            let request = request(family, protocol, states.clone(), self.sequence);
            self.socket
                .send(&request, 0)
                .map_err(|source| DiagError::Io {
                    what: "sending a dump request",
                    source,
                })?;
            loop {
                self.buffer.clear();
                self.socket
                    .recv(&mut self.buffer, 0)
                    .map_err(|source| DiagError::Io {
                        what: "receiving a dump",
                        source,
                    })?;
                if parse_reply(&self.buffer, protocol, &mut out)? {
                    break;
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        for bad in [
            &[][..],
            &[1, 2, 3][..],
            &[16, 0, 0, 0, 20, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0][..],
            &[255; 40][..],
        ] {
            let _ = parse_reply(bad, Protocol::Tcp, &mut out);
        }
        assert!(parse_reply(&[0; 16], Protocol::Tcp, &mut out).is_err());
    }

    #[test]
    fn requests_are_laid_out_as_the_kernel_reads_them() {
        // struct nlmsghdr, then struct inet_diag_req_v2 (linux/inet_diag.h).
        let bytes = request(AF_INET6, Protocol::Udp, StateFlags::ESTABLISHED, 7);
        assert_eq!(bytes.len(), 16 + 8 + 48);
        let u16_at = |i: usize| u16::from_ne_bytes([bytes[i], bytes[i + 1]]);
        let u32_at = |i: usize| u32::from_ne_bytes(bytes[i..i + 4].try_into().unwrap());
        assert_eq!(u32_at(0) as usize, bytes.len());
        assert_eq!(
            u16_at(4),
            netlink_packet_sock_diag::constants::SOCK_DIAG_BY_FAMILY
        );
        assert_eq!(u16_at(6), NLM_F_REQUEST | NLM_F_DUMP);
        assert_eq!(u32_at(8), 7);
        assert_eq!(
            (bytes[16], bytes[17], bytes[18]),
            (AF_INET6, IPPROTO_UDP, 0)
        );
        assert_eq!(u32_at(20), 1 << TCP_ESTABLISHED);
    }
}
