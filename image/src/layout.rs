//! Disk layout arithmetic: where each partition goes and how big the disk is.
//!
//! Everything is aligned to 1 MiB: partition starts and sizes, and the disk size itself
//! (Azure requires a whole number of MiB; it also keeps 4 KiB-sector disks happy).

use crate::guid::Guid;

pub const SECTOR: u64 = 512;
pub const MIB: u64 = 1024 * 1024;
/// Partition entries in each GPT array (the minimum the UEFI spec allows).
pub const GPT_ENTRIES: u32 = 128;
pub const GPT_ENTRY_SIZE: u32 = 128;
/// Sectors taken by one copy of the entry array.
pub const GPT_ARRAY_SECTORS: u64 = (GPT_ENTRIES as u64 * GPT_ENTRY_SIZE as u64) / SECTOR;

/// GPT attribute bit 2: "legacy BIOS bootable", what syslinux's gptmbr.bin looks for.
pub const ATTR_LEGACY_BIOS_BOOTABLE: u64 = 1 << 2;

/// Rounds `v` up to a multiple of `to` (which must be non-zero).
pub fn round_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

/// The size a fixed VHD must have: the raw size rounded up to 1 MiB.
pub fn vhd_size(raw: u64) -> u64 {
    round_up(raw, MIB)
}

/// What a caller asks for: a partition with a minimum size.
#[derive(Debug, Clone)]
pub struct PartitionSpec {
    pub name: String,
    pub type_guid: Guid,
    pub uuid: Guid,
    pub attributes: u64,
    pub min_bytes: u64,
}

/// A placed partition.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Partition {
    pub name: String,
    #[serde(rename = "type")]
    pub type_guid: Guid,
    pub uuid: Guid,
    pub attributes: u64,
    /// First sector.
    pub first_lba: u64,
    /// Last sector, inclusive (as GPT stores it).
    pub last_lba: u64,
}

impl Partition {
    pub fn offset_bytes(&self) -> u64 {
        self.first_lba * SECTOR
    }
    pub fn size_bytes(&self) -> u64 {
        (self.last_lba + 1 - self.first_lba) * SECTOR
    }
}

/// A complete disk layout.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Layout {
    pub disk_guid: Guid,
    pub size_bytes: u64,
    pub partitions: Vec<Partition>,
}

impl Layout {
    /// Places partitions one after another, each starting on a 1 MiB boundary and sized in
    /// whole MiB, leaving 1 MiB at the front (MBR, GPT) and 1 MiB at the end (backup GPT).
    pub fn plan(disk_guid: Guid, specs: &[PartitionSpec]) -> Result<Layout, String> {
        if specs.is_empty() {
            return Err("a disk needs at least one partition".into());
        }
        if specs.len() > GPT_ENTRIES as usize {
            return Err(format!("at most {GPT_ENTRIES} partitions fit in the GPT"));
        }
        let mut next = MIB;
        let mut partitions = Vec::with_capacity(specs.len());
        for s in specs {
            if s.min_bytes == 0 {
                return Err(format!("partition `{}` has size 0", s.name));
            }
            if s.name.encode_utf16().count() > 36 {
                return Err(format!(
                    "partition name `{}` is longer than the 36 UTF-16 units GPT allows",
                    s.name
                ));
            }
            let size = round_up(s.min_bytes, MIB);
            partitions.push(Partition {
                name: s.name.clone(),
                type_guid: s.type_guid,
                uuid: s.uuid,
                attributes: s.attributes,
                first_lba: next / SECTOR,
                last_lba: (next + size) / SECTOR - 1,
            });
            next += size;
        }
        Ok(Layout {
            disk_guid,
            size_bytes: next + MIB,
            partitions,
        })
    }

    pub fn total_sectors(&self) -> u64 {
        self.size_bytes / SECTOR
    }
    /// First sector a partition may use (after the protective MBR, header and array).
    pub fn first_usable_lba(&self) -> u64 {
        2 + GPT_ARRAY_SECTORS
    }
    /// Last sector a partition may use (before the backup array and header).
    pub fn last_usable_lba(&self) -> u64 {
        self.total_sectors() - 2 - GPT_ARRAY_SECTORS
    }

    pub fn partition(&self, name: &str) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, min: u64) -> PartitionSpec {
        PartitionSpec {
            name: name.into(),
            type_guid: Guid::LINUX_DATA,
            uuid: Guid::derived("t", name),
            attributes: 0,
            min_bytes: min,
        }
    }

    #[test]
    fn partitions_are_mib_aligned_contiguous_and_inside_usable_range() {
        let l = Layout::plan(
            Guid::derived("t", "disk"),
            &[spec("a", 64 * MIB), spec("b", 5 * MIB + 1), spec("c", 1)],
        )
        .unwrap();
        let p = &l.partitions;
        assert_eq!(p[0].first_lba, 2048);
        assert_eq!(p[0].size_bytes(), 64 * MIB);
        assert_eq!(p[1].first_lba, 2048 + 64 * 2048);
        assert_eq!(
            p[1].size_bytes(),
            6 * MIB,
            "5 MiB + 1 byte rounds up to 6 MiB"
        );
        assert_eq!(p[2].size_bytes(), MIB);
        for (i, part) in p.iter().enumerate() {
            assert_eq!(part.offset_bytes() % MIB, 0, "{} start", part.name);
            assert_eq!(part.size_bytes() % MIB, 0, "{} size", part.name);
            assert!(part.first_lba >= l.first_usable_lba());
            assert!(part.last_lba <= l.last_usable_lba());
            if i > 0 {
                assert_eq!(part.first_lba, p[i - 1].last_lba + 1);
            }
        }
        assert_eq!(l.size_bytes, (1 + 64 + 6 + 1 + 1) * MIB);
        assert_eq!(l.size_bytes % MIB, 0);
        assert_eq!(l.first_usable_lba(), 34);
        assert_eq!(l.last_usable_lba(), l.total_sectors() - 34);
    }

    #[test]
    fn bad_specs_are_rejected_with_the_partition_named() {
        let g = Guid::derived("t", "disk");
        assert!(Layout::plan(g, &[]).is_err());
        let e = Layout::plan(g, &[spec("zero", 0)]).unwrap_err();
        assert!(e.contains("`zero`"), "{e}");
        let long = "x".repeat(37);
        assert!(Layout::plan(g, &[spec(&long, MIB)]).is_err());
        assert!(Layout::plan(g, &[spec(&"y".repeat(36), MIB)]).is_ok());
    }

    #[test]
    fn vhd_rounding() {
        assert_eq!(vhd_size(MIB), MIB);
        assert_eq!(vhd_size(MIB + 1), 2 * MIB);
        assert_eq!(vhd_size(1), MIB);
        assert_eq!(round_up(0, MIB), 0);
        // A planned disk never needs padding for Azure.
        let l = Layout::plan(Guid::derived("t", "d"), &[spec("a", 12345)]).unwrap();
        assert_eq!(vhd_size(l.size_bytes), l.size_bytes);
    }
}
