//! The machine configuration at boot (issue 10): after the network is up and before Nomad
//! starts, PID 1 runs `nomad-init machine-config apply` (this binary) as a child with a
//! memory limit and a deadline, since finding, checking and writing user data is untrusted
//! work. Then it layers the rendered init config over the baked one and hands Nomad the
//! rendered fragment directory. If anything fails, the baked configuration is used whole.

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::output::{pump, Filter};
use super::reaper::{ExitStatus, Reaper};
use crate::boot::config::InitConfig;
use crate::boot::{Booted, ConfigSource};
use crate::log::Level;
use crate::machine::paths::Paths;
use crate::sys::process::ChildLimits;
use crate::sys::root::{TEST_CMDLINE_ENV, TEST_ROOT_ENV};

/// URL fetch (60 s) plus the metadata services (30 s) plus a margin.
pub const DEADLINE: Duration = Duration::from_secs(120);
/// The child parses a document of at most 1 MiB and a pack set of at most 16 MiB.
const MEMORY_MIB: u64 = 256;
const BAKED_LIMIT: u64 = 1024 * 1024;

/// What the machine configuration changed for the rest of the boot.
#[derive(Debug, Clone)]
pub struct Configured {
    pub config: InitConfig,
    /// `-config=` directories Nomad is started with after its base file.
    pub fragment_dirs: Vec<PathBuf>,
}

/// The child's command line: no secrets in it (the URL is read from the kernel command line
/// by the child itself).
pub fn command(program: &std::path::Path, config: &InitConfig) -> Command {
    let mut cmd = Command::new(program);
    cmd.arg0("nomad-init")
        .args(["machine-config", "apply", "--agent-config"])
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
pub async fn configure(booted: &Booted, reaper: &Arc<Reaper>, program: PathBuf) -> Configured {
    let baked = Configured {
        config: booted.config.clone(),
        fragment_dirs: Vec::new(),
    };
    let paths = Paths::under(&booted.root);
    if !run_child(reaper, &program, &booted.config).await {
        return baked;
    }
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
    if config.hostname != booted.config.hostname {
        if let Some(h) = &config.hostname {
            match nix::unistd::sethostname(h) {
                Ok(()) => crate::info!("hostname set to {h} (machine config)"),
                Err(e) => crate::warn!("sethostname({h}): {e}"),
            }
        }
    }
    Configured {
        config,
        fragment_dirs: vec![paths.fragment_dir()],
    }
}

/// Runs `machine-config apply`; true when it exited 0.
async fn run_child(reaper: &Arc<Reaper>, program: &std::path::Path, config: &InitConfig) -> bool {
    let limits = ChildLimits {
        cgroup_procs: None,
        data_bytes: Some(MEMORY_MIB * 1024 * 1024),
    };
    let mut cmd = command(program, config);
    let (mut child, pid, exited) = match reaper.spawn_limited(&mut cmd, limits) {
        Ok(spawned) => spawned,
        Err(e) => {
            crate::error!(
                "machine config: cannot start {}: {e}; the baked configuration stays",
                program.display()
            );
            return false;
        }
    };
    let mut drained = Vec::new();
    if let Some(out) = child.stdout.take() {
        drained.extend(pump("machine", "stdout", out, Filter::All(Level::Info)));
    }
    if let Some(err) = child.stderr.take() {
        drained.extend(pump("machine", "stderr", err, Filter::All(Level::Info)));
    }
    drop(child);
    let status = match tokio::time::timeout(DEADLINE, exited).await {
        Ok(Ok(status)) => Some(status),
        Ok(Err(_)) => None,
        Err(_) => {
            crate::error!(
                "machine config: still running after {} s; killing it (the baked configuration stays)",
                DEADLINE.as_secs()
            );
            if let Err(e) = crate::sys::process::signal(pid, Signal::SIGKILL) {
                crate::warn!("machine config: kill({pid}, SIGKILL): {e}");
            }
            None
        }
    };
    let _ = tokio::time::timeout(
        Duration::from_millis(250),
        futures::future::join_all(drained),
    )
    .await;
    match status {
        Some(ExitStatus::Exited(0)) => true,
        Some(status) => {
            crate::warn!(
                "machine config: the child ended with {status}; the baked configuration stays"
            );
            false
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_child_gets_no_secret_and_no_url_in_argv() {
        let cmd = command(
            std::path::Path::new("/proc/self/exe"),
            &InitConfig::default(),
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
