//! Nomad Variables and ACL policies declared by packs, reconciled like jobs: created,
//! updated, left alone when unchanged, deleted when no longer declared, and never
//! touched when another owner (or a person) made them.
//!
//! Ownership lives in Nomad, not on this machine: a policy carries a marker at the end
//! of its description; variables this owner manages are listed in one registry
//! variable, `nomados/owners/<owner>`, whose items map `<namespace>:<path>` to
//! `<pack> <hash>`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;
use sha2::{Digest, Sha256};

use super::events::{Event, ExtraAction, ExtraKind, Sink};
use super::model::{RenderedPolicy, RenderedVariable};
use crate::nomad::{encode, AgentInfo, Client};

/// Counts of what happened to variables and policies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtrasSummary {
    pub written: usize,
    pub unchanged: usize,
    pub deleted: usize,
    pub failed: usize,
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

fn registry_path(owner: &str) -> String {
    format!("nomados/owners/{owner}")
}

fn var_key(namespace: &str, path: &str) -> String {
    format!("{namespace}:{path}")
}

/// Reconciles policies and variables before jobs are written. `failed_packs` keeps
/// what failed packs wrote before. Problems are reported and counted, never fatal.
#[allow(clippy::too_many_arguments)]
pub async fn reconcile(
    client: &Client,
    agent: &AgentInfo,
    owner: &str,
    policies: &[RenderedPolicy],
    variables: &[RenderedVariable],
    failed_packs: &BTreeSet<String>,
    dry_run: bool,
    out: &mut dyn Sink,
) -> anyhow::Result<ExtrasSummary> {
    let mut sum = ExtrasSummary::default();
    if agent.acl_enabled {
        policies_reconcile(
            client,
            owner,
            policies,
            failed_packs,
            dry_run,
            &mut sum,
            out,
        )
        .await?;
    } else if !policies.is_empty() {
        out.emit(&Event::Note(&format!(
            "note: {} ACL policies not applied: ACLs are disabled on this Nomad agent",
            policies.len()
        )))?;
    }
    if agent.version.supports_variables() {
        variables_reconcile(
            client,
            owner,
            variables,
            failed_packs,
            dry_run,
            &mut sum,
            out,
        )
        .await?;
    } else if !variables.is_empty() {
        out.emit(&Event::Note(&format!(
            "note: {} variables not applied: Nomad {} has no Variables (they arrived in 1.4)",
            variables.len(),
            agent.version
        )))?;
    }
    Ok(sum)
}

async fn policies_reconcile(
    client: &Client,
    owner: &str,
    policies: &[RenderedPolicy],
    failed_packs: &BTreeSet<String>,
    dry_run: bool,
    sum: &mut ExtrasSummary,
    out: &mut dyn Sink,
) -> anyhow::Result<()> {
    let listed = client.get("/v1/acl/policies").await?;
    let mut ours: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut foreign: BTreeSet<String> = BTreeSet::new();
    for p in listed.as_array().into_iter().flatten() {
        let name = p["Name"].as_str().unwrap_or_default().to_string();
        match parse_policy_marker(p["Description"].as_str().unwrap_or("")) {
            Some((o, pack, hash)) if o == owner => {
                ours.insert(name, (pack, hash));
            }
            _ => {
                foreign.insert(name);
            }
        }
    }
    let mut declared = BTreeSet::new();
    for p in policies {
        declared.insert(p.name.clone());
        let hash = policy_hash(p);
        if foreign.contains(&p.name) {
            sum.failed += 1;
            out.emit(&Event::Problem {
                subject: &format!("policy `{}` ({})", p.name, p.source),
                message: &format!(
                    "exists and is not managed by `{owner}`; refusing to overwrite it"
                ),
            })?;
            continue;
        }
        if ours.get(&p.name).is_some_and(|(_, h)| h == &hash) {
            sum.unchanged += 1;
            continue;
        }
        let action = if ours.contains_key(&p.name) {
            ExtraAction::Update
        } else {
            ExtraAction::Create
        };
        out.emit(&Event::Extra {
            kind: ExtraKind::Policy,
            action,
            name: &p.name,
        })?;
        if dry_run {
            continue;
        }
        let description = match &p.description {
            Some(d) => format!("{d} {}", policy_marker(owner, &p.source.pack, &hash)),
            None => policy_marker(owner, &p.source.pack, &hash),
        };
        let body = json!({"Name": p.name, "Description": description, "Rules": p.rules});
        match client
            .post(&format!("/v1/acl/policy/{}", encode(&p.name)), &body)
            .await
        {
            Ok(_) => sum.written += 1,
            Err(e) => {
                sum.failed += 1;
                out.emit(&Event::Problem {
                    subject: &format!("policy `{}`", p.name),
                    message: &e.to_string(),
                })?;
            }
        }
    }
    for (name, (pack, _)) in &ours {
        if declared.contains(name) || failed_packs.contains(pack) {
            continue;
        }
        out.emit(&Event::Extra {
            kind: ExtraKind::Policy,
            action: ExtraAction::Delete,
            name,
        })?;
        if dry_run {
            continue;
        }
        match client
            .delete(&format!("/v1/acl/policy/{}", encode(name)))
            .await
        {
            Ok(_) => sum.deleted += 1,
            Err(e) => {
                sum.failed += 1;
                out.emit(&Event::Problem {
                    subject: &format!("policy `{name}`"),
                    message: &e.to_string(),
                })?;
            }
        }
    }
    Ok(())
}

async fn variables_reconcile(
    client: &Client,
    owner: &str,
    variables: &[RenderedVariable],
    failed_packs: &BTreeSet<String>,
    dry_run: bool,
    sum: &mut ExtrasSummary,
    out: &mut dyn Sink,
) -> anyhow::Result<()> {
    let reg_path = registry_path(owner);
    let registry = client
        .get_optional(&format!("/v1/var/{reg_path}?namespace=default"))
        .await?;
    let reg_index = registry
        .as_ref()
        .and_then(|r| r["ModifyIndex"].as_u64())
        .unwrap_or(0);
    let old: BTreeMap<String, String> = registry
        .as_ref()
        .and_then(|r| r["Items"].as_object())
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default();
    if registry.is_none() && variables.is_empty() {
        return Ok(());
    }
    let mut new = old.clone();
    for v in variables {
        let ns = v.namespace.as_deref().unwrap_or("default");
        let key = var_key(ns, &v.path);
        let hash = variable_hash(v);
        let query = format!("/v1/var/{}?namespace={}", v.path, encode(ns));
        let live = client.get_optional(&query).await?;
        let live_items: Option<BTreeMap<String, String>> = live.as_ref().map(|l| {
            l["Items"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default()
        });
        let owned = old.contains_key(&key);
        if live.is_some() && !owned {
            sum.failed += 1;
            out.emit(&Event::Problem {
                subject: &format!("variable `{ns}:{}` ({})", v.path, v.source),
                message: &format!(
                    "exists and is not managed by `{owner}`; refusing to overwrite it"
                ),
            })?;
            continue;
        }
        new.insert(key.clone(), format!("{} {hash}", v.source.pack));
        if live_items.as_ref() == Some(&v.items) {
            sum.unchanged += 1;
            continue;
        }
        let action = if live.is_some() {
            ExtraAction::Update
        } else {
            ExtraAction::Create
        };
        out.emit(&Event::Extra {
            kind: ExtraKind::Variable,
            action,
            name: &format!("{ns}:{}", v.path),
        })?;
        if dry_run {
            continue;
        }
        let cas = live
            .as_ref()
            .and_then(|l| l["ModifyIndex"].as_u64())
            .unwrap_or(0);
        let body = json!({"Namespace": ns, "Path": v.path, "Items": v.items});
        match client.put(&format!("{query}&cas={cas}"), &body).await {
            Ok(_) => sum.written += 1,
            Err(e) => {
                sum.failed += 1;
                out.emit(&Event::Problem {
                    subject: &format!("variable `{ns}:{}`", v.path),
                    message: &e.to_string(),
                })?;
            }
        }
    }
    let declared: BTreeSet<String> = variables
        .iter()
        .map(|v| var_key(v.namespace.as_deref().unwrap_or("default"), &v.path))
        .collect();
    for (key, val) in &old {
        let pack = val.split(' ').next().unwrap_or("");
        if declared.contains(key) || failed_packs.contains(pack) {
            continue;
        }
        let (ns, path) = key.split_once(':').unwrap_or(("default", key));
        out.emit(&Event::Extra {
            kind: ExtraKind::Variable,
            action: ExtraAction::Delete,
            name: &format!("{ns}:{path}"),
        })?;
        new.remove(key);
        if dry_run {
            continue;
        }
        match client
            .delete(&format!("/v1/var/{path}?namespace={}", encode(ns)))
            .await
        {
            Ok(_) => sum.deleted += 1,
            Err(e) if e.status() == Some(reqwest::StatusCode::NOT_FOUND) => sum.deleted += 1,
            Err(e) => {
                sum.failed += 1;
                new.insert(key.clone(), val.clone());
                out.emit(&Event::Problem {
                    subject: &format!("variable `{ns}:{path}`"),
                    message: &e.to_string(),
                })?;
            }
        }
    }
    if new != old && !dry_run {
        let path = format!("/v1/var/{reg_path}?namespace=default&cas={reg_index}");
        // Nomad refuses variables without items: an empty registry is deleted instead.
        if new.is_empty() {
            client.delete(&path).await?;
        } else {
            let body = json!({"Namespace": "default", "Path": reg_path, "Items": new});
            client.put(&path, &body).await?;
        }
        sum.written += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let src = super::super::model::Source {
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
