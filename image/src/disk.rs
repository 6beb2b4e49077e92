//! Assembles the bootable raw disk without root or loop devices: filesystems are built
//! into plain files (`mkfs.ext4 -d`, `mkfs.vfat` + mtools, `syslinux --install` on the FAT
//! file), the GPT comes from [`crate::gpt`], and the pieces are copied in at their offsets.
//!
//! Boot path, BIOS: gptmbr.bin (MBR) -> ESP boot sector (syslinux) -> ldlinux.sys ->
//! /syslinux.cfg -> a slot's kernel. UEFI: firmware -> \EFI\BOOT\BOOTX64.EFI (GRUB, built
//! by `grub-mkimage`) -> \EFI\BOOT\grub.cfg -> the same kernel file. Two system slots
//! (A, B), each a root partition plus a kernel on the ESP; the image fills slot A and boots
//! it; B stays empty until the first upgrade (docs/image.md says why two loaders).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::bootcfg::{self, Cmdline, Entry, Slot};
use crate::gpt;
use crate::guid::Guid;
use crate::layout::{round_up, Layout, PartitionSpec, ATTR_LEGACY_BIOS_BOOTABLE, MIB};
use crate::tools;

pub const ESP_LABEL: &str = "NOMADOS-ESP";
/// The ext4 label of a slot's root filesystem (the same in both slots).
pub const ROOT_LABEL: &str = "NOMADOS-ROOT";
/// GPT partition names of the two slots' root partitions.
pub const ROOT_A_NAME: &str = "NOMADOS-ROOT-A";
pub const ROOT_B_NAME: &str = "NOMADOS-ROOT-B";
pub const DATA_LABEL: &str = "NOMADOS-DATA";

/// Boot loader inputs: syslinux's MBR code (BIOS) and GRUB's EFI modules (UEFI).
#[derive(Debug, Clone)]
pub struct Bootloader {
    pub gptmbr: PathBuf,
    /// `grub-mkimage -d`: GRUB's x86_64-efi module directory.
    pub grub_efi_modules: PathBuf,
}

impl Default for Bootloader {
    fn default() -> Self {
        Bootloader {
            gptmbr: "/usr/lib/SYSLINUX/gptmbr.bin".into(),
            grub_efi_modules: "/usr/lib/grub/x86_64-efi".into(),
        }
    }
}

/// GRUB modules built into BOOTX64.EFI: GPT + FAT to read the ESP, `linux` to boot an EFI
/// stub kernel, `loadenv` for the one-shot trial, `serial`/`terminal` for the console.
pub const GRUB_MODULES: &[&str] = &[
    "part_gpt",
    "fat",
    "linux",
    "normal",
    "configfile",
    "loadenv",
    "test",
    "echo",
    "serial",
    "terminal",
];

#[derive(Debug, Clone)]
pub struct DiskOptions {
    pub staging: PathBuf,
    pub kernel: PathBuf,
    pub work_dir: PathBuf,
    /// Final raw image path (written atomically).
    pub out_raw: PathBuf,
    /// Where to write the slot payload for `nomad-init upgrade` (None: none).
    pub out_slot: Option<PathBuf>,
    /// Version recorded in the slot payload.
    pub version: String,
    /// Seed for reproducible GUIDs; None = random (two disks never share a PARTUUID).
    pub seed: Option<String>,
    pub esp_min_bytes: u64,
    /// Minimum size of each slot's root partition; the build makes it at least
    /// [`SLOT_MIN_BYTES`] and twice the root filesystem, so later systems fit.
    pub slot_min_bytes: u64,
    pub data_bytes: u64,
    pub read_only: bool,
    pub extra_args: Vec<String>,
    pub bootloader: Bootloader,
}

#[derive(Debug)]
pub struct DiskReport {
    pub layout: Layout,
    /// Slot A's command line (the one the image boots first).
    pub cmdline: String,
    pub rootfs_used_bytes: u64,
    /// Size of the root ext4 in slot A (the rest of the partition is unused).
    pub rootfs_bytes: u64,
}

/// A slot is at least this big: room for a root filesystem several times today's.
pub const SLOT_MIN_BYTES: u64 = 512 * MIB;

/// Size of each slot's partition: the caller's minimum, [`SLOT_MIN_BYTES`], and twice the
/// root filesystem (an upgrade must fit the next system, which tends to grow).
pub fn slot_size(root_fs: u64, min: u64) -> u64 {
    round_up(min.max(SLOT_MIN_BYTES).max(2 * root_fs), MIB)
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
    for p in [
        "mkfs.ext4",
        "mkfs.vfat",
        "mcopy",
        "mmd",
        "syslinux",
        "grub-mkimage",
    ] {
        tools::require(p)?;
    }
    tools::require_file(&o.kernel, "kernel (bzImage)")?;
    tools::require_file(
        &o.bootloader.gptmbr,
        "syslinux gptmbr.bin (package syslinux-common)",
    )?;
    tools::require_file(
        &o.bootloader.grub_efi_modules.join("loadenv.mod"),
        "GRUB's x86_64-efi modules (package grub-efi-amd64-bin)",
    )?;
    std::fs::create_dir_all(&o.work_dir)
        .with_context(|| format!("create {}", o.work_dir.display()))?;

    let used = tree_usage(&o.staging)?;
    let root_bytes = root_fs_size(used);
    let slot_bytes = slot_size(root_bytes, o.slot_min_bytes);
    let kernel_bytes = std::fs::metadata(&o.kernel).map(|m| m.len()).unwrap_or(0);
    // Both slots' kernels (B's, once written, may be larger: count it twice), GRUB (about
    // 0.6 MiB), ldlinux.sys + ldlinux.c32, configs.
    let esp_files = 2 * 2 * kernel_bytes + 2 * MIB;
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
                name: ROOT_A_NAME.into(),
                type_guid: Guid::LINUX_ROOT_X86_64,
                uuid: guid(&o.seed, "root")?,
                attributes: 0,
                min_bytes: slot_bytes,
            },
            PartitionSpec {
                name: ROOT_B_NAME.into(),
                type_guid: Guid::LINUX_ROOT_X86_64,
                uuid: guid(&o.seed, "root-b")?,
                attributes: 0,
                min_bytes: slot_bytes,
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
    let root_b = &layout.partitions[2];
    let data = &layout.partitions[3];

    let mut entries = Vec::new();
    for (slot, part) in [(Slot::A, root), (Slot::B, root_b)] {
        let cmdline = Cmdline {
            root_partuuid: part.uuid,
            read_only: o.read_only,
            slot,
            extra: o.extra_args.clone(),
        }
        .render()
        .map_err(anyhow::Error::msg)?;
        entries.push(Entry { slot, cmdline });
    }
    let cmdline = entries[0].cmdline.clone();

    progress(&format!(
        "slot A: root filesystem ext4 {} MiB ({} MiB of content) in a {} MiB partition; slot B: {} MiB, empty",
        root_bytes / MIB,
        used / MIB,
        root.size_bytes() / MIB,
        root_b.size_bytes() / MIB
    ));
    let root_img = o.work_dir.join("root.ext4");
    mkfs_ext4(
        &root_img,
        root_bytes,
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
        "ESP: FAT32 {} MiB with syslinux (BIOS) and GRUB (UEFI), slot A's kernel",
        esp.size_bytes() / MIB
    ));
    let esp_img = o.work_dir.join("esp.vfat");
    build_esp(
        &esp_img,
        esp.size_bytes(),
        esp.first_lba,
        &o.seed,
        &o.kernel,
        &o.bootloader,
        &entries,
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
    if let Some(slot) = &o.out_slot {
        progress(&format!(
            "slot payload for upgrades: {} (kernel + root filesystem)",
            slot.display()
        ));
        crate::slotpayload::write(slot, &o.version, &o.kernel, &root_img)?;
    }
    for p in [&esp_img, &root_img, &data_img] {
        let _ = std::fs::remove_file(p);
    }
    Ok(DiskReport {
        layout,
        cmdline,
        rootfs_used_bytes: used,
        rootfs_bytes: root_bytes,
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
    entries: &[Entry],
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

    let files = [
        (
            "syslinux.cfg",
            bootcfg::syslinux_cfg(Slot::A, entries).into_bytes(),
        ),
        ("grub.cfg", bootcfg::grub_cfg(Slot::A, entries).into_bytes()),
        ("grubenv", bootcfg::empty_grubenv()),
        ("slots", bootcfg::initial_slots_record().into_bytes()),
    ];
    for (name, bytes) in &files {
        std::fs::write(work.join(name), bytes)?;
    }
    let grub_efi = work.join("BOOTX64.EFI");
    let _ = std::fs::remove_file(&grub_efi);
    tools::run(
        Command::new("grub-mkimage")
            .args(["-O", "x86_64-efi", "-p", "/EFI/BOOT", "-d"])
            .arg(&bl.grub_efi_modules)
            .arg("-o")
            .arg(&grub_efi)
            .args(GRUB_MODULES),
    )
    .context("building GRUB for UEFI (grub-mkimage)")?;

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
    mtools(&[
        "mmd",
        "::/EFI",
        "::/EFI/BOOT",
        "::/nomados",
        "::/nomados/a",
        "::/nomados/b",
    ])?;
    let w = |name: &str| work.join(name).display().to_string();
    let k = kernel.display().to_string();
    mtools(&["mcopy", &k, &format!("::{}", Slot::A.kernel_on_esp())])?;
    mtools(&["mcopy", &w("syslinux.cfg"), "::/syslinux.cfg"])?;
    mtools(&["mcopy", &w("grub.cfg"), "::/EFI/BOOT/grub.cfg"])?;
    mtools(&[
        "mcopy",
        &grub_efi.display().to_string(),
        "::/EFI/BOOT/BOOTX64.EFI",
    ])?;
    mtools(&[
        "mcopy",
        &w("grubenv"),
        &format!("::{}", bootcfg::GRUBENV_ON_ESP),
    ])?;
    mtools(&[
        "mcopy",
        &w("slots"),
        &format!("::{}", bootcfg::SLOTS_RECORD_ON_ESP),
    ])?;
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
/// Refuses a `src` larger than `max`.
pub fn copy_sparse(src: &Path, dst: &File, offset: u64, max: u64) -> Result<()> {
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
