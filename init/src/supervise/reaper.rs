//! The one owner of waitpid(2).
//!
//! Every SIGCHLD drains `waitpid(-1, WNOHANG)`. Children someone registered (Nomad, the
//! emergency shell) get their exit status through a oneshot channel; everything else is an
//! orphan that got re-parented to PID 1 and is silently reaped. Registration happens under
//! the same lock as reaping, with the child spawned while the lock is held, so the reaper
//! can never collect a registered child before its waiter exists.

use std::collections::HashMap;
use std::fmt;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use tokio::sync::oneshot;

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
}

impl ExitStatus {
    /// Shell convention: the exit code, or 128 + the signal number.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Exited(c) => c,
            ExitStatus::Signaled(s) => 128 + s,
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ExitStatus::Exited(c) => write!(f, "exit code {c}"),
            ExitStatus::Signaled(s) => match nix::sys::signal::Signal::try_from(s) {
                Ok(sig) => write!(f, "signal {} ({sig})", s),
                Err(_) => write!(f, "signal {s}"),
            },
        }
    }
}

#[derive(Debug, Default)]
pub struct Reaper {
    waiters: Mutex<HashMap<i32, oneshot::Sender<ExitStatus>>>,
    orphans: AtomicU64,
}

impl Reaper {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i32, oneshot::Sender<ExitStatus>>> {
        // A panic while holding the lock leaves a consistent map; keep going.
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Spawns `cmd` cleanly (see `sys::process::spawn_clean`) and registers a waiter for it.
    /// Do not call `wait` on the returned `Child`: its status arrives on the receiver.
    /// The `i32` is the child's pid as the kernel's `pid_t`.
    pub fn spawn(
        &self,
        cmd: &mut Command,
    ) -> std::io::Result<(Child, i32, oneshot::Receiver<ExitStatus>)> {
        self.spawn_limited(cmd, crate::sys::process::ChildLimits::default())
    }

    /// [`spawn`](Self::spawn) with limits the child takes on before it runs (cgroup, rlimit).
    pub fn spawn_limited(
        &self,
        cmd: &mut Command,
        limits: crate::sys::process::ChildLimits,
    ) -> std::io::Result<(Child, i32, oneshot::Receiver<ExitStatus>)> {
        let mut waiters = self.lock();
        let child = crate::sys::process::spawn_limited(cmd, limits)?;
        // Linux pids stay below pid_max (at most 2^22); should one not fit, the child
        // is collected as an orphan by `reap`.
        let pid = i32::try_from(child.id()).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("child pid {} does not fit pid_t", child.id()),
            )
        })?;
        let (tx, rx) = oneshot::channel();
        waiters.insert(pid, tx);
        Ok((child, pid, rx))
    }

    /// Number of orphans reaped so far.
    pub fn orphans_reaped(&self) -> u64 {
        self.orphans.load(Ordering::Relaxed)
    }

    /// Collects every child that has exited. Returns how many were collected.
    pub fn reap(&self) -> usize {
        let mut n = 0;
        loop {
            let mut waiters = self.lock();
            let (pid, status) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid.as_raw(), ExitStatus::Exited(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    (pid.as_raw(), ExitStatus::Signaled(sig as i32))
                }
                Ok(WaitStatus::StillAlive) => return n,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(Errno::ECHILD) => return n,
                Err(e) => {
                    crate::error!("waitpid: {e}");
                    return n;
                }
            };
            n += 1;
            match waiters.remove(&pid) {
                // The waiter may have gone away (e.g. gave up); nothing else to do.
                Some(tx) => {
                    let _ = tx.send(status);
                }
                None => {
                    self.orphans.fetch_add(1, Ordering::Relaxed);
                    crate::debug!("reaped orphan {pid} ({status})");
                }
            }
        }
    }
}
