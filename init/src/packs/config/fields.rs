//! Checks of single values: strings, origins, `_auth` tables, driver lists, and template
//! variables as JSON. Each reports its problems at the value and returns [`Field::Bad`].

use std::path::Path;

use serde_json::Value;
use toml::de::DeValue;
use toml::Spanned;

use super::error::{known_keys, Problem};
use super::layer::{At, Field};
use super::source::{in_document_order, Doc};
use crate::packs::model::{Auth, AuthScheme, Origin, SecretSource};

/// Keys of an `_auth` table.
const AUTH_KEYS: &[&str] = &["type", "file", "env", "username"];
/// Archive suffixes an http(s) origin may end with.
const ARCHIVE_SUFFIXES: &[&str] = &[".tar.xz", ".txz", ".tar.gz", ".tgz", ".tar"];

/// A boolean setting; a wrong type is reported at the value.
pub(super) fn bool_field(
    doc: &Doc<'_>,
    value: &Spanned<DeValue<'_>>,
    what: &str,
    problems: &mut Vec<Problem>,
) -> Field<bool> {
    match value.get_ref() {
        DeValue::Boolean(b) => Field::Set(At {
            value: *b,
            at: doc.loc(&value.span()),
        }),
        other => {
            problems.push(doc.problem(
                value.span(),
                format!("{what} must be a boolean, found {}", other.type_str()),
            ));
            Field::Bad
        }
    }
}

/// A string setting checked by `check`; type and check failures are reported at the value.
pub(super) fn string_field<T>(
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

pub(super) fn origin_field(
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

/// Parses an origin URL; the message never repeats it (it may hold secrets).
fn parse_url(s: &str) -> Result<url::Url, String> {
    url::Url::parse(s).map_err(|e| match e {
        // The IDNA back end is ASCII-only (README, dependencies).
        url::ParseError::IdnaError => {
            "invalid URL: the host name is not ASCII; write it in its `xn--` form".to_string()
        }
        e => format!("invalid URL: {e}"),
    })
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
            let url = parse_url(s)?;
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
            let url = parse_url(s)?;
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

pub(super) fn auth_field(
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

pub(super) fn drivers_field(
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
pub(super) fn to_json(
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
            // Sized once: a set of many one-element arrays must not pay for growth room.
            let mut out = Vec::with_capacity(items.len());
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
            let mut out = serde_json::Map::with_capacity(table.len());
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
