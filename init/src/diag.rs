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
        // Clamp into the text and back to a character boundary: a byte offset from a
        // parser may point inside a multi-byte character, which must not panic.
        let mut offset = offset.min(source.len());
        while !source.is_char_boundary(offset) {
            offset -= 1;
        }
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

/// Renders `error` with the line of source it points at and a marker under `len` characters
/// from its column, e.g. for `--verbose` output. `line_text` is the text of that line only;
/// callers pass `None` when the line holds a secret that must not be printed again.
pub fn render_snippet(error: &SourceError, line_text: Option<&str>, len: usize) -> String {
    use annotate_snippets::{AnnotationKind, Level, Renderer, Snippet};

    let title = Level::ERROR.primary_title(error.message.as_str());
    let path = error.location.file.display().to_string();
    let report = match line_text {
        Some(line) => {
            // Annotations take byte ranges into the snippet; the location counts characters.
            let start = char_to_byte(line, error.location.column.saturating_sub(1));
            let end = char_to_byte(line, error.location.column.saturating_sub(1) + len.max(1));
            let end = end.max(start);
            [title.element(
                Snippet::source(line)
                    .line_start(error.location.line)
                    .path(path.as_str())
                    .annotation(AnnotationKind::Primary.span(start..end)),
            )]
        }
        None => [title.element(
            annotate_snippets::Origin::path(path.as_str())
                .line(error.location.line)
                .char_column(error.location.column), // shown as given: 1-based
        )],
    };
    Renderer::plain().render(&report).to_string()
}

/// Byte index of the `n`th character of `s` (or its end).
fn char_to_byte(s: &str, n: usize) -> usize {
    s.char_indices().nth(n).map_or(s.len(), |(i, _)| i)
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

    #[test]
    fn offsets_inside_a_multibyte_character_do_not_panic() {
        let src = "a = \"é\"";
        let inside = src.find('é').unwrap() + 1;
        assert_eq!(Location::from_offset(Path::new("f"), src, inside).column, 6);
        assert_eq!(Location::from_offset(Path::new("f"), src, 999).column, 8);
    }

    #[test]
    fn snippet_shows_the_line_and_marks_the_column() {
        let err = SourceError::new(Location::new("p.toml", 3, 5), "bad value");
        let out = render_snippet(&err, Some("a = é12"), 3);
        assert!(out.contains("error: bad value"), "{out}");
        assert!(out.contains("p.toml:3:5"), "{out}");
        assert!(out.contains("3 | a = é12"), "{out}");
        assert!(out.contains("^^^"), "{out}");
    }

    #[test]
    fn snippet_without_source_names_only_the_place() {
        let err = SourceError::new(Location::new("p.toml", 7, 2), "secret here");
        let out = render_snippet(&err, None, 3);
        assert!(out.contains("error: secret here"), "{out}");
        assert!(out.contains("p.toml:7:2"), "{out}");
        assert!(!out.contains(" | "), "{out}");
    }
}
