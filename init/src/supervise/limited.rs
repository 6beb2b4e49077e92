//! Running one untrusted job as a child of PID 1 under limits: its own cgroup (memory,
//! swap, tasks) under the init's, a data rlimit that holds even where no memory cgroup
//! exists, a wall-clock deadline, and an early stop at shutdown. The pack applier
//! ([`super::packs`]) and the machine configuration ([`super::machine`]) both run this
//! way; whatever the child does, PID 1 goes on reaping, answering signals and supervising.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::{oneshot, watch};

use super::output::{pump, until_drained, Filter};
use super::reaper::{ExitStatus, Reaper};
use crate::log::Level;
use crate::sys::process::ChildLimits;

/// How long a stopped child gets between SIGTERM and SIGKILL at shutdown.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// How long a SIGKILLed child may take to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// The limits of one kind of child.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Tag of its log lines.
    pub name: &'static str,
    /// Its cgroup under the root.
    pub cgroup: &'static str,
    /// `memory.max` of its cgroup, and its data rlimit.
    pub memory_mib: u64,
    /// `pids.max` of its cgroup.
    pub pids_max: u32,
    pub deadline: Duration,
    /// The cgroup v2 mount to create its cgroup under; `None` where PID 1 does not own
    /// the cgroup tree (test mode): the data rlimit still holds.
    pub cgroup_root: Option<PathBuf>,
    /// Level of its stderr lines on the console (its stdout is shown at info).
    pub stderr_level: Level,
}

/// How one run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    Exited(ExitStatus),
    /// Still running at the deadline: killed.
    DeadlinePassed,
    /// The machine is shutting down: stopped.
    Stopped,
    /// Could not be started, or its status was lost (logged where it happened).
    Lost,
}

/// A run's end, and whether its cgroup's memory limit killed something during it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    pub end: RunEnd,
    pub oom_killed: bool,
}

/// Runs `cmd` under `limits` until it exits, passes its deadline (killed) or `stop` turns
/// true (SIGTERM, then SIGKILL). Its output is pumped to the console; its status comes
/// from the reaper, never from `wait`.
pub async fn run(
    reaper: &Arc<Reaper>,
    cmd: &mut Command,
    limits: &Limits,
    stop: Option<&mut watch::Receiver<bool>>,
) -> Ran {
    let name = limits.name;
    let cgroup = limits.cgroup_root.as_deref().and_then(|root| {
        prepare(root, limits)
            .map_err(|e| {
                crate::warn!("{name}: no cgroup ({e:#}); the data rlimit still holds");
            })
            .ok()
    });
    // memory.events counts since the cgroup was made: compare with what it said before.
    let oom_kills_before = cgroup.as_ref().map_or(0, Cgroup::oom_kills);
    let child_limits = ChildLimits {
        cgroup_procs: cgroup.as_ref().and_then(|c| c.procs_for_writing(name)),
        data_bytes: Some(limits.memory_mib * 1024 * 1024),
    };
    let (mut child, pid, exited) = match reaper.spawn_limited(cmd, child_limits) {
        Ok(spawned) => spawned,
        Err(e) => {
            crate::error!("{name}: cannot start {}: {e}", cmd.get_program().display());
            return Ran {
                end: RunEnd::Lost,
                oom_killed: false,
            };
        }
    };
    let mut drained = Vec::new();
    if let Some(out) = child.stdout.take() {
        drained.extend(pump(name, "stdout", out, Filter::All(Level::Info)));
    }
    if let Some(err) = child.stderr.take() {
        drained.extend(pump(name, "stderr", err, Filter::All(limits.stderr_level)));
    }
    drop(child);

    let status = wait_status(name, exited);
    tokio::pin!(status);
    let stopped = async {
        match stop {
            Some(rx) => {
                let _ = rx.changed().await;
            }
            None => std::future::pending().await,
        }
    };
    let end = tokio::select! {
        status = &mut status => status,
        _ = tokio::time::sleep(limits.deadline) => {
            crate::error!(
                "{name}: still running at its deadline of {} s; killing it",
                limits.deadline.as_secs()
            );
            kill(name, pid, cgroup.as_ref());
            // One run at a time: the next starts only once this one is gone.
            let _ = tokio::time::timeout(KILL_WAIT, &mut status).await;
            RunEnd::DeadlinePassed
        }
        _ = stopped => {
            crate::info!("{name}: stopping the running child (pid {pid})");
            if let Err(e) = crate::sys::process::signal(pid, Signal::SIGTERM) {
                crate::warn!("{name}: kill({pid}, SIGTERM): {e}");
            }
            if tokio::time::timeout(STOP_GRACE, &mut status).await.is_err() {
                kill(name, pid, cgroup.as_ref());
                let _ = tokio::time::timeout(KILL_WAIT, &mut status).await;
            }
            RunEnd::Stopped
        }
    };
    // Let its last lines reach the console first.
    until_drained(drained).await;
    let oom_killed = cgroup
        .as_ref()
        .is_some_and(|c| c.oom_kills() > oom_kills_before);
    Ran { end, oom_killed }
}

async fn wait_status(name: &str, exited: oneshot::Receiver<ExitStatus>) -> RunEnd {
    match exited.await {
        Ok(status) => RunEnd::Exited(status),
        Err(_) => {
            crate::error!("{name}: the child's exit status was lost");
            RunEnd::Lost
        }
    }
}

/// SIGKILL to the child, and to everything in its cgroup should it have started more.
fn kill(name: &str, pid: i32, cgroup: Option<&Cgroup>) {
    if let Some(c) = cgroup {
        c.kill_all();
    }
    if let Err(e) = crate::sys::process::signal(pid, Signal::SIGKILL) {
        crate::warn!("{name}: kill({pid}, SIGKILL): {e}");
    }
}

/// A child's cgroup (`<root>/<cgroup>`), set up before each run.
struct Cgroup {
    dir: PathBuf,
}

/// Creates (or reuses) `<root>/<cgroup>` with `memory.max` and a task limit. The
/// controllers were enabled on the root by the boot's cgroup stage.
fn prepare(root: &Path, limits: &Limits) -> anyhow::Result<Cgroup> {
    use anyhow::Context as _;
    let dir = root.join(limits.cgroup);
    std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
    let bytes = limits.memory_mib * 1024 * 1024;
    write_knob(&dir, "memory.max", &bytes.to_string())?;
    // Without swap on the appliance this is moot; where there is swap, a runaway child
    // must not push Nomad's memory out to it.
    let _ = write_knob(&dir, "memory.swap.max", "0");
    // A fork bomb in it stops here.
    let _ = write_knob(&dir, "pids.max", &limits.pids_max.to_string());
    Ok(Cgroup { dir })
}

fn write_knob(dir: &Path, knob: &str, value: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let path = dir.join(knob);
    std::fs::write(&path, value).with_context(|| format!("write {value} to {}", path.display()))
}

impl Cgroup {
    fn procs_for_writing(&self, name: &str) -> Option<std::fs::File> {
        let path = self.dir.join("cgroup.procs");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| crate::warn!("{name}: {}: {e}", path.display()))
            .ok()
    }

    /// `oom_kill` from `memory.events`: how often the limit killed something here.
    fn oom_kills(&self) -> u64 {
        std::fs::read_to_string(self.dir.join("memory.events"))
            .ok()
            .and_then(|s| oom_kills_in(&s))
            .unwrap_or(0)
    }

    fn kill_all(&self) {
        // cgroup.kill exists from Linux 5.14; the SIGKILL to the pid covers older kernels.
        let _ = std::fs::write(self.dir.join("cgroup.kill"), "1");
    }
}

/// The `oom_kill N` line of a `memory.events` file.
fn oom_kills_in(events: &str) -> Option<u64> {
    events
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kills_are_read_from_memory_events() {
        let events = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(oom_kills_in(events), Some(1));
        assert_eq!(oom_kills_in("low 0\n"), None);
    }

    #[test]
    fn the_cgroup_gets_its_limits_where_the_tree_allows() {
        // A plain directory stands in for the cgroup mount: the knobs are files.
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            name: "machine",
            cgroup: "machine-config",
            memory_mib: 64,
            pids_max: 32,
            deadline: Duration::from_secs(1),
            cgroup_root: Some(dir.path().into()),
            stderr_level: Level::Info,
        };
        let c = prepare(dir.path(), &limits).unwrap();
        assert_eq!(c.dir, dir.path().join("machine-config"));
        let knob = |k: &str| std::fs::read_to_string(c.dir.join(k)).unwrap();
        assert_eq!(knob("memory.max"), (64u64 << 20).to_string());
        assert_eq!(knob("memory.swap.max"), "0");
        assert_eq!(knob("pids.max"), "32");
    }
}
