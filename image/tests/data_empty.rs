//! `image/check-data-empty.sh`, the build's check that a shipped image's data partition is
//! an empty ext4: a small GPT disk made here with the real tools, its NOMADOS-DATA partition
//! empty (passes) or holding what a boot leaves there (refused, naming it), raw and qcow2.

use std::path::Path;
use std::process::Command;

const TOOLS: [&str; 5] = ["sgdisk", "sfdisk", "mkfs.ext4", "debugfs", "e2fsck"];

fn missing() -> Option<&'static str> {
    TOOLS.into_iter().find(|t| {
        Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .map_or(true, |o| !o.status.success())
    })
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A 40 MiB GPT disk whose second partition, NOMADOS-DATA, holds an ext4 made from `content`
/// (None: empty).
fn disk(dir: &Path, name: &str, content: Option<&Path>) -> std::path::PathBuf {
    let raw = dir.join(format!("{name}.raw"));
    run(Command::new("truncate").args(["-s", "40M"]).arg(&raw));
    run(Command::new("sgdisk")
        .args([
            "-n1:2048:+8M",
            "-c1:NOMADOS-ROOT",
            "-n2:0:+16M",
            "-c2:NOMADOS-DATA",
        ])
        .arg(&raw));
    let fs = dir.join(format!("{name}.ext4"));
    let mut mkfs = Command::new("mkfs.ext4");
    mkfs.args(["-q", "-F", "-L", "NOMADOS-DATA"]);
    if let Some(c) = content {
        mkfs.arg("-d").arg(c);
    }
    run(mkfs.arg(&fs).arg("16M"));
    // Partition 2 starts right after partition 1: 2048 + 8 MiB of sectors.
    let start = 2048 + 8 * 2048;
    run(Command::new("dd")
        .arg(format!("if={}", fs.display()))
        .arg(format!("of={}", raw.display()))
        .args([
            "bs=512",
            &format!("seek={start}"),
            "conv=notrunc",
            "status=none",
        ]));
    raw
}

fn check(image: &Path) -> (i32, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("check-data-empty.sh");
    let out = Command::new(script).arg(image).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn only_an_empty_data_partition_passes() {
    if let Some(t) = missing() {
        eprintln!("SKIP only_an_empty_data_partition_passes: {t} not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let empty = disk(dir.path(), "empty", None);
    let (code, text) = check(&empty);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("is an empty ext4"), "{text}");

    // What a boot in place leaves: the node's ACL token and Nomad's state.
    let booted = dir.path().join("booted");
    std::fs::create_dir_all(booted.join("nomados")).unwrap();
    std::fs::create_dir_all(booted.join("server")).unwrap();
    std::fs::write(booted.join("nomados/nomad-token"), "secret\n").unwrap();
    let used = disk(dir.path(), "used", Some(&booted));
    let (code, text) = check(&used);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("is not empty: "), "{text}");
    assert!(
        text.contains("nomados") && text.contains("server"),
        "{text}"
    );
    assert!(!text.contains("secret"), "{text}");

    let has_qemu_img = Command::new("sh")
        .args(["-c", "command -v qemu-img"])
        .output()
        .is_ok_and(|o| o.status.success());
    if has_qemu_img {
        let qcow2 = dir.path().join("used.qcow2");
        run(Command::new("qemu-img")
            .args(["convert", "-O", "qcow2"])
            .arg(&used)
            .arg(&qcow2));
        assert_eq!(check(&qcow2).0, 1, "a qcow2 is read back too");
    }
}
