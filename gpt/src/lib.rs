//! The GUID Partition Table as bytes: header, entries and protective MBR, encoded and
//! decoded in one place for the image builder (which writes a table) and init's
//! data-partition grower (which reads one and moves its end).
//!
//! Pure: no I/O. Sector size is the caller's (512 for images, the device's for growth).

mod guid;

pub use guid::Guid;

/// The header's first eight bytes.
pub const SIGNATURE: &[u8; 8] = b"EFI PART";
/// Revision 1.0.
pub const REVISION: u32 = 0x0001_0000;
/// Bytes of the header that carry fields (and that its CRC covers).
pub const HEADER_SIZE: u32 = 92;
/// Size of the MBR boot code area (what syslinux's `gptmbr.bin` fills).
pub const BOOT_CODE_LEN: usize = 440;
/// Byte offset in sector 0 of the protective 0xEE entry's size field (sectors covered).
pub const MBR_SIZE_OFFSET: usize = 446 + 12;
/// Entry arrays larger than this are refused when reading (ours are 16 KiB).
pub const MAX_ARRAY_BYTES: u64 = 1 << 20;

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(v)
}

/// A GPT header (primary or backup).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub revision: u32,
    /// Bytes covered by the header CRC (at least [`HEADER_SIZE`]).
    pub header_size: u32,
    pub my_lba: u64,
    pub alternate_lba: u64,
    pub first_usable_lba: u64,
    pub last_usable_lba: u64,
    pub disk_guid: Guid,
    pub entries_lba: u64,
    pub entry_count: u32,
    pub entry_size: u32,
    pub entries_crc: u32,
}

impl Header {
    /// Reads and checks a header sector: signature, size, CRC and a sane entry array.
    pub fn parse(sector: &[u8]) -> Result<Header, String> {
        if sector.len() < HEADER_SIZE as usize || &sector[0..8] != SIGNATURE {
            return Err("no GPT: LBA 1 lacks the \"EFI PART\" signature".into());
        }
        let size = u32_at(sector, 12);
        if !(HEADER_SIZE as usize..=sector.len()).contains(&(size as usize)) {
            return Err(format!("GPT header size {size} is invalid"));
        }
        let mut covered = sector[..size as usize].to_vec();
        covered[16..20].fill(0);
        if crc32fast::hash(&covered) != u32_at(sector, 16) {
            return Err("GPT header CRC mismatch".into());
        }
        let (count, esize) = (u32_at(sector, 80), u32_at(sector, 84));
        if esize < 128 || count == 0 || u64::from(count) * u64::from(esize) > MAX_ARRAY_BYTES {
            return Err(format!(
                "GPT entry array of {count} x {esize} bytes is invalid"
            ));
        }
        let mut disk_guid = [0u8; 16];
        disk_guid.copy_from_slice(&sector[56..72]);
        Ok(Header {
            revision: u32_at(sector, 8),
            header_size: size,
            my_lba: u64_at(sector, 24),
            alternate_lba: u64_at(sector, 32),
            first_usable_lba: u64_at(sector, 40),
            last_usable_lba: u64_at(sector, 48),
            disk_guid: Guid::from_gpt_bytes(&disk_guid),
            entries_lba: u64_at(sector, 72),
            entry_count: count,
            entry_size: esize,
            entries_crc: u32_at(sector, 88),
        })
    }

    /// One header sector of `sector_size` bytes, CRC included, zero after the fields.
    pub fn encode(&self, sector_size: usize) -> Vec<u8> {
        let size = (self.header_size as usize).clamp(HEADER_SIZE as usize, sector_size);
        let mut h = vec![0u8; sector_size];
        h[0..8].copy_from_slice(SIGNATURE);
        h[8..12].copy_from_slice(&self.revision.to_le_bytes());
        h[12..16].copy_from_slice(&(size as u32).to_le_bytes());
        // 16..20: the header CRC, computed last with this field zero.
        h[24..32].copy_from_slice(&self.my_lba.to_le_bytes());
        h[32..40].copy_from_slice(&self.alternate_lba.to_le_bytes());
        h[40..48].copy_from_slice(&self.first_usable_lba.to_le_bytes());
        h[48..56].copy_from_slice(&self.last_usable_lba.to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid.to_gpt_bytes());
        h[72..80].copy_from_slice(&self.entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&self.entry_count.to_le_bytes());
        h[84..88].copy_from_slice(&self.entry_size.to_le_bytes());
        h[88..92].copy_from_slice(&self.entries_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..size]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Bytes of the entry array.
    pub fn array_bytes(&self) -> u64 {
        u64::from(self.entry_count) * u64::from(self.entry_size)
    }

    /// Whole sectors the entry array takes.
    pub fn array_sectors(&self, sector_size: u64) -> u64 {
        self.array_bytes().div_ceil(sector_size)
    }
}

/// The CRC a header records for an entry array.
pub fn entries_crc(array: &[u8]) -> u32 {
    crc32fast::hash(array)
}

/// One partition entry; the name is kept as the UTF-16 units on disk, so reading and
/// writing back an entry never changes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub type_guid: Guid,
    pub uuid: Guid,
    pub first_lba: u64,
    pub last_lba: u64,
    pub attributes: u64,
    pub name_units: [u16; 36],
}

impl Entry {
    /// An entry named `name` (at most 36 UTF-16 units).
    pub fn new(
        type_guid: Guid,
        uuid: Guid,
        (first_lba, last_lba): (u64, u64),
        attributes: u64,
        name: &str,
    ) -> Result<Entry, String> {
        let units: Vec<u16> = name.encode_utf16().collect();
        if units.len() > 36 {
            return Err(format!("partition name `{name}` is too long for GPT"));
        }
        let mut name_units = [0u16; 36];
        name_units[..units.len()].copy_from_slice(&units);
        Ok(Entry {
            type_guid,
            uuid,
            first_lba,
            last_lba,
            attributes,
            name_units,
        })
    }

    /// The entry in `raw` (at least 128 bytes); `None` when it is unused (zero type).
    pub fn decode(raw: &[u8]) -> Option<Entry> {
        if raw.len() < 128 || raw[0..16].iter().all(|b| *b == 0) {
            return None;
        }
        let guid = |o: usize| {
            let mut b = [0u8; 16];
            b.copy_from_slice(&raw[o..o + 16]);
            Guid::from_gpt_bytes(&b)
        };
        let mut name_units = [0u16; 36];
        for (i, unit) in name_units.iter_mut().enumerate() {
            *unit = u16::from_le_bytes([raw[56 + 2 * i], raw[57 + 2 * i]]);
        }
        Some(Entry {
            type_guid: guid(0),
            uuid: guid(16),
            first_lba: u64_at(raw, 32),
            last_lba: u64_at(raw, 40),
            attributes: u64_at(raw, 48),
            name_units,
        })
    }

    /// Writes the entry into the first 128 bytes of `raw`.
    pub fn encode_into(&self, raw: &mut [u8]) {
        raw[0..16].copy_from_slice(&self.type_guid.to_gpt_bytes());
        raw[16..32].copy_from_slice(&self.uuid.to_gpt_bytes());
        raw[32..40].copy_from_slice(&self.first_lba.to_le_bytes());
        raw[40..48].copy_from_slice(&self.last_lba.to_le_bytes());
        raw[48..56].copy_from_slice(&self.attributes.to_le_bytes());
        for (i, unit) in self.name_units.iter().enumerate() {
            raw[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
        }
    }

    /// The name, up to the first NUL.
    pub fn name(&self) -> String {
        let end = self.name_units.iter().position(|u| *u == 0).unwrap_or(36);
        String::from_utf16_lossy(&self.name_units[..end])
    }
}

/// The value of the protective MBR's size field for a disk of `total_sectors`.
pub fn protective_mbr_size(total_sectors: u64) -> [u8; 4] {
    (total_sectors.saturating_sub(1).min(u32::MAX as u64) as u32).to_le_bytes()
}

/// Sector 0 (512 bytes): boot code, one 0xEE partition covering the disk, 0x55AA.
pub fn protective_mbr(total_sectors: u64, boot_code: Option<&[u8]>) -> Result<Vec<u8>, String> {
    let mut mbr = vec![0u8; 512];
    if let Some(code) = boot_code {
        if code.len() > BOOT_CODE_LEN {
            return Err(format!(
                "MBR boot code is {} bytes; at most {BOOT_CODE_LEN} fit",
                code.len()
            ));
        }
        mbr[..code.len()].copy_from_slice(code);
    }
    let e = &mut mbr[446..462];
    e[0] = 0x00; // not active: UEFI spec requires 0 for the protective entry
    e[1..4].copy_from_slice(&[0x00, 0x02, 0x00]); // CHS of LBA 1
    e[4] = 0xEE;
    e[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
    e[8..12].copy_from_slice(&1u32.to_le_bytes());
    mbr[MBR_SIZE_OFFSET..MBR_SIZE_OFFSET + 4].copy_from_slice(&protective_mbr_size(total_sectors));
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    Ok(mbr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            revision: REVISION,
            header_size: HEADER_SIZE,
            my_lba: 1,
            alternate_lba: 4095,
            first_usable_lba: 34,
            last_usable_lba: 4062,
            disk_guid: Guid::derived("t", "disk"),
            entries_lba: 2,
            entry_count: 128,
            entry_size: 128,
            entries_crc: 0x1234_5678,
        }
    }

    #[test]
    fn headers_round_trip_and_carry_a_valid_crc() {
        let bytes = header().encode(512);
        assert_eq!(bytes.len(), 512);
        assert_eq!(&bytes[..8], SIGNATURE);
        let mut covered = bytes[..92].to_vec();
        covered[16..20].fill(0);
        assert_eq!(u32_at(&bytes, 16), crc32fast::hash(&covered));
        assert!(bytes[92..].iter().all(|b| *b == 0));
        assert_eq!(Header::parse(&bytes).unwrap(), header());
        assert_eq!(header().array_sectors(512), 32);
        assert_eq!(header().array_sectors(4096), 4);
    }

    #[test]
    fn broken_headers_are_refused_with_the_reason() {
        let good = header().encode(512);
        let mut bad = good.clone();
        bad[40] ^= 1;
        assert!(Header::parse(&bad).unwrap_err().contains("header CRC"));
        assert!(Header::parse(&[0u8; 512]).unwrap_err().contains("EFI PART"));
        let huge = Header {
            entry_count: 1 << 20,
            ..header()
        };
        assert!(Header::parse(&huge.encode(512))
            .unwrap_err()
            .contains("entry array"));
        let mut short = good;
        short[12..16].copy_from_slice(&600u32.to_le_bytes());
        assert!(Header::parse(&short).unwrap_err().contains("header size"));
    }

    #[test]
    fn entries_round_trip_names_and_all() {
        let e = Entry::new(
            Guid::ESP,
            Guid::derived("t", "esp"),
            (2048, 4095),
            4,
            "NOMADOS-ESP",
        )
        .unwrap();
        let mut raw = [0u8; 128];
        e.encode_into(&mut raw);
        assert_eq!(&raw[0..16], &Guid::ESP.to_gpt_bytes());
        assert_eq!(u64_at(&raw, 40), 4095);
        let back = Entry::decode(&raw).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.name(), "NOMADOS-ESP");
        assert_eq!(Entry::decode(&[0u8; 128]), None, "zero type: unused");
        assert!(Entry::new(Guid::ESP, Guid::ESP, (1, 2), 0, &"x".repeat(37)).is_err());
    }

    #[test]
    fn protective_mbr_covers_the_disk() {
        let mbr = protective_mbr(1 << 20, Some(&[0xAB; 440])).unwrap();
        assert_eq!(mbr[446 + 4], 0xEE);
        assert_eq!(u32_at(&mbr, MBR_SIZE_OFFSET), (1 << 20) - 1);
        assert_eq!(&mbr[510..], &[0x55, 0xAA]);
        assert!(protective_mbr(10, Some(&[0; 441])).is_err());
        assert_eq!(protective_mbr_size(1 << 40), u32::MAX.to_le_bytes());
    }
}
