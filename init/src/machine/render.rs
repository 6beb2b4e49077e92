//! From the checked user data and the platform's facts to the files that make it so (pure).
//!
//! The role, peers, TLS, gossip key and facts become a Nomad agent config fragment; the
//! `[init]` table (with the facts' hostname and the pack set's place) becomes the init
//! config override; secrets become root-only files. Nothing is invented beyond Nomad's own
//! config: discovery is Nomad's `server_join`.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::found::Facts;
use super::paths::Paths;
pub use super::paths::{
    AGENT_BASE, FRAGMENT_DIR, INIT_OVERRIDE, INSTALL_REQUEST, PACK_SET, UPGRADE_REQUEST,
};
use super::userdata::{MachineConfig, PlacedFile, Role};

/// The fragment this renders (first in lexical order: the user's fragments may override it).
pub const MACHINE_FRAGMENT: &str = "10-nomados-machine.json";
/// Prefix of the user's fragments in the fragment directory.
pub const USER_FRAGMENT_PREFIX: &str = "50-";

/// What applying the user data writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rendered {
    /// Files of the machine directory (relative paths), written root-only.
    pub machine_files: Vec<(PathBuf, Vec<u8>)>,
    /// Files of the secrets directory (relative paths), written root-only.
    pub secret_files: Vec<SecretFile>,
    /// The Nomad token of a node joining an existing cluster.
    pub token: Option<SecretFile>,
    pub files: Vec<PlacedFile>,
}

/// A secret's bytes; `Debug` shows only the name.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretFile {
    pub path: PathBuf,
    pub content: Vec<u8>,
}

impl std::fmt::Debug for SecretFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretFile({})", self.path.display())
    }
}

/// Why the user data cannot be rendered against this image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RenderError(pub String);

/// The inputs besides the user data.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub facts: &'a Facts,
    /// Which source answered (recorded as client meta `nomados.config_source`).
    pub source: &'a str,
    pub paths: &'a Paths,
    /// The baked agent config (JSON), needed to switch the server or client off.
    pub base_agent: Option<&'a Value>,
    /// Where `base_agent` was read from, for messages.
    pub base_agent_path: &'a Path,
    /// The pack set's text when it came from a URL (already fetched and verified).
    pub fetched_pack_set: Option<&'a str>,
}

/// Renders everything `config` asks for.
pub fn render(config: &MachineConfig, ctx: &Context<'_>) -> Result<Rendered, RenderError> {
    let paths = ctx.paths;
    let mut out = Rendered::default();

    let secrets = &config.secrets;
    let mut secret = |name: &str, content: &str| {
        out.secret_files.push(SecretFile {
            path: name.into(),
            content: content.as_bytes().to_vec(),
        });
    };
    if let Some(s) = &secrets.acl_bootstrap_secret {
        secret("acl-bootstrap-secret", s);
    }
    if let Some(k) = &secrets.gossip_key {
        secret("gossip-key", k);
    }
    if let Some(t) = &secrets.tls {
        secret("tls/ca.pem", &t.ca);
        secret("tls/cert.pem", &t.cert);
        secret("tls/key.pem", &t.key);
    }
    out.token = secrets.nomad_token.as_ref().map(|t| SecretFile {
        path: paths.token_file.clone(),
        content: format!("{t}\n").into_bytes(),
    });

    // The init config override: only what the user data says, plus what follows from it.
    let mut init = config.init.clone().unwrap_or_default();
    if !init.contains_key("hostname") {
        if let Some(h) = ctx
            .facts
            .hostname
            .as_deref()
            .map(short_hostname)
            .filter(|h| crate::boot::hostname::valid(h))
        {
            init.insert("hostname".into(), h.into());
        }
    }
    let pack_text = match &config.packs {
        Some(super::userdata::PackSetSource::Inline(t)) => Some(t.as_str()),
        Some(super::userdata::PackSetSource::Url { .. }) => match ctx.fetched_pack_set {
            Some(t) => Some(t),
            None => return Err(RenderError("the pack set was not fetched".into())),
        },
        None => None,
    };
    if let Some(text) = pack_text {
        out.machine_files
            .push((PACK_SET.into(), text.as_bytes().to_vec()));
        set_in(
            &mut init,
            "packs",
            "set",
            path_value(&paths.machine_dir.join(PACK_SET)),
        );
    }
    if let Some(role) = config.nomad.role {
        let base = ctx.base_agent.filter(|v| v.is_object()).ok_or_else(|| {
            RenderError(format!(
                "nomad.role needs the baked agent config {} as a JSON object (Nomad cannot switch \
                 a server or client off in a later file)",
                ctx.base_agent_path.display()
            ))
        })?;
        let adjusted = with_role(base, role);
        out.machine_files
            .push((AGENT_BASE.into(), pretty(&adjusted).into_bytes()));
        set_in(
            &mut init,
            "nomad",
            "config",
            path_value(&paths.machine_dir.join(AGENT_BASE)),
        );
    }
    if !init.is_empty() {
        out.machine_files.push((
            INIT_OVERRIDE.into(),
            toml::to_string(&init).unwrap_or_default().into_bytes(),
        ));
    }

    let fragments = Path::new(FRAGMENT_DIR);
    let machine = machine_fragment(config, ctx);
    out.machine_files.push((
        fragments.join(MACHINE_FRAGMENT),
        pretty(&machine).into_bytes(),
    ));
    for (name, content) in &config.fragments {
        out.machine_files.push((
            fragments.join(format!("{USER_FRAGMENT_PREFIX}{name}")),
            content.as_bytes().to_vec(),
        ));
    }
    if let Some(req) = &config.install {
        out.machine_files.push((
            INSTALL_REQUEST.into(),
            crate::install::options::to_words(req).into_bytes(),
        ));
    }
    if let Some(u) = &config.upgrade {
        // Root-only like every machine file: the URL may carry credentials.
        out.machine_files
            .push((UPGRADE_REQUEST.into(), u.to_json().to_string().into_bytes()));
    }
    out.files = config.files.clone();
    Ok(out)
}

/// `web-1.example.internal` → `web-1`: the kernel's hostname is one label here, as DHCP's.
fn short_hostname(h: &str) -> &str {
    h.split('.').next().unwrap_or(h)
}

fn path_value(p: &Path) -> toml::Value {
    toml::Value::String(p.display().to_string())
}

fn set_in(init: &mut toml::Table, table: &str, key: &str, value: toml::Value) {
    let entry = init
        .entry(table.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(t) = entry {
        t.insert(key.to_string(), value);
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

/// The baked agent config with `server.enabled`/`client.enabled` as the role says (and
/// no `bootstrap_expect` left on an agent that is no server).
pub fn with_role(base: &Value, role: Role) -> Value {
    let mut v = base.clone();
    if let Some(obj) = v.as_object_mut() {
        edit_block(obj, "server", |server| {
            server.insert("enabled".into(), role.server().into());
            if !role.server() {
                server.remove("bootstrap_expect");
            }
        });
        edit_block(obj, "client", |c| {
            c.insert("enabled".into(), role.client().into());
        });
    }
    v
}

/// Edits `obj[key]` as an object (made one if it is missing or something else).
fn edit_block(obj: &mut Map<String, Value>, key: &str, edit: impl FnOnce(&mut Map<String, Value>)) {
    let mut block = match obj.remove(key) {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    edit(&mut block);
    obj.insert(key.to_string(), Value::Object(block));
}

/// The agent config fragment: role, peers, names, gossip key, TLS and client meta.
pub fn machine_fragment(config: &MachineConfig, ctx: &Context<'_>) -> Value {
    let n = &config.nomad;
    let mut frag = Map::new();
    for (key, v) in [
        ("datacenter", &n.datacenter),
        ("region", &n.region),
        ("name", &n.name),
    ] {
        if let Some(v) = v {
            frag.insert(key.into(), v.clone().into());
        }
    }
    let join = json!({ "retry_join": n.retry_join });
    if let Some(role) = n.role {
        edit_block(&mut frag, "server", |server| {
            server.insert("enabled".into(), role.server().into());
            if let Some(be) = n.bootstrap_expect {
                server.insert("bootstrap_expect".into(), be.into());
            }
            if role.server() && !n.retry_join.is_empty() {
                server.insert("server_join".into(), join.clone());
            }
        });
        edit_block(&mut frag, "client", |client| {
            client.insert("enabled".into(), role.client().into());
            // A client that is also a server finds the cluster through its own server.
            if role == Role::Client && !n.retry_join.is_empty() {
                client.insert("server_join".into(), join);
            }
        });
    }
    if let Some(key) = &config.secrets.gossip_key {
        edit_block(&mut frag, "server", |s| {
            s.insert("encrypt".into(), key.clone().into());
        });
    }
    if let Some(t) = &config.secrets.tls {
        let file = |name: &str| ctx.paths.secrets_dir.join(name).display().to_string();
        frag.insert(
            "tls".into(),
            json!({
                "http": true,
                "rpc": true,
                "ca_file": file("tls/ca.pem"),
                "cert_file": file("tls/cert.pem"),
                "key_file": file("tls/key.pem"),
                "verify_server_hostname": t.verify_server_hostname,
            }),
        );
    }
    let mut meta = Map::new();
    let f = ctx.facts;
    for (key, v) in [
        ("instance_id", &f.instance_id),
        ("region", &f.region),
        ("zone", &f.zone),
        ("instance_type", &f.instance_type),
    ] {
        if let Some(v) = v {
            meta.insert(format!("nomados.{key}"), v.clone().into());
        }
    }
    meta.insert("nomados.config_source".into(), ctx.source.into());
    for (k, v) in &n.meta {
        meta.insert(k.clone(), v.clone().into());
    }
    edit_block(&mut frag, "client", |c| {
        c.insert("meta".into(), Value::Object(meta));
    });
    Value::Object(frag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::userdata;

    fn paths() -> Paths {
        Paths::under(&crate::sys::root::Root::real())
    }

    fn cfg(text: &str) -> MachineConfig {
        userdata::parse(Path::new("u"), text.as_bytes()).unwrap()
    }

    fn ctx<'a>(p: &'a Paths, facts: &'a Facts, base: Option<&'a Value>) -> Context<'a> {
        Context {
            facts,
            source: "nocloud",
            paths: p,
            base_agent: base,
            base_agent_path: Path::new("/etc/nomad.d/init.json"),
            fetched_pack_set: None,
        }
    }

    fn file<'a>(r: &'a Rendered, name: &str) -> &'a str {
        let (_, c) = r
            .machine_files
            .iter()
            .find(|(p, _)| p == Path::new(name))
            .unwrap_or_else(|| panic!("no {name} in {:?}", r.machine_files));
        std::str::from_utf8(c).unwrap()
    }

    fn shipped_agent() -> Value {
        serde_json::from_str(include_str!("../../../config/init.json")).unwrap()
    }

    #[test]
    fn a_server_gets_bootstrap_expect_retry_join_gossip_and_tls() {
        let c = cfg(r#"
[nomad]
role = "server"
bootstrap_expect = 3
retry_join = ["10.0.0.1", "provider=gce tag_value=nomad"]
datacenter = "dc1"
[secrets]
gossip_key = "cg8StVXbQJ0gPvMd9o7yrg=="
[secrets.tls]
ca = "-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----"
cert = "-----BEGIN CERTIFICATE-----\nB\n-----END CERTIFICATE-----"
key = "-----BEGIN PRIVATE KEY-----\nC\n-----END PRIVATE KEY-----"
"#);
        let p = paths();
        let facts = Facts::default();
        let base = shipped_agent();
        let r = render(&c, &ctx(&p, &facts, Some(&base))).unwrap();
        let frag: Value =
            serde_json::from_str(file(&r, "nomad.d/10-nomados-machine.json")).unwrap();
        assert_eq!(
            frag["server"],
            json!({"enabled": true, "bootstrap_expect": 3, "encrypt": "cg8StVXbQJ0gPvMd9o7yrg==",
                "server_join": {"retry_join": ["10.0.0.1", "provider=gce tag_value=nomad"]}})
        );
        assert_eq!(frag["client"]["enabled"], false);
        assert_eq!(frag["datacenter"], "dc1");
        assert_eq!(
            frag["tls"],
            json!({"http": true, "rpc": true, "verify_server_hostname": true,
                "ca_file": "/run/nomados/secrets/tls/ca.pem",
                "cert_file": "/run/nomados/secrets/tls/cert.pem",
                "key_file": "/run/nomados/secrets/tls/key.pem"})
        );
        let names: Vec<_> = r.secret_files.iter().map(|s| s.path.clone()).collect();
        assert_eq!(
            names,
            ["gossip-key", "tls/ca.pem", "tls/cert.pem", "tls/key.pem"].map(PathBuf::from)
        );
        // The baked config's client is switched off in the copy Nomad is started with.
        let agent: Value = serde_json::from_str(file(&r, "agent.json")).unwrap();
        assert_eq!(agent["client"]["enabled"], false);
        assert_eq!(agent["server"]["enabled"], true);
        assert_eq!(agent["data_dir"], base["data_dir"]);
        let init: toml::Table = toml::from_str(file(&r, "nomados.toml")).unwrap();
        assert_eq!(
            init["nomad"]["config"].as_str(),
            Some("/run/nomados/machine/agent.json")
        );
    }

    #[test]
    fn a_client_joins_through_client_server_join_and_drops_the_baked_server() {
        let c = cfg("[nomad]\nrole = \"client\"\nretry_join = [\"10.0.0.1\"]\n");
        let p = paths();
        let facts = Facts::default();
        let base = shipped_agent();
        let r = render(&c, &ctx(&p, &facts, Some(&base))).unwrap();
        let frag: Value =
            serde_json::from_str(file(&r, "nomad.d/10-nomados-machine.json")).unwrap();
        assert_eq!(frag["client"]["server_join"]["retry_join"][0], "10.0.0.1");
        assert_eq!(frag["server"], json!({"enabled": false}));
        let agent: Value = serde_json::from_str(file(&r, "agent.json")).unwrap();
        assert_eq!(agent["server"], json!({"enabled": false}));
        // Without a JSON base the role cannot be set: refused, not half done.
        let e = render(&c, &ctx(&p, &facts, None)).unwrap_err();
        assert!(e.0.contains("/etc/nomad.d/init.json"), "{e}");
    }

    #[test]
    fn facts_become_client_meta_and_the_hostname_and_user_meta_wins() {
        let c = cfg("[nomad.meta]\n\"nomados.zone\" = \"mine\"\nrack = \"r7\"\n");
        let p = paths();
        let facts = Facts {
            instance_id: Some("i-0abc".into()),
            hostname: Some("web-1.eu-west-1.compute.internal".into()),
            region: Some("eu-west-1".into()),
            zone: Some("eu-west-1a".into()),
            instance_type: Some("t3.small".into()),
        };
        let r = render(&c, &ctx(&p, &facts, None)).unwrap();
        let frag: Value =
            serde_json::from_str(file(&r, "nomad.d/10-nomados-machine.json")).unwrap();
        assert_eq!(
            frag["client"]["meta"],
            json!({"nomados.instance_id": "i-0abc", "nomados.region": "eu-west-1",
                "nomados.zone": "mine", "nomados.instance_type": "t3.small",
                "nomados.config_source": "nocloud", "rack": "r7"})
        );
        assert!(
            frag["client"].get("enabled").is_none(),
            "no role: the baked one stays"
        );
        let init: toml::Table = toml::from_str(file(&r, "nomados.toml")).unwrap();
        assert_eq!(init["hostname"].as_str(), Some("web-1"));
        // A hostname in the user data wins over the platform's.
        let c = cfg("[init]\nhostname = \"mine\"\n");
        let r = render(&c, &ctx(&p, &facts, None)).unwrap();
        let init: toml::Table = toml::from_str(file(&r, "nomados.toml")).unwrap();
        assert_eq!(init["hostname"].as_str(), Some("mine"));
    }

    #[test]
    fn an_upgrade_request_lands_in_the_machine_directory_for_pid_1() {
        let c = cfg(&format!(
            "[upgrade]\nurl = \"http://10.0.2.2:8000/nomados.slot\"\nsha256 = \"{}\"\n",
            "0".repeat(64)
        ));
        let p = paths();
        let facts = Facts::default();
        let r = render(&c, &ctx(&p, &facts, None)).unwrap();
        let v: Value = serde_json::from_str(file(&r, UPGRADE_REQUEST)).unwrap();
        assert_eq!(
            crate::slots::wanted::Wanted::from_json(&v).as_ref(),
            c.upgrade.as_ref()
        );
    }

    #[test]
    fn packs_fragments_token_and_files_land_where_they_belong() {
        let c = cfg(r#"
[packs]
inline = "_empty = true"
[[fragments]]
name = "x.hcl"
content = "log_level = \"DEBUG\""
[[files]]
path = "/etc/motd"
content = "hi"
[secrets]
nomad_token = "tok-1"
acl_bootstrap_secret = "boot-1"
"#);
        let p = paths();
        let facts = Facts::default();
        let r = render(&c, &ctx(&p, &facts, None)).unwrap();
        assert_eq!(file(&r, "packs.toml"), "_empty = true");
        assert_eq!(file(&r, "nomad.d/50-x.hcl"), "log_level = \"DEBUG\"");
        let init: toml::Table = toml::from_str(file(&r, "nomados.toml")).unwrap();
        assert_eq!(
            init["packs"]["set"].as_str(),
            Some("/run/nomados/machine/packs.toml")
        );
        let token = r.token.as_ref().unwrap();
        assert_eq!(
            token.path,
            PathBuf::from("/var/lib/nomad/nomados/nomad-token")
        );
        assert_eq!(token.content, b"tok-1\n");
        assert_eq!(
            r.secret_files[0].path,
            PathBuf::from("acl-bootstrap-secret")
        );
        assert_eq!(r.files[0].path, PathBuf::from("/etc/motd"));
        assert!(!format!("{r:?}").contains("tok-1"));
        assert!(!format!("{r:?}").contains("boot-1"));
        // A URL pack set is rendered from what was fetched.
        let url = cfg(&format!(
            "[packs]\nurl = \"https://h/s.toml\"\nsha256 = \"{}\"\n",
            "0".repeat(64)
        ));
        assert!(render(&url, &ctx(&p, &facts, None)).is_err());
        let mut with = ctx(&p, &facts, None);
        with.fetched_pack_set = Some("_empty = true\n");
        assert_eq!(
            file(&render(&url, &with).unwrap(), "packs.toml"),
            "_empty = true\n"
        );
    }
}
