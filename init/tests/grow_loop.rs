//! Data partition growth against the real kernel: a GPT disk image on a loop device, its
//! last partition an ext4, the backing file enlarged; `boot::grow` must stretch the
//! partition (valid per `sgdisk -v`, seen by the kernel) and resize the mounted ext4.
//! Needs root, losetup, partx, sgdisk, mkfs.ext4, e2fsck; skipped with a message otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;

use nomad_init::boot::grow;

mod host;
use host::run;

const TOOLS: &[&str] = &["losetup", "partx", "sgdisk", "mkfs.ext4", "e2fsck"];

/// The loop device and what hangs off it; torn down even when an assertion fails.
struct Loop {
    dev: String,
    mount: Option<PathBuf>,
    node: Option<PathBuf>,
}

impl Drop for Loop {
    fn drop(&mut self) {
        if let Some(m) = &self.mount {
            let _ = nix::mount::umount(m);
        }
        if let Some(n) = &self.node {
            let _ = std::fs::remove_file(n);
        }
        let _ = Command::new("partx").args(["-d", &self.dev]).status();
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// `/dev/loopNpK` may not exist without udev: create the node from sysfs (returns the
/// node and whether we made it).
fn partition_node(dev: &str, k: u32) -> (PathBuf, bool) {
    let name = format!(
        "{}p{k}",
        Path::new(dev).file_name().unwrap().to_string_lossy()
    );
    let node = PathBuf::from("/dev").join(&name);
    if !node.exists() {
        let majmin = std::fs::read_to_string(format!("/sys/class/block/{name}/dev")).unwrap();
        let (maj, min) = majmin.trim().split_once(':').unwrap();
        nix::sys::stat::mknod(
            &node,
            nix::sys::stat::SFlag::S_IFBLK,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            nix::sys::stat::makedev(maj.parse().unwrap(), min.parse().unwrap()),
        )
        .unwrap();
        return (node, true);
    }
    (node, false)
}

fn sectors(dev: &str, k: u32) -> u64 {
    let name = format!(
        "{}p{k}",
        Path::new(dev).file_name().unwrap().to_string_lossy()
    );
    std::fs::read_to_string(format!("/sys/class/block/{name}/size"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn has_cap_sys_resource() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 24) != 0)
}

#[test]
fn last_partition_and_its_ext4_grow_to_fill_an_enlarged_disk() {
    if let Some(why) = host::missing_prerequisite(TOOLS) {
        eprintln!("SKIP last_partition_and_its_ext4_grow_to_fill_an_enlarged_disk: {why}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("disk.img");
    let img_s = img.to_str().unwrap();
    // Like the image: ESP, root (16 MiB each), data last up to the end of a 64 MiB disk.
    run("truncate", &["-s", "64M", img_s]);
    run(
        "sgdisk",
        &["-o", "-n1:2048:+16M", "-n2:0:+16M", "-n3:0:0", img_s],
    );
    let dev = run("losetup", &["-f", "--show", img_s]).trim().to_string();
    let mut lp = Loop {
        dev: dev.clone(),
        mount: None,
        node: None,
    };
    run("partx", &["-a", &dev]);
    let (part, made) = partition_node(&dev, 3);
    if made {
        lp.node = Some(part.clone());
    }
    let part_s = part.to_str().unwrap();
    run("mkfs.ext4", &["-q", "-F", "-L", "NOMADOS-DATA", part_s]);
    let before = sectors(&dev, 3);
    assert_eq!(
        before,
        64 * 2048 - 33 - 33 * 2048,
        "data runs to the backup GPT"
    );

    // Nothing to do while the disk is as built.
    assert_eq!(
        grow::grow_partition(&part, Path::new("/sys/class/block")).unwrap(),
        None
    );

    // The "cloud disk" is 256 MiB.
    run("truncate", &["-s", "256M", img_s]);
    run("losetup", &["-c", &dev]);
    let grown = grow::grow_partition(&part, Path::new("/sys/class/block"))
        .unwrap()
        .expect("partition should grow");
    // First partition starts at 1 MiB, data at 33 MiB, ends before the last MiB (backup GPT).
    assert_eq!(grown, (255 - 33) << 20);
    assert_eq!(sectors(&dev, 3) * 512, grown, "kernel sees the new size");
    let verify = run("sgdisk", &["-v", img_s]);
    assert!(verify.contains("No problems found"), "sgdisk -v: {verify}");
    // Idempotent.
    assert_eq!(
        grow::grow_partition(&part, Path::new("/sys/class/block")).unwrap(),
        None
    );

    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    nix::mount::mount(
        Some(&part),
        &mnt,
        Some("ext4"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    lp.mount = Some(mnt.clone());
    if !has_cap_sys_resource() {
        // Online resize needs CAP_SYS_RESOURCE (PID 1 has it; some sandboxes drop it).
        eprintln!(
            "SKIP the online ext4 resize half: no CAP_SYS_RESOURCE here (the QEMU e2e test covers it)"
        );
        return;
    }
    let fs_bytes = grow::grow_filesystem(&part, &mnt)
        .unwrap()
        .expect("filesystem should grow");
    assert_eq!(fs_bytes, grown);
    let st = nix::sys::statvfs::statvfs(&mnt).unwrap();
    assert!(
        st.blocks() as u64 * st.fragment_size() as u64 > 200 << 20,
        "statvfs after resize: {} blocks of {}",
        st.blocks(),
        st.fragment_size()
    );
    assert_eq!(grow::grow_filesystem(&part, &mnt).unwrap(), None);
    nix::mount::umount(&mnt).unwrap();
    lp.mount = None;
    run("e2fsck", &["-fn", part_s]);
    drop(lp);
}
