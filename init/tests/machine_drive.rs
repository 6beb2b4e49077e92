//! Config drives read for real: a NoCloud `cidata` vfat image (mkfs.vfat + mcopy) and an
//! OpenStack `config-2` ISO (xorriso), attached as loop devices, recognised by their
//! label, mounted read-only and read by the source's own code. Needs root and losetup;
//! run under `flock /tmp/nomados-heavy.lock` (loop devices are shared). Skips otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;

use nomad_init::machine::sources::drive::{self, DriveKind};

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root".into());
    }
    ["losetup", "mkfs.vfat", "mcopy", "xorriso"]
        .into_iter()
        .find(|t| !have(t))
        .map(|t| format!("{t} not installed"))
}

/// A loop device for `image`, detached when dropped.
struct Loop(PathBuf);

impl Loop {
    fn attach(image: &Path) -> Self {
        let out = Command::new("losetup")
            .args(["--find", "--show", "--read-only"])
            .arg(image)
            .output()
            .unwrap();
        assert!(out.status.success(), "losetup: {out:?}");
        Self(PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

/// Whether the host kernel can mount `fstype` (a container cannot load the module).
fn host_mounts(fstype: &str) -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().last() == Some(fstype))
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {out:?}");
}

#[test]
fn a_cidata_vfat_and_a_config_2_iso_are_found_mounted_and_read() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIP: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();

    // NoCloud on vfat, as cloud-localds --filesystem=vfat makes it.
    let img = dir.path().join("seed.img");
    run(Command::new("mkfs.vfat")
        .args(["-C", "-n", "CIDATA"])
        .arg(&img)
        .arg("2048"));
    let ud = dir.path().join("user-data");
    std::fs::write(&ud, "[nomad]\nrole = \"client\"\n").unwrap();
    let md = dir.path().join("meta-data");
    std::fs::write(&md, "instance-id: iid-vfat\nlocal-hostname: vfat-node\n").unwrap();
    run(Command::new("mcopy")
        .arg("-i")
        .arg(&img)
        .arg(&ud)
        .arg(&md)
        .arg("::/"));
    let dev = Loop::attach(&img);
    let label = drive::read_label(&dev.0).unwrap().unwrap();
    assert_eq!(label.fstype, "vfat");
    let mount_point = dir.path().join("mnt");
    if host_mounts("vfat") {
        let found =
            drive::read_device(&dev.0, DriveKind::NoCloud, label.fstype, &mount_point).unwrap();
        assert_eq!(found.source, "nocloud");
        assert_eq!(
            found.user_data.as_deref(),
            Some(&b"[nomad]\nrole = \"client\"\n"[..])
        );
        assert_eq!(found.facts.hostname.as_deref(), Some("vfat-node"));
        assert!(!mount_point.exists(), "unmounted and removed");
    } else {
        eprintln!("SKIP mounting vfat: not in this host kernel's /proc/filesystems");
    }

    // OpenStack config-2 on ISO 9660.
    let tree = dir.path().join("cd/openstack/latest");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("user_data"), "[nomad]\nrole = \"server\"\n").unwrap();
    std::fs::write(
        tree.join("meta_data.json"),
        r#"{"uuid": "u-1", "hostname": "os-node", "availability_zone": "az1"}"#,
    )
    .unwrap();
    let iso = dir.path().join("config2.iso");
    run(Command::new("xorriso")
        .args([
            "-as", "mkisofs", "-quiet", "-J", "-r", "-V", "config-2", "-o",
        ])
        .arg(&iso)
        .arg(dir.path().join("cd")));
    let dev = Loop::attach(&iso);
    let label = drive::read_label(&dev.0).unwrap().unwrap();
    assert_eq!(label.fstype, "iso9660");
    if !host_mounts("iso9660") {
        eprintln!("SKIP mounting iso9660: not in this host kernel's /proc/filesystems");
        return;
    }
    let found =
        drive::read_device(&dev.0, DriveKind::ConfigDrive, label.fstype, &mount_point).unwrap();
    assert_eq!(found.source, "config-2");
    assert_eq!(
        found.user_data.as_deref(),
        Some(&b"[nomad]\nrole = \"server\"\n"[..])
    );
    assert_eq!(found.facts.zone.as_deref(), Some("az1"));
    assert_eq!(found.facts.instance_id.as_deref(), Some("u-1"));
}
