//! What a block device holds, read without mounting it (pure readers over its bytes):
//! shared by the first boot's blank-partition check and the installer, which both must
//! never write over something that is there.

pub mod gpt_read;
pub mod probe;
