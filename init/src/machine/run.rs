//! `nomad-init machine-config apply`: the child PID 1 runs after the network is up and
//! before Nomad starts. Finds the user data, checks it whole, renders and applies it.
//! Any failure leaves the baked configuration in force (exit code 1); finding nothing is
//! not a failure (exit code 0, nothing written).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::found::Found;
use super::paths::Paths;
use super::render::{self, Context};
use super::sources::{self, url};
use super::userdata::{self, MachineConfig, PackSetSource};
use crate::sys::root::Root;

/// Agent configs are small; a bigger one is not what we expect.
const MAX_AGENT_CONFIG_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub root: Root,
    /// The kernel command line (`nomados.config=<url>` is read from it).
    pub cmdline: String,
    /// The baked agent config (`nomad.config` of the baked init config).
    pub agent_config: PathBuf,
}

/// How the run ended, as the child's exit code says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Applied what a source gave.
    Applied,
    /// No source present: the baked configuration stays.
    NothingFound,
    /// A source failed or its user data was refused: the baked configuration stays.
    Refused,
}

impl Outcome {
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Applied | Outcome::NothingFound => 0,
            Outcome::Refused => 1,
        }
    }
}

pub async fn apply(opts: &ApplyOptions) -> Outcome {
    let kernel = crate::boot::cmdline::parse(&opts.cmdline);
    let source_opts = sources::Options {
        root: opts.root.clone(),
        url: kernel.config_url.clone(),
        url_sha256: kernel.config_sha256.clone(),
        url_limits: url::Limits::default(),
        providers_deadline: Duration::from_secs(30),
    };
    let found = match sources::find(&source_opts).await {
        Ok(Some(found)) => found,
        Ok(None) => {
            crate::info!("machine config: no source present; the baked configuration stays");
            return Outcome::NothingFound;
        }
        Err(e) => {
            crate::error!("machine config: {e}; the baked configuration stays");
            return Outcome::Refused;
        }
    };
    crate::info!("machine config: {}", sources::describe(&found));
    match apply_found(opts, &found).await {
        Ok(summary) => {
            crate::info!(
                "machine config from {}: applied; provides {summary}",
                found.source
            );
            Outcome::Applied
        }
        Err(e) => {
            for line in e.lines() {
                crate::error!("machine config from {}: {line}", found.source);
            }
            crate::error!(
                "machine config from {}: refused; the baked configuration stays",
                found.source
            );
            Outcome::Refused
        }
    }
}

/// Checks, renders and applies; the error is the message to log (secrets scrubbed).
async fn apply_found(opts: &ApplyOptions, found: &Found) -> Result<String, String> {
    let config = match &found.user_data {
        Some(bytes) => {
            userdata::parse(&user_data_name(found.source), bytes).map_err(|e| e.to_string())?
        }
        None => MachineConfig::default(),
    };
    apply_checked(opts, found, &config).await?;
    Ok(config.summary())
}

/// How a source's user data is named in errors.
pub(super) fn user_data_name(source: &str) -> PathBuf {
    PathBuf::from(format!("{source}:user-data"))
}

/// Sources read without the network (a drive, fw_cfg, the image): the only ones whose
/// user data may configure it (`[init.network]`). PID 1 then starts the network again
/// with it before Nomad starts.
pub const EARLY_SOURCES: [&str; 4] = ["nocloud", "config-2", "fw_cfg", "baked"];

/// `[init.network]` from a source that needs the network to be read is refused.
fn network_from_early_source(found: &Found, config: &MachineConfig) -> Result<(), String> {
    let sets_network = config
        .init
        .as_ref()
        .is_some_and(|t| t.contains_key("network"));
    if sets_network && !EARLY_SOURCES.contains(&found.source) {
        return Err(format!(
            "init.network cannot come from {}: that source is read over the network, so it \
             cannot configure it; give [init.network] on a config drive (nocloud, config-2), \
             in fw_cfg or in the image's nomados.toml",
            found.source
        ));
    }
    Ok(())
}

/// Renders and applies `config` (checked whole from `found`'s user data); the error is
/// the message to log (secrets scrubbed). The user data itself is kept beside what it
/// rendered, root-only, for long-lived mode to compare a new version with.
pub(super) async fn apply_checked(
    opts: &ApplyOptions,
    found: &Found,
    config: &MachineConfig,
) -> Result<(), String> {
    network_from_early_source(found, config)?;
    let scrub = config.secrets.redactor();
    let fetched = match &config.packs {
        Some(PackSetSource::Url { url, sha256 }) => Some(fetch_pack_set(url, sha256).await?),
        _ => None,
    };
    let agent_path = config
        .init
        .as_ref()
        .and_then(|t| t.get("nomad")?.get("config")?.as_str().map(PathBuf::from))
        .map_or_else(|| opts.agent_config.clone(), |p| opts.root.path(p));
    let base = read_agent_config(&agent_path);
    let paths = Paths::under(&opts.root);
    let ctx = Context {
        facts: &found.facts,
        source: found.source,
        paths: &paths,
        base_agent: base.as_ref(),
        base_agent_path: &agent_path,
        fetched_pack_set: fetched.as_deref(),
    };
    let mut rendered = render::render(config, &ctx).map_err(|e| scrub.scrub(&e.to_string()))?;
    let view = api_view(&rendered, base.as_ref()).map_err(|e| scrub.scrub(&e))?;
    rendered
        .machine_files
        .push((super::paths::AGENT_VIEW.into(), view));
    if let Some(bytes) = &found.user_data {
        rendered
            .machine_files
            .push((super::paths::APPLIED_USER_DATA.into(), bytes.clone()));
    }
    super::apply::apply(&rendered, &paths).map_err(|e| scrub.scrub(&format!("{e:#}")))
}

/// The API keys of the agent config Nomad will run with (`agent.json` when rendered, else
/// the baked base; then the fragment directory), as JSON for PID 1.
fn api_view(rendered: &render::Rendered, baked: Option<&Value>) -> Result<Vec<u8>, String> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut base = baked.cloned();
    let mut fragments = Vec::new();
    for (path, content) in &rendered.machine_files {
        if path == Path::new(super::paths::AGENT_BASE) {
            base = serde_json::from_slice(content).ok();
        } else if let Ok(name) = path.strip_prefix(super::paths::FRAGMENT_DIR) {
            fragments.push((name.display().to_string(), text(content)));
        }
    }
    let view = super::hcl::api_view(base.as_ref(), &fragments)
        .map_err(|e| format!("agent config fragment {e}"))?;
    Ok(serde_json::to_vec_pretty(&view).unwrap_or_default())
}

async fn fetch_pack_set(url: &str, sha256: &str) -> Result<String, String> {
    let limits = url::Limits {
        max_bytes: crate::packs::config::MAX_SET_FILE_BYTES,
        ..url::Limits::default()
    };
    let body = url::fetch(url, Some(sha256), &limits)
        .await
        .map_err(|e| format!("packs.url: {e}"))?;
    let text = String::from_utf8(body).map_err(|_| "packs.url: not UTF-8 text".to_string())?;
    let shown = PathBuf::from(crate::redact::url(url));
    crate::packs::config::parse_str(&shown, &text)
        .map_err(|e| format!("packs.url: {}", e.render().trim_end()))?;
    Ok(text)
}

fn read_agent_config(path: &Path) -> Option<Value> {
    let bytes = crate::fsutil::read_bounded(path, MAX_AGENT_CONFIG_BYTES).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(root: &Path, cmdline: &str) -> ApplyOptions {
        let agent = root.join("etc/nomad.d/init.json");
        std::fs::create_dir_all(agent.parent().unwrap()).unwrap();
        std::fs::write(&agent, include_str!("../../../config/init.json")).unwrap();
        ApplyOptions {
            root: Root::test(root),
            cmdline: cmdline.into(),
            agent_config: agent,
        }
    }

    fn fw_cfg(root: &Path, text: &str) {
        let fw = root.join(sources::FW_CFG_USER_DATA.trim_start_matches('/'));
        std::fs::create_dir_all(fw.parent().unwrap()).unwrap();
        std::fs::write(&fw, text).unwrap();
    }

    #[tokio::test]
    async fn a_good_user_data_is_applied_and_a_broken_one_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(dir.path(), "console=ttyS0");
        assert_eq!(apply(&o).await, Outcome::NothingFound);
        let paths = Paths::under(&o.root);
        assert!(!paths.machine_dir.exists());

        fw_cfg(
            dir.path(),
            "[nomad]\nrole = \"client\"\nretry_join = [\"10.0.0.1\"]\n[secrets]\nnomad_token = \"tok-42\"\n",
        );
        assert_eq!(apply(&o).await, Outcome::Applied);
        let frag =
            std::fs::read_to_string(paths.fragment_dir().join(render::MACHINE_FRAGMENT)).unwrap();
        assert!(frag.contains("\"fw_cfg\""), "{frag}");
        assert_eq!(std::fs::read(&paths.token_file).unwrap(), b"tok-42\n");
        let init = std::fs::read_to_string(paths.init_override()).unwrap();
        assert!(init.contains("machine/agent.json"), "{init}");

        // Broken: one bad field among good ones; the previous result stays whole.
        fw_cfg(
            dir.path(),
            "[nomad]\nrole = \"server\"\nbootstrap_expect = 0\n",
        );
        assert_eq!(apply(&o).await, Outcome::Refused);
        let still =
            std::fs::read_to_string(paths.fragment_dir().join(render::MACHINE_FRAGMENT)).unwrap();
        assert_eq!(still, frag);
    }

    #[tokio::test]
    async fn hcl_fragments_reach_pid1_through_the_api_view() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(dir.path(), "console=ttyS0");
        fw_cfg(
            dir.path(),
            "[nomad]\nrole = \"server\"\n[[fragments]]\nname = \"api.hcl\"\ncontent = \"\"\"\n\
             ports {\n  http = 4747\n}\naddresses {\n  http = \"127.0.0.2\"\n}\nacl {\n  enabled = true\n}\n\"\"\"\n",
        );
        assert_eq!(apply(&o).await, Outcome::Applied);
        let paths = Paths::under(&o.root);
        let view = paths.machine_dir.join(super::super::paths::AGENT_VIEW);
        let agent = crate::nomad::LocalAgent::from_files(&view, &[]);
        assert_eq!(agent.addr, "http://127.0.0.2:4747");
        assert!(agent.acl_enabled && agent.server, "{agent:?}");
        // Only the API keys: nothing else of the agent config is repeated there.
        let v: Value = serde_json::from_slice(&std::fs::read(&view).unwrap()).unwrap();
        assert!(
            v.get("data_dir").is_none() && v.get("log_file").is_none(),
            "{v}"
        );
        // A broken HCL fragment: refused whole, the view stays as it was.
        let before = std::fs::read(&view).unwrap();
        fw_cfg(
            dir.path(),
            "[[fragments]]\nname = \"api.hcl\"\ncontent = \"ports {\"\n",
        );
        assert_eq!(apply(&o).await, Outcome::Refused);
        assert_eq!(std::fs::read(&view).unwrap(), before);
    }

    const NETWORK: &str = "[[init.network.interfaces]]\nname = \"eth0\"\n\
        static = { address = \"10.77.0.11/24\", gateway = \"10.77.0.1\" }\n";

    #[tokio::test]
    async fn init_network_comes_from_early_sources_only() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(dir.path(), "console=ttyS0");
        fw_cfg(dir.path(), NETWORK);
        assert_eq!(apply(&o).await, Outcome::Applied);
        let paths = Paths::under(&o.root);
        let init = std::fs::read_to_string(paths.init_override()).unwrap();
        let t: toml::Table = toml::from_str(&init).unwrap();
        assert_eq!(
            t["network"]["interfaces"][0]["static"]["address"].as_str(),
            Some("10.77.0.11/24"),
            "{init}"
        );
        // A broken table is refused with the field named, before anything is applied.
        let broken = NETWORK.replace("10.77.0.11/24", "10.77.0.11");
        let e = userdata::parse(Path::new("u"), broken.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("init.network.interfaces[0].static.address"),
            "{e}"
        );
        // A URL is read over the network: it cannot configure it.
        let found = Found {
            source: "cmdline-url",
            user_data: Some(NETWORK.as_bytes().to_vec()),
            facts: Default::default(),
        };
        let e = apply_found(&o, &found).await.unwrap_err();
        assert!(
            e.starts_with("init.network cannot come from cmdline-url"),
            "{e}"
        );
        for source in ["ec2", "gce", "azure", "openstack"] {
            let found = Found {
                source,
                ..found.clone()
            };
            assert!(apply_found(&o, &found).await.is_err(), "{source}");
        }
        assert_eq!(
            std::fs::read_to_string(paths.init_override()).unwrap(),
            init
        );
    }

    #[tokio::test]
    async fn an_install_table_is_handed_to_pid1_as_install_words() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(dir.path(), "console=ttyS0");
        fw_cfg(
            dir.path(),
            "[install]\ntarget = \"/dev/sda\"\nwipe = true\n",
        );
        assert_eq!(apply(&o).await, Outcome::Applied);
        let paths = Paths::under(&o.root);
        let file = paths
            .machine_dir
            .join(crate::machine::paths::INSTALL_REQUEST);
        let words = std::fs::read_to_string(&file).unwrap();
        assert_eq!(
            words,
            "nomados.install=/dev/sda nomados.install.image=iso nomados.install.wipe=1"
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "an image URL may carry credentials");
        // A user data without [install] leaves no request behind.
        fw_cfg(dir.path(), "[nomad]\nrole = \"client\"\n");
        assert_eq!(apply(&o).await, Outcome::Applied);
        assert!(!file.exists());
    }

    #[tokio::test]
    async fn the_cmdline_url_wins_over_fw_cfg_and_its_sha256_is_checked() {
        use sha2::Digest as _;
        let dir = tempfile::tempdir().unwrap();
        fw_cfg(dir.path(), "[nomad]\nrole = \"client\"\n");
        let body = "[nomad]\nrole = \"server\"\nbootstrap_expect = 1\n";
        let app = axum::Router::new().route("/m1", axum::routing::get(move || async move { body }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let sha = hex::encode(sha2::Sha256::digest(body.as_bytes()));
        let o = opts(
            dir.path(),
            &format!("nomados.config=http://{addr}/m1 nomados.config.sha256={sha}"),
        );
        assert_eq!(apply(&o).await, Outcome::Applied);
        let paths = Paths::under(&o.root);
        let frag =
            std::fs::read_to_string(paths.fragment_dir().join(render::MACHINE_FRAGMENT)).unwrap();
        assert!(
            frag.contains("\"cmdline-url\"") && frag.contains("\"bootstrap_expect\": 1"),
            "{frag}"
        );
        let wrong = opts(
            dir.path(),
            &format!(
                "nomados.config=http://{addr}/m1 nomados.config.sha256={}",
                "0".repeat(64)
            ),
        );
        assert_eq!(apply(&wrong).await, Outcome::Refused);
    }
}
