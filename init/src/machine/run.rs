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
    let name = PathBuf::from(format!("{}:user-data", found.source));
    let config = match &found.user_data {
        Some(bytes) => userdata::parse(&name, bytes).map_err(|e| e.to_string())?,
        None => MachineConfig::default(),
    };
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
    let rendered = render::render(&config, &ctx).map_err(|e| scrub.scrub(&e.to_string()))?;
    super::apply::apply(&rendered, &paths).map_err(|e| scrub.scrub(&format!("{e:#}")))?;
    Ok(config.summary())
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
