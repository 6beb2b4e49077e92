//! One file's text: byte spans from the TOML parser turned into locations and problems, and
//! the parser's tables walked in document order.

use std::ops::Range;
use std::path::Path;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::error::{excerpt, Problem};
use crate::diag::{Location, SourceError};

/// One file's text, to turn byte spans into locations and problems.
pub(super) struct Doc<'a> {
    pub(super) file: &'a Path,
    pub(super) text: &'a str,
}

impl Doc<'_> {
    pub(super) fn loc(&self, span: &Range<usize>) -> Location {
        Location::from_offset(
            self.file,
            self.text,
            floor_char_boundary(self.text, span.start),
        )
    }

    pub(super) fn problem(&self, span: Range<usize>, message: impl Into<String>) -> Problem {
        let location = self.loc(&span);
        let start = floor_char_boundary(self.text, span.start);
        let line_start = self.text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[start..]
            .find('\n')
            .map_or(self.text.len(), |i| start + i);
        let end = floor_char_boundary(self.text, span.end.clamp(start, line_end));
        let line = self.text[line_start..line_end].trim_end_matches('\r');
        let len = self.text[start..end].chars().count().max(1);
        Problem::Source {
            error: SourceError::new(location, message),
            excerpt: excerpt(line, len),
        }
    }

    pub(super) fn dir(&self) -> &Path {
        self.file.parent().unwrap_or(Path::new(""))
    }
}

/// `offset` moved back to the start of the character it falls in (spans of broken input may
/// point inside one), so slicing never panics.
fn floor_char_boundary(text: &str, offset: usize) -> usize {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

type Entry<'a, 'i> = (
    &'a Spanned<std::borrow::Cow<'i, str>>,
    &'a Spanned<DeValue<'i>>,
);

/// Offset where an entry first shows up in the text: its key, or for a table declared through
/// its children (`[redis.x]` before `[redis]`) the earliest of those.
fn first_offset(
    key: &Spanned<std::borrow::Cow<'_, str>>,
    value: &Spanned<DeValue<'_>>,
) -> usize {
    let mut first = key.span().start.min(value.span().start);
    if let DeValue::Table(t) = value.get_ref() {
        for (k, v) in t.iter() {
            first = first.min(first_offset(k, v));
        }
    }
    first
}

/// The entries of `table` in document order (the parser keeps them sorted by key).
pub(super) fn in_document_order<'a, 'i>(table: &'a DeTable<'i>) -> Vec<Entry<'a, 'i>> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(k, v)| first_offset(k, v));
    entries
}

/// Where an entry starts: the `[` of its header, or its key.
pub(super) fn entry_span(
    key: &Spanned<std::borrow::Cow<'_, str>>,
    value: &Spanned<DeValue<'_>>,
) -> Range<usize> {
    let start = first_offset(key, value);
    start..start.max(key.span().end)
}
