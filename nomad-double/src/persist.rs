//! What a real agent keeps in its `data_dir` across restarts and the double must too, so
//! that a rebooted machine finds its cluster as it left it: the ACL bootstrap token (Nomad
//! keeps it in its Raft state). Only with a `data_dir` and outside `-dev`, as Nomad.
//! Also Nomad's operator file `<data_dir>/acl-bootstrap-reset`.

use crate::config::AgentConfig;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

const BOOTSTRAP_FILE: &str = "server/nomad-double-acl-bootstrap";
const RESET_FILE: &str = "acl-bootstrap-reset";

fn dir(config: &AgentConfig) -> Option<PathBuf> {
    (!config.dev && !config.data_dir.is_empty()).then(|| PathBuf::from(&config.data_dir))
}

/// The management token a bootstrap made before this start, if any.
pub fn bootstrap_token(config: &AgentConfig) -> Option<String> {
    let path = dir(config)?.join(BOOTSTRAP_FILE);
    let text = std::fs::read_to_string(path).ok()?;
    Some(text.trim().to_string()).filter(|t| !t.is_empty())
}

/// Keeps the bootstrap token (0600, atomically) for the next start.
pub fn save_bootstrap_token(config: &AgentConfig, secret: &str) -> std::io::Result<()> {
    let Some(dir) = dir(config) else {
        return Ok(());
    };
    let path = dir.join(BOOTSTRAP_FILE);
    let parent = path.parent().unwrap_or(&dir);
    std::fs::create_dir_all(parent)?;
    let tmp = parent.join(".nomad-double-acl-bootstrap.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(secret.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)
}

/// The reset index an operator wrote to `<data_dir>/acl-bootstrap-reset`, read at each
/// bootstrap request like Nomad does.
pub fn reset_index(config: &AgentConfig) -> Option<u64> {
    let text = std::fs::read_to_string(dir(config)?.join(RESET_FILE)).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bootstrap_token_survives_a_restart_only_with_a_data_dir_outside_dev() {
        let d = std::env::temp_dir().join(format!("nd-persist-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let mut c = AgentConfig {
            data_dir: d.display().to_string(),
            ..AgentConfig::default()
        };
        assert_eq!(bootstrap_token(&c), None);
        save_bootstrap_token(&c, "s3cr3t").unwrap();
        assert_eq!(bootstrap_token(&c).as_deref(), Some("s3cr3t"));
        std::fs::write(d.join(RESET_FILE), "12\n").unwrap();
        assert_eq!(reset_index(&c), Some(12));
        c.dev = true;
        assert_eq!(bootstrap_token(&c), None);
        assert_eq!(reset_index(&c), None);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
