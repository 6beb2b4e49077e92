//! The disk's partition table from a [`Layout`]: pure, bytes out. The codec itself (header,
//! entries, protective MBR) is the `nomados-gpt` crate, shared with init's grower.

use nomados_gpt::{entries_crc, Entry, Header, HEADER_SIZE, REVISION};

use crate::layout::{Layout, Partition, GPT_ARRAY_SECTORS, GPT_ENTRIES, GPT_ENTRY_SIZE, SECTOR};

pub use nomados_gpt::{protective_mbr, BOOT_CODE_LEN};

/// The bytes to write at the start and at the end of the disk.
#[derive(Debug, Clone)]
pub struct GptImage {
    /// LBA 0 .. 2 + array: protective MBR, primary header, primary entry array.
    pub head: Vec<u8>,
    /// Backup entry array followed by the backup header; ends at the last sector.
    pub tail: Vec<u8>,
    /// Byte offset of `tail` in the disk.
    pub tail_offset: u64,
}

/// Encodes the whole partition table. `boot_code` (at most 440 bytes) goes at the start of
/// the protective MBR, e.g. syslinux's `gptmbr.bin`.
pub fn encode(layout: &Layout, boot_code: Option<&[u8]>) -> Result<GptImage, String> {
    let total = layout.total_sectors();
    if !layout.size_bytes.is_multiple_of(SECTOR) {
        return Err("disk size is not a whole number of sectors".into());
    }
    let array = encode_entries(&layout.partitions)?;
    let array_crc = entries_crc(&array);

    let last = total - 1;
    let backup_array_lba = last - GPT_ARRAY_SECTORS;
    let primary = encode_header(layout, 1, last, 2, array_crc);
    let backup = encode_header(layout, last, 1, backup_array_lba, array_crc);

    let mut head = protective_mbr(total, boot_code)?;
    head.extend_from_slice(&primary);
    head.extend_from_slice(&array);

    let mut tail = array;
    tail.extend_from_slice(&backup);
    Ok(GptImage {
        head,
        tail,
        tail_offset: backup_array_lba * SECTOR,
    })
}

/// The partition table of a disk whose image (`head`: its first `2 + array` sectors, as
/// [`encode`] writes them) is copied onto a larger disk of `total` sectors: same partitions
/// and boot code, the backup array and header moved to the new end, the last usable LBA and
/// the protective MBR's size following. What a cloud that wants a bigger disk than the
/// image needs (GCE: a whole GiB); the data partition grows into the space on first boot.
pub fn grown(head: &[u8], total: u64) -> Result<GptImage, String> {
    let s = SECTOR as usize;
    if head.len() < 2 * s {
        return Err("disk image shorter than its protective MBR and GPT header".into());
    }
    let old = Header::parse(&head[s..2 * s]).map_err(|e| format!("disk image: {e}"))?;
    if old.my_lba != 1 {
        return Err(format!(
            "disk image: primary GPT header says it is at LBA {}",
            old.my_lba
        ));
    }
    let array_sectors = old.array_sectors(SECTOR);
    let array_start = (old.entries_lba * SECTOR) as usize;
    let array_end = array_start + old.array_bytes() as usize;
    if array_end > head.len() || array_start < 2 * s {
        return Err("disk image: GPT entry array is not right after the header".into());
    }
    let array = head[array_start..array_end].to_vec();
    if entries_crc(&array) != old.entries_crc {
        return Err("disk image: GPT entry array CRC mismatch".into());
    }
    let last = total
        .checked_sub(1)
        .filter(|l| *l > old.alternate_lba)
        .ok_or_else(|| {
            format!(
                "a disk of {total} sectors is not larger than the image (backup GPT at LBA {})",
                old.alternate_lba
            )
        })?;
    let backup_array_lba = last - array_sectors;
    let mut primary = old.clone();
    primary.alternate_lba = last;
    primary.last_usable_lba = backup_array_lba - 1;
    let mut backup = primary.clone();
    backup.my_lba = last;
    backup.alternate_lba = 1;
    backup.entries_lba = backup_array_lba;

    let mut head = head[..array_end].to_vec();
    head[nomados_gpt::MBR_SIZE_OFFSET..nomados_gpt::MBR_SIZE_OFFSET + 4]
        .copy_from_slice(&nomados_gpt::protective_mbr_size(total));
    head[s..2 * s].copy_from_slice(&primary.encode(s));
    let mut tail = array;
    tail.resize((array_sectors * SECTOR) as usize, 0);
    tail.extend_from_slice(&backup.encode(s));
    Ok(GptImage {
        head,
        tail,
        tail_offset: backup_array_lba * SECTOR,
    })
}

fn encode_entries(parts: &[Partition]) -> Result<Vec<u8>, String> {
    let mut array = vec![0u8; (GPT_ENTRIES * GPT_ENTRY_SIZE) as usize];
    for (i, p) in parts.iter().enumerate() {
        let entry = Entry::new(
            p.type_guid,
            p.uuid,
            (p.first_lba, p.last_lba),
            p.attributes,
            &p.name,
        )?;
        entry.encode_into(&mut array[i * GPT_ENTRY_SIZE as usize..]);
    }
    Ok(array)
}

/// One header sector. `my_lba`/`alt_lba` swap between primary and backup.
fn encode_header(
    layout: &Layout,
    my_lba: u64,
    alt_lba: u64,
    array_lba: u64,
    array_crc: u32,
) -> Vec<u8> {
    Header {
        revision: REVISION,
        header_size: HEADER_SIZE,
        my_lba,
        alternate_lba: alt_lba,
        first_usable_lba: layout.first_usable_lba(),
        last_usable_lba: layout.last_usable_lba(),
        disk_guid: layout.disk_guid,
        entries_lba: array_lba,
        entry_count: GPT_ENTRIES,
        entry_size: GPT_ENTRY_SIZE,
        entries_crc: array_crc,
    }
    .encode(SECTOR as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guid::Guid;
    use crate::layout::{PartitionSpec, ATTR_LEGACY_BIOS_BOOTABLE, MIB};

    fn u32_at(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
    }

    pub(crate) fn sample() -> Layout {
        Layout::plan(
            Guid::derived("gpt-test", "disk"),
            &[
                PartitionSpec {
                    name: "NOMADOS-ESP".into(),
                    type_guid: Guid::ESP,
                    uuid: Guid::derived("gpt-test", "esp"),
                    attributes: ATTR_LEGACY_BIOS_BOOTABLE,
                    min_bytes: 8 * MIB,
                },
                PartitionSpec {
                    name: "NOMADOS-ROOT".into(),
                    type_guid: Guid::LINUX_ROOT_X86_64,
                    uuid: Guid::derived("gpt-test", "root"),
                    attributes: 0,
                    min_bytes: 3 * MIB,
                },
            ],
        )
        .unwrap()
    }

    #[test]
    fn grown_table_moves_the_backup_to_the_new_end_and_keeps_partitions() {
        let l = sample();
        let g = encode(&l, Some(&[0xAB; 440])).unwrap();
        let total = 3 * l.total_sectors();
        let grown = grown(&g.head, total).unwrap();
        // Boot code and partition entries unchanged; MBR size and headers follow the disk.
        assert_eq!(&grown.head[..440], &[0xAB; 440][..]);
        assert_eq!(grown.head[1024..], g.head[1024..]);
        assert_eq!(u32_at(&grown.head, 446 + 12) as u64, total - 1);
        let p = Header::parse(&grown.head[512..1024]).unwrap();
        assert_eq!((p.my_lba, p.alternate_lba), (1, total - 1));
        assert_eq!(p.last_usable_lba, total - 2 - GPT_ARRAY_SECTORS);
        assert_eq!(grown.tail_offset + grown.tail.len() as u64, total * SECTOR);
        let b = Header::parse(&grown.tail[grown.tail.len() - 512..]).unwrap();
        assert_eq!((b.my_lba, b.alternate_lba), (total - 1, 1));
        assert_eq!(b.entries_lba * SECTOR, grown.tail_offset);
        assert_eq!(&grown.tail[..grown.tail.len() - 512], &g.head[1024..]);
        // The same as planning the bigger disk from the start, but for where data may go.
        let mut big = l.clone();
        big.size_bytes = total * SECTOR;
        let direct = encode(&big, Some(&[0xAB; 440])).unwrap();
        assert_eq!(grown.head, direct.head);
        assert_eq!(grown.tail, direct.tail);
        assert_eq!(grown.tail_offset, direct.tail_offset);

        assert!(grown_err(&g.head, l.total_sectors()).contains("not larger"));
        let mut bad = g.head.clone();
        bad[1024] ^= 1;
        assert!(grown_err(&bad, total).contains("CRC"));
        assert!(grown_err(&g.head[..512], total).contains("shorter"));
    }

    fn grown_err(head: &[u8], total: u64) -> String {
        grown(head, total).unwrap_err()
    }

    #[test]
    fn protective_mbr_fields() {
        let l = sample();
        let code = vec![0xABu8; 440];
        let g = encode(&l, Some(&code)).unwrap();
        let mbr = &g.head[..512];
        assert_eq!(&mbr[..440], &code[..]);
        assert_eq!(mbr[446 + 4], 0xEE);
        assert_eq!(mbr[446], 0);
        assert_eq!(u32_at(mbr, 446 + 8), 1);
        assert_eq!(u32_at(mbr, 446 + 12) as u64, l.total_sectors() - 1);
        assert_eq!(&mbr[462..510], &[0u8; 48][..], "other MBR entries empty");
        assert_eq!(&mbr[510..], &[0x55, 0xAA]);
        assert!(encode(&l, Some(&[0u8; 441])).is_err());
    }

    #[test]
    fn headers_have_valid_crcs_and_mirror_each_other() {
        let l = sample();
        let g = encode(&l, None).unwrap();
        assert_eq!(g.head.len(), 512 * 34);
        assert_eq!(g.tail.len(), 512 * 33);
        assert_eq!(g.tail_offset + g.tail.len() as u64, l.size_bytes);

        let primary = &g.head[512..1024];
        let backup = &g.tail[g.tail.len() - 512..];
        for (h, my, alt, arr) in [
            (primary, 1, l.total_sectors() - 1, 2),
            (backup, l.total_sectors() - 1, 1, l.total_sectors() - 33),
        ] {
            assert_eq!(&h[..8], b"EFI PART");
            assert_eq!(u32_at(h, 8), 0x0001_0000);
            assert_eq!(u32_at(h, 12), 92);
            let mut copy = h[..92].to_vec();
            copy[16..20].fill(0);
            assert_eq!(u32_at(h, 16), crc32fast::hash(&copy), "header CRC");
            assert_eq!(u64_at(h, 24), my);
            assert_eq!(u64_at(h, 32), alt);
            assert_eq!(u64_at(h, 40), 34);
            assert_eq!(u64_at(h, 48), l.total_sectors() - 34);
            assert_eq!(&h[56..72], &l.disk_guid.to_gpt_bytes());
            assert_eq!(u64_at(h, 72), arr);
            assert_eq!(u32_at(h, 80), 128);
            assert_eq!(u32_at(h, 84), 128);
            let array = &g.head[1024..];
            assert_eq!(u32_at(h, 88), crc32fast::hash(array), "array CRC");
            assert!(h[92..].iter().all(|&b| b == 0));
        }
        assert_eq!(&g.head[1024..], &g.tail[..g.tail.len() - 512]);
    }

    #[test]
    fn entries_hold_types_uuids_ranges_attributes_and_names() {
        let l = sample();
        let g = encode(&l, None).unwrap();
        let array = &g.head[1024..];
        for (i, p) in l.partitions.iter().enumerate() {
            let e = &array[i * 128..(i + 1) * 128];
            assert_eq!(&e[0..16], &p.type_guid.to_gpt_bytes());
            assert_eq!(Guid::from_gpt_bytes(e[16..32].try_into().unwrap()), p.uuid);
            assert_eq!(u64_at(e, 32), p.first_lba);
            assert_eq!(u64_at(e, 40), p.last_lba);
            assert_eq!(u64_at(e, 48), p.attributes);
            let name: Vec<u16> = e[56..128]
                .chunks(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&u| u != 0)
                .collect();
            assert_eq!(String::from_utf16(&name).unwrap(), p.name);
        }
        assert_eq!(
            u64_at(array, 48) & ATTR_LEGACY_BIOS_BOOTABLE,
            ATTR_LEGACY_BIOS_BOOTABLE
        );
        assert!(
            array[2 * 128..].iter().all(|&b| b == 0),
            "unused entries zero"
        );
    }
}
