//! Data partition growth against the real kernel: a GPT disk image on a loop device, its
//! last partition an ext4, the backing file enlarged; `boot::grow` must stretch the
//! partition (valid per `sgdisk -v`, seen by the kernel) and resize the mounted ext4.
//! Needs root, losetup, partx, sgdisk, mkfs.ext4, e2fsck; skipped with a message otherwise.

use std::path::Path;

use nomad_init::boot::grow;

mod host;
use host::{has_cap_sys_resource, run, Loop};

const TOOLS: &[&str] = &["losetup", "partx", "sgdisk", "mkfs.ext4", "e2fsck"];

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
    let mut lp = Loop::attach_partx(&img);
    let dev = lp.dev.clone();
    let part = lp.partition(3);
    let part_s = part.to_str().unwrap();
    run("mkfs.ext4", &["-q", "-F", "-L", "NOMADOS-DATA", part_s]);
    let before = lp.sectors(3);
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
    assert_eq!(lp.sectors(3) * 512, grown, "kernel sees the new size");
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
