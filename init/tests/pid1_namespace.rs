//! The real `nomad-init` binary as PID 1 of a fresh PID + mount + UTS + network namespace
//! (`unshare --pid --fork --mount-proc ...`), in test mode (`NOMADOS_TEST_ROOT`): mounts go
//! under a temporary directory and reboot(2) ends the namespace, as the kernel does for a
//! namespace's init. Nomad is a shell script. Needs root; skips with a message otherwise.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[macro_use]
mod pid1ns;
use pid1ns::{namespace_members, Console, TIMEOUT};

/// A booted namespace: its console (the shared harness's) and the directory it runs in.
struct Namespace {
    console: Console,
    dir: tempfile::TempDir,
}

impl Namespace {
    /// Boots `nomad-init` with `fake_nomad` (a shell script body) as the Nomad binary.
    fn boot(fake_nomad: &str, nomad_extra: &str, cmdline: &str) -> Namespace {
        Self::boot_with(fake_nomad, nomad_extra, cmdline, None)
    }

    /// Like [`boot`](Self::boot); `config` replaces the generated nomados.toml.
    fn boot_with(
        fake_nomad: &str,
        nomad_extra: &str,
        cmdline: &str,
        config: Option<&str>,
    ) -> Namespace {
        Self::boot_in(
            tempfile::tempdir().unwrap(),
            fake_nomad,
            nomad_extra,
            cmdline,
            config,
        )
    }

    /// Like [`boot_with`](Self::boot_with), in a directory the caller prepared.
    fn boot_in(
        dir: tempfile::TempDir,
        fake_nomad: &str,
        nomad_extra: &str,
        cmdline: &str,
        config: Option<&str>,
    ) -> Namespace {
        let root = dir.path().join("root");
        pid1ns::write_script(&dir.path().join("fake-nomad"), fake_nomad);
        std::fs::create_dir_all(root.join("etc/nomados")).unwrap();
        let d = dir.path().display();
        std::fs::write(
            root.join("etc/nomados/nomados.toml"),
            format!(
                "hostname = \"ns-test\"\n\
                 [nomad]\nbinary = \"{d}/fake-nomad\"\nconfig = \"{d}/init.json\"\n\
                 {nomad_extra}\n\
                 [packs]\nset = \"{d}/root/etc/nomados/packs\"\ncache_dir = \"{d}/root/var/cache\"\ninterval_secs = 0\n\
                 [data]\nmount_point = \"{d}/root/var/lib/nomad\"\n"
            ),
        )
        .unwrap();
        if let Some(config) = config {
            std::fs::write(root.join("etc/nomados/nomados.toml"), config).unwrap();
        }
        std::fs::write(dir.path().join("init.json"), r#"{"ports": {"http": 4646}}"#).unwrap();

        let unshare = pid1ns::init_command(&root, dir.path(), true)
            .env("NOMADOS_TEST_CMDLINE", cmdline)
            .env("NOMAD_INIT", env!("CARGO_BIN_EXE_nomad-init"))
            .spawn()
            .unwrap();
        Namespace {
            console: Console::new(unshare),
            dir,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

// The console's waits and the namespace's end (dropping the console ends the namespace).
impl std::ops::Deref for Namespace {
    type Target = Console;
    fn deref(&self) -> &Console {
        &self.console
    }
}

impl std::ops::DerefMut for Namespace {
    fn deref_mut(&mut self) -> &mut Console {
        &mut self.console
    }
}

fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

fn state(pid: i32) -> Option<String> {
    stat_fields(pid)?.first().cloned()
}

/// Seconds from the `[   12.345678]` prefix of a plain console line.
fn timestamp(line: &str) -> f64 {
    line.trim_start_matches('[')
        .split(']')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn index_of(lines: &[String], needle: &str) -> usize {
    lines
        .iter()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| {
            panic!(
                "no line contains {needle:?}; console:\n{}",
                lines.join("\n")
            )
        })
}

#[test]
fn orphan_storm_leaves_no_zombies() {
    skip_unless_namespaces!();
    // 200 double forks: each `sh -c 'sleep 0.1 &'` exits at once and its sleep is
    // re-parented to PID 1, which must reap it.
    let ns = Namespace::boot(
        "echo storm-start\n\
         i=0; while [ $i -lt 200 ]; do sh -c 'sleep 0.1 &'; i=$((i+1)); done\n\
         echo storm-done\n\
         exec sleep 1000",
        "",
        "nomados.loglevel=debug",
    );
    let init = ns.init_pid();
    ns.wait_for("nomad: storm-done");
    let orphans = ns.wait_for_count("reaped orphan", 200);
    assert!(orphans > 0);
    // Settle: every orphan slept 0.1 s; give the reaper time, then look for zombies.
    let start = Instant::now();
    let zombies = loop {
        let zombies: Vec<i32> = namespace_members(init)
            .into_iter()
            .filter(|&p| state(p).as_deref() == Some("Z"))
            .collect();
        if zombies.is_empty() || start.elapsed() > Duration::from_secs(10) {
            break zombies;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        zombies.is_empty(),
        "zombies left in the namespace: {zombies:?}"
    );
    // Only init and the (exec'd) fake nomad remain, and nomad was never restarted.
    let members = namespace_members(init);
    assert_eq!(members.len(), 2, "processes left: {members:?}");
    assert_eq!(
        ns.lines().iter().filter(|l| l.contains("started ")).count(),
        1
    );
}

#[test]
fn supervisor_restarts_nomad_with_growing_backoff() {
    skip_unless_namespaces!();
    let ns = Namespace::boot("echo up; exit 3", "restart_backoff_max_secs = 4", "");
    ns.wait_for_count("restarting in", 4);
    let lines = ns.lines();
    let restarts: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("restarting in"))
        .collect();
    let delays: Vec<u64> = restarts
        .iter()
        .map(|l| {
            l.split("restarting in ")
                .nth(1)
                .unwrap()
                .trim_end_matches(" s")
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(&delays[..4], &[1, 2, 4, 4], "doubling, capped at 4 s");
    // Each restart line is followed by a start no earlier than the announced delay.
    let starts: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("supervise: started "))
        .collect();
    assert!(starts.len() >= 4);
    for (i, delay) in delays.iter().take(3).enumerate() {
        let gap = timestamp(starts[i + 1]) - timestamp(restarts[i]);
        assert!(
            gap >= *delay as f64 * 0.99,
            "restart {i}: waited {gap:.3} s, announced {delay} s"
        );
    }
}

#[test]
fn a_childs_last_lines_are_logged_before_its_exit() {
    skip_unless_namespaces!();
    // Nomad exits at once; a subshell that inherited its output writes one more line
    // 0.6 s later. PID 1 reports the exit once the pipe is at end-of-file (within its
    // 2 s bound), so the line comes first: a loaded host delays the pump the same way.
    let ns = Namespace::boot(
        "(sleep 0.6; echo '[ERROR] last words') & exit 3",
        "restart_backoff_max_secs = 4",
        "",
    );
    ns.wait_for("last words");
    ns.wait_for("nomad exited with");
    let lines = ns.lines();
    let words = index_of(&lines, "last words");
    let exit = index_of(&lines, "nomad exited with");
    assert!(
        words < exit,
        "the exit was logged before the last line:\n{}",
        lines.join("\n")
    );
}

#[test]
fn sigterm_from_outside_shuts_down_in_order_and_ends_the_namespace() {
    skip_unless_namespaces!();
    let mut ns = Namespace::boot(
        "trap 'echo got SIGINT; exit 0' INT\n\
         sh -c 'trap \"\" TERM; exec sleep 1000' &\n\
         echo ready\n\
         while :; do sleep 0.1 & wait $!; done",
        "stop_timeout_secs = 10",
        "",
    );
    let init = ns.init_pid();
    ns.wait_for("nomad: ready");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(init),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = ns.wait_end();
    let lines = ns.lines();
    let order = [
        "received SIGTERM",
        "Poweroff requested: shutting down",
        "not draining",
        "stopping nomad (pid",
        "nomad: got SIGINT",
        "nomad stopped with exit code 0",
        "sending SIGTERM to",
        "sending SIGKILL to 1 remaining process(es)",
        "all processes ended",
        "shutdown: synced filesystems",
        "shutdown: unmounted filesystems",
        "powering off",
    ];
    let positions: Vec<usize> = order.iter().map(|n| index_of(&lines, n)).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "shutdown steps out of order: {positions:?}\n{}",
        lines.join("\n")
    );
    // reboot(RB_POWER_OFF) in a PID namespace kills its init with SIGINT; unshare
    // re-raises the child's signal.
    assert_eq!(
        status.signal(),
        Some(libc::SIGINT),
        "unshare ended with {status}"
    );
    assert!(
        !Path::new(&format!("/proc/{init}")).exists(),
        "init still alive"
    );
    assert!(!lines.iter().any(|l| l.contains("reboot(2) failed")));
}

#[test]
fn supervised_child_exit_status_reaches_the_supervisor() {
    skip_unless_namespaces!();
    // Each run first spawns orphans that exit at the same moment, so the reaper is busy
    // in the same waitpid loop; run 1 exits 42, run 2 is killed by SIGKILL.
    let ns = Namespace::boot(
        "n=$(cat \"$TMPDIR/runs\" 2>/dev/null || echo 0); n=$((n+1)); echo $n > \"$TMPDIR/runs\"; echo \"run $n\"\n\
         i=0; while [ $i -lt 20 ]; do sh -c 'sleep 0.2 &'; i=$((i+1)); done\n\
         sleep 0.2\n\
         if [ $n -eq 1 ]; then exit 42; fi\n\
         if [ $n -eq 2 ]; then kill -9 $$; fi\n\
         exec sleep 1000",
        "",
        "",
    );
    ns.wait_for("nomad exited with exit code 42");
    ns.wait_for("nomad exited with signal 9 (SIGKILL)");
    ns.wait_for("nomad: run 3");
    assert_eq!(
        std::fs::read_to_string(ns.path().join("runs"))
            .unwrap()
            .trim(),
        "3"
    );
    let lines = ns.lines();
    assert!(!lines.iter().any(|l| l.contains("nomad exited")
        && !l.contains("exit code 42")
        && !l.contains("SIGKILL")));
    let _: PathBuf = ns.path().to_path_buf();
}

#[test]
fn reboot_command_inside_the_namespace_signals_pid1_which_reboots() {
    skip_unless_namespaces!();
    // `reboot` is the same binary under another name (argv[0] dispatch); it must find that
    // PID 1 is nomad-init and send it SIGINT. reboot(2) then ends the namespace with SIGHUP.
    // PID 1 stops this stand-in with SIGINT as soon as the reboot is asked for, which may
    // be before the line after `reboot` runs: the trap says the status then (`$?` in a trap
    // is that of the command before it).
    let mut ns = Namespace::boot(
        "ln -sf \"$NOMAD_INIT\" \"$TMPDIR/reboot\"\n\
         trap 'echo \"reboot command exited $?\"; exit 0' INT\n\
         \"$TMPDIR/reboot\"; echo \"reboot command exited $?\"\n\
         while :; do sleep 0.1 & wait $!; done",
        "",
        "",
    );
    let status = ns.wait_end();
    let lines = ns.lines();
    // The command's own output races with PID 1's log lines; only PID 1's are ordered.
    index_of(&lines, "reboot command exited 0");
    let order = ["received SIGINT", "Reboot requested", "rebooting"];
    let positions: Vec<usize> = order.iter().map(|n| index_of(&lines, n)).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    assert!(
        !lines[positions[0]].contains("from pid 0"),
        "sent by the reboot command, not the kernel"
    );
    assert_eq!(
        status.signal(),
        Some(libc::SIGHUP),
        "unshare ended with {status}"
    );
}

#[test]
fn power_commands_refuse_when_pid1_is_not_nomad_init() {
    // On the build machine PID 1 is some other init: nothing may be signalled.
    let out = Command::new(env!("CARGO_BIN_EXE_nomad-init"))
        .arg("halt")
        .output()
        .unwrap();
    if std::fs::metadata("/proc/1/exe").is_err() {
        eprintln!("SKIP: cannot inspect /proc/1/exe (not root?)");
        return;
    }
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("halt: PID 1 is not nomad-init"), "{stderr}");
}

#[test]
fn broken_config_falls_back_to_defaults_and_debug_opens_the_shell() {
    skip_unless_namespaces!();
    let ns = Namespace::boot_with(
        "exec sleep 1000",
        "",
        "nomados.debug=1 nomados.bogus=1",
        Some("[nomad]\nbinary = \"/bin/true\"\n  stop_timeout = 3\n"),
    );
    ns.wait_for("emergency shell ended with exit code 0");
    // The defaults name /usr/bin/nomad, which the build machine does not have: retried.
    ns.wait_for("nomad is not running; restarting in 1 s");
    let lines = ns.lines();
    let broken = &lines[index_of(&lines, "init config is broken")];
    assert!(
        broken.contains("etc/nomados/nomados.toml:3:3: unknown field `stop_timeout`"),
        "{broken}"
    );
    let order = [
        "unknown option nomados.bogus=1",
        "init config is broken",
        "using the built-in init config defaults",
        "emergency shell on the console",
        "cannot start",
    ];
    let positions: Vec<usize> = order.iter().map(|n| index_of(&lines, n)).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
}

#[test]
fn packs_are_applied_when_nomad_is_healthy_and_on_sighup() {
    skip_unless_namespaces!();
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("SKIP: python3 (used as a Nomad stand-in serving /v1/agent/health) missing");
        return;
    }
    // The fake Nomad is a static HTTP server: GET /v1/agent/health returns 200.
    let ns = Namespace::boot(
        "mkdir -p \"$TMPDIR/www/v1/agent\" && echo '{\"server\":{\"ok\":true}}' > \"$TMPDIR/www/v1/agent/health\"\n\
         cd \"$TMPDIR/www\" && exec python3 -m http.server --bind 127.0.0.1 4646",
        "",
        "",
    );
    let init = ns.init_pid();
    ns.wait_for("nomad API healthy at http://127.0.0.1:4646");
    ns.wait_for("(nomad became healthy)");
    // The applier's outcome (a summary, or its error) is logged.
    ns.wait_for_count("packs: ", 2);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(init),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    ns.wait_for("(SIGHUP)");
    ns.wait_for_count("packs: ", 4);
    let lines = ns.lines();
    let applying = index_of(&lines, "packs: applying");
    assert!(
        lines[applying].contains("root/etc/nomados/packs"),
        "{}",
        lines[applying]
    );
    let outcome = &lines[applying + 1..]
        .iter()
        .find(|l| l.contains("packs: "))
        .unwrap();
    assert!(
        outcome.contains("Apply: ") || outcome.contains("error: "),
        "{outcome}"
    );
    // Its exit is reported by PID 1, as that of a child.
    ns.wait_for("packs: apply ");
}

/// The body of a fake Nomad: a static HTTP server answering health and `/v1/agent/self`
/// (enough for the applier to reach its packs).
const STATIC_NOMAD: &str = "mkdir -p \"$TMPDIR/www/v1/agent\" && \
     echo '{\"server\":{\"ok\":true}}' > \"$TMPDIR/www/v1/agent/health\" && \
     echo '{\"config\":{\"Version\":{\"Version\":\"1.7.7\"},\"Datacenter\":\"dc1\"}}' > \"$TMPDIR/www/v1/agent/self\"\n\
     cd \"$TMPDIR/www\" && exec python3 -m http.server --bind 127.0.0.1 4646";

/// Boots with [`STATIC_NOMAD`] and a pack set of one pack whose job template is
/// `template`; `packs` is extra `[packs]` settings.
fn boot_with_pack(template: &str, packs: &str) -> Namespace {
    boot_with_pack_and_set(template, "", packs)
}

/// Like [`boot_with_pack`]; `extra_set` is appended to the pack-set file.
fn boot_with_pack_and_set(template: &str, extra_set: &str, packs: &str) -> Namespace {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let config = format!(
        "hostname = \"ns-test\"\n\
         [nomad]\nbinary = \"{d}/fake-nomad\"\nconfig = \"{d}/init.json\"\n\
         [packs]\nset = \"{d}/root/etc/nomados/packs\"\ncache_dir = \"{d}/root/var/cache\"\ninterval_secs = 0\n{packs}\n\
         [data]\nmount_point = \"{d}/root/var/lib/nomad\"\n"
    );
    let set = dir.path().join("root/etc/nomados/packs");
    std::fs::create_dir_all(set.join("bad/jobs")).unwrap();
    std::fs::write(
        set.join("packs.toml"),
        format!("[bad]\n_origin = \".\"\n[bad.bad]\n{extra_set}"),
    )
    .unwrap();
    std::fs::write(set.join("bad/jobs/bad.hcl"), template).unwrap();
    Namespace::boot_in(dir, STATIC_NOMAD, "", "", Some(&config))
}

/// A template that never ends and allocates nothing to speak of: 10^10 loop turns.
const ENDLESS_TEMPLATE: &str =
    "{% for i in range(end=100000) %}{% for j in range(end=100000) %}{% endfor %}{% endfor %}";

/// Host PIDs of the namespace's processes whose command line contains `needle`.
fn processes_running(init: i32, needle: &str) -> Vec<i32> {
    namespace_members(init)
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(needle)
                })
                .unwrap_or(false)
        })
        .collect()
}

fn python_missing() -> bool {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("SKIP: python3 (used as a Nomad stand-in) missing");
        return true;
    }
    false
}

#[test]
fn a_runaway_pack_cannot_delay_power_off() {
    skip_unless_namespaces!();
    if python_missing() {
        return;
    }
    let mut ns = boot_with_pack(ENDLESS_TEMPLATE, "deadline_secs = 600");
    let init = ns.init_pid();
    ns.wait_for("packs: applying");
    // The applier is a child process of its own, busy rendering.
    let start = Instant::now();
    let appliers = loop {
        let found = processes_running(init, "packs apply");
        if !found.is_empty() {
            break found;
        }
        assert!(start.elapsed() < TIMEOUT, "no applier process");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(appliers.iter().all(|&p| p != init));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        processes_running(init, "packs apply"),
        appliers,
        "the applier ended early"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(init),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    // Within TIMEOUT, although the apply would run for hours.
    let status = ns.wait_end();
    // reboot(RB_POWER_OFF) in a PID namespace kills its init with SIGINT: a power-off.
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}");
    let lines = ns.lines();
    let order = [
        "received SIGTERM",
        "packs: stopping the running child",
        "stopping nomad",
    ];
    let positions: Vec<usize> = order.iter().map(|n| index_of(&lines, n)).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
}

#[test]
fn a_runaway_apply_is_killed_at_its_deadline_and_the_next_one_runs() {
    skip_unless_namespaces!();
    if python_missing() {
        return;
    }
    let ns = boot_with_pack(ENDLESS_TEMPLATE, "deadline_secs = 2");
    let init = ns.init_pid();
    // The stand-in's /v1/agent/self says ACLs are off: the console says so, loudly.
    ns.wait_for("NOMAD ACLs ARE OFF: anyone who can reach http://127.0.0.1:4646 can run any command as root");
    ns.wait_for("ran past its deadline of 2 s");
    let start = Instant::now();
    while !processes_running(init, "packs apply").is_empty() {
        assert!(start.elapsed() < TIMEOUT, "the applier was not killed");
        std::thread::sleep(Duration::from_millis(20));
    }
    // PID 1 answers the next trigger: one more run, killed again.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(init),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    ns.wait_for("(SIGHUP)");
    ns.wait_for_count("ran past its deadline of 2 s", 2);
}

#[test]
fn an_apply_that_exhausts_its_memory_dies_alone() {
    skip_unless_namespaces!();
    if python_missing() {
        return;
    }
    // A runaway template now fails only its pack, in its own render child; what the
    // applier itself must hold is the pack set. Within the set's limits (10 MiB, 300 000
    // TOML tokens) the costliest shape is nested inline tables: about 290 000 tokens of
    // them take more than 64 MiB to parse.
    let unit = format!("{}1{},", "{a=".repeat(50), "}".repeat(50));
    let vars = format!("x = [{}1]\n", unit.repeat(290_000 / unit.len()));
    let ns = boot_with_pack_and_set(
        "{% for i in range(end=1000000000) %}{{ i }}{% endfor %}",
        &vars,
        "memory_max_mib = 64",
    );
    let init = ns.init_pid();
    let died = ns.wait_for("the apply died with");
    assert!(died.contains("64 MiB"), "{died}");
    // PID 1 is untouched and applies again when asked.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(init),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    ns.wait_for_count("the apply died with", 2);
}

/// A loop device over an ext4 image, detached on drop.
struct LoopDevice {
    device: String,
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

#[test]
fn labelled_data_partition_is_mounted_and_keeps_the_last_good_config() {
    skip_unless_namespaces!();
    let tools = ["mkfs.ext4", "losetup", "debugfs"];
    if let Some(missing) = tools
        .iter()
        .find(|t| Command::new(t).arg("-V").output().is_err())
    {
        eprintln!("SKIP: {missing} not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("data.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    // A label no other image on this machine carries.
    let label = format!("NDT{}", std::process::id() % 1_000_000);
    let ok = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", &label])
        .arg(&img)
        .status()
        .unwrap();
    assert!(ok.success());
    let out = Command::new("losetup")
        .args(["--find", "--show"])
        .arg(&img)
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!(
            "SKIP: no loop device: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let dev = LoopDevice {
        device: String::from_utf8(out.stdout).unwrap().trim().to_string(),
    };

    let d = dir.path().display();
    let config = format!(
        "[nomad]\nbinary = \"/bin/sleep\"\nconfig = \"{d}/init.json\"\n\
         [packs]\nset = \"{d}/packs\"\ncache_dir = \"{d}/cache\"\ninterval_secs = 0\n\
         [data]\nlabel = \"{label}\"\nmount_point = \"{d}/data\"\n"
    );
    let mut ns = Namespace::boot_with("exec sleep 1000", "", "", Some(&config));
    let mounted = ns.wait_for("mounted data directory");
    let lines = ns.lines();
    assert!(
        !lines.iter().any(|l| l.contains("is a tmpfs")),
        "partition not found:\n{}",
        lines.join("\n")
    );
    assert!(mounted.contains("mounted data directory in "), "{mounted}");
    ns.wait_for("boot finished");
    let init = ns.init_pid();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(init),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    ns.wait_end();
    // The copy was written to the ext4 filesystem itself.
    let out = Command::new("debugfs")
        .args(["-R", "cat /nomados/last-good.toml"])
        .arg(&dev.device)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), config);
}

/// The shared harness's console ends its namespace when dropped (a failing test drops it
/// mid-boot): before `unshare --kill-child`, the init it had started outlived the test with
/// every descriptor it inherited (a test runner's lock file among them).
#[test]
fn a_dropped_console_ends_its_namespace() {
    skip_unless_namespaces!();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("etc/nomados")).unwrap();
    let d = dir.path().display();
    std::fs::write(
        root.join("etc/nomados/nomados.toml"),
        format!(
            "[nomad]\nbinary = \"/nonexistent/nomad\"\n\
             [packs]\nset = \"{d}/none\"\ninterval_secs = 0\n\
             [data]\nmount_point = \"{d}/root/var/lib/nomad\"\n"
        ),
    )
    .unwrap();
    let console = pid1ns::Console::new(
        pid1ns::init_command(&root, dir.path(), true)
            .spawn()
            .unwrap(),
    );
    console.wait_for("boot finished");
    let init = console.init_pid();
    drop(console);
    let gone = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
            s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z'))
        })
    };
    let start = Instant::now();
    while !gone(init) {
        assert!(
            start.elapsed() < TIMEOUT,
            "the namespace's init (host pid {init}) outlived its dropped console"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
