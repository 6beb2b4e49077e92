//! Parsing one file into a [`Layer`]: which keys exist where, and the names they declare.

use std::ops::Range;

use toml::de::{DeTable, DeValue};

use super::error::{known_keys, Problem};
use super::fields::{auth_field, bool_field, drivers_field, origin_field, string_field, to_json};
use super::layer::{Field, JobLayer, Keyed, Layer, PackLayer};
use super::source::{entry_span, in_document_order, Doc};

/// Keys that configure a pack (inside a pack table).
const PACK_KEYS: &[&str] = &["_origin", "_origin-name", "_name", "_sha256", "_auth"];
/// Keys that configure a job (inside a job table).
const JOB_KEYS: &[&str] = &["_allow-drivers"];
/// Keys of the top level that are not packs.
const TOP_KEYS: &[&str] = &["_name", "_empty"];

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
pub(super) fn parse_layer(doc: &Doc<'_>, problems: &mut Vec<Problem>) -> Option<Layer> {
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
            } else if name == "_empty" {
                layer.empty = bool_field(doc, value, "top-level `_empty`", problems);
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
        layer.packs.insert(
            name.to_string(),
            parse_pack(doc, name, entry_span(key, value), table, problems),
        );
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
        jobs: Keyed::default(),
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
                out.jobs.insert(
                    name.to_string(),
                    parse_job(doc, pack, name, entry_span(key, value), job, problems),
                );
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
        vars: Keyed::default(),
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
            out.vars
                .insert(name.to_string(), to_json(doc, value, problems));
        }
    }
    out
}
