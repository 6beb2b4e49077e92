//! First-boot formatting of a blank data partition against the real kernel: a GPT disk
//! image on a loop device with three partitions all named NOMADOS-DATA (the GPT name is
//! how PID 1 identifies ours), one blank, one holding an ext4 of another label, one with a
//! single non-zero byte in its first MiB (what is probed, with the last 128 KiB). Only the
//! blank one may be formatted; the others must be byte-for-byte untouched. Needs root, losetup, partx, sgdisk, mkfs.ext4, e2fsck.
//! Run under `flock /tmp/nomados-heavy.lock`.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nomad_init::boot::blank::{self, Outcome};
use sha2::{Digest, Sha256};

mod host;
use host::{run, Loop};

const TOOLS: &[&str] = &["losetup", "partx", "sgdisk", "mkfs.ext4", "e2fsck"];

fn digest(path: &Path) -> Vec<u8> {
    Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

#[test]
fn only_a_blank_partition_named_like_the_data_label_is_formatted() {
    if let Some(why) = host::missing_prerequisite(TOOLS) {
        eprintln!("SKIP only_a_blank_partition_named_like_the_data_label_is_formatted: {why}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("disk.img");
    let img_s = img.to_str().unwrap();
    run("truncate", &["-s", "64M", img_s]);
    run(
        "sgdisk",
        &[
            "-o",
            "-n1:2048:+16M",
            "-c1:NOMADOS-DATA",
            "-n2:0:+16M",
            "-c2:NOMADOS-DATA",
            "-n3:0:+16M",
            "-c3:NOMADOS-DATA",
            img_s,
        ],
    );
    let mut lp = Loop::attach_partx(&img);
    let parts: Vec<PathBuf> = (1..=3).map(|k| lp.partition(k)).collect();
    run(
        "mkfs.ext4",
        &["-q", "-F", "-L", "OTHER", parts[1].to_str().unwrap()],
    );
    std::fs::OpenOptions::new()
        .write(true)
        .open(&parts[2])
        .unwrap()
        .write_all_at(&[0x42], 512 << 10)
        .unwrap();
    let before: Vec<Vec<u8>> = parts[1..].iter().map(|p| digest(p)).collect();

    // Only our loop device's partitions are visible to the code under test: other loop
    // devices on this machine (other test runs) must never be candidates.
    let sys = tmp.path().join("sys-class-block");
    std::fs::create_dir(&sys).unwrap();
    for p in &parts {
        let name = p.file_name().unwrap();
        std::os::unix::fs::symlink(Path::new("/sys/class/block").join(name), sys.join(name))
            .unwrap();
    }
    let outcomes: Vec<Outcome> = blank::format_blank(
        Path::new("/dev"),
        &sys,
        "NOMADOS-DATA",
        blank::MKFS_DEADLINE,
    )
    .into_iter()
    .map(|o| o.unwrap())
    .collect();
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    assert_eq!(outcomes[0], Outcome::Formatted(parts[0].clone()));
    match &outcomes[1] {
        Outcome::NotBlank(p, what) => {
            assert_eq!(p, &parts[1]);
            assert!(
                what.contains("ext2/3/4 filesystem labelled OTHER"),
                "{what}"
            );
        }
        o => panic!("{o:?}"),
    }
    match &outcomes[2] {
        Outcome::NotBlank(p, what) => {
            assert_eq!(p, &parts[2]);
            assert!(what.contains("unknown"), "{what}");
        }
        o => panic!("{o:?}"),
    }
    let after: Vec<Vec<u8>> = parts[1..].iter().map(|p| digest(p)).collect();
    assert_eq!(
        before, after,
        "partitions holding something were written to"
    );

    assert_eq!(
        nomad_init::sys::block::read_ext_label(&parts[0])
            .unwrap()
            .as_deref(),
        Some("NOMADOS-DATA")
    );
    run("e2fsck", &["-fn", parts[0].to_str().unwrap()]);

    // A second boot finds a filesystem there and leaves it alone.
    let again = blank::format_blank(
        Path::new("/dev"),
        &sys,
        "NOMADOS-DATA",
        blank::MKFS_DEADLINE,
    );
    assert!(
        matches!(&again[0], Ok(Outcome::NotBlank(_, what)) if what.contains("NOMADOS-DATA")),
        "{again:?}"
    );
    drop(lp);
}
