//! The hand-over note: what the CD's boot manager tells the installed
//! system it starts. Written by the CD wing, read by the node wing; the
//! type lives in `config` so that the sensor server reads it too.

pub use config::handover::{Handover, HANDOVER_FILE};
