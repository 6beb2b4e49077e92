//! Helpers the image crate's tool tests share: find a tool, skip without it, run it.
#![allow(dead_code)]

use std::process::Command;

pub fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// True (after saying SKIP with `packages` to install) when one of `tools` is missing.
pub fn missing(tools: &[&str], packages: &str) -> bool {
    let m: Vec<&&str> = tools.iter().filter(|t| !have(t)).collect();
    if !m.is_empty() {
        eprintln!("SKIP: needs {m:?} (apt-get install {packages})");
        return true;
    }
    false
}

/// Runs `cmd`, fails the test with its output unless it succeeds; returns its stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
