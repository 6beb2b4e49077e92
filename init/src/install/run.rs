//! `nomad-init install`: the whole install, step by step, each printed on stdout (PID 1
//! runs it as a child and shows its lines on the console).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;

use super::options::{self, ImageSource};
use super::plan::{decide, inventory, Decision};

/// Exit codes of `nomad-init install`.
pub mod exit {
    pub const INSTALLED: i32 = 0;
    pub const FAILED: i32 = 1;
    /// The disk holds something and wipe was not given (or it can never be written).
    pub const REFUSED: i32 = 3;
}

#[derive(Debug, Clone, clap::Args)]
pub struct InstallArgs {
    /// The whole disk to install to (e.g. /dev/vda).
    #[arg(long)]
    pub target: PathBuf,
    /// The image: an http(s) URL (with --sha256), `iso` (the booted ISO's), or `iso:/path`.
    #[arg(long, default_value = "iso")]
    pub image: String,
    /// SHA-256 (hex) of the file at the URL.
    #[arg(long)]
    pub sha256: Option<String>,
    /// Overwrite partitions and filesystems found on the disk.
    #[arg(long)]
    pub wipe: bool,
    /// GPT name (and filesystem label) of the data partition.
    #[arg(long, default_value = "NOMADOS-DATA")]
    pub data_label: String,
    /// Where devices and sysfs are (tests).
    #[arg(long, default_value = "/dev", hide = true)]
    pub dev_dir: PathBuf,
    #[arg(long, default_value = "/sys/class/block", hide = true)]
    pub sys_class_block: PathBuf,
}

/// Runs the install; returns the process exit code.
pub fn main(a: &InstallArgs) -> i32 {
    match install(a) {
        Ok(code) => code,
        Err(e) => {
            println!("FAILED: {e:#}");
            exit::FAILED
        }
    }
}

fn install(a: &InstallArgs) -> anyhow::Result<i32> {
    let started = Instant::now();
    if !a.target.is_absolute() {
        anyhow::bail!(
            "--target {}: expected an absolute path like /dev/vda",
            a.target.display()
        );
    }
    let target = a.target.clone();
    let source =
        options::source(Some(&a.image), a.sha256.as_deref()).map_err(anyhow::Error::msg)?;
    println!("target {}", target.display());
    let facts = super::disk::facts(&target, &a.dev_dir, &a.sys_class_block)?;
    let found = inventory(&facts);
    println!(
        "{} is {} MiB; {}",
        target.display(),
        facts.bytes >> 20,
        if found.is_empty() {
            "blank".to_string()
        } else {
            format!("found {found}")
        }
    );
    let unmount = match decide(&facts, a.wipe, None) {
        Decision::Refuse(why) => {
            println!("REFUSED: {why}");
            return Ok(exit::REFUSED);
        }
        Decision::Write { unmount } => unmount,
    };
    if !facts.found.is_empty() || !facts.partitions.is_empty() {
        println!("nomados.install.wipe=1: overwriting {found}");
    }
    for m in &unmount {
        println!("unmounting {}", m.display());
        nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH)
            .with_context(|| format!("unmounting {}", m.display()))?;
    }
    let opened = match &source {
        ImageSource::Url { url, sha256 } => super::source::open_url(url, sha256)?,
        ImageSource::Iso(dev) => {
            super::source::open_iso(dev.as_deref(), &a.dev_dir, &a.sys_class_block)?
        }
    };
    println!(
        "writing {}{} to {}",
        opened.describe,
        opened
            .bytes
            .map(|b| format!(" ({} MiB)", b >> 20))
            .unwrap_or_default(),
        target.display()
    );
    let disk = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&target)
        .with_context(|| format!("opening {} for writing", target.display()))?;
    let w = super::write::write_image(
        opened.reader,
        &opened.sha256,
        opened.bytes,
        &disk,
        facts.bytes,
    )?;
    println!(
        "wrote and read back {} MiB{}",
        w.bytes >> 20,
        if w.compressed { " (from xz)" } else { "" }
    );
    if disk.metadata()?.is_file() {
        // An image file (tests): no kernel partitions to re-read.
        println!("done in {:.1} s", started.elapsed().as_secs_f64());
        return Ok(exit::INSTALLED);
    }
    let name = super::disk::kernel_name(&target)?;
    let part = super::write::finish_data(
        &disk,
        &name,
        &a.dev_dir,
        &a.sys_class_block,
        &a.data_label,
        Path::new("/run/nomados/install-data"),
    )?;
    disk.sync_all()?;
    println!(
        "data partition {} ready; NomadOS installed to {} in {:.1} s",
        part.display(),
        target.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(exit::INSTALLED)
}
