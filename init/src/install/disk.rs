//! Facts about the target disk (effects: sysfs, the device's bytes, mountinfo), for
//! [`super::plan::decide`]; and its partitions after a write.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::plan::{DiskFacts, PartitionFacts};
use crate::boot::blank;

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The kernel's name of a device node (`/dev/vda` -> `vda`), following links.
pub fn kernel_name(device: &Path) -> anyhow::Result<String> {
    let real = std::fs::canonicalize(device).with_context(|| format!("{}", device.display()))?;
    real.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .with_context(|| format!("{} has no name", device.display()))
}

/// Partitions of disk `name` the kernel knows: (kernel name, `major:minor`, GPT name).
pub fn partitions(sys_class_block: &Path, name: &str) -> Vec<(String, String, Option<String>)> {
    let dir = sys_class_block.join(name);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return vec![];
    };
    let mut v: Vec<_> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("partition").exists())
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let dev = read_trim(&e.path().join("dev"))?;
            let uevent = std::fs::read_to_string(e.path().join("uevent")).unwrap_or_default();
            let label = blank::partition_name(&uevent).map(str::to_string);
            Some((n, dev, label))
        })
        .collect();
    v.sort();
    v
}

/// Mount points whose source device is one of `devs` (`major:minor`), from mountinfo.
pub fn mounted(mountinfo: &str, devs: &[String]) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let dev = f.nth(2)?;
            let point = f.nth(1)?;
            devs.iter()
                .any(|d| d == dev)
                .then(|| PathBuf::from(point.replace("\\040", " ")))
        })
        .collect()
}

/// The device node of partition `name`, made from sysfs when no devtmpfs/udev made it.
pub fn partition_node(dev_dir: &Path, name: &str, majmin: &str) -> anyhow::Result<PathBuf> {
    let node = dev_dir.join(name);
    for _ in 0..20 {
        if node.exists() {
            return Ok(node);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (maj, min) = majmin
        .split_once(':')
        .with_context(|| format!("bad device number {majmin}"))?;
    nix::sys::stat::mknod(
        &node,
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(maj.parse()?, min.parse()?),
    )
    .with_context(|| format!("mknod {}", node.display()))?;
    Ok(node)
}

/// Everything [`super::plan::decide`] needs about `target`.
pub fn facts(target: &Path, dev_dir: &Path, sys_class_block: &Path) -> anyhow::Result<DiskFacts> {
    let name = kernel_name(target)?;
    let sys = sys_class_block.join(&name);
    let is_partition = sys.join("partition").exists();
    let read_only = read_trim(&sys.join("ro")).as_deref() == Some("1");
    let ends = blank::read_ends(target).with_context(|| format!("reading {}", target.display()))?;
    let mut devs: Vec<String> = read_trim(&sys.join("dev")).into_iter().collect();
    let mut parts = Vec::new();
    for (pname, majmin, _) in partitions(sys_class_block, &name) {
        devs.push(majmin);
        let device = dev_dir.join(&pname);
        let found = match blank::read_ends(&device) {
            Ok(e) => e.signatures(),
            // Cannot read it: say so rather than call it blank.
            Err(_) => vec![crate::blockdev::probe::Signature::UnknownData],
        };
        parts.push(PartitionFacts { device, found });
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    Ok(DiskFacts {
        device: target.to_path_buf(),
        bytes: ends.bytes,
        is_partition,
        read_only,
        found: ends.signatures(),
        partitions: parts,
        mounted: mounted(&mountinfo, &devs),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_mounts_of_the_disk_and_its_partitions() {
        let mi = "22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/root rw\n\
                  30 22 253:3 / /var/lib/nomad rw,noatime shared:9 - ext4 /dev/vda3 rw\n\
                  31 22 8:1 / /mnt/my\\040disk rw shared:10 - vfat /dev/sda1 rw\n";
        assert_eq!(
            mounted(mi, &["253:0".into(), "253:3".into()]),
            vec![PathBuf::from("/var/lib/nomad")]
        );
        assert_eq!(
            mounted(mi, &["8:1".into()]),
            vec![PathBuf::from("/mnt/my disk")]
        );
        assert!(mounted(mi, &["9:9".into()]).is_empty());
    }
}
