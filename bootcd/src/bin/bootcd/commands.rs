//! What `bootcd` does for each command, through the library.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use bootcd::build::{build, BuildOptions, KernelChoice};
use bootcd::customize::customize;
use bootcd::inspect::{inspect, verify};
use pkgsign::PublicKey;

use crate::cli::Command;

pub fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Build(args) => {
            let args = *args;
            let started = Instant::now();
            let mut opts = BuildOptions::new(
                args.output,
                args.init,
                args.root_json,
                args.ca,
                args.server_urls,
                args.cd_version,
                mkimage::mtime_or_now(args.source_date_epoch),
            );
            opts.kernel = match (args.kernel_release, args.kernel, args.modules_dir) {
                (Some(release), _, _) => KernelChoice::Release(release),
                (None, Some(image), Some(modules_dir)) => {
                    KernelChoice::Paths { image, modules_dir }
                }
                _ => KernelChoice::Newest,
            };
            opts.extra_modules = args.modules;
            opts.signing_key = args.key;
            opts.node_config = args.node_config;
            opts.busybox = args.busybox;
            opts.mke2fs = args.mke2fs;
            opts.dropbear = !args.no_dropbear;
            let report = build(&opts).context("building the CD")?;
            println!(
                "{}: {} bytes (initramfs {} bytes, {} modules, kernel {}), CD {} in {:.1} s",
                report.iso.display(),
                report.iso_bytes,
                report.initrd_bytes,
                report.modules,
                report.cd_info.kernel_version,
                report.cd_info.cd_version,
                started.elapsed().as_secs_f64()
            );
            match &report.signature {
                Some(sig) => println!("{}: signature", sig.display()),
                None => println!("unsigned (built with --unsigned)"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify {
            image,
            keys,
            signature,
        } => {
            let trusted = keys
                .iter()
                .map(|k| {
                    PublicKey::load_public_or_secret(k)
                        .with_context(|| format!("loading key {}", k.display()))
                })
                .collect::<Result<Vec<_>>>()?;
            let verified = verify(&image, signature.as_deref(), &trusted)
                .with_context(|| format!("verifying {}", image.display()))?;
            println!("{}: signature OK (key {})", image.display(), verified.keyid);
            if verified.node_area.files.is_empty() {
                println!("per-node area: blank");
            } else {
                for line in &verified.node_area.description {
                    println!("per-node area (unsigned): {line}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Customize {
            base,
            node_config,
            output,
        } => {
            let started = Instant::now();
            let report = customize(&base, &node_config, &output).with_context(|| {
                format!(
                    "customising {} with {}",
                    base.display(),
                    node_config.display()
                )
            })?;
            for warning in &report.node_config.warnings {
                eprintln!("bootcd: warning: {}: {warning}", node_config.display());
            }
            println!(
                "{}: node {} ({}) in the per-node area as etc/plnode/node/{}, CD {}, in {:.3} s",
                report.output.display(),
                report.node_config.config.node_id,
                report.node_config.config.fqdn(),
                report.node_config.form.file_name(),
                report.cd_info.cd_version,
                started.elapsed().as_secs_f64()
            );
            match &report.signature {
                Some(sig) => println!(
                    "{}: copied (covers everything but the per-node area)",
                    sig.display()
                ),
                None => println!("the base image has no signature beside it; neither has the copy"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Show { image, json } => {
            let report = inspect(&image).with_context(|| format!("reading {}", image.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
                return Ok(ExitCode::SUCCESS);
            }
            let cd = &report.cd;
            println!(
                "image:        {} ({} bytes)",
                report.image.display(),
                report.size
            );
            println!("cd version:   {}", cd.cd_version);
            println!("built:        {}", cd.build_time);
            println!("kernel:       {}", cd.kernel_version);
            for (i, url) in cd.server_urls.iter().enumerate() {
                println!(
                    "{}{url}",
                    if i == 0 {
                        "servers:      "
                    } else {
                        "              "
                    }
                );
            }
            println!("CA sha256:    {}", cd.ca_sha256);
            match &report.root {
                Some(root) => println!(
                    "root:         version {}, expires {}, {} root key(s), threshold {}",
                    root.version,
                    root.expires,
                    root.root_keys.len(),
                    root.threshold
                ),
                None => println!(
                    "root:         version {} (root.json unreadable on the image)",
                    cd.root_version
                ),
            }
            match &report.node_area {
                Ok(area) if area.files.is_empty() => {
                    println!("node:         none (blank per-node area)")
                }
                Ok(area) => {
                    for line in &area.description {
                        println!("node:         {line}");
                    }
                }
                Err(e) => println!("node:         INVALID per-node area: {e}"),
            }
            match &report.signature {
                None => println!("signature:    none beside the image"),
                Some(sig) => {
                    let verdict = match (&sig.problem, sig.content_matches, sig.by_cd_root_key) {
                        (Some(problem), _, _) => format!("unusable: {problem}"),
                        (None, false, _) => "does NOT match the image".to_string(),
                        (None, true, true) => {
                            format!("matches, by key {} (a root key of this CD)", sig.keyid)
                        }
                        (None, true, false) => format!(
                            "matches, by key {} (check it with `bootcd verify --key`)",
                            sig.keyid
                        ),
                    };
                    println!("signature:    {}: {verdict}", sig.path.display());
                }
            }
            if report.node_area.is_err() {
                bail!("the per-node area of {} is not valid", image.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
