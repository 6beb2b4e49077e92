//! Installing NomadOS to a disk, and the pieces first boot shares with it.
//!
//! Pure core: [`options`] (the kernel command line), [`probe`] (what a device holds),
//! [`plan`] (may the disk be written), [`iso9660`] (finding the image on the ISO).
//! Effects: [`disk`] (facts about the target), [`write`] (stream, verify, data partition).

pub mod disk;
pub mod gpt_read;
pub mod iso9660;
pub mod options;
pub mod plan;
pub mod probe;
pub mod run;
pub mod source;
pub mod write;
