//! Writing the image (effects): the source stream, hashed as it arrives and decompressed
//! when it is xz, goes to the disk; the first MiB (protective MBR and primary GPT) is
//! written last, only once the source's SHA-256 matched, so a bad or cut download never
//! leaves a disk that looks installed. Then the disk is read back and compared, the
//! kernel re-reads the table, and the data partition is grown (or made) as a first boot
//! would.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

use crate::boot::blank;

/// Held back and written last: covers the protective MBR, both GPT header and array.
pub const HEAD_BYTES: usize = 1 << 20;
const CHUNK: usize = 1 << 20;
const XZ_MAGIC: &[u8] = &[0xFD, b'7', b'z', b'X', b'Z', 0x00];
/// Progress lines at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Counts and hashes what passes through (the source as served).
#[derive(Debug)]
pub struct Hashing<R> {
    inner: R,
    hash: Sha256,
    pub bytes: u64,
}

impl<R: Read> Hashing<R> {
    pub fn new(inner: R) -> Self {
        Hashing {
            inner,
            hash: Sha256::new(),
            bytes: 0,
        }
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// What [`write_image`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Bytes of the (decompressed) image on the disk.
    pub bytes: u64,
    /// Bytes of the source as read (compressed when it was).
    pub source_bytes: u64,
    pub compressed: bool,
}

fn hex(d: impl AsRef<[u8]>) -> String {
    hex::encode(d.as_ref())
}

/// Prints a progress line on stdout (PID 1 shows it on the console).
fn progress(written: u64, read: Option<u64>, total: Option<u64>, started: Instant) {
    let secs = started.elapsed().as_secs_f64().max(0.001);
    let read = match (read, total.filter(|t| *t > 0)) {
        (Some(r), Some(t)) => format!(", {} of {} MiB read", r >> 20, t >> 20),
        (Some(r), None) => format!(", {} MiB read", r >> 20),
        _ => String::new(),
    };
    println!(
        "{} MiB written{read}, {:.1} MiB/s",
        written >> 20,
        (written as f64 / 1_048_576.0) / secs
    );
}

/// Zeroes the first and last MiB of the disk: the old partition tables (both GPT copies)
/// and most filesystem signatures are gone before anything new is written.
pub fn clear_ends(disk: &File, disk_bytes: u64) -> anyhow::Result<()> {
    let zeros = vec![0u8; HEAD_BYTES];
    let head = u64::try_from(HEAD_BYTES)?.min(disk_bytes);
    disk.write_all_at(&zeros[..usize::try_from(head)?], 0)?;
    let tail = u64::try_from(HEAD_BYTES)?.min(disk_bytes);
    disk.write_all_at(&zeros[..usize::try_from(tail)?], disk_bytes - tail)?;
    disk.sync_all()?;
    Ok(())
}

/// Streams `source` onto `disk` (of `disk_bytes`); `expected_sha256` (hex) is the
/// source's hash; `total` its length when known (for the progress percentage).
pub fn write_image(
    source: impl Read,
    expected_sha256: &str,
    total: Option<u64>,
    disk: &File,
    disk_bytes: u64,
) -> anyhow::Result<Written> {
    let started = Instant::now();
    clear_ends(disk, disk_bytes).context("clearing the old partition tables")?;
    let mut hashing = Hashing::new(source);
    let (written, written_sha, compressed) = {
        let mut buffered = BufReader::with_capacity(CHUNK, &mut hashing);
        let compressed = buffered.fill_buf()?.starts_with(XZ_MAGIC);
        let mut image: Box<dyn Read + '_> = if compressed {
            Box::new(xz2::bufread::XzDecoder::new_multi_decoder(buffered))
        } else {
            Box::new(buffered)
        };
        let mut head = Vec::with_capacity(HEAD_BYTES);
        let mut buf = vec![0u8; CHUNK];
        let mut pos = 0u64;
        let mut sha = Sha256::new();
        let mut last = Instant::now();
        loop {
            let n = match image.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("reading the image"),
            };
            let end = pos + n as u64;
            if end > disk_bytes {
                bail!(
                    "the image is larger than the disk ({} MiB): stopped after {} MiB",
                    disk_bytes >> 20,
                    pos >> 20
                );
            }
            let data = &buf[..n];
            sha.update(data);
            let keep = HEAD_BYTES.saturating_sub(head.len()).min(n);
            head.extend_from_slice(&data[..keep]);
            if keep < n {
                disk.write_all_at(&data[keep..], pos + keep as u64)
                    .with_context(|| format!("writing at byte {}", pos + keep as u64))?;
            }
            pos = end;
            if last.elapsed() >= PROGRESS_EVERY {
                last = Instant::now();
                progress(pos, None, None, started);
            }
        }
        // Whatever follows the compressed stream is part of the file that was hashed.
        drop(image);
        std::io::copy(&mut hashing, &mut std::io::sink()).context("reading the source")?;
        let got = hex(hashing.hash.clone().finalize());
        if got != expected_sha256 {
            bail!(
                "the image's SHA-256 is {got}, expected {expected_sha256}: not installed \
                 (the disk holds no partition table now)"
            );
        }
        if pos < HEAD_BYTES as u64 {
            bail!("the image is only {pos} bytes: not a NomadOS disk image");
        }
        disk.sync_all()?;
        disk.write_all_at(&head, 0)
            .context("writing the partition table")?;
        disk.sync_all()?;
        (pos, hex(sha.finalize()), compressed)
    };
    progress(written, Some(hashing.bytes), total, started);
    println!(
        "SHA-256 of the {} verified; reading the disk back",
        if compressed {
            "compressed image"
        } else {
            "image"
        }
    );
    let back = read_back(disk, written)?;
    if back != written_sha {
        bail!("the disk reads back differently from what was written (SHA-256 {back}, wrote {written_sha})");
    }
    Ok(Written {
        bytes: written,
        source_bytes: hashing.bytes,
        compressed,
    })
}

/// SHA-256 of the first `bytes` of the disk, read from the device (its page cache
/// dropped first, so the bytes come from the disk, not from memory).
pub fn read_back(disk: &File, bytes: u64) -> anyhow::Result<String> {
    let _ = nix::fcntl::posix_fadvise(
        disk,
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    while pos < bytes {
        let n = usize::try_from((bytes - pos).min(CHUNK as u64))?;
        disk.read_exact_at(&mut buf[..n], pos)
            .with_context(|| format!("reading back at byte {pos}"))?;
        sha.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(hex(sha.finalize()))
}

/// After the write: the kernel reads the new table, and the data partition (GPT name
/// `label`) is stretched to the end of the disk and its filesystem grown, or made when
/// the image left it blank. Returns the data partition's device.
pub fn finish_data(
    disk: &File,
    disk_name: &str,
    dev_dir: &Path,
    sys_class_block: &Path,
    label: &str,
    mount_dir: &Path,
) -> anyhow::Result<PathBuf> {
    let (sector, entries) =
        crate::blockdev::gpt_read::entries(disk).context("reading the written GPT")?;
    let number = entries
        .iter()
        .find(|(_, e)| e.name() == label)
        .map(|(n, _)| *n)
        .with_context(|| format!("the written image has no partition named {label}"))?;
    if let Err(e) = crate::sys::block::reread_partitions(disk) {
        println!("BLKRRPART: {e}; adding the partitions one by one");
    }
    let find = || {
        super::disk::partitions(sys_class_block, disk_name)
            .into_iter()
            .find(|(n, _, _)| {
                std::fs::read_to_string(sys_class_block.join(n).join("partition"))
                    .is_ok_and(|p| p.trim() == number.to_string())
            })
    };
    let mut found = None;
    for _ in 0..20 {
        found = find();
        if found.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if found.is_none() {
        // The kernel did not read the table (no GPT support, or a loop device without
        // partition scanning): tell it about each partition, as partx does.
        for (n, e) in &entries {
            let start = e.first_lba * sector;
            let len = (e.last_lba + 1 - e.first_lba) * sector;
            crate::sys::block::add_partition(disk, *n, start, len)
                .with_context(|| format!("BLKPG_ADD_PARTITION {n}"))?;
        }
        found = find();
    }
    let (pname, majmin, _) =
        found.with_context(|| format!("partition {number} of {disk_name} did not appear"))?;
    let part = super::disk::partition_node(dev_dir, &pname, &majmin)?;
    match crate::boot::grow::grow_partition(&part, sys_class_block)? {
        Some(b) => println!("data partition {} grown to {} MiB", part.display(), b >> 20),
        None => println!("data partition {} already fills the disk", part.display()),
    }
    match blank::format_if_blank(&part, label, blank::MKFS_DEADLINE)? {
        blank::Outcome::Formatted(_) => {
            println!("made the data filesystem on {}", part.display());
        }
        blank::Outcome::NotBlank(..) => {
            // Not fatal: the installed system's first boot grows it as well.
            if let Err(e) = grow_mounted(&part, mount_dir) {
                println!("the data filesystem was not grown now ({e:#}); its first boot will");
            }
        }
    }
    Ok(part)
}

/// Mounts the data filesystem at `mount_dir` just long enough to grow it online.
fn grow_mounted(part: &Path, mount_dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(mount_dir)?;
    nix::mount::mount(
        Some(part),
        mount_dir,
        Some("ext4"),
        nix::mount::MsFlags::MS_NOATIME,
        None::<&str>,
    )
    .with_context(|| format!("mounting {} to grow it", part.display()))?;
    let grown = crate::boot::grow::grow_filesystem(part, mount_dir);
    let unmounted = nix::mount::umount(mount_dir);
    match grown? {
        Some(b) => println!("data filesystem grown to {} MiB", b >> 20),
        None => println!("data filesystem already fills its partition"),
    }
    unmounted.with_context(|| format!("unmounting {}", mount_dir.display()))?;
    Ok(())
}

#[cfg(test)]
// Fixtures are small: their sizes fit every integer type.
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    fn sha(b: &[u8]) -> String {
        hex(Sha256::digest(b))
    }

    fn image(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 253) as u8).collect()
    }

    fn disk(bytes: u64) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("disk"))
            .unwrap();
        f.set_len(bytes).unwrap();
        // Old content that must not survive in the written range or the ends.
        f.write_all_at(&[0xAB; 4096], 0).unwrap();
        f.write_all_at(&[0xAB; 4096], bytes - 4096).unwrap();
        (dir, f)
    }

    #[test]
    fn writes_a_raw_image_and_verifies_it() {
        let img = image(3 * HEAD_BYTES + 12345);
        let (_d, f) = disk(8 << 20);
        let w = write_image(&img[..], &sha(&img), Some(img.len() as u64), &f, 8 << 20).unwrap();
        assert_eq!(w.bytes, img.len() as u64);
        assert!(!w.compressed);
        let mut back = vec![0u8; img.len()];
        f.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(back, img);
        let mut end = [0u8; 4096];
        f.read_exact_at(&mut end, (8 << 20) - 4096).unwrap();
        assert_eq!(end, [0u8; 4096], "the old backup table is gone");
    }

    #[test]
    fn writes_an_xz_image_checking_the_compressed_hash() {
        let img = image(2 * HEAD_BYTES + 1);
        let mut xz = Vec::new();
        let mut enc = xz2::read::XzEncoder::new(&img[..], 1);
        enc.read_to_end(&mut xz).unwrap();
        let (_d, f) = disk(8 << 20);
        let w = write_image(&xz[..], &sha(&xz), None, &f, 8 << 20).unwrap();
        assert!(w.compressed);
        assert_eq!(w.bytes, img.len() as u64);
        assert_eq!(w.source_bytes, xz.len() as u64);
        assert_eq!(read_back(&f, w.bytes).unwrap(), sha(&img));
    }

    #[test]
    fn a_wrong_hash_leaves_no_partition_table() {
        let img = image(2 * HEAD_BYTES);
        let (_d, f) = disk(8 << 20);
        let e = write_image(&img[..], &"0".repeat(64), None, &f, 8 << 20).unwrap_err();
        assert!(format!("{e:#}").contains("expected 0000"), "{e:#}");
        let mut head = vec![0u8; HEAD_BYTES];
        f.read_exact_at(&mut head, 0).unwrap();
        assert!(head.iter().all(|b| *b == 0), "the first MiB stays zero");
    }

    #[test]
    fn an_image_larger_than_the_disk_is_cut_off() {
        let img = image(3 << 20);
        let (_d, f) = disk(2 << 20);
        let e = write_image(&img[..], &sha(&img), None, &f, 2 << 20).unwrap_err();
        assert!(format!("{e:#}").contains("larger than the disk"), "{e:#}");
    }
}
