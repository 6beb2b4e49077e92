//! `[upgrade]` of the machine's configuration (docs/machine-config.md): on a boot of the
//! committed slot, once Nomad is healthy, PID 1 runs `nomad-init upgrade` (this binary) as
//! a child with a memory limit and a deadline when the requested payload is not what runs
//! here, and reboots into the trial when it armed one. A payload whose trial was rolled
//! back on this machine is not tried again (`crate::slots::wanted`).

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::reaper::{ExitStatus, Reaper};
use crate::log::Level;
use crate::power::{Event, PowerAction};
use crate::slots::trial::Committed;
use crate::slots::wanted::{self, Decision, Wanted};

/// The request as the machine configuration wrote it, in the machine directory.
pub use crate::machine::paths::UPGRADE_REQUEST as REQUEST_FILE;
/// The child's whole run: a slow download of a few hundred MiB, and the read-back.
pub const DEADLINE: Duration = Duration::from_secs(2 * 3600);
/// The tag of the child's lines on the console (and its cgroup): PID 1 adds it, so the
/// child's own lines carry none.
pub const TAG: &str = "upgrade";
/// The child streams in 1 MiB chunks: this is ample and bounds a runaway.
const MEMORY_MIB: u64 = 256;

/// The `[upgrade]` request of this boot's machine configuration, if any (a bad file is
/// logged and ignored).
pub fn requested(machine_dir: &Path) -> Option<Wanted> {
    let path = machine_dir.join(REQUEST_FILE);
    let text = match crate::fsutil::read_bounded_to_string(&path, 64 * 1024) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            crate::error!("upgrade: {}: {e}; no upgrade", path.display());
            return None;
        }
    };
    let wanted = serde_json::from_str(&text)
        .ok()
        .and_then(|v| Wanted::from_json(&v));
    if wanted.is_none() {
        crate::error!(
            "upgrade: {} is not an upgrade request; no upgrade",
            path.display()
        );
    }
    wanted
}

/// The child's command line. The URL (which may carry credentials) travels in the
/// environment, never in argv; PID 1 asks for the reboot itself.
pub fn command(program: &Path, w: &Wanted) -> Command {
    let mut cmd = Command::new(program);
    cmd.arg0("nomad-init")
        .args(["upgrade", "--no-reboot", "--sha256"])
        .arg(&w.sha256)
        .env_clear()
        .env("PATH", super::nomad::DEFAULT_PATH)
        .env(crate::slots::upgrade::SOURCE_ENV, &w.url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// What PID 1 needs to carry out an `[upgrade]`.
#[derive(Debug)]
pub struct Upgrader {
    pub wanted: Wanted,
    /// None when this boot is not of the committed slot (or the disk has no slots).
    pub committed: Option<Committed>,
    pub rolled_back_file: PathBuf,
    pub reaper: Arc<Reaper>,
    pub program: PathBuf,
}

impl Upgrader {
    /// Waits for Nomad to be healthy, decides, and upgrades when due; a successful upgrade
    /// asks for a reboot (into the trial).
    pub async fn run(
        self,
        mut healthy: watch::Receiver<bool>,
        events: mpsc::UnboundedSender<Event>,
    ) {
        let name = self.wanted.name();
        let Some(committed) = &self.committed else {
            crate::info!(
                "upgrade: [upgrade] asks for {name}; {}",
                match wanted::decide(&self.wanted, false, None, &[]) {
                    Decision::NotNow(why) => why,
                    _ => "not on this boot",
                }
            );
            return;
        };
        while !*healthy.borrow_and_update() {
            if healthy.changed().await.is_err() {
                return;
            }
        }
        let rolled_back = wanted::read_rolled_back(&self.rolled_back_file);
        match wanted::decide(&self.wanted, true, committed.sha256.as_deref(), &rolled_back) {
            Decision::UpToDate => {
                crate::info!("upgrade: slot {} runs {name} already", committed.slot);
            }
            Decision::RolledBackBefore => crate::warn!(
                "upgrade: NOT trying {name} again: its trial was rolled back on this machine (listed in {}; give [upgrade] another image)",
                self.rolled_back_file.display()
            ),
            Decision::NotNow(why) => crate::info!("upgrade: {name}: {why}"),
            Decision::Upgrade => {
                crate::info!(
                    "upgrade: the machine configuration asks for {name} from {}; slot {} runs {}",
                    crate::redact::url(&self.wanted.url),
                    committed.slot,
                    committed.sha256.as_deref().unwrap_or("the image's own system")
                );
                if self.run_child().await {
                    let _ = events.send(Event::Power(PowerAction::Reboot));
                }
            }
        }
    }

    /// Runs `nomad-init upgrade`; true when it armed the trial.
    async fn run_child(&self) -> bool {
        let started = Instant::now();
        let mut cmd = command(&self.program, &self.wanted);
        // The same supervision as the applier's and the machine config's children: output
        // to the console, a data rlimit, a deadline (no cgroup: the upgrader has no peers).
        let limits = super::limited::Limits {
            name: TAG,
            cgroup: TAG,
            memory_mib: MEMORY_MIB,
            pids_max: 32,
            deadline: DEADLINE,
            cgroup_root: None,
            stderr_level: Level::Warn,
        };
        let status = match super::limited::run(&self.reaper, &mut cmd, &limits, None)
            .await
            .end
        {
            super::limited::RunEnd::Exited(s) => Some(s),
            _ => None,
        };
        let secs = started.elapsed().as_secs_f64();
        if status == Some(ExitStatus::Exited(0)) {
            crate::info!("upgrade: armed in {secs:.1} s; rebooting into the trial");
            true
        } else {
            crate::error!(
                "upgrade: failed after {secs:.1} s ({}); nothing armed, tried again at the next boot",
                status.map_or_else(|| "no exit status".to_string(), |s| s.to_string())
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted() -> Wanted {
        Wanted {
            url: "https://user:pw@images.example/nomados.slot?token=s3cr3t".into(),
            sha256: "ab".repeat(32),
            version: Some("2".into()),
        }
    }

    #[test]
    fn the_url_travels_in_the_environment_never_in_argv() {
        let cmd = command(Path::new("/proc/self/exe"), &wanted());
        let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into()).collect();
        assert_eq!(
            args,
            ["upgrade", "--no-reboot", "--sha256", &"ab".repeat(32)]
        );
        let env: Vec<(String, String)> = cmd
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_str()?.into(), v?.to_str()?.into())))
            .collect();
        assert!(env.contains(&(crate::slots::upgrade::SOURCE_ENV.into(), wanted().url)));
    }

    #[test]
    fn the_request_is_read_from_the_machine_directory() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(requested(d.path()), None);
        std::fs::write(d.path().join(REQUEST_FILE), wanted().to_json().to_string()).unwrap();
        assert_eq!(requested(d.path()), Some(wanted()));
        std::fs::write(d.path().join(REQUEST_FILE), "{\"url\": 1}").unwrap();
        assert_eq!(requested(d.path()), None);
    }

    /// The real child (a shell script standing in for nomad-init) under the real reaper:
    /// exit 0 asks for a reboot, a failure does not; an up-to-date or rolled-back payload
    /// starts no child at all.
    #[tokio::test]
    async fn a_due_upgrade_runs_the_child_and_reboots_only_when_it_armed() {
        let d = tempfile::tempdir().unwrap();
        let ran = d.path().join("ran");
        let script = |code: i32| {
            let p = d.path().join(format!("fake-{code}"));
            std::fs::write(
                &p,
                format!(
                    "#!/bin/sh\necho \"$@ $NOMADOS_UPGRADE_SOURCE\" >> {}\nexit {code}\n",
                    ran.display()
                ),
            )
            .unwrap();
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
            p
        };
        let esp = crate::slots::Esp::at(d.path());
        let up = |program: PathBuf, running: Option<String>| Upgrader {
            wanted: wanted(),
            committed: Some(Committed {
                esp: esp.clone(),
                slot: crate::slots::Slot::A,
                sha256: running,
            }),
            rolled_back_file: d.path().join("rolled-back"),
            reaper: Arc::new(Reaper::new()),
            program,
        };
        let go = |u: Upgrader| async move {
            let (_h, h_rx) = watch::channel(true);
            let (tx, mut rx) = mpsc::unbounded_channel();
            let reaper = u.reaper.clone();
            let reap = tokio::spawn(async move {
                loop {
                    reaper.reap();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
            tokio::time::timeout(Duration::from_secs(20), u.run(h_rx, tx))
                .await
                .unwrap();
            reap.abort();
            rx.try_recv().ok()
        };
        let event = go(up(script(0), None)).await;
        assert!(matches!(event, Some(Event::Power(PowerAction::Reboot))));
        let line = std::fs::read_to_string(&ran).unwrap();
        assert!(
            line.contains("--sha256") && line.contains("token=s3cr3t"),
            "{line}"
        );
        assert!(go(up(script(3), None)).await.is_none(), "failed: no reboot");
        std::fs::remove_file(&ran).unwrap();
        assert!(go(up(script(0), Some("ab".repeat(32)))).await.is_none());
        wanted::record_rolled_back(&d.path().join("rolled-back"), &"ab".repeat(32)).unwrap();
        assert!(go(up(script(0), None)).await.is_none());
        assert!(
            !ran.exists(),
            "no child for an up-to-date or rolled-back payload"
        );
    }
}
