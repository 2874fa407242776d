//! The system calls that neither `nix` nor `libc` wrap for us: `clone3`,
//! the new mount API (`open_tree`, `mount_setattr`, `move_mount`),
//! `execveat`, `pidfd_open`, `quotactl_fd`, and the loop-device ioctls.
//!
//! Structures are declared here with the kernel's layout (UAPI headers
//! `linux/sched.h`, `linux/mount.h`, `linux/loop.h`, `linux/quota.h`),
//! because the libc crate has them for some C libraries only (musl lacks
//! `clone_args` and `CLONE_INTO_CGROUP`). Every function returns
//! `std::io::Error` with the system's errno.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// `CLONE_INTO_CGROUP` (Linux 5.7): start the child in the cgroup given by
/// `clone_args.cgroup`.
pub const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` of `linux/sched.h` (version 2, 88 bytes).
#[repr(C)]
#[derive(Debug, Default)]
pub struct CloneArgs {
    /// `CLONE_*` flags.
    pub flags: u64,
    /// Where the kernel stores a pidfd (`CLONE_PIDFD`).
    pub pidfd: u64,
    /// `CLONE_CHILD_SETTID` target.
    pub child_tid: u64,
    /// `CLONE_PARENT_SETTID` target.
    pub parent_tid: u64,
    /// Signal sent to the parent when the child ends.
    pub exit_signal: u64,
    /// Child stack (0: the same stack, copied, as with fork).
    pub stack: u64,
    /// Size of the child stack.
    pub stack_size: u64,
    /// Thread-local storage (`CLONE_SETTLS`).
    pub tls: u64,
    /// Pids to ask for in each pid namespace (`set_tid`).
    pub set_tid: u64,
    /// Number of entries at `set_tid`.
    pub set_tid_size: u64,
    /// Cgroup directory fd for `CLONE_INTO_CGROUP`.
    pub cgroup: u64,
}

/// Outcome of [`clone3`] in the calling process.
#[derive(Debug)]
pub enum Forked {
    /// This is the parent; the child's pid (in the caller's pid namespace).
    Parent(libc::pid_t),
    /// This is the child.
    Child,
}

/// `clone3(2)` without a new stack: like `fork`, the child continues here
/// on a copy of the caller's memory.
///
/// # Safety
///
/// In the child only async-signal-safe operations are allowed until it
/// execs or exits (no allocation, no locks: another thread of the parent
/// may have held them at the time of the clone).
pub unsafe fn clone3(args: &mut CloneArgs) -> io::Result<Forked> {
    // SAFETY: `args` is a valid clone_args of the size passed; with a zero
    // stack the kernel duplicates the calling thread like fork(2). The
    // caller upholds the async-signal-safety contract in the child.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match r {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid as libc::pid_t)),
    }
}

/// `OPEN_TREE_CLONE`: a detached copy of the mount at the path.
pub const OPEN_TREE_CLONE: u32 = 1;
/// `AT_RECURSIVE`: with submounts.
pub const AT_RECURSIVE: u32 = 0x8000;
/// `MOVE_MOUNT_F_EMPTY_PATH`: the source is the fd itself.
pub const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;
/// `MOUNT_ATTR_RDONLY`.
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
/// `MOUNT_ATTR_NOSUID`.
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
/// `MOUNT_ATTR_NODEV`.
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
/// `MOUNT_ATTR_NOEXEC`.
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
/// `MOUNT_ATTR_IDMAP` (Linux 5.12): map ids through a user namespace.
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr` of `linux/mount.h`.
#[repr(C)]
#[derive(Debug, Default)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn fd_result(r: libc::c_long) -> io::Result<OwnedFd> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: the kernel just returned this descriptor to us; nobody
        // else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
    }
}

fn unit_result(r: libc::c_long) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `open_tree(dirfd, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | flags)`:
/// a detached copy of the mount (tree, with `AT_RECURSIVE`) at `path`.
pub fn open_tree_clone(path: &CStr, recursive: bool) -> io::Result<OwnedFd> {
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as u32;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: path is a valid NUL-terminated string; the call only reads it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            flags as libc::c_uint,
        )
    };
    fd_result(r)
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH [| AT_RECURSIVE], attr)` on a
/// mount fd: sets `set`, and maps ids through `userns` when given.
pub fn mount_setattr(
    mount: BorrowedFd<'_>,
    set: u64,
    userns: Option<BorrowedFd<'_>>,
    recursive: bool,
) -> io::Result<()> {
    let mut attr = MountAttr {
        attr_set: set,
        ..MountAttr::default()
    };
    if let Some(ns) = userns {
        attr.attr_set |= MOUNT_ATTR_IDMAP;
        attr.userns_fd = ns.as_raw_fd() as u64;
    }
    let mut flags = libc::AT_EMPTY_PATH as u32;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: attr is a valid mount_attr of the size passed; "" is a valid
    // empty C string.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mount.as_raw_fd(),
            c"".as_ptr(),
            flags as libc::c_uint,
            &mut attr as *mut MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    unit_result(r)
}

/// `move_mount(fd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH)`:
/// attaches a detached mount at `target`.
pub fn move_mount_to(mount: BorrowedFd<'_>, target: &CStr) -> io::Result<()> {
    // SAFETY: both strings are valid and NUL-terminated; only read.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mount.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH as libc::c_uint,
        )
    };
    unit_result(r)
}

/// `execveat(fd, "", argv, envp, AT_EMPTY_PATH)`: runs the program open at
/// `fd`. Returns only on failure.
///
/// # Safety
///
/// `argv` and `envp` must be NULL-terminated arrays of pointers to
/// NUL-terminated strings that stay valid for the call. Async-signal-safe.
pub unsafe fn execveat_fd(
    fd: RawFd,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
) -> io::Error {
    // SAFETY: upheld by the caller (see above).
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd,
            c"".as_ptr(),
            argv,
            envp,
            libc::AT_EMPTY_PATH,
        );
    }
    io::Error::last_os_error()
}

/// `pidfd_open(pid, 0)`.
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: plain integer arguments.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    fd_result(r)
}

/// `setns(fd, nstype)` with a pidfd and several `CLONE_NEW*` flags at once
/// (Linux 5.8): joins all of them atomically.
pub fn setns_pidfd(pidfd: BorrowedFd<'_>, nstypes: libc::c_int) -> io::Result<()> {
    // SAFETY: plain integer arguments.
    let r = unsafe { libc::setns(pidfd.as_raw_fd(), nstypes) };
    unit_result(r as libc::c_long)
}

/// `pivot_root(".", ".")`: the current directory becomes the root; the old
/// root is stacked on top of it, to be detached with `umount2(".", MNT_DETACH)`.
pub fn pivot_root_here() -> io::Result<()> {
    // SAFETY: "." is a valid C string.
    let r = unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) };
    unit_result(r)
}

// --- quotas -------------------------------------------------------------

/// `PRJQUOTA`: project quotas.
pub const PRJQUOTA: u32 = 2;
const Q_GETINFO: u32 = 0x80_0005;
const Q_GETQUOTA: u32 = 0x80_0007;
const Q_SETQUOTA: u32 = 0x80_0008;
/// `QIF_BLIMITS | QIF_ILIMITS`.
const QIF_LIMITS: u32 = 1 | 4;

fn qcmd(cmd: u32, kind: u32) -> libc::c_int {
    ((cmd << 8) | (kind & 0xff)) as libc::c_int
}

/// `struct if_dqblk` of `linux/quota.h`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct DiskQuota {
    /// Hard limit in 1 KiB blocks.
    pub bhardlimit: u64,
    /// Soft limit in 1 KiB blocks.
    pub bsoftlimit: u64,
    /// Bytes in use.
    pub curspace: u64,
    /// Hard limit on inodes.
    pub ihardlimit: u64,
    /// Soft limit on inodes.
    pub isoftlimit: u64,
    /// Inodes in use.
    pub curinodes: u64,
    /// Grace period end for blocks.
    pub btime: u64,
    /// Grace period end for inodes.
    pub itime: u64,
    /// Which fields are valid (`QIF_*`).
    pub valid: u32,
}

/// `struct if_dqinfo` of `linux/quota.h`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct QuotaInfo {
    bgrace: u64,
    igrace: u64,
    flags: u32,
    valid: u32,
}

fn quotactl_fd(fs: BorrowedFd<'_>, cmd: libc::c_int, id: u32, addr: *mut libc::c_void) -> i64 {
    // SAFETY: `addr` points to a structure of the type `cmd` expects
    // (checked by the callers below) or is null.
    unsafe { libc::syscall(libc::SYS_quotactl_fd, fs.as_raw_fd(), cmd, id, addr) }
}

/// `Q_GETINFO` for project quotas: succeeds when the file system has them
/// switched on.
pub fn project_quota_info(fs: BorrowedFd<'_>) -> io::Result<()> {
    let mut info = QuotaInfo::default();
    let r = quotactl_fd(
        fs,
        qcmd(Q_GETINFO, PRJQUOTA),
        0,
        &mut info as *mut QuotaInfo as *mut libc::c_void,
    );
    unit_result(r)
}

/// `Q_SETQUOTA`: block and inode limits for project `id`.
pub fn set_project_quota(
    fs: BorrowedFd<'_>,
    id: u32,
    block_kib: u64,
    inodes: u64,
) -> io::Result<()> {
    let mut q = DiskQuota {
        bhardlimit: block_kib,
        bsoftlimit: block_kib,
        ihardlimit: inodes,
        isoftlimit: inodes,
        valid: QIF_LIMITS,
        ..DiskQuota::default()
    };
    let r = quotactl_fd(
        fs,
        qcmd(Q_SETQUOTA, PRJQUOTA),
        id,
        &mut q as *mut DiskQuota as *mut libc::c_void,
    );
    unit_result(r)
}

/// `Q_GETQUOTA`: limits and usage of project `id`.
pub fn get_project_quota(fs: BorrowedFd<'_>, id: u32) -> io::Result<DiskQuota> {
    let mut q = DiskQuota::default();
    let r = quotactl_fd(
        fs,
        qcmd(Q_GETQUOTA, PRJQUOTA),
        id,
        &mut q as *mut DiskQuota as *mut libc::c_void,
    );
    unit_result(r).map(|()| q)
}

/// `struct fsxattr` of `linux/fs.h` (`FS_IOC_FSGETXATTR`/`FSSETXATTR`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct FsXattr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

const FS_XFLAG_PROJINHERIT: u32 = 0x200;
mod xattr_ioctls {
    use super::FsXattr;
    nix::ioctl_read!(fs_ioc_fsgetxattr, b'X', 31, FsXattr);
    nix::ioctl_write_ptr!(fs_ioc_fssetxattr, b'X', 32, FsXattr);
}
use xattr_ioctls::{fs_ioc_fsgetxattr, fs_ioc_fssetxattr};

/// Puts the directory open at `dir` into project `id`, with
/// `FS_XFLAG_PROJINHERIT` so that everything made inside inherits it.
pub fn set_project(dir: BorrowedFd<'_>, id: u32) -> io::Result<()> {
    let mut attr = FsXattr::default();
    // SAFETY: attr is a valid fsxattr for the kernel to fill.
    unsafe { fs_ioc_fsgetxattr(dir.as_raw_fd(), &mut attr) }.map_err(io::Error::from)?;
    attr.projid = id;
    attr.xflags |= FS_XFLAG_PROJINHERIT;
    // SAFETY: attr is a valid fsxattr for the kernel to read.
    unsafe { fs_ioc_fssetxattr(dir.as_raw_fd(), &attr) }.map_err(io::Error::from)?;
    Ok(())
}

// --- loop devices -------------------------------------------------------

const LOOP_CTL_GET_FREE: libc::Ioctl = 0x4C82;
const LOOP_CONFIGURE: libc::Ioctl = 0x4C0A;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64` of `linux/loop.h`.
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

/// `struct loop_config` of `linux/loop.h`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// Binds `backing` to a free loop device (autoclear: the device frees
/// itself when its last user goes). Returns the device path and the open
/// device; keep it open until the mount that uses it is made.
pub fn attach_loop(backing: BorrowedFd<'_>) -> io::Result<(String, std::fs::File)> {
    let control = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")?;
    for _ in 0..8 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let path = format!("/dev/loop{n}");
        let dev = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)?;
        // SAFETY: LoopConfig is plain old data; all-zero is a valid value.
        let mut config: LoopConfig = unsafe { std::mem::zeroed() };
        config.fd = backing.as_raw_fd() as u32;
        config.info.flags = LO_FLAGS_AUTOCLEAR;
        // SAFETY: config is a valid loop_config for the kernel to read.
        let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &config) };
        if r == 0 {
            return Ok((path, dev));
        }
        let e = io::Error::last_os_error();
        // Another process took the device between GET_FREE and CONFIGURE.
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(e);
        }
    }
    Err(io::Error::from_raw_os_error(libc::EBUSY))
}
