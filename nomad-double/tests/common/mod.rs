//! Starts the `nomad-double` binary as a real process and waits for Nomad's startup line.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub struct Agent {
    pub child: Child,
    pub base: String,
    pub lines: mpsc::Receiver<String>,
    _dir: tempdir::Dir,
}

mod tempdir {
    /// A throwaway directory under the target dir, removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Agent {
    /// Writes `config` (HCL) to a file and runs `nomad-double agent -config <file>`.
    pub fn start(config: &str, env: &[(&str, &str)]) -> Agent {
        let dir = std::env::temp_dir().join(format!(
            "nomad-double-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("agent.hcl");
        std::fs::write(&file, config).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nomad-double"));
        cmd.arg("agent")
            .arg(format!("-config={}", file.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn nomad-double");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut addr = None;
        loop {
            let line = match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    panic!("nomad-double did not print its startup line within 30s");
                }
            };
            if let Some(rest) = line.trim().strip_prefix("Bind Addrs: HTTP: [") {
                addr = rest.strip_suffix(']').map(String::from);
            }
            if line.contains("==> Nomad agent started!") {
                break;
            }
        }
        let addr = addr.expect("startup output names the bound HTTP address");
        Agent {
            child,
            base: format!("http://{addr}"),
            lines: rx,
            _dir: tempdir::Dir(dir),
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
