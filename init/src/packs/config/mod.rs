//! Reads the pack-set TOML (one file, or a directory of `*.toml` files merged in lexical order)
//! into a checked [`PackSet`]. The format is described in `docs/pack-set.md`.
//!
//! Three steps, all pure except for reading the files: each file is parsed into a [`Layer`]
//! (types checked, values located), the layers are merged key by key (last one wins), and the
//! merged layer is validated into the model. Every problem found on the way is collected, so a
//! single run reports all of them, sorted by location.
//!
//! Layout: [`error`] holds what a run reports, [`source`] turns byte spans of one file into
//! places, [`parse`] reads one file into a [`layer::Layer`] with the value checks of
//! [`fields`], [`layer`] merges layers, and [`finish`] validates the merge into the model.

mod error;
mod fields;
mod finish;
mod layer;
mod parse;
mod source;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use crate::packs::model::PackSet;

pub use error::{ConfigError, Excerpt, Problem};
use finish::finish;
use layer::Layer;
use parse::parse_layer;
use source::Doc;

/// Bytes one pack-set file may hold: far above any real set (a 10 MB set loads in well
/// under a second). Bytes alone do not bound the parse's memory: see [`MAX_SET_TOKENS`].
pub const MAX_SET_FILE_BYTES: u64 = 10 * 1024 * 1024;
/// TOML tokens (keys, values, punctuation, whitespace runs, line breaks, comments) all files
/// of a set may hold together. What loading holds at its peak grows with the tokens, not the
/// bytes: the `toml` crate keeps every token and parser event, then a value per key and array
/// element (a map per inline table), then the JSON of the variables: 100 to 330 bytes per
/// token, the most for nested inline tables (`x = [{a={b=1}}, ...]`). `[1,1,1,...]` is 2 tokens
/// per 2 bytes, so 10 MiB of it took 800 MB. Counted first (a lexer pass that allocates
/// nothing), this keeps loading under the applier's target of 128 MiB above its baseline for
/// any shape (`init/benches/hostile_bench.py`). A real pack set holds a few thousand.
pub const MAX_SET_TOKENS: usize = 300_000;
/// Bytes all files of a pack-set directory may hold together: the same bound, as the files
/// parsed first are still held (merged) while the last one is parsed.
pub const MAX_SET_BYTES: u64 = MAX_SET_FILE_BYTES;
/// `*.toml` files a pack-set directory may hold.
pub const MAX_SET_FILES: usize = 1000;
/// Entries of any kind looked at in a pack-set directory before giving up: listing a
/// directory of millions of other files must not take the applier's time.
const MAX_SET_DIR_ENTRIES: usize = 100_000;

/// Reads the pack set at `path`: one TOML file, or a directory whose `*.toml` files (regular
/// files, not hidden, not recursive) are merged in lexical order of their names.
pub fn load(path: &Path) -> Result<PackSet, ConfigError> {
    let (files, mut problems) = list_files(path);
    if files.is_empty() && problems.is_empty() {
        problems.push(Problem::EmptyDir {
            dir: path.to_path_buf(),
        });
    }
    let mut sources = Vec::new();
    let mut total: u64 = 0;
    for file in files {
        match crate::fsutil::read_bounded_to_string(&file, MAX_SET_FILE_BYTES) {
            Ok(text) => {
                total = total.saturating_add(text.len() as u64);
                if total > MAX_SET_BYTES {
                    let error = std::io::Error::other(format!(
                        "the pack-set files add up to more than the limit of {MAX_SET_BYTES} bytes"
                    ));
                    problems.push(Problem::Io { path: file, error });
                    return Err(ConfigError::new(problems));
                }
                sources.push((file, text));
            }
            Err(error) => problems.push(Problem::Io { path: file, error }),
        }
    }
    if sources.is_empty() {
        return Err(ConfigError::new(problems));
    }
    let read_all = problems.is_empty();
    let docs: Vec<(&Path, &str)> = sources
        .iter()
        .map(|(f, t)| (f.as_path(), t.as_str()))
        .collect();
    build(&docs, read_all, problems)
}

/// Parses one pack-set file from `text`; relative paths resolve against `file`'s directory.
pub fn parse_str(file: &Path, text: &str) -> Result<PackSet, ConfigError> {
    build(&[(file, text)], true, Vec::new())
}

/// The files making up the pack set at `path`, in merge order, and the entries that could
/// not be looked at.
fn list_files(path: &Path) -> (Vec<PathBuf>, Vec<Problem>) {
    use std::os::unix::ffi::OsStrExt;

    let io_err = |error| Problem::Io {
        path: path.to_path_buf(),
        error,
    };
    let entries = match std::fs::metadata(path) {
        Ok(meta) if !meta.is_dir() => return (vec![path.to_path_buf()], Vec::new()),
        Ok(_) => std::fs::read_dir(path),
        Err(error) => return (Vec::new(), vec![io_err(error)]),
    };
    let entries = match entries {
        Ok(entries) => entries,
        Err(error) => return (Vec::new(), vec![io_err(error)]),
    };
    let mut files = Vec::new();
    let mut problems = Vec::new();
    let too_many = |what: String| (Vec::new(), vec![io_err(std::io::Error::other(what))]);
    for (seen, entry) in entries.enumerate() {
        if seen == MAX_SET_DIR_ENTRIES {
            return too_many(format!(
                "the directory has more than {MAX_SET_DIR_ENTRIES} entries; a pack-set directory holds a few *.toml files"
            ));
        }
        let entry = match entry {
            Ok(entry) => entry,
            Err(error) => {
                problems.push(io_err(error));
                continue;
            }
        };
        let name = entry.file_name();
        let name = name.as_bytes();
        // What the shell glob `*.toml` matches: hidden files (editor leftovers) do not count.
        if name.starts_with(b".") || !name.ends_with(b".toml") {
            continue;
        }
        let file = entry.path();
        // Follows symlinks: a link to a file counts, a dangling one is reported.
        match std::fs::metadata(&file) {
            Ok(m) if m.is_file() => {
                if files.len() == MAX_SET_FILES {
                    return too_many(format!(
                        "the directory has more than {MAX_SET_FILES} *.toml files"
                    ));
                }
                files.push(file);
            }
            Ok(_) => {}
            Err(error) => problems.push(Problem::Io { path: file, error }),
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    (files, problems)
}

/// Parses, merges and validates `docs` (in merge order). `complete` is false when some file
/// could not be read: then checks that need every file (a missing `_origin`) are skipped.
fn build(
    docs: &[(&Path, &str)],
    mut complete: bool,
    mut problems: Vec<Problem>,
) -> Result<PackSet, ConfigError> {
    let docs: Vec<Doc<'_>> = docs
        .iter()
        .map(|(file, text)| Doc::new(file, text))
        .collect();
    if let Some(problem) = over_token_limit(&docs, MAX_SET_TOKENS) {
        problems.push(problem);
        return Err(ConfigError::new(problems));
    }
    let mut merged = Layer::default();
    for doc in &docs {
        match parse_layer(doc, &mut problems) {
            Some(layer) => merged.merge(layer),
            // A file with syntax errors is left out; what it would have set is unknown.
            None => complete = false,
        }
    }
    let set = finish(merged, complete, &docs, &mut problems);
    if problems.is_empty() {
        Ok(set)
    } else {
        Err(ConfigError::new(problems))
    }
}

/// The problem, placed at the first token past `limit`, when `docs` hold more than `limit`
/// TOML tokens together; counted before anything is parsed, without allocating.
fn over_token_limit(docs: &[Doc<'_>], limit: usize) -> Option<Problem> {
    let mut left = limit;
    for doc in docs {
        for token in toml_parser::Source::new(doc.text).lex() {
            if left == 0 {
                let span = token.span();
                return Some(doc.problem(
                    span.start()..span.end(),
                    format!(
                        "the pack set holds more than {limit} TOML tokens (keys, values, punctuation, line breaks) by here; \
                         a pack set declares packs and their variables: bulk data belongs in a pack's files"
                    ),
                ));
            }
            left -= 1;
        }
    }
    None
}
