//! `nomados.install=/dev/<disk>` on the kernel command line: instead of starting Nomad,
//! PID 1 runs the installer (`nomad-init install`, this same binary) as a child, shows its
//! lines on the console, and reboots into the installed system when it succeeded. A
//! refusal or a failure leaves the machine up with the reason on the console (rebooting
//! would only netboot the same installer again).

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::limited::{Limits, RunEnd};
use super::reaper::{ExitStatus, Reaper};
use crate::install::options::{ImageSource, Request};
use crate::log::Level;

/// The install request of this boot's kernel command line: none, one, or why the words
/// given cannot be followed (see [`crate::install::options::decide`]).
pub fn from_cmdline(root: &crate::sys::root::Root) -> Result<Option<Request>, String> {
    crate::install::options::from_cmdline(&cmdline(root))
}

/// How long this boot's install may take: `nomados.install.deadline=` (see
/// [`crate::install::options::deadline_from`]).
pub fn deadline(root: &crate::sys::root::Root) -> Duration {
    crate::install::options::deadline_from(&cmdline(root))
}

/// Whether this boot runs from install media or from a disk (see
/// [`crate::install::options::booted_from`]).
pub fn booted_from(root: &crate::sys::root::Root) -> crate::install::options::Booted {
    crate::install::options::booted_from(&cmdline(root))
}

fn cmdline(root: &crate::sys::root::Root) -> String {
    if root.is_test() {
        std::env::var(crate::sys::root::TEST_CMDLINE_ENV).unwrap_or_default()
    } else {
        crate::fsutil::read_bounded_to_string(std::path::Path::new("/proc/cmdline"), 8192)
            .unwrap_or_default()
    }
}

/// The child's command line: no secret travels here (a URL's credentials would show in
/// `ps`, but the installer only ever prints the URL redacted).
pub fn command(program: &std::path::Path, req: &Request, data_label: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.arg0("nomad-init")
        .arg("install")
        .arg("--target")
        .arg(&req.target)
        .arg("--data-label")
        .arg(data_label);
    match &req.source {
        ImageSource::Url { url, sha256 } => {
            cmd.arg("--image").arg(url).arg("--sha256").arg(sha256);
        }
        ImageSource::Iso(None) => {
            cmd.arg("--image").arg("iso");
        }
        ImageSource::Iso(Some(p)) => {
            cmd.arg("--image").arg(format!("iso:{}", p.display()));
        }
    }
    if req.wipe {
        cmd.arg("--wipe");
    }
    cmd.env_clear()
        .env("PATH", super::nomad::DEFAULT_PATH)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// The tag of the installer's lines on the console, and its cgroup.
pub const TAG: &str = "install";
/// The installer's memory cap (its cgroup's `memory.max` and its data rlimit). Measured
/// peak: 19.5 MiB resident (`/usr/bin/time -v`, the default image as `.raw.xz` over HTTP
/// onto a loop device; docs/install.md). The cap leaves room for a `-9` image (a 64 MiB
/// xz dictionary) and mke2fs, which runs in the same cgroup.
pub const MEMORY_MIB: u64 = 256;

/// Runs the installer under `limited::run` (output to the console, the memory cap, a task
/// limit, `deadline`); true when it installed.
pub async fn run(
    reaper: &Arc<Reaper>,
    req: &Request,
    data_label: &str,
    cgroup_root: Option<std::path::PathBuf>,
    deadline: Duration,
) -> bool {
    let program = std::path::Path::new("/proc/self/exe");
    run_program(reaper, program, req, data_label, cgroup_root, deadline).await
}

/// [`run`] with the installer at `program` (tests stand a script in for nomad-init).
async fn run_program(
    reaper: &Arc<Reaper>,
    program: &std::path::Path,
    req: &Request,
    data_label: &str,
    cgroup_root: Option<std::path::PathBuf>,
    deadline: Duration,
) -> bool {
    let started = Instant::now();
    crate::info!("install: installing NomadOS to {}", req.target.display());
    let mut cmd = command(program, req, data_label);
    let limits = Limits {
        name: TAG,
        cgroup: TAG,
        memory_mib: MEMORY_MIB,
        // The installer, its download thread and mke2fs / resize2fs.
        pids_max: 32,
        deadline,
        cgroup_root,
        stderr_level: Level::Warn,
    };
    let ran = super::limited::run(reaper, &mut cmd, &limits, None).await;
    if ran.oom_killed {
        crate::error!("install: the installer was killed by its memory limit of {MEMORY_MIB} MiB");
    }
    match ran.end {
        RunEnd::Exited(ExitStatus::Exited(0)) => {
            crate::info!(
                "install: NomadOS installed to {} in {:.1} s; rebooting into it",
                req.target.display(),
                started.elapsed().as_secs_f64()
            );
            true
        }
        RunEnd::Exited(ExitStatus::Exited(code)) if code == crate::install::run::exit::REFUSED => {
            crate::error!(
                "install: refused to write {} (see above); nothing was written",
                req.target.display()
            );
            false
        }
        // limited::run said it on the console already.
        RunEnd::DeadlinePassed => {
            crate::error!(
                "install: stopped at its deadline of {} s (nomados.install.deadline=); not rebooting",
                deadline.as_secs()
            );
            false
        }
        other => {
            crate::error!("install: the installer failed ({other:?}); not rebooting");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A script standing in for the installer, run as PID 1 runs the real one (the real
    /// reaper, `limited::run`): it ends with `code` after `body`.
    async fn run_fake(body: &str, deadline: Duration) -> bool {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("fake-installer");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let req = Request {
            target: "/dev/vda".into(),
            source: ImageSource::Iso(None),
            wipe: false,
        };
        let reaper = Arc::new(Reaper::new());
        let r = reaper.clone();
        let reap = tokio::spawn(async move {
            loop {
                r.reap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let installed = tokio::time::timeout(
            Duration::from_secs(60),
            run_program(&reaper, &p, &req, "NOMADOS-DATA", None, deadline),
        )
        .await
        .unwrap();
        reap.abort();
        installed
    }

    #[tokio::test]
    async fn the_installer_runs_under_the_memory_cap_and_the_deadline() {
        assert!(run_fake("exit 0", Duration::from_secs(30)).await);
        assert!(!run_fake("exit 3", Duration::from_secs(30)).await);
        // Within the cap: what the xz decoder of a -9 image needs, with room.
        assert!(
            run_fake(
                "exec python3 -c 'b = bytearray(100 << 20); b[-1] = 1'",
                Duration::from_secs(30)
            )
            .await
        );
        // Beyond it: the data rlimit refuses the allocation (the cgroup would kill it).
        assert!(
            !run_fake(
                &format!(
                    "exec python3 -c 'b = bytearray({} << 20); b[-1] = 1'",
                    MEMORY_MIB + 64
                ),
                Duration::from_secs(30)
            )
            .await
        );
        // Past its deadline it is killed: the install did not happen.
        assert!(!run_fake("sleep 30; exit 0", Duration::from_secs(1)).await);
    }

    #[test]
    fn the_child_gets_the_request_as_arguments() {
        let req = Request {
            target: "/dev/vda".into(),
            source: ImageSource::Url {
                url: "http://10.0.2.2:8000/nomados.raw.xz".into(),
                sha256: "ab".repeat(32),
            },
            wipe: true,
        };
        let cmd = command(std::path::Path::new("/proc/self/exe"), &req, "NOMADOS-DATA");
        let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into()).collect();
        assert_eq!(
            args,
            [
                "install",
                "--target",
                "/dev/vda",
                "--data-label",
                "NOMADOS-DATA",
                "--image",
                "http://10.0.2.2:8000/nomados.raw.xz",
                "--sha256",
                &"ab".repeat(32),
                "--wipe"
            ]
        );
    }
}
