//! What a failed load reports: every problem of every file, sorted by place, as one-line
//! `file:line:column: message` text or with the offending line shown.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::diag::{self, SourceError};

/// Everything wrong with a pack set: all problems of all files, sorted by location.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    problems: Vec<Problem>,
}

/// One problem of a pack set.
#[derive(Debug)]
pub enum Problem {
    /// A mistake at a place in a file.
    Source {
        error: SourceError,
        /// The offending line and how many characters to mark, for [`ConfigError::render`].
        /// None when the line may hold a secret (credentials in a URL).
        excerpt: Option<Excerpt>,
    },
    /// A file or directory could not be read.
    Io { path: PathBuf, error: io::Error },
    /// A directory was given that holds no `*.toml` file.
    EmptyDir { dir: PathBuf },
    /// The files declare no pack and do not say `_empty = true`.
    EmptySet { files: Vec<PathBuf> },
}

/// The text of the line a [`Problem::Source`] points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excerpt {
    pub line: String,
    /// Characters to mark from the error's column.
    pub len: usize,
}

impl Problem {
    /// The place the problem is at, for sorting: file, line, column (0, 0 for whole files).
    fn sort_key(&self) -> (&Path, usize, usize) {
        match self {
            Problem::Source { error, .. } => (
                &error.location.file,
                error.location.line,
                error.location.column,
            ),
            Problem::Io { path, .. } => (path, 0, 0),
            Problem::EmptyDir { dir } => (dir, 0, 0),
            Problem::EmptySet { files } => (files.first().map_or(Path::new(""), |f| f), 0, 0),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Source { error, .. } => write!(f, "{error}"),
            Problem::Io { path, error } => write!(f, "{}: {error}", path.display()),
            Problem::EmptyDir { dir } => write!(f, "no *.toml files in {}", dir.display()),
            Problem::EmptySet { files } => {
                let files: Vec<_> = files.iter().map(|f| f.display().to_string()).collect();
                write!(
                    f,
                    "{}: the pack set declares no packs; applying it would stop every job it \
                     manages. If that is meant, set `_empty = true` at the top level",
                    files.join(", ")
                )
            }
        }
    }
}

impl ConfigError {
    pub(super) fn new(mut problems: Vec<Problem>) -> Self {
        problems.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
        Self { problems }
    }

    /// All problems, sorted by file, line and column.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// The problems that point at a place in a file.
    pub fn source_errors(&self) -> impl Iterator<Item = &SourceError> {
        self.problems.iter().filter_map(|p| match p {
            Problem::Source { error, .. } => Some(error),
            _ => None,
        })
    }

    /// A header counting the problems, then every problem as its one-line
    /// `file:line:column: message` followed by the source line it points at with the place
    /// marked (plain text, no colours).
    pub fn render(&self) -> String {
        let n = self.problems.len();
        let mut out = format!(
            "error: the pack set has {n} problem{}\n",
            if n == 1 { "" } else { "s" }
        );
        for p in &self.problems {
            out.push_str(&format!("{p}\n"));
            if let Problem::Source {
                error,
                excerpt: Some(excerpt),
            } = p
            {
                let snippet = diag::render_snippet(error, Some(&excerpt.line), excerpt.len);
                // The snippet's title repeats the message the one-line form just gave.
                let body = snippet
                    .split_once('\n')
                    .filter(|(title, _)| title.starts_with("error: "))
                    .map_or(snippet.as_str(), |(_, body)| body);
                out.push_str(body);
                out.push('\n');
            }
        }
        out
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Longest line shown in a snippet: every problem keeps a copy of its line, and a hostile
/// file may put megabytes and thousands of mistakes on one line.
const MAX_EXCERPT_BYTES: usize = 1024;

/// The excerpt of `line` for snippets, unless it holds a URL with credentials
/// (`https://user:secret@host`): a secret written by mistake is never printed again. Lines
/// longer than [`MAX_EXCERPT_BYTES`] are not shown either; the place still is.
pub(super) fn excerpt(line: &str, len: usize) -> Option<Excerpt> {
    if line.len() > MAX_EXCERPT_BYTES {
        return None;
    }
    let has_credentials = line.match_indices("://").any(|(i, _)| {
        line[i + 3..]
            .split(['/', '?', '#', '"', '\'', ' ', '\t'])
            .next()
            .is_some_and(|authority| authority.contains('@'))
    });
    (!has_credentials).then(|| Excerpt {
        line: line.to_string(),
        len,
    })
}

/// "known keys: ..." for unknown-key messages, led by the likely intended key if any.
pub(super) fn known_keys(unknown: &str, keys: &[&str]) -> String {
    let list = keys
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    match keys
        .iter()
        .map(|k| (edit_distance(unknown, k), k))
        .filter(|(d, _)| *d <= 2)
        .min()
    {
        Some((_, k)) => format!("did you mean `{k}`? known keys: {list}"),
        None => format!("known keys: {list}"),
    }
}

/// Levenshtein distance, for typo suggestions on short keys.
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}
