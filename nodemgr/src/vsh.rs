//! `vsh`: the login shell of the slices' accounts (see [`crate::logins`]).
//! Dropbear runs it as the slice's account after checking the user's key;
//! it asks the node manager's API to run the login shell (or `-c`'s
//! command) inside the caller's own sliver, as the slice's user, with a
//! terminal inside the sliver when the session has one, and exits with
//! the command's status. It holds no privilege: the node manager knows the
//! slice from the caller's uid.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::Path;

use crate::api_client::ApiClient;
use crate::settings::API_SOCKET_LINK;

/// Runs `vsh` with `args` (`argv`, `argv[0]` included); its exit status.
pub fn main(args: Vec<OsString>) -> i32 {
    // Nothing of this process may be reached from the sliver or by the
    // account's other processes.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let command: Vec<String> = match args.get(1).and_then(|a| a.to_str()) {
        Some("-c") => match args.get(2).and_then(|a| a.to_str()) {
            Some(cmd) => vec!["/bin/sh".into(), "-c".into(), cmd.into()],
            None => {
                eprintln!("vsh: -c needs a command");
                return 2;
            }
        },
        Some(other) => {
            eprintln!("vsh: unknown option {other:?} (a login shell, or -c COMMAND)");
            return 2;
        }
        None => Vec::new(),
    };
    match run(&command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vsh: {}", crate::service::line(e.as_ref()));
            1
        }
    }
}

fn run(command: &[String]) -> Result<i32, Box<dyn std::error::Error>> {
    let socket = std::env::var_os("NODEMGR_SOCKET")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(API_SOCKET_LINK).to_path_buf());
    let client = ApiClient::connect(&socket)?
        .ok_or("the node manager is not running: no sliver to log in to")?;
    let pty = std::io::stdin().is_terminal();
    let term = std::env::var("TERM").ok();
    let (session, master) = client.enter("", command, true, term.as_deref(), pty)?;
    if let Some(master) = master {
        crate::terminal::relay(master)?;
    }
    Ok(client.wait(session)?)
}
