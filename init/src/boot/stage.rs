//! Running one boot or shutdown stage: timed, logged, and never able to take PID 1 down.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

/// Runs `f` as stage `what` ("mounted filesystems"), logs its duration or its failure, and
/// returns its value; `None` when it failed or panicked (already logged). Boot continues.
pub fn run<T>(what: &str, f: impl FnOnce() -> anyhow::Result<T>) -> Option<T> {
    run_as("boot", what, f)
}

/// [`run`] with the log target of the caller's phase (`shutdown`).
pub fn run_as<T>(target: &str, what: &str, f: impl FnOnce() -> anyhow::Result<T>) -> Option<T> {
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
