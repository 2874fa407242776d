//! The egress interface: its index, and its speed (the node's cap when the
//! site set none), both in the calling thread's network namespace.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use config::units::Rate;

use crate::names::InterfaceName;

/// The cap when no cap is set and the link does not report a speed
/// (virtio, tunnels): 10 Gbit/s, i.e. shaping without a real limit.
pub const UNKNOWN_LINE_RATE: Rate = Rate::mbit(10_000);

/// The interface's index, or the system's reason it has none.
pub fn index(name: &InterfaceName) -> io::Result<i32> {
    let index = nix::net::if_::if_nametoindex(name.as_str()).map_err(io::Error::from)?;
    i32::try_from(index).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

const SIOCETHTOOL: libc::Ioctl = 0x8946;
const ETHTOOL_GSET: u32 = 1;

/// The link speed the driver reports (`ETHTOOL_GSET`), if it knows one.
pub fn speed(name: &InterfaceName) -> Option<Rate> {
    // struct ethtool_cmd: cmd @0, speed (low 16 bits, Mbit/s) @12,
    // speed_hi @28; 44 bytes.
    let mut cmd = [0u8; 44];
    cmd[..4].copy_from_slice(&ETHTOOL_GSET.to_ne_bytes());
    // struct ifreq: the name, then a pointer to the command.
    let mut ifreq = [0u8; 40];
    let bytes = name.as_str().as_bytes();
    ifreq[..bytes.len()].copy_from_slice(bytes);
    ifreq[16..24].copy_from_slice(&(cmd.as_mut_ptr() as usize as u64).to_ne_bytes());
    // SAFETY: a plain datagram socket, closed by OwnedFd.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return None;
    }
    // SAFETY: `raw` is a new descriptor nobody else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: SIOCETHTOOL reads the ifreq (a NUL-terminated name within 16
    // bytes, then a pointer) and writes at most 44 bytes to `cmd`, which
    // lives until after the call.
    let r = unsafe { libc::ioctl(socket.as_raw_fd(), SIOCETHTOOL, ifreq.as_mut_ptr()) };
    if r != 0 {
        return None;
    }
    let low = u16::from_ne_bytes([cmd[12], cmd[13]]);
    let high = u16::from_ne_bytes([cmd[28], cmd[29]]);
    let mbit = (u32::from(high) << 16) | u32::from(low);
    (mbit != 0 && mbit != u32::MAX).then(|| Rate::mbit(u64::from(mbit)))
}
