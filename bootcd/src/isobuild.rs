//! The hybrid ISO: xorriso from Debian puts together
//!
//! - BIOS: isolinux (El Torito, and the isohybrid MBR for disks);
//! - UEFI: a GRUB image made with `grub-mkimage -O x86_64-efi` (modules and
//!   a small search-and-chain config built in) on a FAT image made with
//!   mtools, as the El Torito EFI entry and as the GPT's EFI partition;
//!
//! and our files. `grub-mkimage` rather than `grub-mkstandalone`: the latter
//! packs its modules into a tar with the current time, so two builds
//! differ; `grub-mkimage` output depends only on its inputs. Rather than
//! `grub-mkrescue`: it builds its own FAT image with the current time and
//! a random serial, and gives less control over what is on the CD.
//!
//! Reproducible: every staged file and directory gets the time stamp
//! `mtime`, xorriso and mtools get `SOURCE_DATE_EPOCH` (xorriso then derives
//! volume dates, UUID and GPT GUIDs from it), and the FAT serial is derived
//! from it too.

use std::fs::{self, File, FileTimes};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use crate::layout::*;
use crate::tools::{self, ToolError};

#[derive(Debug, thiserror::Error)]
pub enum IsoBuildError {
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> IsoBuildError + '_ {
    move |source| IsoBuildError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Boot loader files from Debian packages.
#[derive(Debug, Clone)]
pub struct BootLoaders {
    pub isolinux_bin: PathBuf,
    pub ldlinux_c32: PathBuf,
    pub isohybrid_mbr: PathBuf,
    pub grub_efi_modules: PathBuf,
}

impl BootLoaders {
    /// Debian's locations; a missing one names the package to install.
    pub fn debian() -> Result<BootLoaders, ToolError> {
        Ok(BootLoaders {
            isolinux_bin: tools::require_file(
                Path::new("/usr/lib/ISOLINUX/isolinux.bin"),
                "isolinux",
            )?,
            ldlinux_c32: tools::require_file(
                Path::new("/usr/lib/syslinux/modules/bios/ldlinux.c32"),
                "syslinux-common",
            )?,
            isohybrid_mbr: tools::require_file(
                Path::new("/usr/lib/ISOLINUX/isohdpfx.bin"),
                "isolinux",
            )?,
            grub_efi_modules: {
                let dir = PathBuf::from("/usr/lib/grub/x86_64-efi");
                tools::require_file(&dir.join("linux.mod"), "grub-efi-amd64-bin")?;
                dir
            },
        })
    }
}

/// What goes on the ISO.
#[derive(Debug, Clone)]
pub struct IsoContent<'a> {
    pub kernel_image: &'a Path,
    pub initrd: &'a Path,
    pub cd_info_toml: &'a str,
    pub root_json: &'a [u8],
    pub ca_pem: &'a [u8],
    /// Shown in the boot menus.
    pub title: String,
    /// `SOURCE_DATE_EPOCH`.
    pub mtime: u32,
}

/// Modules built into BOOTX64.EFI: everything the configs use, since the
/// ISO carries no GRUB module directory.
const GRUB_EFI_MODULES: &[&str] = &[
    "iso9660",
    "part_gpt",
    "part_msdos",
    "fat",
    "linux",
    "normal",
    "search",
    "search_fs_file",
    "configfile",
    "serial",
    "terminal",
    "echo",
    "test",
    "gzio",
    "all_video",
    "efi_gop",
    "efi_uga",
];

fn isolinux_cfg(title: &str) -> String {
    format!(
        "SERIAL 0 115200\nDEFAULT plnode\nPROMPT 0\nTIMEOUT 0\n\
         LABEL plnode\n  MENU LABEL {title}\n  KERNEL /{ISO_KERNEL}\n  INITRD /{ISO_INITRD},/{ISO_NODE_AREA}\n  APPEND {KERNEL_CMDLINE}\n"
    )
}

fn grub_cfg(title: &str) -> String {
    format!(
        "serial --unit=0 --speed=115200\nterminal_input serial console\nterminal_output serial console\n\
         set timeout=0\nset default=0\n\
         menuentry \"{title}\" {{\n  linux /{ISO_KERNEL} {KERNEL_CMDLINE}\n  initrd /{ISO_INITRD} /{ISO_NODE_AREA}\n}}\n"
    )
}

/// Built into BOOTX64.EFI: find the CD (or the disk it was written to) and
/// read its grub.cfg.
fn grub_early_cfg() -> String {
    format!(
        "search --no-floppy --file --set=root /{ISO_CD_INFO}\nset prefix=($root)/boot/grub\nconfigfile ($root)/{ISO_GRUB_CFG}\n"
    )
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), IsoBuildError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    fs::write(path, bytes).map_err(io_err(path))
}

fn copy(from: &Path, to: &Path) -> Result<(), IsoBuildError> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    fs::copy(from, to).map_err(io_err(from))?;
    Ok(())
}

/// Sets the modification time of `path` and, for a directory, of
/// everything below it.
fn stamp_tree(path: &Path, mtime: u32) -> Result<(), IsoBuildError> {
    let meta = fs::symlink_metadata(path).map_err(io_err(path))?;
    if meta.is_dir() {
        let mut children: Vec<PathBuf> = fs::read_dir(path)
            .map_err(io_err(path))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        children.sort();
        for child in children {
            stamp_tree(&child, mtime)?;
        }
    }
    let time = UNIX_EPOCH + Duration::from_secs(u64::from(mtime));
    let file = File::open(path).map_err(io_err(path))?;
    file.set_times(FileTimes::new().set_modified(time).set_accessed(time))
        .map_err(io_err(path))
}

fn epoch_env(command: &mut Command, mtime: u32) -> &mut Command {
    command
        .env("SOURCE_DATE_EPOCH", mtime.to_string())
        .env("TZ", "UTC")
        .env("LC_ALL", "C")
}

/// BOOTX64.EFI on a FAT image (`efi_img`).
fn efi_image(
    loaders: &BootLoaders,
    work: &Path,
    efi_img: &Path,
    mtime: u32,
) -> Result<(), IsoBuildError> {
    let early = work.join("grub-early.cfg");
    write(&early, grub_early_cfg().as_bytes())?;
    let bootx64 = work.join("BOOTX64.EFI");
    let mut mkimage = Command::new("grub-mkimage");
    mkimage
        .args(["-O", "x86_64-efi", "-p", "/boot/grub", "-d"])
        .arg(&loaders.grub_efi_modules)
        .arg("-c")
        .arg(&early)
        .arg("-o")
        .arg(&bootx64)
        .args(GRUB_EFI_MODULES);
    tools::run(epoch_env(&mut mkimage, mtime), "grub-common")?;
    stamp_tree(&bootx64, mtime)?;

    let efi_len = fs::metadata(&bootx64).map_err(io_err(&bootx64))?.len();
    const MIB: u64 = 1 << 20;
    let size = (efi_len + MIB / 2).div_ceil(MIB).max(2) * MIB;
    let file = File::create(efi_img).map_err(io_err(efi_img))?;
    file.set_len(size).map_err(io_err(efi_img))?;
    drop(file);
    let mut mformat = Command::new("mformat");
    mformat
        .arg("-i")
        .arg(efi_img)
        .args(["-T", &(size / 512).to_string(), "-h", "64", "-s", "32"])
        .args(["-N", &format!("{mtime:08X}"), "-v", "PLNODE_EFI", "::"]);
    tools::run(epoch_env(&mut mformat, mtime), "mtools")?;
    let mut mmd = Command::new("mmd");
    mmd.arg("-i").arg(efi_img).args(["::/EFI", "::/EFI/BOOT"]);
    tools::run(epoch_env(&mut mmd, mtime), "mtools")?;
    let mut mcopy = Command::new("mcopy");
    mcopy
        .args(["-m", "-i"])
        .arg(efi_img)
        .arg(&bootx64)
        .arg("::/EFI/BOOT/BOOTX64.EFI");
    tools::run(epoch_env(&mut mcopy, mtime), "mtools")?;
    Ok(())
}

/// Writes the ISO to `output` (a path in a private work area: the caller
/// renames it into place). `work` is a scratch directory.
pub fn write_iso(
    content: &IsoContent<'_>,
    loaders: &BootLoaders,
    work: &Path,
    output: &Path,
) -> Result<(), IsoBuildError> {
    let stage = work.join("iso");
    fs::create_dir_all(&stage).map_err(io_err(&stage))?;
    copy(content.kernel_image, &stage.join(ISO_KERNEL))?;
    copy(content.initrd, &stage.join(ISO_INITRD))?;
    write(&stage.join(ISO_NODE_AREA), &vec![0u8; NODE_AREA_SIZE])?;
    write(
        &stage.join(ISO_GRUB_CFG),
        grub_cfg(&content.title).as_bytes(),
    )?;
    write(&stage.join(ISO_CD_INFO), content.cd_info_toml.as_bytes())?;
    write(&stage.join(ISO_ROOT_JSON), content.root_json)?;
    write(&stage.join(ISO_CA_PEM), content.ca_pem)?;
    let isolinux = stage.join(ISO_ISOLINUX_DIR);
    copy(&loaders.isolinux_bin, &isolinux.join("isolinux.bin"))?;
    copy(&loaders.ldlinux_c32, &isolinux.join("ldlinux.c32"))?;
    write(
        &isolinux.join("isolinux.cfg"),
        isolinux_cfg(&content.title).as_bytes(),
    )?;
    efi_image(loaders, work, &stage.join(ISO_EFI_IMAGE), content.mtime)?;
    stamp_tree(&stage, content.mtime)?;

    let mut xorriso = Command::new("xorriso");
    xorriso
        .args(["-as", "mkisofs", "-quiet", "-o"])
        .arg(output)
        .args(["-V", VOLUME_ID, "-iso-level", "3", "-r", "-isohybrid-mbr"])
        .arg(&loaders.isohybrid_mbr)
        .args(["-c", &format!("{ISO_ISOLINUX_DIR}/boot.cat")])
        .args(["-b", &format!("{ISO_ISOLINUX_DIR}/isolinux.bin")])
        .args(["-no-emul-boot", "-boot-load-size", "4", "-boot-info-table"])
        .args([
            "-eltorito-alt-boot",
            "-e",
            ISO_EFI_IMAGE,
            "-no-emul-boot",
            "-isohybrid-gpt-basdat",
        ])
        .arg(&stage);
    tools::run(epoch_env(&mut xorriso, content.mtime), "xorriso")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_loaders_load_both_initrds_with_the_serial_console() {
        let iso = isolinux_cfg("t");
        assert!(
            iso.contains("INITRD /boot/initrd.img,/boot/nodecfg.img"),
            "{iso}"
        );
        assert!(iso.contains("console=ttyS0,115200n8") && iso.starts_with("SERIAL 0 115200"));
        let grub = grub_cfg("t");
        assert!(
            grub.contains("initrd /boot/initrd.img /boot/nodecfg.img"),
            "{grub}"
        );
        assert!(
            grub.contains("terminal_output serial console")
                && grub.contains("console=ttyS0,115200n8")
        );
    }
}
