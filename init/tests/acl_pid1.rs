//! The ACL bootstrap as PID 1 does it, across a reboot: the real `nomad-init` as PID 1 of a
//! fresh PID + mount + UTS + network namespace (test mode, as in `pid1_namespace.rs`), the
//! Nomad API test double as its Nomad with ACLs on in its agent config and a data dir that
//! outlives the boot. First boot: bootstrap, token kept 0600, shown once on the console, packs
//! applied with it, the shutdown drain uses it. Second boot: no bootstrap, the token is not
//! shown, the node's eligibility and the packs use it. Needs root; skips otherwise.

use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod pid1ns;
use pid1ns::prerequisites_missing;

const TIMEOUT: Duration = Duration::from_secs(90);

/// The double's binary, beside `nomad-init` in the target directory (built when missing:
/// it is a dev-dependency of this crate, so cargo builds its library only).
fn double_binary() -> PathBuf {
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

/// One boot of the namespace; the console is its stderr.
struct Boot {
    unshare: Child,
    lines: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Boot {
    /// Boots with the agent config, token file and Nomad data under `state`, which the
    /// next boot gets again (as a data partition would keep them).
    fn start(state: &Path, double: &Path) -> Boot {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc/nomados")).unwrap();
        let d = dir.path().display();
        let s = state.display();
        let nomad = dir.path().join("nomad");
        std::fs::write(
            &nomad,
            format!("#!/bin/sh\nexec {} \"$@\"\n", double.display()),
        )
        .unwrap();
        std::fs::set_permissions(&nomad, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(
            state.join("agent.json"),
            format!(
                r#"{{"data_dir": "{s}/nomad-data", "bind_addr": "127.0.0.1", "ports": {{"http": 4646}},
                "server": {{"enabled": true, "bootstrap_expect": 1}}, "client": {{"enabled": true}},
                "acl": {{"enabled": true}}, "plugin": {{"raw_exec": {{"config": {{"enabled": true}}}}}}}}"#
            ),
        )
        .unwrap();
        let packs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packs");
        std::fs::write(
            root.join("etc/nomados/nomados.toml"),
            format!(
                "hostname = \"ns-acl\"\n\
                 [nomad]\nbinary = \"{d}/nomad\"\nconfig = \"{s}/agent.json\"\n\
                 token_file = \"{s}/nomad-token\"\nstop_timeout_secs = 5\ndrain_timeout_secs = 5\n\
                 [packs]\nset = \"{}\"\ncache_dir = \"{d}/root/var/cache\"\ninterval_secs = 0\n\
                 [data]\nmount_point = \"{d}/root/var/lib/nomad\"\n",
                packs.display()
            ),
        )
        .unwrap();
        let mut unshare = Command::new("unshare")
            .args([
                "--pid",
                "--fork",
                "--mount-proc",
                "--mount",
                "--uts",
                "--net",
            ])
            .arg(env!("CARGO_BIN_EXE_nomad-init"))
            .env("NOMADOS_TEST_ROOT", &root)
            .env("NOMADOS_TEST_CMDLINE", "")
            .env("TMPDIR", dir.path())
            .env("NOMAD_DOUBLE_ALLOC_DELAY_MS", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
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
        Boot {
            unshare,
            lines,
            _dir: dir,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn wait_for(&self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            if let Some(l) = self.lines().into_iter().find(|l| l.contains(needle)) {
                return l;
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "timed out waiting for {needle:?}; console:\n{}",
                self.lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM to PID 1 (a power-off), then waits for the namespace to end.
    fn power_off(&mut self) -> Vec<String> {
        let parent = self.unshare.id() as i32;
        let init = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .find(|&p| {
                std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .ok()
                    .and_then(|s| {
                        let rest = s.rsplit_once(") ")?.1.to_string();
                        rest.split(' ').nth(1)?.parse::<i32>().ok()
                    })
                    == Some(parent)
            })
            .expect("the namespace's init");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(init),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let start = Instant::now();
        while self.unshare.try_wait().unwrap().is_none() {
            assert!(start.elapsed() < TIMEOUT, "the namespace did not end");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.lines()
    }
}

impl Drop for Boot {
    fn drop(&mut self) {
        if let Ok(None) = self.unshare.try_wait() {
            let _ = self.unshare.kill();
            let _ = self.unshare.wait();
        }
    }
}

/// Log lines (`[   12.345] level target: ...`) as opposed to the console banner.
fn log_lines(lines: &[String]) -> Vec<&String> {
    lines
        .iter()
        .filter(|l| l.trim_start().starts_with('['))
        .collect()
}

#[test]
fn first_boot_bootstraps_and_shows_the_token_once_the_reboot_reuses_it() {
    if let Some(why) = prerequisites_missing() {
        eprintln!(
            "SKIP {}: {why}; this test needs root and namespaces",
            module_path!()
        );
        return;
    }
    let double = double_binary();
    let state = tempfile::tempdir().unwrap();

    let mut first = Boot::start(state.path(), &double);
    first.wait_for("NOMAD ACL BOOTSTRAP TOKEN");
    let secret_line = first.wait_for("Secret ID:");
    let token = secret_line.split_whitespace().last().unwrap().to_string();
    first.wait_for("nomad ACLs bootstrapped: management token accessor");
    let applied = first.wait_for("packs: Apply: ");
    assert!(applied.contains(", 0 failed"), "{applied}");
    first.wait_for("packs: apply finished");
    let token_file = state.path().join("nomad-token");
    assert_eq!(std::fs::read_to_string(&token_file).unwrap().trim(), token);
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "token file mode {mode:o}");
    let lines = first.power_off();
    // The drain at power-off asked Nomad with the token (anonymous would be refused).
    assert!(
        lines
            .iter()
            .any(|l| l.contains("not draining: no other node could take")
                || l.contains("drained node")),
        "no drain with the token:\n{}",
        lines.join("\n")
    );
    let showing: Vec<_> = lines.iter().filter(|l| l.contains(&token)).collect();
    assert_eq!(
        showing.len(),
        1,
        "the token appears once, in the banner: {showing:?}"
    );
    assert!(
        !log_lines(&lines).iter().any(|l| l.contains(&token)),
        "the token reached the log"
    );

    // The reboot: same agent data and token file.
    let mut second = Boot::start(state.path(), &double);
    second.wait_for(&format!("nomad ACL token: {}", token_file.display()));
    let applied = second.wait_for("packs: Apply: ");
    assert!(applied.contains(", 0 failed"), "{applied}");
    second.wait_for("is eligible for work");
    let lines = second.power_off();
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("NOMAD ACL BOOTSTRAP TOKEN") || l.contains(&token)),
        "the second boot showed the token:\n{}",
        lines.join("\n")
    );
    assert!(!lines.iter().any(|l| l.contains("ACLs bootstrapped")));
    assert_eq!(std::fs::read_to_string(&token_file).unwrap().trim(), token);
}
