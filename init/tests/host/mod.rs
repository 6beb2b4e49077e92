//! What the root-only loop-device tests share: running a host tool and checking that the
//! machine can run them at all.

#![allow(dead_code)]

use std::process::Command;

/// Runs `cmd args`, fails the test with its stderr unless it succeeds; returns its stdout.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Why the test cannot run here (not root, or one of `tools` missing), if it cannot.
pub fn missing_prerequisite(tools: &[&str]) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root".into());
    }
    tools
        .iter()
        .find(|tool| {
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .map(|o| !o.status.success())
                .unwrap_or(true)
        })
        .map(|tool| format!("{tool} not installed"))
}
