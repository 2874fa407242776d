//! PID 1 of a PlanetLab-style node.
//!
//! On the boot CD ([`bootmgr`]): mount the kernel file systems, load drivers
//! ([`modprobe`]), find the node config ([`nodecfg`]), bring up the network
//! ([`net`], [`dhcp`]), check in with the boot server over TLS trusting only
//! the CD's CA ([`server`]), then obey the boot state: reinstall, boot, debug
//! or disabled. Every step prints a marker ([`console`]) and is reported to
//! the server; any failure falls to `debug` and says why.

pub mod blockdev;
pub mod bootmgr;
pub mod clock;
pub mod cmdline;
pub mod console;
pub mod debug;
pub mod deploy;
pub mod dhcp;
pub mod disk;
pub mod handover;
pub mod hardware;
pub mod install;
pub mod kexec;
pub mod modprobe;
pub mod net;
pub mod nodecfg;
pub mod pid1;
pub mod proc;
pub mod reinstall;
pub mod report;
pub mod server;
pub mod staffkeys;
pub mod supervisor;
pub mod updater;

/// This binary's version, shown in the banner.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
