//! The cloud formats as `buildimg.sh` makes them (`formats::convert`, real qemu-img and GNU
//! tar) read back by our checks and by the tools themselves: GCE's tar.gz, Azure's fixed VHD,
//! the streamOptimized VMDK. And the same checks refusing what the clouds refuse: a VHD with
//! a broken footer or an unaligned size, a tar in the wrong format or with the wrong member
//! name or size, a VMDK that is not streamOptimized. Skips (with a message) without
//! qemu-img, tar or sgdisk.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nomados_image::cloudcheck::{self, GIB};
use nomados_image::formats::{self, Format};
use nomados_image::gpt;
use nomados_image::guid::Guid;
use nomados_image::layout::{Layout, PartitionSpec, ATTR_LEGACY_BIOS_BOOTABLE, MIB};

mod common;
use common::run;

fn missing(tools: &[&str]) -> bool {
    common::missing(tools, "qemu-utils tar gdisk")
}

/// A 40 MiB GPT disk (ESP, root, data) with recognisable bytes in each partition.
fn sample_disk(dir: &Path) -> (PathBuf, Layout) {
    let spec = |name: &str, t: Guid, attrs: u64, mib: u64| PartitionSpec {
        name: name.into(),
        type_guid: t,
        uuid: Guid::derived("cloud", name),
        attributes: attrs,
        min_bytes: mib * MIB,
    };
    let l = Layout::plan(
        Guid::derived("cloud", "disk"),
        &[
            spec("NOMADOS-ESP", Guid::ESP, ATTR_LEGACY_BIOS_BOOTABLE, 16),
            spec("NOMADOS-ROOT-A", Guid::LINUX_ROOT_X86_64, 0, 16),
            spec("NOMADOS-DATA", Guid::LINUX_DATA, 0, 6),
        ],
    )
    .unwrap();
    let t = gpt::encode(&l, Some(&[0x90; 440])).unwrap();
    let raw = dir.join("nomados.raw");
    let f = std::fs::File::create(&raw).unwrap();
    f.set_len(l.size_bytes).unwrap();
    f.write_all_at(&t.head, 0).unwrap();
    f.write_all_at(&t.tail, t.tail_offset).unwrap();
    for p in &l.partitions {
        f.write_all_at(p.name.as_bytes(), p.offset_bytes() + 4096)
            .unwrap();
    }
    (raw, l)
}

#[test]
fn gce_tarball_holds_one_whole_gib_disk_raw_with_a_valid_gpt() {
    if missing(&["tar", "sgdisk"]) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (raw, l) = sample_disk(d.path());
    let tgz = formats::convert(&raw, Format::Gcp, d.path()).unwrap();
    assert_eq!(tgz, d.path().join("nomados.tar.gz"));
    let m = cloudcheck::check_gce_tar(&tgz, GIB).unwrap();
    assert_eq!((m.name.as_str(), m.real_size), ("disk.raw", GIB));
    assert_eq!(m.typeflag, b'S', "GNU sparse member (tar -S)");
    assert!(m.stored < 4 * MIB, "sparse: {} bytes stored", m.stored);
    assert!(!d.path().join(".tmp-gce").exists(), "scratch copy removed");

    // GNU tar agrees: one member, disk.raw, 1 GiB.
    let list = run(Command::new("tar").arg("-tvzf").arg(&tgz));
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 1, "{list}");
    assert!(lines[0].ends_with(" disk.raw"), "{list}");
    assert!(lines[0].contains(&GIB.to_string()), "{list}");

    // Extracted: the GPT was moved to the end of the 1 GiB disk, partitions and bytes kept.
    let x = d.path().join("x");
    std::fs::create_dir(&x).unwrap();
    run(Command::new("tar").arg("-xSzf").arg(&tgz).arg("-C").arg(&x));
    let disk = x.join("disk.raw");
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), GIB);
    let v = run(Command::new("sgdisk").arg("-v").arg(&disk));
    assert!(v.contains("No problems found"), "{v}");
    let f = std::fs::File::open(&disk).unwrap();
    for p in &l.partitions {
        let mut b = vec![0u8; p.name.len()];
        f.read_exact_at(&mut b, p.offset_bytes() + 4096).unwrap();
        assert_eq!(b, p.name.as_bytes());
    }
    let mut old_backup = [0u8; 8];
    f.read_exact_at(&mut old_backup, l.size_bytes - 512)
        .unwrap();
    assert_ne!(
        &old_backup, b"EFI PART",
        "the image's old backup header is gone"
    );
}

#[test]
fn gce_rules_refuse_wrong_format_name_and_size() {
    if missing(&["tar"]) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let tar = |args: &[&str], out: &str| {
        run(Command::new("tar")
            .current_dir(p)
            .args(args)
            .arg("-czf")
            .arg(out)
            .arg("disk.raw"));
        p.join(out)
    };
    let disk = p.join("disk.raw");
    std::fs::File::create(&disk).unwrap().set_len(GIB).unwrap();
    cloudcheck::check_gce_tar(&tar(&["--format=oldgnu", "-S"], "ok.tar.gz"), GIB).unwrap();
    let e = cloudcheck::check_gce_tar(&tar(&["--format=posix", "-S"], "posix.tar.gz"), GIB);
    assert!(format!("{:#}", e.unwrap_err()).contains("oldgnu"));

    std::fs::File::create(&disk)
        .unwrap()
        .set_len(GIB + MIB)
        .unwrap();
    let e = cloudcheck::check_gce_tar(&tar(&["--format=oldgnu", "-S"], "odd.tar.gz"), GIB + MIB);
    assert!(format!("{:#}", e.unwrap_err()).contains("whole number of GiB"));

    std::fs::rename(&disk, p.join("nomados.raw")).unwrap();
    std::fs::File::create(p.join("nomados.raw"))
        .unwrap()
        .set_len(GIB)
        .unwrap();
    run(Command::new("tar").current_dir(p).args([
        "--format=oldgnu",
        "-Sczf",
        "name.tar.gz",
        "nomados.raw",
    ]));
    let e = cloudcheck::check_gce_tar(&p.join("name.tar.gz"), GIB);
    assert!(format!("{:#}", e.unwrap_err()).contains("`nomados.raw`"));
}

#[test]
fn azure_vhd_is_the_disk_plus_a_valid_fixed_footer() {
    if missing(&["qemu-img"]) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (raw, l) = sample_disk(d.path());
    let vhd = formats::convert(&raw, Format::Vhd, d.path()).unwrap();
    let v = cloudcheck::check_azure_vhd(&vhd, l.size_bytes).unwrap();
    assert_eq!(v.current_size, l.size_bytes);
    assert_eq!(v.current_size % MIB, 0);
    assert_eq!(
        std::fs::metadata(&vhd).unwrap().len(),
        l.size_bytes + 512,
        "data then footer"
    );
    // qemu-img reads the same virtual size.
    let info = run(Command::new("qemu-img")
        .args(["info", "--output=json", "-f", "vpc"])
        .arg(&vhd));
    assert!(
        info.contains(&format!("\"virtual-size\": {}", l.size_bytes)),
        "{info}"
    );
    // The data is the raw disk byte for byte.
    let f = std::fs::File::open(&vhd).unwrap();
    let mut head = vec![0u8; 34 * 512];
    f.read_exact_at(&mut head, 0).unwrap();
    assert_eq!(head, std::fs::read(&raw).unwrap()[..34 * 512]);

    // A flipped footer byte, a footer moved off the MiB boundary, a raw that is not a whole
    // MiB: refused.
    let broken = d.path().join("broken.vhd");
    std::fs::copy(&vhd, &broken).unwrap();
    let bf = std::fs::OpenOptions::new()
        .write(true)
        .open(&broken)
        .unwrap();
    bf.write_all_at(&[0x55], l.size_bytes + 100).unwrap();
    let e = cloudcheck::check_azure_vhd(&broken, l.size_bytes).unwrap_err();
    assert!(format!("{e:#}").contains("checksum"), "{e:#}");
    let padded = d.path().join("padded.vhd");
    let mut bytes = std::fs::read(&vhd).unwrap();
    let footer = bytes.split_off(l.size_bytes as usize);
    bytes.extend_from_slice(&[0u8; 512]);
    bytes.extend_from_slice(&footer);
    std::fs::write(&padded, &bytes).unwrap();
    let e = cloudcheck::check_azure_vhd(&padded, l.size_bytes).unwrap_err();
    assert!(
        format!("{e:#}").contains("plus the 512-byte footer"),
        "{e:#}"
    );
    let odd = d.path().join("odd").join("nomados.raw");
    std::fs::create_dir(odd.parent().unwrap()).unwrap();
    std::fs::File::create(&odd)
        .unwrap()
        .set_len(l.size_bytes + 512)
        .unwrap();
    let e = formats::convert(&odd, Format::Vhd, odd.parent().unwrap()).unwrap_err();
    assert!(format!("{e:#}").contains("not a whole MiB"), "{e:#}");
}

#[test]
fn vmdk_is_stream_optimized_and_other_subformats_are_refused() {
    if missing(&["qemu-img"]) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (raw, l) = sample_disk(d.path());
    let vmdk = formats::convert(&raw, Format::Vmdk, d.path()).unwrap();
    let h = cloudcheck::check_stream_optimized_vmdk(&vmdk, l.size_bytes).unwrap();
    assert_eq!(h.capacity * 512, l.size_bytes);
    let info = run(Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&vmdk));
    assert!(
        info.contains("\"create-type\": \"streamOptimized\""),
        "{info}"
    );
    // Round trip: the VMDK holds the same disk.
    let back = d.path().join("back.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "vmdk", "-O", "raw"])
        .arg(&vmdk)
        .arg(&back));
    assert!(std::fs::read(&back).unwrap() == std::fs::read(&raw).unwrap());

    let mono = d.path().join("mono.vmdk");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "vmdk"])
        .arg(&raw)
        .arg(&mono));
    let e = cloudcheck::check_stream_optimized_vmdk(&mono, l.size_bytes).unwrap_err();
    assert!(format!("{e:#}").contains("VMDK"), "{e:#}");
}
