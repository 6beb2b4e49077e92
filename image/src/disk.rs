//! Assembles the bootable raw disk without root or loop devices: filesystems are built
//! into plain files (`mkfs.ext4 -d`, `mkfs.vfat` + mtools, `syslinux --install` on the FAT
//! file), the GPT comes from [`crate::gpt`], and the pieces are copied in at their offsets.
//!
//! Boot path, BIOS: gptmbr.bin (MBR) -> ESP boot sector (syslinux) -> ldlinux.sys ->
//! syslinux.cfg -> kernel. UEFI: firmware -> \EFI\BOOT\BOOTX64.EFI (syslinux.efi) -> the
//! same syslinux.cfg -> kernel. One ESP, one config, one kernel for both.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::bootcfg::{self, Cmdline};
use crate::gpt;
use crate::guid::Guid;
use crate::layout::{round_up, Layout, PartitionSpec, ATTR_LEGACY_BIOS_BOOTABLE, MIB};
use crate::tools;

pub const ESP_LABEL: &str = "NOMADOS-ESP";
pub const ROOT_LABEL: &str = "NOMADOS-ROOT";
pub const DATA_LABEL: &str = "NOMADOS-DATA";

/// Files from the syslinux packages.
#[derive(Debug, Clone)]
pub struct Bootloader {
    pub gptmbr: PathBuf,
    pub syslinux_efi: PathBuf,
    pub ldlinux_e64: PathBuf,
}

impl Default for Bootloader {
    fn default() -> Self {
        Bootloader {
            gptmbr: "/usr/lib/SYSLINUX/gptmbr.bin".into(),
            syslinux_efi: "/usr/lib/SYSLINUX.EFI/efi64/syslinux.efi".into(),
            ldlinux_e64: "/usr/lib/syslinux/modules/efi64/ldlinux.e64".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DiskOptions {
    pub staging: PathBuf,
    pub kernel: PathBuf,
    pub work_dir: PathBuf,
    /// Final raw image path (written atomically).
    pub out_raw: PathBuf,
    /// Seed for reproducible GUIDs; None = random (two disks never share a PARTUUID).
    pub seed: Option<String>,
    pub esp_min_bytes: u64,
    pub data_bytes: u64,
    pub read_only: bool,
    pub extra_args: Vec<String>,
    pub bootloader: Bootloader,
}

#[derive(Debug)]
pub struct DiskReport {
    pub layout: Layout,
    pub cmdline: String,
    pub rootfs_used_bytes: u64,
}

/// Size of the root ext4: content plus a fifth for metadata (inode tables, journal,
/// directories) plus 32 MiB of headroom, in whole MiB.
pub fn root_fs_size(used: u64) -> u64 {
    round_up(used + used / 5 + 32 * MIB, MIB)
}

/// Size of the ESP: at least `min`, and room for its files plus 25% and 4 MiB.
pub fn esp_size(min: u64, files: u64) -> u64 {
    round_up(min.max(files + files / 4 + 4 * MIB), MIB)
}

/// Bytes a directory tree takes on ext4 (4 KiB blocks, one block per dir and long link).
pub fn tree_usage(root: &Path) -> Result<u64> {
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        total += 4096;
        for ent in std::fs::read_dir(&d).with_context(|| format!("read {}", d.display()))? {
            let ent = ent?;
            let md = ent.path().symlink_metadata()?;
            if md.is_dir() {
                stack.push(ent.path());
            } else if md.is_file() {
                total += round_up(md.len(), 4096);
            } else {
                total += 4096;
            }
        }
    }
    Ok(total)
}

fn guid(seed: &Option<String>, purpose: &str) -> Result<Guid> {
    Ok(match seed {
        Some(s) => Guid::derived(s, purpose),
        None => Guid::random().context("read /dev/urandom")?,
    })
}

pub fn build(o: &DiskOptions, progress: &dyn Fn(&str)) -> Result<DiskReport> {
    for p in ["mkfs.ext4", "mkfs.vfat", "mcopy", "mmd", "syslinux"] {
        tools::require(p)?;
    }
    tools::require_file(&o.kernel, "kernel (bzImage)")?;
    tools::require_file(
        &o.bootloader.gptmbr,
        "syslinux gptmbr.bin (package syslinux-common)",
    )?;
    tools::require_file(
        &o.bootloader.syslinux_efi,
        "syslinux.efi (package syslinux-efi)",
    )?;
    tools::require_file(
        &o.bootloader.ldlinux_e64,
        "ldlinux.e64 (package syslinux-efi)",
    )?;
    std::fs::create_dir_all(&o.work_dir)
        .with_context(|| format!("create {}", o.work_dir.display()))?;

    let used = tree_usage(&o.staging)?;
    let root_bytes = root_fs_size(used);
    let esp_files = [
        &o.kernel,
        &o.bootloader.syslinux_efi,
        &o.bootloader.ldlinux_e64,
    ]
    .iter()
    .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
    .sum::<u64>()
        + 512 * 1024; // ldlinux.sys + ldlinux.c32 + config
    let esp_bytes = esp_size(o.esp_min_bytes, esp_files);

    let layout = Layout::plan(
        guid(&o.seed, "disk")?,
        &[
            PartitionSpec {
                name: ESP_LABEL.into(),
                type_guid: Guid::ESP,
                uuid: guid(&o.seed, "esp")?,
                attributes: ATTR_LEGACY_BIOS_BOOTABLE,
                min_bytes: esp_bytes,
            },
            PartitionSpec {
                name: ROOT_LABEL.into(),
                type_guid: Guid::LINUX_ROOT_X86_64,
                uuid: guid(&o.seed, "root")?,
                attributes: 0,
                min_bytes: root_bytes,
            },
            PartitionSpec {
                name: DATA_LABEL.into(),
                type_guid: Guid::LINUX_DATA,
                uuid: guid(&o.seed, "data")?,
                attributes: 0,
                min_bytes: o.data_bytes,
            },
        ],
    )
    .map_err(anyhow::Error::msg)?;
    let esp = &layout.partitions[0];
    let root = &layout.partitions[1];
    let data = &layout.partitions[2];

    let cmdline = Cmdline {
        root_partuuid: root.uuid,
        read_only: o.read_only,
        extra: o.extra_args.clone(),
    }
    .render()
    .map_err(anyhow::Error::msg)?;

    progress(&format!(
        "root filesystem: ext4 {} MiB ({} MiB of content)",
        root.size_bytes() / MIB,
        used / MIB
    ));
    let root_img = o.work_dir.join("root.ext4");
    mkfs_ext4(
        &root_img,
        root.size_bytes(),
        ROOT_LABEL,
        guid(&o.seed, "rootfs")?,
        Some(&o.staging),
    )?;

    progress(&format!(
        "data filesystem: ext4 {} MiB, label {DATA_LABEL}",
        data.size_bytes() / MIB
    ));
    let data_img = o.work_dir.join("data.ext4");
    mkfs_ext4(
        &data_img,
        data.size_bytes(),
        DATA_LABEL,
        guid(&o.seed, "datafs")?,
        None,
    )?;

    progress(&format!(
        "ESP: FAT32 {} MiB with syslinux (BIOS) and syslinux.efi (UEFI)",
        esp.size_bytes() / MIB
    ));
    let esp_img = o.work_dir.join("esp.vfat");
    let cfg = bootcfg::syslinux_cfg(&cmdline);
    build_esp(
        &esp_img,
        esp.size_bytes(),
        esp.first_lba,
        &o.seed,
        &o.kernel,
        &o.bootloader,
        &cfg,
        &o.work_dir,
    )?;

    progress(&format!(
        "disk: GPT, {} MiB, writing {}",
        layout.size_bytes / MIB,
        o.out_raw.display()
    ));
    let mbr_code = std::fs::read(&o.bootloader.gptmbr)
        .with_context(|| format!("read {}", o.bootloader.gptmbr.display()))?;
    let table = gpt::encode(&layout, Some(&mbr_code)).map_err(anyhow::Error::msg)?;
    let tmp = o.out_raw.with_extension("raw.tmp");
    {
        let _ = std::fs::remove_file(&tmp);
        let f = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&tmp)
            .with_context(|| format!("create {}", tmp.display()))?;
        f.set_len(layout.size_bytes)?;
        f.write_all_at(&table.head, 0)?;
        f.write_all_at(&table.tail, table.tail_offset)?;
        for (img, part) in [(&esp_img, esp), (&root_img, root), (&data_img, data)] {
            copy_sparse(img, &f, part.offset_bytes(), part.size_bytes())
                .with_context(|| format!("copy {} into {}", img.display(), tmp.display()))?;
        }
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &o.out_raw)
        .with_context(|| format!("rename {} to {}", tmp.display(), o.out_raw.display()))?;
    for p in [&esp_img, &root_img, &data_img] {
        let _ = std::fs::remove_file(p);
    }
    Ok(DiskReport {
        layout,
        cmdline,
        rootfs_used_bytes: used,
    })
}

fn mkfs_ext4(
    img: &Path,
    bytes: u64,
    label: &str,
    uuid: Guid,
    content: Option<&Path>,
) -> Result<()> {
    let _ = std::fs::remove_file(img);
    File::create(img)?.set_len(bytes)?;
    let mut c = Command::new("mkfs.ext4");
    c.args([
        "-q", "-F", "-t", "ext4", "-b", "4096", "-m", "0", "-L", label,
    ])
    .arg("-U")
    .arg(uuid.to_string())
    // Files from a non-root build would otherwise belong to the builder's uid.
    .args(["-E", "root_owner=0:0"]);
    if let Some(dir) = content {
        c.arg("-d").arg(dir);
    }
    c.arg(img);
    // Reproducible timestamps when the caller asks for them.
    if let Some(t) = std::env::var_os("SOURCE_DATE_EPOCH") {
        c.env("E2FSPROGS_FAKE_TIME", t);
    }
    tools::run(&mut c).with_context(|| format!("creating the {label} filesystem"))?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn build_esp(
    img: &Path,
    bytes: u64,
    first_lba: u64,
    seed: &Option<String>,
    kernel: &Path,
    bl: &Bootloader,
    cfg: &str,
    work: &Path,
) -> Result<()> {
    let _ = std::fs::remove_file(img);
    File::create(img)?.set_len(bytes)?;
    let volid = &guid(seed, "esp-volid")?.to_string()[..8];
    tools::run(
        Command::new("mkfs.vfat")
            .args([
                "-F", "32", "-S", "512", "-s", "1", "-n", ESP_LABEL, "-i", volid,
            ])
            // Hidden sectors = partition offset: the syslinux boot sector adds it to find
            // ldlinux.sys on the disk.
            .arg("-h")
            .arg(first_lba.to_string())
            .arg(img),
    )
    .context("creating the ESP")?;

    let cfg_path = work.join("syslinux.cfg");
    std::fs::write(&cfg_path, cfg)?;
    let i = img.display().to_string();
    let mtools = |args: &[&str]| -> Result<()> {
        tools::run(
            Command::new(args[0])
                .args(["-i", &i])
                .args(&args[1..])
                .env("MTOOLS_SKIP_CHECK", "1"),
        )
        .map(|_| ())
    };
    mtools(&["mmd", "::/EFI", "::/EFI/BOOT", "::/nomados"])?;
    let k = kernel.display().to_string();
    let c = cfg_path.display().to_string();
    let e = bl.syslinux_efi.display().to_string();
    let l = bl.ldlinux_e64.display().to_string();
    mtools(&["mcopy", &k, &format!("::{}", bootcfg::KERNEL_ON_ESP)])?;
    // BIOS syslinux finds /syslinux.cfg; syslinux.efi looks next to itself first.
    mtools(&["mcopy", &c, "::/syslinux.cfg"])?;
    mtools(&["mcopy", &c, "::/EFI/BOOT/syslinux.cfg"])?;
    mtools(&["mcopy", &e, "::/EFI/BOOT/BOOTX64.EFI"])?;
    mtools(&["mcopy", &l, "::/EFI/BOOT/ldlinux.e64"])?;
    // syslinux (the mtools flavour) writes the boot sector and ldlinux.sys/.c32 into the
    // FAT image file: no mount, no root.
    tools::run(
        Command::new("syslinux")
            .arg("--install")
            .arg(img)
            .env("MTOOLS_SKIP_CHECK", "1"),
    )
    .context("installing syslinux on the ESP")?;
    Ok(())
}

/// Copies `src` to `dst` at `offset`, skipping all-zero blocks so the raw image stays
/// sparse (the destination is freshly truncated, so skipped blocks read as zero).
fn copy_sparse(src: &Path, dst: &File, offset: u64, max: u64) -> Result<()> {
    let mut f = File::open(src)?;
    let len = f.metadata()?.len();
    if len > max {
        bail!(
            "{} is {len} bytes, larger than its {max}-byte partition",
            src.display()
        );
    }
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    f.seek(SeekFrom::Start(0))?;
    loop {
        let n = read_full(&mut f, &mut buf)?;
        if n == 0 {
            break;
        }
        for (i, chunk) in buf[..n].chunks(4096).enumerate() {
            if chunk.iter().any(|&b| b != 0) {
                dst.write_all_at(chunk, offset + pos + (i * 4096) as u64)?;
            }
        }
        pos += n as u64;
    }
    Ok(())
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filesystem_sizes_are_whole_mib_with_headroom() {
        assert_eq!(root_fs_size(0), 32 * MIB);
        let s = root_fs_size(100 * MIB);
        assert_eq!(s % MIB, 0);
        assert!(s >= 100 * MIB + 20 * MIB + 32 * MIB);
        assert_eq!(esp_size(64 * MIB, 10 * MIB), 64 * MIB);
        let big = esp_size(64 * MIB, 80 * MIB);
        assert!(big >= 100 * MIB && big.is_multiple_of(MIB), "{big}");
    }

    #[test]
    fn copy_sparse_places_data_and_keeps_zero_blocks_holes() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        let mut data = vec![0u8; 3 * 4096];
        data[0] = 1;
        data[2 * 4096 + 5] = 7;
        std::fs::write(&src, &data).unwrap();
        let dst_path = d.path().join("dst");
        let dst = File::create(&dst_path).unwrap();
        dst.set_len(16 * MIB).unwrap();
        copy_sparse(&src, &dst, MIB, MIB).unwrap();
        drop(dst);
        let out = std::fs::read(&dst_path).unwrap();
        assert_eq!(&out[MIB as usize..MIB as usize + data.len()], &data[..]);
        assert!(out[..MIB as usize].iter().all(|&b| b == 0));
        let dst = OpenOptions::new().write(true).open(&dst_path).unwrap();
        assert!(
            copy_sparse(&src, &dst, 0, 4096).is_err(),
            "too big for partition"
        );
    }
}
