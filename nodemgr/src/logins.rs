//! ssh logins as a slice land inside its sliver (PlanetLab's vsh), on a
//! node whose root file system is read-only.
//!
//! The installed root's `/etc/passwd` is a link to `/run/plnode/passwd`;
//! the node's own accounts are in `/etc/passwd.node`. The node manager
//! writes `/run/plnode/passwd` as those accounts plus one account per
//! sliver: the slice's name, uid and gid = the host id of the slice's user
//! inside the sliver (its range's first id + 1000), home
//! `/run/plnode/nodemgr/homes/<slice>` (root-owned, holding
//! `.ssh/authorized_keys` with the keys the server listed), shell `vsh`
//! (this program under that name). Dropbear authenticates the key, takes
//! the account's uid and runs `vsh`; `vsh` asks the node manager's API to
//! run the login (or the command) inside the sliver, as the slice's user,
//! with its own stdio or a terminal inside the sliver. The API knows the
//! caller's slice from its uid (`SO_PEERCRED`), so `vsh` needs no
//! privilege and cannot name another slice. Keys removed on the server
//! leave `authorized_keys` at the next poll.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::inside::SLICE_UID;
use crate::name::SliceName;
use crate::state::SliverState;

/// The login shell's name (`argv[0]` dispatches to [`crate::vsh`]).
pub const VSH_NAME: &str = "vsh";
/// Where the node OS has the login shell (a link to nodemgr).
pub const VSH_PATH: &str = "/usr/sbin/vsh";
/// The node's own accounts on an installed node.
pub const NODE_PASSWD: &str = "/etc/passwd.node";
/// The passwd file `/etc/passwd` links to.
pub const RUN_PASSWD: &str = "/run/plnode/passwd";

/// Where the login files go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logins {
    /// The node's own accounts (read).
    pub node_passwd: PathBuf,
    /// The passwd file written (node accounts + slices).
    pub passwd: PathBuf,
    /// The slices' homes (`<homes>/<slice>/.ssh/authorized_keys`).
    pub homes: PathBuf,
    /// The slices' login shell.
    pub shell: PathBuf,
}

/// The login files could not be written.
#[derive(Debug, thiserror::Error)]
#[error("{what} {}", path.display())]
pub struct LoginError {
    what: &'static str,
    path: PathBuf,
    #[source]
    source: io::Error,
}

fn err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> LoginError + 'a {
    move |source| LoginError {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// What [`Logins::write`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    /// Slices with an account.
    pub accounts: Vec<SliceName>,
    /// Slices left out: their name is one of the node's accounts.
    pub clashes: Vec<SliceName>,
}

impl Logins {
    /// An installed node's places, homes under `run_dir`.
    pub fn node(run_dir: &Path) -> Logins {
        Logins {
            node_passwd: NODE_PASSWD.into(),
            passwd: RUN_PASSWD.into(),
            homes: run_dir.join("homes"),
            shell: VSH_PATH.into(),
        }
    }

    /// Writes the passwd file and every sliver's home, removes homes of
    /// slivers that are gone. Skipped (`Ok(None)`) when the node has no
    /// `node_passwd` (a build host that did not ask for logins).
    pub fn write(&self, slivers: &[SliverState]) -> Result<Option<Written>, LoginError> {
        let base = match fs::read_to_string(&self.node_passwd) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err("reading", &self.node_passwd)(e)),
        };
        let node_accounts: BTreeSet<&str> = base
            .lines()
            .filter_map(|l| l.split(':').next())
            .filter(|n| !n.is_empty())
            .collect();
        let mut text = base.clone();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        let mut written = Written::default();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&self.homes)
            .map_err(err("making", &self.homes))?;
        for state in slivers {
            let slice = &state.slice;
            if node_accounts.contains(slice.as_str()) {
                tracing::warn!(%slice, "no ssh login: the node has an account of that name");
                written.clashes.push(slice.clone());
                continue;
            }
            let uid = state.ids.host_id(SLICE_UID);
            let home = self.homes.join(slice.as_str());
            text.push_str(&format!(
                "{slice}:x:{uid}:{uid}:slice {slice}:{}:{}\n",
                home.display(),
                self.shell.display()
            ));
            self.write_home(&home, &state.keys.to_file())?;
            written.accounts.push(slice.clone());
        }
        // Homes of slivers that are gone (their keys must stop working).
        if let Ok(entries) = fs::read_dir(&self.homes) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !written.accounts.iter().any(|s| s.as_str() == name) {
                    let path = e.path();
                    fs::remove_dir_all(&path).map_err(err("removing", &path))?;
                }
            }
        }
        floor::durable::write_atomic_mode(&self.passwd, text.as_bytes(), 0o644).map_err(|e| {
            LoginError {
                what: "writing",
                path: self.passwd.clone(),
                source: io::Error::other(e),
            }
        })?;
        Ok(Some(written))
    }

    /// Root-owned home and `.ssh` (0755), `authorized_keys` (0644):
    /// dropbear accepts files owned by root that only root can change.
    fn write_home(&self, home: &Path, keys: &str) -> Result<(), LoginError> {
        let ssh = home.join(".ssh");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&ssh)
            .map_err(err("making", &ssh))?;
        for dir in [home, ssh.as_path()] {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
                .map_err(err("chmod", dir))?;
        }
        let file = ssh.join("authorized_keys");
        let tmp = ssh.join(".authorized_keys.new");
        fs::write(&tmp, keys).map_err(err("writing", &tmp))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).map_err(err("chmod", &tmp))?;
        fs::rename(&tmp, &file).map_err(err("writing", &file))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::IdRange;
    use crate::keys::AuthorizedKeys;
    use crate::state::{Desired, Origin};
    use config::rspec::Rspec;

    fn state(slice: &str, index: u32, keys: &str) -> SliverState {
        SliverState {
            slice: SliceName::new(slice).unwrap(),
            rspec: Rspec::default(),
            keys: AuthorizedKeys::parse(keys).unwrap(),
            ids: IdRange {
                index,
                first: (1 << 20) + index * 65536,
            },
            created: config::Timestamp::now(),
            desired: Desired::Running,
            origin: Origin::Server,
            initscript: None,
            initscript_ran: true,
            configured: true,
        }
    }

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq8mCjRqUoFdjvQ2xAq3hQ6X7tq1z0Jg7oQyJ6l2S9u a@b";

    #[test]
    fn accounts_follow_the_slivers_and_never_shadow_the_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let logins = Logins {
            node_passwd: dir.path().join("passwd.node"),
            passwd: dir.path().join("passwd"),
            homes: dir.path().join("homes"),
            shell: "/usr/sbin/vsh".into(),
        };
        assert_eq!(logins.write(&[]).unwrap(), None);
        fs::write(&logins.node_passwd, "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        let w = logins
            .write(&[state("pl_a", 0, KEY), state("root", 1, KEY)])
            .unwrap()
            .unwrap();
        assert_eq!(w.accounts.len(), 1);
        assert_eq!(w.clashes.len(), 1);
        let passwd = fs::read_to_string(&logins.passwd).unwrap();
        let home = logins.homes.join("pl_a");
        assert_eq!(
            passwd,
            format!(
                "root:x:0:0:root:/root:/bin/sh\npl_a:x:1049576:1049576:slice pl_a:{}:/usr/sbin/vsh\n",
                home.display()
            )
        );
        assert_eq!(
            fs::read_to_string(home.join(".ssh/authorized_keys")).unwrap(),
            format!("{KEY}\n")
        );
        // The slice goes: so do its account and its keys.
        logins.write(&[]).unwrap();
        assert!(!home.exists());
        assert!(!fs::read_to_string(&logins.passwd).unwrap().contains("pl_a"));
    }
}
