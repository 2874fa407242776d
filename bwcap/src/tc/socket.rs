//! One rtnetlink socket: dumps, and batches of requests sent many to a
//! `sendmsg` with every acknowledgement checked.
//!
//! The kernel handles all messages of one `sendmsg` in the sending thread
//! and queues one acknowledgement per message before the call returns, so a
//! chunk is bounded by what the receive buffer holds (each acknowledgement
//! costs a socket buffer); bwcap sends at most [`CHUNK_MESSAGES`] messages
//! (and [`CHUNK_BYTES`] bytes) at a time, then reads their acknowledgements.

use std::io;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::tc::{TcHeader, TcMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::decode::{self, DecodeError, KernelClass, KernelQdisc, Reply};
use super::request::TcRequest;

/// Messages sent in one `sendmsg` at most.
pub const CHUNK_MESSAGES: usize = 128;
/// Bytes sent in one `sendmsg` at most.
pub const CHUNK_BYTES: usize = 48 * 1024;

/// A failure talking to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The socket could not be opened, or a send or receive failed.
    #[error("netlink socket: {what}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The system's reason.
        #[source]
        source: io::Error,
    },
    /// The kernel's reply did not decode.
    #[error("decoding the kernel's reply")]
    Decode(#[from] DecodeError),
    /// The kernel refused a dump.
    #[error("{what}: {}", refusal(*errno, message.as_deref()))]
    DumpRefused {
        /// Which dump.
        what: &'static str,
        /// The errno.
        errno: i32,
        /// The kernel's extended message.
        message: Option<String>,
    },
    /// The kernel refused a request of a batch.
    #[error("{request}: {}", refusal(*errno, message.as_deref()))]
    Refused {
        /// The request, in words.
        request: String,
        /// The errno.
        errno: i32,
        /// The kernel's extended message.
        message: Option<String>,
    },
    /// An acknowledgement never came.
    #[error("the kernel did not acknowledge {request}")]
    Unacknowledged {
        /// The request, in words.
        request: String,
    },
}

fn refusal(errno: i32, message: Option<&str>) -> String {
    let os = io::Error::from_raw_os_error(errno);
    match message {
        Some(m) if !m.is_empty() => format!("{m} ({os})"),
        _ => os.to_string(),
    }
}

impl NetlinkError {
    /// The errno of a kernel refusal.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Refused { errno, .. } | NetlinkError::DumpRefused { errno, .. } => {
                Some(*errno)
            }
            NetlinkError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// What happened to each request of a batch, in order.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// `None` for success, else the kernel's refusal.
    pub results: Vec<Option<NetlinkError>>,
    /// `sendmsg` calls made.
    pub sends: usize,
}

impl BatchOutcome {
    /// The first refusal, if any.
    pub fn first_error(self) -> Result<(), NetlinkError> {
        match self.results.into_iter().flatten().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// An rtnetlink socket in the calling thread's network namespace.
#[derive(Debug)]
pub struct RouteSocket {
    socket: Socket,
    sequence: u32,
    buffer: Vec<u8>,
}

impl RouteSocket {
    /// Opens and binds a socket; asks for the kernel's error messages and
    /// short acknowledgements.
    pub fn open() -> Result<RouteSocket, NetlinkError> {
        let io = |what| move |source| NetlinkError::Io { what, source };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(io("opening"))?;
        socket.bind_auto().map_err(io("binding"))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(io("connecting"))?;
        // Both are best effort: without them errors are plain errnos and
        // acknowledgements echo whole requests.
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        Ok(RouteSocket {
            socket,
            sequence: 1,
            buffer: vec![0u8; 256 * 1024],
        })
    }

    fn next_sequence(&mut self) -> u32 {
        self.sequence = self.sequence.wrapping_add(1).max(1);
        self.sequence
    }

    fn receive(&mut self) -> Result<Vec<Reply>, NetlinkError> {
        self.buffer.clear();
        let n = loop {
            match self.socket.recv(&mut self.buffer, 0) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(NetlinkError::Io {
                        what: "receiving",
                        source,
                    })
                }
            }
        };
        let replies = decode::decode_replies(&self.buffer[..n.min(self.buffer.len())])?;
        Ok(replies)
    }

    fn send_all(&self, bytes: &[u8]) -> Result<(), NetlinkError> {
        loop {
            match self.socket.send(bytes, 0) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(NetlinkError::Io {
                        what: "sending",
                        source,
                    })
                }
            }
        }
    }

    fn dump(&mut self, ifindex: i32, class: bool) -> Result<Vec<Reply>, NetlinkError> {
        let what = if class {
            "dumping classes"
        } else {
            "dumping qdiscs"
        };
        let sequence = self.next_sequence();
        let tc = TcMessage::from_parts(
            TcHeader {
                index: ifindex,
                ..TcHeader::default()
            },
            vec![],
        );
        let inner = if class {
            RouteNetlinkMessage::GetTrafficClass(tc)
        } else {
            RouteNetlinkMessage::GetQueueDiscipline(tc)
        };
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = sequence;
        let mut message = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(inner));
        message.finalize();
        let mut bytes = vec![0u8; message.buffer_len()];
        message.serialize(&mut bytes);
        self.send_all(&bytes)?;
        let mut out = Vec::new();
        loop {
            for reply in self.receive()? {
                match reply {
                    Reply::Done { sequence: s } if s == sequence => return Ok(out),
                    Reply::Ack {
                        sequence: s,
                        errno,
                        message,
                    } if s == sequence && errno != 0 => {
                        return Err(NetlinkError::DumpRefused {
                            what,
                            errno,
                            message,
                        })
                    }
                    Reply::Class(_) | Reply::Qdisc(_) => out.push(reply),
                    _ => {}
                }
            }
        }
    }

    /// Every class on interface `ifindex`, with counters.
    pub fn classes(&mut self, ifindex: i32) -> Result<Vec<KernelClass>, NetlinkError> {
        Ok(self
            .dump(ifindex, true)?
            .into_iter()
            .filter_map(|r| match r {
                Reply::Class(c) if c.handle != 0 => Some(c),
                _ => None,
            })
            .collect())
    }

    /// Every qdisc on interface `ifindex`, with counters.
    pub fn qdiscs(&mut self, ifindex: i32) -> Result<Vec<KernelQdisc>, NetlinkError> {
        // A qdisc dump lists every interface's qdiscs; keep this one's.
        Ok(self
            .dump(ifindex, false)?
            .into_iter()
            .filter_map(|r| match r {
                Reply::Qdisc(q) => Some(q),
                _ => None,
            })
            .filter(|q| q.ifindex == ifindex)
            .collect())
    }

    /// The interface's largest GSO burst, in segments.
    pub fn gso_max_segs(&mut self, ifindex: i32) -> Result<Option<u32>, NetlinkError> {
        let sequence = self.next_sequence();
        let mut link = netlink_packet_route::link::LinkMessage::default();
        link.header.index = ifindex as u32;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST;
        header.sequence_number = sequence;
        let mut message = NetlinkMessage::new(
            header,
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::GetLink(link)),
        );
        message.finalize();
        let mut bytes = vec![0u8; message.buffer_len()];
        message.serialize(&mut bytes);
        self.send_all(&bytes)?;
        loop {
            for reply in self.receive()? {
                match reply {
                    Reply::Link {
                        index,
                        gso_max_segs,
                    } if index == ifindex => return Ok(gso_max_segs),
                    Reply::Ack {
                        sequence: s,
                        errno,
                        message,
                    } if s == sequence && errno != 0 => {
                        return Err(NetlinkError::DumpRefused {
                            what: "reading the interface",
                            errno,
                            message,
                        })
                    }
                    _ => {}
                }
            }
        }
    }

    /// Sends `requests` for interface `ifindex`, many per `sendmsg`, and
    /// reads every acknowledgement. A refused request does not stop the
    /// others in its chunk (the kernel goes on), but no further chunk is
    /// sent after a refusal when `stop_on_error` is set.
    pub fn execute(
        &mut self,
        ifindex: i32,
        requests: &[TcRequest],
        stop_on_error: bool,
    ) -> Result<BatchOutcome, NetlinkError> {
        let mut outcome = BatchOutcome {
            results: Vec::with_capacity(requests.len()),
            sends: 0,
        };
        let mut chunk = Vec::with_capacity(CHUNK_BYTES + 4096);
        let mut start = 0;
        while start < requests.len() {
            chunk.clear();
            let first_sequence = self.sequence.wrapping_add(1).max(1);
            let mut end = start;
            while end < requests.len() && end - start < CHUNK_MESSAGES && chunk.len() < CHUNK_BYTES
            {
                let sequence = self.next_sequence();
                chunk.extend_from_slice(&requests[end].encode(ifindex, sequence));
                end += 1;
            }
            self.send_all(&chunk)?;
            outcome.sends += 1;
            let count = end - start;
            let mut pending: Vec<Option<Option<NetlinkError>>> = (0..count).map(|_| None).collect();
            let mut left = count;
            while left > 0 {
                for reply in self.receive()? {
                    let Reply::Ack {
                        sequence,
                        errno,
                        message,
                    } = reply
                    else {
                        continue;
                    };
                    let index = sequence.wrapping_sub(first_sequence) as usize;
                    let Some(slot) = pending.get_mut(index) else {
                        continue;
                    };
                    if slot.is_none() {
                        left -= 1;
                        *slot = Some((errno != 0).then(|| NetlinkError::Refused {
                            request: requests[start + index].to_string(),
                            errno,
                            message,
                        }));
                    }
                }
            }
            let mut failed = false;
            for (i, slot) in pending.into_iter().enumerate() {
                let result = slot.unwrap_or_else(|| {
                    Some(NetlinkError::Unacknowledged {
                        request: requests[start + i].to_string(),
                    })
                });
                failed |= result.is_some();
                outcome.results.push(result);
            }
            start = end;
            if failed && stop_on_error {
                break;
            }
        }
        Ok(outcome)
    }
}
