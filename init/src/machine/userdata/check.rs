//! The checks serde cannot express, collected (not stopped at the first) and located.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use base64::Engine as _;
use toml::Spanned;

use super::model::{self, UserData};
use super::{
    MachineConfig, NomadSettings, PackSetSource, PlacedFile, SecretValues, TlsMaterial,
    UserDataError,
};
use crate::diag::{Location, SourceError};

/// Agent config fragments a user data may carry.
const MAX_FRAGMENTS: usize = 64;
/// Init keys that act before the user data is read: the data partition is mounted first.
/// (`network` may come from a source read without the network: see
/// `machine::run::EARLY_SOURCES`.)
const INIT_KEYS_TOO_LATE: [&str; 1] = ["data"];
/// Where a placed file may not go: kernel interfaces, and what this code writes itself.
const FORBIDDEN_PREFIXES: [&str; 6] = [
    "/proc",
    "/sys",
    "/dev",
    "/run/nomados",
    "/var/lib/nomad/nomados/nomad-token",
    "/var/lib/nomad/nomados/placed-files.json",
];

/// `nomad.retry_join`: at most this many entries, each at most this long (an address, or
/// a cloud auto-join string with its credentials, is far shorter).
const MAX_JOIN_ENTRIES: usize = 64;
const MAX_JOIN_LEN: usize = 512;

/// One `retry_join` entry: an address (`host`, `host:port`, `[v6]:port`), or one of
/// Nomad's cloud auto-join strings (`provider=aws tag_key=... tag_value=...`: `key=value`
/// words, written to Nomad's config as they are). The error never shows the value: an
/// auto-join string may hold a cloud credential (`secret_access_key=`).
fn join_entry(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("is empty".into());
    }
    if s.chars().any(char::is_control) {
        return Err("contains control characters".into());
    }
    if s.len() > MAX_JOIN_LEN {
        return Err(format!("is longer than {MAX_JOIN_LEN} bytes"));
    }
    let words: Vec<&str> = s.split_whitespace().collect();
    if words.iter().any(|w| w.starts_with("provider=")) {
        let key_value = |w: &&str| {
            w.split_once('=').is_some_and(|(k, v)| {
                !k.is_empty()
                    && !v.is_empty()
                    && k.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
            })
        };
        if !words[0].starts_with("provider=") || words[0] == "provider=" {
            return Err(
                "is a cloud auto-join string: it starts with provider=<name> \
                 (\"provider=aws tag_key=... tag_value=...\")"
                    .into(),
            );
        }
        if !words.iter().all(key_value) {
            return Err("is a cloud auto-join string: every word is key=value \
                 (\"provider=aws tag_key=... tag_value=...\")"
                .into());
        }
        return Ok(());
    }
    if words.len() != 1 || s.contains('=') {
        return Err(
            "is an address (host or host:port) or a Nomad cloud auto-join string \
             (\"provider=aws tag_key=... tag_value=...\")"
                .into(),
        );
    }
    Ok(())
}

struct Checker<'a> {
    file: &'a Path,
    text: &'a str,
    errors: Vec<SourceError>,
}

impl Checker<'_> {
    fn at(&self, span: Range<usize>) -> Location {
        Location::from_offset(self.file, self.text, span.start)
    }

    fn err(&mut self, span: Range<usize>, message: impl Into<String>) {
        let loc = self.at(span);
        self.errors.push(SourceError::new(loc, message));
    }

    /// Where line `line`, column `column` (1-based) of a string value's content is in the
    /// file: multi-line strings start after their opening quotes and newline. Escapes in
    /// basic strings may shift the column; the line is right.
    fn inside(&self, span: Range<usize>, line: usize, column: usize) -> Location {
        let raw = self.text.get(span.clone()).unwrap_or("");
        let mut start = span.start;
        for quotes in ["\"\"\"", "'''"] {
            if raw.starts_with(quotes) {
                start += 3;
                let rest = &self.text[start.min(self.text.len())..];
                if rest.starts_with("\r\n") {
                    start += 2;
                } else if rest.starts_with('\n') {
                    start += 1;
                }
                break;
            }
        }
        if start == span.start && (raw.starts_with('"') || raw.starts_with('\'')) {
            start += 1;
        }
        let base = Location::from_offset(self.file, self.text, start);
        if line <= 1 {
            Location::new(self.file, base.line, base.column + column.saturating_sub(1))
        } else {
            Location::new(self.file, base.line + line - 1, column)
        }
    }
}

pub(super) fn check(
    file: &Path,
    text: &str,
    written: UserData,
) -> Result<MachineConfig, UserDataError> {
    let mut c = Checker {
        file,
        text,
        errors: Vec::new(),
    };
    let init = written
        .init
        .as_ref()
        .and_then(|init| check_init(&mut c, text, init));
    let nomad = written
        .nomad
        .as_ref()
        .map(|n| check_nomad(&mut c, n))
        .unwrap_or_default();
    let fragments = check_fragments(&mut c, &written.fragments);
    let packs = written.packs.as_ref().and_then(|p| check_packs(&mut c, p));
    let upgrade = match written.upgrade.as_ref().map(super::upgrade::check_upgrade) {
        Some(Ok(w)) => Some(w),
        Some(Err(problems)) => {
            for (span, message) in problems {
                c.err(span, message);
            }
            None
        }
        None => None,
    };
    let files = check_files(&mut c, &written.files);
    let secrets = written
        .secrets
        .as_ref()
        .map(|s| check_secrets(&mut c, s))
        .unwrap_or_default();
    let install = written
        .install
        .as_ref()
        .and_then(|i| match super::install::check(i) {
            Ok(r) => Some(r),
            Err(errors) => {
                for (span, message) in errors {
                    c.err(span, message);
                }
                None
            }
        });
    if c.errors.is_empty() {
        Ok(MachineConfig {
            init,
            nomad,
            fragments,
            packs,
            upgrade,
            files,
            secrets,
            install,
        })
    } else {
        c.errors.sort_by(|a, b| a.location.cmp(&b.location));
        Err(UserDataError(c.errors))
    }
}

/// The `[init]` table as written (only its keys override the baked file), checked by the
/// init config's own rules.
fn check_init(
    c: &mut Checker<'_>,
    text: &str,
    init: &Spanned<crate::boot::config::InitConfig>,
) -> Option<toml::Table> {
    let table = toml::from_str::<toml::Table>(text)
        .ok()?
        .remove("init")
        .and_then(|v| match v {
            toml::Value::Table(t) => Some(t),
            _ => None,
        })?;
    let mut ok = true;
    for key in INIT_KEYS_TOO_LATE {
        if table.contains_key(key) {
            c.err(
                init.span(),
                format!(
                    "init.{key} cannot come from the user data: it is used before the user data \
                     is read; bake it into the image's nomados.toml"
                ),
            );
            ok = false;
        }
    }
    if let Some(net) = table.get("network") {
        let checked = match net {
            toml::Value::Table(t) => crate::net::config::from_table(t),
            _ => Err("network: expected a table".to_string()),
        };
        if let Err(e) = checked {
            c.err(init.span(), format!("init.{e}"));
            ok = false;
        }
    }
    // The init config's semantic rules (absolute paths, limits, hostname).
    let as_text = toml::to_string(&table).unwrap_or_default();
    if let Err(e) = crate::boot::config::parse(Path::new("[init]"), &as_text) {
        c.err(init.span(), format!("init: {}", e.message));
        ok = false;
    }
    ok.then_some(table)
}

fn nomad_name(c: &mut Checker<'_>, field: &str, v: &Option<Spanned<String>>) -> Option<String> {
    let v = v.as_ref()?;
    let s = v.get_ref();
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        c.err(
            v.span(),
            format!("nomad.{field} must be 1-128 letters, digits, '-', '_' or '.'"),
        );
    }
    Some(s.clone())
}

fn check_nomad(c: &mut Checker<'_>, n: &Spanned<model::NomadRole>) -> NomadSettings {
    let role_span = n.span();
    let n = n.get_ref();
    let mut out = NomadSettings {
        role: n.role,
        ..NomadSettings::default()
    };
    if let Some(be) = &n.bootstrap_expect {
        match u32::try_from(*be.get_ref()) {
            Ok(v @ 1..=255) => out.bootstrap_expect = Some(v),
            _ => c.err(
                be.span(),
                "nomad.bootstrap_expect must be between 1 and 255",
            ),
        }
        if n.role.is_some_and(|r| !r.server()) {
            c.err(
                be.span(),
                "nomad.bootstrap_expect only applies to servers (role \"server\" or \"both\")",
            );
        }
        if n.role.is_none() {
            c.err(
                be.span(),
                "nomad.bootstrap_expect needs nomad.role (\"server\" or \"both\")",
            );
        }
    }
    if n.retry_join.len() > MAX_JOIN_ENTRIES {
        c.err(
            n.retry_join[MAX_JOIN_ENTRIES].span(),
            format!("nomad.retry_join has more than {MAX_JOIN_ENTRIES} entries"),
        );
    }
    for (i, j) in n.retry_join.iter().enumerate() {
        let s = j.get_ref().trim();
        if let Err(why) = join_entry(s) {
            c.err(j.span(), format!("nomad.retry_join[{i}] {why}"));
        }
        out.retry_join.push(s.to_string());
    }
    if !n.retry_join.is_empty() && n.role.is_none() {
        c.err(
            role_span,
            "nomad.retry_join needs nomad.role: a server joins servers with server_join, a \
             client finds them with client.server_join",
        );
    }
    out.datacenter = nomad_name(c, "datacenter", &n.datacenter);
    out.region = nomad_name(c, "region", &n.region);
    out.name = nomad_name(c, "name", &n.name);
    for (k, v) in &n.meta {
        let key_ok = !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
        if !key_ok {
            c.err(
                v.span(),
                format!("nomad.meta key {k:?}: use letters, digits, '-', '_', '.' or '/'"),
            );
        }
        if v.get_ref().chars().any(char::is_control) {
            c.err(
                v.span(),
                format!("nomad.meta.{k}: control characters are not allowed"),
            );
        }
        out.meta.insert(k.clone(), v.get_ref().clone());
    }
    out
}

fn check_fragments(
    c: &mut Checker<'_>,
    fragments: &[Spanned<model::Fragment>],
) -> Vec<(String, String)> {
    if fragments.len() > MAX_FRAGMENTS {
        c.err(
            fragments[MAX_FRAGMENTS].span(),
            format!("at most {MAX_FRAGMENTS} fragments"),
        );
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for f in fragments {
        let f = f.get_ref();
        let name = f.name.get_ref();
        let stem_ok = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric());
        let is_json = name.ends_with(".json");
        if !stem_ok || !(is_json || name.ends_with(".hcl")) {
            c.err(
                f.name.span(),
                "fragments.name must be a file name (letters, digits, '-', '_', '.') ending in \
                 .json or .hcl",
            );
        } else if !seen.insert(name.clone()) {
            c.err(f.name.span(), format!("fragment {name} is given twice"));
        }
        let content = f.content.get_ref();
        if is_json {
            match serde_json::from_str::<serde_json::Value>(content) {
                Ok(v) if v.is_object() => {}
                Ok(_) => c.err(
                    f.content.span(),
                    format!("fragment {name}: a JSON agent config is an object"),
                ),
                Err(e) => {
                    let loc = c.inside(f.content.span(), e.line(), e.column());
                    let msg = format!("fragment {name}: invalid JSON: {e}");
                    c.errors.push(SourceError::new(loc, msg));
                }
            }
        } else if content.trim().is_empty() {
            c.err(f.content.span(), format!("fragment {name} is empty"));
        } else if name.ends_with(".hcl") {
            if let Err(e) = crate::machine::hcl::to_json(content) {
                let loc = c.inside(f.content.span(), e.line, e.column);
                let msg = format!("fragment {name}: invalid HCL: {}", e.message);
                c.errors.push(SourceError::new(loc, msg));
            }
        }
        out.push((name.clone(), content.clone()));
    }
    out
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn check_packs(c: &mut Checker<'_>, p: &Spanned<model::PackSetSource>) -> Option<PackSetSource> {
    let span = p.span();
    let p = p.get_ref();
    match (&p.inline, &p.url) {
        (Some(inline), None) => {
            if let Some(sha) = &p.sha256 {
                c.err(
                    sha.span(),
                    "packs.sha256 goes with packs.url, not packs.inline",
                );
            }
            let set_file = Path::new("/run/nomados/machine/packs.toml");
            match crate::packs::config::parse_str(set_file, inline.get_ref()) {
                Ok(_) => Some(PackSetSource::Inline(inline.get_ref().clone())),
                Err(e) => {
                    for se in e.source_errors() {
                        let loc = c.inside(inline.span(), se.location.line, se.location.column);
                        let msg = format!("packs.inline: {}", se.message);
                        c.errors.push(SourceError::new(loc, msg));
                    }
                    if e.source_errors().next().is_none() {
                        let msg = format!("packs.inline: {}", e.render().trim_end());
                        c.err(inline.span(), msg);
                    }
                    None
                }
            }
        }
        (None, Some(url)) => {
            let parsed = url::Url::parse(url.get_ref());
            if !matches!(parsed.as_ref().map(url::Url::scheme), Ok("https" | "http")) {
                c.err(url.span(), "packs.url must be an http:// or https:// URL");
            }
            match &p.sha256 {
                Some(sha) if is_sha256(sha.get_ref()) => Some(PackSetSource::Url {
                    url: url.get_ref().clone(),
                    sha256: sha.get_ref().to_ascii_lowercase(),
                }),
                Some(sha) => {
                    c.err(sha.span(), "packs.sha256 must be 64 hexadecimal digits");
                    None
                }
                None => {
                    c.err(
                        url.span(),
                        "packs.url needs packs.sha256: a pack set is code that runs as root",
                    );
                    None
                }
            }
        }
        (Some(_), Some(url)) => {
            c.err(url.span(), "packs: give inline or url, not both");
            None
        }
        (None, None) => {
            c.err(span, "packs: give inline (TOML text) or url with sha256");
            None
        }
    }
}

fn check_path(c: &mut Checker<'_>, path: &Spanned<String>) -> PathBuf {
    let p = PathBuf::from(path.get_ref());
    let normal = p.is_absolute()
        && p.components()
            .all(|comp| matches!(comp, Component::RootDir | Component::Normal(_)))
        && p.file_name().is_some();
    if !normal {
        c.err(
            path.span(),
            "files.path must be an absolute file path without '.' or '..'",
        );
    } else if let Some(bad) = FORBIDDEN_PREFIXES.iter().find(|f| p.starts_with(f)) {
        c.err(
            path.span(),
            format!(
                "files.path may not be under {bad} (kernel interfaces and NomadOS's own files)"
            ),
        );
    }
    p
}

fn check_files(c: &mut Checker<'_>, files: &[Spanned<model::FileSpec>]) -> Vec<PlacedFile> {
    let mut seen = BTreeMap::new();
    let mut out = Vec::new();
    for spec in files {
        let span = spec.span();
        let f = spec.get_ref();
        let path = check_path(c, &f.path);
        if seen.insert(path.clone(), ()).is_some() {
            c.err(
                f.path.span(),
                format!("files: {} is given twice", path.display()),
            );
        }
        let mode = match &f.mode {
            None => 0o644,
            Some(m) => match u32::from_str_radix(m.get_ref(), 8) {
                Ok(v) if v <= 0o7777 => v,
                _ => {
                    c.err(
                        m.span(),
                        "files.mode is octal permission bits as a string, such as \"0644\"",
                    );
                    0
                }
            },
        };
        let (uid, gid) = match &f.owner {
            None => (0, 0),
            Some(o) => match parse_owner(o.get_ref()) {
                Some(ids) => ids,
                None => {
                    c.err(
                        o.span(),
                        "files.owner is \"root\" or numeric \"uid:gid\" (there is no user \
                         database to look names up in)",
                    );
                    (0, 0)
                }
            },
        };
        let content = match (&f.content, &f.content_base64) {
            (Some(t), None) => t.get_ref().as_bytes().to_vec(),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b.get_ref().trim())
                .unwrap_or_else(|_| {
                    c.err(b.span(), "files.content_base64 is not valid base64");
                    Vec::new()
                }),
            (Some(_), Some(b)) => {
                c.err(b.span(), "files: give content or content_base64, not both");
                Vec::new()
            }
            (None, None) => {
                c.err(span, "files: give content or content_base64");
                Vec::new()
            }
        };
        out.push(PlacedFile {
            path,
            mode,
            uid,
            gid,
            content,
        });
    }
    out
}

fn parse_owner(s: &str) -> Option<(u32, u32)> {
    if s == "root" {
        return Some((0, 0));
    }
    let (u, g) = s.split_once(':')?;
    Some((u.parse().ok()?, g.parse().ok()?))
}

/// A secret as a single word: no whitespace inside, not empty. The value is never quoted.
fn secret_word(c: &mut Checker<'_>, field: &str, v: &Option<Spanned<String>>) -> Option<String> {
    let v = v.as_ref()?;
    let s = v.get_ref().trim();
    if s.is_empty() || s.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
        c.err(
            v.span(),
            format!("secrets.{field} must be one word without spaces (value not shown)"),
        );
        return None;
    }
    Some(s.to_string())
}

fn pem(c: &mut Checker<'_>, field: &str, v: &Spanned<String>, kind: &str) -> String {
    let s = v.get_ref();
    let ok = s.contains("-----BEGIN ") && s.contains(kind) && s.contains("-----END ");
    if !ok {
        c.err(
            v.span(),
            format!("secrets.tls.{field} must be PEM text holding {kind} (value not shown)"),
        );
    }
    s.clone()
}

fn check_secrets(c: &mut Checker<'_>, s: &Spanned<model::Secrets>) -> SecretValues {
    let s = s.get_ref();
    let mut out = SecretValues {
        acl_bootstrap_secret: secret_word(c, "acl_bootstrap_secret", &s.acl_bootstrap_secret),
        nomad_token: secret_word(c, "nomad_token", &s.nomad_token),
        gossip_key: secret_word(c, "gossip_key", &s.gossip_key),
        tls: None,
    };
    if let (Some(key), Some(spanned)) = (&out.gossip_key, &s.gossip_key) {
        let len = base64::engine::general_purpose::STANDARD
            .decode(key)
            .map(|b| b.len());
        if !matches!(len, Ok(16 | 32)) {
            c.err(
                spanned.span(),
                "secrets.gossip_key must be base64 of 16 or 32 bytes, as `nomad operator \
                 gossip keyring generate` prints (value not shown)",
            );
        }
    }
    if let Some(tls) = &s.tls {
        let t = tls.get_ref();
        out.tls = Some(TlsMaterial {
            ca: pem(c, "ca", &t.ca, "CERTIFICATE"),
            cert: pem(c, "cert", &t.cert, "CERTIFICATE"),
            key: pem(c, "key", &t.key, "PRIVATE KEY"),
            verify_server_hostname: t.verify_server_hostname.unwrap_or(true),
        });
    }
    out
}
