//! Running the Nomad agent: start, pump its output, watch its health, restart it with
//! backoff when it exits, stop it gracefully at shutdown.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::sync::{oneshot, watch};

use super::backoff::Backoff;
use super::output::{pump, Filter};
use super::reaper::{ExitStatus, Reaper};
use crate::boot::config::NomadConfig;

#[derive(Clone)]
pub struct Supervisor {
    pub config: NomadConfig,
    pub addr: String,
    pub reaper: Arc<Reaper>,
    /// True while Nomad's API answers healthy since its last start.
    pub healthy: watch::Sender<bool>,
    /// Becomes true when the machine shuts down.
    pub stop: watch::Receiver<bool>,
}

/// The command line, e.g. `nomad agent -config=/etc/nomad.d/init.json`.
pub fn command(config: &NomadConfig) -> Command {
    let mut cmd = Command::new(&config.binary);
    cmd.arg("agent")
        .arg(format!("-config={}", config.config.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The kernel starts init without PATH; Nomad and its raw_exec tasks need one.
    if std::env::var_os("PATH").is_none() {
        cmd.env("PATH", DEFAULT_PATH);
    }
    cmd
}

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Supervisor {
    /// Runs until shutdown; Nomad is restarted whenever it exits, forever.
    pub async fn run(mut self) {
        let mut backoff =
            Backoff::for_nomad(Duration::from_secs(self.config.restart_backoff_max_secs));
        let client = super::api::client().ok();
        loop {
            if self.stopping() {
                return;
            }
            let started = Instant::now();
            let outcome = match self.reaper.spawn(&mut command(&self.config)) {
                Ok((mut child, exited)) => {
                    let pid = child.id() as i32;
                    crate::info!(
                        "started {} agent -config={} (pid {pid})",
                        self.config.binary.display(),
                        self.config.config.display()
                    );
                    let filter = Filter::NomadLog {
                        min: self.config.console_level,
                    };
                    let mut drained = Vec::new();
                    if let Some(out) = child.stdout.take() {
                        drained.extend(pump("nomad", "stdout", out, filter));
                    }
                    if let Some(err) = child.stderr.take() {
                        drained.extend(pump("nomad", "stderr", err, filter));
                    }
                    // `child` is dropped without waiting: its status comes from the reaper.
                    drop(child);
                    let end = self.watch(pid, exited, client.as_ref()).await;
                    // Let its last words reach the console before its exit is reported.
                    // Bounded: a grandchild may hold the pipe open for ever.
                    let _ = tokio::time::timeout(
                        Duration::from_millis(250),
                        futures::future::join_all(drained),
                    )
                    .await;
                    match end {
                        End::Exited(status) => status,
                        End::Stopped(Some(status)) => {
                            crate::info!("nomad stopped with {status}");
                            return;
                        }
                        End::Stopped(None) => return,
                    }
                }
                Err(e) => {
                    crate::error!("cannot start {}: {e}", self.config.binary.display());
                    None
                }
            };
            let _ = self.healthy.send(false);
            let delay = backoff.on_exit(started.elapsed());
            match outcome {
                Some(status) => crate::warn!(
                    "nomad exited with {status} after {:.1} s; restarting in {} s",
                    started.elapsed().as_secs_f64(),
                    delay.as_secs()
                ),
                None => crate::warn!("nomad is not running; restarting in {} s", delay.as_secs()),
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.stop.changed() => return,
            }
        }
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Waits for the child to exit, or for shutdown (then stops the child), marking
    /// health meanwhile.
    async fn watch(
        &mut self,
        pid: i32,
        mut exited: oneshot::Receiver<ExitStatus>,
        client: Option<&reqwest::Client>,
    ) -> End {
        let health = wait_healthy(client, &self.addr);
        tokio::pin!(health);
        let mut announced = false;
        loop {
            tokio::select! {
                status = &mut exited => return End::Exited(status.ok()),
                _ = &mut health, if !announced => {
                    announced = true;
                    crate::info!("nomad API healthy at {}", self.addr);
                    let _ = self.healthy.send(true);
                }
                _ = self.stop.changed() => {
                    let _ = self.healthy.send(false);
                    let timeout = Duration::from_secs(self.config.stop_timeout_secs);
                    return End::Stopped(stop_child(pid, exited, timeout).await);
                }
            }
        }
    }
}

/// How one run of Nomad ended; the status is `None` when it got lost.
enum End {
    Exited(Option<ExitStatus>),
    Stopped(Option<ExitStatus>),
}

/// Polls the health endpoint once a second until it answers 200.
async fn wait_healthy(client: Option<&reqwest::Client>, addr: &str) {
    let Some(client) = client else {
        return std::future::pending().await;
    };
    let mut logged = false;
    loop {
        match super::api::healthy(client, addr).await {
            Ok(()) => return,
            Err(e) if !logged => {
                crate::debug!("waiting for the nomad API at {addr}: {e:#}");
                logged = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// SIGINT (Nomad leaves gracefully), then SIGKILL after `timeout`. Returns the exit status
/// (the caller logs it once the child's output is drained).
pub async fn stop_child(
    pid: i32,
    mut exited: oneshot::Receiver<ExitStatus>,
    timeout: Duration,
) -> Option<ExitStatus> {
    crate::info!(
        "stopping nomad (pid {pid}): SIGINT, SIGKILL after {} s",
        timeout.as_secs()
    );
    if let Err(e) = crate::sys::process::signal(pid, Signal::SIGINT) {
        crate::warn!("kill({pid}, SIGINT): {e}");
    }
    match tokio::time::timeout(timeout, &mut exited).await {
        Ok(Ok(status)) => return Some(status),
        Ok(Err(_)) => {
            crate::warn!("nomad's exit status was lost");
            return None;
        }
        Err(_) => crate::warn!("nomad still running after {} s: SIGKILL", timeout.as_secs()),
    }
    if let Err(e) = crate::sys::process::signal(pid, Signal::SIGKILL) {
        crate::warn!("kill({pid}, SIGKILL): {e}");
    }
    match tokio::time::timeout(Duration::from_secs(5), exited).await {
        Ok(Ok(status)) => Some(status),
        _ => {
            crate::error!("nomad (pid {pid}) did not die after SIGKILL");
            None
        }
    }
}
