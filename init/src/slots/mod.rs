//! Two system slots (A and B) and the one-shot trial boot (issue 11; docs/image.md, "Two
//! slots and the one-shot trial boot").
//!
//! Pure core: [`record`] (PID 1's record and what a boot means for it), [`adv`] (syslinux's
//! ADV), [`grubenv`] (GRUB's environment block), [`loader`] (edits of the loaders' files).
//! [`gate`] (the trial's health gate), [`allocs`] (the pack set's jobs on this node, for the gate), [`meta`] (what Nomad is told about the slot). Effects: [`esp`] (the files on a mounted ESP),
//! [`trial`] (what PID 1 does at boot and on a trial), [`facts`] (what the gate asks Nomad), [`upgrade`], [`wanted`] (the upgrade
//! the machine's configuration asks for), [`find_partition`].

pub mod adv;
pub mod allocs;
pub mod esp;
pub mod facts;
pub mod gate;
pub mod grubenv;
pub mod loader;
pub mod meta;
pub mod payload;
pub mod record;
pub mod trial;
pub mod upgrade;
pub mod wanted;

use std::path::{Path, PathBuf};

pub use esp::Esp;
pub use record::{booted_slot, classify, Boot, Record, Slot};

/// GPT name of the ESP partition.
pub const ESP_PARTITION: &str = "NOMADOS-ESP";

/// The `PARTNAME=` of a sysfs `uevent` file.
pub fn partname(uevent: &str) -> Option<&str> {
    uevent.lines().find_map(|l| l.strip_prefix("PARTNAME="))
}

/// The device (under `dev`) of the partition whose GPT name is `name`, from
/// `/sys/class/block/*/uevent` (the kernel reports GPT names there, no udev needed).
pub fn find_partition(dev: &Path, sys_class_block: &Path, name: &str) -> Option<PathBuf> {
    let mut found: Vec<String> = std::fs::read_dir(sys_class_block)
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let uevent =
                crate::fsutil::read_bounded_to_string(&e.path().join("uevent"), 4096).ok()?;
            (partname(&uevent) == Some(name)).then(|| e.file_name().into_string().ok())?
        })
        .collect();
    found.sort();
    found.first().map(|n| dev.join(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_found_by_gpt_name_in_sysfs() {
        let d = tempfile::tempdir().unwrap();
        let sys = d.path().join("class/block");
        for (dev, uevent) in [
            ("vda", "MAJOR=254\nDEVNAME=vda\nDEVTYPE=disk\n"),
            (
                "vda1",
                "DEVNAME=vda1\nDEVTYPE=partition\nPARTN=1\nPARTNAME=NOMADOS-ESP\n",
            ),
            ("vda3", "DEVNAME=vda3\nPARTN=3\nPARTNAME=NOMADOS-ROOT-B\n"),
        ] {
            std::fs::create_dir_all(sys.join(dev)).unwrap();
            std::fs::write(sys.join(dev).join("uevent"), uevent).unwrap();
        }
        let dev = Path::new("/dev");
        assert_eq!(
            find_partition(dev, &sys, ESP_PARTITION),
            Some(PathBuf::from("/dev/vda1"))
        );
        assert_eq!(
            find_partition(dev, &sys, Slot::B.partition_name()),
            Some(PathBuf::from("/dev/vda3"))
        );
        assert_eq!(find_partition(dev, &sys, Slot::A.partition_name()), None);
    }
}
