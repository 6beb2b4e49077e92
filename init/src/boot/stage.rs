//! The boot and shutdown stages, and running one: timed, logged, and never able to take
//! PID 1 down.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

/// Every step of boot and of the synchronous shutdown that is run through [`run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Mounts,
    Console,
    Cmdline,
    Cgroups,
    Config,
    Data,
    /// The fallback when [`Stage::Data`] failed.
    DataTmpfs,
    Hostname,
    /// The whole boot sequence (recorded as failed when it panicked).
    Boot,
    Sync,
    Unmount,
}

impl Stage {
    /// The log target the stage's lines go to.
    pub fn phase(self) -> &'static str {
        match self {
            Stage::Sync | Stage::Unmount => "shutdown",
            _ => "boot",
        }
    }
}

/// What the log says was done ("mounted filesystems in 1.2 ms"); tests grep these.
impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Mounts => "mounted filesystems",
            Stage::Console => "opened console",
            Stage::Cmdline => "read kernel command line",
            Stage::Cgroups => "set up cgroups",
            Stage::Config => "read init config",
            Stage::Data => "mounted data directory",
            Stage::DataTmpfs => "mounted a tmpfs as data directory instead",
            Stage::Hostname => "set hostname and brought up loopback",
            Stage::Boot => "boot",
            Stage::Sync => "synced filesystems",
            Stage::Unmount => "unmounted filesystems",
        })
    }
}

/// Runs `f` as `stage`, logs its duration or its failure (under the stage's phase), and
/// returns its value; `None` when it failed or panicked (already logged). Boot continues.
pub fn run<T>(stage: Stage, f: impl FnOnce() -> anyhow::Result<T>) -> Option<T> {
    let (target, what) = (stage.phase(), stage);
    use crate::log::{write, Level};
    let start = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(f));
    let ms = start.elapsed().as_secs_f64() * 1e3;
    match result {
        Ok(Ok(v)) => {
            write(Level::Info, target, format_args!("{what} in {ms:.1} ms"));
            Some(v)
        }
        Ok(Err(e)) => {
            write(
                Level::Error,
                target,
                format_args!("{what}: failed after {ms:.1} ms: {e:#}"),
            );
            None
        }
        Err(panic) => {
            let msg = panic_message(&panic);
            write(
                Level::Error,
                target,
                format_args!("{what}: panicked after {ms:.1} ms: {msg}"),
            );
            None
        }
    }
}

pub fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(non-string panic)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_log_under_their_phase_with_their_names() {
        assert_eq!(Stage::Mounts.to_string(), "mounted filesystems");
        assert_eq!(Stage::Mounts.phase(), "boot");
        assert_eq!(Stage::Unmount.to_string(), "unmounted filesystems");
        assert_eq!(Stage::Unmount.phase(), "shutdown");
        assert_eq!(run(Stage::Cmdline, || Ok(7)), Some(7));
        assert_eq!(run(Stage::Cmdline, || anyhow::bail!("no")), None::<()>);
        assert_eq!(
            run(Stage::Cmdline, || -> anyhow::Result<()> { panic!("boom") }),
            None
        );
    }
}
