//! The asynchronous part of shutdown: drain, end every other process. The synchronous end
//! (sync, unmount, reboot(2)) runs after the runtime is gone, in `pid1::finish`.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;

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
