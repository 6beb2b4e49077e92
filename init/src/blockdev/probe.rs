//! What a block device holds, from its first bytes: partition tables and filesystem (or
//! volume) signatures, named for a human. Pure: the caller reads the bytes.
//!
//! Two questions are answered here. [`signatures`] names what is there (the installer
//! prints it when it refuses a disk). [`is_blank`] is the stricter one that decides whether
//! a filesystem may be made: not only no known signature, but nothing at all, every byte of
//! the probed head zero. Anything we do not recognise is still somebody's data.

/// How many bytes of a device's head [`signatures`] and [`is_blank`] look at: past the
/// btrfs superblock (64 KiB + 4 KiB) and the ISO 9660 volume descriptors (32 KiB + 2 KiB).
pub const HEAD_BYTES: usize = 1 << 20;

/// One thing found on a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// A GPT header ("EFI PART") at LBA 1 (for 512- or 4096-byte sectors).
    Gpt,
    /// A DOS/MBR partition table with this many used entries (a GPT's protective MBR is
    /// reported as [`Signature::Gpt`] instead).
    Mbr {
        partitions: usize,
    },
    /// ext2/3/4, with its label when it has one.
    Ext {
        label: Option<String>,
    },
    Xfs,
    Btrfs,
    Vfat,
    Exfat,
    Ntfs,
    Swap,
    Luks,
    LvmPhysicalVolume,
    MdRaid,
    Iso9660,
    Squashfs,
    /// Non-zero bytes that match no signature we know (some other filesystem, a partly
    /// wiped disk, random data).
    UnknownData,
}

impl std::fmt::Display for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Signature::Gpt => write!(f, "a GPT partition table"),
            Signature::Mbr { partitions } => {
                write!(
                    f,
                    "an MBR (DOS) partition table with {partitions} partition(s)"
                )
            }
            Signature::Ext { label: Some(l) } => write!(f, "an ext2/3/4 filesystem labelled {l}"),
            Signature::Ext { label: None } => write!(f, "an ext2/3/4 filesystem"),
            Signature::Xfs => write!(f, "an XFS filesystem"),
            Signature::Btrfs => write!(f, "a btrfs filesystem"),
            Signature::Vfat => write!(f, "a FAT filesystem"),
            Signature::Exfat => write!(f, "an exFAT filesystem"),
            Signature::Ntfs => write!(f, "an NTFS filesystem"),
            Signature::Swap => write!(f, "Linux swap"),
            Signature::Luks => write!(f, "a LUKS encrypted volume"),
            Signature::LvmPhysicalVolume => write!(f, "an LVM physical volume"),
            Signature::MdRaid => write!(f, "an md RAID member"),
            Signature::Iso9660 => write!(f, "an ISO 9660 filesystem"),
            Signature::Squashfs => write!(f, "a squashfs filesystem"),
            Signature::UnknownData => write!(f, "data of an unknown kind"),
        }
    }
}

fn at(head: &[u8], offset: usize, magic: &[u8]) -> bool {
    head.get(offset..offset + magic.len()) == Some(magic)
}

fn u32_le(head: &[u8], offset: usize) -> Option<u32> {
    let b = head.get(offset..offset + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The used entries of a DOS partition table in sector 0, when it has the 0x55AA mark and
/// is not a FAT/NTFS boot sector (which carry the same mark).
fn mbr_entries(head: &[u8]) -> Option<Vec<u8>> {
    if !at(head, 510, &[0x55, 0xAA]) {
        return None;
    }
    let types: Vec<u8> = (0..4)
        .filter_map(|i| head.get(446 + i * 16 + 4).copied())
        .filter(|t| *t != 0)
        .collect();
    Some(types)
}

/// Everything recognised in `head` (the first bytes of a device, ideally [`HEAD_BYTES`]).
/// Empty means no signature and no non-zero byte.
pub fn signatures(head: &[u8]) -> Vec<Signature> {
    let mut found = Vec::new();
    let fat = at(head, 54, b"FAT1") || at(head, 82, b"FAT32");
    if at(head, 512, b"EFI PART") || at(head, 4096, b"EFI PART") {
        found.push(Signature::Gpt);
    } else if let Some(types) = mbr_entries(head) {
        if !fat && !at(head, 3, b"NTFS    ") && !at(head, 3, b"EXFAT   ") {
            if types.contains(&0xEE) {
                // A protective MBR whose GPT is gone (or elsewhere): still a table.
                found.push(Signature::Gpt);
            } else {
                found.push(Signature::Mbr {
                    partitions: types.len(),
                });
            }
        }
    }
    if fat {
        found.push(Signature::Vfat);
    }
    if at(head, 3, b"NTFS    ") {
        found.push(Signature::Ntfs);
    }
    if at(head, 3, b"EXFAT   ") {
        found.push(Signature::Exfat);
    }
    if at(head, 1024 + 0x38, &[0x53, 0xEF]) {
        let label = head
            .get(1024..2048)
            .and_then(crate::sys::block::ext_label)
            .filter(|l| !l.is_empty());
        found.push(Signature::Ext { label });
    }
    if at(head, 0, b"XFSB") {
        found.push(Signature::Xfs);
    }
    if at(head, 65536 + 64, b"_BHRfS_M") {
        found.push(Signature::Btrfs);
    }
    if at(head, 4096 - 10, b"SWAPSPACE2") || at(head, 4096 - 10, b"SWAP-SPACE") {
        found.push(Signature::Swap);
    }
    if at(head, 0, b"LUKS\xba\xbe") {
        found.push(Signature::Luks);
    }
    if (0..4).any(|s| at(head, s * 512, b"LABELONE") && at(head, s * 512 + 24, b"LVM2 001")) {
        found.push(Signature::LvmPhysicalVolume);
    }
    // md superblocks 1.1 (offset 0) and 1.2 (4 KiB); 0.90 and 1.0 live at the end.
    if [0, 4096]
        .iter()
        .any(|o| u32_le(head, *o) == Some(0xa92b_4efc))
    {
        found.push(Signature::MdRaid);
    }
    if at(head, 32769, b"CD001") {
        found.push(Signature::Iso9660);
    }
    if at(head, 0, b"hsqs") {
        found.push(Signature::Squashfs);
    }
    if found.is_empty() && head.iter().any(|b| *b != 0) {
        found.push(Signature::UnknownData);
    }
    found
}

/// md RAID 0.90 and 1.0 keep their superblock near the end of the device: checked in the
/// last bytes (`tail`, ideally the last 128 KiB).
pub fn tail_signatures(tail: &[u8]) -> Vec<Signature> {
    let mut found = Vec::new();
    // 0.90: 64 KiB aligned, 64 KiB before the end; 1.0: 8 KiB before the end (4 KiB aligned).
    let hit = (0..tail.len())
        .step_by(4096)
        .any(|o| u32_le(tail, o) == Some(0xa92b_4efc));
    if hit {
        found.push(Signature::MdRaid);
    }
    found
}

/// True when a filesystem may be made on the device whose first bytes are `head` and
/// last bytes `tail`: every byte zero. `head` must be [`HEAD_BYTES`] long (or the whole
/// device when smaller), else nothing is blank.
pub fn is_blank(head: &[u8], tail: &[u8], device_bytes: u64) -> bool {
    let enough = head.len() >= HEAD_BYTES || head.len() as u64 == device_bytes;
    enough && !head.is_empty() && head.iter().chain(tail).all(|b| *b == 0)
}

/// One line naming `found`, for messages ("a GPT partition table, an ext2/3/4 ...").
pub fn describe(found: &[Signature]) -> String {
    found
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zero() -> Vec<u8> {
        vec![0u8; HEAD_BYTES]
    }

    fn put(b: &mut [u8], o: usize, m: &[u8]) {
        b[o..o + m.len()].copy_from_slice(m);
    }

    #[test]
    fn a_zeroed_head_is_blank_and_has_no_signature() {
        let h = zero();
        assert!(signatures(&h).is_empty());
        assert!(is_blank(&h, &[0; 4096], 1 << 30));
        assert!(!is_blank(&h[..4096], &[], 1 << 30), "too little was read");
        assert!(is_blank(&h[..4096], &[], 4096), "the whole small device");
    }

    #[test]
    fn any_non_zero_byte_is_not_blank_and_is_reported() {
        let mut h = zero();
        h[HEAD_BYTES - 1] = 1;
        assert!(!is_blank(&h, &[], 1 << 30));
        assert_eq!(signatures(&h), vec![Signature::UnknownData]);
        let h = zero();
        assert!(!is_blank(&h, &[0, 0, 7], 1 << 30), "the tail counts too");
    }

    #[test]
    fn names_partition_tables() {
        let mut h = zero();
        put(&mut h, 510, &[0x55, 0xAA]);
        put(&mut h, 446 + 4, &[0xEE]);
        put(&mut h, 512, b"EFI PART");
        assert_eq!(signatures(&h), vec![Signature::Gpt]);
        let mut h = zero();
        put(&mut h, 510, &[0x55, 0xAA]);
        put(&mut h, 446 + 4, &[0x83]);
        put(&mut h, 446 + 16 + 4, &[0x82]);
        assert_eq!(signatures(&h), vec![Signature::Mbr { partitions: 2 }]);
        assert_eq!(
            describe(&signatures(&h)),
            "an MBR (DOS) partition table with 2 partition(s)"
        );
    }

    #[test]
    fn names_filesystems() {
        let md = 0xa92b_4efcu32.to_le_bytes();
        let cases: Vec<(usize, &[u8], Signature)> = vec![
            (0, b"XFSB", Signature::Xfs),
            (65536 + 64, b"_BHRfS_M", Signature::Btrfs),
            (4086, b"SWAPSPACE2", Signature::Swap),
            (0, b"LUKS\xba\xbe", Signature::Luks),
            (32769, b"CD001", Signature::Iso9660),
            (0, b"hsqs", Signature::Squashfs),
            (4096, &md, Signature::MdRaid),
        ];
        for (o, m, want) in cases {
            let mut h = zero();
            put(&mut h, o, m);
            assert_eq!(signatures(&h), vec![want.clone()], "{want}");
        }
        let mut h = zero();
        put(&mut h, 1024 + 0x38, &[0x53, 0xEF]);
        put(&mut h, 1024 + 0x78, b"NOMADOS-DATA");
        assert_eq!(
            signatures(&h),
            vec![Signature::Ext {
                label: Some("NOMADOS-DATA".into())
            }]
        );
        // A FAT boot sector carries 0x55AA too: a filesystem, not a partition table.
        let mut h = zero();
        put(&mut h, 510, &[0x55, 0xAA]);
        put(&mut h, 82, b"FAT32   ");
        put(&mut h, 446 + 4, &[0x0c]);
        assert_eq!(signatures(&h), vec![Signature::Vfat]);
    }

    #[test]
    fn md_superblocks_at_the_end_are_found() {
        let mut t = vec![0u8; 128 << 10];
        assert!(tail_signatures(&t).is_empty());
        put(&mut t, 64 << 10, &0xa92b_4efcu32.to_le_bytes());
        assert_eq!(tail_signatures(&t), vec![Signature::MdRaid]);
    }

    #[test]
    fn real_mkfs_ext4_output_is_recognised() {
        if std::process::Command::new("mkfs.ext4")
            .arg("-V")
            .output()
            .is_err()
        {
            eprintln!("SKIP: mkfs.ext4 not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("fs.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(8 << 20)
            .unwrap();
        let st = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "X"])
            .arg(&img)
            .status()
            .unwrap();
        assert!(st.success());
        let bytes = std::fs::read(&img).unwrap();
        let head = &bytes[..HEAD_BYTES];
        assert_eq!(
            signatures(head),
            vec![Signature::Ext {
                label: Some("X".into())
            }]
        );
        assert!(!is_blank(head, &[], 8 << 20));
    }
}
