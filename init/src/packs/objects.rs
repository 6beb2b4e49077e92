//! How each kind of object is stamped as this owner's and read back: the pure half of the
//! applier's contact with Nomad, so that [`super::plan`] can diff every kind alike.
//!
//! Ownership lives in Nomad, not on this machine. A job carries it in its meta
//! ([`super::model::meta`]); a policy in a marker at the end of its description; the
//! variables this owner manages are listed in one registry variable,
//! `nomados/owners/<owner>` in the default namespace, whose items map `<namespace>:<path>`
//! to `<pack> <hash>`.

use std::collections::BTreeMap;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::model::{meta, JobKey, ObjectKey, RenderedPolicy, RenderedVariable, Source};
use super::plan::{Body, Desired, Live, Step};

/// SHA-256 of a rendered job, as recorded in its meta. Only the rendered text counts, so
/// an unchanged set hashes the same on every Nomad version.
pub fn hash_rendered(format_tag: &str, text: &str) -> String {
    let mut h = Sha256::new();
    h.update(format_tag.as_bytes());
    h.update(b"\n");
    h.update(text.as_bytes());
    hex::encode(h.finalize())
}

/// Writes the ownership meta into a parsed job.
pub fn stamp(job: &mut Value, owner: &str, source: &Source, hash: &str) {
    if !job["Meta"].is_object() {
        job["Meta"] = Value::Object(Default::default());
    }
    let m = &mut job["Meta"];
    m[meta::OWNER] = owner.into();
    m[meta::PACK] = source.pack.clone().into();
    m[meta::JOB] = source.job.clone().into();
    m[meta::HASH] = hash.into();
}

/// Reads a job, or a job list stub with Meta, as the planner sees it.
pub fn live_job(v: &Value) -> Option<Live> {
    let key = JobKey::of(v)?;
    let meta_str = |k: &str| v["Meta"][k].as_str().map(str::to_string);
    Some(Live {
        key: ObjectKey::Job(key),
        owner: meta_str(meta::OWNER),
        pack: meta_str(meta::PACK),
        declared_job: meta_str(meta::JOB),
        hash: meta_str(meta::HASH),
        index: v["JobModifyIndex"].as_u64().unwrap_or(0),
        child: !v["ParentID"].as_str().unwrap_or_default().is_empty(),
        stopped: v["Stop"].as_bool().unwrap_or(false),
    })
}

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

/// A rendered policy as written: its description ends with this owner's marker.
pub fn desired_policy(owner: &str, p: &RenderedPolicy) -> Desired {
    let hash = policy_hash(p);
    let marker = policy_marker(owner, &p.source.pack, &hash);
    let description = match &p.description {
        Some(d) => format!("{d} {marker}"),
        None => marker,
    };
    Desired {
        key: p.key(),
        source: p.source.clone(),
        hash,
        body: Body::Policy {
            name: p.name.clone(),
            description,
            rules: p.rules.clone(),
        },
    }
}

/// A policy as Nomad lists it (name and description).
pub fn live_policy(name: &str, description: &str) -> Live {
    let (owner, pack, hash) = match parse_policy_marker(description) {
        Some((o, p, h)) => (Some(o), Some(p), Some(h)),
        None => (None, None, None),
    };
    Live {
        key: ObjectKey::Policy(name.to_string()),
        owner,
        pack,
        declared_job: None,
        hash,
        index: 0,
        child: false,
        stopped: false,
    }
}

/// The hash of a variable's items, compared with what Nomad holds and kept in the registry.
pub fn variable_hash(items: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    for (k, val) in items {
        h.update(k.as_bytes());
        h.update(b"\0");
        h.update(val.as_bytes());
        h.update(b"\0");
    }
    hex::encode(h.finalize())[..16].to_string()
}

pub fn desired_variable(v: &RenderedVariable) -> Desired {
    Desired {
        key: v.key(),
        source: v.source.clone(),
        hash: variable_hash(&v.items),
        body: Body::Variable {
            namespace: v.namespace().to_string(),
            path: v.path.clone(),
            items: v.items.clone(),
        },
    }
}

/// The path of `owner`'s registry variable (in the default namespace).
pub fn registry_path(owner: &str) -> String {
    format!("nomados/owners/{owner}")
}

/// A variable's entry in the owner's registry.
pub fn registry_key(key: &ObjectKey) -> Option<String> {
    match key {
        ObjectKey::Variable { namespace, path } => Some(format!("{namespace}:{path}")),
        _ => None,
    }
}

fn registry_entry_key(entry: &str) -> ObjectKey {
    let (namespace, path) = entry.split_once(':').unwrap_or(("default", entry));
    ObjectKey::Variable {
        namespace: namespace.to_string(),
        path: path.to_string(),
    }
}

/// The items of a variable as the API returns it.
pub fn variable_items(v: &Value) -> BTreeMap<String, String> {
    v["Items"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// The API path of an ACL policy.
pub fn policy_path(name: &str) -> String {
    format!("/v1/acl/policy/{}", crate::nomad::encode(name))
}

/// The API path of a variable (its path keeps its slashes).
pub fn variable_path(namespace: &str, path: &str) -> String {
    format!(
        "/v1/var/{path}?namespace={}",
        crate::nomad::encode(namespace)
    )
}

/// A variable Nomad holds at `key`; `ours` is `(owner, pack)` when the owner's registry
/// lists it.
pub fn live_variable(key: ObjectKey, held: &Value, ours: Option<(&str, &str)>) -> Live {
    Live {
        key,
        owner: ours.map(|(owner, _)| owner.to_string()),
        pack: ours.map(|(_, pack)| pack.to_string()),
        declared_job: None,
        hash: Some(variable_hash(&variable_items(held))),
        index: held["ModifyIndex"].as_u64().unwrap_or(0),
        child: false,
        stopped: false,
    }
}

/// `(pack, hash)` of a registry entry.
fn pack_and_hash(entry: &str) -> (&str, &str) {
    entry.split_once(' ').unwrap_or((entry, ""))
}

/// The variables as the planner sees them: `read` holds what Nomad has at each declared
/// path (`None`: nothing), the owner's `registry` which variables are this owner's. A
/// registry entry nobody declares any more is live as the registry says, to be deleted.
pub fn live_variables(
    owner: &str,
    registry: &BTreeMap<String, String>,
    read: &[(ObjectKey, Option<Value>)],
) -> Vec<Live> {
    let mut live: Vec<Live> = read
        .iter()
        .filter_map(|(key, held)| {
            let entry = registry_key(key).and_then(|k| registry.get(&k));
            let ours = entry.map(|e| (owner, pack_and_hash(e).0));
            Some(live_variable(key.clone(), held.as_ref()?, ours))
        })
        .collect();
    for (k, e) in registry {
        let key = registry_entry_key(k);
        if read.iter().any(|(r, _)| *r == key) {
            continue;
        }
        let (pack, hash) = pack_and_hash(e);
        live.push(Live {
            key,
            owner: Some(owner.to_string()),
            pack: Some(pack.to_string()),
            declared_job: None,
            hash: Some(hash.to_string()),
            index: 0,
            child: false,
            stopped: false,
        });
    }
    live
}

/// The owner's registry once every step of `steps` has succeeded: declared variables it
/// may write are its own, deleted ones are not. A failed delete puts its entry back.
pub fn registry_after(old: &BTreeMap<String, String>, steps: &[Step]) -> BTreeMap<String, String> {
    let mut next = old.clone();
    for step in steps {
        let Some(k) = registry_key(step.key()) else {
            continue;
        };
        match step {
            Step::Create(d)
            | Step::Update { desired: d, .. }
            | Step::Unchanged { desired: d, .. } => {
                next.insert(k, format!("{} {}", d.source.pack, d.hash));
            }
            Step::Delete(_) => {
                next.remove(&k);
            }
            Step::Keep { .. } | Step::Refuse { .. } => {}
        }
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stamping_records_owner_pack_job_and_hash_only() {
        let mut job = json!({"ID": "web", "Meta": {"team": "ops"}});
        let src = Source {
            pack: "redis".into(),
            job: "redis-cache".into(),
            file: "jobs/redis.hcl".into(),
        };
        stamp(&mut job, "edge", &src, "abc");
        assert_eq!(
            job["Meta"],
            json!({"team": "ops", "nomados.owner": "edge", "nomados.pack": "redis",
                   "nomados.job": "redis-cache", "nomados.hash": "abc"})
        );
    }

    #[test]
    fn hash_depends_on_format_and_text() {
        assert_ne!(hash_rendered("hcl", "x"), hash_rendered("json", "x"));
        assert_eq!(hash_rendered("hcl", "x"), hash_rendered("hcl", "x"));
        assert_eq!(hash_rendered("hcl", "x").len(), 64);
    }

    #[test]
    fn live_jobs_are_read_from_stubs_with_meta() {
        let stub = json!({"ID": "w", "Namespace": "prod", "JobModifyIndex": 42, "ParentID": "",
            "Meta": {"nomados.owner": "set", "nomados.hash": "h", "nomados.pack": "p"}});
        let l = live_job(&stub).unwrap();
        assert_eq!(l.key.to_string(), "job ID `prod/w`");
        assert_eq!(l.index, 42);
        assert_eq!(l.owner.as_deref(), Some("set"));
        assert!(!l.child);
        let child = json!({"ID": "w/periodic-1", "ParentID": "w"});
        assert!(live_job(&child).unwrap().child);
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
        let live = live_policy("p", &d);
        assert_eq!(live.owner.as_deref(), Some("edge"));
        assert_eq!(live.hash.as_deref(), Some("0123abcd"));
        assert_eq!(live_policy("p", "made by hand").owner, None);
    }

    #[test]
    fn a_desired_policy_carries_the_owner_marker_after_its_description() {
        let p = RenderedPolicy {
            source: Source {
                pack: "p".into(),
                job: "j".into(),
                file: "policies/r.hcl".into(),
            },
            name: "r".into(),
            description: Some("d".into()),
            rules: "rules".into(),
        };
        let d = desired_policy("me", &p);
        let Body::Policy { description, .. } = &d.body else {
            panic!("{d:?}")
        };
        assert_eq!(
            *description,
            format!("d {}", policy_marker("me", "p", &d.hash))
        );
        assert_eq!(live_policy("r", description).hash, Some(d.hash));
    }

    #[test]
    fn variable_hash_changes_with_items() {
        let mut items = BTreeMap::from([("k".to_string(), "v".to_string())]);
        let h1 = variable_hash(&items);
        items.insert("k".into(), "w".into());
        assert_ne!(h1, variable_hash(&items));
    }

    #[test]
    fn live_variables_are_ours_when_the_registry_lists_them() {
        let key = |p: &str| ObjectKey::Variable {
            namespace: "default".into(),
            path: p.into(),
        };
        let registry = BTreeMap::from([
            ("default:app/ours".to_string(), "p h1".to_string()),
            ("default:app/gone".to_string(), "q h2".to_string()),
            ("default:app/lost".to_string(), "p h3".to_string()),
        ]);
        let held = json!({"Items": {"k": "v"}, "ModifyIndex": 9});
        let read = [
            (key("app/ours"), Some(held.clone())),
            (key("app/theirs"), Some(held)),
            (key("app/lost"), None),
        ];
        let live = live_variables("me", &registry, &read);
        let seen: Vec<(String, Option<&str>, Option<&str>, u64)> = live
            .iter()
            .map(|l| {
                (
                    l.key.to_string(),
                    l.owner.as_deref(),
                    l.pack.as_deref(),
                    l.index,
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("variable `app/ours`".into(), Some("me"), Some("p"), 9),
                ("variable `app/theirs`".into(), None, None, 9),
                ("variable `app/gone`".into(), Some("me"), Some("q"), 0),
            ],
            "a declared variable Nomad lost is not live: it is created again"
        );
        let items = BTreeMap::from([("k".to_string(), "v".to_string())]);
        assert_eq!(live[0].hash, Some(variable_hash(&items)));
    }
}
