//! `bootcd build`: inputs checked → initramfs → ISO → signature, in a
//! private work directory beside the output; the ISO and its `.sig` are
//! renamed into place only when everything succeeded.

use std::fs;
use std::path::{Path, PathBuf};

use config::cd::CdInfo;
use config::node::ServerUrl;
use config::Timestamp;
use mkimage::archive::Mtime;
use mkimage::kernel::{Kernel, KernelError};
use mkimage::kmod::{load_index, ModuleError, ModuleSet, NODE_MODULES};
use pkgsign::keys::KeyError;
use pkgsign::metadata::{RoleType, Root};
use pkgsign::SecretKey;
use sha2::{Digest, Sha256};

use crate::initramfs::{self, InitramfsContent, InitramfsError};
use crate::isobuild::{self, BootLoaders, IsoBuildError, IsoContent};
use crate::nodecfg::{AreaError, NodeConfigFile};
use crate::signature::{self, SignatureError};
use crate::tools::ToolError;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Modules(#[from] ModuleError),
    #[error("signing key: {0}")]
    Key(#[from] KeyError),
    #[error("root metadata {}: {reason}", path.display())]
    RootJson { path: PathBuf, reason: String },
    #[error("boot server CA {}: {reason}", path.display())]
    Ca { path: PathBuf, reason: String },
    #[error("CD version {0:?}: use letters, digits and . _ + - (starting with a letter or digit)")]
    CdVersion(String),
    #[error("no boot server URL given (--server-url)")]
    NoServer,
    #[error(transparent)]
    NodeConfig(#[from] AreaError),
    #[error(transparent)]
    Initramfs(#[from] InitramfsError),
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(transparent)]
    Iso(#[from] IsoBuildError),
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("{}: {source}", path.display())]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn output_err(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Output {
        path: path.to_path_buf(),
        source,
    }
}

/// Which kernel goes on the CD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelChoice {
    /// The newest Debian kernel in /boot (installed if there is none).
    Newest,
    /// `uname -r` of a kernel in /boot and /lib/modules.
    Release(String),
    /// An image and its module directory.
    Paths {
        image: PathBuf,
        modules_dir: PathBuf,
    },
}

/// Everything `bootcd build` takes.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub output: PathBuf,
    /// The static init binary.
    pub init: PathBuf,
    /// Trusted root metadata of the repository (`REPO/metadata/root.json`).
    pub root_json: PathBuf,
    /// Boot server CA certificate (PEM).
    pub ca: PathBuf,
    pub server_urls: Vec<ServerUrl>,
    pub cd_version: String,
    pub kernel: KernelChoice,
    /// Modules beyond [`NODE_MODULES`].
    pub extra_modules: Vec<String>,
    /// Signs `OUTPUT.sig` with this pkgsign key; `None` builds unsigned.
    pub signing_key: Option<PathBuf>,
    /// Stamped into the per-node area of this build.
    pub node_config: Option<PathBuf>,
    /// `SOURCE_DATE_EPOCH`: file times and the CD's build time.
    pub mtime: Mtime,
    pub busybox: PathBuf,
    pub mke2fs: PathBuf,
    pub dropbear: bool,
}

impl BuildOptions {
    /// Defaults for everything but the required inputs.
    pub fn new(
        output: PathBuf,
        init: PathBuf,
        root_json: PathBuf,
        ca: PathBuf,
        server_urls: Vec<ServerUrl>,
        cd_version: String,
        mtime: Mtime,
    ) -> BuildOptions {
        BuildOptions {
            output,
            init,
            root_json,
            ca,
            server_urls,
            cd_version,
            kernel: KernelChoice::Newest,
            extra_modules: Vec::new(),
            signing_key: None,
            node_config: None,
            mtime,
            busybox: PathBuf::from(mkimage::busybox::DEFAULT_BUSYBOX),
            mke2fs: PathBuf::from("/usr/sbin/mke2fs"),
            dropbear: true,
        }
    }
}

/// What a build made.
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub iso: PathBuf,
    pub signature: Option<PathBuf>,
    pub iso_bytes: u64,
    pub initrd_bytes: u64,
    pub modules: usize,
    pub cd_info: CdInfo,
}

/// Reads the root metadata and checks it is signed by a threshold of its own root keys.
pub fn load_root(path: &Path) -> Result<(Vec<u8>, Root), BuildError> {
    let err = |reason: String| BuildError::RootJson {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = fs::read(path).map_err(|e| err(e.to_string()))?;
    let (envelope, root) =
        pkgsign::metadata::parse_unverified::<Root>(&bytes).map_err(|e| err(e.to_string()))?;
    let keyring = root
        .keyring(RoleType::Root)
        .map_err(|e| err(e.to_string()))?;
    envelope
        .check_threshold(&keyring)
        .map_err(|e| err(e.to_string()))?;
    Ok((bytes, root))
}

/// Reads the CA certificate; returns the PEM bytes and the SHA-256 of its DER.
pub fn load_ca(path: &Path) -> Result<(Vec<u8>, String), BuildError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let err = |reason: String| BuildError::Ca {
        path: path.to_path_buf(),
        reason,
    };
    let pem = fs::read(path).map_err(|e| err(e.to_string()))?;
    let mut certs = CertificateDer::pem_slice_iter(&pem);
    let first = match certs.next() {
        Some(Ok(cert)) => cert,
        Some(Err(e)) => return Err(err(format!("not a PEM certificate: {e}"))),
        None => return Err(err("holds no PEM CERTIFICATE block".into())),
    };
    if certs.next().is_some() {
        return Err(err(
            "holds more than one certificate; give exactly the boot server CA".into(),
        ));
    }
    Ok((pem.clone(), hex::encode(Sha256::digest(first.as_ref()))))
}

fn find_kernel(choice: &KernelChoice) -> Result<Kernel, KernelError> {
    match choice {
        KernelChoice::Newest => Kernel::find_or_install_debian(),
        KernelChoice::Release(release) => {
            Kernel::find(Some(release), Path::new("/boot"), Path::new("/lib/modules"))
        }
        KernelChoice::Paths { image, modules_dir } => Kernel::from_paths(image, modules_dir),
    }
}

/// Builds the CD; see the module documentation.
pub fn build(opts: &BuildOptions) -> Result<BuildReport, BuildError> {
    // Check every input before the slow work, so bad input fails fast.
    if !pkgsign::metadata::valid_name(&opts.cd_version) {
        return Err(BuildError::CdVersion(opts.cd_version.clone()));
    }
    if opts.server_urls.is_empty() {
        return Err(BuildError::NoServer);
    }
    let key = opts
        .signing_key
        .as_deref()
        .map(SecretKey::load)
        .transpose()?;
    let (root_bytes, root) = load_root(&opts.root_json)?;
    let (ca_pem, ca_sha256) = load_ca(&opts.ca)?;
    let node_config = opts
        .node_config
        .as_deref()
        .map(NodeConfigFile::load)
        .transpose()?;
    initramfs::check_init(&opts.init)?;
    let kernel = find_kernel(&opts.kernel)?;
    let index = load_index(&kernel.modules_dir)?;
    let wanted: Vec<&str> = NODE_MODULES
        .iter()
        .copied()
        .chain(opts.extra_modules.iter().map(String::as_str))
        .collect();
    let module_set = ModuleSet::resolve(&index, &wanted)?;
    let loaders = BootLoaders::debian()?;

    let cd_info = CdInfo {
        cd_version: opts.cd_version.clone(),
        build_time: Timestamp::from_unix(i64::from(opts.mtime.0)),
        server_urls: opts.server_urls.clone(),
        kernel_version: kernel.release.clone(),
        root_version: root.version,
        ca_sha256,
    };
    let cd_info_toml = cd_info.to_toml();

    let parent = match opts.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(output_err(&parent))?;
    let work = tempfile::Builder::new()
        .prefix(".bootcd-build-")
        .tempdir_in(&parent)
        .map_err(output_err(&parent))?;

    let tree = initramfs::initramfs_tree(&InitramfsContent {
        init: &opts.init,
        cd_info_toml: &cd_info_toml,
        ca_pem: &ca_pem,
        root_json: &root_bytes,
        modules: &index,
        module_set: &module_set,
        busybox: &opts.busybox,
        mke2fs: &opts.mke2fs,
        dropbear: opts.dropbear,
        cd_version: &opts.cd_version,
    })?;
    let initrd = work.path().join("initrd.img");
    let initrd_bytes = initramfs::write_initramfs(&tree, &initrd, opts.mtime)?;

    let iso = work.path().join("out.iso");
    let spinner = mkimage::progress::spinner("writing the ISO (xorriso)");
    isobuild::write_iso(
        &IsoContent {
            kernel_image: &kernel.image,
            initrd: &initrd,
            cd_info_toml: &cd_info_toml,
            root_json: &root_bytes,
            ca_pem: &ca_pem,
            title: format!("PlanetLab node CD {}", opts.cd_version),
            mtime: opts.mtime.0,
        },
        &loaders,
        work.path(),
        &iso,
    )?;
    spinner.finish_and_clear();
    if let Some(config) = &node_config {
        crate::customize::write_area(&iso, &config.encode(opts.mtime.0)?)?;
    }
    let signature = match &key {
        Some(key) => {
            let sig = signature::sign_iso(key, &iso)?;
            let path = work.path().join("out.iso.sig");
            fs::write(&path, sig.to_json()).map_err(output_err(&path))?;
            Some(path)
        }
        None => None,
    };

    let iso_bytes = fs::metadata(&iso).map_err(output_err(&iso))?.len();
    let final_sig = signature::signature_path(&opts.output);
    fs::rename(&iso, &opts.output).map_err(output_err(&opts.output))?;
    let signature = match signature {
        Some(path) => {
            fs::rename(&path, &final_sig).map_err(output_err(&final_sig))?;
            Some(final_sig)
        }
        None => {
            // A signature left from an earlier build would not match.
            match fs::remove_file(&final_sig) {
                Ok(()) => {
                    tracing::info!(path = %final_sig.display(), "removed the old signature (this build is unsigned)")
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(output_err(&final_sig)(e)),
            }
            None
        }
    };
    Ok(BuildReport {
        iso: opts.output.clone(),
        signature,
        iso_bytes,
        initrd_bytes,
        modules: module_set.len(),
        cd_info,
    })
}
