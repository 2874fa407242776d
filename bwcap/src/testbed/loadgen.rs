//! The load generator: a process that puts itself into a sliver's cgroup
//! and the node's network namespace (as a sliver's process is), then sends
//! bounded traffic to the peer, or tries to change traffic control from a
//! user namespace. Results are one line of JSON on stdout.
//!
//! The cgroup is joined before any socket is made: a socket belongs to the
//! cgroup of the process that created it.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};

use crate::tc::{RouteSocket, TcRequest};

/// Sends bounded test traffic from inside a sliver's cgroup.
#[derive(Debug, Parser)]
#[command(name = "bwcap-loadgen", about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the generator runs.
#[derive(Debug, Args)]
pub struct Place {
    /// Network namespace file to join (/run/netns/NAME).
    #[arg(long)]
    netns: PathBuf,
    /// cgroup v2 directory to join first.
    #[arg(long)]
    cgroup: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A greedy TCP sender: writes as fast as TCP lets it.
    Send {
        #[command(flatten)]
        place: Place,
        /// The receiver.
        #[arg(long)]
        to: SocketAddrV4,
        /// Who this sender is (the receiver counts per id).
        #[arg(long)]
        id: u32,
        /// Stop after this many seconds.
        #[arg(long)]
        seconds: f64,
        /// Stop after this many bytes.
        #[arg(long)]
        bytes: u64,
        /// Before exiting, wait until the receiver has every byte (so the
        /// bytes are through the shaper); without it the connection is
        /// reset and unsent data dropped.
        #[arg(long)]
        drain: bool,
        /// Pace the connection to at most this many bits per second (TCP's
        /// own pacing, `SO_MAX_PACING_RATE`), instead of sending greedily.
        #[arg(long, value_name = "BITS")]
        pace: Option<u64>,
    },
    /// An ICMP echo flood: requests at a fixed rate, replies counted.
    Ping {
        #[command(flatten)]
        place: Place,
        /// The address to ping.
        #[arg(long)]
        to: Ipv4Addr,
        /// Requests per second.
        #[arg(long)]
        rate: u32,
        /// For this many seconds.
        #[arg(long)]
        seconds: f64,
    },
    /// UDP datagrams carrying an IPv4 option (four NOPs).
    Options {
        #[command(flatten)]
        place: Place,
        /// The receiver (need not listen).
        #[arg(long)]
        to: SocketAddrV4,
        /// Datagrams to send.
        #[arg(long)]
        count: u32,
    },
    /// From a new user namespace (as a sliver's root is), tries to delete
    /// the root qdisc, change a class and load an eBPF program; reports
    /// each errno.
    Tamper {
        #[command(flatten)]
        place: Place,
        /// The node's egress interface.
        #[arg(long)]
        interface: String,
    },
}

fn enter(place: &Place) -> io::Result<()> {
    if let Some(cgroup) = &place.cgroup {
        super::enter_cgroup(cgroup)?;
    }
    super::enter_netns(&place.netns)
}

/// Runs the generator with `args` (without the program name); returns the
/// process exit status.
pub fn main<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(
        std::iter::once("bwcap-loadgen".into()).chain(args.into_iter().map(Into::into)),
    ) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return 2;
        }
    };
    match run(cli.command) {
        Ok(line) => {
            println!("{line}");
            0
        }
        Err(e) => {
            eprintln!("bwcap-loadgen: error: {e}");
            1
        }
    }
}

fn run(command: Command) -> io::Result<String> {
    match command {
        Command::Send {
            place,
            to,
            id,
            seconds,
            bytes,
            drain,
            pace,
        } => {
            enter(&place)?;
            send(to, id, Duration::from_secs_f64(seconds), bytes, drain, pace)
        }
        Command::Ping {
            place,
            to,
            rate,
            seconds,
        } => {
            enter(&place)?;
            ping(to, rate, Duration::from_secs_f64(seconds))
        }
        Command::Options { place, to, count } => {
            enter(&place)?;
            options(to, count)
        }
        Command::Tamper { place, interface } => {
            enter(&place)?;
            tamper(&interface)
        }
    }
}

fn send(
    to: SocketAddrV4,
    id: u32,
    limit: Duration,
    max_bytes: u64,
    drain: bool,
    pace: Option<u64>,
) -> io::Result<String> {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&to.into(), Duration::from_secs(5))?;
    // A loss-based sender keeps the shaper's queue busy; a model-based one
    // (BBR, the default on some hosts) paces itself and would measure its
    // own estimate rather than the cap.
    if set_congestion_control(&stream, "cubic").is_err() {
        set_congestion_control(&stream, "reno")?;
    }
    if let Some(bits) = pace {
        let bytes_per_sec: u64 = bits / 8;
        // SAFETY: setsockopt reads the u64 for the call.
        let r = unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_MAX_PACING_RATE,
                (&bytes_per_sec as *const u64).cast(),
                std::mem::size_of::<u64>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    stream.set_write_timeout(Some(Duration::from_millis(200)))?;
    stream.write_all(&id.to_be_bytes())?;
    let chunk = vec![0x5au8; 64 * 1024];
    let mut sent = 0u64;
    while started.elapsed() < limit && sent < max_bytes {
        let n = (max_bytes - sent).min(chunk.len() as u64) as usize;
        match stream.write(&chunk[..n]) {
            Ok(w) => sent += w as u64,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
    if drain {
        // Wait until the receiver has everything (it closes at our end of
        // stream).
        stream.shutdown(std::net::Shutdown::Write)?;
        stream.set_read_timeout(Some(Duration::from_millis(200)))?;
        let drain_until = Instant::now() + Duration::from_secs(30);
        let mut scratch = [0u8; 64];
        while Instant::now() < drain_until {
            match stream.read(&mut scratch) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
    } else {
        // Stop now: a reset drops what the send buffer still holds, which
        // at a low rate could keep the class busy for half a minute.
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt reads the linger struct for the call.
        unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
    }
    Ok(format!(
        "{{\"sent\":{sent},\"seconds\":{:.3}}}",
        started.elapsed().as_secs_f64()
    ))
}

fn set_congestion_control(stream: &TcpStream, name: &str) -> io::Result<()> {
    // SAFETY: setsockopt reads `name` (its length given) for the call.
    let r = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn raw_socket(protocol: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: creating a socket has no memory-safety preconditions.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn sockaddr(addr: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.octets()),
        },
        sin_zero: [0; 8],
    }
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ping(to: Ipv4Addr, rate: u32, limit: Duration) -> io::Result<String> {
    let socket = raw_socket(libc::IPPROTO_ICMP)?;
    let fd = socket.as_raw_fd();
    // SAFETY: setting O_NONBLOCK on our own descriptor.
    unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) };
    let ident = (std::process::id() & 0xffff) as u16;
    let dest = sockaddr(to, 0);
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let started = Instant::now();
    let mut sent = 0u32;
    let mut replies_ms: Vec<u64> = Vec::new();
    let mut buf = [0u8; 2048];
    // Replies may trail the last request by what the queue held.
    let end = limit + Duration::from_millis(500);
    while started.elapsed() < end {
        if started.elapsed() < limit && started.elapsed() >= interval * sent {
            let seq = sent as u16;
            let mut packet = [0u8; 64];
            packet[0] = 8; // echo request
            packet[4..6].copy_from_slice(&ident.to_be_bytes());
            packet[6..8].copy_from_slice(&seq.to_be_bytes());
            let sum = checksum(&packet);
            packet[2..4].copy_from_slice(&sum.to_be_bytes());
            // SAFETY: sendto reads `packet` and `dest`, both alive for the call.
            let r = unsafe {
                libc::sendto(
                    fd,
                    packet.as_ptr().cast(),
                    packet.len(),
                    0,
                    (&dest as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if r >= 0 {
                sent += 1;
            } else {
                // A full queue refuses; the next tick tries again.
                sent += 1;
            }
        }
        // SAFETY: recv writes at most buf.len() bytes into buf.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n > 0 {
            let n = n as usize;
            let ihl = usize::from(buf[0] & 0x0f) * 4;
            if n >= ihl + 8
                && buf[ihl] == 0
                && u16::from_be_bytes([buf[ihl + 4], buf[ihl + 5]]) == ident
            {
                replies_ms.push(started.elapsed().as_millis() as u64);
            }
        } else {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    let replies: Vec<String> = replies_ms.iter().map(|t| t.to_string()).collect();
    Ok(format!(
        "{{\"sent\":{sent},\"replies_ms\":[{}]}}",
        replies.join(",")
    ))
}

fn options(to: SocketAddrV4, count: u32) -> io::Result<String> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
    // Four NOPs: a valid, harmless IPv4 option field (IHL 6).
    let options = [1u8, 1, 1, 1];
    // SAFETY: setsockopt reads `options` (4 bytes) for the call.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_OPTIONS,
            options.as_ptr().cast(),
            options.len() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut sent = 0;
    for _ in 0..count {
        if socket.send_to(b"bwcap ip options", to).is_ok() {
            sent += 1;
        }
    }
    Ok(format!("{{\"sent\":{sent}}}"))
}

fn errno_of<T, E: std::error::Error + 'static>(result: Result<T, E>) -> i32 {
    match result {
        Ok(_) => 0,
        Err(e) => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(s) = source {
                if let Some(io) = s.downcast_ref::<io::Error>() {
                    return io.raw_os_error().unwrap_or(-1);
                }
                if let Some(n) = s.downcast_ref::<crate::tc::NetlinkError>() {
                    if let Some(errno) = n.errno() {
                        return errno;
                    }
                }
                source = s.source();
            }
            -1
        }
    }
}

fn tamper(interface: &str) -> io::Result<String> {
    let ifindex = nix::net::if_::if_nametoindex(interface).map_err(io::Error::from)? as i32;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).map_err(io::Error::from)?;
    let mut socket = RouteSocket::open().map_err(io::Error::other)?;
    let delete = socket
        .execute(ifindex, &[TcRequest::DeleteRootQdisc], true)
        .and_then(|o| o.first_error());
    let change = socket
        .execute(
            ifindex,
            &[TcRequest::ChangeClass {
                id: crate::layout::CLASS_NODE_CAP,
                parent: crate::tc::Parent::Qdisc,
                params: crate::tc::HtbClassParams {
                    rate: 1_000_000_000,
                    ceil: 1_000_000_000,
                    buffer: 1000,
                    cbuffer: 1000,
                    quantum: 1514,
                    ..Default::default()
                },
            }],
            true,
        )
        .and_then(|o| o.first_error());
    let bpf = crate::bpf::cgroup::can_load();
    Ok(format!(
        "{{\"delete_root_qdisc\":{},\"change_class\":{},\"bpf_load\":{}}}",
        errno_of(delete),
        errno_of(change),
        errno_of(bpf)
    ))
}
