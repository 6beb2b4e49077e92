//! Console logging: one line per event with a monotonic timestamp.
//!
//! Plain text by default; PID 1 may switch to JSON lines. Use the macros
//! [`info!`](crate::info), [`warn!`](crate::warn), [`error!`](crate::error), [`debug!`](crate::debug).

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Debug = 0,
    Info = 1,
    Warn = 2,
    Error = 3,
}

static MIN_LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
static JSON: AtomicBool = AtomicBool::new(false);

pub fn set_min_level(level: Level) {
    MIN_LEVEL.store(level as u8, Ordering::Relaxed);
}

pub fn set_json(json: bool) {
    JSON.store(json, Ordering::Relaxed);
}

pub fn enabled(level: Level) -> bool {
    level as u8 >= MIN_LEVEL.load(Ordering::Relaxed)
}

/// Seconds since boot (CLOCK_MONOTONIC), the timestamp of every line.
pub fn monotonic_seconds() -> f64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .unwrap_or_else(|_| nix::sys::time::TimeSpec::new(0, 0));
    ts.tv_sec() as f64 + ts.tv_nsec() as f64 / 1e9
}

/// `nomad_init::boot::stage` -> `boot`: the subsystem is what a reader of the console wants.
pub fn short_target(target: &str) -> &str {
    let rest = target.strip_prefix("nomad_init::").unwrap_or(target);
    rest.split("::").next().unwrap_or(rest)
}

pub fn write(level: Level, target: &str, message: std::fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let target = short_target(target);
    let ts = monotonic_seconds();
    let line = if JSON.load(Ordering::Relaxed) {
        serde_json::json!({
            "ts": (ts * 1e6).round() / 1e6,
            "level": format!("{level:?}").to_lowercase(),
            "target": target,
            "msg": message.to_string(),
        })
        .to_string()
    } else {
        let tag = match level {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        format!("[{ts:>12.6}] {tag:<5} {target}: {message}")
    };
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

#[macro_export]
macro_rules! debug { ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Debug, module_path!(), format_args!($($arg)*)) } }
#[macro_export]
macro_rules! info { ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Info, module_path!(), format_args!($($arg)*)) } }
#[macro_export]
macro_rules! warn { ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Warn, module_path!(), format_args!($($arg)*)) } }
#[macro_export]
macro_rules! error { ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Error, module_path!(), format_args!($($arg)*)) } }

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_shortened_to_the_subsystem() {
        assert_eq!(short_target("nomad_init::boot::stage"), "boot");
        assert_eq!(short_target("nomad_init::pid1"), "pid1");
        assert_eq!(short_target("nomad"), "nomad");
    }
}
