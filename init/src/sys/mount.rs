//! Idempotent mounting: "already mounted there" is success, so the boot table can be
//! walked again (or after an initramfs already mounted `/proc`) without errors.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

/// One line of `/proc/self/mountinfo`, the parts we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// Parses `/proc/self/mountinfo` text. Malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            let mut right = right.split(' ');
            let fstype = right.next()?;
            let source = right.next().unwrap_or("");
            Some(MountEntry {
                mount_point: PathBuf::from(unescape_octal(mount_point)),
                fstype: fstype.to_string(),
                source: unescape_octal(source),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let digits = bytes.get(i + 1..i + 4).unwrap_or_default();
            if digits.len() == 3 && digits.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let v = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What is mounted on top at `target` (the last entry for it), if anything.
pub fn top_mount<'a>(entries: &'a [MountEntry], target: &Path) -> Option<&'a MountEntry> {
    entries.iter().rev().find(|e| e.mount_point == target)
}

/// Pure decision: is a filesystem of `fstype` already mounted on top at `target`?
pub fn already_mounted(entries: &[MountEntry], target: &Path, fstype: &str) -> bool {
    top_mount(entries, target).is_some_and(|e| e.fstype == fstype)
}

/// Pure decision after `mount(2)` failed: EBUSY with the same filesystem type on top of
/// the target means someone mounted it already (a race, or the kernel did), i.e. success.
pub fn error_means_mounted(
    errno: Errno,
    entries: &[MountEntry],
    target: &Path,
    fstype: &str,
) -> bool {
    errno == Errno::EBUSY && already_mounted(entries, target, fstype)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountOutcome {
    Mounted,
    AlreadyMounted,
}

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mkdir {path}: {source}")]
    Mkdir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mount -t {fstype} {source_dev} {path}: {errno}")]
    Mount {
        fstype: String,
        source_dev: String,
        path: PathBuf,
        errno: Errno,
    },
    #[error("umount {path}: {errno}")]
    Umount { path: PathBuf, errno: Errno },
}

/// Reads the current mount table (empty when `/proc` is not there yet).
pub fn current_mounts(mountinfo: &Path) -> Vec<MountEntry> {
    std::fs::read_to_string(mountinfo)
        .map(|t| parse_mountinfo(&t))
        .unwrap_or_default()
}

/// Mounts `fstype` from `source` on `target` (created with `mode` if missing) unless a
/// filesystem of that type is already mounted there.
pub fn mount_idempotent(
    mountinfo: &Path,
    source: &str,
    target: &Path,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
    mode: u32,
) -> Result<MountOutcome, MountError> {
    if already_mounted(&current_mounts(mountinfo), target, fstype) {
        return Ok(MountOutcome::AlreadyMounted);
    }
    if !target.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(target)
            .map_err(|source| MountError::Mkdir {
                path: target.to_path_buf(),
                source,
            })?;
    }
    match nix::mount::mount(Some(source), target, Some(fstype), flags, data) {
        Ok(()) => Ok(MountOutcome::Mounted),
        Err(errno) if error_means_mounted(errno, &current_mounts(mountinfo), target, fstype) => {
            Ok(MountOutcome::AlreadyMounted)
        }
        Err(errno) => Err(MountError::Mount {
            fstype: fstype.to_string(),
            source_dev: source.to_string(),
            path: target.to_path_buf(),
            errno,
        }),
    }
}

/// Unmounts `target`; falls back to a lazy detach when it is busy.
pub fn unmount(target: &Path) -> Result<(), MountError> {
    match nix::mount::umount2(target, MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(Errno::EBUSY) => {
            nix::mount::umount2(target, MntFlags::MNT_DETACH).map_err(|errno| MountError::Umount {
                path: target.to_path_buf(),
                errno,
            })
        }
        Err(errno) => Err(MountError::Umount {
            path: target.to_path_buf(),
            errno,
        }),
    }
}

/// Remounts `target` read-only (the last step before reboot for the root filesystem).
pub fn remount_read_only(target: &Path) -> Result<(), MountError> {
    nix::mount::mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(|errno| MountError::Mount {
        fstype: "(remount,ro)".into(),
        source_dev: String::new(),
        path: target.to_path_buf(),
        errno,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
24 22 0:22 / /sys rw,nosuid shared:2 - sysfs sysfs rw
40 22 0:35 / /mnt/with\\040space rw - tmpfs tmpfs rw
41 23 0:36 / /proc rw - tmpfs none rw
garbage line
";

    #[test]
    fn parses_mount_points_types_and_escapes() {
        let e = parse_mountinfo(SAMPLE);
        assert_eq!(e.len(), 5);
        assert_eq!(e[0].mount_point, PathBuf::from("/"));
        assert_eq!(e[0].fstype, "ext4");
        assert_eq!(e[0].source, "/dev/sda1");
        assert_eq!(e[3].mount_point, PathBuf::from("/mnt/with space"));
    }

    #[test]
    fn only_the_top_mount_counts() {
        let e = parse_mountinfo(SAMPLE);
        // /proc is covered by a tmpfs, so proc is NOT what one sees there any more.
        assert!(!already_mounted(&e, Path::new("/proc"), "proc"));
        assert!(already_mounted(&e, Path::new("/proc"), "tmpfs"));
        assert!(already_mounted(&e, Path::new("/sys"), "sysfs"));
        assert!(!already_mounted(&e, Path::new("/dev"), "devtmpfs"));
    }

    #[test]
    fn ebusy_is_success_only_when_the_same_type_is_there() {
        let e = parse_mountinfo(SAMPLE);
        assert!(error_means_mounted(
            Errno::EBUSY,
            &e,
            Path::new("/sys"),
            "sysfs"
        ));
        assert!(!error_means_mounted(
            Errno::EBUSY,
            &e,
            Path::new("/sys"),
            "tmpfs"
        ));
        assert!(!error_means_mounted(
            Errno::EPERM,
            &e,
            Path::new("/sys"),
            "sysfs"
        ));
        assert!(!error_means_mounted(
            Errno::EBUSY,
            &e,
            Path::new("/run"),
            "tmpfs"
        ));
    }
}
