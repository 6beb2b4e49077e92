//! Reads the pack-set TOML (one file, or a directory of `*.toml` files merged in lexical order)
//! into a checked [`PackSet`]. The format is described in `docs/pack-set.md`.
//!
//! Three steps, all pure except for reading the files: each file is parsed into a [`Layer`]
//! (types checked, values located), the layers are merged key by key (last one wins), and the
//! merged layer is validated into the model. Every problem found on the way is collected, so a
//! single run reports all of them, sorted by location.

use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde_json::Value;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::diag::{self, Location, SourceError};
use crate::packs::model::{
    Auth, AuthScheme, JobDecl, Origin, PackDecl, PackSet, SecretSource, DEFAULT_OWNER,
};

/// Keys that configure a pack (inside a pack table).
const PACK_KEYS: &[&str] = &["_origin", "_origin-name", "_name", "_sha256", "_auth"];
/// Keys that configure a job (inside a job table).
const JOB_KEYS: &[&str] = &["_allow-drivers"];
/// Keys of the top level that are not packs.
const TOP_KEYS: &[&str] = &["_name"];
/// Keys of an `_auth` table.
const AUTH_KEYS: &[&str] = &["type", "file", "env", "username"];
/// Archive suffixes an http(s) origin may end with.
const ARCHIVE_SUFFIXES: &[&str] = &[".tar.xz", ".txz", ".tar.gz", ".tgz", ".tar"];

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
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Source { error, .. } => write!(f, "{error}"),
            Problem::Io { path, error } => write!(f, "{}: {error}", path.display()),
            Problem::EmptyDir { dir } => write!(f, "no *.toml files in {}", dir.display()),
        }
    }
}

impl ConfigError {
    fn new(mut problems: Vec<Problem>) -> Self {
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

    /// Every problem with the source line it points at (plain text, no colours).
    pub fn render(&self) -> String {
        let mut out = String::new();
        for p in &self.problems {
            match p {
                Problem::Source { error, excerpt } => {
                    let (line, len) = excerpt
                        .as_ref()
                        .map_or((None, 1), |e| (Some(e.line.as_str()), e.len));
                    out.push_str(&diag::render_snippet(error, line, len));
                    out.push('\n');
                }
                other => {
                    out.push_str(&format!("error: {other}\n"));
                }
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
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => sources.push((file, text)),
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
    for entry in entries {
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
            Ok(m) if m.is_file() => files.push(file),
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
    let mut merged = Layer::default();
    for (file, text) in docs {
        let doc = Doc { file, text };
        match parse_layer(&doc, &mut problems) {
            Some(layer) => merged.merge(layer),
            // A file with syntax errors is left out; what it would have set is unknown.
            None => complete = false,
        }
    }
    let set = finish(merged, complete, docs, &mut problems);
    if problems.is_empty() {
        Ok(set)
    } else {
        Err(ConfigError::new(problems))
    }
}

// ---------------------------------------------------------------------------------------------
// Layers: what one file sets, and merging.

/// A value and where it was (last) set.
#[derive(Debug, Clone)]
struct At<T> {
    value: T,
    at: Location,
}

/// A setting of one file or of the merge so far.
#[derive(Debug, Clone, Default)]
enum Field<T> {
    #[default]
    Unset,
    /// Set, but to something wrong (already reported): later checks stay quiet about it.
    Bad,
    Set(At<T>),
}

impl<T> Field<T> {
    /// A later file's setting replaces this one whole.
    fn merge(&mut self, later: Field<T>) {
        if !matches!(later, Field::Unset) {
            *self = later;
        }
    }

    fn set(&self) -> Option<&At<T>> {
        match self {
            Field::Set(at) => Some(at),
            _ => None,
        }
    }
}

#[derive(Debug, Default)]
struct Layer {
    name: Field<String>,
    packs: Vec<PackLayer>,
}

#[derive(Debug)]
struct PackLayer {
    key: String,
    /// First declaration.
    location: Location,
    origin: Field<Origin>,
    origin_name: Field<String>,
    name: Field<String>,
    sha256: Field<String>,
    auth: Field<Auth>,
    jobs: Vec<JobLayer>,
}

#[derive(Debug)]
struct JobLayer {
    key: String,
    /// First declaration.
    location: Location,
    allow_drivers: Field<Vec<String>>,
    /// Template variables in order of first declaration.
    vars: Vec<(String, Field<Value>)>,
}

impl Layer {
    fn merge(&mut self, later: Layer) {
        self.name.merge(later.name);
        for pack in later.packs {
            match self.packs.iter_mut().find(|p| p.key == pack.key) {
                Some(existing) => existing.merge(pack),
                None => self.packs.push(pack),
            }
        }
    }
}

impl PackLayer {
    fn merge(&mut self, later: PackLayer) {
        self.origin.merge(later.origin);
        self.origin_name.merge(later.origin_name);
        self.name.merge(later.name);
        self.sha256.merge(later.sha256);
        self.auth.merge(later.auth);
        for job in later.jobs {
            match self.jobs.iter_mut().find(|j| j.key == job.key) {
                Some(existing) => existing.merge(job),
                None => self.jobs.push(job),
            }
        }
    }
}

impl JobLayer {
    fn merge(&mut self, later: JobLayer) {
        self.allow_drivers.merge(later.allow_drivers);
        for (key, value) in later.vars {
            match self.vars.iter_mut().find(|(k, _)| *k == key) {
                Some((_, existing)) => existing.merge(value),
                None => self.vars.push((key, value)),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing one file.

/// One file's text, to turn byte spans into locations and problems.
struct Doc<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Doc<'_> {
    fn loc(&self, span: &Range<usize>) -> Location {
        Location::from_offset(
            self.file,
            self.text,
            floor_char_boundary(self.text, span.start),
        )
    }

    fn problem(&self, span: Range<usize>, message: impl Into<String>) -> Problem {
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

    fn dir(&self) -> &Path {
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
fn in_document_order<'a, 'i>(table: &'a DeTable<'i>) -> Vec<Entry<'a, 'i>> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(k, v)| first_offset(k, v));
    entries
}

/// Where an entry starts: the `[` of its header, or its key.
fn entry_span(
    key: &Spanned<std::borrow::Cow<'_, str>>,
    value: &Spanned<DeValue<'_>>,
) -> Range<usize> {
    let start = first_offset(key, value);
    start..start.max(key.span().end)
}

/// "known keys: ..." for unknown-key messages, led by the likely intended key if any.
fn known_keys(unknown: &str, keys: &[&str]) -> String {
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
fn edit_distance(a: &str, b: &str) -> usize {
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

/// Names end up in Nomad job IDs and meta: keep them to a safe alphabet.
fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!(
            "{what} `{}` contains `{}`; use only letters, digits, `_`, `.` and `-`",
            name.escape_debug(),
            c.escape_debug()
        ));
    }
    Ok(())
}

/// Parses one file into a layer. Returns None (and reports why) on TOML syntax errors.
fn parse_layer(doc: &Doc<'_>, problems: &mut Vec<Problem>) -> Option<Layer> {
    let (root, errors) = DeTable::parse_recoverable(doc.text);
    if !errors.is_empty() {
        for e in errors {
            let span = e.span().unwrap_or(0..0);
            let mut message = e.message().trim_end().to_string();
            if message == "duplicate key" {
                // toml names no key; the span does.
                let key = doc
                    .text
                    .get(span.clone())
                    .unwrap_or_default()
                    .trim()
                    .escape_debug();
                message = format!("duplicate key `{key}` (a file may set each key once)");
            }
            problems.push(doc.problem(span, message));
        }
        return None;
    }
    let mut layer = Layer::default();
    for (key, value) in in_document_order(root.get_ref()) {
        let name = key.get_ref().as_ref();
        if name.starts_with('_') {
            if name == "_name" {
                layer.name = string_field(doc, value, "top-level `_name`", problems, |s| {
                    check_name("top-level `_name`", s).map(|()| s.to_string())
                });
            } else {
                problems.push(doc.problem(
                    key.span(),
                    format!(
                        "unknown top-level key `{name}`; {} (packs are tables, `[NAME]`)",
                        known_keys(name, TOP_KEYS)
                    ),
                ));
            }
            continue;
        }
        let DeValue::Table(table) = value.get_ref() else {
            problems.push(doc.problem(
                key.span(),
                format!(
                    "`{name}` must be a pack table (`[{name}]`), found {}",
                    value.get_ref().type_str()
                ),
            ));
            continue;
        };
        if let Err(msg) = check_name("pack name", name) {
            problems.push(doc.problem(key.span(), msg));
        }
        layer.packs.push(parse_pack(
            doc,
            name,
            entry_span(key, value),
            table,
            problems,
        ));
    }
    Some(layer)
}

fn parse_pack(
    doc: &Doc<'_>,
    pack: &str,
    span: Range<usize>,
    table: &DeTable<'_>,
    problems: &mut Vec<Problem>,
) -> PackLayer {
    let mut out = PackLayer {
        key: pack.to_string(),
        location: doc.loc(&span),
        origin: Field::Unset,
        origin_name: Field::Unset,
        name: Field::Unset,
        sha256: Field::Unset,
        auth: Field::Unset,
        jobs: Vec::new(),
    };
    for (key, value) in in_document_order(table) {
        let name = key.get_ref().as_ref();
        let what = format!("`{name}` in pack `{pack}`");
        match name {
            "_origin" => out.origin = origin_field(doc, value, &what, problems),
            "_origin-name" => {
                out.origin_name = string_field(doc, value, &what, problems, |s| {
                    check_name(&what, s)?;
                    if s == "." || s == ".." {
                        return Err(format!("{what} must name a directory, not `{s}`"));
                    }
                    Ok(s.to_string())
                })
            }
            "_name" => {
                out.name = string_field(doc, value, &what, problems, |s| {
                    check_name(&what, s).map(|()| s.to_string())
                })
            }
            "_sha256" => {
                out.sha256 = string_field(doc, value, &what, problems, |s| {
                    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
                        Ok(s.to_ascii_lowercase())
                    } else {
                        Err(format!(
                            "{what} must be 64 hexadecimal digits (a SHA-256), found {} characters",
                            s.chars().count()
                        ))
                    }
                })
            }
            "_auth" => out.auth = auth_field(doc, value, &what, problems),
            _ if name.starts_with('_') => problems.push(doc.problem(
                key.span(),
                format!(
                    "unknown key `{name}` in pack `{pack}`; {}",
                    known_keys(name, PACK_KEYS)
                ),
            )),
            _ => {
                let DeValue::Table(job) = value.get_ref() else {
                    problems.push(doc.problem(
                        key.span(),
                        format!(
                            "`{name}` in pack `{pack}` must be a job table (`[{pack}.{name}]`), found {}",
                            value.get_ref().type_str()
                        ),
                    ));
                    continue;
                };
                if let Err(msg) = check_name("job name", name) {
                    problems.push(doc.problem(key.span(), msg));
                }
                out.jobs.push(parse_job(
                    doc,
                    pack,
                    name,
                    entry_span(key, value),
                    job,
                    problems,
                ));
            }
        }
    }
    out
}

fn parse_job(
    doc: &Doc<'_>,
    pack: &str,
    job: &str,
    span: Range<usize>,
    table: &DeTable<'_>,
    problems: &mut Vec<Problem>,
) -> JobLayer {
    let mut out = JobLayer {
        key: job.to_string(),
        location: doc.loc(&span),
        allow_drivers: Field::Unset,
        vars: Vec::new(),
    };
    for (key, value) in in_document_order(table) {
        let name = key.get_ref().as_ref();
        if name == "_allow-drivers" {
            out.allow_drivers = drivers_field(doc, value, pack, job, problems);
        } else if name.starts_with('_') {
            problems.push(doc.problem(
                key.span(),
                format!(
                    "unknown key `{name}` in job `{pack}.{job}`; {} (template variables must not start with `_`)",
                    known_keys(name, JOB_KEYS)
                ),
            ));
        } else {
            let field = match to_json(doc, value, problems) {
                Some(v) => Field::Set(At {
                    value: v,
                    at: doc.loc(&value.span()),
                }),
                None => Field::Bad,
            };
            out.vars.push((name.to_string(), field));
        }
    }
    out
}

/// A string setting checked by `check`; type and check failures are reported at the value.
fn string_field<T>(
    doc: &Doc<'_>,
    value: &Spanned<DeValue<'_>>,
    what: &str,
    problems: &mut Vec<Problem>,
    check: impl FnOnce(&str) -> Result<T, String>,
) -> Field<T> {
    let Some(s) = value.get_ref().as_str() else {
        problems.push(doc.problem(
            value.span(),
            format!(
                "{what} must be a string, found {}",
                value.get_ref().type_str()
            ),
        ));
        return Field::Bad;
    };
    match check(s) {
        Ok(v) => Field::Set(At {
            value: v,
            at: doc.loc(&value.span()),
        }),
        Err(msg) => {
            problems.push(doc.problem(value.span(), msg));
            Field::Bad
        }
    }
}

fn origin_field(
    doc: &Doc<'_>,
    value: &Spanned<DeValue<'_>>,
    what: &str,
    problems: &mut Vec<Problem>,
) -> Field<Origin> {
    let Some(s) = value.get_ref().as_str() else {
        problems.push(doc.problem(
            value.span(),
            format!(
                "{what} must be a string, found {}",
                value.get_ref().type_str()
            ),
        ));
        return Field::Bad;
    };
    match parse_origin(s, doc.dir()) {
        Ok(origin) => Field::Set(At {
            value: origin,
            at: doc.loc(&value.span()),
        }),
        Err(msg) => {
            problems.push(doc.problem(value.span(), format!("{what}: {msg}")));
            Field::Bad
        }
    }
}

/// Classifies an `_origin` value. Error messages never repeat the value: it may hold secrets.
fn parse_origin(s: &str, dir: &Path) -> Result<Origin, String> {
    let Some(sep) = s.find("://") else {
        if s.is_empty() {
            return Err("must not be empty; give a directory or an http(s) URL".to_string());
        }
        let path = Path::new(s);
        return Ok(Origin::Local(if path.is_absolute() {
            path.to_path_buf()
        } else {
            dir.join(path)
        }));
    };
    let scheme = s[..sep].to_ascii_lowercase();
    match scheme.as_str() {
        "http" | "https" => {
            let rest = &s[sep + 3..];
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            if authority.contains('@') {
                return Err("credentials must not be written in the URL; use _auth".to_string());
            }
            let url = url::Url::parse(s).map_err(|e| format!("invalid URL: {e}"))?;
            if url.host_str().is_none_or(str::is_empty) {
                return Err("the URL has no host".to_string());
            }
            let path = url.path().to_ascii_lowercase();
            if !ARCHIVE_SUFFIXES.iter().any(|suffix| path.ends_with(suffix)) {
                return Err(format!(
                    "an http(s) origin must be an archive ending in {}",
                    ARCHIVE_SUFFIXES.join(", ")
                ));
            }
            Ok(Origin::Http(s.to_string()))
        }
        "file" => {
            let url = url::Url::parse(s).map_err(|e| format!("invalid URL: {e}"))?;
            url.to_file_path().map(Origin::Local).map_err(|()| {
                "a file:// URL must hold an absolute path (file:///srv/packs); \
                 write a relative path without file://"
                    .to_string()
            })
        }
        _ => Err(format!(
            "unsupported scheme `{}://`; use http://, https://, file:// or a path",
            &s[..sep]
        )),
    }
}

fn auth_field(
    doc: &Doc<'_>,
    value: &Spanned<DeValue<'_>>,
    what: &str,
    problems: &mut Vec<Problem>,
) -> Field<Auth> {
    let DeValue::Table(table) = value.get_ref() else {
        problems.push(doc.problem(
            value.span(),
            format!(
                "{what} must be a table like {{ type = \"bearer\", file = \"token\" }}, found {}",
                value.get_ref().type_str()
            ),
        ));
        return Field::Bad;
    };
    let before = problems.len();
    let mut scheme: Option<&str> = None;
    let mut file = None;
    let mut env = None;
    let mut username = None;
    let mut username_span = None;
    for (key, v) in in_document_order(table) {
        let k = key.get_ref().as_ref();
        if !AUTH_KEYS.contains(&k) {
            problems.push(doc.problem(
                key.span(),
                format!("unknown key `{k}` in {what}; {}", known_keys(k, AUTH_KEYS)),
            ));
            continue;
        }
        let Some(s) = v.get_ref().as_str() else {
            problems.push(doc.problem(
                v.span(),
                format!(
                    "`{k}` of {what} must be a string, found {}",
                    v.get_ref().type_str()
                ),
            ));
            continue;
        };
        if s.is_empty() {
            problems.push(doc.problem(v.span(), format!("`{k}` of {what} must not be empty")));
            continue;
        }
        match k {
            "type" => {
                if matches!(s, "bearer" | "basic") {
                    scheme = Some(if s == "bearer" { "bearer" } else { "basic" });
                } else {
                    problems.push(doc.problem(
                        v.span(),
                        format!("`type` of {what} must be \"bearer\" or \"basic\", found \"{s}\""),
                    ));
                }
            }
            "file" => file = Some(doc.dir().join(s)),
            "env" => env = Some(s.to_string()),
            _ => {
                username = Some(s.to_string());
                username_span = Some(v.span());
            }
        }
    }
    let whole = value.span();
    // Judge presence by key, so a mistyped `env = 7` is not also reported as missing.
    let has = |name: &str| table.iter().any(|(k, _)| k.get_ref() == name);
    let secret = match (file, env) {
        _ if has("file") && has("env") => {
            problems.push(doc.problem(
                whole.clone(),
                format!("{what} must set only one of `file` and `env`"),
            ));
            None
        }
        (Some(f), None) => Some(SecretSource::File(f)),
        (None, Some(e)) => Some(SecretSource::Env(e)),
        _ if !has("file") && !has("env") => {
            problems.push(doc.problem(
                whole.clone(),
                format!("{what} must set one of `file` (a path) or `env` (a variable name)"),
            ));
            None
        }
        _ => None,
    };
    let scheme = match scheme {
        Some("bearer") => {
            if let Some(span) = username_span {
                problems.push(doc.problem(
                    span,
                    format!("`username` of {what} is only used with type = \"basic\""),
                ));
            }
            Some(AuthScheme::Bearer)
        }
        Some(_) => Some(AuthScheme::Basic { username }),
        None => {
            if !has("type") {
                problems.push(doc.problem(
                    whole.clone(),
                    format!("{what} must set `type` (\"bearer\" or \"basic\")"),
                ));
            }
            None
        }
    };
    match (scheme, secret) {
        (Some(scheme), Some(secret)) if problems.len() == before => Field::Set(At {
            value: Auth { scheme, secret },
            at: doc.loc(&whole),
        }),
        _ => Field::Bad,
    }
}

fn drivers_field(
    doc: &Doc<'_>,
    value: &Spanned<DeValue<'_>>,
    pack: &str,
    job: &str,
    problems: &mut Vec<Problem>,
) -> Field<Vec<String>> {
    let what = format!("`_allow-drivers` in job `{pack}.{job}`");
    let DeValue::Array(items) = value.get_ref() else {
        problems.push(doc.problem(
            value.span(),
            format!(
                "{what} must be an array of strings, found {}",
                value.get_ref().type_str()
            ),
        ));
        return Field::Bad;
    };
    let mut drivers = Vec::new();
    let mut ok = true;
    for item in items.iter() {
        match item.get_ref().as_str() {
            Some(s) if !s.is_empty() => drivers.push(s.to_string()),
            Some(_) => {
                problems.push(doc.problem(
                    item.span(),
                    format!("{what}: a driver name must not be empty"),
                ));
                ok = false;
            }
            None => {
                problems.push(doc.problem(
                    item.span(),
                    format!(
                        "{what} must be an array of strings, found {} in it",
                        item.get_ref().type_str()
                    ),
                ));
                ok = false;
            }
        }
    }
    if ok {
        Field::Set(At {
            value: drivers,
            at: doc.loc(&value.span()),
        })
    } else {
        Field::Bad
    }
}

/// A template variable as JSON. Datetimes become their TOML text.
fn to_json(
    doc: &Doc<'_>,
    value: &Spanned<DeValue<'_>>,
    problems: &mut Vec<Problem>,
) -> Option<Value> {
    match value.get_ref() {
        DeValue::String(s) => Some(Value::String(s.to_string())),
        DeValue::Boolean(b) => Some(Value::Bool(*b)),
        DeValue::Datetime(d) => Some(Value::String(d.to_string())),
        DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) => Some(Value::from(n)),
            Err(_) => {
                problems
                    .push(doc.problem(value.span(), "integer does not fit in 64 bits (signed)"));
                None
            }
        },
        DeValue::Float(f) => {
            let number = f
                .as_str()
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64);
            if number.is_none() {
                problems.push(doc.problem(
                    value.span(),
                    "inf and nan cannot be template variables (JSON has no such numbers)",
                ));
            }
            number.map(Value::Number)
        }
        DeValue::Array(items) => {
            let mut out = Vec::new();
            let mut ok = true;
            for item in items.iter() {
                match to_json(doc, item, problems) {
                    Some(v) => out.push(v),
                    None => ok = false,
                }
            }
            ok.then_some(Value::Array(out))
        }
        DeValue::Table(table) => {
            let mut out = serde_json::Map::new();
            let mut ok = true;
            for (k, v) in in_document_order(table) {
                match to_json(doc, v, problems) {
                    Some(v) => {
                        out.insert(k.get_ref().to_string(), v);
                    }
                    None => ok = false,
                }
            }
            ok.then_some(Value::Object(out))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Validating the merge.

/// Checks what only the merged set can tell and builds the model. `complete` is false when
/// some file was left out (unreadable or broken): a missing `_origin` may be set there.
fn finish(
    merged: Layer,
    complete: bool,
    docs: &[(&Path, &str)],
    problems: &mut Vec<Problem>,
) -> PackSet {
    let name = merged
        .name
        .set()
        .map_or_else(|| DEFAULT_OWNER.to_string(), |n| n.value.clone());
    let mut packs = Vec::new();
    let mut names: std::collections::BTreeMap<String, (String, Location)> = Default::default();
    for pack in merged.packs {
        let origin = match pack.origin {
            Field::Set(o) => Some(o),
            Field::Bad => None,
            Field::Unset => {
                if complete {
                    problems.push(located(
                        docs,
                        pack.location.clone(),
                        format!(
                            "pack `{}` has no `_origin`; set it to a directory or an http(s) archive URL",
                            pack.key
                        ),
                    ));
                }
                None
            }
        };
        let local = matches!(
            origin,
            Some(At {
                value: Origin::Local(_),
                ..
            })
        );
        if local {
            if let Some(sha) = pack.sha256.set() {
                problems.push(located(
                    docs,
                    sha.at.clone(),
                    format!(
                        "`_sha256` in pack `{}`: _sha256 pins downloaded archives; a local origin cannot be pinned",
                        pack.key
                    ),
                ));
            }
            if let Some(auth) = pack.auth.set() {
                problems.push(located(
                    docs,
                    auth.at.clone(),
                    format!(
                        "`_auth` in pack `{}`: a local origin needs no credentials; _auth is for http(s) origins",
                        pack.key
                    ),
                ));
            }
        }
        let Some(origin) = origin else { continue };
        let pack_name = pack
            .name
            .set()
            .map_or_else(|| pack.key.clone(), |n| n.value.clone());
        // The name marks the jobs a pack owns in Nomad; two packs sharing one would
        // prune and protect each other's jobs.
        if let Some((first_key, first_at)) = names.get(&pack_name) {
            let at = pack.name.set().map_or(&pack.location, |n| &n.at).clone();
            problems.push(located(
                docs,
                at,
                format!(
                    "pack `{}` is named `{pack_name}` like pack `{first_key}` ({first_at}); pack names must be unique",
                    pack.key
                ),
            ));
            continue;
        }
        names.insert(pack_name.clone(), (pack.key.clone(), pack.location.clone()));
        let jobs = pack
            .jobs
            .into_iter()
            .map(|job| JobDecl {
                name: job.key,
                vars: job
                    .vars
                    .into_iter()
                    .filter_map(|(k, v)| match v {
                        Field::Set(at) => Some((k, at.value)),
                        _ => None,
                    })
                    .collect(),
                allow_drivers: job
                    .allow_drivers
                    .set()
                    .map_or_else(Vec::new, |d| d.value.clone()),
                location: job.location,
            })
            .collect();
        packs.push(PackDecl {
            name: pack_name,
            origin_name: pack
                .origin_name
                .set()
                .map_or_else(|| pack.key.clone(), |n| n.value.clone()),
            sha256: pack.sha256.set().map(|s| s.value.clone()),
            auth: pack.auth.set().map(|a| a.value.clone()),
            key: pack.key,
            origin: origin.value,
            location: pack.location,
            jobs,
        });
    }
    PackSet {
        name,
        packs,
        files: docs.iter().map(|(f, _)| f.to_path_buf()).collect(),
    }
}

/// The excerpt of `line` for snippets, unless it holds a URL with credentials
/// (`https://user:secret@host`): a secret written by mistake is never printed again.
fn excerpt(line: &str, len: usize) -> Option<Excerpt> {
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

/// A problem at a location found after merging, with the line it points at.
fn located(docs: &[(&Path, &str)], at: Location, message: String) -> Problem {
    let line = docs
        .iter()
        .find(|(f, _)| *f == at.file)
        .and_then(|(_, text)| text.lines().nth(at.line.saturating_sub(1)));
    Problem::Source {
        excerpt: line.and_then(|l| excerpt(l.trim_end_matches('\r'), 1)),
        error: SourceError::new(at, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PackSet, ConfigError> {
        parse_str(Path::new("/etc/nomados/packs.toml"), text)
    }

    /// The error text of `text`, which must not parse.
    fn err(text: &str) -> String {
        match parse(text) {
            Ok(set) => panic!("expected an error, got {set:#?}"),
            Err(e) => e.to_string(),
        }
    }

    fn ok(text: &str) -> PackSet {
        parse(text).unwrap_or_else(|e| panic!("unexpected error:\n{e}"))
    }

    #[test]
    fn minimal_pack_gets_defaults() {
        let set = ok("[redis]\n_origin = \"/srv/packs\"\n[redis.cache]\nport = 6379\n");
        assert_eq!(set.name, DEFAULT_OWNER);
        assert_eq!(set.files, vec![PathBuf::from("/etc/nomados/packs.toml")]);
        assert_eq!(set.packs.len(), 1);
        let p = &set.packs[0];
        assert_eq!(p.key, "redis");
        assert_eq!(p.name, "redis");
        assert_eq!(p.origin_name, "redis");
        assert_eq!(p.origin, Origin::Local(PathBuf::from("/srv/packs")));
        assert_eq!(p.sha256, None);
        assert_eq!(p.auth, None);
        assert_eq!(p.location.to_string(), "/etc/nomados/packs.toml:1:1");
        assert_eq!(p.jobs.len(), 1);
        let j = &p.jobs[0];
        assert_eq!(j.name, "cache");
        assert_eq!(j.vars["port"], serde_json::json!(6379));
        assert!(j.allow_drivers.is_empty());
        assert_eq!(j.location.to_string(), "/etc/nomados/packs.toml:3:1");
    }

    #[test]
    fn every_pack_key_is_read() {
        let set = ok(r#"
_name = "edge-cluster"
[web]
_origin = "https://packs.example.com/web-1.2.tar.xz"
_origin-name = "nginx"
_name = "frontend"
_sha256 = "ABCDEF0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789"
_auth = { type = "basic", username = "ci", env = "PACK_PASSWORD" }
[web.public]
_allow-drivers = ["docker", "java"]
"#);
        assert_eq!(set.name, "edge-cluster");
        let p = &set.packs[0];
        assert_eq!(p.name, "frontend");
        assert_eq!(p.origin_name, "nginx");
        assert_eq!(
            p.origin,
            Origin::Http("https://packs.example.com/web-1.2.tar.xz".into())
        );
        assert_eq!(
            p.sha256.as_deref(),
            Some("abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789")
        );
        assert_eq!(
            p.auth,
            Some(Auth {
                scheme: AuthScheme::Basic {
                    username: Some("ci".into())
                },
                secret: SecretSource::Env("PACK_PASSWORD".into()),
            })
        );
        assert_eq!(p.jobs[0].allow_drivers, vec!["docker", "java"]);
        assert!(p.jobs[0].vars.is_empty());
    }

    #[test]
    fn template_variables_keep_toml_values_as_json() {
        let set = ok(r#"
[a]
_origin = "packs"
[a.j]
s = "text"
i = 0x1F
big = 1_000_000
f = 2.5
b = true
dt = 1979-05-27T07:32:00Z
d = 1979-05-27
arr = [1, "two", [3]]
tbl = { x = 1, y = { z = "deep" } }
empty = ""
"#);
        let vars = &set.packs[0].jobs[0].vars;
        assert_eq!(vars["s"], serde_json::json!("text"));
        assert_eq!(vars["i"], serde_json::json!(31));
        assert_eq!(vars["big"], serde_json::json!(1_000_000));
        assert_eq!(vars["f"], serde_json::json!(2.5));
        assert_eq!(vars["b"], serde_json::json!(true));
        assert_eq!(vars["dt"], serde_json::json!("1979-05-27T07:32:00Z"));
        assert_eq!(vars["d"], serde_json::json!("1979-05-27"));
        assert_eq!(vars["arr"], serde_json::json!([1, "two", [3]]));
        assert_eq!(vars["tbl"], serde_json::json!({"x": 1, "y": {"z": "deep"}}));
        assert_eq!(vars["empty"], serde_json::json!(""));
        assert_eq!(vars.len(), 10);
    }

    #[test]
    fn non_finite_floats_are_rejected_at_the_value() {
        let e = err("[a]\n_origin = \"p\"\n[a.j]\nx = nan\ny = -inf\n");
        assert!(
            e.contains("packs.toml:4:5: inf and nan cannot be template variables"),
            "{e}"
        );
        assert!(e.contains("packs.toml:5:5: inf and nan"), "{e}");
    }

    #[test]
    fn packs_and_jobs_keep_document_order() {
        let set = ok(r#"
[zeta.second]
[zeta]
_origin = "z"
[alpha]
_origin = "a"
[alpha.b]
[alpha.a]
[zeta.first]
"#);
        let keys: Vec<_> = set.packs.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["zeta", "alpha"]);
        let jobs: Vec<_> = set.packs[0].jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(jobs, ["second", "first"]);
        let jobs: Vec<_> = set.packs[1].jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(jobs, ["b", "a"]);
        // A pack first mentioned through `[zeta.second]` is declared there.
        assert_eq!(
            set.packs[0].location.to_string(),
            "/etc/nomados/packs.toml:2:1"
        );
    }

    #[test]
    fn dotted_keys_declare_packs_and_jobs_too() {
        let set = ok("redis._origin = \"r\"\nredis.main.port = 1\n");
        assert_eq!(set.packs[0].jobs[0].vars["port"], serde_json::json!(1));
        assert_eq!(
            set.packs[0].location.to_string(),
            "/etc/nomados/packs.toml:1:1"
        );
    }

    #[test]
    fn non_table_in_pack_names_the_key() {
        let e = err("[redis]\n_origin = \"r\"\nx = 5\n");
        assert_eq!(
            e,
            "/etc/nomados/packs.toml:3:1: `x` in pack `redis` must be a job table (`[redis.x]`), found integer"
        );
    }

    #[test]
    fn non_table_at_top_level_is_not_a_pack() {
        let e = err("redis = \"oops\"\n");
        assert_eq!(
            e,
            "/etc/nomados/packs.toml:1:1: `redis` must be a pack table (`[redis]`), found string"
        );
    }

    #[test]
    fn unknown_underscore_keys_list_the_known_ones() {
        let e = err(r#"_owner = "x"
[redis]
_origin = "r"
_orign = "typo"
[redis.main]
_allow_drivers = ["docker"]
"#);
        let lines: Vec<_> = e.lines().collect();
        assert_eq!(lines.len(), 3, "{e}");
        assert!(
            lines[0].starts_with(
                "/etc/nomados/packs.toml:1:1: unknown top-level key `_owner`; known keys: `_name`"
            ),
            "{e}"
        );
        assert_eq!(lines[1], "/etc/nomados/packs.toml:4:1: unknown key `_orign` in pack `redis`; did you mean `_origin`? known keys: `_origin`, `_origin-name`, `_name`, `_sha256`, `_auth`");
        assert!(lines[2].starts_with("/etc/nomados/packs.toml:6:1: unknown key `_allow_drivers` in job `redis.main`; did you mean `_allow-drivers`? known keys: `_allow-drivers`"), "{e}");
    }

    #[test]
    fn wrong_types_name_the_expected_type() {
        let e = err(r#"_name = 3
[redis]
_origin = 1
_origin-name = true
_name = []
_sha256 = 5
_auth = "token"
[redis.main]
_allow-drivers = "docker"
[redis.other]
_allow-drivers = ["docker", 1]
"#);
        for want in [
            "packs.toml:1:9: top-level `_name` must be a string, found integer",
            "packs.toml:3:11: `_origin` in pack `redis` must be a string, found integer",
            "packs.toml:4:16: `_origin-name` in pack `redis` must be a string, found boolean",
            "packs.toml:5:9: `_name` in pack `redis` must be a string, found array",
            "packs.toml:6:11: `_sha256` in pack `redis` must be a string, found integer",
            "packs.toml:7:9: `_auth` in pack `redis` must be a table like",
            "packs.toml:9:18: `_allow-drivers` in job `redis.main` must be an array of strings, found string",
            "packs.toml:11:29: `_allow-drivers` in job `redis.other` must be an array of strings, found integer in it",
        ] {
            assert!(e.contains(want), "missing {want:?} in\n{e}");
        }
        // A bad `_origin` was reported; no second complaint that it is missing.
        assert!(!e.contains("has no `_origin`"), "{e}");
        assert_eq!(e.lines().count(), 8, "{e}");
    }

    #[test]
    fn pack_names_must_be_unique() {
        let e = err("[a]\n_origin = \"p\"\n[b]\n_origin = \"p\"\n_name = \"a\"\n");
        assert!(
            e.contains("packs.toml:5:9: pack `b` is named `a` like pack `a` (/etc/nomados/packs.toml:1:1); pack names must be unique"),
            "{e}"
        );
    }

    #[test]
    fn missing_origin_points_at_the_pack() {
        let e = err("[a]\n_origin = \"x\"\n\n[redis]\n[redis.main]\n");
        assert_eq!(
            e,
            "/etc/nomados/packs.toml:4:1: pack `redis` has no `_origin`; set it to a directory or an http(s) archive URL"
        );
    }

    #[test]
    fn names_are_restricted_to_a_safe_alphabet() {
        let e = err(r#"_name = ""
["my pack"]
_origin = "p"
_name = "a/b"
_origin-name = ".."
["my pack"."job 1"]
[ok."x:y"]
_origin = "p"
"#);
        for want in [
            "packs.toml:1:9: top-level `_name` must not be empty",
            "packs.toml:2:2: pack name `my pack` contains ` `; use only letters, digits, `_`, `.` and `-`",
            "packs.toml:4:9: `_name` in pack `my pack` `a/b` contains `/`",
            "packs.toml:5:16: `_origin-name` in pack `my pack` must name a directory, not `..`",
            "packs.toml:6:12: job name `job 1` contains ` `",
            "packs.toml:7:5: job name `x:y` contains `:`",
        ] {
            assert!(e.contains(want), "missing {want:?} in\n{e}");
        }
        let set = ok("[\"a-b_c.d\"]\n_origin = \"p\"\n[\"a-b_c.d\".J-0_9]\n");
        assert_eq!(set.packs[0].key, "a-b_c.d");
        assert_eq!(set.packs[0].jobs[0].name, "J-0_9");
    }

    #[test]
    fn relative_origins_resolve_against_the_file_directory() {
        let set = ok(r#"
[a]
_origin = "packs/a"
[b]
_origin = "../common"
[c]
_origin = "/abs/c"
[d]
_origin = "file:///srv/my%20packs"
"#);
        let origins: Vec<_> = set.packs.iter().map(|p| p.origin.clone()).collect();
        assert_eq!(
            origins,
            [
                Origin::Local("/etc/nomados/packs/a".into()),
                Origin::Local("/etc/nomados/../common".into()),
                Origin::Local("/abs/c".into()),
                Origin::Local("/srv/my packs".into()),
            ]
        );
    }

    #[test]
    fn url_credentials_are_rejected_without_echoing_them() {
        let text = "[a]\n_origin = \"https://bob:hunter2@example.com/a.tar.gz\"\n";
        let e = parse(text).unwrap_err();
        let plain = e.to_string();
        assert_eq!(
            plain,
            "/etc/nomados/packs.toml:2:11: `_origin` in pack `a`: credentials must not be written in the URL; use _auth"
        );
        let rendered = e.render();
        assert!(
            rendered.contains("credentials must not be written"),
            "{rendered}"
        );
        for shown in [&plain, &rendered] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(!shown.contains("bob"), "{shown}");
        }
        // A user name alone is a credential too; so is one on an unsupported scheme.
        assert!(err("[a]\n_origin = \"http://tok@h/a.tar\"\n").contains("credentials must not"));
        let e = parse("[a]\n_origin = \"ftp://u:s3cret@h/a.tar\"\n").unwrap_err();
        assert!(!e.render().contains("s3cret"), "{}", e.render());
        // Nor is the line shown when it breaks the syntax (unterminated string here).
        let e = parse("[a]\n_origin = \"https://u:s3cret@h/a.tar\n").unwrap_err();
        assert!(
            e.to_string().starts_with("/etc/nomados/packs.toml:2:"),
            "{e}"
        );
        assert!(!e.render().contains("s3cret"), "{}", e.render());
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }

    #[test]
    fn http_origins_must_be_archives() {
        for good in [
            "http://h/p.tar.xz",
            "https://h/p.txz",
            "https://h/p.TAR.GZ",
            "https://h:8443/dir/p.tgz?sig=abc",
            "https://h/p.tar",
        ] {
            let set = ok(&format!("[a]\n_origin = \"{good}\"\n"));
            assert_eq!(set.packs[0].origin, Origin::Http(good.into()));
        }
        let e = err("[a]\n_origin = \"https://h/p.zip\"\n");
        assert_eq!(
            e,
            "/etc/nomados/packs.toml:2:11: `_origin` in pack `a`: an http(s) origin must be an archive ending in .tar.xz, .txz, .tar.gz, .tgz, .tar"
        );
        let e = err("[a]\n_origin = \"https://h/p.tar.gz.sig\"\n");
        assert!(e.contains("must be an archive"), "{e}");
    }

    #[test]
    fn other_origin_schemes_and_bad_urls_are_errors() {
        let e = err("[a]\n_origin = \"git://host/repo.tar\"\n");
        assert_eq!(
            e,
            "/etc/nomados/packs.toml:2:11: `_origin` in pack `a`: unsupported scheme `git://`; use http://, https://, file:// or a path"
        );
        assert!(err("[a]\n_origin = \"file://relative/dir\"\n")
            .contains("a file:// URL must hold an absolute path"));
        assert!(err("[a]\n_origin = \"https://h:99999/a.tar\"\n").contains("invalid URL"));
        assert!(err("[a]\n_origin = \"\"\n").contains("`_origin` in pack `a`: must not be empty"));
    }

    #[test]
    fn sha256_is_checked_and_only_for_downloads() {
        let e = err("[a]\n_origin = \"https://h/a.tar\"\n_sha256 = \"abc\"\n");
        assert_eq!(
            e,
            "/etc/nomados/packs.toml:3:11: `_sha256` in pack `a` must be 64 hexadecimal digits (a SHA-256), found 3 characters"
        );
        let zs = "0".repeat(63) + "g";
        assert!(err(&format!(
            "[a]\n_origin = \"https://h/a.tar\"\n_sha256 = \"{zs}\"\n"
        ))
        .contains("must be 64 hexadecimal digits"));
        let sha = "a".repeat(64);
        let e = err(&format!("[a]\n_origin = \"/srv\"\n_sha256 = \"{sha}\"\n"));
        assert_eq!(
            e,
            "/etc/nomados/packs.toml:3:11: `_sha256` in pack `a`: _sha256 pins downloaded archives; a local origin cannot be pinned"
        );
    }

    #[test]
    fn auth_tables() {
        let set = ok(r#"
[a]
_origin = "https://h/a.tar"
_auth = { type = "bearer", file = "secrets/token" }
[b]
_origin = "https://h/b.tar"
[b._auth]
type = "basic"
file = "/run/creds"
"#);
        assert_eq!(
            set.packs[0].auth,
            Some(Auth {
                scheme: AuthScheme::Bearer,
                secret: SecretSource::File("/etc/nomados/secrets/token".into()),
            })
        );
        assert_eq!(
            set.packs[1].auth,
            Some(Auth {
                scheme: AuthScheme::Basic { username: None },
                secret: SecretSource::File("/run/creds".into()),
            })
        );

        let e = err(r#"[a]
_origin = "https://h/a.tar"
_auth = { type = "digest", env = "X" }
[b]
_origin = "https://h/b.tar"
_auth = { type = "bearer", env = "X", file = "f" }
[c]
_origin = "https://h/c.tar"
_auth = { type = "basic" }
[d]
_origin = "https://h/d.tar"
_auth = { env = "X" }
[e]
_origin = "https://h/e.tar"
_auth = { type = "bearer", env = "X", username = "u" }
[f]
_origin = "https://h/f.tar"
_auth = { type = "bearer", env = "X", password = "p" }
[g]
_origin = "https://h/g.tar"
_auth = { type = "bearer", env = 7 }
"#);
        for want in [
            "packs.toml:3:18: `type` of `_auth` in pack `a` must be \"bearer\" or \"basic\", found \"digest\"",
            "packs.toml:6:9: `_auth` in pack `b` must set only one of `file` and `env`",
            "packs.toml:9:9: `_auth` in pack `c` must set one of `file` (a path) or `env` (a variable name)",
            "packs.toml:12:9: `_auth` in pack `d` must set `type` (\"bearer\" or \"basic\")",
            "packs.toml:15:50: `username` of `_auth` in pack `e` is only used with type = \"basic\"",
            "packs.toml:18:39: unknown key `password` in `_auth` in pack `f`; known keys: `type`, `file`, `env`, `username`",
            "packs.toml:21:34: `env` of `_auth` in pack `g` must be a string, found integer",
        ] {
            assert!(e.contains(want), "missing {want:?} in\n{e}");
        }
        assert_eq!(e.lines().count(), 7, "{e}");

        let e = err("[a]\n_origin = \"/srv\"\n_auth = { type = \"bearer\", env = \"T\" }\n");
        assert_eq!(
            e,
            "/etc/nomados/packs.toml:3:9: `_auth` in pack `a`: a local origin needs no credentials; _auth is for http(s) origins"
        );
    }

    #[test]
    fn syntax_errors_name_the_place() {
        let e = err("[a]\n_origin = \"x\"\nport = = 1\n");
        assert!(e.starts_with("/etc/nomados/packs.toml:3:"), "{e}");
        let e = err("[a]\n_origin = \"x\"\n[a.j]\nport = 1\nport = 2\n");
        assert!(
            e.contains("/etc/nomados/packs.toml:5:1: duplicate key"),
            "{e}"
        );
        // Broken files do not cascade into "missing _origin" complaints.
        assert!(!e.contains("_origin"), "{e}");
    }

    #[test]
    fn all_problems_are_reported_in_order() {
        let e = err("[b]\nx = 1\n[a]\n_origin = 3\n_bogus = 1\n");
        let lines: Vec<_> = e.lines().collect();
        assert_eq!(lines.len(), 4, "{e}");
        assert!(
            lines[0].contains("packs.toml:1:1: pack `b` has no `_origin`"),
            "{e}"
        );
        assert!(lines[1].contains("packs.toml:2:1: `x` in pack `b`"), "{e}");
        assert!(lines[2].contains("packs.toml:4:11:"), "{e}");
        assert!(
            lines[3].contains("packs.toml:5:1: unknown key `_bogus`"),
            "{e}"
        );
    }

    #[test]
    fn close_typos_get_a_suggestion_far_ones_do_not() {
        let e = err("[a]\n_origin = \"p\"\n_sha265 = \"x\"\n_version = 1\n");
        assert!(
            e.contains("unknown key `_sha265` in pack `a`; did you mean `_sha256`?"),
            "{e}"
        );
        assert!(
            e.contains("unknown key `_version` in pack `a`; known keys:"),
            "{e}"
        );
        assert_eq!(edit_distance("_orign", "_origin"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn broken_input_never_panics() {
        let doc = "_name = \"ä\"\n[ré.dis]\n_origin = \"https://h/ü.tar\"\n[ré.dis.jöb]\nv = [1, { x = \"€\" }]\n";
        let cuts = doc.char_indices().map(|(i, _)| i).chain([doc.len()]);
        for cut in cuts {
            for tail in ["", "é", "=", "\"", "[", "]]", "{", "\u{0}", "ä = ö"] {
                let text = format!("{}{tail}", &doc[..cut]);
                if let Err(e) = parse(&text) {
                    let _ = (e.to_string(), e.render());
                }
            }
        }
    }

    #[test]
    fn render_shows_the_offending_line() {
        let e = parse("[redis]\n_origin = \"r\"\nport = 5\n").unwrap_err();
        let out = e.render();
        assert!(out.contains("3 | port = 5"), "{out}");
        assert!(out.contains("^^^^"), "{out}");
        assert!(out.contains("/etc/nomados/packs.toml:3:1"), "{out}");
    }
}
