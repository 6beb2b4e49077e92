//! Diagnostics that point at a place in a file: every config error names file, line and column.

use std::fmt;
use std::path::{Path, PathBuf};

/// A position in a source file, 1-based line and column (columns count characters).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl Location {
    pub fn new(file: impl Into<PathBuf>, line: usize, column: usize) -> Self {
        Self {
            file: file.into(),
            line,
            column,
        }
    }

    /// Location of byte `offset` in `source` (the text of `file`).
    pub fn from_offset(file: &Path, source: &str, offset: usize) -> Self {
        let offset = offset.min(source.len());
        let before = &source[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = source[line_start..offset].chars().count() + 1;
        Self::new(file, line, column)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// An error in an input file, rendered as `file:line:column: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct SourceError {
    pub location: Location,
    pub message: String,
}

impl SourceError {
    pub fn new(location: Location, message: impl Into<String>) -> Self {
        Self {
            location,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_one_based_line_and_column() {
        let src = "a = 1\nbé = 2\n";
        let at = src.find('=').unwrap();
        assert_eq!(
            Location::from_offset(Path::new("f.toml"), src, at).to_string(),
            "f.toml:1:3"
        );
        let at = src.rfind('=').unwrap();
        assert_eq!(
            Location::from_offset(Path::new("f.toml"), src, at).to_string(),
            "f.toml:2:4"
        );
    }
}
