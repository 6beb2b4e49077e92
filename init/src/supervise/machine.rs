//! The machine configuration (issue 10). At boot, after the network is up and before Nomad
//! starts, PID 1 runs `nomad-init machine-config apply` (this binary) as a child under the
//! same supervision as the pack applier ([`super::limited`]: its own cgroup, memory limit,
//! deadline), since finding, checking and writing user data is untrusted work. Then it
//! layers the rendered init config over the baked one and hands Nomad the rendered fragment
//! directory. If anything fails, the baked configuration is used whole.
//!
//! Long-lived mode ([`poll_loop`]): with `nomados.config=<url>`, a `machine-config poll`
//! child asks the URL for a new version on an interval and on SIGHUP; PID 1 carries out
//! the plan of a version it applied (restart Nomad, run the applier, set the hostname).

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use super::limited::{self, Limits, RunEnd};
use super::reaper::{ExitStatus, Reaper};
use crate::boot::config::InitConfig;
use crate::boot::{Booted, ConfigSource};
use crate::log::Level;
use crate::machine::paths::Paths;
use crate::machine::plan::{self, Plan};
use crate::machine::poll::{EXIT_APPLIED, EXIT_UNCHANGED};
use crate::sys::root::{TEST_CMDLINE_ENV, TEST_ROOT_ENV};

const BAKED_LIMIT: u64 = 1024 * 1024;

/// What the machine configuration changed for the rest of the boot.
#[derive(Debug, Clone)]
pub struct Configured {
    pub config: InitConfig,
    /// `-config=` directories Nomad is started with after its base file.
    pub fragment_dirs: Vec<PathBuf>,
    /// The child's merged view of the agent config's API keys (HCL fragments included):
    /// what PID 1 reads to talk to Nomad instead of the base and the fragments.
    pub api_view: Option<PathBuf>,
    /// The user data's `[install]`, if it has one.
    pub install: Option<crate::install::options::Request>,
}

impl Configured {
    /// The `[nomad]` settings and fragment directories PID 1 derives the API address,
    /// TLS and ACL facts from: the child's view when it wrote one.
    pub fn for_api(&self) -> (crate::boot::config::NomadConfig, Vec<PathBuf>) {
        match &self.api_view {
            Some(view) => (
                crate::boot::config::NomadConfig {
                    config: view.clone(),
                    ..self.config.nomad.clone()
                },
                Vec::new(),
            ),
            None => (self.config.nomad.clone(), self.fragment_dirs.clone()),
        }
    }
}

/// How PID 1 starts the child: which binary, and the cgroup tree to give it a cgroup in.
#[derive(Debug, Clone)]
pub struct Child {
    pub reaper: Arc<Reaper>,
    /// The program to run (`/proc/self/exe` on a machine: this binary).
    pub program: PathBuf,
    /// The cgroup v2 mount (`None` where PID 1 does not own the tree: test mode).
    pub cgroup_root: Option<PathBuf>,
    pub root: crate::sys::root::Root,
}

impl Child {
    /// The limits of `machine.*` in `config`: the same supervision as the applier's.
    fn limits(&self, config: &InitConfig) -> Limits {
        Limits {
            name: "machine",
            cgroup: "machine-config",
            memory_mib: config.machine.memory_max_mib,
            // One runtime thread and a resolver thread or two.
            pids_max: 32,
            deadline: Duration::from_secs(config.machine.deadline_secs),
            cgroup_root: self.cgroup_root.clone(),
            stderr_level: Level::Info,
        }
    }

    /// Runs `machine-config <verb>` under its limits; returns how it ended.
    async fn run(
        &self,
        verb: &str,
        config: &InitConfig,
        stop: Option<&mut watch::Receiver<bool>>,
    ) -> RunEnd {
        let mut cmd = command(&self.program, config, verb);
        let limits = self.limits(config);
        let ran = limited::run(&self.reaper, &mut cmd, &limits, stop).await;
        if let RunEnd::Exited(status @ ExitStatus::Signaled(..)) = &ran.end {
            let why = if ran.oom_killed {
                "was killed by its memory limit"
            } else {
                "died"
            };
            crate::error!(
                "machine config: the child {why} ({status}; machine.memory_max_mib = {} MiB)",
                limits.memory_mib
            );
        }
        ran.end
    }
}

/// The child's command line: no secrets in it (the URL is read from the kernel command line
/// by the child itself).
pub fn command(program: &std::path::Path, config: &InitConfig, verb: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.arg0("nomad-init")
        .args(["machine-config", verb, "--agent-config"])
        .arg(&config.nomad.config)
        .env_clear()
        .env("PATH", super::nomad::DEFAULT_PATH)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in [TEST_ROOT_ENV, TEST_CMDLINE_ENV] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    cmd
}

/// Runs the child, then reads back what it wrote. Never fails: the baked configuration is
/// the answer to every problem.
pub async fn configure(booted: &Booted, child: &Child) -> Configured {
    let baked = Configured {
        config: booted.config.clone(),
        fragment_dirs: Vec::new(),
        api_view: None,
        install: None,
    };
    match child.run("apply", &booted.config, None).await {
        RunEnd::Exited(ExitStatus::Exited(0)) => {}
        RunEnd::Exited(ExitStatus::Exited(code)) => {
            crate::warn!(
                "machine config: the child ended with exit code {code}; the baked configuration stays"
            );
            return baked;
        }
        _ => {
            crate::warn!("machine config: the baked configuration stays");
            return baked;
        }
    }
    let configured = read_back(booted);
    if configured.config.hostname != booted.config.hostname {
        if let Some(h) = &configured.config.hostname {
            set_hostname(h);
        }
    }
    configured
}

fn set_hostname(h: &str) {
    match nix::unistd::sethostname(h) {
        Ok(()) => crate::info!("hostname set to {h} (machine config)"),
        Err(e) => crate::warn!("sethostname({h}): {e}"),
    }
}

/// What long-lived mode acts on in the rest of PID 1.
#[derive(Debug, Clone)]
pub struct Actions {
    /// Restart Nomad (it reads its agent config only when it starts).
    pub restart_nomad: Arc<Notify>,
    /// Run the pack applier.
    pub reapply_packs: Arc<Notify>,
    /// How every part of PID 1 reaches Nomad's API (health, drain, gates, the applier),
    /// set at boot: moved when a new agent config or `[init.nomad]` moves the API.
    pub api: crate::nomad::Live,
    /// The boot, to layer a changed `[init]` over the baked config again.
    pub booted: Booted,
}

/// Long-lived mode (`nomados.config=<url>`): polls the URL every `machine.poll_secs` (with
/// jitter; backing off while polls fail) and whenever `now` is notified (SIGHUP), each
/// poll a `machine-config poll` child under the same limits as the boot's; carries out
/// the plan of a version it applied. Returns when `stop` turns true.
pub async fn poll_loop(
    child: Child,
    config: InitConfig,
    actions: Actions,
    now: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let paths = Paths::under(&child.root);
    let mut failures = 0u32;
    // What PID 1 runs with: the boot's configuration, and the live keys as followed since.
    let mut config = config;
    let mut seen = config.clone();
    loop {
        let interval = Duration::from_secs(config.machine.poll_secs);
        let delay = plan::next_poll(interval, failures, plan::jitter_unit());
        let reason = tokio::select! {
            _ = tokio::time::sleep(delay), if !interval.is_zero() => "interval",
            _ = now.notified() => "SIGHUP",
            _ = stop.changed() => return,
        };
        if *stop.borrow() {
            return;
        }
        crate::info!("machine config: polling the user data's URL ({reason})");
        match child.run("poll", &config, Some(&mut stop)).await {
            RunEnd::Exited(ExitStatus::Exited(EXIT_UNCHANGED)) => failures = 0,
            RunEnd::Exited(ExitStatus::Exited(EXIT_APPLIED)) => {
                failures = 0;
                match crate::machine::poll::take_plan(&paths) {
                    Some(p) => {
                        // First: a restarted Nomad is probed where it will listen.
                        follow(&actions, &mut seen, &mut config);
                        carry_out(&p, &actions);
                    }
                    None => crate::error!(
                        "machine config: the poll applied a version but left no plan in {}",
                        paths.plan_file.display()
                    ),
                }
            }
            RunEnd::Stopped => return,
            end => {
                failures = failures.saturating_add(1);
                let next = if interval.is_zero() {
                    "next poll on SIGHUP".to_string()
                } else {
                    let next = plan::next_poll(interval, failures, 0.5);
                    format!("next poll in about {} s", next.as_secs())
                };
                crate::warn!(
                    "machine config: the poll failed ({}); the running configuration stays; {next}",
                    describe(&end),
                );
            }
        }
    }
}

fn describe(end: &RunEnd) -> String {
    match end {
        RunEnd::Exited(s) => s.to_string(),
        RunEnd::DeadlinePassed => "past its deadline".into(),
        RunEnd::Stopped => "stopped".into(),
        RunEnd::Lost => "could not run".into(),
    }
}

/// Follows what a new version changed in PID 1's own view: the `[init]` keys it can
/// follow live (hostname, `machine.*`, how to reach the API) are applied, each other
/// changed key is named once as taking effect at the next boot; and the API settings
/// are derived again from the child's agent view, so a moved API or TLS turned on
/// reaches every Nomad client of PID 1 (health, drain, gates, the applier).
fn follow(actions: &Actions, seen: &mut InitConfig, config: &mut InitConfig) {
    let now = read_back(&actions.booted);
    let changes = plan::init_changes(seen, &now.config);
    if !changes.live.is_empty() {
        crate::info!(
            "machine config: followed at once: {}",
            changes
                .live
                .iter()
                .map(|k| format!("init.{k}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for key in &changes.next_boot {
        crate::warn!("machine config: takes effect at the next boot: init.{key}");
    }
    if now.config.hostname != seen.hostname {
        if let Some(h) = &now.config.hostname {
            set_hostname(h);
        }
    }
    // The next poll's interval and its child's limits.
    config.machine = now.config.machine.clone();
    *seen = now.config.clone();
    let (api_nomad, api_dirs) = now.for_api();
    let wanted = crate::nomad::Settings::for_local_agent_with_fragments(&api_nomad, &api_dirs);
    if actions.api.get().as_ref() != Some(&wanted) {
        let tls = if wanted.is_https() { "https" } else { "http" };
        crate::info!(
            "machine config: PID 1 now reaches the nomad API at {} ({tls})",
            crate::redact::url(&wanted.addr).trim_end_matches('/')
        );
        actions.api.set(wanted);
    }
}

/// What PID 1 does for a plan: the child already rewrote files and secrets ([`follow`]
/// took care of the hostname and the rest of `[init]`).
fn carry_out(p: &Plan, actions: &Actions) {
    if !p.restart_nomad.is_empty() {
        crate::info!(
            "machine config: restarting nomad for its new agent config ({})",
            p.restart_nomad.join(", ")
        );
        actions.restart_nomad.notify_one();
    }
    if p.reapply_packs {
        crate::info!("machine config: the pack set changed; applying it");
        actions.reapply_packs.notify_one();
    }
    if !p.next_boot.is_empty() {
        crate::warn!(
            "machine config: {} changed; in force after the next boot",
            p.next_boot.join(", ")
        );
    }
}

/// What the child wrote, layered over the baked configuration; the baked configuration
/// when it wrote nothing or the layering does not hold.
fn read_back(booted: &Booted) -> Configured {
    let baked = Configured {
        config: booted.config.clone(),
        fragment_dirs: Vec::new(),
        api_view: None,
        install: None,
    };
    let paths = Paths::under(&booted.root);
    if !paths.machine_dir.is_dir() {
        // Nothing found: nothing written.
        return baked;
    }
    let config = match std::fs::read_to_string(paths.init_override()) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => booted.config.clone(),
        Err(e) => {
            crate::error!(
                "machine config: {}: {e}; the baked configuration stays",
                paths.init_override().display()
            );
            return baked;
        }
        Ok(over) => {
            let baked_text = match &booted.config_source {
                ConfigSource::File(p) | ConfigSource::LastGood(p) => {
                    crate::fsutil::read_bounded_to_string(p, BAKED_LIMIT).ok()
                }
                ConfigSource::Defaults => None,
            };
            let defaults = InitConfig::defaults_under(&booted.root);
            match crate::machine::overlay::layered(baked_text.as_deref(), &defaults, &over) {
                Ok(c) => c,
                Err(e) => {
                    crate::error!(
                        "machine config: the init config with the user data's [init] does not hold: \
                         {e}; the baked configuration stays"
                    );
                    return baked;
                }
            }
        }
    };
    let view = paths.machine_dir.join(crate::machine::paths::AGENT_VIEW);
    Configured {
        config,
        fragment_dirs: vec![paths.fragment_dir()],
        api_view: view.is_file().then_some(view),
        install: read_install(&paths),
    }
}

/// The install request the child rendered from `[install]` (the command-line words).
fn read_install(paths: &Paths) -> Option<crate::install::options::Request> {
    let path = paths
        .machine_dir
        .join(crate::machine::paths::INSTALL_REQUEST);
    let words = match crate::fsutil::read_bounded_to_string(&path, 64 * 1024) {
        Ok(w) => w,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            crate::error!("machine config: {}: {e}; not installing", path.display());
            return None;
        }
    };
    crate::install::options::from_cmdline(&words)
        .map_err(|e| crate::error!("machine config: {}: {e}; not installing", path.display()))
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn booted(root: &std::path::Path, baked: Option<&str>) -> Booted {
        let r = crate::sys::root::Root::test(root);
        let (config, config_source) = match baked {
            Some(text) => {
                let p = root.join("nomados.toml");
                std::fs::write(&p, text).unwrap();
                (
                    crate::boot::config::parse(&p, text).unwrap(),
                    ConfigSource::File(p),
                )
            }
            None => (InitConfig::defaults_under(&r), ConfigSource::Defaults),
        };
        Booted {
            root: r,
            options: Default::default(),
            config,
            config_source,
            data: None,
            hostname: None,
            failed: Vec::new(),
        }
    }

    #[test]
    fn what_the_child_wrote_is_layered_over_the_baked_file() {
        let dir = tempfile::tempdir().unwrap();
        let b = booted(
            dir.path(),
            Some("[packs]\ninterval_secs = 60\n[nomad]\nstop_timeout_secs = 9\n"),
        );
        // Nothing written: the baked configuration, no fragments.
        let c = read_back(&b);
        assert_eq!(c.config, b.config);
        assert!(c.fragment_dirs.is_empty());

        let paths = Paths::under(&b.root);
        std::fs::create_dir_all(paths.fragment_dir()).unwrap();
        std::fs::write(paths.init_override(), "[packs]\ninterval_secs = 7\n").unwrap();
        let c = read_back(&b);
        assert_eq!(c.config.packs.interval_secs, 7);
        assert_eq!(c.config.nomad.stop_timeout_secs, 9, "the baked keys stay");
        assert_eq!(c.fragment_dirs, [paths.fragment_dir()]);

        assert_eq!(c.api_view, None);
        let view = paths.machine_dir.join(crate::machine::paths::AGENT_VIEW);
        std::fs::write(&view, "{}").unwrap();
        let c = read_back(&b);
        let (nomad, dirs) = c.for_api();
        assert_eq!(nomad.config, view, "PID 1 reads the child's view");
        assert!(dirs.is_empty());
        let without = Configured {
            api_view: None,
            ..c.clone()
        };
        assert_eq!(without.for_api().1, [paths.fragment_dir()]);

        // An override that does not hold with the baked file: all of it is ignored.
        std::fs::write(paths.init_override(), "[nomad]\nbinary = \"rel\"\n").unwrap();
        let c = read_back(&b);
        assert_eq!(c.config, b.config);
        assert!(c.fragment_dirs.is_empty());
    }

    #[test]
    fn the_install_request_the_child_wrote_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let b = booted(dir.path(), None);
        let paths = Paths::under(&b.root);
        std::fs::create_dir_all(&paths.machine_dir).unwrap();
        assert_eq!(read_back(&b).install, None);
        let file = paths
            .machine_dir
            .join(crate::machine::paths::INSTALL_REQUEST);
        std::fs::write(&file, "nomados.install=/dev/vdb nomados.install.wipe=1").unwrap();
        let r = read_back(&b).install.unwrap();
        assert_eq!((r.target.to_str(), r.wipe), (Some("/dev/vdb"), true));
        // Words that do not parse install nothing.
        std::fs::write(&file, "nomados.install=vdb").unwrap();
        assert_eq!(read_back(&b).install, None);
    }

    #[test]
    fn without_a_baked_file_the_defaults_are_the_base() {
        let dir = tempfile::tempdir().unwrap();
        let b = booted(dir.path(), None);
        let paths = Paths::under(&b.root);
        std::fs::create_dir_all(paths.fragment_dir()).unwrap();
        // Only fragments, no init override: the baked init config as it is.
        let c = read_back(&b);
        assert_eq!(c.config, b.config);
        assert_eq!(c.fragment_dirs, [paths.fragment_dir()]);
        std::fs::write(paths.init_override(), "[packs]\ninterval_secs = 7\n").unwrap();
        let c = read_back(&b);
        assert_eq!(c.config.packs.interval_secs, 7);
        assert_eq!(
            c.config.nomad.config, b.config.nomad.config,
            "test-root defaults kept"
        );
    }

    #[test]
    fn the_child_gets_no_secret_and_no_url_in_argv() {
        let cmd = command(
            std::path::Path::new("/proc/self/exe"),
            &InitConfig::default(),
            "apply",
        );
        let args: Vec<_> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "machine-config",
                "apply",
                "--agent-config",
                "/etc/nomad.d/init.json"
            ]
        );
    }
}
