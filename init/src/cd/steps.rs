//! The boot manager's steps: each prints a start marker and an end marker
//! (`ok` with a detail, or `fail` with the reason), and a failed step is a
//! [`Failure`] that names it.

use crate::console::{self, StepStatus};

/// A step that failed, and why.
#[derive(Debug)]
pub struct Failure {
    pub step: &'static str,
    pub error: anyhow::Error,
}

/// Runs `f` as step `name`, printing its start and end markers.
pub fn step<T>(
    name: &'static str,
    f: impl FnOnce() -> anyhow::Result<(T, String)>,
) -> Result<T, Failure> {
    console::step(name, StepStatus::Start, "");
    match f() {
        Ok((value, detail)) => {
            console::step(name, StepStatus::Ok, &detail);
            Ok(value)
        }
        Err(error) => {
            console::step(name, StepStatus::Fail, &format!("{error:#}"));
            Err(Failure { step: name, error })
        }
    }
}
