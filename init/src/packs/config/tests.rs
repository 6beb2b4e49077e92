//! Unit tests of the loader on in-memory text.

use std::path::{Path, PathBuf};

use super::error::edit_distance;
use super::*;
use crate::packs::model::{Auth, AuthScheme, Origin, SecretSource, DEFAULT_OWNER};

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
fn a_non_ascii_host_is_refused_with_the_form_to_write_instead() {
    let e = parse("[a]\n_origin = \"https://bücher.example/a.tar.gz\"\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "/etc/nomados/packs.toml:2:11: `_origin` in pack `a`: invalid URL: the host name is not ASCII; write it in its `xn--` form"
    );
    // The same name in its ASCII form is an origin like any other.
    parse("[a]\n_origin = \"https://xn--bcher-kva.example/a.tar.gz\"\n").unwrap();
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
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("error: the pack set has 1 problem"),
        "{out}"
    );
    // The one-line form first, as docs/pack-set.md shows it, then the snippet.
    assert_eq!(
        lines.next(),
        Some("/etc/nomados/packs.toml:3:1: `port` in pack `redis` must be a job table (`[redis.port]`), found integer"),
        "{out}"
    );
    let snippet: Vec<_> = lines.collect();
    assert!(snippet.iter().any(|l| l.ends_with("3 | port = 5")), "{out}");
    assert!(
        snippet.iter().any(|l| l.trim_end().ends_with("| ^^^^")),
        "{out}"
    );
    // The message is not repeated in the snippet's title.
    assert_eq!(out.matches("must be a job table").count(), 1, "{out}");
}

#[test]
fn render_without_a_shown_line_gives_the_one_line_form_only() {
    let e = parse("[a]\n_origin = \"https://u:hunter2@h/p.tgz\"\n").unwrap_err();
    let out = e.render();
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(
        out.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("/etc/nomados/packs.toml:2:11: ")),
        "{out}"
    );
    assert!(!out.contains("hunter2"), "{out}");
}

#[test]
fn an_empty_set_must_be_said_explicitly() {
    for text in ["", "# nothing yet\n", "_name = \"edge\"\n"] {
        let e = err(text);
        assert_eq!(
            e,
            "/etc/nomados/packs.toml: the pack set declares no packs; applying it would stop \
             every job it manages. If that is meant, set `_empty = true` at the top level",
            "{text:?}"
        );
    }
    assert!(err("_empty = false\n").contains("declares no packs"));
    let set = ok("_empty = true\n_name = \"edge\"\n");
    assert!(set.packs.is_empty());
    assert_eq!(set.name, "edge");
    assert_eq!(
        err("_empty = 1\n"),
        "/etc/nomados/packs.toml:1:10: top-level `_empty` must be a boolean, found integer"
    );
    assert_eq!(
        err("_empty = true\n[a]\n_origin = \"p\"\n"),
        "/etc/nomados/packs.toml:1:10: `_empty = true` but the set declares packs; remove `_empty` or the packs"
    );
    // A broken file may hold the packs: only the syntax error is reported.
    let e = err("[a\n");
    assert!(!e.contains("declares no packs"), "{e}");
}

thread_local! {
    /// Bytes the line index counted to place something, for the linearity test.
    static SCANNED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

pub(super) fn note_scanned(bytes: usize) {
    SCANNED.with(|s| s.set(s.get() + bytes));
}

/// `packs` packs with two jobs and a few variables each.
fn generated_set(packs: usize) -> String {
    (0..packs)
        .map(|i| {
            format!(
                "[p{i}]\n_origin = \"packs\"\n[p{i}.a]\nport = {i}\ntags = [\"x\", \"é\"]\n\
                 [p{i}.b]\ntls = {{ on = true }}\n"
            )
        })
        .collect()
}

#[test]
fn placing_a_key_costs_the_same_in_small_and_large_sets() {
    // Bytes scanned per located key must not grow with the file: with a scan from the start of
    // the text for each key, 4x the packs meant 16x the bytes.
    let scanned = |packs| {
        SCANNED.with(|s| s.set(0));
        let set = ok(&generated_set(packs));
        assert_eq!(set.packs.len(), packs);
        SCANNED.with(|s| s.get())
    };
    let small = scanned(500);
    let large = scanned(2000);
    assert!(small > 0);
    assert!(
        large <= small * 5,
        "4x the packs scanned {large} bytes against {small}"
    );
}

#[test]
fn many_packs_jobs_and_variables_across_files_merge_in_order() {
    let first = generated_set(300);
    let second: String = (0..300)
        .rev()
        .map(|i| format!("[p{i}.a]\nport = {}\nnew = 1\n[p{i}.c]\n", i + 1))
        .collect();
    let set = build(
        &[
            (Path::new("/p/10.toml"), first.as_str()),
            (Path::new("/p/20.toml"), second.as_str()),
        ],
        true,
        Vec::new(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.packs.len(), 300);
    for (i, pack) in set.packs.iter().enumerate() {
        assert_eq!(pack.key, format!("p{i}"));
        let jobs: Vec<_> = pack.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(jobs, ["a", "b", "c"]);
        let a = &pack.jobs[0];
        assert_eq!(a.vars["port"], serde_json::json!(i + 1));
        assert_eq!(a.vars["new"], serde_json::json!(1));
        assert_eq!(a.vars["tags"], serde_json::json!(["x", "é"]));
        assert_eq!(
            a.location.to_string(),
            format!("/p/10.toml:{}:1", 7 * i + 3)
        );
    }
}

#[test]
fn locations_match_a_plain_scan_across_index_blocks() {
    use crate::diag::Location;

    // Multi-byte characters straddling the index's block boundaries, long and short lines.
    let text = format!(
        "a = 1\n{}\n\n{}é\r\nz",
        "é€😀x".repeat(150),
        "ab".repeat(300)
    );
    let file = Path::new("/f.toml");
    let doc = source::Doc::new(file, &text);
    for offset in 0..=text.len() + 2 {
        assert_eq!(
            doc.loc(&(offset..offset)),
            Location::from_offset(file, &text, offset),
            "offset {offset}"
        );
    }
    assert_eq!(doc.line_text(4), format!("{}é", "ab".repeat(300)));
    assert_eq!(doc.line_text(5), "z");
    assert_eq!(doc.line_text(6), "");
    assert_eq!(doc.line_text(0), "");
}

#[test]
fn a_set_past_the_token_limit_is_refused_before_it_is_parsed() {
    // 2 tokens per 2 bytes: a set far under the byte limit, but past the token limit.
    let head = "[p]\n_origin = \"r\"\n[p.j]\nx = [";
    let text = format!("{head}{}1]\n", "1,".repeat(MAX_SET_TOKENS / 2 + 10));
    assert!((text.len() as u64) < MAX_SET_FILE_BYTES / 4);
    let e = err(&text);
    // `head` is 21 tokens (`p.j` is three); then `1` and `,` alternate from column 6.
    let column = 6 + MAX_SET_TOKENS - 21;
    assert_eq!(
        e,
        format!(
            "/etc/nomados/packs.toml:4:{column}: the pack set holds more than {MAX_SET_TOKENS} TOML tokens (keys, values, punctuation, line breaks) by here; a pack set declares packs and their variables: bulk data belongs in a pack's files"
        )
    );
    // Exactly at the limit (21 + 2n + `1`, `]`, ` `, line break, end of input) loads.
    let n = (MAX_SET_TOKENS - 26) / 2;
    let set = ok(&format!("{head}{}1] \n", "1,".repeat(n)));
    let x = set.packs[0].jobs[0].vars["x"].as_array().map(Vec::len);
    assert_eq!(x, Some(n + 1));
}

#[test]
fn the_token_limit_counts_every_file_of_a_directory_together() {
    let (a, b) = (Path::new("/s/a.toml"), Path::new("/s/b.toml"));
    let docs = [Doc::new(a, "x = 1\n"), Doc::new(b, "y = 2\n")];
    // `x`, ` `, `=`, ` `, `1`, line break, end of input: 7 tokens a file.
    assert!(over_token_limit(&docs, 14).is_none());
    let problem = over_token_limit(&docs, 13).expect("14 tokens > 13");
    assert!(
        problem
            .to_string()
            .starts_with("/s/b.toml:2:1: the pack set holds more than 13 TOML tokens"),
        "{problem}"
    );
}
