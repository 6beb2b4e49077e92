//! Shutdown: drain, stop Nomad, end every other process, then (synchronously, after the
//! runtime is gone) sync, unmount and reboot(2).

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::boot::stage;
use crate::pid1::PowerAction;
use crate::sys::mount::{current_mounts, MountEntry};
use crate::sys::root::Root;

/// Drains this node through the API, bounded by `timeout`; skipped when Nomad is not up.
pub async fn drain(api: &crate::nomad::Settings, timeout: Duration) {
    use crate::nomad::{Client, Drain};
    if timeout.is_zero() {
        return;
    }
    let client = match Client::new(api) {
        Ok(c) => c,
        Err(e) => {
            crate::warn!("not draining: {e}");
            return;
        }
    };
    let bounded =
        tokio::time::timeout(timeout + Duration::from_secs(2), client.drain_self(timeout));
    match bounded.await {
        Ok(Ok(Drain::Done(node))) => crate::info!("drained node {node}"),
        Ok(Ok(Drain::TimedOut(node))) => crate::warn!(
            "node {node} still draining after {} s; going on",
            timeout.as_secs()
        ),
        Ok(Ok(Drain::NotAClient)) => {
            crate::info!("not draining: this agent is not a client")
        }
        Ok(Ok(Drain::AloneInCluster)) => {
            crate::info!("not draining: no other node could take the allocations")
        }
        Ok(Ok(Drain::AlreadyIneligible(node))) => {
            crate::info!("not draining: node {node} is already draining or ineligible")
        }
        Ok(Err(e)) => crate::info!("not draining: nomad API unavailable ({e})"),
        Err(_) => crate::warn!("not draining: nomad API did not answer in time"),
    }
}

/// SIGTERM to every remaining process, SIGKILL to those still there after `grace`.
/// The signal task keeps reaping meanwhile.
pub async fn terminate_all(proc_dir: &Path, grace: Duration) {
    for (sig, wait) in [
        (Signal::SIGTERM, grace),
        (Signal::SIGKILL, Duration::from_secs(2)),
    ] {
        let left = crate::sys::process::user_processes(proc_dir);
        if left.is_empty() {
            crate::info!("no processes left");
            return;
        }
        crate::info!("sending {sig} to {} remaining process(es)", left.len());
        if let Err(e) = crate::sys::process::signal_all(sig) {
            crate::warn!("kill(-1, {sig}): {e}");
        }
        let until = tokio::time::Instant::now() + wait;
        while tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if crate::sys::process::user_processes(proc_dir).is_empty() {
                crate::info!("all processes ended");
                return;
            }
        }
    }
    let left = crate::sys::process::user_processes(proc_dir);
    crate::warn!("{} process(es) survived SIGKILL: {left:?}", left.len());
}

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
    stage::run_as("shutdown", "synced filesystems", || {
        crate::sys::power::sync();
        Ok(())
    });
    stage::run_as("shutdown", "unmounted filesystems", || {
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
    crate::pid1::idle_forever()
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
