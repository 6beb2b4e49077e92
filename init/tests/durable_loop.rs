//! The boot counter's write is durable: what `nomad-init` wrote with
//! `fsutil::write_atomic` is on the disk the moment the call returns, as a VM killed right
//! after boot would leave it. An ext4 on a loop device is mounted with `commit=600` (no
//! periodic journal commit during the test); right after each write the backing file is
//! copied, as a power cut would leave the disk, the copy's journal is replayed by `e2fsck`
//! (what the next mount does) and the file is read back from it with `debugfs`. Before the
//! directory was synced after the rename, the copy held the temp file and the old count.
//! Needs root, losetup, mkfs.ext4, e2fsck, debugfs.

use std::path::Path;
use std::process::Command;

use nomad_init::boot::bootcount;

mod host;
use host::{run, Loop};

const TOOLS: &[&str] = &[
    "losetup",
    "mkfs.ext4",
    "e2fsck",
    "debugfs",
    "mount",
    "umount",
];

/// `file` as the disk holds it now (journal replayed on a copy), None when it is not there.
fn on_disk(img: &Path, file: &str) -> Option<String> {
    let copy = img.with_extension("crash");
    std::fs::copy(img, &copy).unwrap();
    let fsck = Command::new("e2fsck")
        .args(["-fy", copy.to_str().unwrap()])
        .output()
        .unwrap();
    // 0: clean, 1: errors corrected (the replay of an unclean journal may say so).
    assert!(
        matches!(fsck.status.code(), Some(0 | 1)),
        "e2fsck: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let out = Command::new("debugfs")
        .args(["-R", &format!("cat {file}"), copy.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    std::fs::remove_file(&copy).unwrap();
    (!err.contains("File not found")).then_some(text)
}

#[test]
fn the_boot_count_is_on_disk_when_the_write_returns() {
    if let Some(why) = host::missing_prerequisite(TOOLS) {
        eprintln!("SKIP the_boot_count_is_on_disk_when_the_write_returns: {why}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("data.img");
    let img_s = img.to_str().unwrap();
    run("truncate", &["-s", "32M", img_s]);
    run("mkfs.ext4", &["-q", "-F", "-L", "NOMADOS-DATA", img_s]);
    let mut lp = Loop::attach(&img);
    let dir = tmp.path().join("mnt");
    std::fs::create_dir(&dir).unwrap();
    lp.mount = Some(dir.clone());
    run(
        "mount",
        &["-o", "commit=600", &lp.dev, dir.to_str().unwrap()],
    );

    // First boot: the directory and the file are new.
    assert_eq!(bootcount::increment(&dir).unwrap(), 1);
    assert_eq!(
        on_disk(&img, "/nomados/boot-count").as_deref(),
        Some("1\n"),
        "the first count is not on disk"
    );
    // Next boot: the rename replaces the file.
    assert_eq!(bootcount::increment(&dir).unwrap(), 2);
    assert_eq!(
        on_disk(&img, "/nomados/boot-count").as_deref(),
        Some("2\n"),
        "the second count is not on disk"
    );
}
