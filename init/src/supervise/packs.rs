//! Applying the pack set: when Nomad becomes healthy, on SIGHUP, and every interval.
//!
//! The applier reads remote, untrusted input (archives, templates), so it never runs inside
//! PID 1: each apply is a child process, `nomad-init packs apply` of this very binary, one
//! at a time. The child starts inside its own cgroup with a memory limit (and a data rlimit,
//! which also holds where no memory cgroup exists), gets a wall-clock deadline, and is
//! stopped first at shutdown. Whatever a pack does, PID 1 goes on reaping, answering
//! signals and supervising Nomad; the worst case is a killed apply that is reported.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

pub use super::limited::RunEnd;
use super::limited::{self, Limits};
use super::reaper::{ExitStatus, Reaper};
use crate::boot::config::PacksConfig;
use crate::log::Level;
use crate::slots::gate::PacksSeen;

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

    /// The limits each apply runs under.
    fn limits(&self) -> Limits {
        Limits {
            name: "packs",
            cgroup: "applier",
            memory_mib: self.config.memory_max_mib,
            // The applier is a handful of threads (and its render children).
            pids_max: 64,
            deadline: Duration::from_secs(self.config.deadline_secs),
            cgroup_root: self.cgroup_root.clone(),
            stderr_level: Level::Warn,
        }
    }

    /// One apply in a child process, bounded by the deadline; returns how it ended.
    pub async fn run_once(&self, stop: &mut watch::Receiver<bool>) -> RunEnd {
        let started = Instant::now();
        let mut cmd = match self.command() {
            Ok(cmd) => cmd,
            Err(e) => {
                crate::error!("packs: cannot apply: {e}");
                return RunEnd::Lost;
            }
        };
        // An apply is safe to interrupt (every write is one idempotent request), and
        // shutdown must not wait for a slow pack.
        let ran = limited::run(&self.reaper, &mut cmd, &self.limits(), Some(stop)).await;
        let secs = started.elapsed().as_secs_f64();
        let limit = self.config.memory_max_mib;
        match &ran.end {
            RunEnd::Exited(ExitStatus::Exited(0)) => {
                crate::info!("packs: apply finished in {secs:.1} s")
            }
            RunEnd::Exited(ExitStatus::Exited(code)) => crate::warn!(
                "packs: apply ended with exit code {code} after {secs:.1} s (see the lines above)"
            ),
            RunEnd::Exited(status) => {
                let why = if ran.oom_killed {
                    format!("was killed by its memory limit of {limit} MiB (packs.memory_max_mib)")
                } else {
                    format!(
                        "died with {status}: a pack may have exhausted its memory ({limit} MiB) or its stack"
                    )
                };
                crate::error!("packs: after {secs:.1} s the apply {why}; nothing else is affected")
            }
            RunEnd::DeadlinePassed => crate::error!(
                "packs: the apply ran past its deadline of {} s (packs.deadline_secs) and was killed",
                self.config.deadline_secs
            ),
            RunEnd::Stopped => crate::info!("packs: stopped the running apply"),
            RunEnd::Lost => {}
        }
        ran.end
    }
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
}
