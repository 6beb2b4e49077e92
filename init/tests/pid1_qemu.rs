//! `nomad-init` as the real PID 1 of a QEMU guest (TCG): an initramfs holding the test
//! binary (with the shared libraries it links), busybox and a fake Nomad. Checks the boot
//! stages, that children start with no blocked or ignored signals inside the `init`
//! cgroup, and that the ACPI power button (QEMU's `system_powerdown`) powers the guest off
//! after Nomad was stopped with SIGINT.
//!
//! Needs a kernel: `NOMADOS_KERNEL=/path/to/bzImage` (devtmpfs, cgroup2, ACPI button and
//! evdev built in). Skips with a message when it, QEMU, cpio or a static busybox is missing.

use std::io::{Read, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn missing_prerequisite() -> Option<String> {
    let kernel = std::env::var_os("NOMADOS_KERNEL")?;
    if !Path::new(&kernel).exists() {
        return Some(format!(
            "NOMADOS_KERNEL={} does not exist",
            kernel.to_string_lossy()
        ));
    }
    for tool in ["qemu-system-x86_64", "cpio", "busybox"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("{tool} not installed"));
        }
    }
    None
}

/// Copies `binary` and every library `ldd` lists into `root` at the same paths.
fn install_with_libraries(binary: &Path, root: &Path, at: &str) {
    let dest = root.join(at.trim_start_matches('/'));
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::copy(binary, &dest).unwrap();
    let ldd = Command::new("ldd").arg(binary).output().unwrap();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let lib = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(PathBuf::from);
        if let Some(lib) = lib {
            let to = root.join(lib.strip_prefix("/").unwrap());
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&lib, &to).unwrap();
        }
    }
}

fn initramfs(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    install_with_libraries(Path::new(env!("CARGO_BIN_EXE_nomad-init")), &root, "/init");
    // The test binary carries ~150 MB of debug info; unpacking that under TCG takes minutes.
    let stripped = Command::new("strip")
        .arg("--strip-debug")
        .arg(root.join("init"))
        .status();
    if !stripped.is_ok_and(|s| s.success()) {
        eprintln!("note: strip failed; the initramfs keeps nomad-init's debug info");
    }
    for d in ["bin", "sbin", "usr/bin", "etc/nomad.d", "lib64"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let busybox = Command::new("sh")
        .args(["-c", "command -v busybox"])
        .output()
        .unwrap();
    let busybox = String::from_utf8(busybox.stdout).unwrap();
    install_with_libraries(Path::new(busybox.trim()), &root, "/bin/busybox");
    for applet in ["sh", "sleep", "cat", "grep"] {
        symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    symlink("/init", root.join("sbin/poweroff")).unwrap();
    let nomad = root.join("usr/bin/nomad");
    std::fs::write(
        &nomad,
        "#!/bin/sh\n\
         trap 'echo got SIGINT; exit 0' INT\n\
         grep -E '^(SigBlk|SigIgn)' /proc/self/status\n\
         cat /proc/self/cgroup\n\
         echo ready\n\
         while :; do sleep 0.2 & wait $!; done\n",
    )
    .unwrap();
    std::fs::set_permissions(&nomad, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(root.join("etc/nomad.d/init.json"), "{}").unwrap();
    let image = dir.join("initramfs.cpio");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {} && find . | cpio -o -H newc > {} 2>/dev/null",
            root.display(),
            image.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    image
}

fn wait_for(console: &Path, needle: &str, timeout: Duration) -> String {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(console).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            start.elapsed() < timeout,
            "no {needle:?} on the console after {timeout:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn boots_as_real_pid1_and_powers_off_on_the_acpi_button() {
    if std::env::var_os("NOMADOS_KERNEL").is_none() {
        eprintln!("SKIP: set NOMADOS_KERNEL=/path/to/bzImage to boot nomad-init under QEMU");
        return;
    }
    if let Some(why) = missing_prerequisite() {
        eprintln!("SKIP: {why}");
        return;
    }
    let kernel = std::env::var("NOMADOS_KERNEL").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let image = initramfs(dir.path());
    let console = dir.path().join("console.log");
    let monitor = dir.path().join("monitor.sock");
    // TCG: KVM is not reliable on every build machine.
    let mut qemu = Qemu(
        Command::new("qemu-system-x86_64")
            .args(["-m", "512", "-smp", "1", "-nographic", "-no-reboot"])
            .arg("-monitor")
            .arg(format!("unix:{},server,nowait", monitor.display()))
            .arg("-kernel")
            .arg(&kernel)
            .arg("-initrd")
            .arg(&image)
            .args(["-append", "console=ttyS0 panic=-1 nomados.loglevel=debug"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&console).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let booted = wait_for(&console, "nomad: ready", Duration::from_secs(180));
    for needle in [
        "boot: mounted filesystems in",
        "boot: set up cgroups in",
        "cgroup controllers enabled: +",
        "boot: set hostname and brought up loopback in",
        "nomad: SigBlk:\t0000000000000000",
        "nomad: SigIgn:\t0000000000000000",
        "nomad: 0::/init",
    ] {
        assert!(booted.contains(needle), "no {needle:?} in:\n{booted}");
    }

    let mut mon = std::os::unix::net::UnixStream::connect(&monitor).unwrap();
    mon.write_all(b"system_powerdown\n").unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = qemu.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "guest did not power off"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut text = String::new();
    std::fs::File::open(&console)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert!(status.success(), "qemu: {status}");
    // The press itself, on either path (evdev or ACPI netlink), after the boot: the start-up
    // lines ("watching power button on ...", "listening for ACPI power button events")
    // must not count as one.
    let booted_at = text.find("nomad: ready").expect("booted above");
    let after_boot = &text[booted_at..];
    let pressed = ["power button pressed", "ACPI power button event"]
        .iter()
        .filter_map(|n| after_boot.find(n).map(|i| booted_at + i + n.len()))
        .min()
        .unwrap_or_else(|| panic!("the power button press was not seen:\n{text}"));
    let order = [
        "Poweroff requested: shutting down",
        "stopping nomad (pid",
        "nomad: got SIGINT",
        "nomad stopped with exit code 0",
        "shutdown: unmounted filesystems",
        "powering off",
        "reboot: Power down",
    ];
    let mut at = pressed;
    for needle in order {
        let found = text[at..]
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} missing or out of order:\n{text}"));
        at += found + needle.len();
    }
}
