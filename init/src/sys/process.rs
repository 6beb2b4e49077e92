//! Starting children cleanly and signalling processes.
//!
//! Children are started with `std::process::Command` (fork + immediate exec; the only code
//! run between them is [`reset_signals_in_child`], which is async-signal-safe). We never use
//! tokio's child handling: the reaper in `supervise::reaper` is the only caller of waitpid.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// Resets every signal disposition to default and empties the signal mask.
///
/// Runs in the forked child before exec; calls only `sigaction` and `sigprocmask`, which
/// are async-signal-safe. Without this the child would inherit PID 1's blocked mask and
/// the ignored SIGPIPE that Rust's runtime sets.
fn reset_signals_in_child() -> std::io::Result<()> {
    // SAFETY: zeroed sigaction is a valid "SIG_DFL, no flags, empty mask" value; sigaction
    // and sigprocmask are async-signal-safe and only touch this process's signal state.
    unsafe {
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut dfl.sa_mask);
        for sig in 1..libc::SIGRTMAX() {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            // Errors (invalid signal numbers reserved by libc) are irrelevant here.
            libc::sigaction(sig, &dfl, std::ptr::null_mut());
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Spawns `cmd` with default signal dispositions and an empty mask.
///
/// The caller must hold the reaper's registration lock (see `supervise::reaper`), so the
/// reaper cannot collect the child before its waiter is registered.
pub fn spawn_clean(cmd: &mut Command) -> std::io::Result<Child> {
    // SAFETY: the closure only calls async-signal-safe functions (sigaction, sigprocmask)
    // and allocates nothing, as required between fork and exec in a threaded process.
    unsafe {
        cmd.pre_exec(reset_signals_in_child);
    }
    cmd.spawn()
}

/// Limits a child takes on between fork and exec, before it runs any of its own code.
#[derive(Debug, Default)]
pub struct ChildLimits {
    /// `cgroup.procs` of the cgroup the child must start in, opened for writing.
    pub cgroup_procs: Option<std::fs::File>,
    /// RLIMIT_DATA in bytes: heap and private writable mappings. A runaway allocation then
    /// fails inside the child (which aborts) even where no memory cgroup exists.
    pub data_bytes: Option<u64>,
}

/// Like [`spawn_clean`], and the child joins `limits.cgroup_procs`'s cgroup and takes
/// `limits.data_bytes` before exec, so nothing of it ever runs unlimited.
pub fn spawn_limited(cmd: &mut Command, limits: ChildLimits) -> std::io::Result<Child> {
    use std::os::fd::AsRawFd;
    let cgroup_fd = limits.cgroup_procs.as_ref().map(|f| f.as_raw_fd());
    let data = limits.data_bytes;
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // system calls (write, setrlimit); it allocates nothing. The cgroup file outlives the
    // spawn (it is dropped at the end of this function), so the descriptor is valid.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = cgroup_fd {
                // "0" moves the writing process, i.e. this child.
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(bytes) = data {
                let lim = libc::rlimit {
                    rlim_cur: bytes,
                    rlim_max: bytes,
                };
                if libc::setrlimit(libc::RLIMIT_DATA, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = spawn_clean(cmd);
    drop(limits);
    child
}

/// Sends `sig` to `pid`; a process that is already gone is not an error.
pub fn signal(pid: i32, sig: Signal) -> nix::Result<()> {
    match nix::sys::signal::kill(Pid::from_raw(pid), sig) {
        Err(nix::errno::Errno::ESRCH) => Ok(()),
        other => other,
    }
}

/// Sends `sig` to every process except PID 1 itself (kill(-1)).
pub fn signal_all(sig: Signal) -> nix::Result<()> {
    match nix::sys::signal::kill(Pid::from_raw(-1), sig) {
        Err(nix::errno::Errno::ESRCH) => Ok(()),
        other => other,
    }
}

/// Process ids (other than our own and kernel threads) listed in `proc_dir`.
pub fn user_processes(proc_dir: &std::path::Path) -> Vec<i32> {
    // A pid past i32::MAX cannot exist (pid_max ≤ 2^22); -1 then matches no entry.
    let me = i32::try_from(std::process::id()).unwrap_or(-1);
    let Ok(dir) = std::fs::read_dir(proc_dir) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            std::fs::read_to_string(proc_dir.join(pid.to_string()).join("stat"))
                .ok()
                .is_some_and(|s| !is_kernel_thread(&s))
        })
        .collect()
}

/// PF_KTHREAD in the flags field of `/proc/<pid>/stat`: kill(-1) never reaches those.
pub fn is_kernel_thread(stat: &str) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    // The command name may contain spaces and parentheses; fields restart after the last ')'.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    // rest: " state ppid pgrp session tty_nr tpgid flags ..."; flags is the 7th.
    rest.split_whitespace()
        .nth(6)
        .and_then(|f| f.parse::<u64>().ok())
        .is_some_and(|flags| flags & PF_KTHREAD != 0)
}

/// The state letter of `/proc/<pid>/stat` (`Z` for a zombie).
pub fn process_state(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_kernel_threads_and_zombies_from_stat() {
        let kthread = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0";
        let user = "812 (my (odd) prog) Z 1 812 812 0 -1 4194560 90 0 0 0";
        assert!(is_kernel_thread(kthread));
        assert!(!is_kernel_thread(user));
        assert_eq!(process_state(user), Some('Z'));
        assert_eq!(process_state(kthread), Some('S'));
    }
}
