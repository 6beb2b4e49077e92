//! What the PID-namespace tiers share: whether this machine can make the namespaces at all,
//! the double's binary, and a booted namespace's console.

#![allow(dead_code)]

/// Returns from the calling test with a SKIP line when [`prerequisites_missing`] says the
/// namespaces cannot be made here (`#[macro_use] mod pid1ns;` in the test file).
macro_rules! skip_unless_namespaces {
    () => {
        if let Some(why) = pid1ns::prerequisites_missing() {
            eprintln!(
                "SKIP {}: {why}; this test needs root and namespaces",
                module_path!()
            );
            return;
        }
    };
}

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

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a boot in a namespace may take to say what a test waits for.
pub const TIMEOUT: Duration = Duration::from_secs(90);

/// The double's binary, beside `nomad-init` in the target directory (built when missing:
/// it is a dev-dependency of this crate, so cargo builds its library only).
pub fn double_binary() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_nomad-init"))
        .parent()
        .unwrap();
    let bin = dir.join("nomad-double");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "-q", "-p", "nomad-double"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok && bin.exists(),
            "cannot build nomad-double at {}",
            bin.display()
        );
    }
    bin
}

/// `nomad-init` as PID 1 of fresh PID + mount + UTS namespaces (and a network namespace
/// when `new_net`), in test mode with `root` as its root; the caller adds the environment.
pub fn init_command(root: &Path, tmp: &Path, new_net: bool) -> Command {
    let mut cmd = Command::new("unshare");
    // --kill-child: when `unshare` dies (Console's drop kills it), the namespace's init gets
    // SIGKILL and the namespace with it; without it a dropped console leaked a running init
    // (with its children and every descriptor it inherited) that outlived the test.
    cmd.args(["--pid", "--kill-child", "--mount-proc", "--mount", "--uts"]);
    if new_net {
        cmd.arg("--net");
    }
    cmd.arg(env!("CARGO_BIN_EXE_nomad-init"))
        .env("NOMADOS_TEST_ROOT", root)
        .env("NOMADOS_TEST_CMDLINE", "")
        .env("TMPDIR", tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// A running namespace whose console (PID 1's stderr) is collected line by line.
pub struct Console {
    pub unshare: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Console {
    /// Takes over `unshare` (spawned with a piped stderr).
    pub fn new(mut unshare: Child) -> Console {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let stderr = unshare.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("  | {line}");
                sink.lock().unwrap().push(line);
            }
        });
        Console { unshare, lines }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The first console line containing `needle`, waiting up to [`TIMEOUT`] for it.
    pub fn wait_for(&self, needle: &str) -> String {
        let at = self.wait_for_count(needle, 1);
        self.lines().swap_remove(at)
    }

    /// The index of the `n`-th console line containing `needle`, waiting up to [`TIMEOUT`]
    /// for it.
    pub fn wait_for_count(&self, needle: &str, n: usize) -> usize {
        let start = Instant::now();
        loop {
            let found = self
                .lines()
                .iter()
                .enumerate()
                .filter(|(_, l)| l.contains(needle))
                .nth(n - 1)
                .map(|(i, _)| i);
            if let Some(i) = found {
                return i;
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "timed out waiting for {n} x {needle:?}; console:\n{}",
                self.lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The namespace's init as the host sees it (the child of `unshare`).
    pub fn init_pid(&self) -> i32 {
        let parent = self.unshare.id() as i32;
        let start = Instant::now();
        loop {
            let found = std::fs::read_dir("/proc")
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .find(|&p| parent_of(p) == Some(parent));
            if let Some(p) = found {
                return p;
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "the namespace's init never appeared"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM to PID 1 (a power-off), then waits for the namespace to end.
    pub fn power_off(&mut self) -> Vec<String> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.init_pid()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        self.wait_end();
        self.lines()
    }

    /// Waits up to [`TIMEOUT`] for the namespace to end; returns `unshare`'s status (it
    /// re-raises the signal that ended the namespace's init).
    pub fn wait_end(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.unshare.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "the namespace did not end; console:\n{}",
                self.lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        if let Ok(None) = self.unshare.try_wait() {
            let _ = self.unshare.kill();
            let _ = self.unshare.wait();
        }
    }
}

/// The parent PID of `pid`, from `/proc/<pid>/stat`.
pub fn parent_of(pid: i32) -> Option<i32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.rsplit_once(") ")?.1.to_string();
    rest.split(' ').nth(1)?.parse::<i32>().ok()
}

/// Log lines (`[   12.345] level target: ...`) as opposed to the console banner.
pub fn log_lines(lines: &[String]) -> Vec<&String> {
    lines
        .iter()
        .filter(|l| l.trim_start().starts_with('['))
        .collect()
}

/// Host PIDs of every process in the PID namespace of `init` (a host PID).
pub fn namespace_members(init: i32) -> Vec<i32> {
    let ns = |p: i32| std::fs::read_link(format!("/proc/{p}/ns/pid")).ok();
    let want = ns(init).expect("the namespace's init");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| ns(p).as_ref() == Some(&want))
        .collect()
}

/// Writes `path` as an executable `/bin/sh` script of `body`: the Nomad binary a test's
/// nomados.toml names.
pub fn write_script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The script body that runs the double as Nomad, with Nomad's arguments.
pub fn double_script() -> String {
    format!("exec {} \"$@\"", double_binary().display())
}

/// The double's agent config as the PID-1 tests boot it: one node, server and client, its
/// API on 127.0.0.1:4646, its data in `dir`/nomad-data. A test adds what it turns on (ACLs,
/// TLS) with `agent["acl"] = ...`.
pub fn double_agent(dir: &Path) -> serde_json::Value {
    serde_json::json!({
        "data_dir": format!("{}/nomad-data", dir.display()),
        "bind_addr": "127.0.0.1",
        "ports": {"http": 4646},
        "server": {"enabled": true, "bootstrap_expect": 1},
        "client": {"enabled": true},
    })
}
