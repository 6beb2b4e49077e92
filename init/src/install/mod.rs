//! Installing NomadOS to a disk. What a device holds is read by [`crate::blockdev`],
//! which the first boot's blank-partition check shares.
//!
//! Pure core: [`options`] (the kernel command line), [`plan`] (may the disk be written),
//! [`iso9660`] (finding the image on the ISO).
//! Effects: [`disk`] (facts about the target), [`write`] (stream, verify, data partition).

pub mod disk;
pub mod iso9660;
pub mod options;
pub mod plan;
pub mod run;
pub mod source;
pub mod write;
