use std::path::{Path, PathBuf};

use super::*;

const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";
const GOSSIP: &str = "cg8StVXbQJ0gPvMd9o7yrg==";

fn ok(text: &str) -> MachineConfig {
    parse(Path::new("user-data"), text.as_bytes()).unwrap()
}

/// Every error as `line:column: message`.
fn errs(text: &str) -> Vec<String> {
    parse(Path::new("user-data"), text.as_bytes())
        .unwrap_err()
        .0
        .into_iter()
        .map(|e| format!("{}:{}: {}", e.location.line, e.location.column, e.message))
        .collect()
}

fn one_err(text: &str) -> String {
    let e = errs(text);
    assert_eq!(e.len(), 1, "{e:?}");
    e[0].clone()
}

#[test]
fn a_full_user_data_parses_into_every_field() {
    let text = format!(
        r#"
[init]
hostname = "node-1"
[init.packs]
interval_secs = 0

[nomad]
role = "both"
bootstrap_expect = 3
retry_join = ["10.0.0.1", "10.0.0.2:4648", "provider=aws tag_key=nomad tag_value=fleet"]
datacenter = "dc-1"
region = "eu"
name = "n1"
meta = {{ rack = "r1", "team/x" = "y" }}

[[fragments]]
name = "50-telemetry.json"
content = '{{"telemetry": {{"collection_interval": "5s"}}}}'
[[fragments]]
name = "60-extra.hcl"
content = "log_level = \"DEBUG\""

[packs]
url = "https://example.com/set.toml"
sha256 = "{sha}"

[[files]]
path = "/etc/motd"
mode = "0640"
owner = "100:101"
content = "hello\n"
[[files]]
path = "/var/lib/nomad/blob"
content_base64 = "AAEC"

[secrets]
acl_bootstrap_secret = "0b6d3c1e-9f8a-4a41-9f0e-6a7c1d2e3f40"
nomad_token = "tok-1234"
gossip_key = "{GOSSIP}"
[secrets.tls]
ca = """{CA}"""
cert = """{CA}"""
key = """{KEY}"""
verify_server_hostname = false
"#,
        sha = "a".repeat(64)
    );
    let m = ok(&text);
    let init = m.init.as_ref().unwrap();
    assert_eq!(init["hostname"].as_str(), Some("node-1"));
    assert_eq!(init["packs"]["interval_secs"].as_integer(), Some(0));
    assert!(
        !init.contains_key("nomad"),
        "only the keys written override the baked file"
    );
    assert_eq!(m.nomad.role, Some(Role::Both));
    assert_eq!(m.nomad.bootstrap_expect, Some(3));
    assert_eq!(m.nomad.retry_join.len(), 3);
    assert_eq!(m.nomad.datacenter.as_deref(), Some("dc-1"));
    assert_eq!(m.nomad.region.as_deref(), Some("eu"));
    assert_eq!(m.nomad.name.as_deref(), Some("n1"));
    assert_eq!(m.nomad.meta["team/x"], "y");
    assert_eq!(m.fragments[0].0, "50-telemetry.json");
    assert_eq!(m.fragments[1].1, "log_level = \"DEBUG\"");
    assert_eq!(
        m.packs,
        Some(PackSetSource::Url {
            url: "https://example.com/set.toml".into(),
            sha256: "a".repeat(64)
        })
    );
    assert_eq!(
        m.files[0],
        PlacedFile {
            path: PathBuf::from("/etc/motd"),
            mode: 0o640,
            uid: 100,
            gid: 101,
            content: b"hello\n".to_vec()
        }
    );
    assert_eq!(m.files[1].content, [0, 1, 2]);
    assert_eq!((m.files[1].mode, m.files[1].uid), (0o644, 0));
    assert_eq!(m.secrets.nomad_token.as_deref(), Some("tok-1234"));
    let tls = m.secrets.tls.as_ref().unwrap();
    assert!(!tls.verify_server_hostname);
    assert_eq!(tls.key, KEY);
    let summary = m.summary();
    assert!(
        summary.contains("role both")
            && summary.contains("secrets [acl_bootstrap_secret, nomad_token, gossip_key, tls]"),
        "{summary}"
    );
    let shown = format!("{m:?} {summary}");
    for secret in ["tok-1234", "0b6d3c1e", GOSSIP, "MIIE"] {
        assert!(!shown.contains(secret), "{secret} leaked: {shown}");
    }
}

#[test]
fn an_empty_document_is_valid_and_provides_nothing() {
    let m = ok("# nothing here\n");
    assert_eq!(m, MachineConfig::default());
    assert_eq!(m.summary(), "nothing");
}

#[test]
fn inline_pack_sets_are_checked_by_the_pack_set_loader() {
    let m = ok(
        "[packs]\ninline = '''\n[web]\n_origin = \"/etc/nomados/packs.d/web\"\n[web.site]\n'''\n",
    );
    assert!(matches!(m.packs, Some(PackSetSource::Inline(_))));
    // An error inside the inline text points into the user data.
    let e = errs("[packs]\ninline = '''\n[web]\n_origin = 5\n'''\n");
    assert!(!e.is_empty());
    assert!(e[0].starts_with("4:"), "{e:?}");
    assert!(e[0].contains("packs.inline"), "{e:?}");
}

#[test]
fn syntax_and_type_errors_name_line_and_column() {
    assert_eq!(
        one_err("[nomad]\nrole = \"leader\"\n"),
        "2:8: unknown variant `leader`, expected one of `server`, `client`, `both`"
    );
    let e = one_err("[nomad]\nrol = \"server\"\n");
    assert!(e.starts_with("2:1: unknown field `rol`"), "{e}");
    let e = one_err("[secrets]\nnomad_token = \"unterminated\n");
    assert!(e.starts_with("2:"), "{e}");
    assert!(!e.contains("unterminated"), "the value is not echoed: {e}");
    let e = one_err("colour = 1\n");
    assert!(e.starts_with("1:1: unknown field `colour`"), "{e}");
}

#[test]
fn cloud_init_and_binary_user_data_are_refused_plainly() {
    assert!(one_err("#cloud-config\nusers: []\n").contains("cloud-init user data"));
    assert!(one_err("#!/bin/sh\necho hi\n").contains("cloud-init user data"));
    assert_eq!(
        parse(Path::new("u"), &[0xff, 0xfe])
            .unwrap_err()
            .to_string(),
        "u:1:1: the user data is not UTF-8 text"
    );
}

#[test]
fn init_is_checked_by_the_init_configs_rules() {
    let e = one_err("[init]\nhostname = \"bad_name\"\n");
    assert!(
        e.starts_with("1:1: init:") && e.contains("invalid hostname"),
        "{e}"
    );
    let e = one_err("[init.nomad]\nbinary = \"nomad\"\n");
    assert!(e.contains("binary must be an absolute path"), "{e}");
    // The network's own rules, the field named (which sources may set it: run.rs).
    let e = one_err("[init.network]\ninterface = \"eth0\"\n");
    assert!(
        e.contains("init.network.interface: unknown field `interface`"),
        "{e}"
    );
    let e = one_err("[init.data]\nlabel = \"X\"\n");
    assert!(
        e.contains("init.data cannot come from the user data"),
        "{e}"
    );
    let e = one_err("[init]\nhostnme = \"x\"\n");
    assert!(e.starts_with("2:1: unknown field `hostnme`"), "{e}");
}

#[test]
fn role_rules() {
    let e = one_err("[nomad]\nrole = \"client\"\nbootstrap_expect = 3\n");
    assert_eq!(
        e,
        "3:20: nomad.bootstrap_expect only applies to servers (role \"server\" or \"both\")"
    );
    let e = one_err("[nomad]\nrole = \"server\"\nbootstrap_expect = 0\n");
    assert!(
        e.starts_with("3:20: nomad.bootstrap_expect must be between 1 and 255"),
        "{e}"
    );
    let e = one_err("[nomad]\nbootstrap_expect = 3\n");
    assert!(e.contains("needs nomad.role"), "{e}");
    let e = one_err("[nomad]\nretry_join = [\"10.0.0.1\"]\n");
    assert!(
        e.starts_with("1:1: nomad.retry_join needs nomad.role"),
        "{e}"
    );
    let e = one_err("[nomad]\nrole = \"client\"\nretry_join = [\"a b\"]\n");
    assert!(
        e.starts_with("3:15: nomad.retry_join[0] is an address"),
        "{e}"
    );
    let e = one_err("[nomad]\ndatacenter = \"dc 1\"\n");
    assert!(e.starts_with("2:14: nomad.datacenter must be"), "{e}");
    let e = one_err("[nomad]\nregion = \"\"\n");
    assert!(e.contains("nomad.region must be"), "{e}");
    let e = one_err("[nomad]\nname = \"a/b\"\n");
    assert!(e.contains("nomad.name must be"), "{e}");
    let e = one_err("[nomad.meta]\n\"a b\" = \"x\"\n");
    assert!(e.contains("nomad.meta key \"a b\""), "{e}");
    let e = one_err("[nomad.meta]\nk = \"a\\u0007\"\n");
    assert!(e.contains("control characters"), "{e}");
}

#[test]
fn fragment_rules() {
    let e = one_err("[[fragments]]\nname = \"../x.json\"\ncontent = \"{}\"\n");
    assert!(e.starts_with("2:8: fragments.name must be"), "{e}");
    let e = one_err("[[fragments]]\nname = \"x.yaml\"\ncontent = \"{}\"\n");
    assert!(e.contains("ending in .json or .hcl"), "{e}");
    let e = one_err(
        "[[fragments]]\nname = \"a.json\"\ncontent = \"{}\"\n[[fragments]]\nname = \"a.json\"\ncontent = \"{}\"\n",
    );
    assert!(e.starts_with("5:8: fragment a.json is given twice"), "{e}");
    // A JSON error is located inside the multi-line string.
    let e = one_err("[[fragments]]\nname = \"a.json\"\ncontent = '''\n{\n  \"x\": ,\n}\n'''\n");
    assert!(e.starts_with("5:8: fragment a.json: invalid JSON"), "{e}");
    let e = one_err("[[fragments]]\nname = \"a.json\"\ncontent = \"[1]\"\n");
    assert!(e.contains("a JSON agent config is an object"), "{e}");
    let e = one_err("[[fragments]]\nname = \"a.hcl\"\ncontent = \"  \"\n");
    assert!(e.contains("fragment a.hcl is empty"), "{e}");
    let e = one_err("[[fragments]]\nname = \"a.hcl\"\n");
    assert!(e.contains("missing field `content`"), "{e}");
}

#[test]
fn pack_source_rules() {
    let e = one_err("[packs]\nurl = \"https://h/set.toml\"\n");
    assert!(e.starts_with("2:7: packs.url needs packs.sha256"), "{e}");
    let e = one_err(
        "[packs]\nurl = \"ftp://h/x\"\nsha256 = \"{}\"\n"
            .replace("{}", &"0".repeat(64))
            .as_str(),
    );
    assert!(e.starts_with("2:7: packs.url must be an http"), "{e}");
    let e = one_err("[packs]\nurl = \"https://h/x\"\nsha256 = \"abc\"\n");
    assert!(e.starts_with("3:10: packs.sha256 must be 64"), "{e}");
    let e = one_err("[packs]\ninline = \"\"\nurl = \"https://h/x\"\n");
    assert!(e.contains("not both"), "{e}");
    let e = one_err("[packs]\n");
    assert!(e.contains("give inline"), "{e}");
}

#[test]
fn upgrade_rules() {
    let sha = "AB".repeat(32);
    let c = ok(&format!(
        "[upgrade]\nurl = \"https://u:p@img.example/nomados.slot\"\nsha256 = \"{sha}\"\nversion = \"2.0\"\n"
    ));
    let u = c.upgrade.as_ref().unwrap();
    assert_eq!(u.sha256, "ab".repeat(32), "lowercased");
    assert_eq!(u.version.as_deref(), Some("2.0"));
    let summary = c.summary();
    assert!(summary.contains("upgrade to NomadOS 2.0"), "{summary}");
    assert!(
        !summary.contains("u:p"),
        "credentials in the log: {summary}"
    );
    let e = one_err("[upgrade]\nurl = \"https://h/x\"\n");
    assert!(e.contains("missing field `sha256`"), "{e}");
    let e = one_err(&format!(
        "[upgrade]\nurl = \"file:///x\"\nsha256 = \"{sha}\"\n"
    ));
    assert!(e.starts_with("2:7: upgrade.url must be an http"), "{e}");
    let e = one_err("[upgrade]\nurl = \"https://h/x\"\nsha256 = \"abc\"\n");
    assert!(e.starts_with("3:10: upgrade.sha256 must be 64"), "{e}");
    let e = one_err(&format!(
        "[upgrade]\nurl = \"https://h/x\"\nsha256 = \"{sha}\"\nversion = \"a b\"\n"
    ));
    assert!(e.starts_with("4:11: upgrade.version must be"), "{e}");
    let e = one_err(&format!(
        "[upgrade]\nurl = \"https://h/x\"\nsha256 = \"{sha}\"\nreboot = false\n"
    ));
    assert!(e.contains("unknown field `reboot`"), "{e}");
}

#[test]
fn file_rules() {
    let e = one_err("[[files]]\npath = \"etc/x\"\ncontent = \"\"\n");
    assert!(e.starts_with("2:8: files.path must be an absolute"), "{e}");
    let e = one_err("[[files]]\npath = \"/etc/../x\"\ncontent = \"\"\n");
    assert!(e.contains("without '.' or '..'"), "{e}");
    let e = one_err("[[files]]\npath = \"/proc/sys/kernel/x\"\ncontent = \"\"\n");
    assert!(e.contains("may not be under /proc"), "{e}");
    let e = one_err("[[files]]\npath = \"/run/nomados/secrets/x\"\ncontent = \"\"\n");
    assert!(e.contains("may not be under /run/nomados"), "{e}");
    let e = one_err("[[files]]\npath = \"/x\"\nmode = \"999\"\ncontent = \"\"\n");
    assert!(e.starts_with("3:8: files.mode is octal"), "{e}");
    let e = one_err("[[files]]\npath = \"/x\"\nowner = \"nomad\"\ncontent = \"\"\n");
    assert!(e.starts_with("3:9: files.owner"), "{e}");
    let e = one_err("[[files]]\npath = \"/x\"\ncontent_base64 = \"!!\"\n");
    assert!(e.contains("not valid base64"), "{e}");
    let e = one_err("[[files]]\npath = \"/x\"\n");
    assert!(e.contains("give content or content_base64"), "{e}");
    let e = one_err("[[files]]\npath = \"/x\"\ncontent = \"\"\ncontent_base64 = \"\"\n");
    assert!(e.contains("not both"), "{e}");
    let e = one_err(
        "[[files]]\npath = \"/x\"\ncontent = \"\"\n[[files]]\npath = \"/x\"\ncontent = \"\"\n",
    );
    assert!(e.contains("/x is given twice"), "{e}");
}

#[test]
fn secret_errors_never_show_the_value() {
    let cases = [
        (
            "[secrets]\nnomad_token = \"my secret token\"\n",
            "2:15: secrets.nomad_token must be one word",
        ),
        (
            "[secrets]\nacl_bootstrap_secret = \"\"\n",
            "2:24: secrets.acl_bootstrap_secret",
        ),
        (
            "[secrets]\ngossip_key = \"c2VjcmV0LWtleQ==\"\n",
            "2:14: secrets.gossip_key must be base64 of 16 or 32",
        ),
        (
            "[secrets.tls]\nca = \"secret-ca\"\ncert = \"secret-c\"\nkey = \"secret-k\"\n",
            "2:6: secrets.tls.ca must be PEM",
        ),
    ];
    for (text, want) in cases {
        let all = errs(text);
        assert!(all[0].starts_with(want), "{all:?}");
        let joined = all.join("\n");
        for secret in ["my secret token", "c2VjcmV0LWtleQ", "secret-ca", "secret-k"] {
            assert!(!joined.contains(secret), "{joined}");
        }
    }
    let e = one_err(&format!(
        "[secrets.tls]\nca = \"\"\"{CA}\"\"\"\ncert = \"\"\"{CA}\"\"\"\n"
    ));
    assert!(e.contains("missing field `key`"), "{e}");
}

#[test]
fn all_problems_are_reported_at_once_in_order() {
    let e = errs("[nomad]\nregion = \"a b\"\n[[files]]\npath = \"rel\"\ncontent = \"\"\n[secrets]\nnomad_token = \"a b\"\n");
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(
        e[0].starts_with("2:") && e[1].starts_with("4:") && e[2].starts_with("7:"),
        "{e:?}"
    );
}

#[test]
fn the_schema_accepts_the_documented_example_shape() {
    let schema = schema::json_schema();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let doc = serde_json::json!({
        "nomad": {"role": "server", "bootstrap_expect": 3, "retry_join": ["10.0.0.1"]},
        "packs": {"url": "https://h/x", "sha256": "a".repeat(64)},
        "files": [{"path": "/etc/x", "content": "y"}],
        "secrets": {"gossip_key": GOSSIP}
    });
    assert!(validator.is_valid(&doc));
    assert!(!validator.is_valid(&serde_json::json!({"nomad": {"role": "leader"}})));
    assert!(!validator.is_valid(&serde_json::json!({"packs": {"url": "https://h/x"}})));
    let upgrade = serde_json::json!({"upgrade": {"url": "https://h/nomados.slot", "sha256": "a".repeat(64), "version": "2"}});
    assert!(validator.is_valid(&upgrade));
    assert!(!validator.is_valid(&serde_json::json!({"upgrade": {"url": "https://h/x"}})));
    assert!(!validator.is_valid(&serde_json::json!({"colour": 1})));
}

/// Every `toml` block of docs/machine-config.md is a valid user data.
#[test]
fn the_documented_examples_are_valid() {
    let doc = include_str!("../../../../docs/machine-config.md");
    let mut blocks = 0;
    let mut rest = doc;
    while let Some(start) = rest.find("```toml\n") {
        let body = &rest[start + 8..];
        let end = body.find("```").unwrap();
        let text = &body[..end];
        if let Err(e) = parse(Path::new("docs/machine-config.md"), text.as_bytes()) {
            panic!("example {blocks} is refused: {e}\n{text}");
        }
        blocks += 1;
        rest = &body[end..];
    }
    assert!(blocks >= 8, "only {blocks} examples found");
}

/// Editors load the schema from docs/user-data.schema.json; it must match the code.
/// Regenerate with `UPDATE_SCHEMA=1 cargo test -p nomad-init --lib committed_user_data`.
#[test]
fn committed_user_data_schema_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/user-data.schema.json");
    let want = serde_json::to_string_pretty(&schema::json_schema()).unwrap() + "\n";
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "{} is stale; regenerate it with UPDATE_SCHEMA=1 cargo test -p nomad-init --lib committed_user_data",
        path.display()
    );
}

#[test]
fn install_table_is_the_same_request_as_the_command_line() {
    use crate::install::options::{from_cmdline, ImageSource, Request};
    let sha = "ab".repeat(32);
    let c = ok(&format!(
        "[install]\ntarget = \"/dev/sda\"\nimage = \"https://h.example/nomados.raw.xz\"\nsha256 = \"{sha}\"\nwipe = true\n"
    ));
    let want = Request {
        target: "/dev/sda".into(),
        source: ImageSource::Url {
            url: "https://h.example/nomados.raw.xz".into(),
            sha256: sha.clone(),
        },
        wipe: true,
    };
    assert_eq!(c.install.as_ref(), Some(&want));
    let cmdline = format!(
        "nomados.install=/dev/sda nomados.install.image=https://h.example/nomados.raw.xz nomados.install.sha256={sha} nomados.install.wipe=1"
    );
    assert_eq!(from_cmdline(&cmdline).unwrap(), Some(want));
    assert!(
        c.summary().contains("install to /dev/sda"),
        "{}",
        c.summary()
    );

    // Defaults: the booted ISO's image, no wipe.
    let c = ok("[install]\ntarget = \"/dev/nvme0n1\"\n");
    let r = c.install.unwrap();
    assert_eq!((r.source, r.wipe), (ImageSource::Iso(None), false));
    let c = ok("[install]\ntarget = \"/dev/vda\"\nimage = \"iso:/dev/sr0\"\n");
    assert_eq!(
        c.install.unwrap().source,
        ImageSource::Iso(Some("/dev/sr0".into()))
    );
    assert!(ok("").install.is_none());
}

#[test]
fn install_table_errors_point_at_the_field() {
    assert_eq!(
        one_err("[install]\ntarget = \"sda\"\n"),
        "2:10: install.target `sda` is not a whole disk under /dev (like /dev/sda)"
    );
    let e = one_err("[install]\ntarget = \"/dev/sda\"\nimage = \"https://h/x.raw\"\n");
    assert!(
        e.starts_with("3:9: install.image is a URL but install.sha256 is missing"),
        "{e}"
    );
    let e = one_err(
        "[install]\ntarget = \"/dev/sda\"\nimage = \"https://h/x.raw\"\nsha256 = \"abc\"\n",
    );
    assert!(
        e.starts_with("4:10: install.sha256: expected 64 hex digits"),
        "{e}"
    );
    let e = one_err("[install]\ntarget = \"/dev/sda\"\nimage = \"ftp://u:pw@h/x\"\n");
    assert!(e.starts_with("3:9: install.image `ftp://"), "{e}");
    assert!(!e.contains("pw"), "credentials are not echoed: {e}");
    let e = one_err("[install]\ntarget = \"/dev/sda\"\nimage = \"https://h/a b\"\n");
    assert!(e.contains("spaces"), "{e}");
    // Both problems at once, in file order; a missing target is serde's.
    let e = errs("[install]\ntarget = \"/dev/a/b\"\nsha256 = \"xyz\"\n");
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].starts_with("2:10:") && e[1].starts_with("3:10:"),
        "{e:?}"
    );
    let e = one_err("[install]\nwipe = true\n");
    assert!(e.contains("target"), "{e}");
    let e = one_err("[install]\ntarget = \"/dev/sda\"\nforce = true\n");
    assert!(e.contains("force"), "{e}");
}

#[test]
fn schema_knows_the_install_table() {
    let schema = schema::json_schema();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let sha = "ab".repeat(32);
    assert!(validator.is_valid(&serde_json::json!({"install": {"target": "/dev/sda"}})));
    assert!(validator.is_valid(&serde_json::json!({"install": {
        "target": "/dev/sda", "image": "https://h/x.raw.xz", "sha256": sha, "wipe": true}})));
    assert!(validator.is_valid(
        &serde_json::json!({"install": {"target": "/dev/sda", "image": "iso:/dev/sr0"}})
    ));
    assert!(!validator.is_valid(&serde_json::json!({"install": {"wipe": true}})));
    assert!(!validator.is_valid(&serde_json::json!({"install": {"target": "sda"}})));
    assert!(!validator
        .is_valid(&serde_json::json!({"install": {"target": "/dev/sda", "image": "ftp://x"}})));
}

#[test]
fn malformed_join_entries_are_refused_naming_the_entry_never_its_value() {
    let join = |list: &str| format!("[nomad]\nrole = \"server\"\nretry_join = [{list}]\n");
    // Good: addresses, and cloud auto-join strings as Nomad takes them.
    let good = join(
        "\"10.0.0.1\", \"[::1]:4648\", \"nomad-1.example:4648\", \
         \"provider=aws tag_key=nomad tag_value=fleet\", \
         \"provider=azure tag_name=n tag_value=s secret_access_key=Zm9v+/bar=\"",
    );
    assert_eq!(ok(&good).nomad.retry_join.len(), 5);
    let secret = "s3cr3t-v4lue";
    for (entry, why) in [
        ("\"\"".to_string(), "[1] is empty"),
        ("\"   \"".to_string(), "[1] is empty"),
        (
            "\"10.0.0.2\\u0007\"".to_string(),
            "[1] contains control characters",
        ),
        (
            format!("\"provider=aws\\nsecret_access_key={secret}\""),
            "[1] contains control characters",
        ),
        (
            format!("\"provider=aws tag_key=nomad {}\"", "x".repeat(600)),
            "[1] is longer than 512 bytes",
        ),
        (
            "\"provider= tag_key=a\"".to_string(),
            "[1] is a cloud auto-join string: it starts",
        ),
        (
            format!("\"tag_key=a provider=aws secret_access_key={secret}\""),
            "[1] is a cloud auto-join string: it starts",
        ),
        (
            format!("\"provider=aws tag_key secret_access_key={secret}\""),
            "[1] is a cloud auto-join string: every word is key=value",
        ),
        ("\"tag_key=nomad\"".to_string(), "[1] is an address"),
    ] {
        let e = one_err(&join(&format!("\"10.0.0.1\", {entry}")));
        assert!(
            e.starts_with(&format!("3:27: nomad.retry_join{why}")),
            "{entry}: {e}"
        );
        assert!(!e.contains(secret), "{e}");
    }
    let many: Vec<String> = (0..65).map(|i| format!("\"10.0.0.{i}\"")).collect();
    let e = one_err(&join(&many.join(", ")));
    assert!(
        e.contains("nomad.retry_join has more than 64 entries"),
        "{e}"
    );
}
