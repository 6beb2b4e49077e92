//! What the PID-namespace tiers share: whether this machine can make the namespaces at all.

use std::process::{Command, Stdio};

/// Why nomad-init cannot be run as PID 1 of fresh namespaces here, if it cannot.
pub fn prerequisites_missing() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root".into());
    }
    let probe = Command::new("unshare")
        .args([
            "--pid",
            "--fork",
            "--mount-proc",
            "--mount",
            "--uts",
            "--net",
            "true",
        ])
        .stderr(Stdio::null())
        .status();
    match probe {
        Ok(s) if s.success() => None,
        Ok(s) => Some(format!("unshare cannot create namespaces here ({s})")),
        Err(e) => Some(format!("unshare not available: {e}")),
    }
}
