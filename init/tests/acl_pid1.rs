//! The ACL bootstrap as PID 1 does it, across a reboot: the real `nomad-init` as PID 1 of a
//! fresh PID + mount + UTS + network namespace (test mode, as in `pid1_namespace.rs`), the
//! Nomad API test double as its Nomad with ACLs on in its agent config and a data dir that
//! outlives the boot. First boot: bootstrap, token kept 0600, shown once on the console, packs
//! applied with it, the shutdown drain uses it. Second boot: no bootstrap, the token is not
//! shown, the node's eligibility and the packs use it. Needs root; skips otherwise.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

#[macro_use]
mod pid1ns;
use pid1ns::{log_lines, Console};

/// One boot of the namespace; the console is its stderr.
struct Boot {
    console: Console,
    _dir: tempfile::TempDir,
}

impl Boot {
    /// Boots with the agent config, token file and Nomad data under `state`, which the
    /// next boot gets again (as a data partition would keep them).
    fn start(state: &Path) -> Boot {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc/nomados")).unwrap();
        let d = dir.path().display();
        let s = state.display();
        pid1ns::write_script(&dir.path().join("nomad"), &pid1ns::double_script());
        let mut agent = pid1ns::double_agent(state);
        agent["acl"] = serde_json::json!({"enabled": true});
        agent["plugin"] = serde_json::json!({"raw_exec": {"config": {"enabled": true}}});
        std::fs::write(state.join("agent.json"), agent.to_string()).unwrap();
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
        let unshare = pid1ns::init_command(&root, dir.path(), true)
            .env("NOMAD_DOUBLE_ALLOC_DELAY_MS", "0")
            .spawn()
            .unwrap();
        Boot {
            console: Console::new(unshare),
            _dir: dir,
        }
    }

    fn wait_for(&self, needle: &str) -> String {
        self.console.wait_for(needle)
    }

    fn power_off(&mut self) -> Vec<String> {
        self.console.power_off()
    }
}

#[test]
fn first_boot_bootstraps_and_shows_the_token_once_the_reboot_reuses_it() {
    skip_unless_namespaces!();
    let state = tempfile::tempdir().unwrap();

    let mut first = Boot::start(state.path());
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
    let mut second = Boot::start(state.path());
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
