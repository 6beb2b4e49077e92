//! One file's text: byte spans from the TOML parser turned into locations and problems, and
//! the parser's tables walked in document order.

use std::ops::Range;
use std::path::Path;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::error::{excerpt, Problem};
#[cfg(test)]
use super::tests;
use crate::diag::{Location, SourceError};

/// One file's text, to turn byte spans into locations and problems.
pub(super) struct Doc<'a> {
    pub(super) file: &'a Path,
    pub(super) text: &'a str,
    lines: LineIndex,
}

impl<'a> Doc<'a> {
    pub(super) fn new(file: &'a Path, text: &'a str) -> Self {
        Self {
            file,
            text,
            lines: LineIndex::new(text),
        }
    }

    pub(super) fn loc(&self, span: &Range<usize>) -> Location {
        let offset = floor_char_boundary(self.text, span.start);
        let line = self.lines.line_of(offset);
        let column = self
            .lines
            .chars_between(self.text, self.lines.starts[line], offset)
            + 1;
        Location::new(self.file, line + 1, column)
    }

    pub(super) fn problem(&self, span: Range<usize>, message: impl Into<String>) -> Problem {
        let location = self.loc(&span);
        let start = floor_char_boundary(self.text, span.start);
        let line = self.line_text(location.line);
        let line_end = self.lines.starts[location.line - 1] + line.len();
        let end = floor_char_boundary(self.text, span.end.clamp(start, line_end));
        let len = self.lines.chars_between(self.text, start, end).max(1);
        Problem::Source {
            error: SourceError::new(location, message),
            excerpt: excerpt(line, len),
        }
    }

    /// The text of 1-based `line`, without its line break ("" past the end).
    pub(super) fn line_text(&self, line: usize) -> &'a str {
        let Some(&start) = self.lines.starts.get(line.wrapping_sub(1)) else {
            return "";
        };
        let end = self
            .lines
            .starts
            .get(line)
            .map_or(self.text.len(), |next| next - 1);
        self.text[start..end].trim_end_matches('\r')
    }

    pub(super) fn dir(&self) -> &Path {
        self.file.parent().unwrap_or(Path::new(""))
    }
}

/// Bytes per block of [`LineIndex::chars_before_block`]: a column lookup counts at most this
/// many bytes beyond the index.
const BLOCK: usize = 256;

/// Where lines start and how many characters precede each block of bytes, built in one pass
/// over the text. Turning an offset into line and column then costs a binary search and at
/// most two partial blocks, instead of a scan from the start of the text for every key (which
/// made loading a large set quadratic in its size).
struct LineIndex {
    /// Byte offset of the start of each line; the first is 0.
    starts: Vec<usize>,
    /// Characters in `text[..k * BLOCK]`, for every block k.
    chars_before_block: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let bytes = text.as_bytes();
        let starts = std::iter::once(0)
            .chain(newline_offsets(bytes).map(|i| i + 1))
            .collect();
        let mut chars_before_block = Vec::with_capacity(bytes.len() / BLOCK + 1);
        let mut chars = 0;
        chars_before_block.push(0);
        for block in bytes.chunks(BLOCK) {
            chars += count_chars(block);
            chars_before_block.push(chars);
        }
        Self {
            starts,
            chars_before_block,
        }
    }

    /// 0-based line holding byte `offset`.
    fn line_of(&self, offset: usize) -> usize {
        self.starts.partition_point(|&start| start <= offset) - 1
    }

    /// Characters in `text[from..to]` (both on character boundaries, `from <= to`).
    fn chars_between(&self, text: &str, from: usize, to: usize) -> usize {
        self.chars_before(text, to) - self.chars_before(text, from)
    }

    /// Characters in `text[..offset]`.
    fn chars_before(&self, text: &str, offset: usize) -> usize {
        let block = offset / BLOCK;
        let rest = &text.as_bytes()[block * BLOCK..offset];
        #[cfg(test)]
        tests::note_scanned(rest.len());
        self.chars_before_block[block] + count_chars(rest)
    }
}

/// Offsets of the `\n` bytes of `bytes`.
fn newline_offsets(bytes: &[u8]) -> impl Iterator<Item = usize> + '_ {
    bytes
        .iter()
        .enumerate()
        .filter_map(|(i, b)| (*b == b'\n').then_some(i))
}

/// Characters in UTF-8 `bytes`: every byte that does not continue a character starts one.
fn count_chars(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b & 0xC0 != 0x80).count()
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
fn first_offset(key: &Spanned<std::borrow::Cow<'_, str>>, value: &Spanned<DeValue<'_>>) -> usize {
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
    entries.sort_by_cached_key(|(k, v)| first_offset(k, v));
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
