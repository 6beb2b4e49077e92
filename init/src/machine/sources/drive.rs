//! Config drives: NoCloud (`cidata`, with `user-data` and `meta-data`; how Proxmox,
//! libvirt, OpenStack and many bare-metal tools hand configuration over) and OpenStack's
//! `config-2` (`openstack/latest/user_data`, `meta_data.json`), on ISO 9660 or vfat.
//!
//! Devices are recognised by the label in their superblock (no udev, no blkid), mounted
//! read-only (nosuid, nodev, noexec) on a private directory, read with bounded reads and
//! unmounted. [`read_nocloud`] and [`read_config2`] read an already mounted directory.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use serde_json::Value;

use crate::machine::found::{Facts, Found};
use crate::machine::userdata::MAX_USER_DATA_BYTES;

/// meta-data files are a few hundred bytes.
const MAX_META_BYTES: u64 = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriveKind {
    NoCloud,
    ConfigDrive,
}

impl DriveKind {
    pub fn source(self) -> &'static str {
        match self {
            DriveKind::NoCloud => "nocloud",
            DriveKind::ConfigDrive => "config-2",
        }
    }

    fn from_label(label: &str) -> Option<Self> {
        if label.eq_ignore_ascii_case("cidata") {
            Some(DriveKind::NoCloud)
        } else if label.eq_ignore_ascii_case("config-2") {
            Some(DriveKind::ConfigDrive)
        } else {
            None
        }
    }
}

/// A filesystem type and label read from a device's first sectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub fstype: &'static str,
    pub label: String,
}

/// ISO 9660's primary volume descriptor is sector 16 (of 2048 bytes).
const ISO_PVD: usize = 16 * 2048;
/// Bytes to read to see either kind of superblock.
pub const PROBE_BYTES: usize = ISO_PVD + 2048;

/// The filesystem label in `head` (the first [`PROBE_BYTES`] of a device), for ISO 9660
/// and FAT12/16/32.
pub fn probe_label(head: &[u8]) -> Option<Label> {
    let text = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .trim_end_matches([' ', '\0'])
            .to_string()
    };
    if head.get(ISO_PVD) == Some(&1) && head.get(ISO_PVD + 1..ISO_PVD + 6) == Some(b"CD001") {
        let label = text(head.get(ISO_PVD + 40..ISO_PVD + 72)?);
        return Some(Label {
            fstype: "iso9660",
            label,
        });
    }
    if head.get(510..512) != Some(&[0x55, 0xAA]) {
        return None;
    }
    // FAT32 keeps its label further in than FAT12/16; both say which they are.
    for (fs_type_at, label_at) in [(0x52, 0x47), (0x36, 0x2B)] {
        let fs_type = head.get(fs_type_at..fs_type_at + 8)?;
        if fs_type.starts_with(b"FAT") {
            let label = text(head.get(label_at..label_at + 11)?);
            return Some(Label {
                fstype: "vfat",
                label,
            });
        }
    }
    None
}

/// Reads the label of the device (or image file) at `path`.
pub fn read_label(path: &Path) -> std::io::Result<Option<Label>> {
    let mut head = Vec::with_capacity(PROBE_BYTES);
    std::fs::File::open(path)?
        .take(PROBE_BYTES as u64)
        .read_to_end(&mut head)?;
    Ok(probe_label(&head))
}

/// The first config drive among the block devices in `sys_class_block`: (device, kind,
/// fstype). Whole disks and partitions are both looked at (a cidata partition is common).
pub fn find(dev: &Path, sys_class_block: &Path) -> Option<(PathBuf, DriveKind, &'static str)> {
    let mut names: Vec<String> = std::fs::read_dir(sys_class_block)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| !n.starts_with("ram") && !n.starts_with("zram"))
        .collect();
    names.sort();
    names.into_iter().find_map(|n| {
        let path = dev.join(&n);
        let label = read_label(&path).ok()??;
        let kind = DriveKind::from_label(&label.label)?;
        Some((path, kind, label.fstype))
    })
}

/// Mounts the drive read-only on `mount_point`, reads it, unmounts it.
pub fn read_device(
    device: &Path,
    kind: DriveKind,
    fstype: &str,
    mount_point: &Path,
) -> anyhow::Result<Found> {
    use anyhow::Context as _;
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(mount_point)
        .with_context(|| format!("mkdir {}", mount_point.display()))?;
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    nix::mount::mount(Some(device), mount_point, Some(fstype), flags, None::<&str>).with_context(
        || {
            format!(
                "mount {} ({fstype}) on {}",
                device.display(),
                mount_point.display()
            )
        },
    )?;
    let found = match kind {
        DriveKind::NoCloud => read_nocloud(mount_point),
        DriveKind::ConfigDrive => read_config2(mount_point),
    };
    if let Err(e) = crate::sys::mount::unmount(mount_point) {
        crate::warn!("{e}");
    }
    let _ = std::fs::remove_dir(mount_point);
    found.with_context(|| format!("{} on {}", kind.source(), device.display()))
}

/// Reads `name` under `dir` when it exists, bounded.
fn optional(dir: &Path, name: &str, cap: u64) -> anyhow::Result<Option<Vec<u8>>> {
    let path = dir.join(name);
    match crate::fsutil::read_bounded(&path, cap) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
    }
}

/// A NoCloud drive's `user-data` and `meta-data` (YAML `key: value` lines, or JSON).
pub fn read_nocloud(dir: &Path) -> anyhow::Result<Found> {
    let user_data = optional(dir, "user-data", MAX_USER_DATA_BYTES)?;
    let meta = optional(dir, "meta-data", MAX_META_BYTES)?.unwrap_or_default();
    Ok(Found {
        source: DriveKind::NoCloud.source(),
        user_data: user_data.filter(|b| !b.is_empty()),
        facts: nocloud_facts(&String::from_utf8_lossy(&meta)),
    })
}

/// The facts of a NoCloud `meta-data`: `instance-id` and `local-hostname`.
pub fn nocloud_facts(meta: &str) -> Facts {
    let value = |key: &str| -> Option<String> {
        if meta.trim_start().starts_with('{') {
            let v: Value = serde_json::from_str(meta).ok()?;
            return v.get(key)?.as_str().map(str::to_string);
        }
        meta.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            (k.trim() == key).then(|| v.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
        })
    };
    Facts {
        instance_id: value("instance-id").filter(|s| !s.is_empty()),
        hostname: value("local-hostname")
            .or_else(|| value("hostname"))
            .filter(|s| !s.is_empty()),
        ..Facts::default()
    }
}

/// An OpenStack config drive's `openstack/latest/user_data` and `meta_data.json`.
pub fn read_config2(dir: &Path) -> anyhow::Result<Found> {
    let latest = dir.join("openstack/latest");
    let user_data = optional(&latest, "user_data", MAX_USER_DATA_BYTES)?;
    let meta = optional(&latest, "meta_data.json", MAX_META_BYTES)?.unwrap_or_default();
    let meta: Value = serde_json::from_slice(&meta).unwrap_or(Value::Null);
    let s = |key: &str| meta.get(key).and_then(Value::as_str).map(str::to_string);
    Ok(Found {
        source: DriveKind::ConfigDrive.source(),
        user_data: user_data.filter(|b| !b.is_empty()),
        facts: Facts {
            instance_id: s("uuid"),
            hostname: s("hostname").or_else(|| s("name")),
            zone: s("availability_zone"),
            ..Facts::default()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nocloud_reads_user_data_and_yaml_or_json_meta_data() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("user-data"), "[nomad]\nrole = \"client\"\n").unwrap();
        std::fs::write(
            dir.path().join("meta-data"),
            "instance-id: iid-local01\nlocal-hostname: 'node-2'\n",
        )
        .unwrap();
        let f = read_nocloud(dir.path()).unwrap();
        assert_eq!(f.source, "nocloud");
        assert_eq!(
            f.user_data.as_deref(),
            Some(&b"[nomad]\nrole = \"client\"\n"[..])
        );
        assert_eq!(f.facts.instance_id.as_deref(), Some("iid-local01"));
        assert_eq!(f.facts.hostname.as_deref(), Some("node-2"));
        assert_eq!(
            nocloud_facts(r#"{"instance-id": "i-9", "local-hostname": "h"}"#).instance_id,
            Some("i-9".into())
        );
        // No user data: facts only.
        std::fs::remove_file(dir.path().join("user-data")).unwrap();
        assert_eq!(read_nocloud(dir.path()).unwrap().user_data, None);
    }

    #[test]
    fn an_oversized_user_data_is_an_error_not_a_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let big = vec![b'#'; usize::try_from(MAX_USER_DATA_BYTES).unwrap() + 1];
        std::fs::write(dir.path().join("user-data"), big).unwrap();
        let e = read_nocloud(dir.path()).unwrap_err().to_string();
        assert!(e.contains("larger than the limit"), "{e}");
    }

    #[test]
    fn config_drive_reads_openstack_latest() {
        let dir = tempfile::tempdir().unwrap();
        let latest = dir.path().join("openstack/latest");
        std::fs::create_dir_all(&latest).unwrap();
        std::fs::write(latest.join("user_data"), "[nomad]\nrole = \"server\"\n").unwrap();
        std::fs::write(
            latest.join("meta_data.json"),
            r#"{"uuid": "83679162-1378-4288-a2d4-70e13ec132aa", "hostname": "os-1.novalocal",
                "availability_zone": "nova"}"#,
        )
        .unwrap();
        let f = read_config2(dir.path()).unwrap();
        assert_eq!(f.source, "config-2");
        assert!(f.user_data.is_some());
        assert_eq!(f.facts.hostname.as_deref(), Some("os-1.novalocal"));
        assert_eq!(f.facts.zone.as_deref(), Some("nova"));
        assert_eq!(
            f.facts.instance_id.as_deref(),
            Some("83679162-1378-4288-a2d4-70e13ec132aa")
        );
    }

    fn tool(name: &str) -> bool {
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Real images made by the tools people use: mkfs.vfat and xorriso (genisoimage's
    /// mkisofs mode); the label is read from the image file as from a device.
    #[test]
    fn labels_of_real_vfat_and_iso_images() {
        let dir = tempfile::tempdir().unwrap();
        if tool("mkfs.vfat") {
            for (label, size) in [("cidata", "1440"), ("CIDATA", "65536")] {
                let img = dir.path().join(format!("{label}-{size}.img"));
                let ok = std::process::Command::new("mkfs.vfat")
                    .args(["-C", "-n", label])
                    .arg(&img)
                    .arg(size)
                    .output()
                    .unwrap();
                assert!(ok.status.success(), "{ok:?}");
                let l = read_label(&img).unwrap().unwrap();
                assert_eq!(l.fstype, "vfat");
                assert!(l.label.eq_ignore_ascii_case("cidata"), "{l:?}");
                assert_eq!(DriveKind::from_label(&l.label), Some(DriveKind::NoCloud));
            }
        } else {
            eprintln!("skipped the vfat image: no mkfs.vfat");
        }
        if tool("xorriso") {
            let content = dir.path().join("content");
            std::fs::create_dir(&content).unwrap();
            std::fs::write(content.join("user-data"), "").unwrap();
            for label in ["cidata", "config-2"] {
                let iso = dir.path().join(format!("{label}.iso"));
                let ok = std::process::Command::new("xorriso")
                    .args(["-as", "mkisofs", "-quiet", "-J", "-r", "-V", label, "-o"])
                    .arg(&iso)
                    .arg(&content)
                    .output()
                    .unwrap();
                assert!(ok.status.success(), "{ok:?}");
                let l = read_label(&iso).unwrap().unwrap();
                assert_eq!(l.fstype, "iso9660");
                assert_eq!(l.label, label);
            }
        } else {
            eprintln!("skipped the ISO image: no xorriso");
        }
        // An ext4-looking or empty head is no config drive.
        assert_eq!(probe_label(&vec![0u8; PROBE_BYTES]), None);
        assert_eq!(probe_label(&[]), None);
    }

    #[test]
    fn find_picks_the_first_labelled_device_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sys");
        let dev = dir.path().join("dev");
        std::fs::create_dir_all(&sys).unwrap();
        std::fs::create_dir_all(&dev).unwrap();
        let mut iso = vec![0u8; PROBE_BYTES];
        iso[ISO_PVD] = 1;
        iso[ISO_PVD + 1..ISO_PVD + 6].copy_from_slice(b"CD001");
        iso[ISO_PVD + 40..ISO_PVD + 72].copy_from_slice(format!("{:<32}", "CIDATA").as_bytes());
        for (name, head) in [
            ("ram0", iso.clone()),
            ("vda", vec![0u8; 4096]),
            ("vdb", iso),
        ] {
            std::fs::create_dir(sys.join(name)).unwrap();
            std::fs::write(dev.join(name), head).unwrap();
        }
        let (path, kind, fstype) = find(&dev, &sys).unwrap();
        assert_eq!(path, dev.join("vdb"));
        assert_eq!((kind, fstype), (DriveKind::NoCloud, "iso9660"));
    }
}
