//! Loads a pack directory: finds its templates, checks the layout, reads `pack.toml`, and
//! compiles every template once so that rendering it for many declared jobs is cheap.
//!
//! Layout (see docs/packs.md): `jobs/` (required), `variables/`, `policies/`, `files/`,
//! `pack.toml`. Every template is named by its path inside the pack (`jobs/web.hcl`), which is
//! also the name `{% include %}` uses.

mod files;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};
use tera::Tera;

use super::model::JobFormat;
use crate::diag::Location;
use files::PackFiles;

/// A loaded pack, ready to render once per declared job.
#[derive(Debug, Clone)]
pub struct Pack {
    /// The pack's name as the pack set calls it (`_name`); templates see it as `pack`.
    pub name: String,
    /// The directory the pack was loaded from.
    pub dir: PathBuf,
    /// `description` of `pack.toml`.
    pub description: Option<String>,
    /// `[defaults]` of `pack.toml`: template variables the job table may override.
    pub defaults: Map<String, Value>,
    pub(crate) templates: Templates,
}

impl Pack {
    /// Job templates, by path inside the pack (`jobs/web.hcl`), sorted.
    pub fn job_files(&self) -> impl Iterator<Item = &str> {
        self.templates.jobs.iter().map(|j| j.name.as_str())
    }

    /// Variable templates, by path inside the pack, sorted.
    pub fn variable_files(&self) -> impl Iterator<Item = &str> {
        self.templates.variables.iter().map(|v| v.name.as_str())
    }

    /// Policy templates, by path inside the pack, sorted.
    pub fn policy_files(&self) -> impl Iterator<Item = &str> {
        self.templates.policies.iter().map(|p| p.name.as_str())
    }
}

/// The compiled templates of a pack, and what is needed to explain their errors.
#[derive(Debug, Clone)]
pub(crate) struct Templates {
    pub(crate) tera: Tera,
    pub(crate) jobs: Vec<JobTemplate>,
    pub(crate) variables: Vec<VariableTemplate>,
    pub(crate) policies: Vec<PolicyTemplate>,
    /// Source text of every template, by name: render errors without a position are located
    /// by searching it.
    pub(crate) sources: BTreeMap<String, String>,
    /// `files/` entries that are not valid Tera. They can still be read raw with `file()`;
    /// including one reports this error.
    pub(crate) broken: BTreeMap<String, (PackFile, String)>,
}

#[derive(Debug, Clone)]
pub(crate) struct JobTemplate {
    pub(crate) name: String,
    pub(crate) format: JobFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VariableFormat {
    Json,
    Toml,
}

#[derive(Debug, Clone)]
pub(crate) struct VariableTemplate {
    pub(crate) name: String,
    pub(crate) format: VariableFormat,
    /// The path used when the file does not set one: its path under `variables/` without
    /// the extension.
    pub(crate) default_path: String,
}

#[derive(Debug, Clone)]
pub(crate) struct PolicyTemplate {
    pub(crate) name: String,
    pub(crate) policy: String,
}

/// A place inside a pack: a file relative to the pack directory, with line and column when
/// known. Displays as `jobs/web.hcl:3:14`, `jobs/web.hcl:3` or `jobs/web.hcl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackFile {
    pub file: PathBuf,
    /// 1-based; `u32` keeps errors small enough to return by value.
    pub line: Option<u32>,
    pub column: Option<u32>,
}

impl PackFile {
    pub fn new(file: impl Into<PathBuf>) -> Self {
        Self {
            file: file.into(),
            line: None,
            column: None,
        }
    }

    pub fn at(file: impl Into<PathBuf>, line: usize, column: usize) -> Self {
        Self {
            file: file.into(),
            line: Some(u32::try_from(line).unwrap_or(u32::MAX)),
            column: Some(u32::try_from(column).unwrap_or(u32::MAX)),
        }
    }

    /// Position of byte `offset` of `source`, the text of `file`.
    pub(crate) fn from_offset(file: &str, source: &str, offset: usize) -> Self {
        let l = Location::from_offset(Path::new(file), source, offset);
        Self::at(file, l.line, l.column)
    }
}

impl fmt::Display for PackFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        Ok(())
    }
}

/// Why a pack could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("pack `{pack}`: {} is not a directory", dir.display())]
    NotADirectory { pack: String, dir: PathBuf },
    #[error("pack `{pack}` has no jobs/ directory (looked in {})", dir.display())]
    NoJobsDir { pack: String, dir: PathBuf },
    #[error("pack `{pack}`: cannot read {}: {source}", path.display())]
    Io {
        pack: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file of the pack is misplaced or invalid.
    #[error("pack `{pack}`, {at}: {message}")]
    Invalid {
        pack: String,
        at: PackFile,
        message: String,
    },
}

/// Name of the template variable the applier sets to the job table's key.
pub const JOBNAME: &str = "jobname";

/// Reads the pack in `dir` and compiles its templates. `name` is the pack's name in the pack
/// set; it is used in messages and templates see it as `pack`.
pub fn load(name: &str, dir: &Path) -> Result<Pack, PackError> {
    if !dir.is_dir() {
        return Err(PackError::NotADirectory {
            pack: name.to_string(),
            dir: dir.to_path_buf(),
        });
    }
    let loader = PackFiles::open(name, dir)?;
    let (description, defaults) = manifest(&loader)?;

    if loader.is_dir("jobs")? != Some(true) {
        return Err(PackError::NoJobsDir {
            pack: name.to_string(),
            dir: dir.to_path_buf(),
        });
    }

    let mut sources = BTreeMap::new();
    let mut jobs = Vec::new();
    for rel in loader.list("jobs", false)? {
        let format = match extension(&rel) {
            Some("hcl" | "nomad") => JobFormat::Hcl,
            Some("json") => JobFormat::Json,
            _ => {
                return Err(loader.invalid(
                    &rel,
                    "jobs/ holds only job templates ending in .hcl, .nomad or .json",
                ))
            }
        };
        sources.insert(rel.clone(), loader.read(&rel)?);
        jobs.push(JobTemplate { name: rel, format });
    }

    let mut variables = Vec::new();
    for rel in loader.list("variables", true)? {
        let format = match extension(&rel) {
            Some("json") => VariableFormat::Json,
            Some("toml") => VariableFormat::Toml,
            _ => {
                return Err(loader.invalid(
                    &rel,
                    "variables/ holds only variable templates ending in .json or .toml",
                ))
            }
        };
        let under = &rel["variables/".len()..];
        let default_path = under[..under.rfind('.').unwrap_or(under.len())].to_string();
        sources.insert(rel.clone(), loader.read(&rel)?);
        variables.push(VariableTemplate {
            name: rel,
            format,
            default_path,
        });
    }

    let mut policies = Vec::new();
    for rel in loader.list("policies", false)? {
        if extension(&rel) != Some("hcl") {
            return Err(loader.invalid(
                &rel,
                "policies/ holds only ACL policy templates named <policy>.hcl",
            ));
        }
        let stem = &rel["policies/".len()..rel.len() - ".hcl".len()];
        if !is_nomad_name(stem) {
            return Err(loader.invalid(
                &rel,
                "the file name is the policy name: 1 to 128 letters, digits or `-` (Nomad's rule)",
            ));
        }
        let policy = stem.to_string();
        sources.insert(rel.clone(), loader.read(&rel)?);
        policies.push(PolicyTemplate { name: rel, policy });
    }

    let mut compiled = sources.clone();

    // files/ may hold text that is not meant for Tera (Go templates for Nomad's `template`
    // stanza); such a file is only an error when a template includes it.
    let mut raw_files = BTreeMap::new();
    let mut broken = BTreeMap::new();
    for rel in loader.list("files", true)? {
        let text = loader.read(&rel)?;
        match tera::Template::new(&rel, None, &text) {
            Ok(_) => {
                compiled.insert(rel.clone(), text.clone());
            }
            Err(e) => {
                broken.insert(rel.clone(), syntax_error(&rel, &e));
            }
        }
        sources.insert(rel.clone(), text.clone());
        raw_files.insert(rel, text);
    }

    let mut tera = Tera::default();
    // Nothing a pack renders is HTML.
    tera.autoescape_on(Vec::new());
    register_functions(&mut tera, Arc::new(raw_files));
    if let Err(e) = tera.add_raw_templates(compiled.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
        let (file, message) = match &e.kind {
            // Tera wraps syntax errors as "Failed to parse 'name'", the pest report as source.
            tera::ErrorKind::Msg(m) if m.starts_with("Failed to parse '") => {
                let rel = m["Failed to parse '".len()..].trim_end_matches('\'');
                let (at, message) = syntax_error(rel, &e);
                return Err(PackError::Invalid {
                    pack: name.to_string(),
                    at,
                    message,
                });
            }
            tera::ErrorKind::MissingParent { current, parent } => (
                current.clone(),
                format!("extends `{parent}`, which is not a template of this pack"),
            ),
            tera::ErrorKind::CircularExtend {
                tpl,
                inheritance_chain,
            } => (
                tpl.clone(),
                format!("circular extends: {}", inheritance_chain.join(" -> ")),
            ),
            _ => ("jobs".to_string(), error_chain(&e)),
        };
        return Err(loader.invalid(&file, &message));
    }

    Ok(Pack {
        name: name.to_string(),
        dir: dir.to_path_buf(),
        description,
        defaults,
        templates: Templates {
            tera,
            jobs,
            variables,
            policies,
            sources,
            broken,
        },
    })
}

/// `pack.toml`; unknown keys are rejected so typos do not go unnoticed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    description: Option<String>,
    #[serde(default)]
    defaults: toml::Table,
}

/// Reads and checks `pack.toml`.
fn manifest(files: &PackFiles) -> Result<(Option<String>, Map<String, Value>), PackError> {
    if files.is_dir("pack.toml")?.is_none() {
        return Ok((None, Map::new()));
    }
    let text = files.read("pack.toml")?;
    let manifest: Manifest = toml::from_str(&text).map_err(|e| PackError::Invalid {
        pack: files.pack.to_string(),
        at: match e.span() {
            Some(span) => PackFile::from_offset("pack.toml", &text, span.start),
            None => PackFile::new("pack.toml"),
        },
        message: e.message().trim_end().to_string(),
    })?;
    let mut defaults = Map::new();
    for (key, value) in manifest.defaults {
        if key == JOBNAME {
            return Err(files.invalid(
                "pack.toml",
                "defaults.jobname: `jobname` is set by the applier and cannot be a default",
            ));
        }
        let value = toml_to_json(value)
            .map_err(|m| files.invalid("pack.toml", &format!("defaults.{key}: {m}")))?;
        defaults.insert(key, value);
    }
    Ok((manifest.description, defaults))
}

/// Nomad's rule for ACL policy and namespace names: `^[a-zA-Z0-9-]{1,128}$`.
pub(crate) fn is_nomad_name(name: &str) -> bool {
    (1..=128).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn extension(rel: &str) -> Option<&str> {
    let name = rel.rsplit('/').next()?;
    let dot = name.rfind('.')?;
    (dot > 0).then(|| &name[dot + 1..])
}

/// Registers the pack's own functions and replaces the impure builtins.
fn register_functions(tera: &mut Tera, files: Arc<BTreeMap<String, String>>) {
    tera.register_function(
        "file",
        move |args: &HashMap<String, Value>| -> tera::Result<Value> {
            let path = match args.get("path") {
                Some(Value::String(p)) => p,
                Some(other) => {
                    return Err(tera::Error::msg(format!(
                        "`path` must be a string, got {other}"
                    )))
                }
                None => {
                    return Err(tera::Error::msg(
                        "missing argument: file(path=\"files/...\")",
                    ))
                }
            };
            if !path.starts_with("files/") {
                return Err(tera::Error::msg(format!(
                    "file(path=\"{path}\"): only files under files/ can be read, e.g. path=\"files/{path}\""
                )));
            }
            match files.get(path.as_str()) {
                Some(text) => Ok(Value::String(text.clone())),
                None => Err(tera::Error::msg(format!(
                    "file(path=\"{path}\"): no such file in the pack"
                ))),
            }
        },
    );
    // A pack renders the same everywhere: values come from the pack set, not the environment
    // of whichever machine runs the applier.
    tera.register_function(
        "get_env",
        |_: &HashMap<String, Value>| -> tera::Result<Value> {
            Err(tera::Error::msg(
                "get_env is disabled in packs: pass the value as a job variable in the pack set",
            ))
        },
    );
    tera.register_filter(
        "hcl_encode",
        |value: &Value, _: &HashMap<String, Value>| -> tera::Result<Value> {
            Ok(Value::String(hcl_encode(value)))
        },
    );
}

/// Writes `value` as an HCL2 expression: like JSON, but `${` and `%{` in strings are escaped
/// so that Nomad does not treat them as interpolation.
pub fn hcl_encode(value: &Value) -> String {
    let mut out = String::new();
    write_hcl(value, &mut out);
    out
}

fn write_hcl(value: &Value, out: &mut String) {
    match value {
        Value::String(s) => write_hcl_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_hcl(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_hcl_string(k, out);
                out.push_str(" = ");
                write_hcl(v, out);
            }
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn write_hcl_string(s: &str, out: &mut String) {
    out.push('"');
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '$' | '%' if chars.peek() == Some(&'{') => {
                out.push(c);
                out.push(c);
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// TOML value as JSON: datetimes become their TOML text.
pub(crate) fn toml_to_json(value: toml::Value) -> Result<Value, String> {
    Ok(match value {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| format!("{f} cannot be used as a template value"))?,
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(toml_to_json)
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(table) => {
            let mut map = Map::new();
            for (k, v) in table {
                map.insert(k, toml_to_json(v)?);
            }
            Value::Object(map)
        }
    })
}

/// Position and message of a Tera syntax error. Tera formats them with pest, as
/// ` --> 3:14`, the source line, a caret, and `= expected ...`.
pub(crate) fn syntax_error(rel: &str, err: &tera::Error) -> (PackFile, String) {
    let text = error_chain(err);
    let mut at = PackFile::new(rel);
    let mut expected = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        // Tera's own prefix ("Failed to parse 'x': ") may share the line.
        if let Some(i) = line.find("--> ") {
            let mut parts = line[i + 4..].trim().split(':');
            at.line = parts.next().and_then(|n| n.parse().ok());
            at.column = parts.next().and_then(|n| n.parse().ok());
        } else if let Some(rest) = line.strip_prefix("= ") {
            expected.push(rest.to_string());
        }
    }
    let message = if expected.is_empty() {
        let detail = match text.strip_prefix("Failed to parse '") {
            Some(rest) => rest.split_once("': ").map_or(rest, |(_, d)| d),
            None => &text,
        };
        format!("template syntax error: {}", detail.trim())
    } else {
        format!("template syntax error: {}", expected.join("; "))
    };
    (at, message)
}

/// The messages of `err` and its sources, joined with `: `.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut cur = err.source();
    while let Some(e) = cur {
        parts.push(e.to_string());
        cur = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn loads_layout_sorted_with_default_variable_paths() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "jobs/b.json", "{}");
        write(d, "jobs/a.hcl", "job \"a\" {}");
        write(d, "jobs/c.nomad", "job \"c\" {}");
        write(d, "jobs/.gitkeep", "");
        write(d, "variables/app/config.toml", "[items]\n");
        write(d, "variables/top.json", "{}");
        write(d, "policies/read.hcl", "");
        write(
            d,
            "pack.toml",
            "description = \"demo\"\n[defaults]\nport = 80\nwhen = 1979-05-27\n",
        );
        let pack = load("demo", d).unwrap();
        assert_eq!(pack.description.as_deref(), Some("demo"));
        assert_eq!(pack.defaults["port"], 80);
        assert_eq!(pack.defaults["when"], "1979-05-27");
        assert_eq!(
            pack.job_files().collect::<Vec<_>>(),
            ["jobs/a.hcl", "jobs/b.json", "jobs/c.nomad"]
        );
        assert_eq!(
            pack.variable_files().collect::<Vec<_>>(),
            ["variables/app/config.toml", "variables/top.json"]
        );
        let paths: Vec<_> = pack
            .templates
            .variables
            .iter()
            .map(|v| v.default_path.as_str())
            .collect();
        assert_eq!(paths, ["app/config", "top"]);
        assert_eq!(pack.templates.policies[0].policy, "read");
    }

    #[test]
    fn missing_jobs_dir_is_an_error_but_empty_jobs_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let err = load("x", dir.path()).unwrap_err().to_string();
        assert!(err.starts_with("pack `x` has no jobs/ directory"), "{err}");
        std::fs::create_dir(dir.path().join("jobs")).unwrap();
        let pack = load("x", dir.path()).unwrap();
        assert_eq!(pack.job_files().count(), 0);
    }

    #[test]
    fn missing_pack_dir_is_not_reported_as_missing_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        let err = load("x", &gone).unwrap_err().to_string();
        assert_eq!(
            err,
            format!("pack `x`: {} is not a directory", gone.display())
        );
    }

    #[test]
    fn symlink_loop_in_files_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "jobs/a.hcl", "");
        write(dir.path(), "files/sub/x.txt", "x");
        std::os::unix::fs::symlink("..", dir.path().join("files/sub/up")).unwrap();
        let err = load("x", dir.path()).unwrap_err().to_string();
        assert!(err.ends_with(": directory symlink loop"), "{err}");
    }

    #[test]
    fn bad_extension_and_subdirectory_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "jobs/readme.txt", "hi");
        let err = load("x", dir.path()).unwrap_err().to_string();
        assert!(
            err.starts_with("pack `x`, jobs/readme.txt: jobs/ holds only"),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "jobs/sub/a.hcl", "");
        let err = load("x", dir.path()).unwrap_err().to_string();
        assert!(
            err.starts_with("pack `x`, jobs/sub: jobs/ cannot have subdirectories"),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "jobs/a.hcl", "");
        write(dir.path(), "variables/a.yaml", "");
        let err = load("x", dir.path()).unwrap_err().to_string();
        assert!(err.starts_with("pack `x`, variables/a.yaml: "), "{err}");

        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "jobs/a.hcl", "");
        write(dir.path(), "policies/web_read.hcl", "");
        let err = load("x", dir.path()).unwrap_err().to_string();
        assert!(
            err.starts_with("pack `x`, policies/web_read.hcl: the file name is the policy name"),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "jobs/a.hcl", "");
        write(dir.path(), "policies/a.json", "");
        let err = load("x", dir.path()).unwrap_err().to_string();
        assert!(err.starts_with("pack `x`, policies/a.json: "), "{err}");
    }

    #[test]
    fn syntax_error_names_file_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "jobs/a.hcl",
            "job \"a\" {\n  x = {{ port }\n}\n",
        );
        write(dir.path(), "jobs/0.hcl", "fine {{ x }}");
        let err = load("x", dir.path()).unwrap_err().to_string();
        assert!(err.starts_with("pack `x`, jobs/a.hcl:2:"), "{err}");
        assert!(err.contains("template syntax error: expected"), "{err}");
    }

    #[test]
    fn syntax_error_without_position_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let block = "{% block b %}{% endblock b %}";
        write(dir.path(), "jobs/a.hcl", &format!("{block}\n{block}"));
        let err = load("x", dir.path()).unwrap_err().to_string();
        assert_eq!(
            err,
            "pack `x`, jobs/a.hcl: template syntax error: Block `b` is duplicated"
        );
    }

    #[test]
    fn extends_of_a_missing_template_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "jobs/a.hcl", "{% extends \"files/base\" %}");
        let err = load("x", dir.path()).unwrap_err().to_string();
        assert_eq!(
            err,
            "pack `x`, jobs/a.hcl: extends `files/base`, which is not a template of this pack"
        );
        write(
            dir.path(),
            "files/base",
            "base {% block b %}{% endblock b %}",
        );
        load("x", dir.path()).unwrap();
    }

    #[test]
    fn manifest_unknown_key_names_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "jobs/a.hcl", "");
        write(
            dir.path(),
            "pack.toml",
            "description = \"d\"\n\ndefualts = {}\n",
        );
        let err = load("x", dir.path()).unwrap_err().to_string();
        assert!(
            err.starts_with("pack `x`, pack.toml:3:1: unknown field `defualts`"),
            "{err}"
        );
    }

    #[test]
    fn manifest_jobname_default_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "jobs/a.hcl", "");
        write(dir.path(), "pack.toml", "[defaults]\njobname = \"x\"\n");
        let err = load("x", dir.path()).unwrap_err().to_string();
        assert!(err.contains("`jobname` is set by the applier"), "{err}");
    }

    #[test]
    fn non_utf8_template_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("jobs")).unwrap();
        std::fs::write(dir.path().join("jobs/a.hcl"), b"ok\n\xff").unwrap();
        let err = load("x", dir.path()).unwrap_err().to_string();
        assert_eq!(err, "pack `x`, jobs/a.hcl:2:1: not UTF-8 text");
    }

    #[test]
    fn hcl_encode_escapes_interpolation() {
        let v = serde_json::json!({"a": ["x\"y", "${NOMAD}", "100%{"], "n": 3, "b": true});
        assert_eq!(
            hcl_encode(&v),
            r#"{"a" = ["x\"y", "$${NOMAD}", "100%%{"], "n" = 3, "b" = true}"#
        );
    }
}

#[cfg(test)]
mod hcl_tests {
    use super::hcl_encode;
    use serde_json::json;

    /// What `hcl_encode` writes reads back as the same value in a real HCL2 parser, with
    /// templates evaluated (so an unescaped `${` would fail or change the text).
    #[test]
    fn hcl_encode_round_trips_through_an_hcl_parser() {
        let cases = [
            json!("plain"),
            json!("quote \" backslash \\ newline \n tab \t cr \r"),
            json!("${NOMAD_TASK_NAME} and %{ if x }"),
            json!("$${already} %%{x} $ % {} $$ %%"),
            json!("bell \u{7} é ☃"),
            json!(["a", 1, 2.5, true, null]),
            json!({"k": "v", "weird key \"": ["${x}"]}),
        ];
        for value in cases {
            let text = format!("a = {}\n", hcl_encode(&value));
            let parsed: serde_json::Value = hcl::eval::from_str(&text, &hcl::eval::Context::new())
                .unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(parsed["a"], value, "{text}");
        }
    }
}
