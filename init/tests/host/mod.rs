//! What the root-only loop-device tests share: running a host tool, checking that the
//! machine can run them at all, and a loop device that is always torn down.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
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

/// A loop device over a disk image and what hangs off it: partition nodes made here, a
/// mount. Torn down even when an assertion fails: unmounted, the nodes removed, the
/// partitions dropped (when `partx` added them), detached.
pub struct Loop {
    pub dev: String,
    /// Unmounted on drop; set it once something is mounted, clear it after unmounting.
    pub mount: Option<PathBuf>,
    nodes: Vec<PathBuf>,
    partx: bool,
}

impl Loop {
    /// `img` on a free loop device, no partitions scanned.
    pub fn attach(img: &Path) -> Loop {
        let dev = run("losetup", &["-f", "--show", img.to_str().unwrap()])
            .trim()
            .to_string();
        Loop {
            dev,
            mount: None,
            nodes: Vec::new(),
            partx: false,
        }
    }

    /// `img` on a free loop device, its partitions added with `partx -a` (without udev the
    /// nodes may be missing: see [`Loop::partition`]).
    pub fn attach_partx(img: &Path) -> Loop {
        let mut lp = Loop::attach(img);
        lp.partx = true;
        run("partx", &["-a", &lp.dev]);
        lp
    }

    /// `img` on a free loop device that the kernel scans for partitions (`losetup -P`), as
    /// a disk the code under test repartitions: the nodes of partitions `1..=n` that are not
    /// there yet are removed on drop, whoever makes them.
    pub fn attach_scanned(img: &Path, n: u32) -> Loop {
        let dev = run("losetup", &["-P", "-f", "--show", img.to_str().unwrap()])
            .trim()
            .to_string();
        let mut lp = Loop {
            dev,
            mount: None,
            nodes: Vec::new(),
            partx: false,
        };
        lp.nodes = (1..=n)
            .map(|k| lp.part_path(k))
            .filter(|p| !p.exists())
            .collect();
        lp
    }

    /// `loopN`, the device's name in /dev and /sys/class/block.
    pub fn name(&self) -> String {
        Path::new(&self.dev)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    /// `/dev/loopNpK`, whether or not the node exists.
    pub fn part_path(&self, k: u32) -> PathBuf {
        PathBuf::from(format!("/dev/{}p{k}", self.name()))
    }

    /// The node of partition `k`, made from sysfs when missing (no udev here) and then
    /// removed on drop.
    pub fn partition(&mut self, k: u32) -> PathBuf {
        let node = self.part_path(k);
        if !node.exists() {
            let name = format!("{}p{k}", self.name());
            let majmin = std::fs::read_to_string(format!("/sys/class/block/{name}/dev")).unwrap();
            let (maj, min) = majmin.trim().split_once(':').unwrap();
            nix::sys::stat::mknod(
                &node,
                nix::sys::stat::SFlag::S_IFBLK,
                nix::sys::stat::Mode::from_bits_truncate(0o600),
                nix::sys::stat::makedev(maj.parse().unwrap(), min.parse().unwrap()),
            )
            .unwrap();
            self.nodes.push(node.clone());
        }
        node
    }

    /// The size of partition `k` in 512-byte sectors, as the kernel sees it.
    pub fn sectors(&self, k: u32) -> u64 {
        std::fs::read_to_string(format!("/sys/class/block/{}p{k}/size", self.name()))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        if let Some(m) = &self.mount {
            let _ = nix::mount::umount(m);
        }
        for n in &self.nodes {
            let _ = std::fs::remove_file(n);
        }
        if self.partx {
            let _ = Command::new("partx").args(["-d", &self.dev]).status();
        }
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// Whether this process may grow a mounted ext4 online (CAP_SYS_RESOURCE; PID 1 has it,
/// some sandboxes drop it).
pub fn has_cap_sys_resource() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 24) != 0)
}
