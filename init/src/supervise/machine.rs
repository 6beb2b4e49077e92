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
    /// The user data's `[install]`, if it has one.
    pub install: Option<crate::install::options::Request>,
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
        install: None,
    };
    if !run_child(reaper, &program, &booted.config).await {
        return baked;
    }
    let configured = read_back(booted);
    if configured.config.hostname != booted.config.hostname {
        if let Some(h) = &configured.config.hostname {
            match nix::unistd::sethostname(h) {
                Ok(()) => crate::info!("hostname set to {h} (machine config)"),
                Err(e) => crate::warn!("sethostname({h}): {e}"),
            }
        }
    }
    configured
}

/// What the child wrote, layered over the baked configuration; the baked configuration
/// when it wrote nothing or the layering does not hold.
fn read_back(booted: &Booted) -> Configured {
    let baked = Configured {
        config: booted.config.clone(),
        fragment_dirs: Vec::new(),
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
    Configured {
        config,
        fragment_dirs: vec![paths.fragment_dir()],
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
