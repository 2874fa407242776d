//! Loading the classifier programs with the raw `bpf()` system call and
//! keeping exactly one of them attached to a cgroup's egress hook.
//!
//! An attached program stays attached (the cgroup holds a reference) after
//! the loader closes its descriptor, so nothing needs pinning. Programs are
//! attached with `BPF_F_ALLOW_OVERRIDE`: a cgroup without a program of its
//! own runs its nearest ancestor's, and attaching again replaces the
//! cgroup's program in one step (no window without classification).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::program::{Program, NAME_PREFIX};

// Commands (linux/bpf.h, enum bpf_cmd).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_PROG_QUERY: libc::c_long = 16;

const BPF_PROG_TYPE_CGROUP_SKB: u32 = 8;
const BPF_CGROUP_INET_EGRESS: u32 = 1;
const BPF_F_ALLOW_OVERRIDE: u32 = 1;
const BPF_OBJ_NAME_LEN: usize = 16;

/// `CGROUP2_SUPER_MAGIC`.
const CGROUP2_MAGIC: u64 = 0x6367_7270;

/// A `bpf()` call that failed, or a cgroup that cannot take a program.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    /// The path is not a directory of a cgroup v2 hierarchy.
    #[error("{}: not a cgroup v2 directory", path.display())]
    NotCgroup2 {
        /// The path.
        path: PathBuf,
    },
    /// Opening or inspecting the cgroup failed.
    #[error("{}: {what}", path.display())]
    Cgroup {
        /// The cgroup.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The system's reason.
        #[source]
        source: io::Error,
    },
    /// The kernel refused to load a program.
    #[error("loading eBPF program {name}{}", verifier_note(log))]
    Load {
        /// The program's name.
        name: String,
        /// The verifier's log (empty when the call failed before verifying).
        log: String,
        /// The system's reason.
        #[source]
        source: io::Error,
    },
    /// The kernel refused a `bpf()` command on a cgroup.
    #[error("{}: {what}", path.display())]
    Call {
        /// The cgroup.
        path: PathBuf,
        /// What was being done.
        what: String,
        /// The system's reason.
        #[source]
        source: io::Error,
    },
    /// A program that is not bwcap's is attached where bwcap's would go.
    #[error("{}: an egress program bwcap did not attach is there ({name:?}, id {id}); remove it first", path.display())]
    Foreign {
        /// The cgroup.
        path: PathBuf,
        /// The other program's name.
        name: String,
        /// Its id.
        id: u32,
    },
    /// The program did not assemble (a bug, reported rather than panicking).
    #[error("assembling eBPF program {name}")]
    Assemble {
        /// The program's name.
        name: String,
        /// What went wrong.
        #[source]
        source: super::asm::AsmError,
    },
}

fn verifier_note(log: &str) -> String {
    let log = log.trim();
    if log.is_empty() {
        String::new()
    } else {
        let last: Vec<&str> = log.lines().rev().take(3).collect();
        format!(
            " (verifier: {})",
            last.into_iter().rev().collect::<Vec<_>>().join(" / ")
        )
    }
}

/// A zeroed `union bpf_attr` to fill field by field.
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Attr {
        Attr([0; 128])
    }
    fn u32(&mut self, at: usize, v: u32) -> &mut Self {
        self.0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(&mut self, at: usize, v: u64) -> &mut Self {
        self.0[at..at + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn bytes(&mut self, at: usize, v: &[u8]) -> &mut Self {
        self.0[at..at + v.len()].copy_from_slice(v);
        self
    }
    fn get_u32(&self, at: usize) -> u32 {
        u32::from_ne_bytes([self.0[at], self.0[at + 1], self.0[at + 2], self.0[at + 3]])
    }

    /// `bpf(cmd, &attr, sizeof attr)`.
    fn call(&mut self, cmd: libc::c_long) -> io::Result<libc::c_long> {
        // SAFETY: the attribute buffer is 128 bytes, zero beyond the fields
        // set, and outlives the call; every pointer stored in it (instructions,
        // license, log, id arrays, info structs) points into memory the
        // caller keeps alive until the call returns, with the lengths given.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                self.0.as_mut_ptr(),
                self.0.len() as libc::c_uint,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }
}

fn owned_fd(raw: libc::c_long) -> OwnedFd {
    // SAFETY: `raw` is a new descriptor the kernel just returned to us,
    // owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(raw as i32) }
}

/// Loads `program`; the descriptor keeps it alive until it is attached.
pub fn load(program: &Program) -> Result<OwnedFd, BpfError> {
    let name = program.name();
    let insns: Vec<u8> = program
        .instructions()
        .map_err(|source| BpfError::Assemble {
            name: name.clone(),
            source,
        })?
        .into_iter()
        .flat_map(|i| i.to_bytes())
        .collect();
    let license = c"Apache-2.0";
    let mut name_bytes = [0u8; BPF_OBJ_NAME_LEN];
    let n = name.len().min(BPF_OBJ_NAME_LEN - 1);
    name_bytes[..n].copy_from_slice(&name.as_bytes()[..n]);
    let attempt = |log: Option<&mut Vec<u8>>| {
        let mut attr = Attr::new();
        attr.u32(0, BPF_PROG_TYPE_CGROUP_SKB)
            .u32(4, (insns.len() / 8) as u32)
            .u64(8, insns.as_ptr() as u64)
            .u64(16, license.as_ptr() as u64)
            .bytes(48, &name_bytes)
            .u32(68, BPF_CGROUP_INET_EGRESS);
        if let Some(log) = log {
            attr.u32(24, 1)
                .u32(28, log.len() as u32)
                .u64(32, log.as_mut_ptr() as u64);
        }
        attr.call(BPF_PROG_LOAD)
    };
    match attempt(None) {
        Ok(fd) => Ok(owned_fd(fd)),
        Err(first) => {
            // Again with the verifier's log, to say why.
            let mut log = vec![0u8; 64 * 1024];
            let result = attempt(Some(&mut log));
            let text =
                String::from_utf8_lossy(log.split(|b| *b == 0).next().unwrap_or(&[])).into_owned();
            match result {
                Ok(fd) => Ok(owned_fd(fd)),
                Err(_) => Err(BpfError::Load {
                    name,
                    log: text,
                    source: first,
                }),
            }
        }
    }
}

/// A loaded program waiting to be attached.
#[derive(Debug)]
pub struct Loaded {
    fd: OwnedFd,
    name: String,
}

impl Loaded {
    /// The program's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A program attached to a cgroup's egress hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    /// The kernel's program id.
    pub id: u32,
    /// Its name.
    pub name: String,
}

impl Attached {
    /// Whether bwcap attached it (any version).
    pub fn is_bwcaps(&self) -> bool {
        self.name.starts_with(NAME_PREFIX)
    }
}

/// An open cgroup v2 directory.
#[derive(Debug)]
pub struct Cgroup {
    path: PathBuf,
    dir: File,
}

impl Cgroup {
    /// Opens `path`, which must be a directory of a cgroup v2 hierarchy.
    pub fn open(path: &Path) -> Result<Cgroup, BpfError> {
        let dir = File::open(path).map_err(|source| BpfError::Cgroup {
            path: path.to_path_buf(),
            what: "opening",
            source,
        })?;
        let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
        // SAFETY: fstatfs writes a `struct statfs` into the buffer we own.
        let r = unsafe { libc::fstatfs(dir.as_raw_fd(), st.as_mut_ptr()) };
        if r != 0 {
            return Err(BpfError::Cgroup {
                path: path.to_path_buf(),
                what: "checking the file system",
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: fstatfs succeeded, so the struct is initialised.
        let st = unsafe { st.assume_init() };
        if st.f_type as u64 != CGROUP2_MAGIC || !path.is_dir() {
            return Err(BpfError::NotCgroup2 {
                path: path.to_path_buf(),
            });
        }
        Ok(Cgroup {
            path: path.to_path_buf(),
            dir,
        })
    }

    /// The cgroup's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn call_error(&self, what: String) -> impl FnOnce(io::Error) -> BpfError + '_ {
        move |source| BpfError::Call {
            path: self.path.clone(),
            what,
            source,
        }
    }

    /// The egress programs attached to this cgroup itself (not inherited).
    pub fn attached(&self) -> Result<Vec<Attached>, BpfError> {
        let mut ids = [0u32; 64];
        let mut attr = Attr::new();
        attr.u32(0, self.dir.as_raw_fd() as u32)
            .u32(4, BPF_CGROUP_INET_EGRESS)
            .u64(16, ids.as_mut_ptr() as u64)
            .u32(24, ids.len() as u32);
        attr.call(BPF_PROG_QUERY)
            .map_err(self.call_error("listing egress programs".into()))?;
        let count = (attr.get_u32(24) as usize).min(ids.len());
        ids[..count]
            .iter()
            .map(|&id| {
                let name =
                    program_name(id).map_err(self.call_error(format!("reading program {id}")))?;
                Ok(Attached { id, name })
            })
            .collect()
    }

    /// Gets `program` ready to become the cgroup's only egress program:
    /// `None` when it already is, else the loaded program to attach. Fails,
    /// changing nothing, when another tool's program is attached.
    pub fn prepare(&self, program: &Program) -> Result<Option<Loaded>, BpfError> {
        let attached = self.attached()?;
        if let Some(foreign) = attached.iter().find(|a| !a.is_bwcaps()) {
            return Err(BpfError::Foreign {
                path: self.path.clone(),
                name: foreign.name.clone(),
                id: foreign.id,
            });
        }
        if let [only] = attached.as_slice() {
            if only.name == program.name() {
                return Ok(None);
            }
        }
        Ok(Some(Loaded {
            fd: load(program)?,
            name: program.name(),
        }))
    }

    /// Attaches a prepared program, replacing whatever bwcap program was there.
    pub fn attach(&self, loaded: Loaded) -> Result<(), BpfError> {
        let mut attr = Attr::new();
        attr.u32(0, self.dir.as_raw_fd() as u32)
            .u32(4, loaded.fd.as_raw_fd() as u32)
            .u32(8, BPF_CGROUP_INET_EGRESS)
            .u32(12, BPF_F_ALLOW_OVERRIDE);
        attr.call(BPF_PROG_ATTACH)
            .map_err(self.call_error(format!("attaching {}", loaded.name)))?;
        Ok(())
    }

    /// Makes `program` the cgroup's only egress program. Returns false
    /// when it already was (nothing changed).
    pub fn ensure(&self, program: &Program) -> Result<bool, BpfError> {
        match self.prepare(program)? {
            None => Ok(false),
            Some(loaded) => self.attach(loaded).map(|()| true),
        }
    }

    /// Detaches every bwcap program from the cgroup. Returns how many.
    pub fn detach_ours(&self) -> Result<usize, BpfError> {
        let mut detached = 0;
        for program in self.attached()?.into_iter().filter(Attached::is_bwcaps) {
            let fd = program_fd(program.id)
                .map_err(self.call_error(format!("opening program {}", program.id)))?;
            let mut attr = Attr::new();
            attr.u32(0, self.dir.as_raw_fd() as u32)
                .u32(4, fd.as_raw_fd() as u32)
                .u32(8, BPF_CGROUP_INET_EGRESS);
            match attr.call(BPF_PROG_DETACH) {
                Ok(_) => detached += 1,
                // Gone in the meantime.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(self.call_error(format!("detaching {}", program.name))(e)),
            }
        }
        Ok(detached)
    }
}

fn program_fd(id: u32) -> io::Result<OwnedFd> {
    let mut attr = Attr::new();
    attr.u32(0, id);
    attr.call(BPF_PROG_GET_FD_BY_ID).map(owned_fd)
}

fn program_name(id: u32) -> io::Result<String> {
    let fd = program_fd(id)?;
    // struct bpf_prog_info up to and including `name` (offset 64, 16 bytes).
    let mut info = [0u8; 80];
    let mut attr = Attr::new();
    attr.u32(0, fd.as_raw_fd() as u32)
        .u32(4, info.len() as u32)
        .u64(8, info.as_mut_ptr() as u64);
    attr.call(BPF_OBJ_GET_INFO_BY_FD)?;
    let name = &info[64..80];
    let name = name.split(|b| *b == 0).next().unwrap_or(&[]);
    Ok(String::from_utf8_lossy(name).into_owned())
}

/// Whether this process may load cgroup programs (root, or CAP_BPF +
/// CAP_NET_ADMIN): tries to load the node program and drops it.
pub fn can_load() -> Result<(), BpfError> {
    load(&Program::Node { class: 0x1_0002 }).map(drop)
}
