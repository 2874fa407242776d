//! A DHCPv4 client (RFC 2131): discover, offer, request, acknowledge, and
//! renewal for the installed node. Packets are built and parsed with
//! `dhcproto`; the socket is a UDP socket bound to port 68 on one interface,
//! asking servers to broadcast their replies (the interface has no address
//! yet, so a unicast reply could not be received).

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};

use config::node::MacAddr;

/// An address lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub server: Ipv4Addr,
    pub lease_secs: u32,
    /// When the lease was acknowledged (for renewal at half its time).
    pub acquired: Instant,
}

impl Lease {
    /// When to renew (T1: half the lease time, RFC 2131 §4.4.5).
    pub fn renew_at(&self) -> Instant {
        self.acquired + Duration::from_secs(u64::from(self.lease_secs / 2))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("socket on {iface}: {source}")]
    Socket {
        iface: String,
        source: std::io::Error,
    },
    #[error("no DHCP offer on {iface} after {secs} s")]
    NoOffer { iface: String, secs: u64 },
    #[error("no DHCP acknowledgement on {iface} after {secs} s")]
    NoAck { iface: String, secs: u64 },
    #[error("the DHCP server {server} refused the address {address} (NAK)")]
    Nak { server: Ipv4Addr, address: Ipv4Addr },
    #[error("encoding a DHCP packet: {0}")]
    Encode(String),
}

/// A reply that is for us: right transaction, our hardware address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub kind: MessageType,
    pub your_address: Ipv4Addr,
    pub server: Option<Ipv4Addr>,
    pub mask: Option<Ipv4Addr>,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub lease_secs: Option<u32>,
}

/// Parses a datagram; `None` for anything that is not a reply to `xid`
/// from a server to `mac` (other clients' traffic, garbage).
pub fn parse_reply(bytes: &[u8], xid: u32, mac: MacAddr) -> Option<Reply> {
    let msg = Message::from_bytes(bytes).ok()?;
    if msg.opcode() != Opcode::BootReply || msg.xid() != xid || msg.chaddr().get(..6)? != mac.0 {
        return None;
    }
    let opts = msg.opts();
    let kind = opts.msg_type()?;
    let mut reply = Reply {
        kind,
        your_address: msg.yiaddr(),
        server: None,
        mask: None,
        router: None,
        dns: Vec::new(),
        domain: None,
        lease_secs: None,
    };
    for (_, opt) in opts.iter() {
        match opt {
            DhcpOption::ServerIdentifier(ip) => reply.server = Some(*ip),
            DhcpOption::SubnetMask(m) => reply.mask = Some(*m),
            DhcpOption::Router(r) => reply.router = r.first().copied(),
            DhcpOption::DomainNameServer(d) => reply.dns = d.clone(),
            DhcpOption::DomainName(d) => reply.domain = Some(d.clone()),
            DhcpOption::AddressLeaseTime(t) => reply.lease_secs = Some(*t),
            _ => {}
        }
    }
    Some(reply)
}

fn request_message(xid: u32, mac: MacAddr, kind: MessageType, hostname: Option<&str>) -> Message {
    let z = Ipv4Addr::UNSPECIFIED;
    let mut msg = Message::new_with_id(xid, z, z, z, z, &mac.0);
    msg.set_flags(Flags::default().set_broadcast());
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    let mut client_id = vec![1u8];
    client_id.extend_from_slice(&mac.0);
    opts.insert(DhcpOption::ClientIdentifier(client_id));
    opts.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::DomainName,
        OptionCode::AddressLeaseTime,
    ]));
    if let Some(h) = hostname {
        opts.insert(DhcpOption::Hostname(h.to_string()));
    }
    msg
}

/// The DISCOVER for transaction `xid`.
pub fn discover_message(xid: u32, mac: MacAddr, hostname: Option<&str>) -> Message {
    request_message(xid, mac, MessageType::Discover, hostname)
}

/// The REQUEST for an offered address (or a renewal when `ciaddr` is set).
pub fn request_for(
    xid: u32,
    mac: MacAddr,
    offer: &Reply,
    hostname: Option<&str>,
    renewing: bool,
) -> Message {
    let mut msg = request_message(xid, mac, MessageType::Request, hostname);
    if renewing {
        // RFC 2131 §4.3.2: a renewing client fills ciaddr and sends neither
        // the server id nor the requested address.
        msg.set_ciaddr(offer.your_address);
    } else {
        msg.opts_mut()
            .insert(DhcpOption::RequestedIpAddress(offer.your_address));
        if let Some(server) = offer.server {
            msg.opts_mut().insert(DhcpOption::ServerIdentifier(server));
        }
    }
    msg
}

fn lease_from(reply: &Reply) -> Lease {
    let prefix = reply
        .mask
        .and_then(|m| config::node::Prefix::from_netmask(m).ok())
        .map(|p| p.bits())
        .unwrap_or(24);
    Lease {
        address: reply.your_address,
        prefix,
        router: reply.router,
        dns: reply.dns.clone(),
        domain: reply.domain.clone(),
        server: reply.server.unwrap_or(Ipv4Addr::UNSPECIFIED),
        lease_secs: reply.lease_secs.unwrap_or(3600),
        acquired: Instant::now(),
    }
}

fn random_xid() -> u32 {
    let mut b = [0u8; 4];
    // The xid only has to differ from other clients'; a clock fallback will do.
    if getrandom::fill(&mut b).is_err() {
        return Instant::now().elapsed().subsec_nanos() ^ std::process::id();
    }
    u32::from_ne_bytes(b)
}

fn open_socket(iface: &str) -> Result<UdpSocket, DhcpError> {
    let err = |source| DhcpError::Socket {
        iface: iface.to_string(),
        source,
    };
    use nix::sys::socket::{setsockopt, sockopt};
    let sock = socket_bound_to_68().map_err(err)?;
    setsockopt(&sock.as_fd(), sockopt::Broadcast, &true).map_err(|e| err(e.into()))?;
    setsockopt(
        &sock.as_fd(),
        sockopt::BindToDevice,
        &std::ffi::OsString::from(iface),
    )
    .map_err(|e| err(e.into()))?;
    Ok(sock)
}

fn socket_bound_to_68() -> std::io::Result<UdpSocket> {
    use nix::sys::socket::{
        bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::new(0, 0, 0, 0, 68),
    )?;
    Ok(UdpSocket::from(fd))
}

/// Sends `msg` and waits for a matching reply of one of `kinds`,
/// retransmitting with exponential backoff (4, 8, 16 s…) until `deadline`.
fn exchange(
    sock: &UdpSocket,
    msg: &Message,
    mac: MacAddr,
    kinds: &[MessageType],
    deadline: Instant,
    to: Ipv4Addr,
) -> Result<Option<Reply>, DhcpError> {
    let bytes = msg.to_vec().map_err(|e| DhcpError::Encode(e.to_string()))?;
    let dest = SocketAddrV4::new(to, 67);
    let mut wait = Duration::from_secs(2);
    let mut buf = [0u8; 1500];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        // A send can fail transiently while the link settles; try again later.
        if let Err(e) = sock.send_to(&bytes, dest) {
            tracing::warn!("sending DHCP {:?}: {e}", msg.opts().msg_type());
        }
        let round_end = (now + wait).min(deadline);
        while let Some(left) = round_end
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        {
            let _ = sock.set_read_timeout(Some(left));
            match sock.recv_from(&mut buf) {
                Ok((n, _)) => {
                    if let Some(reply) = parse_reply(&buf[..n], msg.xid(), mac) {
                        if kinds.contains(&reply.kind) {
                            return Ok(Some(reply));
                        }
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("receiving DHCP reply: {e}");
                    break;
                }
            }
        }
        wait = (wait * 2).min(Duration::from_secs(16));
    }
}

/// Gets a lease on `iface` (which must be up), within `limit`.
pub fn acquire(
    iface: &str,
    mac: MacAddr,
    hostname: Option<&str>,
    limit: Duration,
) -> Result<Lease, DhcpError> {
    let sock = open_socket(iface)?;
    let start = Instant::now();
    let deadline = start + limit;
    loop {
        let xid = random_xid();
        let offer = exchange(
            &sock,
            &discover_message(xid, mac, hostname),
            mac,
            &[MessageType::Offer],
            deadline,
            Ipv4Addr::BROADCAST,
        )?
        .ok_or_else(|| DhcpError::NoOffer {
            iface: iface.into(),
            secs: limit.as_secs(),
        })?;
        tracing::info!(
            "offer of {} from {}",
            offer.your_address,
            offer.server.unwrap_or(Ipv4Addr::UNSPECIFIED)
        );
        let request = request_for(xid, mac, &offer, hostname, false);
        let answer = exchange(
            &sock,
            &request,
            mac,
            &[MessageType::Ack, MessageType::Nak],
            deadline,
            Ipv4Addr::BROADCAST,
        )?
        .ok_or_else(|| DhcpError::NoAck {
            iface: iface.into(),
            secs: limit.as_secs(),
        })?;
        if answer.kind == MessageType::Ack {
            return Ok(lease_from(&answer));
        }
        tracing::warn!(
            "{}",
            DhcpError::Nak {
                server: offer.server.unwrap_or(Ipv4Addr::UNSPECIFIED),
                address: offer.your_address
            }
        );
        if Instant::now() >= deadline {
            return Err(DhcpError::Nak {
                server: offer.server.unwrap_or(Ipv4Addr::UNSPECIFIED),
                address: offer.your_address,
            });
        }
    }
}

/// Renews `lease` with its server; a new lease on success.
pub fn renew(
    iface: &str,
    mac: MacAddr,
    lease: &Lease,
    hostname: Option<&str>,
    limit: Duration,
) -> Result<Lease, DhcpError> {
    let sock = open_socket(iface)?;
    let current = Reply {
        kind: MessageType::Ack,
        your_address: lease.address,
        server: Some(lease.server),
        mask: None,
        router: lease.router,
        dns: lease.dns.clone(),
        domain: lease.domain.clone(),
        lease_secs: Some(lease.lease_secs),
    };
    let xid = random_xid();
    let msg = request_for(xid, mac, &current, hostname, true);
    let to = if lease.server.is_unspecified() {
        Ipv4Addr::BROADCAST
    } else {
        lease.server
    };
    match exchange(
        &sock,
        &msg,
        mac,
        &[MessageType::Ack, MessageType::Nak],
        Instant::now() + limit,
        to,
    )? {
        Some(r) if r.kind == MessageType::Ack => Ok(lease_from(&r)),
        Some(_) => Err(DhcpError::Nak {
            server: lease.server,
            address: lease.address,
        }),
        None => Err(DhcpError::NoAck {
            iface: iface.into(),
            secs: limit.as_secs(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]);

    fn server_reply(xid: u32, mac: MacAddr, kind: MessageType) -> Vec<u8> {
        let mut msg = Message::new_with_id(
            xid,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::new(10, 0, 2, 15),
            Ipv4Addr::new(10, 0, 2, 2),
            Ipv4Addr::UNSPECIFIED,
            &mac.0,
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
        o.insert(DhcpOption::AddressLeaseTime(86400));
        msg.to_vec().unwrap()
    }

    #[test]
    fn an_offer_for_us_is_understood() {
        let r = parse_reply(&server_reply(42, MAC, MessageType::Offer), 42, MAC).unwrap();
        assert_eq!(r.kind, MessageType::Offer);
        assert_eq!(r.your_address, Ipv4Addr::new(10, 0, 2, 15));
        let lease = lease_from(&r);
        assert_eq!(
            (lease.prefix, lease.router, lease.lease_secs),
            (24, Some(Ipv4Addr::new(10, 0, 2, 2)), 86400)
        );
        assert_eq!(lease.dns, vec![Ipv4Addr::new(10, 0, 2, 3)]);
    }

    #[test]
    fn replies_for_others_and_garbage_are_ignored() {
        assert!(parse_reply(&server_reply(42, MAC, MessageType::Offer), 43, MAC).is_none());
        let other = MacAddr([2, 0, 0, 0, 0, 1]);
        assert!(parse_reply(&server_reply(42, other, MessageType::Offer), 42, MAC).is_none());
        assert!(parse_reply(b"\x02\x01garbage", 42, MAC).is_none());
        assert!(parse_reply(&[], 42, MAC).is_none());
        // Our own request echoed back is not a reply.
        let ours = discover_message(42, MAC, None).to_vec().unwrap();
        assert!(parse_reply(&ours, 42, MAC).is_none());
    }

    #[test]
    fn requests_carry_what_servers_need() {
        let offer = parse_reply(&server_reply(7, MAC, MessageType::Offer), 7, MAC).unwrap();
        let req = request_for(7, MAC, &offer, Some("node1"), false);
        assert!(req.flags().broadcast());
        assert_eq!(
            req.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 2, 15)))
        );
        assert_eq!(
            req.opts().get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 2, 2)))
        );
        let renew = request_for(8, MAC, &offer, None, true);
        assert_eq!(renew.ciaddr(), Ipv4Addr::new(10, 0, 2, 15));
        assert!(renew.opts().get(OptionCode::ServerIdentifier).is_none());
    }
}
