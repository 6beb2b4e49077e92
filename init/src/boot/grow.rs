//! First-boot growth of the data partition: cloud disks are larger than the image, so the
//! last partition (NOMADOS-DATA) is stretched to the end of the disk, the kernel is told,
//! and the mounted ext4 is resized online.
//!
//! The GPT arithmetic ([`plan`], [`rewrite`]) and the ext4 superblock reading are pure and
//! unit-tested; the table codec is `nomados-gpt`, the one the image builder writes with.
//! [`grow_partition`] and [`grow_filesystem`] do the I/O (read/write the disk, and through
//! `sys::block` `BLKPG_RESIZE_PARTITION` and `EXT4_IOC_RESIZE_FS`). Both are idempotent: a
//! second boot finds nothing to do, and a crash between the steps is finished by the next
//! boot.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use nomados_gpt::{Entry, Header};

use crate::sys::block;

/// Partitions end on a 1 MiB boundary, like the image builder lays them out.
const ALIGN_BYTES: u64 = 1 << 20;

/// What the GPT holds that growth needs: the primary header and its entry array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpt {
    pub sector: u64,
    pub header: Header,
    /// The whole entry array, as read.
    pub entries: Vec<u8>,
}

impl Gpt {
    /// Checks the entry array against `header` (its size and CRC).
    pub fn parse(sector: u64, header: Header, entries: Vec<u8>) -> anyhow::Result<Gpt> {
        if entries.len() as u64 != header.array_bytes() {
            bail!(
                "GPT entry array is {} bytes, header says {}",
                entries.len(),
                header.array_bytes()
            );
        }
        if nomados_gpt::entries_crc(&entries) != header.entries_crc {
            bail!("GPT entry array CRC mismatch");
        }
        Ok(Gpt {
            sector,
            header,
            entries,
        })
    }

    fn entry_bytes(&self, i: u64) -> Option<&[u8]> {
        let size = u64::from(self.header.entry_size);
        let start = usize::try_from(i.checked_mul(size)?).ok()?;
        self.entries
            .get(start..)?
            .get(..usize::try_from(size).ok()?)
    }

    /// (first LBA, last LBA) of entry `i`, `None` when unused or past the array.
    pub fn range(&self, i: u64) -> Option<(u64, u64)> {
        let entry = Entry::decode(self.entry_bytes(i)?)?;
        Some((entry.first_lba, entry.last_lba))
    }

    fn entry_count(&self) -> u64 {
        u64::from(self.header.entry_count)
    }

    fn array_sectors(&self) -> u64 {
        self.header.array_sectors(self.sector)
    }
}

/// The change to make: entry `index` ends at `new_last` on a disk of `disk_sectors`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub index: u64,
    pub first: u64,
    pub old_last: u64,
    pub new_last: u64,
    pub disk_sectors: u64,
}

/// Where entry `index` can end on a disk of `disk_sectors`: before the backup array, on a
/// 1 MiB boundary. `Ok(None)` when it already does (or would shrink); an error when it is
/// not the last partition (growing it would overlap another).
pub fn plan(gpt: &Gpt, index: u64, disk_sectors: u64) -> anyhow::Result<Option<Plan>> {
    let Some((first, old_last)) = gpt.range(index) else {
        bail!("GPT entry {} is unused", index.saturating_add(1));
    };
    for i in 0..gpt.entry_count() {
        if let Some((f, _)) = gpt.range(i) {
            if i != index && f > first {
                bail!(
                    "partition {} is not the last one (partition {} follows it)",
                    index + 1,
                    i + 1
                );
            }
        }
    }
    // Backup header in the last sector, backup array just before it.
    let last_usable = disk_sectors
        .checked_sub(2 + gpt.array_sectors())
        .context("disk is too small for a GPT")?;
    let align = (ALIGN_BYTES / gpt.sector).max(1);
    let end = (last_usable + 1) / align * align; // exclusive, aligned down
    if end == 0 || end - 1 <= old_last {
        return Ok(None);
    }
    Ok(Some(Plan {
        index,
        first,
        old_last,
        new_last: end - 1,
        disk_sectors,
    }))
}

/// The new table: primary header + array (written at LBA 1), and backup array + header
/// (written at `backup_offset`, ending in the last sector), with every CRC recomputed;
/// also the protective MBR's size field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pub primary: Vec<u8>,
    pub backup: Vec<u8>,
    pub backup_offset: u64,
    /// Bytes 458..462 of sector 0: sectors covered by the protective 0xEE entry.
    pub mbr_size: [u8; 4],
}

pub fn rewrite(gpt: &Gpt, p: &Plan) -> anyhow::Result<Rewrite> {
    let mut entries = gpt.entries.clone();
    let esize = gpt.header.entry_size as usize;
    let index = usize::try_from(p.index).context("partition index out of range")?;
    let sector = usize::try_from(gpt.sector).context("sector size out of range")?;
    let pad = usize::try_from(gpt.array_sectors() * gpt.sector)
        .context("GPT entry array size out of range")?;
    let slot = &mut entries[index * esize..][..esize];
    if let Some(mut entry) = Entry::decode(slot) {
        entry.last_lba = p.new_last;
        entry.encode_into(slot);
    }
    let array_crc = nomados_gpt::entries_crc(&entries);
    let last = p.disk_sectors - 1;
    let backup_array = last - gpt.array_sectors();
    let header = |my_lba: u64, alternate_lba: u64, entries_lba: u64| {
        Header {
            my_lba,
            alternate_lba,
            last_usable_lba: backup_array - 1,
            entries_lba,
            entries_crc: array_crc,
            ..gpt.header.clone()
        }
        .encode(sector)
    };
    let mut primary = header(1, last, 2);
    let mut array = entries;
    array.resize(pad, 0);
    primary.extend_from_slice(&array);
    let mut backup = array;
    backup.extend_from_slice(&header(last, 1, backup_array));
    Ok(Rewrite {
        primary,
        backup,
        backup_offset: backup_array * gpt.sector,
        mbr_size: nomados_gpt::protective_mbr_size(p.disk_sectors),
    })
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or_default())
}

/// ext4 size from its superblock (the 1024 bytes at offset 1024): (blocks, block size).
pub fn ext4_size(sb: &[u8]) -> anyhow::Result<(u64, u64)> {
    if sb.len() < 0x160 || sb[0x38..0x3a] != [0x53, 0xEF] {
        bail!("not an ext2/3/4 superblock");
    }
    let log = u32_at(sb, 0x18);
    if log > 6 {
        bail!("ext4 block size 2^(10+{log}) is invalid");
    }
    let incompat_64bit = u32_at(sb, 0x60) & 0x80 != 0;
    let hi = if incompat_64bit {
        u32_at(sb, 0x150) as u64
    } else {
        0
    };
    Ok((u32_at(sb, 0x04) as u64 | hi << 32, 1024 << log))
}

/// The whole disk and partition number of a partition device, from sysfs.
fn parent_disk(device: &Path, sys_block: &Path) -> anyhow::Result<(PathBuf, u64)> {
    // /dev/disk/by-label/X is a link to the real node, whose name sysfs knows.
    let device = &std::fs::canonicalize(device).unwrap_or_else(|_| device.to_path_buf());
    let name = device
        .file_name()
        .context("device has no name")?
        .to_string_lossy()
        .to_string();
    let part = sys_block.join(&name);
    let pno: u64 = std::fs::read_to_string(part.join("partition"))
        .with_context(|| format!("{name} is not a partition"))?
        .trim()
        .parse()
        .context("partition number")?;
    let real = std::fs::canonicalize(&part).context("resolving the sysfs entry")?;
    let disk = real
        .parent()
        .and_then(|p| p.file_name())
        .context("no parent disk in sysfs")?;
    Ok((device.with_file_name(disk), pno))
}

/// Grows the partition `device` to the end of its disk when it is the last partition and
/// there is room. Returns `Some(new size in bytes)` when it grew.
pub fn grow_partition(device: &Path, sys_block: &Path) -> anyhow::Result<Option<u64>> {
    let (disk_path, pno) = parent_disk(device, sys_block)?;
    let mut disk = File::options()
        .read(true)
        .write(true)
        .open(&disk_path)
        .with_context(|| format!("open {}", disk_path.display()))?;
    let ss = block::logical_sector_size(&disk).context("BLKSSZGET")?;
    let sector = u64::try_from(ss).ok().filter(|s| *s >= 512).unwrap_or(512);
    let bytes = block::size_bytes(&disk).context("BLKGETSIZE64")?;
    let disk_sectors = bytes / sector;

    let mut header = vec![0u8; usize::try_from(sector).context("sector size out of range")?];
    disk.seek(SeekFrom::Start(sector))?;
    disk.read_exact(&mut header)?;
    let header = Header::parse(&header).map_err(anyhow::Error::msg)?;
    let array_bytes =
        usize::try_from(header.array_bytes()).context("GPT entry array size out of range")?;
    let mut entries = vec![0u8; array_bytes];
    disk.seek(SeekFrom::Start(header.entries_lba * sector))?;
    disk.read_exact(&mut entries)?;
    let gpt = Gpt::parse(sector, header, entries)?;
    let index = pno.checked_sub(1).context("partition number 0")?;
    let Some(p) = plan(&gpt, index, disk_sectors)? else {
        return Ok(None);
    };
    let w = rewrite(&gpt, &p)?;
    // Backup first: until the primary is written, the old table stays self-consistent.
    disk.seek(SeekFrom::Start(w.backup_offset))?;
    disk.write_all(&w.backup)?;
    disk.sync_data()?;
    disk.seek(SeekFrom::Start(sector))?;
    disk.write_all(&w.primary)?;
    disk.seek(SeekFrom::Start(nomados_gpt::MBR_SIZE_OFFSET as u64))?;
    disk.write_all(&w.mbr_size)?;
    disk.sync_all()?;

    let length = (p.new_last + 1 - p.first) * sector;
    block::resize_partition(&disk, u32::try_from(pno)?, p.first * sector, length)
        .context("BLKPG_RESIZE_PARTITION (the table on disk is grown; the next boot uses it)")?;
    crate::info!(
        "grew the data partition {} from {} MiB to {} MiB",
        device.display(),
        ((p.old_last + 1 - p.first) * sector) >> 20,
        length >> 20
    );
    Ok(Some(length))
}

/// Grows the ext4 mounted at `mount_point` (from `device`) to fill its partition, online.
pub fn grow_filesystem(device: &Path, mount_point: &Path) -> anyhow::Result<Option<u64>> {
    let mut dev = File::open(device).with_context(|| format!("open {}", device.display()))?;
    let mut sb = vec![0u8; 1024];
    dev.seek(SeekFrom::Start(1024))?;
    dev.read_exact(&mut sb)?;
    let (blocks, bsize) = ext4_size(&sb)?;
    let bytes = block::size_bytes(&dev).context("BLKGETSIZE64")?;
    let want = bytes / bsize;
    // Less than 1 MiB of slack is not worth a resize (and alignment leaves some).
    if want <= blocks || (want - blocks) * bsize < ALIGN_BYTES {
        return Ok(None);
    }
    let dir = File::open(mount_point).with_context(|| format!("open {}", mount_point.display()))?;
    block::resize_ext4(&dir, want).context("EXT4_IOC_RESIZE_FS")?;
    crate::info!(
        "grew the data filesystem from {} MiB to {} MiB",
        (blocks * bsize) >> 20,
        (want * bsize) >> 20
    );
    Ok(Some(want * bsize))
}

#[cfg(test)]
// Fixtures are small constants (512-byte sectors, three partitions, a 1.2 GiB disk).
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    const S: u64 = 512;

    fn u64_at(b: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
    }

    /// Reads a table back the way [`grow_partition`] does.
    fn parse(header: &[u8], entries: &[u8]) -> anyhow::Result<Gpt> {
        let header = Header::parse(header).map_err(anyhow::Error::msg)?;
        Gpt::parse(S, header, entries.to_vec())
    }

    /// A GPT like the image builder's: ESP, root, data (last), 128 entries of 128 bytes,
    /// on a disk of `disk` sectors, with the backup at the end.
    fn table(disk: u64, parts: &[(u64, u64)]) -> Gpt {
        let mut entries = vec![0u8; 128 * 128];
        for (i, (f, l)) in parts.iter().enumerate() {
            let e = &mut entries[i * 128..(i + 1) * 128];
            e[0] = 0xAF; // any non-zero type GUID
            e[16] = i as u8 + 1;
            e[32..40].copy_from_slice(&f.to_le_bytes());
            e[40..48].copy_from_slice(&l.to_le_bytes());
        }
        let mut h = vec![0u8; S as usize];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&1u64.to_le_bytes());
        h[32..40].copy_from_slice(&(disk - 1).to_le_bytes());
        h[40..48].copy_from_slice(&34u64.to_le_bytes());
        h[48..56].copy_from_slice(&(disk - 34).to_le_bytes());
        h[56..72].copy_from_slice(&[7; 16]);
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&nomados_gpt::entries_crc(&entries).to_le_bytes());
        // The header CRC, as the UEFI spec defines it: over the 92 bytes, CRC field zero.
        let crc = crc32(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        parse(&h, &entries).expect("test table parses")
    }

    /// CRC-32 (IEEE), written out so the test does not trust the codec's own.
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    const MIB: u64 = 2048; // sectors

    /// As built: 1 MiB gap, ESP 64 MiB, root 100 MiB, data 64 MiB, 1 MiB tail.
    fn image() -> Gpt {
        table(
            230 * MIB,
            &[
                (MIB, 65 * MIB - 1),
                (65 * MIB, 165 * MIB - 1),
                (165 * MIB, 229 * MIB - 1),
            ],
        )
    }

    #[test]
    fn a_fresh_image_has_nothing_to_grow() {
        let g = image();
        assert_eq!(plan(&g, 2, 230 * MIB).unwrap(), None);
    }

    #[test]
    fn the_last_partition_grows_to_the_last_whole_mib_before_the_backup() {
        let g = image();
        let p = plan(&g, 2, 1254 * MIB).unwrap().unwrap();
        assert_eq!(p.first, 165 * MIB);
        assert_eq!(p.old_last, 229 * MIB - 1);
        // The backup GPT takes the last 33 sectors, so the last whole MiB is lost.
        assert_eq!(p.new_last, 1253 * MIB - 1);
        // 40 sectors more leave room for the 33-sector backup after one more whole MiB.
        let p = plan(&g, 2, 1254 * MIB + 40).unwrap().unwrap();
        assert_eq!(p.new_last, 1254 * MIB - 1);
        assert!(p.new_last < 1254 * MIB + 40 - 33);
    }

    #[test]
    fn only_the_last_partition_may_grow() {
        let g = image();
        let e = plan(&g, 1, 1254 * MIB).unwrap_err().to_string();
        assert!(e.contains("partition 2 is not the last one"), "{e}");
        assert!(plan(&g, 5, 1254 * MIB).is_err());
        // A partition number past the entry array (a bad sysfs read) is an error, not a panic.
        assert!(plan(&g, 128, 1254 * MIB).is_err());
        assert!(plan(&g, u64::MAX, 1254 * MIB).is_err());
    }

    #[test]
    fn rewritten_table_is_valid_at_both_ends() {
        let g = image();
        let disk = 1254 * MIB;
        let p = plan(&g, 2, disk).unwrap().unwrap();
        let w = rewrite(&g, &p).unwrap();
        // Primary: header sector + 32 sectors of entries.
        assert_eq!(w.primary.len(), 33 * S as usize);
        let (ph, pe) = w.primary.split_at(S as usize);
        let primary = parse(ph, pe).unwrap();
        assert_eq!(primary.range(2), Some((165 * MIB, 1253 * MIB - 1)));
        assert_eq!(primary.range(0), g.range(0));
        assert_eq!(u64_at(ph, 24), 1);
        assert_eq!(u64_at(ph, 32), disk - 1);
        assert_eq!(u64_at(ph, 48), disk - 34);
        assert_eq!(ph[56..72], [7; 16], "disk GUID kept");
        // Backup: entries then header, ending in the very last sector.
        assert_eq!(w.backup_offset + w.backup.len() as u64, disk * S);
        let (be, bh) = w.backup.split_at(32 * S as usize);
        let backup = parse(bh, be).unwrap();
        assert_eq!(backup.range(2), primary.range(2));
        assert_eq!(u64_at(bh, 24), disk - 1);
        assert_eq!(u64_at(bh, 32), 1);
        assert_eq!(u64_at(bh, 72), disk - 33);
        assert_eq!(w.mbr_size, ((disk - 1) as u32).to_le_bytes());
        // Growing the result again is a no-op.
        assert_eq!(plan(&primary, 2, disk).unwrap(), None);
    }

    #[test]
    fn corrupt_tables_are_refused() {
        let g = image();
        let mut h = g.header.encode(S as usize);
        h[40] ^= 1;
        assert!(parse(&h, &g.entries)
            .unwrap_err()
            .to_string()
            .contains("header CRC"));
        let mut e = g.entries.clone();
        e[300] ^= 1;
        assert!(parse(&g.header.encode(S as usize), &e)
            .unwrap_err()
            .to_string()
            .contains("array CRC"));
        assert!(parse(&[0u8; 512], &g.entries).is_err());
    }

    #[test]
    fn ext4_superblock_size() {
        let mut sb = vec![0u8; 1024];
        sb[0x38] = 0x53;
        sb[0x39] = 0xEF;
        sb[0x04..0x08].copy_from_slice(&16384u32.to_le_bytes());
        sb[0x18..0x1c].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(ext4_size(&sb).unwrap(), (16384, 4096));
        // 64bit feature: the high word counts.
        sb[0x60] = 0x80;
        sb[0x150..0x154].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(ext4_size(&sb).unwrap(), ((1 << 32) | 16384, 4096));
        sb[0x38] = 0;
        assert!(ext4_size(&sb).is_err());
    }
}
