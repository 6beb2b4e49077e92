//! First boot on a blank data partition: PID 1 makes its ext4.
//!
//! The partition is identified by its GPT partition name (the kernel's `PARTNAME`, from
//! our GPT: the image builder names the data partition like its filesystem label), never
//! by guessing from sizes or order. It is formatted only when every byte of its first MiB
//! and last 128 KiB is zero ([`probe::is_blank`]): a partition holding any filesystem,
//! partition table or unknown data is left untouched, with a warning naming what is there.
//! `mkfs.ext4` runs as a child with a deadline, without `-F`, so it would refuse on its
//! own too.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::blockdev::probe;

/// How long `mkfs.ext4` may take (lazy inode table init keeps it short even on big disks).
pub const MKFS_DEADLINE: Duration = Duration::from_secs(300);
/// Bytes of the end of a device that must be zero too (md 0.90/1.0 superblocks live there).
pub const TAIL_BYTES: u64 = 128 << 10;
/// Where `mkfs.ext4` is looked for (the image ships it in /sbin).
const MKFS_PATHS: &[&str] = &["/sbin/mkfs.ext4", "/usr/sbin/mkfs.ext4", "/bin/mkfs.ext4"];

/// The first [`probe::HEAD_BYTES`] and last [`TAIL_BYTES`] of a device, and its size.
#[derive(Debug, Clone)]
pub struct Ends {
    pub head: Vec<u8>,
    pub tail: Vec<u8>,
    pub bytes: u64,
}

impl Ends {
    pub fn is_blank(&self) -> bool {
        probe::is_blank(&self.head, &self.tail, self.bytes)
    }
    /// What is on it, head and tail.
    pub fn signatures(&self) -> Vec<probe::Signature> {
        let mut found = probe::signatures(&self.head);
        for s in probe::tail_signatures(&self.tail) {
            if !found.contains(&s) {
                found.push(s);
            }
        }
        if found.is_empty() && !self.is_blank() {
            found.push(probe::Signature::UnknownData);
        }
        found
    }
}

/// Size of a block device (or a regular file, for tests).
pub fn device_bytes(f: &File) -> std::io::Result<u64> {
    let meta = f.metadata()?;
    if meta.is_file() {
        return Ok(meta.len());
    }
    crate::sys::block::size_bytes(f).map_err(std::io::Error::from)
}

/// Reads both ends of `device`.
pub fn read_ends(device: &Path) -> std::io::Result<Ends> {
    let mut f = File::open(device)?;
    let bytes = device_bytes(&f)?;
    let head_len = bytes.min(probe::HEAD_BYTES as u64);
    let mut head = vec![0u8; usize::try_from(head_len).unwrap_or(0)];
    f.read_exact(&mut head)?;
    let tail_len = TAIL_BYTES.min(bytes);
    let mut tail = vec![0u8; usize::try_from(tail_len).unwrap_or(0)];
    f.seek(SeekFrom::Start(bytes - tail_len))?;
    f.read_exact(&mut tail)?;
    Ok(Ends { head, tail, bytes })
}

/// `PARTNAME=` of a partition's uevent file (GPT partition names only).
pub fn partition_name(uevent: &str) -> Option<&str> {
    uevent.lines().find_map(|l| l.strip_prefix("PARTNAME="))
}

/// The GPT name of the partition whose sysfs directory is `sys_part`: the kernel's
/// `PARTNAME`, else read from the parent disk's GPT (partitions added with BLKPG, such as
/// `partx`'s, carry no name in sysfs).
fn gpt_name(dev: &Path, sys_part: &Path) -> Option<String> {
    let uevent = std::fs::read_to_string(sys_part.join("uevent")).ok()?;
    if let Some(n) = partition_name(&uevent) {
        return Some(n.to_string());
    }
    let number: u32 = std::fs::read_to_string(sys_part.join("partition"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let real = std::fs::canonicalize(sys_part).ok()?;
    let disk = real.parent()?.file_name()?;
    let file = File::open(dev.join(disk)).ok()?;
    let (_, entries) = crate::blockdev::gpt_read::entries(&file).ok()?;
    entries
        .into_iter()
        .find(|(n, _)| *n == number)
        .map(|(_, e)| e.name())
}

/// Partitions listed in `sys_class_block` whose GPT name is `name`, as device paths under
/// `dev`, sorted.
pub fn partitions_named(dev: &Path, sys_class_block: &Path, name: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(sys_class_block) else {
        return vec![];
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("partition").exists())
        .filter(|e| gpt_name(dev, &e.path()).as_deref() == Some(name))
        .map(|e| dev.join(e.file_name()))
        .collect();
    found.sort();
    found
}

/// What [`format_blank`] did with one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It was blank; it now holds an ext4 labelled as asked.
    Formatted(PathBuf),
    /// It holds something (named): left alone.
    NotBlank(PathBuf, String),
}

/// Makes an ext4 labelled `label` on every partition named `label` (GPT name) that is
/// blank. Returns what happened to each one found.
pub fn format_blank(
    dev: &Path,
    sys_class_block: &Path,
    label: &str,
    deadline: Duration,
) -> Vec<anyhow::Result<Outcome>> {
    partitions_named(dev, sys_class_block, label)
        .into_iter()
        .map(|part| format_if_blank(&part, label, deadline))
        .collect()
}

/// Formats `device` when it is blank; names what it holds otherwise.
pub fn format_if_blank(device: &Path, label: &str, deadline: Duration) -> anyhow::Result<Outcome> {
    let ends = read_ends(device).with_context(|| format!("reading {}", device.display()))?;
    if !ends.is_blank() {
        return Ok(Outcome::NotBlank(
            device.to_path_buf(),
            probe::describe(&ends.signatures()),
        ));
    }
    make_ext4(device, label, deadline)?;
    Ok(Outcome::Formatted(device.to_path_buf()))
}

fn mkfs_program() -> anyhow::Result<&'static str> {
    MKFS_PATHS
        .iter()
        .copied()
        .find(|p| Path::new(p).exists())
        .with_context(|| format!("no mkfs.ext4 (looked at {})", MKFS_PATHS.join(", ")))
}

/// Runs `mkfs.ext4 -q -L label device` as a child, killed at `deadline`.
pub fn make_ext4(device: &Path, label: &str, deadline: Duration) -> anyhow::Result<()> {
    let program = mkfs_program()?;
    let mut cmd = Command::new(program);
    // No -F: mke2fs itself asks (and, with no input, declines) when it sees a signature.
    cmd.args(["-q", "-t", "ext4", "-L", label])
        .arg(device)
        .env_clear()
        .env("PATH", "/sbin:/usr/sbin:/bin:/usr/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = crate::sys::process::spawn_clean(&mut cmd)
        .with_context(|| format!("starting {program}"))?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for mkfs.ext4")? {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "mkfs.ext4 {} ran past its deadline of {} s; killed",
                device.display(),
                deadline.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        // Bounded: mke2fs says little; a runaway would only fill 4 KiB here.
        let _ = (&mut e).take(4096).read_to_string(&mut err);
    }
    if !status.success() {
        bail!(
            "mkfs.ext4 {} failed ({status}): {}",
            device.display(),
            err.trim()
        );
    }
    crate::info!(
        "made an ext4 filesystem labelled {label} on the blank partition {} in {:.1} s",
        device.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_gpt_name_from_uevent() {
        let u = "MAJOR=253\nMINOR=3\nDEVNAME=vda3\nDEVTYPE=partition\nDISKSEQ=9\nPARTN=3\nPARTNAME=NOMADOS-DATA\n";
        assert_eq!(partition_name(u), Some("NOMADOS-DATA"));
        assert_eq!(partition_name("DEVTYPE=partition\nPARTN=1\n"), None);
    }

    #[test]
    fn finds_partitions_by_name_in_a_sysfs_tree() {
        let sys = tempfile::tempdir().unwrap();
        for (name, uevent, part) in [
            ("vda", "DEVTYPE=disk\n", false),
            ("vda1", "PARTN=1\nPARTNAME=NOMADOS-ESP\n", true),
            ("vda3", "PARTN=3\nPARTNAME=NOMADOS-DATA\n", true),
            ("vdb1", "PARTN=1\nPARTNAME=NOMADOS-DATA-OLD\n", true),
        ] {
            let d = sys.path().join(name);
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("uevent"), uevent).unwrap();
            if part {
                std::fs::write(d.join("partition"), "1\n").unwrap();
            }
        }
        assert_eq!(
            partitions_named(Path::new("/dev"), sys.path(), "NOMADOS-DATA"),
            vec![PathBuf::from("/dev/vda3")]
        );
    }

    #[test]
    fn a_file_with_a_filesystem_is_not_blank_and_a_zero_one_is() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("p.img");
        let f = File::create(&img).unwrap();
        f.set_len(4 << 20).unwrap();
        let ends = read_ends(&img).unwrap();
        assert!(ends.is_blank());
        assert!(ends.signatures().is_empty());
        // One byte near the end is somebody's data.
        use std::os::unix::fs::FileExt;
        f.write_all_at(&[1], (4 << 20) - 100).unwrap();
        let ends = read_ends(&img).unwrap();
        assert!(!ends.is_blank());
        assert_eq!(ends.signatures(), vec![probe::Signature::UnknownData]);
    }
}
