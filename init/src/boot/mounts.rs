//! The boot mount table, walked by one idempotent helper.

use std::path::Path;

use anyhow::Context;
use nix::mount::MsFlags;

use crate::sys::mount::{mount_idempotent, MountOutcome};
use crate::sys::root::Root;

#[derive(Debug)]
pub struct MountSpec {
    pub source: &'static str,
    pub target: &'static str,
    pub fstype: &'static str,
    pub flags: MsFlags,
    pub data: Option<&'static str>,
    pub mode: u32,
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// In mount order: parents before children.
pub const TABLE: &[MountSpec] = &[
    MountSpec {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
        mode: 0o555,
    },
    MountSpec {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
        mode: 0o555,
    },
    MountSpec {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MsFlags::MS_NOSUID,
        data: Some("mode=0755"),
        mode: 0o755,
    },
    MountSpec {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: Some("mode=0620,ptmxmode=0666"),
        mode: 0o755,
    },
    MountSpec {
        source: "shm",
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=1777"),
        mode: 0o1777,
    },
    MountSpec {
        source: "run",
        target: "/run",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=0755"),
        mode: 0o755,
    },
    MountSpec {
        source: "tmp",
        target: "/tmp",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=1777"),
        mode: 0o1777,
    },
    MountSpec {
        source: "cgroup2",
        target: "/sys/fs/cgroup",
        fstype: "cgroup2",
        flags: NOSUID_NODEV_NOEXEC,
        data: Some("nsdelegate"),
        mode: 0o555,
    },
];

/// Mounts the whole table under `root`. Every entry is tried; the error lists those that
/// failed. Returns how many were mounted now and how many were already there.
pub fn mount_all(root: &Root) -> anyhow::Result<(usize, usize)> {
    // Until /proc is mounted there is no mountinfo; that just means "nothing is mounted".
    let mountinfo = Path::new("/proc/self/mountinfo");
    let (mut mounted, mut present) = (0, 0);
    let mut failures = Vec::new();
    for m in TABLE {
        let target = root.path(m.target);
        match mount_idempotent(
            mountinfo, m.source, &target, m.fstype, m.flags, m.data, m.mode,
        ) {
            Ok(MountOutcome::Mounted) => mounted += 1,
            Ok(MountOutcome::AlreadyMounted) => present += 1,
            Err(e) => failures.push(e.to_string()),
        }
    }
    if !failures.is_empty() {
        anyhow::bail!("{}", failures.join("; "));
    }
    Ok((mounted, present))
}

/// Makes sure file descriptors 0, 1 and 2 are open on the console (the kernel leaves them
/// closed when the root filesystem had no /dev/console at exec time).
pub fn console_fds(root: &Root) -> anyhow::Result<()> {
    if crate::sys::fd::is_open(2) {
        return Ok(());
    }
    let path = root.path("/dev/console");
    let console = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    crate::sys::fd::replace_stdio(&console).context("dup2 console")
}
