//! The machine configuration with the real `nomad-init` as PID 1 of fresh namespaces (test
//! mode, as in pid1_namespace.rs): long-lived mode picks up a change at the
//! `nomados.config=<url>` after SIGHUP (a real HTTP server inside the namespace's network,
//! Python's `http.server`, which answers `If-Modified-Since` with 304), and the
//! machine-config child's memory limit holds. Needs root; skips with a message otherwise.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

#[macro_use]
mod pid1ns;
use pid1ns::Console;

macro_rules! skip_unless_possible {
    () => {
        skip_unless_namespaces!();
        if Command::new("python3").arg("--version").output().is_err()
            || Command::new("nsenter").arg("--version").output().is_err()
        {
            eprintln!("SKIP {}: python3 and nsenter are needed", module_path!());
            return;
        }
    };
}

/// Processes killed on drop: the namespace's init (which ends the namespace) and helpers.
struct Namespace {
    console: Console,
    helpers: Vec<Child>,
    /// Holds the test root until the namespace is gone.
    _dir: tempfile::TempDir,
}

/// The fake Nomad: prints its machine fragment (so the console shows which configuration
/// it started with), then waits to be stopped.
const FAKE_NOMAD: &str = "for f in \"$NOMADOS_TEST_ROOT\"/run/nomados/machine/nomad.d/50-*; do \
     [ -f \"$f\" ] && echo \"fake nomad started with $(cat \"$f\")\"; done\n\
     echo 'fake nomad up'\n\
     exec sleep 1000";

impl Namespace {
    /// Boots nomad-init with `machine` as the `[machine]` table of its nomados.toml and
    /// `cmdline` as the kernel command line.
    fn boot(dir: tempfile::TempDir, machine: &str, cmdline: &str) -> Namespace {
        let agent = r#"{"ports": {"http": 4646}}"#;
        Self::boot_with(dir, machine, cmdline, FAKE_NOMAD, agent)
    }

    /// Boots with the test double as Nomad (its API answers, so PID 1 sees it healthy).
    fn boot_double(dir: tempfile::TempDir, machine: &str, cmdline: &str) -> Namespace {
        let agent = pid1ns::double_agent(dir.path()).to_string();
        Self::boot_with(dir, machine, cmdline, &pid1ns::double_script(), &agent)
    }

    fn boot_with(
        dir: tempfile::TempDir,
        machine: &str,
        cmdline: &str,
        nomad_script: &str,
        agent: &str,
    ) -> Namespace {
        let root = dir.path().join("root");
        let d = dir.path().display();
        std::fs::create_dir_all(root.join("etc/nomados")).unwrap();
        pid1ns::write_script(&dir.path().join("fake-nomad"), nomad_script);
        std::fs::write(dir.path().join("init.json"), agent).unwrap();
        std::fs::write(
            root.join("etc/nomados/nomados.toml"),
            format!(
                "hostname = \"ns-test\"\n\
                 [nomad]\nbinary = \"{d}/fake-nomad\"\nconfig = \"{d}/init.json\"\nstop_timeout_secs = 2\n\
                 [packs]\nset = \"{d}/root/etc/nomados/packs\"\ncache_dir = \"{d}/root/var/cache\"\ninterval_secs = 0\n\
                 [data]\nmount_point = \"{d}/root/var/lib/nomad\"\n\
                 [machine]\n{machine}\n"
            ),
        )
        .unwrap();
        let unshare = pid1ns::init_command(&root, dir.path(), true)
            .env("NOMADOS_TEST_CMDLINE", cmdline)
            .spawn()
            .unwrap();
        Namespace {
            console: Console::new(unshare),
            helpers: Vec::new(),
            _dir: dir,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.console.lines()
    }

    fn count(&self, needle: &str) -> usize {
        self.lines().iter().filter(|l| l.contains(needle)).count()
    }

    /// Waits until `n` console lines contain `needle`.
    fn wait_for_count(&self, needle: &str, n: usize) {
        self.console.wait_for_count(needle, n);
    }

    fn wait_for(&self, needle: &str) {
        self.console.wait_for(needle);
    }

    fn init_pid(&self) -> i32 {
        self.console.init_pid()
    }

    /// Serves `www` on 127.0.0.1:8765 inside the namespace's network.
    fn serve(&mut self, www: &Path) {
        let init = self.init_pid();
        let server = Command::new("nsenter")
            .args(["--target", &init.to_string(), "--net", "--"])
            .args([
                "python3",
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                "8765",
            ])
            .arg("--directory")
            .arg(www)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.helpers.push(server);
    }

    fn sighup(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.init_pid()),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap();
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        for h in &mut self.helpers {
            let _ = h.kill();
            let _ = h.wait();
        }
        // The init first: the console's own drop only ends `unshare`.
        if let Ok(None) = self.console.unshare.try_wait() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.init_pid()),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Writes the user data served at /user-data, its mtime `secs` from now: http.server
/// compares If-Modified-Since at second granularity.
fn publish(www: &Path, text: &str, secs: u64) {
    std::fs::create_dir_all(www).unwrap();
    let path = www.join("user-data");
    std::fs::write(&path, text).unwrap();
    let f = std::fs::File::options().write(true).open(&path).unwrap();
    f.set_modified(SystemTime::now() + Duration::from_secs(secs))
        .unwrap();
}

fn fragment_user_data(name: &str) -> String {
    format!("[[fragments]]\nname = \"a.json\"\ncontent = '{{\"name\": \"{name}\"}}'\n")
}

#[test]
fn a_change_at_the_config_url_is_applied_after_sighup() {
    skip_unless_possible!();
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    publish(&www, &fragment_user_data("v1"), 0);
    // No interval: only SIGHUP polls, so every poll below is the test's.
    let mut ns = Namespace::boot(
        dir,
        "poll_secs = 0",
        "console=ttyS0 nomados.config=http://127.0.0.1:8765/user-data",
    );
    // The boot's fetch retries with backoff while the server starts.
    ns.serve(&www);
    ns.wait_for("fake nomad started with {\"name\": \"v1\"}");

    // Nothing changed: the first poll fetches (no validators yet), the next is a 304.
    ns.sighup();
    ns.wait_for("machine config: http://127.0.0.1:8765/user-data: unchanged");
    ns.sighup();
    ns.wait_for("machine config: http://127.0.0.1:8765/user-data: not modified");
    assert_eq!(ns.count("fake nomad up"), 1, "no restart without a change");

    // A broken version: refused with its line and column, the running one stays.
    publish(&www, "[nomad]\nrole = \"leader\"\n", 10);
    ns.sighup();
    ns.wait_for("cmdline-url:user-data:2:");
    ns.wait_for("is refused; the running configuration stays");
    assert_eq!(ns.count("fake nomad up"), 1);

    // A good new version: applied, and Nomad restarted to read it.
    publish(&www, &fragment_user_data("v2"), 20);
    ns.sighup();
    ns.wait_for("is applied: restart nomad (fragments)");
    ns.wait_for("nomad stopped for a restart");
    ns.wait_for("fake nomad started with {\"name\": \"v2\"}");
    assert_eq!(ns.count("fake nomad up"), 2);
}

#[test]
fn a_moved_api_reaches_pid1_and_init_keys_are_followed_or_named_once() {
    skip_unless_possible!();
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    publish(&www, &fragment_user_data("v1"), 0);
    let mut ns = Namespace::boot_double(
        dir,
        "poll_secs = 0",
        "console=ttyS0 nomados.config=http://127.0.0.1:8765/user-data",
    );
    ns.serve(&www);
    ns.wait_for("nomad API healthy at http://127.0.0.1:4646");

    // The API moves (an agent config fragment), one [init] key PID 1 follows live and
    // one it reads only at boot.
    let v2 = "[init.machine]\ndeadline_secs = 60\n[init.nomad]\nstop_timeout_secs = 3\n\
              [[fragments]]\nname = \"a.json\"\ncontent = '{\"ports\": {\"http\": 4747}}'\n";
    publish(&www, v2, 10);
    ns.sighup();
    ns.wait_for("is applied: restart nomad (fragments)");
    ns.wait_for("machine config: followed at once: init.machine.deadline_secs");
    ns.wait_for("machine config: takes effect at the next boot: init.nomad.stop_timeout_secs");
    ns.wait_for("PID 1 now reaches the nomad API at http://127.0.0.1:4747 (http)");
    ns.wait_for("nomad API healthy at http://127.0.0.1:4747");

    // Another change that keeps the boot-only key: it is not named again.
    publish(
        &www,
        &v2.replace("deadline_secs = 60", "deadline_secs = 61"),
        20,
    );
    ns.sighup();
    ns.wait_for_count(
        "machine config: followed at once: init.machine.deadline_secs",
        2,
    );
    assert_eq!(ns.count("takes effect at the next boot"), 1);
    assert_eq!(
        ns.count("PID 1 now reaches the nomad API"),
        1,
        "the API did not move again"
    );

    // The drain at shutdown reaches the moved API too.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(ns.init_pid()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    ns.wait_for("Poweroff requested: shutting down");
    ns.wait_for("not draining: no other node could take the allocations");
    assert_eq!(ns.count("not draining: nomad API unavailable"), 0);
}

#[test]
fn init_network_from_an_early_source_configures_the_network_before_nomad() {
    skip_unless_possible!();
    // The image's user data is read without the network (like a config drive or fw_cfg):
    // its [init.network] is followed. The namespace has only `lo`: a static address on it.
    let dir = tempfile::tempdir().unwrap();
    let baked = dir.path().join("root/etc/nomados/user-data.toml");
    std::fs::create_dir_all(baked.parent().unwrap()).unwrap();
    std::fs::write(
        &baked,
        "[[init.network.interfaces]]\nname = \"lo\"\nstatic = { address = \"10.9.9.9/32\" }\n",
    )
    .unwrap();
    let ns = Namespace::boot(dir, "", "console=ttyS0");
    ns.wait_for("machine config from baked: applied");
    ns.wait_for("network: starting again with the user data's [init.network]");
    ns.wait_for("lo: static 10.9.9.9/32");
    ns.wait_for("fake nomad up");
    let lines = ns.lines();
    let at = |needle: &str| lines.iter().position(|l| l.contains(needle)).unwrap();
    assert!(
        at("lo: static 10.9.9.9/32") < at("fake nomad up"),
        "the network is configured before Nomad starts"
    );
    let out = Command::new("nsenter")
        .args(["--target", &ns.init_pid().to_string(), "--net", "--"])
        .args(["ip", "-4", "addr", "show", "dev", "lo"])
        .output()
        .unwrap();
    let addrs = String::from_utf8_lossy(&out.stdout);
    assert!(addrs.contains("10.9.9.9/32"), "{addrs}");
}

#[test]
fn the_machine_config_child_is_held_to_its_memory_limit() {
    skip_unless_possible!();
    // A user data of nearly 1 MiB (the most a source reads): thousands of meta keys. It
    // is valid, and its parse takes about twice 8 MiB (a small one needs less than 8).
    let meta: String = (0..36_000)
        .map(|i| format!("k{i:05} = \"{}\"\n", "v".repeat(16)))
        .collect();
    let user_data = format!("[nomad]\nrole = \"client\"\n[nomad.meta]\n{meta}");
    assert!(user_data.len() < 1024 * 1024);
    // The user data baked into the image: the one source a test root can hold (sysfs
    // is mounted over the fw_cfg path).
    let place = |dir: &tempfile::TempDir| {
        let baked = dir.path().join("root/etc/nomados/user-data.toml");
        std::fs::create_dir_all(baked.parent().unwrap()).unwrap();
        std::fs::write(&baked, &user_data).unwrap();
    };

    // Within the default limit it is applied...
    let dir = tempfile::tempdir().unwrap();
    place(&dir);
    let ns = Namespace::boot(dir, "", "console=ttyS0");
    ns.wait_for("machine config from baked: applied");
    ns.wait_for("fake nomad up");
    drop(ns);

    // ...with 8 MiB the child dies alone, the baked configuration stays, Nomad starts.
    let dir = tempfile::tempdir().unwrap();
    place(&dir);
    let ns = Namespace::boot(dir, "memory_max_mib = 8", "console=ttyS0");
    ns.wait_for("machine config: the child died");
    ns.wait_for("fake nomad up");
    assert_eq!(ns.count("machine config from baked: applied"), 0);
    let started: Vec<String> = ns
        .lines()
        .into_iter()
        .filter(|l| l.contains("agent -config="))
        .collect();
    assert_eq!(started.len(), 1, "{started:?}");
    assert!(
        !started[0].contains("machine/nomad.d"),
        "nothing of the refused configuration reaches Nomad: {}",
        started[0]
    );
}
