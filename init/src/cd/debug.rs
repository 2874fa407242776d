//! The `debug` state: the network stays up, staff get a shell on the
//! console (and ssh, when the CD carries dropbear and the server gave keys),
//! and nothing on disk is touched.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::console;
use crate::proc;

/// Shells tried for the console, in order.
const SHELLS: &[&str] = &["/bin/sh", "/bin/busybox"];

/// Keeps a root shell on the serial console, starting a new one whenever it
/// exits. Never returns.
pub fn console_shell_forever(reason: &str) -> ! {
    console::line(&format!("debug: {reason}"));
    console::line("debug: a root shell is on this console; nothing on disk has been changed.");
    loop {
        let Some(shell) = SHELLS.iter().find(|s| std::path::Path::new(s).exists()) else {
            console::line("debug: no shell on this CD; waiting");
            std::thread::sleep(Duration::from_secs(3600));
            continue;
        };
        let mut cmd = Command::new(shell);
        if shell.ends_with("busybox") {
            cmd.arg("sh");
        }
        for tty in ["/dev/ttyS0", "/dev/console"] {
            if let (Ok(i), Ok(o), Ok(e)) = (
                std::fs::File::open(tty),
                std::fs::OpenOptions::new().write(true).open(tty),
                std::fs::OpenOptions::new().write(true).open(tty),
            ) {
                cmd.stdin(Stdio::from(i))
                    .stdout(Stdio::from(o))
                    .stderr(Stdio::from(e));
                break;
            }
        }
        cmd.env("PS1", "plnode-debug# ")
            .env("PATH", "/sbin:/bin:/usr/sbin:/usr/bin");
        match proc::spawn(&mut cmd) {
            Ok(mut child) => {
                let exit = child.wait();
                console::line(&format!(
                    "debug: shell ended ({}); starting another",
                    exit.map(|e| e.to_string())
                        .unwrap_or_else(|e| e.to_string())
                ));
            }
            Err(e) => console::line(&format!("debug: cannot start {shell}: {e}")),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Starts dropbear for staff (when the CD carries it), with `keys` as
/// root's authorized keys, and keeps it running. Host keys are made on
/// first use in RAM: the CD never writes to a disk in `debug`.
pub fn start_ssh(keys: &[String]) {
    const DROPBEAR: &str = "/usr/sbin/dropbear";
    if !std::path::Path::new(DROPBEAR).exists() {
        console::line("debug: this CD has no ssh server; use the console");
        return;
    }
    match crate::staff_keys::install(std::path::Path::new("/"), keys) {
        Ok(_) if keys.is_empty() => console::line("debug: ssh is up but the boot server gave no staff keys; nobody can log in until it does"),
        Ok(_) => console::line(&format!("debug: ssh on port 22 for {} staff key(s)", keys.len())),
        Err(e) => console::line(&format!("debug: staff keys: {e:#}")),
    }
    let _ = std::thread::Builder::new()
        .name("debug-ssh".into())
        .spawn(|| loop {
            let mut cmd = Command::new(DROPBEAR);
            cmd.args(["-F", "-E", "-R", "-p", "22"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            match proc::spawn(&mut cmd) {
                Ok(mut child) => {
                    let exit = child.wait();
                    console::line(&format!(
                        "debug: ssh server ended ({}); restarting",
                        exit.map(|e| e.to_string())
                            .unwrap_or_else(|e| e.to_string())
                    ));
                }
                Err(e) => {
                    console::line(&format!("debug: cannot start {DROPBEAR}: {e}"));
                    return;
                }
            }
            std::thread::sleep(Duration::from_secs(5));
        });
}
