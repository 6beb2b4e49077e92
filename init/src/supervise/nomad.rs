//! Running the Nomad agent: start, pump its output, watch its health, restart it with
//! backoff when it exits, stop it gracefully at shutdown.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::sync::{oneshot, watch, Notify};

use super::backoff::Backoff;
use super::output::{pump, Filter};
use super::reaper::{ExitStatus, Reaper};
use crate::boot::config::NomadConfig;
use crate::nomad::{self as api, Eligibility};

#[derive(Debug, Clone)]
pub struct Supervisor {
    pub config: NomadConfig,
    /// How to reach the agent's API (address, token file, TLS).
    pub api: api::Settings,
    pub reaper: Arc<Reaper>,
    /// True while Nomad's API answers healthy since its last start.
    pub healthy: watch::Sender<bool>,
    /// Becomes true when the machine shuts down.
    pub stop: watch::Receiver<bool>,
    /// Notified when Nomad must restart to read a changed agent config (the machine
    /// configuration's long-lived mode): stopped as at shutdown, started again at once.
    pub restart: Arc<Notify>,
    /// Directories of agent config fragments (the machine configuration's), passed after
    /// the base file.
    pub fragment_dirs: Vec<std::path::PathBuf>,
}

/// The command line, e.g. `nomad agent -config=/etc/nomad.d/init.json
/// -config=/run/nomados/machine/nomad.d`.
pub fn command(config: &NomadConfig, fragment_dirs: &[std::path::PathBuf]) -> Command {
    let mut cmd = Command::new(&config.binary);
    cmd.arg("agent")
        .arg(format!("-config={}", config.config.display()));
    for dir in fragment_dirs {
        cmd.arg(format!("-config={}", dir.display()));
    }
    cmd.stdin(Stdio::null())
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
        // Once per boot: this node may come back drained from the last shutdown.
        let eligible_done = Arc::new(AtomicBool::new(false));
        loop {
            if self.stopping() {
                return;
            }
            let started = Instant::now();
            let mut cmd = command(&self.config, &self.fragment_dirs);
            let outcome = match self.reaper.spawn(&mut cmd) {
                Ok((mut child, pid, exited)) => {
                    let extra: String = self
                        .fragment_dirs
                        .iter()
                        .map(|d| format!(" -config={}", d.display()))
                        .collect();
                    crate::info!(
                        "started {} agent -config={}{extra} (pid {pid})",
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
                    let end = self.watch(pid, exited, &eligible_done).await;
                    // Let its last words reach the console before its exit is reported.
                    super::output::until_drained(drained).await;
                    match end {
                        End::Restart(status) => {
                            let status = status.map_or("no status".into(), |s| s.to_string());
                            crate::info!(
                                "nomad stopped for a restart ({status}); starting it again"
                            );
                            let _ = self.healthy.send(false);
                            continue;
                        }
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
                // A new agent config is worth a try at once.
                _ = self.restart.notified() => {}
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
        eligible_done: &Arc<AtomicBool>,
    ) -> End {
        let health = wait_healthy(&self.api);
        tokio::pin!(health);
        let mut announced = false;
        loop {
            tokio::select! {
                status = &mut exited => return End::Exited(status.ok()),
                _ = &mut health, if !announced => {
                    announced = true;
                    crate::info!("nomad API healthy at {}", self.api.current().addr);
                    let _ = self.healthy.send(true);
                    tokio::spawn(warn_if_acls_off(self.api.clone()));
                    if !eligible_done.load(Ordering::SeqCst) {
                        // A task of its own: the API calls must not delay noticing an exit.
                        tokio::spawn(make_eligible(self.api.clone(), eligible_done.clone()));
                    }
                }
                _ = self.stop.changed() => {
                    let _ = self.healthy.send(false);
                    let timeout = Duration::from_secs(self.config.stop_timeout_secs);
                    return End::Stopped(stop_child(pid, exited, timeout).await);
                }
                _ = self.restart.notified() => {
                    let _ = self.healthy.send(false);
                    crate::info!("restarting nomad (pid {pid}) for its new agent config");
                    let timeout = Duration::from_secs(self.config.stop_timeout_secs);
                    return End::Restart(stop_child(pid, exited, timeout).await);
                }
            }
        }
    }
}

/// How one run of Nomad ended; the status is `None` when it got lost.
enum End {
    Exited(Option<ExitStatus>),
    Stopped(Option<ExitStatus>),
    /// Stopped to start again with a new agent config.
    Restart(Option<ExitStatus>),
}

/// The wait after failed health probe `n` (0-based): 100 ms for the first 50 probes (about
/// the first 5 s, which is when an agent started just before the first probe comes up),
/// then 1 s. A flat 1 s poll delayed every boot by up to a second: the agent answered
/// but nobody asked (0.6-1.0 s of the boot's "Nomad API healthy" stage under TCG). A
/// probe before the agent listens is a refused loopback connection, cheap; an agent
/// slower than that is asked once a second, as before.
fn health_retry(n: u32) -> Duration {
    if n < 50 {
        Duration::from_millis(100)
    } else {
        Duration::from_secs(1)
    }
}

/// Polls the health endpoint until it answers 200, every [`health_retry`]. The client is
/// built (token and TLS files read) at the first probe, and again while that fails.
async fn wait_healthy(settings: &api::Settings) {
    let mut client = None;
    let mut logged = false;
    let mut tls_said = false;
    let mut probes = 0u32;
    loop {
        if client.is_none() {
            match api::Client::new(settings) {
                Ok(c) => client = Some(c),
                Err(e) if !logged => {
                    crate::error!("cannot set up the nomad API client: {e}");
                    logged = true;
                }
                Err(_) => {}
            }
        }
        if let Some(c) = &client {
            match c.health().await {
                Ok(()) => return,
                // A wrong CA or name does not go away by waiting: said as an error, once
                // (the message names the address); never retried over plain http.
                Err(e) if e.is_tls_failure() && !tls_said => {
                    crate::error!("the nomad API cannot be reached over TLS: {e}");
                    tls_said = true;
                    logged = true;
                }
                Err(e) if !logged => {
                    crate::debug!(
                        "waiting for the nomad API at {}: {e}",
                        settings.current().addr
                    );
                    logged = true;
                }
                Err(_) => {}
            }
        }
        tokio::time::sleep(health_retry(probes)).await;
        probes = probes.saturating_add(1);
    }
}

/// Says so, loudly, whenever Nomad comes up without ACLs: then anyone who reaches its API
/// can run any command as root on this machine (raw_exec). With ACLs on, the anonymous
/// `/v1/agent/self` is refused, which says the same.
async fn warn_if_acls_off(settings: api::Settings) {
    let anonymous = api::Settings {
        token: api::TokenSource::None,
        ..settings.current()
    };
    let info = match api::Client::new(&anonymous) {
        Ok(client) => client.agent_info().await,
        Err(e) => Err(e),
    };
    match info {
        Ok(info) if !info.acl_enabled => crate::warn!(
            "NOMAD ACLs ARE OFF: anyone who can reach {} can run any command as root on this \
             machine; enable them in the agent config (acl {{ enabled = true }})",
            anonymous.addr
        ),
        Ok(_) => crate::info!("nomad ACLs are enabled"),
        Err(e) if e.status() == Some(reqwest::StatusCode::FORBIDDEN) => {
            crate::info!("nomad ACLs are enabled")
        }
        Err(e) => crate::debug!("cannot tell whether nomad's ACLs are on: {e}"),
    }
}

/// Makes this node eligible for work again (a shutdown drain leaves it ineligible for
/// ever otherwise), logging what it did; `done` is set once that question is settled.
async fn make_eligible(settings: api::Settings, done: Arc<AtomicBool>) {
    let outcome = match api::Client::new(&settings) {
        Ok(client) => client.mark_self_eligible().await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(Eligibility::NotAClient) => crate::debug!("eligibility: this agent is not a client"),
        Ok(Eligibility::AlreadyEligible(node)) => {
            crate::info!("node {node} is eligible for work")
        }
        Ok(Eligibility::MarkedEligible {
            node,
            cancelled_drain,
        }) => crate::info!(
            "node {node} was {}; marked it eligible for work again",
            if cancelled_drain {
                "still draining"
            } else {
                "ineligible"
            }
        ),
        Ok(Eligibility::LeftAlone { node, reason }) => {
            crate::warn!("node {node} stays ineligible: {reason}")
        }
        // No token yet (the first boot, before the ACL bootstrap): a new node is eligible.
        Err(e)
            if e.status() == Some(reqwest::StatusCode::FORBIDDEN)
                && matches!(settings.resolve_token(), Ok(None)) =>
        {
            crate::info!("eligibility: no ACL token yet; not checked on this start of nomad");
            return;
        }
        Err(e) => {
            crate::error!("cannot make this node eligible for work again: {e}");
            return;
        }
    }
    done.store(true, Ordering::SeqCst);
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
#[cfg(test)]
mod tests {
    use super::*;

    /// The nomad-double with ACLs on, its node drained as at the last shutdown.
    async fn drained_double(token: &str) -> (api::Settings, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let mut opts = nomad_double::Options::new(nomad_double::AgentConfig {
            acl_enabled: true,
            ..nomad_double::AgentConfig::default()
        });
        opts.management_token = Some(token.into());
        tokio::spawn(nomad_double::serve(listener, opts));
        let settings = api::Settings::new(addr).with_token(Some(token.into()));
        let client = api::Client::new(&settings).unwrap();
        let id = client.self_node_id().await.unwrap().unwrap();
        client.drain(&id, Duration::from_secs(60)).await.unwrap();
        (settings, id)
    }

    #[tokio::test]
    async fn the_node_is_made_eligible_with_the_token_from_the_file() {
        let (settings, id) = drained_double("t0ken").await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        let mut from_file = settings.clone();
        from_file.token = api::TokenSource::File(file.clone());
        let done = Arc::new(AtomicBool::new(false));

        // No token file yet: an error is logged and the question stays open.
        make_eligible(from_file.clone(), done.clone()).await;
        assert!(!done.load(Ordering::SeqCst));

        std::fs::write(&file, "t0ken\n").unwrap();
        make_eligible(from_file, done.clone()).await;
        assert!(done.load(Ordering::SeqCst));
        let node = api::Client::new(&settings)
            .unwrap()
            .node(&id)
            .await
            .unwrap();
        assert_eq!(node["SchedulingEligibility"], "eligible");
    }

    #[test]
    fn health_probes_start_fast_and_settle_at_one_second() {
        let fast: Duration = (0..50).map(health_retry).sum();
        assert_eq!(fast, Duration::from_secs(5));
        assert_eq!(health_retry(0), Duration::from_millis(100));
        assert_eq!(health_retry(50), Duration::from_secs(1));
        assert_eq!(health_retry(u32::MAX), Duration::from_secs(1));
    }

    #[tokio::test]
    async fn health_is_seen_without_a_token() {
        let (settings, _) = drained_double("t0ken").await;
        let anonymous = api::Settings::new(settings.addr.clone());
        tokio::time::timeout(Duration::from_secs(5), wait_healthy(&anonymous))
            .await
            .unwrap();
    }
}
