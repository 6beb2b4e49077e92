//! The boot sequence, run synchronously before the async runtime exists.
//!
//! Every stage is timed and logged; a failing stage is logged with its cause and the boot
//! goes on with what it has (see [`stage::run`]).

pub mod blank;
pub mod bootcount;
pub mod cgroup;
pub mod cmdline;
pub mod config;
pub mod data;
pub mod grow;
pub mod hostname;
pub mod mounts;
pub mod stage;

use std::path::PathBuf;

use crate::log::Level;
use crate::sys::root::{Root, TEST_CMDLINE_ENV};
use cmdline::{KernelOptions, LogFormat};
use config::InitConfig;
use stage::Stage;

/// Where the effective init config came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    LastGood(PathBuf),
    Defaults,
}

/// What the boot produced, handed to supervision.
#[derive(Debug, Clone)]
pub struct Booted {
    pub root: Root,
    pub options: KernelOptions,
    pub config: InitConfig,
    pub config_source: ConfigSource,
    pub data: Option<data::DataMount>,
    pub hostname: Option<String>,
    /// The stages that failed (the emergency shell is offered when non-empty).
    pub failed: Vec<Stage>,
}

fn read_cmdline(root: &Root) -> String {
    if root.is_test() {
        return std::env::var(TEST_CMDLINE_ENV).unwrap_or_default();
    }
    std::fs::read_to_string("/proc/cmdline").unwrap_or_default()
}

/// Runs the boot stages in order. Never fails: problems are logged and recorded.
pub fn run(root: Root) -> Booted {
    let mut failed = Vec::new();
    if root.is_test() {
        crate::info!("test mode: system paths under {}", root.path("/").display());
    }

    match stage::run(Stage::Mounts, || mounts::mount_all(&root)) {
        Some((now, before)) => crate::debug!("{now} mounted, {before} already there"),
        None => failed.push(Stage::Mounts),
    }
    if stage::run(Stage::Console, || mounts::console_fds(&root)).is_none() {
        failed.push(Stage::Console);
    }

    let options =
        stage::run(Stage::Cmdline, || Ok(cmdline::parse(&read_cmdline(&root)))).unwrap_or_default();
    if options.debug {
        crate::log::set_min_level(Level::Debug);
    }
    if let Some(level) = options.loglevel {
        crate::log::set_min_level(level);
    }
    if let Some(format) = options.log {
        crate::log::set_json(format == LogFormat::Json);
    }
    for w in &options.warnings {
        crate::warn!("{w}");
    }

    if root.is_test() {
        crate::info!("test mode: cgroup delegation skipped (would change the host's cgroups)");
    } else {
        match stage::run(Stage::Cgroups, || {
            cgroup::setup(&root.path("/sys/fs/cgroup"))
        }) {
            Some(line) => crate::debug!("cgroup controllers enabled: {line}"),
            None => failed.push(Stage::Cgroups),
        }
    }

    let path = options
        .config
        .clone()
        .unwrap_or_else(|| root.path(config::DEFAULT_PATH));
    let loaded = stage::run(Stage::Config, || Ok(config::load(&path)));
    let (mut cfg, mut source, good_text) = match loaded {
        Some(Ok((cfg, text))) => (cfg, ConfigSource::File(path.clone()), Some(text)),
        Some(Err(config::ConfigError::Read { source, .. }))
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            crate::info!(
                "no init config at {}; using built-in defaults",
                path.display()
            );
            (
                InitConfig::defaults_under(&root),
                ConfigSource::Defaults,
                None,
            )
        }
        Some(Err(e)) => {
            crate::error!("init config is broken: {e}");
            failed.push(Stage::Config);
            (
                InitConfig::defaults_under(&root),
                ConfigSource::Defaults,
                None,
            )
        }
        None => {
            failed.push(Stage::Config);
            (
                InitConfig::defaults_under(&root),
                ConfigSource::Defaults,
                None,
            )
        }
    };

    let mut data = stage::run(Stage::Data, || data::mount(&root, &cfg.data));
    if data.is_none() {
        failed.push(Stage::Data);
        data = stage::run(Stage::DataTmpfs, || data::mount_tmpfs(&cfg.data));
    }
    let last_good = InitConfig::last_good_path(&cfg.data.mount_point);
    let persistent = matches!(data, Some(data::DataMount::Partition(_)));
    if let Some(text) = good_text.filter(|_| persistent) {
        if let Err(e) = crate::fsutil::write_atomic(&last_good, &text) {
            crate::warn!(
                "could not keep a copy of the good config at {}: {e}",
                last_good.display()
            );
        }
    }
    if persistent {
        match bootcount::increment(&cfg.data.mount_point) {
            Ok(n) => crate::info!("boot {n} of this data partition"),
            Err(e) => crate::warn!("boot counter on the data partition: {e}"),
        }
    }
    if failed.contains(&Stage::Config) {
        match config::load(&last_good) {
            Ok((good, _)) => {
                crate::warn!(
                    "using the last good init config from {}",
                    last_good.display()
                );
                cfg = good;
                source = ConfigSource::LastGood(last_good);
            }
            Err(_) => crate::warn!("using the built-in init config defaults"),
        }
    }

    let hostname = stage::run(Stage::Hostname, || {
        hostname::apply(&root, cfg.hostname.as_deref())
    });
    match &hostname {
        Some(h) => crate::info!("hostname is {h}"),
        None => failed.push(Stage::Hostname),
    }

    Booted {
        root,
        options,
        config: cfg,
        config_source: source,
        data,
        hostname,
        failed,
    }
}
