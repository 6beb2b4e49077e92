//! Verifies what we write with the real tools: sgdisk/sfdisk read our GPT, e2fsck/debugfs
//! read the root filesystem, mtools reads the ESP. Skips (with a message) when a tool is
//! missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use nomados_image::disk::{self, Bootloader, DiskOptions};
use nomados_image::gpt;
use nomados_image::guid::Guid;
use nomados_image::layout::{Layout, PartitionSpec, ATTR_LEGACY_BIOS_BOOTABLE, MIB};
use nomados_image::rootfs::{self, Init, Inputs};

mod common;
use common::run;

fn missing(tools: &[&str]) -> bool {
    common::missing(
        tools,
        "gdisk fdisk e2fsprogs dosfstools mtools syslinux syslinux-efi",
    )
}

fn sample_layout() -> Layout {
    let spec = |name: &str, t: Guid, attrs: u64, mib: u64| PartitionSpec {
        name: name.into(),
        type_guid: t,
        uuid: Guid::derived("it", name),
        attributes: attrs,
        min_bytes: mib * MIB,
    };
    Layout::plan(
        Guid::derived("it", "disk"),
        &[
            spec("NOMADOS-ESP", Guid::ESP, ATTR_LEGACY_BIOS_BOOTABLE, 33),
            spec("NOMADOS-ROOT", Guid::LINUX_ROOT_X86_64, 0, 7),
            spec("NOMADOS-DATA", Guid::LINUX_DATA, 0, 2),
        ],
    )
    .unwrap()
}

#[test]
fn sgdisk_and_sfdisk_accept_our_gpt() {
    if missing(&["sgdisk", "sfdisk"]) {
        return;
    }
    let l = sample_layout();
    let g = gpt::encode(&l, Some(&[0x90u8; 440])).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.raw");
    let mut bytes = vec![0u8; l.size_bytes as usize];
    bytes[..g.head.len()].copy_from_slice(&g.head);
    bytes[g.tail_offset as usize..].copy_from_slice(&g.tail);
    std::fs::write(&img, &bytes).unwrap();

    let v = run(Command::new("sgdisk").arg("-v").arg(&img));
    assert!(v.contains("No problems found"), "sgdisk -v: {v}");

    let js: serde_json::Value =
        serde_json::from_str(&run(Command::new("sfdisk").arg("--json").arg(&img))).unwrap();
    let t = &js["partitiontable"];
    assert_eq!(t["label"], "gpt");
    assert_eq!(
        t["id"].as_str().unwrap().to_lowercase(),
        l.disk_guid.to_string()
    );
    assert_eq!(t["firstlba"], 34);
    assert_eq!(t["lastlba"].as_u64().unwrap(), l.total_sectors() - 34);
    let parts = t["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    for (p, want) in parts.iter().zip(&l.partitions) {
        assert_eq!(p["start"].as_u64().unwrap(), want.first_lba);
        assert_eq!(p["start"].as_u64().unwrap() % 2048, 0, "1 MiB aligned");
        assert_eq!(p["size"].as_u64().unwrap() * 512, want.size_bytes());
        assert_eq!(
            p["uuid"].as_str().unwrap().to_lowercase(),
            want.uuid.to_string()
        );
        assert_eq!(
            p["type"].as_str().unwrap().to_lowercase(),
            want.type_guid.to_string()
        );
        assert_eq!(p["name"], want.name.as_str());
    }
    assert_eq!(parts[0]["attrs"], "LegacyBIOSBootable");
    assert!(parts[1].get("attrs").is_none());
}

#[test]
fn built_disk_has_readable_filesystems_and_both_bootloaders() {
    let tools = [
        "sgdisk",
        "sfdisk",
        "mkfs.ext4",
        "e2fsck",
        "debugfs",
        "mkfs.vfat",
        "mcopy",
        "mdir",
        "syslinux",
        "grub-mkimage",
    ];
    if missing(&tools) {
        return;
    }
    let bl = Bootloader::default();
    for f in [&bl.gptmbr, &bl.grub_efi_modules.join("loadenv.mod")] {
        if !f.is_file() {
            eprintln!(
                "SKIP: {} missing (apt-get install syslinux-common grub-efi-amd64-bin)",
                f.display()
            );
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Any bytes make a "kernel" for layout purposes; nothing boots here.
    let kernel = d.join("bzImage");
    std::fs::write(&kernel, vec![0x5au8; 3 * 1024 * 1024]).unwrap();
    let init = d.join("init.sh");
    std::fs::write(&init, "#!/bin/sh\necho hi\n").unwrap();
    let json = d.join("init.json");
    std::fs::write(&json, "{}\n").unwrap();
    let staging = d.join("rootfs");
    let entries = rootfs::plan(&Inputs {
        init: Init::NomadInit(init.clone()),
        nomad: None,
        nomad_libs: vec![],
        ca_bundle: None,
        init_json: Some(json),
        nomados_toml: None,
        packs: vec![],
        toolbox: None,
        version: "test".into(),
    })
    .unwrap();
    rootfs::apply(&entries, &staging).unwrap();

    let raw = d.join("nomados.raw");
    let report = disk::build(
        &DiskOptions {
            staging,
            kernel,
            work_dir: d.join("work"),
            out_raw: raw.clone(),
            out_slot: Some(d.join("nomados.slot")),
            version: "it-1".into(),
            seed: Some("it".into()),
            esp_min_bytes: 40 * MIB,
            slot_min_bytes: 0,
            data_bytes: 16 * MIB,
            read_only: false,
            extra_args: vec![],
            bootloader: bl.clone(),
        },
        &|_| {},
    )
    .unwrap();

    let v = run(Command::new("sgdisk").arg("-v").arg(&raw));
    assert!(v.contains("No problems found"), "{v}");
    let len = std::fs::metadata(&raw).unwrap().len();
    assert_eq!(len, report.layout.size_bytes);
    assert_eq!(len % MIB, 0);
    let mbr = std::fs::read(&raw).unwrap();
    assert_eq!(
        &mbr[..440],
        &std::fs::read(&bl.gptmbr).unwrap()[..440],
        "gptmbr.bin in the MBR"
    );

    let root = report.layout.partition(disk::ROOT_A_NAME).unwrap();
    let root_b = report.layout.partition(disk::ROOT_B_NAME).unwrap();
    assert!(report
        .cmdline
        .contains(&format!("root=PARTUUID={} ", root.uuid)));
    assert!(
        report.cmdline.ends_with(" nomados.slot=a"),
        "{}",
        report.cmdline
    );
    // Both slots are the same size, big enough for twice today's root filesystem.
    assert_eq!(root.size_bytes(), root_b.size_bytes());
    assert!(root.size_bytes() >= disk::SLOT_MIN_BYTES);
    assert!(root.size_bytes() >= 2 * report.rootfs_bytes);
    // The slot payload holds slot A's root filesystem byte for byte, after the kernel.
    let payload = std::fs::read(d.join("nomados.slot")).unwrap();
    assert!(payload.starts_with(b"nomados-slot-payload 1\nversion=it-1\n"));
    let all = std::fs::read(&raw).unwrap();
    let rootfs = &all[root.offset_bytes() as usize..][..report.rootfs_bytes as usize];
    assert_eq!(&payload[payload.len() - rootfs.len()..], rootfs);
    assert_eq!(payload.len(), 4096 + 3 * 1024 * 1024 + rootfs.len());
    let names: Vec<&str> = report
        .layout
        .partitions
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            disk::ESP_LABEL,
            disk::ROOT_A_NAME,
            disk::ROOT_B_NAME,
            disk::DATA_LABEL
        ],
        "DATA stays last: PID 1 grows it to the end of the disk"
    );

    // Root filesystem: extract, fsck, look inside.
    let root_img = extract(
        &raw,
        d,
        "root.img",
        root.offset_bytes(),
        report.rootfs_bytes,
    );
    run(Command::new("e2fsck").args(["-fn"]).arg(&root_img));
    let label = run(Command::new("e2label").arg(&root_img));
    assert_eq!(label.trim(), disk::ROOT_LABEL);
    let stat = run(Command::new("debugfs")
        .args(["-R", "stat /sbin/init"])
        .arg(&root_img));
    assert!(stat.contains("User:     0"), "owned by root: {stat}");
    let cat = run(Command::new("debugfs")
        .args(["-R", "cat /etc/nomad.d/init.json"])
        .arg(&root_img));
    assert_eq!(cat, "{}\n");

    let data = report.layout.partition(disk::DATA_LABEL).unwrap();
    let data_img = extract(&raw, d, "data.img", data.offset_bytes(), data.size_bytes());
    run(Command::new("e2fsck").args(["-fn"]).arg(&data_img));
    assert_eq!(
        run(Command::new("e2label").arg(&data_img)).trim(),
        disk::DATA_LABEL
    );

    // ESP: mtools straight on the disk image at the partition offset.
    let esp = report.layout.partition(disk::ESP_LABEL).unwrap();
    let at = format!("{}@@{}", raw.display(), esp.offset_bytes());
    let ls = |p: &str| {
        run(Command::new("mdir")
            .args(["-a", "-b", "-i", &at, p])
            .env("MTOOLS_SKIP_CHECK", "1"))
    };
    let root_ls = ls("::/").to_lowercase();
    for f in ["ldlinux.sys", "ldlinux.c32", "syslinux.cfg"] {
        assert!(root_ls.contains(f), "{f} on ESP: {root_ls}");
    }
    let efi = ls("::/EFI/BOOT").to_lowercase();
    for f in ["bootx64.efi", "grub.cfg"] {
        assert!(efi.contains(f), "{f} in EFI/BOOT: {efi}");
    }
    assert!(ls("::/nomados/a").to_lowercase().contains("vmlinuz"));
    assert!(
        !ls("::/nomados/b").to_lowercase().contains("vmlinuz"),
        "slot B starts empty"
    );
    let mtype = |p: &str| {
        run(Command::new("mtype")
            .args(["-i", &at, p])
            .env("MTOOLS_SKIP_CHECK", "1"))
    };
    let sys = mtype("::/syslinux.cfg");
    assert!(sys.contains(&report.cmdline), "{sys}");
    assert!(sys.contains("\nDEFAULT slot-a\n"), "{sys}");
    assert!(
        sys.contains(&format!("root=PARTUUID={} ", root_b.uuid)),
        "{sys}"
    );
    let grub = mtype("::/EFI/BOOT/grub.cfg");
    assert!(grub.contains(&report.cmdline), "{grub}");
    assert!(grub.contains("\nset default=slot-a\n"), "{grub}");
    let env = mtype("::/nomados/grubenv");
    assert_eq!(
        env.len(),
        1024,
        "GRUB rewrites its block in place: exactly 1 KiB"
    );
    assert!(mtype("::/nomados/slots").contains("\ndefault=a\n"));
    // FAT boot sector: hidden sectors = partition start, so syslinux finds itself on disk.
    let bs = &mbr[esp.offset_bytes() as usize..esp.offset_bytes() as usize + 512];
    assert_eq!(
        u32::from_le_bytes(bs[28..32].try_into().unwrap()) as u64,
        esp.first_lba
    );
    assert_eq!(&bs[510..], &[0x55, 0xAA]);
}

fn extract(raw: &Path, dir: &Path, name: &str, off: u64, len: u64) -> PathBuf {
    let out = dir.join(name);
    let all = std::fs::read(raw).unwrap();
    std::fs::write(&out, &all[off as usize..(off + len) as usize]).unwrap();
    out
}

#[test]
fn every_format_converts_back_to_the_same_disk() {
    use nomados_image::formats::{self, Format, ALL};
    if missing(&["qemu-img", "tar"]) {
        return;
    }
    let l = sample_layout();
    let g = gpt::encode(&l, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("nomados.raw");
    let mut bytes = vec![0u8; l.size_bytes as usize];
    bytes[..g.head.len()].copy_from_slice(&g.head);
    bytes[g.tail_offset as usize..].copy_from_slice(&g.tail);
    bytes[5 * MIB as usize..5 * MIB as usize + 11].copy_from_slice(b"hello world");
    std::fs::write(&raw, &bytes).unwrap();

    for f in ALL {
        let out = formats::convert(&raw, f, dir.path()).unwrap();
        assert_eq!(out.file_name().unwrap().to_str().unwrap(), f.file_name());
        let qfmt = match f {
            Format::Raw | Format::Gcp => continue,
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vhd => "vpc",
        };
        let cmp = run(Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", qfmt])
            .arg(&raw)
            .arg(&out));
        assert!(cmp.contains("identical"), "{f:?}: {cmp}");
        let info = run(Command::new("qemu-img")
            .args(["info", "-f", qfmt])
            .arg(&out));
        assert!(
            info.contains(&format!("({} bytes)", l.size_bytes)),
            "{f:?} size: {info}"
        );
        if f == Format::Vmdk {
            assert!(info.contains("streamOptimized"), "{info}");
        }
    }
    // VHD fixed = raw + 512-byte footer "conectix".
    let vhd = std::fs::read(dir.path().join("nomados.vhd")).unwrap();
    assert_eq!(vhd.len() as u64, l.size_bytes + 512);
    assert_eq!(&vhd[vhd.len() - 512..vhd.len() - 504], b"conectix");

    let list = run(Command::new("tar")
        .arg("-tvzf")
        .arg(dir.path().join("nomados.tar.gz")));
    let names: Vec<&str> = list
        .lines()
        .map(|l| l.rsplit(' ').next().unwrap())
        .collect();
    assert_eq!(names, vec!["disk.raw"], "{list}");
    let x = dir.path().join("x");
    std::fs::create_dir(&x).unwrap();
    run(Command::new("tar")
        .arg("-xSzf")
        .arg(dir.path().join("nomados.tar.gz"))
        .arg("-C")
        .arg(&x));
    // GCE's disk.raw is the disk grown to a whole GiB: the same partitions and data, the
    // backup GPT moved to the new end (tests/cloud_formats.rs checks the table itself).
    let disk = std::fs::File::open(x.join("disk.raw")).unwrap();
    assert_eq!(disk.metadata().unwrap().len(), 1 << 30);
    let body = g.head.len()..g.tail_offset as usize;
    let mut got = vec![0u8; body.len()];
    std::os::unix::fs::FileExt::read_exact_at(&disk, &mut got, body.start as u64).unwrap();
    assert!(got == bytes[body], "partition area differs");
}
