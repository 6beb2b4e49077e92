//! Running the external programs the build needs, with errors that say what to install.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Debian package that provides a program, for "not found" errors.
fn package_of(program: &str) -> &'static str {
    match program {
        "mkfs.ext4" | "mke2fs" | "e2fsck" => "e2fsprogs",
        "mkfs.vfat" | "mkfs.fat" => "dosfstools",
        "mcopy" | "mmd" | "mdir" => "mtools",
        "grub-mkimage" => "grub-common (and grub-efi-amd64-bin for the modules)",
        "syslinux" => "syslinux",
        "qemu-img" => "qemu-utils",
        "tar" => "tar",
        "ldd" => "libc-bin",
        "busybox" => "busybox-static",
        _ => "(unknown package)",
    }
}

/// Fails with an install hint unless `program` is on PATH.
pub fn require(program: &str) -> Result<()> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    if !found {
        bail!(
            "`{program}` not found on PATH; install the Debian package `{}`",
            package_of(program)
        );
    }
    Ok(())
}

/// Runs a command, returning stdout; on failure the error shows the command line, the exit
/// status and stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .with_context(|| format!("could not start {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Fails unless `path` exists and is a regular file, naming `what` it should be.
pub fn require_file(path: &Path, what: &str) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => bail!("{what}: {} is not a regular file", path.display()),
        Err(e) => bail!("{what}: {}: {e}", path.display()),
    }
}

/// Hex SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("read {}", path.display()))?;
    Ok(hex::encode(h.finalize()))
}
