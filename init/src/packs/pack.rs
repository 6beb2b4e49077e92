//! (placeholder until pack loading lands)
use std::path::{Path, PathBuf};

pub struct Pack {
    pub name: String,
    pub dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PackError(String);

pub fn load(name: &str, dir: &Path) -> Result<Pack, PackError> {
    Ok(Pack {
        name: name.into(),
        dir: dir.into(),
    })
}
