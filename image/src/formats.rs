//! Output formats converted from the raw disk, one per cloud/platform family.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cloudcheck::{self, GIB};
use crate::layout::{round_up, vhd_size, GPT_ARRAY_SECTORS, SECTOR};
use crate::{disk, gpt, tools};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Plain disk image (AWS import-snapshot, dd to metal).
    Raw,
    /// Compressed qcow2 (Proxmox, libvirt, OpenStack).
    Qcow2,
    /// streamOptimized VMDK (vSphere, AWS import-image).
    Vmdk,
    /// Fixed VHD, 1 MiB aligned (Azure).
    Vhd,
    /// tar.gz holding `disk.raw` grown to a whole GiB, GNU oldgnu sparse (GCP).
    Gcp,
}

pub const ALL: [Format; 5] = [
    Format::Raw,
    Format::Qcow2,
    Format::Vmdk,
    Format::Vhd,
    Format::Gcp,
];

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vhd => "vhd",
            Format::Gcp => "gcp",
        }
    }

    pub fn file_name(self) -> &'static str {
        match self {
            Format::Raw => "nomados.raw",
            Format::Qcow2 => "nomados.qcow2",
            Format::Vmdk => "nomados.vmdk",
            Format::Vhd => "nomados.vhd",
            Format::Gcp => "nomados.tar.gz",
        }
    }

    /// The command that turns `raw` into `dst` (None for raw itself).
    pub fn command(self, raw: &Path, dst: &Path) -> Option<(String, Vec<String>)> {
        let s = |p: &Path| p.display().to_string();
        let qemu = |extra: &[&str]| {
            let mut a: Vec<String> = ["convert", "-f", "raw"].map(String::from).to_vec();
            a.extend(extra.iter().map(|x| x.to_string()));
            a.push(s(raw));
            a.push(s(dst));
            Some(("qemu-img".to_string(), a))
        };
        match self {
            Format::Raw => None,
            Format::Qcow2 => qemu(&["-c", "-O", "qcow2"]),
            Format::Vmdk => qemu(&["-O", "vmdk", "-o", "subformat=streamOptimized"]),
            Format::Vhd => qemu(&["-O", "vpc", "-o", "subformat=fixed,force_size=on"]),
            Format::Gcp => {
                let dir = raw.parent().unwrap_or(Path::new("."));
                let name = raw
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                Some((
                    "tar".to_string(),
                    vec![
                        "--format=oldgnu".into(),
                        "-Sczf".into(),
                        s(dst),
                        "-C".into(),
                        s(dir),
                        // GCP requires the member to be called exactly disk.raw.
                        format!("--transform=s|^{}$|disk.raw|", regex_escape(&name)),
                        name,
                    ],
                ))
            }
        }
    }
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if ".[]*^$\\|".contains(c) {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}

/// Parses `all` or a comma-separated list (`raw,qcow2`); raw is always produced since every
/// other format is converted from it.
pub fn parse_list(s: &str) -> Result<Vec<Format>, String> {
    let s = s.trim();
    if s.is_empty() || s == "all" {
        return Ok(ALL.to_vec());
    }
    let mut out = vec![Format::Raw];
    for item in s.split(',').map(str::trim) {
        let f = match item {
            "raw" => Format::Raw,
            "qcow2" => Format::Qcow2,
            "vmdk" => Format::Vmdk,
            "vhd" => Format::Vhd,
            "gcp" | "tar.gz" => Format::Gcp,
            other => {
                return Err(format!(
                    "unknown format `{other}` in FORMATS; valid: all, raw, qcow2, vmdk, vhd, gcp (tar.gz)"
                ))
            }
        };
        if !out.contains(&f) {
            out.push(f);
        }
    }
    Ok(out)
}

/// The size GCE's `disk.raw` gets: the disk rounded up to a whole GiB.
pub fn gce_disk_size(raw_bytes: u64) -> u64 {
    round_up(raw_bytes, GIB)
}

/// Writes `dst`: a sparse copy of the disk image `raw` on a disk of `size` bytes, its GPT
/// moved to the new end (the data partition grows into the space on first boot).
pub fn grow_disk_copy(raw: &Path, dst: &Path, size: u64) -> Result<()> {
    let len = std::fs::metadata(raw)
        .with_context(|| format!("stat {}", raw.display()))?
        .len();
    let head_len = (2 + GPT_ARRAY_SECTORS) * SECTOR;
    let mut head = vec![0u8; head_len as usize];
    File::open(raw)
        .and_then(|mut f| f.read_exact(&mut head))
        .with_context(|| format!("read the GPT of {}", raw.display()))?;
    let table = gpt::grown(&head, size / SECTOR)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("growing {} to {size} bytes", raw.display()))?;
    let _ = std::fs::remove_file(dst);
    let f = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(dst)
        .with_context(|| format!("create {}", dst.display()))?;
    f.set_len(size)?;
    disk::copy_sparse(raw, &f, 0, len)?;
    // The old backup GPT would be a stale second table in the middle of the disk.
    let old_tail = (1 + GPT_ARRAY_SECTORS) * SECTOR;
    f.write_all_at(&vec![0u8; old_tail as usize], len - old_tail)?;
    f.write_all_at(&table.head, 0)?;
    f.write_all_at(&table.tail, table.tail_offset)?;
    f.sync_all()?;
    Ok(())
}

/// Reads back what a conversion wrote and checks the platform's rules on it
/// (see [`cloudcheck`]); raw and qcow2 have none beyond qemu-img's own.
pub fn verify(format: Format, path: &Path, raw_bytes: u64) -> Result<()> {
    match format {
        Format::Raw | Format::Qcow2 => Ok(()),
        Format::Vhd => cloudcheck::check_azure_vhd(path, raw_bytes).map(drop),
        Format::Vmdk => cloudcheck::check_stream_optimized_vmdk(path, raw_bytes).map(drop),
        Format::Gcp => cloudcheck::check_gce_tar(path, gce_disk_size(raw_bytes)).map(drop),
    }
}

/// Converts `raw` into `format` inside `out_dir`, atomically (temp name, then rename), and
/// checks the result with [`verify`] before it gets its final name.
pub fn convert(raw: &Path, format: Format, out_dir: &Path) -> Result<PathBuf> {
    let dst = out_dir.join(format.file_name());
    let Some(tmp_name) = format.file_name().strip_prefix("nomados") else {
        bail!("internal: odd file name");
    };
    let tmp = out_dir.join(format!(".tmp-nomados{tmp_name}"));
    let raw_bytes = std::fs::metadata(raw)?.len();
    if format == Format::Raw {
        return Ok(raw.to_path_buf());
    }
    if format == Format::Vhd && vhd_size(raw_bytes) != raw_bytes {
        bail!("raw image is {raw_bytes} bytes, not a whole MiB; Azure rejects it");
    }
    // GCE: tar a grown copy named disk.raw from a scratch directory.
    let gce_dir = out_dir.join(".tmp-gce");
    let source = if format == Format::Gcp {
        let _ = std::fs::remove_dir_all(&gce_dir);
        std::fs::create_dir(&gce_dir).with_context(|| format!("mkdir {}", gce_dir.display()))?;
        let disk = gce_dir.join("disk.raw");
        grow_disk_copy(raw, &disk, gce_disk_size(raw_bytes))?;
        disk
    } else {
        raw.to_path_buf()
    };
    let Some((prog, args)) = format.command(&source, &tmp) else {
        bail!("internal: no conversion command for {}", format.name());
    };
    tools::require(&prog)?;
    let _ = std::fs::remove_file(&tmp);
    let converted = tools::run(Command::new(&prog).args(&args))
        .with_context(|| format!("converting to {}", format.name()))
        .and_then(|_| verify(format, &tmp, raw_bytes));
    if format == Format::Gcp {
        let _ = std::fs::remove_dir_all(&gce_dir);
    }
    if let Err(e) = converted {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &dst).with_context(|| format!("rename to {}", dst.display()))?;
    Ok(dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_lists() {
        assert_eq!(parse_list("all").unwrap(), ALL.to_vec());
        assert_eq!(parse_list("").unwrap(), ALL.to_vec());
        assert_eq!(
            parse_list("qcow2").unwrap(),
            vec![Format::Raw, Format::Qcow2]
        );
        assert_eq!(
            parse_list("vhd, tar.gz,vhd").unwrap(),
            vec![Format::Raw, Format::Vhd, Format::Gcp]
        );
        let e = parse_list("qcow2,iso").unwrap_err();
        assert!(e.contains("`iso`") && e.contains("valid"), "{e}");
    }

    #[test]
    fn conversion_commands_match_each_platform_requirement() {
        let raw = Path::new("/o/nomados.raw");
        let dst = Path::new("/o/x");
        let args = |f: Format| f.command(raw, dst).unwrap().1.join(" ");
        assert!(Format::Raw.command(raw, dst).is_none());
        assert_eq!(
            args(Format::Qcow2),
            "convert -f raw -c -O qcow2 /o/nomados.raw /o/x"
        );
        assert!(args(Format::Vmdk).contains("-O vmdk -o subformat=streamOptimized"));
        assert!(args(Format::Vhd).contains("-O vpc -o subformat=fixed,force_size=on"));
        let (prog, gcp) = Format::Gcp.command(raw, dst).unwrap();
        assert_eq!(prog, "tar");
        assert_eq!(
            gcp,
            vec![
                "--format=oldgnu",
                "-Sczf",
                "/o/x",
                "-C",
                "/o",
                "--transform=s|^nomados\\.raw$|disk.raw|",
                "nomados.raw"
            ]
        );
    }
}
