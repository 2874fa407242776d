//! PID 1 of a PlanetLab-style node, in two wings over a shared floor.
//!
//! - [`cd`]: the boot CD's boot manager, from power-on to hand-over: find
//!   the node config, bring up the network, check in with the boot server
//!   over TLS trusting only the CD's CA, then obey the boot state
//!   (reinstall, boot, debug, disabled). Any failure falls to `debug`.
//! - [`node`]: the installed node's [`node::supervisor`] (services, mounts,
//!   check-ins, trials) and [`node::updater`] (signed updates, staged for
//!   the CD to activate).
//!
//! The floor both wings stand on: [`console`] (step markers and the log),
//! [`boot_server`] (an authenticated client of the boot server),
//! [`handover_note`] (what the CD tells the installed system), [`deploy`]
//! (the disk's deployments and the one builder of a deployment from signed
//! packages), [`net`] (links, DHCP), [`modprobe`], [`kernel_cmdline`],
//! [`clock`], [`proc`] and [`pid1`] (processes and PID 1 duties),
//! [`blockdev`], [`hardware`], [`staff_keys`].

pub mod blockdev;
pub mod boot_server;
pub mod cd;
pub mod clock;
pub mod console;
pub mod deploy;
pub mod handover_note;
pub mod hardware;
pub mod kernel_cmdline;
pub mod modprobe;
pub mod net;
pub mod node;
pub mod pid1;
pub mod proc;
pub mod staff_keys;

/// This binary's version, shown in the banner.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
