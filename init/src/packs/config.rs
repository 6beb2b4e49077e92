//! (placeholder until the config loader lands)
use std::path::Path;

use super::model::PackSet;

#[derive(Debug, thiserror::Error)]
#[error("config loader not merged yet: {0}")]
pub struct ConfigError(String);

pub fn load(path: &Path) -> Result<PackSet, ConfigError> {
    Err(ConfigError(path.display().to_string()))
}
