//! Running the Debian tools the ISO is made with, with errors that say
//! which package provides a missing one.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{tool} is not installed (apt-get install {package})")]
    Missing { tool: String, package: &'static str },
    #[error("{tool} could not be started: {source}")]
    Start {
        tool: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} failed ({status}): {stderr}")]
    Failed {
        tool: String,
        status: String,
        stderr: String,
    },
    #[error("{} is missing (apt-get install {package})", path.display())]
    MissingFile {
        path: PathBuf,
        package: &'static str,
    },
}

/// Runs `command`; `package` is the Debian package that provides it.
pub fn run(command: &mut Command, package: &'static str) -> Result<Output, ToolError> {
    let tool = command.get_program().to_string_lossy().into_owned();
    tracing::debug!(?command, "running");
    let output = command.output().map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ToolError::Missing {
                tool: tool.clone(),
                package,
            }
        } else {
            ToolError::Start {
                tool: tool.clone(),
                source,
            }
        }
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(12).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(ToolError::Failed {
            tool,
            status: output.status.to_string(),
            stderr: tail.join("\n"),
        });
    }
    Ok(output)
}

/// A file a Debian package installs (boot loader images).
pub fn require_file(path: &Path, package: &'static str) -> Result<PathBuf, ToolError> {
    if path.is_file() {
        Ok(path.to_path_buf())
    } else {
        Err(ToolError::MissingFile {
            path: path.to_path_buf(),
            package,
        })
    }
}
