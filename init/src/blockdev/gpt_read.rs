//! Reading a disk's GPT entries (effects), where the kernel does not tell their names
//! (partitions added with BLKPG, kernels without PARTNAME) or before it re-read the table.

use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{bail, Context};
use nomados_gpt::{Entry, Header};

/// The logical sector size of `disk` (512 for image files).
pub fn sector_size(disk: &File) -> u64 {
    if disk.metadata().map(|m| m.is_file()).unwrap_or(false) {
        return 512;
    }
    crate::sys::block::logical_sector_size(disk)
        .ok()
        .and_then(|s| u64::try_from(s).ok())
        .filter(|s| *s >= 512)
        .unwrap_or(512)
}

/// The used entries of the primary GPT: (partition number from 1, entry), with the
/// sector size. The entry array's CRC must match.
pub fn entries(disk: &File) -> anyhow::Result<(u64, Vec<(u32, Entry)>)> {
    let sector = sector_size(disk);
    let mut hdr = vec![0u8; usize::try_from(sector)?];
    disk.read_exact_at(&mut hdr, sector)
        .context("reading the GPT header")?;
    let header = Header::parse(&hdr).map_err(anyhow::Error::msg)?;
    let bytes = header.array_bytes();
    if bytes > 1 << 20 {
        bail!("GPT entry array of {bytes} bytes");
    }
    let mut array = vec![0u8; usize::try_from(bytes)?];
    disk.read_exact_at(&mut array, header.entries_lba * sector)
        .context("reading the GPT entries")?;
    if nomados_gpt::entries_crc(&array) != header.entries_crc {
        bail!("GPT entry array CRC mismatch");
    }
    let size = usize::try_from(header.entry_size)?;
    let found = array
        .chunks(size.max(128))
        .enumerate()
        .filter_map(|(i, raw)| Some((u32::try_from(i + 1).ok()?, Entry::decode(raw)?)))
        .collect();
    Ok((sector, found))
}
