//! The synchronous end of PID 1, after the runtime is gone: sync, unmount, remount `/`
//! read-only, reboot(2).

use std::path::{Path, PathBuf};

use crate::boot::stage::{self, Stage};
use crate::power::PowerAction;
use crate::sys::mount::{current_mounts, MountEntry};
use crate::sys::root::Root;

/// Mount points to take down, deepest (most recent) first: everything except `/`, or only
/// what lies under the test root.
pub fn unmount_order(entries: &[MountEntry], root: &Root) -> Vec<PathBuf> {
    entries
        .iter()
        .rev()
        .map(|e| e.mount_point.clone())
        .filter(|p| p != Path::new("/") && root.contains(p))
        .filter(|p| !root.is_test() || p != &root.path("/"))
        .collect()
}

/// The synchronous end: sync, unmount, remount / read-only, reboot(2). Never returns.
pub fn finish(action: PowerAction, root: &Root) -> ! {
    stage::run(Stage::Sync, || {
        crate::sys::power::sync();
        Ok(())
    });
    stage::run(Stage::Unmount, || {
        let entries = current_mounts(Path::new("/proc/self/mountinfo"));
        let order = unmount_order(&entries, root);
        let mut failed = 0;
        for target in &order {
            if let Err(e) = crate::sys::mount::unmount(target) {
                crate::debug!("{e}");
                failed += 1;
            }
        }
        if !root.is_test() {
            if let Err(e) = crate::sys::mount::remount_read_only(Path::new("/")) {
                crate::warn!("{e}");
            }
        }
        crate::sys::power::sync();
        if failed > 0 {
            anyhow::bail!("{failed} of {} could not be unmounted", order.len());
        }
        Ok(())
    });
    crate::info!(
        "{}",
        match action {
            PowerAction::Poweroff => "powering off",
            PowerAction::Reboot => "rebooting",
            PowerAction::Halt => "halting",
        }
    );
    let Err(e) = crate::sys::power::reboot(action);
    crate::error!("reboot(2) failed: {e}");
    super::idle_forever()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::mount::parse_mountinfo;

    const TABLE: &str = "\
1 0 8:1 / / rw - ext4 /dev/sda1 rw
2 1 0:2 / /proc rw - proc proc rw
3 1 0:3 / /tmp/t rw - tmpfs tmpfs rw
4 3 0:4 / /tmp/t/proc rw - proc proc rw
5 1 0:5 / /sys rw - sysfs sysfs rw
6 3 0:6 / /tmp/t/run rw - tmpfs run rw
";

    #[test]
    fn unmounts_newest_first_never_root_and_only_inside_a_test_root() {
        let e = parse_mountinfo(TABLE);
        let real: Vec<PathBuf> = unmount_order(&e, &Root::real());
        assert_eq!(
            real,
            ["/tmp/t/run", "/sys", "/tmp/t/proc", "/tmp/t", "/proc"].map(PathBuf::from)
        );
        let test = unmount_order(&e, &Root::test("/tmp/t"));
        assert_eq!(test, ["/tmp/t/run", "/tmp/t/proc"].map(PathBuf::from));
    }
}
