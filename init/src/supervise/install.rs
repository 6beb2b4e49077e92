//! `nomados.install=/dev/<disk>` on the kernel command line: instead of starting Nomad,
//! PID 1 runs the installer (`nomad-init install`, this same binary) as a child, shows its
//! lines on the console, and reboots into the installed system when it succeeded. A
//! refusal or a failure leaves the machine up with the reason on the console (rebooting
//! would only netboot the same installer again).

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::output::{pump, Filter};
use super::reaper::{ExitStatus, Reaper};
use crate::install::options::{ImageSource, Request};
use crate::log::Level;

/// How long an install may take (a slow link and a big disk).
pub const DEADLINE: Duration = Duration::from_secs(3 * 3600);

/// The install request of this boot's kernel command line: none, one, or why the words
/// given cannot be followed (see [`crate::install::options::decide`]).
pub fn from_cmdline(root: &crate::sys::root::Root) -> Result<Option<Request>, String> {
    crate::install::options::from_cmdline(&cmdline(root))
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

/// Runs the installer; true when it installed.
pub async fn run(reaper: &Arc<Reaper>, req: &Request, data_label: &str) -> bool {
    let started = Instant::now();
    crate::info!("install: installing NomadOS to {}", req.target.display());
    let mut cmd = command(std::path::Path::new("/proc/self/exe"), req, data_label);
    let (mut child, pid, exited) = match reaper.spawn(&mut cmd) {
        Ok(s) => s,
        Err(e) => {
            crate::error!("install: cannot start the installer: {e}");
            return false;
        }
    };
    let mut drained = Vec::new();
    if let Some(out) = child.stdout.take() {
        drained.extend(pump("install", "stdout", out, Filter::All(Level::Info)));
    }
    if let Some(err) = child.stderr.take() {
        drained.extend(pump("install", "stderr", err, Filter::All(Level::Warn)));
    }
    drop(child);
    let status = match tokio::time::timeout(DEADLINE, exited).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(_)) => None,
        Err(_) => {
            crate::error!(
                "install: the installer ran past {} s; killing it",
                DEADLINE.as_secs()
            );
            let _ = crate::sys::process::signal(pid, nix::sys::signal::Signal::SIGKILL);
            None
        }
    };
    for d in drained {
        let _ = tokio::time::timeout(Duration::from_secs(2), d).await;
    }
    match status {
        Some(ExitStatus::Exited(0)) => {
            crate::info!(
                "install: NomadOS installed to {} in {:.1} s; rebooting into it",
                req.target.display(),
                started.elapsed().as_secs_f64()
            );
            true
        }
        Some(ExitStatus::Exited(code)) if code == crate::install::run::exit::REFUSED => {
            crate::error!(
                "install: refused to write {} (see above); nothing was written",
                req.target.display()
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
