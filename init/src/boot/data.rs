//! The persistent data partition (Nomad's data_dir), or a tmpfs when there is none.

use anyhow::Context;
use nix::mount::MsFlags;

use crate::boot::config::DataConfig;
use crate::sys::block;
use crate::sys::mount::{mount_idempotent, MountOutcome};
use crate::sys::root::Root;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataMount {
    /// The labelled partition, mounted from this device.
    Partition(std::path::PathBuf),
    /// No partition: state lives in RAM and is lost at reboot.
    Tmpfs,
}

/// First boot on a larger disk: stretch the partition to the end of the disk (before the
/// mount), see [`crate::boot::grow`]. Failures are warnings: the data stays usable.
fn grow_partition_hook(root: &Root, device: &std::path::Path) {
    if root.is_test() {
        return;
    }
    if let Err(e) = crate::boot::grow::grow_partition(device, &root.path("/sys/class/block")) {
        crate::warn!("not growing the data partition {}: {e:#}", device.display());
    }
}

/// ... then the mounted filesystem to fill the partition (online).
fn grow_filesystem_hook(root: &Root, device: &std::path::Path, mount_point: &std::path::Path) {
    if root.is_test() {
        return;
    }
    if let Err(e) = crate::boot::grow::grow_filesystem(device, mount_point) {
        crate::warn!(
            "not growing the data filesystem on {}: {e:#}",
            device.display()
        );
    }
}

/// No filesystem carries the label: a blank partition of ours (GPT name = the label) gets
/// one, see [`crate::boot::blank`]. Returns the device formatted, if any.
fn format_blank_hook(root: &Root, cfg: &DataConfig) -> Option<std::path::PathBuf> {
    if root.is_test() {
        return None;
    }
    let mut formatted = None;
    for outcome in crate::boot::blank::format_blank(
        &root.path("/dev"),
        &root.path("/sys/class/block"),
        &cfg.label,
        crate::boot::blank::MKFS_DEADLINE,
    ) {
        match outcome {
            Ok(crate::boot::blank::Outcome::Formatted(dev)) => formatted = formatted.or(Some(dev)),
            Ok(crate::boot::blank::Outcome::NotBlank(dev, what)) => crate::warn!(
                "partition {} is named {} but holds {what}; not formatting it",
                dev.display(),
                cfg.label
            ),
            Err(e) => crate::error!("making the data filesystem: {e:#}"),
        }
    }
    formatted
}

pub fn mount(root: &Root, cfg: &DataConfig) -> anyhow::Result<DataMount> {
    let mountinfo = std::path::Path::new("/proc/self/mountinfo");
    let found = block::find_by_label(
        &root.path("/dev"),
        &root.path("/sys/class/block"),
        &cfg.label,
    )
    .or_else(|| format_blank_hook(root, cfg));
    if let Some(device) = found {
        grow_partition_hook(root, &device);
        let dev = device.to_string_lossy();
        let outcome = mount_idempotent(
            mountinfo,
            &dev,
            &cfg.mount_point,
            &cfg.fstype,
            MsFlags::MS_NOATIME,
            None,
            0o755,
        )
        .with_context(|| format!("data partition {} (label {})", dev, cfg.label))?;
        if outcome == MountOutcome::AlreadyMounted {
            crate::info!(
                "data partition already mounted at {}",
                cfg.mount_point.display()
            );
        }
        grow_filesystem_hook(root, &device, &cfg.mount_point);
        return Ok(DataMount::Partition(device));
    }
    crate::warn!(
        "no filesystem labelled {} found; {} is a tmpfs and Nomad's state will not survive a reboot",
        cfg.label,
        cfg.mount_point.display()
    );
    mount_tmpfs(cfg)
}

/// A tmpfs at the data mount point: the fallback when there is no usable partition.
pub fn mount_tmpfs(cfg: &DataConfig) -> anyhow::Result<DataMount> {
    let mountinfo = std::path::Path::new("/proc/self/mountinfo");
    mount_idempotent(
        mountinfo,
        "nomad-data",
        &cfg.mount_point,
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
        0o755,
    )?;
    Ok(DataMount::Tmpfs)
}
