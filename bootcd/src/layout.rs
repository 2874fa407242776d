//! Where things are on the CD and in its initramfs (DESIGN.md §3).

/// Kernel, on the ISO.
pub const ISO_KERNEL: &str = "boot/vmlinuz";
/// The signed payload: gzip'd newc cpio.
pub const ISO_INITRD: &str = "boot/initrd.img";
/// The per-node area: [`NODE_AREA_SIZE`] bytes, zeros in the signed image.
pub const ISO_NODE_AREA: &str = "boot/nodecfg.img";
/// GRUB's configuration (UEFI), loaded by the early config built into BOOTX64.EFI.
pub const ISO_GRUB_CFG: &str = "boot/grub/grub.cfg";
/// The FAT image holding `EFI/BOOT/BOOTX64.EFI` (El Torito EFI entry, and
/// the EFI system partition when the image is written to a disk).
pub const ISO_EFI_IMAGE: &str = "boot/efi.img";
pub const ISO_ISOLINUX_DIR: &str = "isolinux";
/// Copies of what the initramfs carries, for `bootcd show` and people.
pub const ISO_CD_INFO: &str = "plnode/cd.toml";
pub const ISO_ROOT_JSON: &str = "plnode/root.json";
pub const ISO_CA_PEM: &str = "plnode/ca.pem";

/// Size of the per-node area.
pub const NODE_AREA_SIZE: usize = 64 * 1024;

/// In the initramfs.
pub const INITRAMFS_CD_INFO: &str = "etc/plnode/cd.toml";
pub const INITRAMFS_CA_PEM: &str = "etc/plnode/ca.pem";
pub const INITRAMFS_ROOT_JSON: &str = "etc/plnode/root.json";
/// Files here come from the per-node area: unsigned, per node.
pub const NODE_CONFIG_DIR: &str = "etc/plnode/node";

/// Volume label of the ISO.
pub const VOLUME_ID: &str = "PLNODE";

/// What both boot loaders pass to the kernel.
pub const KERNEL_CMDLINE: &str = "console=tty0 console=ttyS0,115200n8 panic=-1";
