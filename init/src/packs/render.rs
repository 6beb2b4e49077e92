//! Renders a loaded pack for one declared job: every job, variable and policy template with
//! the job table's variables. Pure: no I/O, the templates were read by [`super::pack::load`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Map, Value};

use super::model::{
    JobDecl, JobFormat, Rendered, RenderedJob, RenderedPolicy, RenderedVariable, Source,
};
use super::pack::{
    error_chain, is_nomad_name, toml_to_json, Pack, PackFile, VariableFormat, JOBNAME,
};
use crate::diag::Location;

/// What the agent knows that every pack may use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenderContext {
    /// The agent's datacenters; templates see them as `datacenters`.
    pub datacenters: Vec<String>,
}

/// Why a declared job could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("{at}: `jobname` is set by the applier and cannot be a variable (declared job `{job}` of pack `{pack}`)")]
    ReservedVariable {
        pack: String,
        job: String,
        at: Location,
    },
    /// A template failed, or what it rendered is not valid.
    #[error("pack `{pack}`, {at}: {message} (declared job `{job}`)")]
    File {
        pack: String,
        job: String,
        at: PackFile,
        message: String,
    },
}

/// Bytes one rendered file may have: real jobs are a few KiB; Nomad's own request limit is
/// far below what a runaway template can produce.
pub const MAX_RENDERED_BYTES: usize = 4 * 1024 * 1024;

/// Renders every template of `pack` for the declared `job`, in file order.
pub fn render(pack: &Pack, job: &JobDecl, ctx: &RenderContext) -> Result<Rendered, RenderError> {
    if job.vars.contains_key(JOBNAME) {
        return Err(RenderError::ReservedVariable {
            pack: pack.name.clone(),
            job: job.name.clone(),
            at: job.location.clone(),
        });
    }
    let context = context(pack, job, ctx);
    let r = Renderer { pack, job, context };

    let mut out = Rendered::default();
    for t in &pack.templates.jobs {
        let text = r.template(&t.name)?;
        if t.format == JobFormat::Json {
            check_json_job(&text).map_err(|m| r.error(PackFile::new(&t.name), m))?;
        }
        out.jobs.push(RenderedJob {
            source: r.source(&t.name),
            format: t.format,
            text,
        });
    }
    for t in &pack.templates.variables {
        let text = r.template(&t.name)?;
        let value = match t.format {
            VariableFormat::Json => parse_json(&text),
            VariableFormat::Toml => parse_toml(&text),
        }
        .map_err(|m| r.error(PackFile::new(&t.name), m))?;
        let (path, namespace, items) =
            variable(value, &t.default_path).map_err(|m| r.error(PackFile::new(&t.name), m))?;
        out.variables.push(RenderedVariable {
            source: r.source(&t.name),
            path,
            namespace,
            items,
        });
    }
    for t in &pack.templates.policies {
        let rules = r.template(&t.name)?;
        let description = policy_description(&rules);
        if let Some(d) = description.as_ref().filter(|d| d.chars().count() > 256) {
            let message = format!(
                "the description is {} characters; Nomad accepts at most 256",
                d.chars().count()
            );
            return Err(r.error(PackFile::at(&t.name, 1, 1), message));
        }
        out.policies.push(RenderedPolicy {
            source: r.source(&t.name),
            name: t.policy.clone(),
            description,
            rules,
        });
    }
    Ok(out)
}

/// The template context; later keys override earlier ones, `jobname` always wins.
fn context(pack: &Pack, job: &JobDecl, ctx: &RenderContext) -> tera::Context {
    let mut map = Map::new();
    map.insert("datacenters".into(), Value::from(ctx.datacenters.clone()));
    map.insert("pack".into(), Value::String(pack.name.clone()));
    for (k, v) in &pack.defaults {
        map.insert(k.clone(), v.clone());
    }
    for (k, v) in &job.vars {
        map.insert(k.clone(), v.clone());
    }
    map.insert(JOBNAME.into(), Value::String(job.name.clone()));
    let mut context = tera::Context::new();
    for (k, v) in map {
        context.insert(k, &v);
    }
    context
}

struct Renderer<'a> {
    pack: &'a Pack,
    job: &'a JobDecl,
    context: tera::Context,
}

impl Renderer<'_> {
    fn source(&self, name: &str) -> Source {
        Source {
            pack: self.pack.name.clone(),
            job: self.job.name.clone(),
            file: PathBuf::from(name),
        }
    }

    fn error(&self, at: PackFile, message: String) -> RenderError {
        RenderError::File {
            pack: self.pack.name.clone(),
            job: self.job.name.clone(),
            at,
            message,
        }
    }

    fn template(&self, name: &str) -> Result<String, RenderError> {
        let text = self
            .pack
            .templates
            .tera
            .render(name, &self.context)
            .map_err(|e| {
                let (at, message) = explain(self.pack, name, &e);
                self.error(at, message)
            })?;
        // Tera cannot be bounded while it renders (the applier process's memory limit does
        // that); what it produced is bounded before it goes any further, to Nomad included.
        if text.len() > MAX_RENDERED_BYTES {
            return Err(self.error(
                PackFile::new(name),
                format!(
                    "rendered to {} bytes, more than the limit of {MAX_RENDERED_BYTES} bytes for one file",
                    text.len()
                ),
            ));
        }
        Ok(text)
    }
}

/// Where a render error happened and what it means. Tera reports no position for render
/// errors, so the failing name (variable, filter, function, included template) is searched
/// for in the tags of the template that failed; the first match is reported.
fn explain(pack: &Pack, top: &str, err: &tera::Error) -> (PackFile, String) {
    let templates = &pack.templates;
    let mut file = top.to_string();
    let mut needle: Option<String> = None;
    let mut parts: Vec<String> = Vec::new();

    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        cur = e.source();
        let Some(te) = e.downcast_ref::<tera::Error>() else {
            // Not Tera's: the root cause, e.g. an I/O error.
            parts.push(e.to_string());
            continue;
        };
        match &te.kind {
            tera::ErrorKind::TemplateNotFound(names) => {
                let names: Vec<&str> = names
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .split(", ")
                    .collect();
                // An included files/ entry that is not valid Tera: report its own error.
                if let Some((at, message)) = names.iter().find_map(|n| templates.broken.get(*n)) {
                    return (at.clone(), format!("{message} (included from {top})"));
                }
                let shown = names.join("`, `");
                needle = names.first().map(|n| n.to_string());
                parts.push(format!(
                    "template `{shown}` not found; includes name a file by its path in the pack, e.g. \"files/app.conf\""
                ));
            }
            tera::ErrorKind::CallFilter(n) => {
                needle.get_or_insert_with(|| n.clone());
                parts.push(format!("filter `{n}` failed"));
            }
            tera::ErrorKind::FilterNotFound(n) => {
                needle.get_or_insert_with(|| n.clone());
                parts.push(format!("unknown filter `{n}`"));
            }
            tera::ErrorKind::CallFunction(n) if n == "throw" => {
                // The author's message is the error; it is also a literal in the template,
                // which pinpoints which `throw` fired.
                if let Some(m) = std::error::Error::source(te).map(|s| s.to_string()) {
                    needle = Some(m.clone());
                    parts.push(m);
                    break;
                }
                needle.get_or_insert_with(|| n.clone());
                parts.push(format!("function `{n}` failed"));
            }
            tera::ErrorKind::CallFunction(n) => {
                needle.get_or_insert_with(|| n.clone());
                parts.push(format!("function `{n}` failed"));
            }
            tera::ErrorKind::FunctionNotFound(n) => {
                needle.get_or_insert_with(|| n.clone());
                parts.push(format!("unknown function `{n}`"));
            }
            tera::ErrorKind::CallTest(n) => {
                needle.get_or_insert_with(|| n.clone());
                parts.push(format!("test `{n}` failed"));
            }
            tera::ErrorKind::TestNotFound(n) => {
                needle.get_or_insert_with(|| n.clone());
                parts.push(format!("unknown test `{n}`"));
            }
            tera::ErrorKind::Msg(m) if m.starts_with("Failed to render '") => {}
            tera::ErrorKind::Msg(m) => match undefined_variable(m) {
                Some((var, in_template, rest)) => {
                    file = in_template.to_string();
                    needle = Some(var.to_string());
                    parts.push(format!("variable `{var}` is not defined{rest}"));
                }
                None => parts.push(m.clone()),
            },
            _ => parts.push(te.to_string()),
        }
    }
    if parts.is_empty() {
        parts.push(error_chain(err));
    }
    let mut at = PackFile::new(&file);
    if let Some(needle) = needle {
        // Tera names the included template only for undefined variables; for other errors,
        // look in the templates the failing one includes too.
        for candidate in include_tree(&templates.sources, &file) {
            let Some(source) = templates.sources.get(&candidate) else {
                continue;
            };
            if let Some(offset) = locate(source, &needle) {
                at = PackFile::from_offset(&candidate, source, offset);
                file = candidate;
                break;
            }
        }
    }
    let mut message = parts.join(": ");
    if file != top {
        message.push_str(&format!(" (included from {top})"));
    }
    (at, message)
}

/// `name` and the templates it includes, extends or imports, recursively, in the order they are first met.
fn include_tree(sources: &BTreeMap<String, String>, name: &str) -> Vec<String> {
    let mut out = vec![name.to_string()];
    let mut i = 0;
    while i < out.len() {
        if let Some(source) = sources.get(&out[i]) {
            for included in includes(source) {
                if !out.contains(&included) {
                    out.push(included);
                }
            }
        }
        i += 1;
    }
    out
}

/// Names in the `{% include %}`, `{% extends %}` and `{% import %}` tags of `source`.
fn includes(source: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        let tag = &rest[start + 2..];
        let end = tag.find("%}").unwrap_or(tag.len());
        let inner = tag[..end].trim_start_matches('-').trim_start();
        let keyword = ["include", "extends", "import"]
            .iter()
            .find_map(|k| inner.strip_prefix(k));
        if let Some(args) = keyword {
            out.extend(quoted(args));
        }
        rest = &tag[end..];
    }
    out
}

/// Splits Tera's "Variable `x` not found in context while rendering 'file'..." into the
/// variable, the template being rendered, and any explanation after it.
fn undefined_variable(message: &str) -> Option<(&str, &str, &str)> {
    let rest = message.strip_prefix("Variable `")?;
    let (var, rest) = rest.split_once("` not found in context while rendering '")?;
    let (template, rest) = rest.split_once('\'')?;
    Some((var, template, rest))
}

/// Quoted strings ("a", 'b' or `c`) in `text`.
fn quoted(mut text: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(open) = text.find(['"', '\'', '`']) {
        let quote = &text[open..open + 1];
        let after = &text[open + 1..];
        let Some(len) = after.find(quote) else {
            break;
        };
        out.push(after[..len].to_string());
        text = &after[len + 1..];
    }
    out
}

/// Byte offset of the first occurrence of `needle` as a whole name inside a Tera tag
/// (`{{ }}` or `{% %}`) of `source`, skipping comments and raw blocks.
fn locate(source: &str, needle: &str) -> Option<usize> {
    let is_name = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < source.len() {
        let rest = &source[i..];
        let start = ["{{", "{%", "{#"]
            .iter()
            .filter_map(|open| rest.find(open))
            .min()?;
        let tag_start = i + start;
        let open = &source[tag_start..tag_start + 2];
        let close = match open {
            "{{" => "}}",
            "{%" => "%}",
            _ => "#}",
        };
        let inner_start = tag_start + 2;
        let inner_end = source[inner_start..]
            .find(close)
            .map_or(source.len(), |e| inner_start + e);
        let inner = &source[inner_start..inner_end];
        i = (inner_end + 2).min(source.len());
        if open == "{#" {
            continue;
        }
        if open == "{%" && inner.trim_matches(|c: char| c == '-' || c.is_whitespace()) == "raw" {
            // Skip to the end of the raw block.
            match source[i..].find("endraw") {
                Some(e) => i += e,
                None => return None,
            }
            continue;
        }
        let mut from = 0;
        while let Some(pos) = inner[from..].find(needle) {
            let at = from + pos;
            let before = inner[..at].chars().next_back();
            let after = inner[at + needle.len()..].chars().next();
            if !before.is_some_and(|c| is_name(c) || c == '.') && !after.is_some_and(is_name) {
                return Some(inner_start + at);
            }
            from = at + needle.len();
        }
    }
    None
}

/// A rendered JSON job must be an object, bare or wrapped as `{"Job": {...}}`.
fn check_json_job(text: &str) -> Result<(), String> {
    match parse_json(text)? {
        Value::Object(map) => match map.get("Job") {
            Some(Value::Object(_)) | None => Ok(()),
            Some(_) => Err("`Job` must be an object".to_string()),
        },
        _ => Err("a JSON job must be an object (bare or {\"Job\": {...}})".to_string()),
    }
}

fn parse_json(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| {
        format!(
            "rendered output is not valid JSON: {} at line {} column {}{}",
            strip_position(&e.to_string()),
            e.line(),
            e.column(),
            quote_line(text, e.line())
        )
    })
}

fn parse_toml(text: &str) -> Result<Value, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| {
        let (line, column) = match e.span() {
            Some(span) => {
                let l = Location::from_offset(std::path::Path::new(""), text, span.start);
                (l.line, l.column)
            }
            None => (0, 0),
        };
        format!(
            "rendered output is not valid TOML: {} at line {line} column {column}{}",
            e.message().trim_end(),
            quote_line(text, line)
        )
    })?;
    toml_to_json(toml::Value::Table(table))
}

/// serde_json appends " at line X column Y"; it is reported separately.
fn strip_position(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    }
}

/// The rendered line the error points at, since it is not a line of the template.
fn quote_line(text: &str, line: usize) -> String {
    match text.lines().nth(line.wrapping_sub(1)) {
        Some(l) => format!(" (rendered line: `{}`)", l.trim()),
        None => String::new(),
    }
}

type Variable = (String, Option<String>, BTreeMap<String, String>);

/// Checks a rendered variable file: `path`, `namespace` and `items`, nothing else.
fn variable(value: Value, default_path: &str) -> Result<Variable, String> {
    let Value::Object(map) = value else {
        return Err("a variable file must render to an object".to_string());
    };
    let mut path = default_path.to_string();
    let mut namespace = None;
    let mut items = BTreeMap::new();
    for (key, value) in map {
        match (key.as_str(), value) {
            ("path", Value::String(p)) => path = p,
            ("namespace", Value::String(n)) => namespace = Some(n),
            ("items", Value::Object(entries)) => {
                for (k, v) in entries {
                    match v {
                        Value::String(s) => {
                            items.insert(k, s);
                        }
                        other => {
                            return Err(format!(
                                "items.{k} must be a string, found {} `{other}` (quote it)",
                                kind(&other)
                            ))
                        }
                    }
                }
            }
            ("path" | "namespace" | "items", other) => {
                let expected = if key == "items" {
                    "a table"
                } else {
                    "a string"
                };
                return Err(format!(
                    "`{key}` must be {expected}, found {}",
                    kind(&other)
                ));
            }
            (other, _) => {
                return Err(format!(
                    "unknown key `{other}`; a variable file has `path`, `namespace` and `items`"
                ))
            }
        }
    }
    check_variable_path(&path)?;
    if let Some(ns) = &namespace {
        if !is_nomad_name(ns) {
            return Err(format!(
                "namespace `{ns}`: 1 to 128 letters, digits or `-` (Nomad's rule)"
            ));
        }
    }
    if items.is_empty() {
        return Err("`items` is empty; Nomad rejects a Variable without items".to_string());
    }
    Ok((path, namespace, items))
}

/// Nomad's rules for Variable paths (`^[a-zA-Z0-9-_~/]{1,128}$`, and only `nomad/jobs...`
/// or `nomad/job-templates/<name>` under `nomad/`), plus no empty segment.
fn check_variable_path(path: &str) -> Result<(), String> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-_~/".contains(&b);
    if !(1..=128).contains(&path.len()) || !path.bytes().all(allowed) {
        return Err(format!(
            "variable path `{path}`: 1 to 128 letters, digits, `-`, `_`, `~` or `/` (Nomad's rule)"
        ));
    }
    let parts: Vec<&str> = path.split('/').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!(
            "variable path `{path}` has an empty segment (leading, trailing or double `/`)"
        ));
    }
    if parts[0] == "nomad" {
        let ok = match parts.get(1) {
            Some(&"jobs") => true,
            Some(&"job-templates") => parts.len() == 3,
            _ => false,
        };
        if !ok {
            return Err(format!(
                "variable path `{path}`: under `nomad/` Nomad accepts only `nomad/jobs...` and `nomad/job-templates/<name>`"
            ));
        }
    }
    Ok(())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "table",
    }
}

/// `# description: ...` on the first line of a policy.
fn policy_description(rules: &str) -> Option<String> {
    let first = rules.lines().next()?.trim();
    let comment = first.strip_prefix('#')?.trim_start();
    let description = comment.strip_prefix("description:")?.trim();
    (!description.is_empty()).then(|| description.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_finds_names_in_tags_only() {
        let src = "port = 1\n{# port #}{% raw %}{{ port }}{% endraw %}\nx = {{ a.port }} {{ port | int }}";
        let at = locate(src, "port").unwrap();
        assert_eq!(&src[at..at + 4], "port");
        let loc = Location::from_offset(std::path::Path::new(""), src, at);
        assert_eq!((loc.line, loc.column), (3, 21));
        assert_eq!(locate(src, "nothere"), None);
    }

    #[test]
    fn include_tree_follows_nested_includes_once() {
        let sources = BTreeMap::from([
            (
                "jobs/a.hcl".to_string(),
                "{% include \"files/b\" %}{%- include ['files/c', \"files/b\"] ignore missing -%}"
                    .to_string(),
            ),
            ("files/b".to_string(), "{% include `files/d` %}".to_string()),
            (
                "files/c".to_string(),
                "{% include \"jobs/a.hcl\" %}".to_string(),
            ),
            ("files/d".to_string(), "{% extends 'files/e' %}".to_string()),
        ]);
        assert_eq!(
            include_tree(&sources, "jobs/a.hcl"),
            ["jobs/a.hcl", "files/b", "files/c", "files/d", "files/e"]
        );
    }

    #[test]
    fn variable_checks_types_and_keys() {
        let v = serde_json::json!({"items": {"a": "1"}, "namespace": "ops"});
        let (path, ns, items) = variable(v, "app/config").unwrap();
        assert_eq!(path, "app/config");
        assert_eq!(ns.as_deref(), Some("ops"));
        assert_eq!(items["a"], "1");

        let err = variable(serde_json::json!({"items": {"port": 80}}), "x").unwrap_err();
        assert_eq!(
            err,
            "items.port must be a string, found number `80` (quote it)"
        );
        let err = variable(serde_json::json!({"item": {}}), "x").unwrap_err();
        assert!(err.starts_with("unknown key `item`"), "{err}");
        let items = serde_json::json!({"a": "1"});
        for (path, ok) in [
            ("", false),
            ("/a", false),
            ("a//b", false),
            ("a b", false),
            ("nomad", false),
            ("nomad/other", false),
            ("nomad/jobs", true),
            ("nomad/jobs/web/task", true),
            ("nomad/job-templates/t", true),
            ("nomad/job-templates", false),
            ("app-1/~x_y", true),
        ] {
            let result = variable(serde_json::json!({"path": path, "items": items}), "x");
            assert_eq!(result.is_ok(), ok, "{path}: {result:?}");
        }
        let err = variable(serde_json::json!({"items": {}}), "x").unwrap_err();
        assert!(err.contains("`items` is empty"), "{err}");
        let err =
            variable(serde_json::json!({"namespace": "a b", "items": items}), "x").unwrap_err();
        assert!(err.starts_with("namespace `a b`"), "{err}");
    }

    #[test]
    fn policy_description_from_first_line() {
        assert_eq!(
            policy_description("# description: Read jobs\nnamespace \"*\" {}").as_deref(),
            Some("Read jobs")
        );
        assert_eq!(
            policy_description("namespace \"*\" {}\n# description: x"),
            None
        );
    }

    #[test]
    fn json_errors_carry_rendered_position() {
        let err = check_json_job("{\n  \"ID\": \"a\"\n  \"Name\": 1\n}").unwrap_err();
        assert!(err.contains("at line 3 column 3"), "{err}");
        assert!(err.contains("`\"Name\": 1`"), "{err}");
        assert!(check_json_job("[1]").is_err());
        assert!(check_json_job("{\"Job\": 1}").is_err());
        assert!(check_json_job("{\"Job\": {}}").is_ok());
    }
}
