//! The installer's decision, from facts about the target disk (pure): may it be written,
//! and what must be undone first.

use std::path::PathBuf;

use crate::blockdev::probe::{describe, Signature};

/// One partition the kernel sees on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionFacts {
    pub device: PathBuf,
    pub found: Vec<Signature>,
}

/// What was found on the target disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskFacts {
    pub device: PathBuf,
    pub bytes: u64,
    /// True when the target is itself a partition (`/dev/vda3`): never written.
    pub is_partition: bool,
    pub read_only: bool,
    /// Signatures on the whole disk (partition table, filesystem without a table...).
    pub found: Vec<Signature>,
    pub partitions: Vec<PartitionFacts>,
    /// Mount points of the disk or its partitions.
    pub mounted: Vec<PathBuf>,
}

/// What the installer will do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Write the image; unmount these first (only with wipe).
    Write {
        unmount: Vec<PathBuf>,
    },
    Refuse(String),
}

/// Smallest disk worth installing to: the image needs its ESP, root and a data partition.
pub const MIN_DISK_BYTES: u64 = 256 << 20;

/// Lists what is on the disk, for a message: "a GPT partition table; vda1: a FAT ...".
pub fn inventory(f: &DiskFacts) -> String {
    let mut parts = Vec::new();
    if !f.found.is_empty() {
        parts.push(describe(&f.found));
    }
    for p in &f.partitions {
        let name = p
            .device
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if p.found.is_empty() {
            parts.push(format!("partition {name} (blank)"));
        } else {
            parts.push(format!("partition {name}: {}", describe(&p.found)));
        }
    }
    parts.join("; ")
}

/// Decides. `image_bytes` is the image's size when known before writing (a raw image
/// served with its length); a compressed one is bounded while it is written instead.
pub fn decide(f: &DiskFacts, wipe: bool, image_bytes: Option<u64>) -> Decision {
    let dev = f.device.display();
    if f.is_partition {
        return Decision::Refuse(format!(
            "{dev} is a partition; name the whole disk (e.g. /dev/vda, not /dev/vda1)"
        ));
    }
    if f.read_only {
        return Decision::Refuse(format!("{dev} is read-only"));
    }
    if f.bytes < MIN_DISK_BYTES {
        return Decision::Refuse(format!(
            "{dev} holds {} MiB; at least {} MiB are needed",
            f.bytes >> 20,
            MIN_DISK_BYTES >> 20
        ));
    }
    if let Some(img) = image_bytes.filter(|b| *b > f.bytes) {
        return Decision::Refuse(format!(
            "the image is {} MiB, larger than {dev} ({} MiB)",
            img >> 20,
            f.bytes >> 20
        ));
    }
    let occupied = !f.found.is_empty() || !f.partitions.is_empty() || !f.mounted.is_empty();
    if occupied && !wipe {
        let mut why = format!("{dev} is not empty: {}", inventory(f));
        if !f.mounted.is_empty() {
            let m: Vec<String> = f.mounted.iter().map(|p| p.display().to_string()).collect();
            why.push_str(&format!("; mounted at {}", m.join(", ")));
        }
        why.push_str(". Nothing was written. To overwrite it, boot with nomados.install.wipe=1");
        return Decision::Refuse(why);
    }
    Decision::Write {
        unmount: f.mounted.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blank() -> DiskFacts {
        DiskFacts {
            device: "/dev/vda".into(),
            bytes: 2 << 30,
            is_partition: false,
            read_only: false,
            found: vec![],
            partitions: vec![],
            mounted: vec![],
        }
    }

    fn used() -> DiskFacts {
        DiskFacts {
            found: vec![Signature::Gpt],
            partitions: vec![
                PartitionFacts {
                    device: "/dev/vda1".into(),
                    found: vec![Signature::Vfat],
                },
                PartitionFacts {
                    device: "/dev/vda2".into(),
                    found: vec![],
                },
                PartitionFacts {
                    device: "/dev/vda3".into(),
                    found: vec![Signature::Ext {
                        label: Some("NOMADOS-DATA".into()),
                    }],
                },
            ],
            mounted: vec!["/var/lib/nomad".into()],
            ..blank()
        }
    }

    #[test]
    fn a_blank_disk_is_written() {
        assert_eq!(
            decide(&blank(), false, Some(300 << 20)),
            Decision::Write { unmount: vec![] }
        );
    }

    #[test]
    fn a_used_disk_is_refused_naming_what_is_on_it() {
        let Decision::Refuse(why) = decide(&used(), false, None) else {
            panic!()
        };
        assert_eq!(
            why,
            "/dev/vda is not empty: a GPT partition table; partition vda1: a FAT filesystem; \
             partition vda2 (blank); partition vda3: an ext2/3/4 filesystem labelled NOMADOS-DATA; \
             mounted at /var/lib/nomad. Nothing was written. To overwrite it, boot with \
             nomados.install.wipe=1"
        );
        let unknown = DiskFacts {
            found: vec![Signature::UnknownData],
            ..blank()
        };
        assert!(
            matches!(decide(&unknown, false, None), Decision::Refuse(w) if w.contains("unknown"))
        );
    }

    #[test]
    fn wipe_writes_a_used_disk_after_unmounting() {
        assert_eq!(
            decide(&used(), true, None),
            Decision::Write {
                unmount: vec!["/var/lib/nomad".into()]
            }
        );
    }

    #[test]
    fn wipe_never_overrides_the_hard_refusals() {
        let part = DiskFacts {
            is_partition: true,
            device: "/dev/vda1".into(),
            ..blank()
        };
        assert!(
            matches!(decide(&part, true, None), Decision::Refuse(w) if w.contains("is a partition"))
        );
        let ro = DiskFacts {
            read_only: true,
            ..blank()
        };
        assert!(matches!(decide(&ro, true, None), Decision::Refuse(w) if w.contains("read-only")));
        let small = DiskFacts {
            bytes: 100 << 20,
            ..blank()
        };
        assert!(
            matches!(decide(&small, true, None), Decision::Refuse(w) if w.contains("at least 256 MiB"))
        );
        assert!(matches!(
            decide(&blank(), true, Some(3 << 30)),
            Decision::Refuse(w) if w.contains("larger than /dev/vda")
        ));
    }
}
