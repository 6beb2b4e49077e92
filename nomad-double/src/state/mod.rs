//! The in-memory store: jobs and their versions, allocations, the one node, variables and
//! ACL policies, with Raft-like indexes. Pure: time comes in as `now` (Unix nanoseconds) and
//! the only outside look-up (does a task's command exist?) is a function in [`Settings`].
//!
//! One file per concern, each adding its part of [`Store`]'s methods: `jobs` (register, plan,
//! reads), `evals` (evaluations: when the scheduler runs, and what it could not place),
//! `allocations` (placement and life cycle), `nodes` (the one node, drain,
//! eligibility), `variables`, `acl`. They share one Raft-like index, hence one `Store`.

mod acl;
mod allocations;
mod evals;
mod jobs;
mod nodes;
mod variables;

use crate::version::Version;
use acl::AclStore;
pub use acl::Caller;
use allocations::Alloc;
use jobs::JobRecord;
use nodes::NodeState;
use serde_json::Value;
use std::collections::BTreeMap;
use variables::Var;
/// What the store needs to know about the agent it pretends to be.
#[derive(Clone)]
pub struct Settings {
    pub version: Version,
    pub alloc_delay_ns: i64,
    /// Time an evaluation stays `pending` before the scheduler runs it (0: at once).
    pub eval_delay_ns: i64,
    pub acl_enabled: bool,
    pub datacenter: String,
    pub region: String,
    pub node_name: String,
    pub node_address: String,
    pub exec_enabled: bool,
    pub raw_exec_enabled: bool,
    pub namespaces: Vec<String>,
    /// With ACLs on, a management token that exists from the start (the cluster counts as
    /// bootstrapped).
    pub management_token: Option<String>,
    /// Whether an absolute task command exists on this host.
    pub command_exists: fn(&str) -> bool,
    /// The node's `Meta` (`client.meta`).
    pub node_meta: std::collections::BTreeMap<String, String>,
}

impl Settings {
    pub fn for_tests() -> Settings {
        Settings {
            version: Version::DEFAULT,
            alloc_delay_ns: 0,
            eval_delay_ns: 0,
            acl_enabled: false,
            datacenter: "dc1".into(),
            region: "global".into(),
            node_name: "double".into(),
            node_address: "127.0.0.1".into(),
            exec_enabled: true,
            raw_exec_enabled: true,
            namespaces: vec!["default".into()],
            management_token: None,
            command_exists: |p| std::path::Path::new(p).exists(),
            node_meta: Default::default(),
        }
    }
}

/// Errors, each mapping to one HTTP status.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// 400
    BadRequest(String),
    /// 404
    NotFound(String),
    /// 409, with the conflicting object as JSON.
    Conflict(Value),
    /// 500 (Nomad returns RPC errors such as validation failures this way).
    Server(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Result of a job register or deregister.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteResult {
    pub eval_id: String,
    pub index: u64,
    pub job_modify_index: u64,
}

pub struct Store {
    pub settings: Settings,
    pub index: u64,
    pub node_id: String,
    node_state: NodeState,
    jobs: BTreeMap<(String, String), JobRecord>,
    allocs: Vec<Alloc>,
    evals: Vec<Value>,
    evals_due: Vec<evals::Due>,
    vars: BTreeMap<(String, String), Var>,
    acl: AclStore,
    seed: u64,
    started: i64,
}

/// RFC 3339 with nanoseconds, as Go prints `time.Time`.
pub fn rfc3339(nanos: i64) -> String {
    let secs = nanos.div_euclid(1_000_000_000);
    let frac = nanos.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:09}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

impl Store {
    pub fn new(settings: Settings, now: i64) -> Store {
        let mut s = Store {
            settings,
            index: 0,
            node_id: String::new(),
            node_state: NodeState::new(now),
            jobs: BTreeMap::new(),
            allocs: Vec::new(),
            evals: Vec::new(),
            evals_due: Vec::new(),
            vars: BTreeMap::new(),
            acl: AclStore::default(),
            seed: now as u64 ^ 0x9e37_79b9_7f4a_7c15,
            started: now,
        };
        s.node_id = s.uuid();
        // A fresh dev agent has done some Raft writes before serving (leader, node).
        s.index = 7;
        s.node_state.create_index = 7;
        s.index = 9;
        s.node_state.modify_index = 9;
        // An empty preset is no preset: the cluster waits for its bootstrap.
        if let Some(secret) = s
            .settings
            .management_token
            .clone()
            .filter(|t| !t.is_empty())
        {
            s.preset_management_token(&secret, now);
        }
        s
    }

    fn next_rand(&mut self) -> u64 {
        // splitmix64: plenty for IDs that only need to be unique.
        self.seed = self.seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn uuid(&mut self) -> String {
        let a = self.next_rand();
        let b = self.next_rand();
        let h = format!("{a:016x}{b:016x}");
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }

    fn bump(&mut self) -> u64 {
        self.index += 1;
        self.index
    }
}

#[cfg(test)]
mod testing {
    use super::{Settings, Store};
    use serde_json::{json, Value};

    pub fn job(cmd: &str) -> Value {
        json!({"ID": "hello", "Type": "system", "Datacenters": ["dc1"],
               "TaskGroups": [{"Name": "g", "Tasks": [{"Name": "t", "Driver": "raw_exec",
                 "Config": {"command": cmd}}]}]})
    }

    pub fn store() -> Store {
        let mut s = Settings::for_tests();
        s.command_exists = |p| p == "/bin/sh";
        Store::new(s, 1_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_format_matches_go() {
        assert_eq!(
            rfc3339(1_795_294_803_222_647_515),
            "2026-11-21T21:00:03.222647515Z"
        );
    }
}
