//! Block devices: finding the data partition by filesystem label (without udev), and the
//! ioctls that size a disk, resize a partition in the kernel's view and grow a mounted ext4.

use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

/// ext2/3/4 superblock: starts at byte 1024; magic 0xEF53 at +0x38, label (16 bytes) at +0x78.
pub const SUPERBLOCK_OFFSET: u64 = 1024;
const MAGIC_OFFSET: usize = 0x38;
const LABEL_OFFSET: usize = 0x78;
const LABEL_LEN: usize = 16;

/// The volume label of an ext2/3/4 superblock (the 1024 bytes at offset 1024), if it is one.
pub fn ext_label(superblock: &[u8]) -> Option<String> {
    let magic = superblock.get(MAGIC_OFFSET..MAGIC_OFFSET + 2)?;
    if u16::from_le_bytes([magic[0], magic[1]]) != 0xEF53 {
        return None;
    }
    let raw = superblock.get(LABEL_OFFSET..LABEL_OFFSET + LABEL_LEN)?;
    let end = raw.iter().position(|&b| b == 0).unwrap_or(LABEL_LEN);
    Some(String::from_utf8_lossy(&raw[..end]).into_owned())
}

/// Reads the ext label of a block device (or image file).
pub fn read_ext_label(device: &Path) -> std::io::Result<Option<String>> {
    let mut f = std::fs::File::open(device)?;
    f.seek(SeekFrom::Start(SUPERBLOCK_OFFSET))?;
    let mut sb = [0u8; 256];
    f.read_exact(&mut sb)?;
    Ok(ext_label(&sb))
}

/// Finds the device holding an ext filesystem labelled `label`: `/dev/disk/by-label` when
/// udev made it, else every block device listed in `/sys/class/block` is probed.
pub fn find_by_label(dev: &Path, sys_class_block: &Path, label: &str) -> Option<PathBuf> {
    let by_label = dev.join("disk/by-label").join(label);
    if by_label.exists() {
        return Some(by_label);
    }
    let mut names: Vec<String> = std::fs::read_dir(sys_class_block)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        // RAM disks cannot hold it; optical drives are slow to probe (and may be empty).
        .filter(|n| !n.starts_with("ram") && !n.starts_with("sr"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| dev.join(n))
        .find(|path| matches!(read_ext_label(path), Ok(Some(l)) if l == label))
}

// BLKPG: resize a partition in the kernel's view; BLKSSZGET/BLKGETSIZE64: sizes.
const BLKPG_RESIZE_PARTITION: libc::c_int = 3;
#[repr(C)]
struct BlkpgPartition {
    start: libc::c_longlong,
    length: libc::c_longlong,
    pno: libc::c_int,
    devname: [libc::c_char; 64],
    volname: [libc::c_char; 64],
}
// A compile-time FFI size (152 bytes), far inside c_int.
#[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
const BLKPG_PARTITION_LEN: libc::c_int = std::mem::size_of::<BlkpgPartition>() as libc::c_int;
#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}
// BLKPG = _IO(0x12, 105); libc does not export it.
nix::ioctl_write_ptr_bad!(blkpg, nix::request_code_none!(0x12, 105), BlkpgIoctlArg);
nix::ioctl_read_bad!(blksszget, libc::BLKSSZGET, libc::c_int);
nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);
nix::ioctl_write_ptr!(ext4_resize_fs, b'f', 16, u64);
nix::ioctl_none!(blkrrpart, 0x12, 95);

/// Asks the kernel to read the partition table of a whole disk again (BLKRRPART): after
/// the installer wrote a new one. EBUSY when a partition of it is still in use.
pub fn reread_partitions(disk: impl AsFd) -> nix::Result<()> {
    // SAFETY: BLKRRPART takes no argument; the descriptor is valid for the call.
    unsafe { blkrrpart(disk.as_fd().as_raw_fd()) }?;
    Ok(())
}

/// The logical sector size of a block device (BLKSSZGET).
pub fn logical_sector_size(device: impl AsFd) -> nix::Result<libc::c_int> {
    let mut size: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int into `size`, which lives for the call.
    unsafe { blksszget(device.as_fd().as_raw_fd(), &mut size) }?;
    Ok(size)
}

/// The size of a block device in bytes (BLKGETSIZE64).
pub fn size_bytes(device: impl AsFd) -> nix::Result<u64> {
    let mut bytes = 0u64;
    // SAFETY: BLKGETSIZE64 writes one u64 into `bytes`, which lives for the call.
    unsafe { blkgetsize64(device.as_fd().as_raw_fd(), &mut bytes) }?;
    Ok(bytes)
}

/// Tells the kernel that partition `number` of `disk` now spans `length` bytes from byte
/// `start` (BLKPG_RESIZE_PARTITION); the table on disk is the caller's business.
pub fn resize_partition(disk: impl AsFd, number: u32, start: u64, length: u64) -> nix::Result<()> {
    blkpg_partition(disk, BLKPG_RESIZE_PARTITION, number, start, length)
}

/// Adds partition `number` of `disk` to the kernel's view (BLKPG_ADD_PARTITION), for
/// kernels that did not find it by themselves (the installer, after writing a table).
pub fn add_partition(disk: impl AsFd, number: u32, start: u64, length: u64) -> nix::Result<()> {
    blkpg_partition(disk, BLKPG_ADD_PARTITION, number, start, length)
}

const BLKPG_ADD_PARTITION: libc::c_int = 1;

fn blkpg_partition(
    disk: impl AsFd,
    op: libc::c_int,
    number: u32,
    start: u64,
    length: u64,
) -> nix::Result<()> {
    let too_big = |_| nix::errno::Errno::EOVERFLOW;
    let mut part = BlkpgPartition {
        start: libc::c_longlong::try_from(start).map_err(too_big)?,
        length: libc::c_longlong::try_from(length).map_err(too_big)?,
        pno: libc::c_int::try_from(number).map_err(too_big)?,
        devname: [0; 64],
        volname: [0; 64],
    };
    let arg = BlkpgIoctlArg {
        op,
        flags: 0,
        datalen: BLKPG_PARTITION_LEN,
        data: (&mut part as *mut BlkpgPartition).cast(),
    };
    // SAFETY: `arg` points at `part`; both outlive the call and match the kernel's
    // struct blkpg_ioctl_arg / blkpg_partition layouts (repr(C)).
    unsafe { blkpg(disk.as_fd().as_raw_fd(), &arg) }?;
    Ok(())
}

/// Grows the ext4 mounted at the directory `mount_point` to `blocks` filesystem blocks,
/// online (EXT4_IOC_RESIZE_FS).
pub fn resize_ext4(mount_point: impl AsFd, blocks: u64) -> nix::Result<()> {
    // SAFETY: EXT4_IOC_RESIZE_FS reads one u64 (the new block count) from `blocks`, which
    // lives for the call.
    unsafe { ext4_resize_fs(mount_point.as_fd().as_raw_fd(), &blocks) }?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn superblock(label: &[u8]) -> Vec<u8> {
        let mut sb = vec![0u8; 1024];
        sb[MAGIC_OFFSET..MAGIC_OFFSET + 2].copy_from_slice(&0xEF53u16.to_le_bytes());
        sb[LABEL_OFFSET..LABEL_OFFSET + label.len()].copy_from_slice(label);
        sb
    }

    #[test]
    fn reads_label_only_from_ext_superblocks() {
        assert_eq!(
            ext_label(&superblock(b"NOMADOS-DATA")).as_deref(),
            Some("NOMADOS-DATA")
        );
        assert_eq!(
            ext_label(&superblock(b"0123456789abcdef")).as_deref(),
            Some("0123456789abcdef")
        );
        let mut not_ext = superblock(b"NOMADOS-DATA");
        not_ext[MAGIC_OFFSET] = 0;
        assert_eq!(ext_label(&not_ext), None);
        assert_eq!(ext_label(&[0u8; 10]), None);
    }

    #[test]
    fn reads_the_label_of_a_real_mkfs_ext4_image() {
        let Ok(out) = std::process::Command::new("mkfs.ext4").arg("-V").output() else {
            eprintln!("SKIP: mkfs.ext4 not installed");
            return;
        };
        let _ = out;
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("data.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(4 << 20)
            .unwrap();
        let st = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "NOMADOS-DATA"])
            .arg(&img)
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(
            read_ext_label(&img).unwrap().as_deref(),
            Some("NOMADOS-DATA")
        );
    }
}
