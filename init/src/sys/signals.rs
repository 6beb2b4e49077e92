//! Signals are blocked in every thread and read from one signalfd.
//!
//! The mask is set on the main thread before any other thread exists (the runtime, the
//! output pumps), so every thread inherits it and no signal can run a handler anywhere.
//! Blocked signals are never discarded, even for PID 1 which the kernel otherwise shields
//! from signals it has no handler for.

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use tokio::io::unix::AsyncFd;

/// The signals PID 1 acts on.
pub const HANDLED: [Signal; 8] = [
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGPWR,
    Signal::SIGQUIT,
];

pub fn handled_set() -> SigSet {
    let mut set = SigSet::empty();
    for s in HANDLED {
        set.add(s);
    }
    set
}

/// Blocks [`HANDLED`] in the calling thread (call before spawning any thread).
pub fn block_handled() -> nix::Result<()> {
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&handled_set()), None)
}

/// A non-blocking, close-on-exec signalfd for [`HANDLED`].
pub fn open_signalfd() -> nix::Result<SignalFd> {
    SignalFd::with_flags(
        &handled_set(),
        SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
    )
}

/// Why [`open_async_signalfd`] failed.
#[derive(Debug, thiserror::Error)]
pub enum AsyncSignalFdError {
    #[error("signalfd: {0}")]
    Open(#[from] nix::Error),
    #[error("signalfd registration: {0}")]
    Register(std::io::Error),
}

/// [`open_signalfd`], registered with the current tokio runtime (call inside one).
pub fn open_async_signalfd() -> Result<AsyncFd<SignalFd>, AsyncSignalFdError> {
    let sfd = open_signalfd()?;
    // SAFETY: SignalFd owns its descriptor, which stays open and unchanged until the
    // AsyncFd (which owns the SignalFd) is dropped.
    unsafe { AsyncFd::register(sfd) }.map_err(|e| AsyncSignalFdError::Register(e.into_parts().1))
}
