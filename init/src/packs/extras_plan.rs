//! What to do with the ACL policies and Variables packs declare: a pure plan from what is
//! declared and what Nomad holds, like [`super::plan`] for jobs. [`super::extras`] reads
//! Nomad, asks for the plan and performs it.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use super::events::ExtraAction;
use super::model::{RenderedPolicy, RenderedVariable};

/// The marker appended to the description of policies this owner manages.
pub fn policy_marker(owner: &str, pack: &str, hash: &str) -> String {
    format!("[nomados owner={owner} pack={pack} hash={hash}]")
}

/// Reads `(owner, pack, hash)` back from a policy description.
pub fn parse_policy_marker(description: &str) -> Option<(String, String, String)> {
    let start = description.rfind("[nomados ")?;
    let inner = description[start + 9..].strip_suffix(']')?;
    let mut owner = None;
    let mut pack = None;
    let mut hash = None;
    for part in inner.split(' ') {
        match part.split_once('=')? {
            ("owner", v) => owner = Some(v.to_string()),
            ("pack", v) => pack = Some(v.to_string()),
            ("hash", v) => hash = Some(v.to_string()),
            _ => return None,
        }
    }
    Some((owner?, pack?, hash?))
}

pub fn policy_hash(p: &RenderedPolicy) -> String {
    let mut h = Sha256::new();
    h.update(p.description.as_deref().unwrap_or("").as_bytes());
    h.update(b"\0");
    h.update(p.rules.as_bytes());
    hex::encode(h.finalize())[..16].to_string()
}

pub fn variable_hash(v: &RenderedVariable) -> String {
    let mut h = Sha256::new();
    for (k, val) in &v.items {
        h.update(k.as_bytes());
        h.update(b"\0");
        h.update(val.as_bytes());
        h.update(b"\0");
    }
    hex::encode(h.finalize())[..16].to_string()
}

/// A variable's entry in the owner's registry.
pub fn var_key(namespace: &str, path: &str) -> String {
    format!("{namespace}:{path}")
}

/// One step for a policy.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyStep<'a> {
    /// Exists and another owner (or a person) made it: never overwritten.
    Refuse(&'a RenderedPolicy),
    Unchanged(&'a RenderedPolicy),
    /// Create or update, with the description carrying this owner's marker.
    Write {
        action: ExtraAction,
        policy: &'a RenderedPolicy,
        description: String,
    },
    /// This owner's policy that no pack declares any more.
    Delete(String),
}

/// Plans the declared `policies` against `listed` (name, description) from Nomad. Policies
/// of `failed_packs` are kept as they are.
pub fn plan_policies<'a>(
    owner: &str,
    policies: &'a [RenderedPolicy],
    listed: &[(String, String)],
    failed_packs: &BTreeSet<String>,
) -> Vec<PolicyStep<'a>> {
    let mut ours: BTreeMap<&str, (String, String)> = BTreeMap::new();
    let mut foreign: BTreeSet<&str> = BTreeSet::new();
    for (name, description) in listed {
        match parse_policy_marker(description) {
            Some((o, pack, hash)) if o == owner => {
                ours.insert(name, (pack, hash));
            }
            _ => {
                foreign.insert(name);
            }
        }
    }
    let mut steps = Vec::new();
    let mut declared = BTreeSet::new();
    for p in policies {
        declared.insert(p.name.as_str());
        let hash = policy_hash(p);
        if foreign.contains(p.name.as_str()) {
            steps.push(PolicyStep::Refuse(p));
            continue;
        }
        let action = match ours.get(p.name.as_str()) {
            Some((_, h)) if *h == hash => {
                steps.push(PolicyStep::Unchanged(p));
                continue;
            }
            Some(_) => ExtraAction::Update,
            None => ExtraAction::Create,
        };
        let marker = policy_marker(owner, &p.source.pack, &hash);
        let description = match &p.description {
            Some(d) => format!("{d} {marker}"),
            None => marker,
        };
        steps.push(PolicyStep::Write {
            action,
            policy: p,
            description,
        });
    }
    for (name, (pack, _)) in &ours {
        if !declared.contains(name) && !failed_packs.contains(pack) {
            steps.push(PolicyStep::Delete(name.to_string()));
        }
    }
    steps
}

/// A variable as Nomad holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveVariable {
    pub items: BTreeMap<String, String>,
    pub modify_index: u64,
}

/// One step for a variable.
#[derive(Debug, Clone, PartialEq)]
pub enum VariableStep<'a> {
    /// Exists and this owner's registry does not list it: never overwritten.
    Refuse(&'a RenderedVariable),
    Unchanged(&'a RenderedVariable),
    /// Create or update, checked against `cas` (0: must not exist).
    Write {
        action: ExtraAction,
        variable: &'a RenderedVariable,
        cas: u64,
    },
    /// This owner's variable that no pack declares any more; `key` is its registry entry.
    Delete {
        namespace: String,
        path: String,
        key: String,
    },
}

/// The steps for variables and the owner's registry once every step has succeeded.
#[derive(Debug, Clone, PartialEq)]
pub struct VariablePlan<'a> {
    pub steps: Vec<VariableStep<'a>>,
    pub registry: BTreeMap<String, String>,
}

/// Plans the declared `variables` (with `live[i]`, what Nomad holds at `variables[i]`'s
/// path) against the owner's `registry` (`<namespace>:<path>` -> `<pack> <hash>`).
/// Variables of `failed_packs` are kept as they are.
pub fn plan_variables<'a>(
    variables: &'a [RenderedVariable],
    live: &[Option<LiveVariable>],
    registry: &BTreeMap<String, String>,
    failed_packs: &BTreeSet<String>,
) -> VariablePlan<'a> {
    let mut steps = Vec::new();
    let mut next = registry.clone();
    let mut declared = BTreeSet::new();
    for (v, live) in variables.iter().zip(live) {
        let ns = v.namespace();
        let key = var_key(ns, &v.path);
        declared.insert(key.clone());
        if live.is_some() && !registry.contains_key(&key) {
            steps.push(VariableStep::Refuse(v));
            continue;
        }
        next.insert(key, format!("{} {}", v.source.pack, variable_hash(v)));
        match live {
            Some(l) if l.items == v.items => steps.push(VariableStep::Unchanged(v)),
            Some(l) => steps.push(VariableStep::Write {
                action: ExtraAction::Update,
                variable: v,
                cas: l.modify_index,
            }),
            None => steps.push(VariableStep::Write {
                action: ExtraAction::Create,
                variable: v,
                cas: 0,
            }),
        }
    }
    for (key, val) in registry {
        let pack = val.split(' ').next().unwrap_or("");
        if declared.contains(key) || failed_packs.contains(pack) {
            continue;
        }
        let (ns, path) = key.split_once(':').unwrap_or(("default", key));
        next.remove(key);
        steps.push(VariableStep::Delete {
            namespace: ns.to_string(),
            path: path.to_string(),
            key: key.clone(),
        });
    }
    VariablePlan {
        steps,
        registry: next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packs::model::Source;

    fn source(pack: &str) -> Source {
        Source {
            pack: pack.into(),
            job: "j".into(),
            file: "x".into(),
        }
    }

    fn policy(name: &str, pack: &str, rules: &str) -> RenderedPolicy {
        RenderedPolicy {
            source: source(pack),
            name: name.into(),
            description: Some("d".into()),
            rules: rules.into(),
        }
    }

    #[test]
    fn policies_are_created_updated_kept_refused_and_deleted() {
        let same = policy("same", "p", "r");
        let changed = policy("changed", "p", "new rules");
        let declared = vec![
            policy("new", "p", "r"),
            same.clone(),
            changed.clone(),
            policy("theirs", "p", "r"),
        ];
        let marked = |p: &RenderedPolicy, pack: &str, hash: &str| {
            (
                p.name.clone(),
                format!("d {}", policy_marker("me", pack, hash)),
            )
        };
        let listed = vec![
            marked(&same, "p", &policy_hash(&same)),
            marked(&changed, "p", "oldhash"),
            ("theirs".to_string(), "made by hand".to_string()),
            marked(&policy("gone", "p", "r"), "p", "h"),
            marked(&policy("failed", "f", "r"), "f", "h"),
            (
                "other".to_string(),
                format!("x {}", policy_marker("you", "p", "h")),
            ),
        ];
        let failed = BTreeSet::from(["f".to_string()]);
        let steps = plan_policies("me", &declared, &listed, &failed);
        let kinds: Vec<String> = steps
            .iter()
            .map(|s| match s {
                PolicyStep::Refuse(p) => format!("refuse {}", p.name),
                PolicyStep::Unchanged(p) => format!("unchanged {}", p.name),
                PolicyStep::Write { action, policy, .. } => format!("{action:?} {}", policy.name),
                PolicyStep::Delete(n) => format!("delete {n}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "Create new",
                "unchanged same",
                "Update changed",
                "refuse theirs",
                "delete gone"
            ]
        );
        let PolicyStep::Write { description, .. } = &steps[0] else {
            panic!("{steps:?}")
        };
        assert!(
            description.starts_with("d [nomados owner=me pack=p hash="),
            "{description}"
        );
    }

    #[test]
    fn variables_are_planned_against_the_registry() {
        let var = |path: &str, pack: &str, v: &str| RenderedVariable {
            source: source(pack),
            path: path.into(),
            namespace: None,
            items: BTreeMap::from([("k".to_string(), v.to_string())]),
        };
        let live = |v: &str, index: u64| LiveVariable {
            items: BTreeMap::from([("k".to_string(), v.to_string())]),
            modify_index: index,
        };
        let declared = vec![
            var("app/new", "p", "1"),
            var("app/same", "p", "1"),
            var("app/changed", "p", "2"),
            var("app/theirs", "p", "1"),
        ];
        let lives = vec![
            None,
            Some(live("1", 5)),
            Some(live("1", 7)),
            Some(live("1", 9)),
        ];
        let registry = BTreeMap::from([
            ("default:app/same".to_string(), "p h".to_string()),
            ("default:app/changed".to_string(), "p h".to_string()),
            ("default:app/gone".to_string(), "p h".to_string()),
            ("default:app/failed".to_string(), "f h".to_string()),
        ]);
        let failed = BTreeSet::from(["f".to_string()]);
        let plan = plan_variables(&declared, &lives, &registry, &failed);
        assert_eq!(
            plan.steps,
            vec![
                VariableStep::Write {
                    action: ExtraAction::Create,
                    variable: &declared[0],
                    cas: 0
                },
                VariableStep::Unchanged(&declared[1]),
                VariableStep::Write {
                    action: ExtraAction::Update,
                    variable: &declared[2],
                    cas: 7
                },
                VariableStep::Refuse(&declared[3]),
                VariableStep::Delete {
                    namespace: "default".into(),
                    path: "app/gone".into(),
                    key: "default:app/gone".into()
                },
            ]
        );
        let keys: Vec<&str> = plan.registry.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "default:app/changed",
                "default:app/failed",
                "default:app/new",
                "default:app/same"
            ]
        );
    }

    #[test]
    fn policy_markers_round_trip() {
        let m = policy_marker("edge", "redis", "0123abcd");
        let d = format!("Read access for redis {m}");
        assert_eq!(
            parse_policy_marker(&d),
            Some(("edge".into(), "redis".into(), "0123abcd".into()))
        );
        assert_eq!(parse_policy_marker("hand-written policy"), None);
        assert_eq!(parse_policy_marker("[nomados owner=x]"), None);
    }

    #[test]
    fn variable_hash_changes_with_items() {
        let src = Source {
            pack: "p".into(),
            job: "j".into(),
            file: "variables/a.json".into(),
        };
        let mut v = RenderedVariable {
            source: src,
            path: "a".into(),
            namespace: None,
            items: BTreeMap::from([("k".into(), "v".into())]),
        };
        let h1 = variable_hash(&v);
        v.items.insert("k".into(), "w".into());
        assert_ne!(h1, variable_hash(&v));
    }
}
