//! Applying the pack set: when Nomad becomes healthy, on SIGHUP, and every interval.
//!
//! The applier reads remote, untrusted input (archives, templates), so it never runs inside
//! PID 1: each apply is a child process, `nomad-init packs apply` of this very binary, one
//! at a time. The child starts inside its own cgroup with a memory limit (and a data rlimit,
//! which also holds where no memory cgroup exists), gets a wall-clock deadline, and is
//! stopped first at shutdown. Whatever a pack does, PID 1 goes on reaping, answering
//! signals and supervising Nomad; the worst case is a killed apply that is reported.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::sync::{oneshot, watch, Notify};

use super::output::{pump, Filter};
use super::reaper::{ExitStatus, Reaper};
use crate::boot::config::PacksConfig;
use crate::log::Level;
use crate::slots::gate::PacksSeen;
use crate::sys::process::ChildLimits;

/// How long a stopped applier gets between SIGTERM and SIGKILL at shutdown.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// How long a SIGKILLed applier may take to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Everything an apply run needs from PID 1.
#[derive(Debug, Clone)]
pub struct Applier {
    pub config: PacksConfig,
    /// How to reach Nomad (address, token file, TLS); handed to the child as Nomad's own
    /// environment variables.
    pub api: crate::nomad::Settings,
    pub reaper: Arc<Reaper>,
    /// The cgroup v2 mount to create the applier's cgroup under; `None` where PID 1 does
    /// not own the cgroup tree (test mode).
    pub cgroup_root: Option<PathBuf>,
    /// The program to run (`/proc/self/exe` on a machine: this binary).
    pub program: PathBuf,
}

/// How one apply run ended.
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

/// Waits for triggers and applies, one run at a time, until `stop` turns true.
pub async fn run(
    applier: Applier,
    mut healthy: watch::Receiver<bool>,
    reapply: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
    seen: watch::Sender<PacksSeen>,
) {
    let interval = Duration::from_secs(applier.config.interval_secs);
    loop {
        let reason = tokio::select! {
            changed = healthy.changed() => {
                if changed.is_err() { return; }
                if !*healthy.borrow_and_update() { continue; }
                "nomad became healthy"
            }
            _ = reapply.notified() => "SIGHUP",
            _ = tokio::time::sleep(interval), if !interval.is_zero() => "interval",
            _ = stop.changed() => return,
        };
        if *stop.borrow() {
            return;
        }
        if !*healthy.borrow() {
            crate::info!("packs: {reason}: nomad is not healthy; applying once it is");
            continue;
        }
        crate::info!(
            "packs: applying {} ({reason})",
            applier.config.set.display()
        );
        let end = applier.run_once(&mut stop).await;
        if end == RunEnd::Stopped {
            return;
        }
        // A trial boot's health gate (crate::slots::trial) waits for this.
        let _ = seen.send(match end {
            RunEnd::Exited(ExitStatus::Exited(0)) => PacksSeen::Applied,
            RunEnd::Exited(s) => PacksSeen::Failed(format!("the applier ended with {s}")),
            RunEnd::DeadlinePassed => PacksSeen::Failed("the applier ran past its deadline".into()),
            RunEnd::Lost | RunEnd::Stopped => PacksSeen::Failed("the applier could not run".into()),
        });
    }
}

impl Applier {
    /// The child's command line and environment. The token travels in the environment
    /// (readable by root only, unlike argv), never on the command line; it is read from
    /// its file at every run, so a rotated token is picked up.
    pub fn command(&self) -> Result<Command, crate::nomad::ApiError> {
        let mut cmd = Command::new(&self.program);
        cmd.arg0("nomad-init")
            .args(["packs", "apply"])
            .arg(&self.config.set)
            .arg("--cache-dir")
            .arg(&self.config.cache_dir);
        if let Some(owner) = &self.config.owner {
            cmd.arg("--owner").arg(owner);
        }
        cmd.env_clear()
            .env("PATH", super::nomad::DEFAULT_PATH)
            .envs(self.settings().child_env()?)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Ok(cmd)
    }

    /// PID 1's Nomad settings, with `packs.token_file` in place of the machine's token
    /// where one is set.
    fn settings(&self) -> crate::nomad::Settings {
        match &self.config.token_file {
            Some(file) => crate::nomad::Settings {
                token: crate::nomad::TokenSource::File(file.clone()),
                ..self.api.clone()
            },
            None => self.api.clone(),
        }
    }

    /// One apply in a child process, bounded by the deadline; returns how it ended.
    pub async fn run_once(&self, stop: &mut watch::Receiver<bool>) -> RunEnd {
        let started = Instant::now();
        let cgroup = self.cgroup_root.as_deref().and_then(|root| {
            prepare_cgroup(root, self.config.memory_max_mib)
                .map_err(|e| {
                    crate::warn!(
                        "packs: no cgroup for the applier ({e:#}); the data rlimit still holds"
                    )
                })
                .ok()
        });
        // memory.events counts since the cgroup was made: compare with what it said before.
        let oom_kills_before = cgroup.as_ref().map_or(0, AppliedCgroup::oom_kills);
        let limits = ChildLimits {
            cgroup_procs: cgroup.as_ref().and_then(|c| c.procs_for_writing()),
            data_bytes: Some(self.config.memory_max_mib * 1024 * 1024),
        };
        let mut cmd = match self.command() {
            Ok(cmd) => cmd,
            Err(e) => {
                crate::error!("packs: cannot apply: {e}");
                return RunEnd::Lost;
            }
        };
        let (mut child, pid, exited) = match self.reaper.spawn_limited(&mut cmd, limits) {
            Ok(spawned) => spawned,
            Err(e) => {
                crate::error!("packs: cannot start {}: {e}", self.program.display());
                return RunEnd::Lost;
            }
        };
        let mut drained = Vec::new();
        if let Some(out) = child.stdout.take() {
            drained.extend(pump("packs", "stdout", out, Filter::All(Level::Info)));
        }
        if let Some(err) = child.stderr.take() {
            drained.extend(pump("packs", "stderr", err, Filter::All(Level::Warn)));
        }
        // Its status comes from the reaper, never from `wait`.
        drop(child);

        let deadline = Duration::from_secs(self.config.deadline_secs);
        let status = wait_status(exited);
        tokio::pin!(status);
        let end = tokio::select! {
            status = &mut status => status,
            _ = tokio::time::sleep(deadline) => {
                crate::error!(
                    "packs: the apply ran past its deadline of {} s (packs.deadline_secs); killing it",
                    deadline.as_secs()
                );
                kill(pid, cgroup.as_ref());
                // One run at a time: the next starts only once this one is gone.
                let _ = tokio::time::timeout(KILL_WAIT, &mut status).await;
                RunEnd::DeadlinePassed
            }
            _ = stop.changed() => {
                // An apply is safe to interrupt (every write is one idempotent request),
                // and shutdown must not wait for a slow pack.
                crate::info!("packs: stopping the running apply (pid {pid})");
                if let Err(e) = crate::sys::process::signal(pid, Signal::SIGTERM) {
                    crate::warn!("packs: kill({pid}, SIGTERM): {e}");
                }
                if tokio::time::timeout(STOP_GRACE, &mut status).await.is_err() {
                    kill(pid, cgroup.as_ref());
                    let _ = tokio::time::timeout(KILL_WAIT, &mut status).await;
                }
                RunEnd::Stopped
            }
        };
        // Let its last lines reach the console first; bounded, in case something inherited
        // the pipes.
        let _ = tokio::time::timeout(
            Duration::from_millis(250),
            futures::future::join_all(drained),
        )
        .await;
        let secs = started.elapsed().as_secs_f64();
        match &end {
            RunEnd::Exited(ExitStatus::Exited(0)) => {
                crate::info!("packs: apply finished in {secs:.1} s")
            }
            RunEnd::Exited(ExitStatus::Exited(code)) => crate::warn!(
                "packs: apply ended with exit code {code} after {secs:.1} s (see the lines above)"
            ),
            RunEnd::Exited(status) => {
                let limit = self.config.memory_max_mib;
                let why = match cgroup.as_ref().map(AppliedCgroup::oom_kills) {
                    Some(n) if n > oom_kills_before => {
                        format!("was killed by its memory limit of {limit} MiB (packs.memory_max_mib)")
                    }
                    _ => format!(
                        "died with {status}: a pack may have exhausted its memory ({limit} MiB) or its stack"
                    ),
                };
                crate::error!("packs: after {secs:.1} s the apply {why}; nothing else is affected")
            }
            RunEnd::DeadlinePassed | RunEnd::Stopped | RunEnd::Lost => {}
        }
        end
    }
}

async fn wait_status(exited: oneshot::Receiver<ExitStatus>) -> RunEnd {
    match exited.await {
        Ok(status) => RunEnd::Exited(status),
        Err(_) => {
            crate::error!("packs: the applier's exit status was lost");
            RunEnd::Lost
        }
    }
}

/// SIGKILL to the applier, and to everything in its cgroup should it have started more.
fn kill(pid: i32, cgroup: Option<&AppliedCgroup>) {
    if let Some(c) = cgroup {
        c.kill_all();
    }
    if let Err(e) = crate::sys::process::signal(pid, Signal::SIGKILL) {
        crate::warn!("packs: kill({pid}, SIGKILL): {e}");
    }
}

/// The applier's cgroup (`<root>/applier`), set up before each run.
struct AppliedCgroup {
    dir: PathBuf,
}

/// Creates (or reuses) `<root>/applier` with `memory.max` and a task limit. The
/// controllers were enabled on the root by the boot's cgroup stage.
fn prepare_cgroup(root: &Path, memory_mib: u64) -> anyhow::Result<AppliedCgroup> {
    use anyhow::Context as _;
    let dir = root.join("applier");
    std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
    let bytes = memory_mib * 1024 * 1024;
    write_knob(&dir, "memory.max", &bytes.to_string())?;
    // Without swap on the appliance this is moot; where there is swap, a runaway applier
    // must not push Nomad's memory out to it.
    let _ = write_knob(&dir, "memory.swap.max", "0");
    // The applier is a handful of threads; a fork bomb in it stops here.
    let _ = write_knob(&dir, "pids.max", "64");
    Ok(AppliedCgroup { dir })
}

fn write_knob(dir: &Path, knob: &str, value: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let path = dir.join(knob);
    std::fs::write(&path, value).with_context(|| format!("write {value} to {}", path.display()))
}

impl AppliedCgroup {
    fn procs_for_writing(&self) -> Option<std::fs::File> {
        let path = self.dir.join("cgroup.procs");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| crate::warn!("packs: {}: {e}", path.display()))
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
    fn the_child_gets_the_token_in_its_environment_never_in_argv() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cr3t\n").unwrap();
        let applier = Applier {
            config: PacksConfig {
                token_file: Some(token),
                owner: Some("edge".into()),
                ..PacksConfig::default()
            },
            api: crate::nomad::Settings::new("http://127.0.0.1:4646".to_string()),
            reaper: Arc::new(Reaper::new()),
            cgroup_root: None,
            program: "/proc/self/exe".into(),
        };
        let cmd = applier.command().unwrap();
        let args: Vec<_> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "packs",
                "apply",
                "/etc/nomados/packs",
                "--cache-dir",
                "/var/lib/nomad/nomados/packs-cache",
                "--owner",
                "edge"
            ]
        );
        assert!(!args.iter().any(|a| a.contains("s3cr3t")));
        let env: Vec<_> = cmd
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_str()?.to_string(), v?.to_str()?.to_string())))
            .collect();
        assert!(
            env.contains(&("NOMAD_TOKEN".into(), "s3cr3t".into())),
            "{env:?}"
        );
        assert!(env.contains(&("NOMAD_ADDR".into(), "http://127.0.0.1:4646".into())));
    }

    #[test]
    fn oom_kills_are_read_from_memory_events() {
        let events = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(oom_kills_in(events), Some(1));
        assert_eq!(oom_kills_in("low 0\n"), None);
    }
}
