//! Finding a file in the root directory of an ISO 9660 filesystem (pure), so the
//! installer reads the image the NomadOS ISO carries straight from the device, without
//! mounting it (and without the kernel's iso9660 driver).

use anyhow::{bail, Context};

/// The primary volume descriptor is in logical sector 16 (of 2048 bytes).
pub const PVD_OFFSET: u64 = 16 * 2048;
pub const PVD_BYTES: usize = 2048;
/// A root directory larger than this is not one image/iso.sh made.
pub const MAX_ROOT_DIR_BYTES: u64 = 1 << 20;

/// Where the root directory is: (byte offset, bytes).
pub fn root_dir(pvd: &[u8]) -> anyhow::Result<(u64, u64)> {
    if pvd.len() < PVD_BYTES || pvd[0] != 1 || &pvd[1..6] != b"CD001" {
        bail!("no ISO 9660 primary volume descriptor");
    }
    let block = u64::from(u16::from_le_bytes([pvd[128], pvd[129]]));
    if block == 0 {
        bail!("ISO 9660 logical block size is 0");
    }
    let rec = &pvd[156..156 + 34];
    let (lba, len) = extent(rec).context("bad root directory record")?;
    if len > MAX_ROOT_DIR_BYTES {
        bail!("ISO 9660 root directory is {len} bytes (at most {MAX_ROOT_DIR_BYTES})");
    }
    Ok((lba * block, len))
}

fn extent(rec: &[u8]) -> Option<(u64, u64)> {
    let lba = u32::from_le_bytes(rec.get(2..6)?.try_into().ok()?);
    let len = u32::from_le_bytes(rec.get(10..14)?.try_into().ok()?);
    Some((u64::from(lba), u64::from(len)))
}

/// The (byte offset, bytes) of the regular file `name` in the root directory `dir` (its
/// records, as read from [`root_dir`]'s location). Names compare without the `;1` version
/// and case-insensitively. `block` is the volume's logical block size (2048).
pub fn find(dir: &[u8], name: &str, block: u64) -> Option<(u64, u64)> {
    let mut i = 0usize;
    while i < dir.len() {
        let len = usize::from(dir[i]);
        if len == 0 {
            // Records do not cross sectors: the rest of this one is padding.
            i = (i / 2048 + 1) * 2048;
            continue;
        }
        let rec = dir.get(i..i + len)?;
        i += len;
        let flags = *rec.get(25)?;
        let name_len = usize::from(*rec.get(32)?);
        let raw = rec.get(33..33 + name_len)?;
        let raw = String::from_utf8_lossy(raw);
        let base = raw.split(';').next().unwrap_or("").trim_end_matches('.');
        if flags & 0x02 == 0 && base.eq_ignore_ascii_case(name) {
            let (lba, bytes) = extent(rec)?;
            return Some((lba * block, bytes));
        }
    }
    None
}

#[cfg(test)]
// Fixtures are small: their sizes fit every integer type.
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    #[test]
    fn finds_files_in_an_iso_made_by_xorriso() {
        if std::process::Command::new("xorriso")
            .arg("-version")
            .output()
            .is_err()
        {
            eprintln!("SKIP: xorriso not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("boot")).unwrap();
        let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(tree.join("IMAGE.XZ"), &payload).unwrap();
        std::fs::write(tree.join("IMAGE.SHA"), "abc\n").unwrap();
        std::fs::write(tree.join("boot/IMAGE.XZ"), "not this one").unwrap();
        let iso = dir.path().join("t.iso");
        let st = std::process::Command::new("xorriso")
            .args(["-as", "mkisofs", "-quiet", "-R", "-J", "-o"])
            .arg(&iso)
            .arg(&tree)
            .status()
            .unwrap();
        assert!(st.success());
        let bytes = std::fs::read(&iso).unwrap();
        let pvd = &bytes[PVD_OFFSET as usize..][..PVD_BYTES];
        let (off, len) = root_dir(pvd).unwrap();
        let root = &bytes[off as usize..][..len as usize];
        let (o, l) = find(root, "image.xz", 2048).unwrap();
        assert_eq!(&bytes[o as usize..][..l as usize], &payload[..]);
        let (o, l) = find(root, "IMAGE.SHA", 2048).unwrap();
        assert_eq!(&bytes[o as usize..][..l as usize], b"abc\n");
        assert_eq!(find(root, "boot", 2048), None, "directories are not files");
        assert_eq!(find(root, "MISSING.XZ", 2048), None);
    }

    #[test]
    fn rejects_what_is_not_an_iso() {
        assert!(root_dir(&[0u8; 2048]).is_err());
        assert!(root_dir(b"short").is_err());
        assert_eq!(find(&[0u8; 4096], "IMAGE.XZ", 2048), None);
        // A truncated record never reads past the buffer.
        assert_eq!(find(&[40, 0, 0], "IMAGE.XZ", 2048), None);
    }
}
