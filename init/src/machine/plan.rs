//! Long-lived mode, the pure part: what a changed user data asks of the running machine
//! ([`plan`], from the configuration in force and the new one, both checked whole), and
//! when to poll its URL next ([`next_poll`]). The effects are in [`super::poll`] (the
//! child that fetches, checks and writes) and `crate::supervise::machine` (PID 1, which
//! restarts Nomad, runs the applier and sets the hostname as the plan says).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::userdata::MachineConfig;
use crate::boot::config::InitConfig;

/// What PID 1 must do after a changed user data was written. Files and secrets are
/// already rewritten by the child (atomically, secrets 0600) when PID 1 reads this.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Why Nomad must restart to read its new agent config (empty: it need not).
    pub restart_nomad: Vec<String>,
    /// The pack set changed: run the applier.
    pub reapply_packs: bool,
    /// Placed files rewritten because they are new or changed.
    pub files: Vec<PathBuf>,
    /// Secrets rewritten (names only, never values).
    pub secrets: Vec<String>,
    /// The hostname to set (the user data's `init.hostname` changed to this).
    pub hostname: Option<String>,
    /// What changed but is read once at boot (`[packs]` added or removed): written, in
    /// force after a reboot.
    pub next_boot: Vec<String>,
    /// `[init]` changed: PID 1 layers it over its baked config again and follows what it
    /// can ([`init_changes`]); it names the rest.
    #[serde(default)]
    pub init_changed: bool,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// One line for the log: what changes, no values.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.restart_nomad.is_empty() {
            parts.push(format!("restart nomad ({})", self.restart_nomad.join(", ")));
        }
        if self.reapply_packs {
            parts.push("apply the pack set".to_string());
        }
        if !self.files.is_empty() {
            let names: Vec<_> = self.files.iter().map(|p| p.display().to_string()).collect();
            parts.push(format!("files [{}]", names.join(", ")));
        }
        if !self.secrets.is_empty() {
            parts.push(format!("secrets [{}]", self.secrets.join(", ")));
        }
        if let Some(h) = &self.hostname {
            parts.push(format!("hostname {h}"));
        }
        if !self.next_boot.is_empty() {
            parts.push(format!("at the next boot: {}", self.next_boot.join(", ")));
        }
        if self.init_changed {
            parts.push("[init] changed".to_string());
        }
        if parts.is_empty() {
            "nothing to do".to_string()
        } else {
            parts.join("; ")
        }
    }
}

/// `init` keys PID 1 follows while running (long-lived mode; see [`init_changes`]): the
/// hostname, the machine-config child's own settings (each poll is a new child), and how
/// PID 1 reaches Nomad's API (every client is built from the settings in force). The rest
/// is read once at boot.
pub const LIVE_INIT_KEYS: [&str; 11] = [
    "hostname",
    "machine.poll_secs",
    "machine.memory_max_mib",
    "machine.deadline_secs",
    "nomad.addr",
    "nomad.token_file",
    "nomad.ca_file",
    "nomad.client_cert_file",
    "nomad.client_key_file",
    "nomad.tls_server_name",
    "nomad.tls_skip_verify",
];

/// How PID 1's own configuration changed (the baked `nomados.toml` with the user data's
/// `[init]` over it, before and after), key by key (`section.key`, sorted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitChanges {
    /// Followed at once ([`LIVE_INIT_KEYS`]).
    pub live: Vec<String>,
    /// In force after the next boot.
    pub next_boot: Vec<String>,
}

/// Which keys differ between `old` and `new`, and which of them PID 1 can follow live.
pub fn init_changes(old: &InitConfig, new: &InitConfig) -> InitChanges {
    fn leaves(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, toml::Value>) {
        match v {
            // `network` belongs to the network stage, which reads it whole.
            toml::Value::Table(t) if prefix.is_empty() || prefix != "network" => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    leaves(&key, v, out);
                }
            }
            _ => {
                out.insert(prefix.to_string(), v.clone());
            }
        }
    }
    let flat = |c: &InitConfig| {
        let mut out = BTreeMap::new();
        if let Ok(v) = toml::Value::try_from(c) {
            leaves("", &v, &mut out);
        }
        out
    };
    let (a, b) = (flat(old), flat(new));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut changes = InitChanges::default();
    for k in keys.into_iter().filter(|k| a.get(*k) != b.get(*k)) {
        if LIVE_INIT_KEYS.contains(&k.as_str()) {
            changes.live.push(k.clone());
        } else {
            changes.next_boot.push(k.clone());
        }
    }
    changes
}

/// What going from `old` (in force) to `new` (checked whole) takes.
///
/// Nomad restarts when its agent config changes: the role and peers (`[nomad]`), the
/// fragments, and the secrets it reads (gossip key, TLS). The ACL bootstrap secret and
/// the node token are read by PID 1 and the applier at each use: rewritten, no restart.
/// The pack set (`[packs]`) asks for an apply. Of `[init]`, the plan names the hostname and
/// whether it changed; PID 1 sorts its keys into live and next-boot ([`init_changes`]).
pub fn plan(old: &MachineConfig, new: &MachineConfig) -> Plan {
    let mut p = Plan::default();
    if old.nomad != new.nomad {
        p.restart_nomad.push("[nomad]".into());
    }
    if old.fragments != new.fragments {
        p.restart_nomad.push("fragments".into());
    }
    let init_key = |c: &MachineConfig, key: &str| c.init.as_ref().and_then(|t| t.get(key)).cloned();
    let (os, ns) = (&old.secrets, &new.secrets);
    if os.gossip_key != ns.gossip_key {
        p.restart_nomad.push("secrets.gossip_key".into());
        p.secrets.push("gossip_key".into());
    }
    if os.tls != ns.tls {
        p.restart_nomad.push("secrets.tls".into());
        p.secrets.push("tls".into());
    }
    if os.acl_bootstrap_secret != ns.acl_bootstrap_secret {
        p.secrets.push("acl_bootstrap_secret".into());
    }
    if os.nomad_token != ns.nomad_token {
        p.secrets.push("nomad_token".into());
    }
    match (&old.packs, &new.packs) {
        (Some(a), Some(b)) => p.reapply_packs = a != b,
        (None, None) => {}
        // Where the applier reads its set from is PID 1's, decided at boot.
        _ => p.next_boot.push("[packs] (added or removed)".into()),
    }
    p.files = new
        .files
        .iter()
        .filter(|f| !old.files.contains(f))
        .map(|f| f.path.clone())
        .collect();
    let hostname =
        |c: &MachineConfig| init_key(c, "hostname").and_then(|v| v.as_str().map(str::to_string));
    if hostname(old) != hostname(new) {
        p.hostname = hostname(new);
    }
    // The other `init` keys: PID 1 decides with the layered config ([`init_changes`]).
    p.init_changed = old.init != new.init;
    p
}

/// The longest pause between polls while they fail (unless the interval is longer).
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// The pause before the next poll: `interval` after a success; after `failures` failed
/// polls in a row, `interval` doubled per failure up to [`MAX_BACKOFF`] (or the interval,
/// if longer). Then ±10% jitter from `unit` (uniform in [0, 1)), so a fleet booted at
/// once does not poll its server at once.
pub fn next_poll(interval: Duration, failures: u32, unit: f64) -> Duration {
    let cap = interval.max(MAX_BACKOFF);
    let base = interval
        .checked_mul(1u32 << failures.min(16))
        .map_or(cap, |d| d.min(cap));
    let factor = 0.9 + 0.2 * unit.clamp(0.0, 1.0);
    base.mul_f64(factor)
}

/// A uniform number in [0, 1) from the process's hash seed: enough for jitter.
pub fn jitter_unit() -> f64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos().into()),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::userdata;

    fn cfg(text: &str) -> MachineConfig {
        userdata::parse(std::path::Path::new("u.toml"), text.as_bytes()).unwrap()
    }

    const BASE: &str = r#"
[init]
hostname = "n1"
[init.packs]
interval_secs = 60
[nomad]
role = "client"
retry_join = ["10.0.0.1"]
[[fragments]]
name = "t.json"
content = '{"telemetry": {}}'
[packs]
inline = "[web]\n_origin = \".\"\n"
[[files]]
path = "/etc/motd"
content = "hi\n"
[secrets]
nomad_token = "tok"
gossip_key = "cg8StVXbQJ0gPvMd9o7yrg=="
"#;

    fn changed(from: &str, to: &str) -> Plan {
        plan(&cfg(BASE), &cfg(&BASE.replacen(from, to, 1)))
    }

    #[test]
    fn the_same_configuration_asks_for_nothing() {
        let p = plan(&cfg(BASE), &cfg(BASE));
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(p.summary(), "nothing to do");
    }

    #[test]
    fn agent_config_changes_restart_nomad_and_nothing_else() {
        let p = changed("role = \"client\"", "role = \"both\"");
        assert_eq!(p.restart_nomad, ["[nomad]"]);
        assert!(!p.reapply_packs && p.files.is_empty() && p.hostname.is_none());
        let p = changed("{\"telemetry\": {}}", "{\"telemetry\": {\"a\": 1}}");
        assert_eq!(p.restart_nomad, ["fragments"]);
        let p = changed("gossip_key = \"cg8StVXbQJ0gPvMd9o7yrg==\"", "");
        assert_eq!(p.restart_nomad, ["secrets.gossip_key"]);
        assert_eq!(p.secrets, ["gossip_key"]);
    }

    #[test]
    fn the_token_is_rewritten_without_a_restart() {
        let p = changed("nomad_token = \"tok\"", "nomad_token = \"tok2\"");
        assert!(p.restart_nomad.is_empty(), "{p:?}");
        assert_eq!(p.secrets, ["nomad_token"]);
        assert!(!p.summary().contains("tok2"), "{}", p.summary());
    }

    #[test]
    fn pack_set_changes_run_the_applier() {
        let p = changed("_origin = \\\".\\\"", "_origin = \\\"./web\\\"");
        assert!(p.reapply_packs && p.restart_nomad.is_empty(), "{p:?}");
        let mut without = cfg(BASE);
        without.packs = None;
        let p = plan(&cfg(BASE), &without);
        assert!(!p.reapply_packs, "{p:?}");
        assert_eq!(p.next_boot, ["[packs] (added or removed)"]);
        // The applier's own settings are PID 1's (see init_changes).
        let p = changed("interval_secs = 60", "interval_secs = 30");
        assert!(!p.reapply_packs && p.init_changed, "{p:?}");
        assert!(p.next_boot.is_empty(), "{p:?}");
    }

    #[test]
    fn only_new_or_changed_files_are_named() {
        let p = changed("content = \"hi\\n\"", "content = \"hello\\n\"");
        assert_eq!(p.files, [PathBuf::from("/etc/motd")]);
        let p = changed(
            "[secrets]",
            "[[files]]\npath = \"/etc/issue\"\ncontent = \"x\"\n[secrets]",
        );
        assert_eq!(p.files, [PathBuf::from("/etc/issue")]);
    }

    #[test]
    fn hostname_is_set_and_init_changes_are_left_to_pid1() {
        let p = changed("hostname = \"n1\"", "hostname = \"n2\"");
        assert_eq!(p.hostname.as_deref(), Some("n2"));
        assert!(p.init_changed && p.restart_nomad.is_empty(), "{p:?}");
        let p = changed(
            "[init.packs]",
            "[init.nomad]\nstop_timeout_secs = 5\n[init.packs]",
        );
        assert!(p.init_changed && p.hostname.is_none(), "{p:?}");
        assert!(
            p.restart_nomad.is_empty() && p.next_boot.is_empty(),
            "{p:?}"
        );
        assert!(p.summary().contains("[init] changed"), "{}", p.summary());
    }

    #[test]
    fn init_keys_are_sorted_into_live_and_next_boot() {
        let base = InitConfig::default();
        let mut new = base.clone();
        assert_eq!(init_changes(&base, &new), InitChanges::default());
        new.hostname = Some("n2".into());
        new.machine.poll_secs = 10;
        new.machine.deadline_secs = 30;
        new.nomad.addr = Some("https://127.0.0.1:4747".into());
        new.nomad.ca_file = Some("/etc/ca.pem".into());
        new.nomad.stop_timeout_secs = 3;
        new.nomad.drain_timeout_secs = 7;
        new.packs.interval_secs = 5;
        new.network
            .insert("dhcp".into(), toml::Value::Boolean(false));
        let c = init_changes(&base, &new);
        assert_eq!(
            c.live,
            [
                "hostname",
                "machine.deadline_secs",
                "machine.poll_secs",
                "nomad.addr",
                "nomad.ca_file"
            ]
        );
        assert_eq!(
            c.next_boot,
            [
                "network",
                "nomad.drain_timeout_secs",
                "nomad.stop_timeout_secs",
                "packs.interval_secs"
            ]
        );
        // Back again is a change too, the same keys.
        assert_eq!(init_changes(&new, &base), c);
    }

    #[test]
    fn polls_back_off_exponentially_with_jitter() {
        let five_min = Duration::from_secs(300);
        assert_eq!(next_poll(five_min, 0, 0.5), five_min);
        assert_eq!(next_poll(five_min, 0, 0.0), Duration::from_secs(270));
        assert_eq!(next_poll(five_min, 0, 1.0), Duration::from_secs(330));
        assert_eq!(next_poll(five_min, 1, 0.5), Duration::from_secs(600));
        assert_eq!(next_poll(five_min, 3, 0.5), Duration::from_secs(2400));
        assert_eq!(next_poll(five_min, 4, 0.5), MAX_BACKOFF);
        assert_eq!(next_poll(five_min, 99, 0.5), MAX_BACKOFF);
        // An interval longer than the cap is never shortened by a failure.
        let day = Duration::from_secs(86400);
        assert_eq!(next_poll(day, 2, 0.5), day);
        let u = jitter_unit();
        assert!((0.0..1.0).contains(&u), "{u}");
    }
}
