//! The QEMU harness: boots the real ISO under TCG and reads the serial
//! console (DESIGN.md §5 markers).
//!
//! - [`qemu`]: [`qemu::QemuConfig`] → [`qemu::Qemu`] (started with
//!   `-accel tcg -nodefaults -display none -no-reboot`, serial console to a
//!   file, optional OVMF, blank disk, user networking, `-rtc base=`), with
//!   [`qemu::Qemu::wait_for`] / [`qemu::Qemu::wait_for_marker`] (per-wait
//!   timeout; on failure the last 50 console lines), killed on drop.
//! - [`ssh`]: staff logins into a guest through a forwarded port;
//!   [`checks`]: what a scenario checks over such a login, per service.
//! - [`artifacts`]: building the musl `init`, trust roots for a test
//!   ([`artifacts::CdTrust`]) and a CD from them.

pub mod artifacts;
pub mod checks;
pub mod mirror;
pub mod powercut;
pub mod qemu;
pub mod ssh;
pub mod world;

pub use artifacts::{build_cd, build_init, cd_options, ArtifactError, CdTrust};
pub use qemu::{ConsoleMatch, Disk, DiskBus, Firmware, Qemu, QemuConfig, QemuError};
