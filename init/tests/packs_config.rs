//! The pack-set loader on real files and directories, and its JSON Schema against real
//! documents (fixtures under tests/fixtures/config).

use std::fs;
use std::path::{Path, PathBuf};

use nomad_init::packs::config::{self, ConfigError, Problem};
use nomad_init::packs::model::{Auth, AuthScheme, Origin, PackSet, SecretSource};
use nomad_init::packs::schema;
use serde_json::{json, Value};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config")
}

/// A temp directory `packs.d` holding `files` (name, text).
fn pack_dir(files: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("packs.d");
    fs::create_dir(&dir).expect("mkdir");
    for (name, text) in files {
        fs::write(dir.join(name), text).expect("write fixture");
    }
    (tmp, dir)
}

fn load_ok(path: &Path) -> PackSet {
    config::load(path).unwrap_or_else(|e| panic!("unexpected error:\n{e}"))
}

fn load_err(path: &Path) -> ConfigError {
    match config::load(path) {
        Ok(set) => panic!("expected an error, got {set:#?}"),
        Err(e) => e,
    }
}

#[test]
fn directory_files_merge_key_by_key_last_one_wins() {
    let (_tmp, dir) = pack_dir(&[
        (
            "10-base.toml",
            r#"_name = "base"

[redis]
_origin = "../packs"
_sha256 = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

[redis.cache]
port = 6379
replicas = ["a", "b", "c"]
tls = { enabled = true, ca = "/ca.pem" }
note = "keep me"
_allow-drivers = ["docker", "java"]

[redis.queue]
port = 6380
"#,
        ),
        (
            "20-redis.toml",
            r#"[web]
_origin = "web"

[redis.cache]
replicas = ["z"]
tls = { enabled = false }
extra = 1
_allow-drivers = []

[redis.sessions]
port = 6381
"#,
        ),
        (
            "30-final.toml",
            r#"_name = "prod"
[redis]
_origin = "https://h/redis.tar.gz"
[redis.queue]
port = ""
[web.site]
"#,
        ),
        // Not part of the set: hidden, wrong suffix, a directory named like a file.
        (".hidden.toml", "this is not toml ="),
        ("README.md", "not toml either ="),
    ]);
    fs::create_dir(dir.join("nested.toml")).expect("mkdir");
    fs::write(dir.join("nested.toml/inner.toml"), "junk =").expect("write");

    let set = load_ok(&dir);
    assert_eq!(set.name, "prod");
    assert_eq!(
        set.files,
        vec![
            dir.join("10-base.toml"),
            dir.join("20-redis.toml"),
            dir.join("30-final.toml")
        ]
    );
    let keys: Vec<_> = set.packs.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["redis", "web"], "order of first declaration");

    let redis = &set.packs[0];
    // A later `_origin` replaced the earlier one; the pin set earlier still applies.
    assert_eq!(redis.origin, Origin::Http("https://h/redis.tar.gz".into()));
    assert_eq!(redis.sha256.as_deref(), Some(&*"a".repeat(64)));
    assert_eq!(
        redis.location.to_string(),
        format!("{}:3:1", dir.join("10-base.toml").display())
    );
    let jobs: Vec<_> = redis.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(jobs, ["cache", "queue", "sessions"]);

    let cache = &redis.jobs[0];
    assert_eq!(cache.vars["port"], json!(6379), "kept from the first file");
    assert_eq!(cache.vars["note"], json!("keep me"));
    assert_eq!(
        cache.vars["replicas"],
        json!(["z"]),
        "arrays are replaced whole"
    );
    assert_eq!(
        cache.vars["tls"],
        json!({ "enabled": false }),
        "inline tables are replaced whole, not merged"
    );
    assert_eq!(cache.vars["extra"], json!(1), "later files add keys");
    assert!(cache.allow_drivers.is_empty(), "set empty by a later file");
    assert_eq!(cache.vars.len(), 5);
    assert_eq!(
        cache.location.to_string(),
        format!("{}:7:1", dir.join("10-base.toml").display())
    );

    assert_eq!(redis.jobs[1].vars["port"], json!(""), "set empty");
    assert_eq!(redis.jobs[2].vars["port"], json!(6381));
    assert_eq!(
        redis.jobs[2].location.to_string(),
        format!("{}:10:1", dir.join("20-redis.toml").display())
    );

    let web = &set.packs[1];
    assert_eq!(web.origin, Origin::Local(dir.join("web")));
    assert_eq!(web.jobs.len(), 1);
    assert_eq!(web.jobs[0].name, "site");
    assert_eq!(
        web.jobs[0].location.to_string(),
        format!("{}:6:1", dir.join("30-final.toml").display())
    );
}

#[test]
fn files_merge_in_lexical_order_not_creation_order() {
    let (_tmp, dir) = pack_dir(&[
        ("b.toml", "[p]\n_origin = \"from-b\"\n[p.late]\n"),
        ("a.toml", "[p]\n_origin = \"from-a\"\n[p.early]\n"),
    ]);
    let set = load_ok(&dir);
    assert_eq!(set.packs[0].origin, Origin::Local(dir.join("from-b")));
    let jobs: Vec<_> = set.packs[0].jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(jobs, ["early", "late"]);
}

#[test]
fn errors_point_at_the_file_that_caused_them() {
    let (_tmp, dir) = pack_dir(&[
        (
            "10-base.toml",
            "[web]\n_origin = \"/srv/web\"\n[web.site]\n_allow-drivers = \"docker\"\n",
        ),
        (
            "20-redis.toml",
            "# redis without origin\n\n\n[redis]\n[redis.main]\nport = 1\n",
        ),
        (
            "30-pin.toml",
            "[web]\n_sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n",
        ),
    ]);
    let e = load_err(&dir);
    let text = e.to_string();
    let lines: Vec<_> = text.lines().collect();
    let d = dir.display();
    assert_eq!(
        lines,
        [
            format!("{d}/10-base.toml:4:18: `_allow-drivers` in job `web.site` must be an array of strings, found string"),
            format!("{d}/20-redis.toml:4:1: pack `redis` has no `_origin`; set it to a directory or an http(s) archive URL"),
            format!("{d}/30-pin.toml:2:11: `_sha256` in pack `web`: _sha256 pins downloaded archives; a local origin cannot be pinned"),
        ]
    );
    assert_eq!(e.source_errors().count(), 3);
}

#[test]
fn a_later_origin_replaces_a_local_one_and_resolves_against_its_own_file() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let file = tmp.path().join("conf/packs.toml");
    fs::create_dir(tmp.path().join("conf")).expect("mkdir");
    fs::write(&file, "[a]\n_origin = \"./a\"\n[b]\n_origin = \"../b\"\n").expect("write");
    let set = load_ok(&file);
    assert_eq!(
        set.packs[0].origin,
        Origin::Local(tmp.path().join("conf/./a"))
    );
    assert_eq!(
        set.packs[1].origin,
        Origin::Local(tmp.path().join("conf/../b"))
    );
    assert_eq!(set.files, vec![file]);
}

#[test]
fn auth_files_resolve_against_the_setting_file() {
    let (_tmp, dir) = pack_dir(&[(
        "a.toml",
        "[p]\n_origin = \"https://h/p.tgz\"\n_auth = { type = \"basic\", file = \"creds/p\" }\n",
    )]);
    let set = load_ok(&dir);
    assert_eq!(
        set.packs[0].auth,
        Some(Auth {
            scheme: AuthScheme::Basic { username: None },
            secret: SecretSource::File(dir.join("creds/p")),
        })
    );
}

#[test]
fn syntax_errors_in_one_file_do_not_hide_problems_in_others() {
    let (_tmp, dir) = pack_dir(&[
        ("10-broken.toml", "[redis\n_origin = \"x\"\n"),
        ("20-ok.toml", "[redis.main]\n_bogus = 1\n"),
    ]);
    let text = load_err(&dir).to_string();
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with(&format!("{}/10-broken.toml:1:", dir.display())),
        "{text}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "{}/20-ok.toml:2:1: unknown key `_bogus` in job `redis.main`",
            dir.display()
        )),
        "{text}"
    );
    // The broken file might set redis' origin: no guess that it is missing.
    assert!(!text.contains("has no `_origin`"), "{text}");
}

#[test]
fn empty_directory_is_an_error() {
    let (_tmp, dir) = pack_dir(&[("notes.txt", "")]);
    let e = load_err(&dir);
    assert_eq!(
        e.to_string(),
        format!("no *.toml files in {}", dir.display())
    );
    assert!(matches!(e.problems(), [Problem::EmptyDir { .. }]));
}

#[test]
fn unreadable_paths_name_the_file() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let missing = tmp.path().join("nope.toml");
    let e = load_err(&missing);
    assert!(
        e.to_string()
            .starts_with(&format!("{}: ", missing.display())),
        "{e}"
    );
    assert!(matches!(e.problems(), [Problem::Io { .. }]));

    let (_tmp, dir) = pack_dir(&[("a.toml", "[p]\n_origin = \"x\"\n")]);
    fs::write(dir.join("b.toml"), b"[q]\n_origin = \"\xff\"\n").expect("write");
    let e = load_err(&dir);
    let text = e.to_string();
    assert!(
        text.starts_with(&format!("{}: ", dir.join("b.toml").display())),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1, "{text}");
}

#[test]
fn the_good_fixtures_load_as_one_directory() {
    let dir = fixtures().join("good");
    let set = load_ok(&dir);
    assert_eq!(set.name, "edge");
    let keys: Vec<_> = set.packs.iter().map(|p| p.key.as_str()).collect();
    // dotted.toml < full.toml < split-origin.toml
    assert_eq!(keys, ["web", "api", "redis", "monitoring"]);
    let redis = &set.packs[2];
    assert_eq!(redis.jobs[0].vars["memory_mb"], json!(512));
    assert_eq!(redis.jobs[0].vars["replicas"], json!([]));
}

#[test]
fn every_bad_fixture_is_rejected_with_a_located_error() {
    let mut seen = 0;
    for path in toml_files(&fixtures().join("bad")) {
        let e = load_err(&path);
        let first = e.to_string();
        assert!(
            first.starts_with(&format!("{}:", path.display())),
            "{}: {first}",
            path.display()
        );
        assert!(!first.contains("pass"), "credentials echoed: {first}");
        seen += 1;
    }
    assert!(seen >= 10, "only {seen} bad fixtures");
}

// ---------------------------------------------------------------------------------------------
// JSON Schema

fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .expect("fixture dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

/// A TOML document as the JSON an editor's schema validator sees.
fn toml_to_json(text: &str) -> Value {
    fn convert(v: toml::Value) -> Value {
        match v {
            toml::Value::String(s) => Value::String(s),
            toml::Value::Integer(i) => json!(i),
            toml::Value::Float(f) => json!(f),
            toml::Value::Boolean(b) => Value::Bool(b),
            toml::Value::Datetime(d) => Value::String(d.to_string()),
            toml::Value::Array(a) => Value::Array(a.into_iter().map(convert).collect()),
            toml::Value::Table(t) => {
                Value::Object(t.into_iter().map(|(k, v)| (k, convert(v))).collect())
            }
        }
    }
    convert(toml::Value::Table(text.parse().expect("fixture is TOML")))
}

fn validator() -> jsonschema::Validator {
    jsonschema::draft202012::new(&schema::json_schema()).expect("schema compiles")
}

#[test]
fn schema_is_a_valid_draft_2020_12_schema() {
    let s = schema::json_schema();
    jsonschema::meta::validate(&s).expect("valid against the 2020-12 meta-schema");
    assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
    // It survives a round trip through text (what editors load).
    let text = serde_json::to_string_pretty(&s).expect("serialise");
    let back: Value = serde_json::from_str(&text).expect("parse");
    assert_eq!(back, s);
}

/// The 2020-12 validator, and a draft 7 one: editors (Taplo) may only know older drafts, so
/// the schema sticks to keywords that mean the same in both.
fn validators() -> [(&'static str, jsonschema::Validator); 2] {
    let s = schema::json_schema();
    [
        ("2020-12", validator()),
        (
            "draft 7",
            jsonschema::draft7::new(&s).expect("schema compiles as draft 7"),
        ),
    ]
}

#[test]
fn schema_accepts_the_good_fixtures() {
    for (draft, v) in validators() {
        for path in toml_files(&fixtures().join("good")) {
            let doc = toml_to_json(&fs::read_to_string(&path).expect("read"));
            let errors: Vec<_> = v.iter_errors(&doc).map(|e| e.to_string()).collect();
            assert!(
                errors.is_empty(),
                "{draft}: {}: {errors:#?}",
                path.display()
            );
        }
    }
}

#[test]
fn schema_rejects_the_bad_fixtures() {
    for (draft, v) in validators() {
        for path in toml_files(&fixtures().join("bad")) {
            let doc = toml_to_json(&fs::read_to_string(&path).expect("read"));
            assert!(
                !v.is_valid(&doc),
                "{draft}: {} passed the schema",
                path.display()
            );
        }
    }
}

#[test]
fn schema_shape_matches_the_format() {
    for (draft, v) in validators() {
        // `_origin` is optional in one file: a directory may set it elsewhere.
        assert!(v.is_valid(&json!({ "redis": { "main": { "port": 1 } } })));
        assert!(v.is_valid(&json!({ "_name": "x", "p": { "_origin": "/srv", "j": {} } })));
        // Template variables take any value.
        assert!(v.is_valid(&json!({ "p": { "j": { "a": [1, {"b": null}], "c": "d" } } })));
        for bad in [
            json!({ "_name": "" }),
            json!({ "_name": "a b" }),
            json!({ "p": { "_sha256": "A".repeat(64) } }),
            json!({ "p": { "_origin": "https://h/p.tar.gz.asc" } }),
            json!({ "p": { "_origin": "" } }),
            json!({ "p": { "_auth": { "type": "basic" } } }),
            json!({ "p": { "_auth": { "type": "token", "env": "T" } } }),
            json!({ "p": { "j": { "_allow-drivers": [""] } } }),
            json!({ "p": { "j": 3 } }),
            json!({ "p": { "_origin-name": ".." } }),
            json!({ "p q": {} }),
        ] {
            assert!(!v.is_valid(&bad), "{draft}: schema accepted {bad}");
        }
        for good in [
            "https://h/p.TAR.GZ",
            "http://h:8080/a/b.tgz?x=1",
            "file:///srv/packs",
            "../packs",
        ] {
            let doc = json!({ "p": { "_origin": good } });
            assert!(v.is_valid(&doc), "{draft}: schema rejected {good}");
        }
    }
}

/// Editors load the schema from docs/pack-set.schema.json; it must match the code.
/// Regenerate with `UPDATE_SCHEMA=1 cargo test -p nomad-init --test packs_config committed`.
#[test]
fn committed_schema_file_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/pack-set.schema.json");
    let want = serde_json::to_string_pretty(&schema::json_schema()).expect("serialise") + "\n";
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        let tmp = path.with_extension("json.tmp");
        fs::write(&tmp, &want).expect("write schema");
        fs::rename(&tmp, &path).expect("replace schema");
    }
    let have = fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "{} is stale; regenerate it with \
         UPDATE_SCHEMA=1 cargo test -p nomad-init --test packs_config committed",
        path.display()
    );
}

/// The merge example of docs/pack-set.md, verbatim.
#[test]
fn documented_merge_example_holds() {
    let (_tmp, dir) = pack_dir(&[
        (
            "10-base.toml",
            r#"[redis]
_origin = "/srv/packs"

[redis.sessions]
port = 6379
replicas = ["a", "b", "c"]
tls = { enabled = true, ca = "/etc/ssl/ca.pem" }
"#,
        ),
        (
            "20-prod.toml",
            r#"[redis]
_origin = "https://packs.example.com/redis.tar.gz"   # replaces the directory origin

[redis.sessions]
replicas = ["z"]                 # replaces the whole array
tls = { enabled = false }        # replaces the whole table: `ca` is gone

[redis.queue]                    # adds a job
port = 6380
"#,
        ),
    ]);
    let set = load_ok(&dir);
    let redis = &set.packs[0];
    assert_eq!(
        redis.origin,
        Origin::Http("https://packs.example.com/redis.tar.gz".into())
    );
    let jobs: Vec<_> = redis.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(jobs, ["sessions", "queue"]);
    let vars = &redis.jobs[0].vars;
    assert_eq!(vars["port"], json!(6379));
    assert_eq!(vars["replicas"], json!(["z"]));
    assert_eq!(vars["tls"], json!({ "enabled": false }));
    assert_eq!(redis.jobs[1].vars["port"], json!(6380));
}

#[test]
fn symlinks_to_files_count_and_dangling_ones_are_reported() {
    let (tmp, dir) = pack_dir(&[("10-a.toml", "[a.job]\n")]);
    let real = tmp.path().join("b-real.toml");
    fs::write(&real, "[a]\n_origin = \"/srv\"\n").expect("write");
    std::os::unix::fs::symlink(&real, dir.join("20-b.toml")).expect("symlink");
    let set = load_ok(&dir);
    assert_eq!(set.packs[0].origin, Origin::Local("/srv".into()));
    assert_eq!(set.files.len(), 2);

    std::os::unix::fs::symlink(tmp.path().join("gone"), dir.join("30-c.toml")).expect("symlink");
    let e = load_err(&dir);
    assert_eq!(e.problems().len(), 1, "{e}");
    assert!(
        e.to_string()
            .starts_with(&format!("{}: ", dir.join("30-c.toml").display())),
        "{e}"
    );
}
