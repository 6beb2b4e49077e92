//! What Nomad holds: the applier's reads before it plans. The declared objects of every
//! kind the agent has, and what Nomad holds under their keys and of this owner; a kind the
//! agent lacks (ACL policies with ACLs off, Variables before 1.4) is left out with a note.

use std::collections::BTreeSet;

use serde_json::Value;

use super::events::{Event, Sink};
use super::model::{JobKey, ObjectKey};
use super::objects;
use super::plan::{Desired, Live};
use super::prepare::Prepared;
use crate::nomad::Client;

/// The owner's registry variable as read, written back with check-and-set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Registry {
    /// Its `ModifyIndex`; 0 when it does not exist.
    pub(super) index: u64,
    /// `<namespace>:<path>` -> `<pack> <hash>`.
    pub(super) entries: std::collections::BTreeMap<String, String>,
}

/// Everything a plan is computed from.
pub(super) struct Observed {
    /// The policies, variables and jobs to write.
    pub(super) desired: Vec<Desired>,
    pub(super) live: Vec<Live>,
    /// None when this run leaves variables alone: the agent has none, or nothing declares
    /// any and this owner has no registry.
    pub(super) registry: Option<Registry>,
}

/// Reads what the plan needs, for every kind the agent has. The declared jobs move from
/// `prepared` into [`Observed::desired`] (a copy of every job would double the applier's
/// peak memory for a large set).
pub(super) async fn observe(
    client: &Client,
    prepared: &mut Prepared,
    out: &mut dyn Sink,
) -> anyhow::Result<Observed> {
    let owner = prepared.owner.as_str();
    let agent = &prepared.agent;
    let mut desired = Vec::new();
    let mut live = Vec::new();
    if agent.acl_enabled {
        desired.extend((prepared.policies.iter()).map(|p| objects::desired_policy(owner, p)));
        live.extend(policies(client).await?);
    } else if !prepared.policies.is_empty() {
        out.emit(&Event::Note(&format!(
            "note: {} ACL policies not applied: ACLs are disabled on this Nomad agent",
            prepared.policies.len()
        )))?;
    }
    let mut registry = None;
    if agent.version.supports_variables() {
        let path = objects::variable_path("default", &objects::registry_path(owner));
        let held = client.get_optional(&path).await?;
        if held.is_some() || !prepared.variables.is_empty() {
            let reg = Registry {
                index: held
                    .as_ref()
                    .and_then(|r| r["ModifyIndex"].as_u64())
                    .unwrap_or(0),
                entries: held
                    .as_ref()
                    .map(objects::variable_items)
                    .unwrap_or_default(),
            };
            let mut read = Vec::with_capacity(prepared.variables.len());
            for v in &prepared.variables {
                let path = objects::variable_path(v.namespace(), &v.path);
                read.push((v.key(), client.get_optional(&path).await?));
            }
            desired.extend(prepared.variables.iter().map(objects::desired_variable));
            live.extend(objects::live_variables(owner, &reg.entries, &read));
            registry = Some(reg);
        }
    } else if !prepared.variables.is_empty() {
        out.emit(&Event::Note(&format!(
            "note: {} variables not applied: Nomad {} has no Variables (they arrived in 1.4)",
            prepared.variables.len(),
            agent.version
        )))?;
    }
    live.extend(jobs(client, prepared).await?);
    desired.append(&mut prepared.desired);
    Ok(Observed {
        desired,
        live,
        registry,
    })
}

/// Every ACL policy, ours or not: the plan tells them apart by their marker.
async fn policies(client: &Client) -> anyhow::Result<Vec<Live>> {
    Ok(client
        .get("/v1/acl/policies")
        .await?
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let field = |k: &str| p[k].as_str().unwrap_or_default();
            objects::live_policy(field("Name"), field("Description"))
        })
        .collect())
}

/// `s` as a quoted string of Nomad's filter language (Go string syntax, which JSON's is
/// a subset of).
fn bexpr_string(s: &str) -> String {
    Value::from(s).to_string()
}

/// The owner's managed jobs, plus whatever exists under the declared IDs.
async fn jobs(client: &Client, prepared: &Prepared) -> anyhow::Result<Vec<Live>> {
    let owner = &prepared.owner;
    let filter = format!(
        "Meta[{}] == {}",
        bexpr_string(super::model::meta::OWNER),
        bexpr_string(owner)
    );
    let version = prepared.agent.version;
    let stubs = client
        .list_jobs(true, version.supports_filter().then_some(filter.as_str()))
        .await?;
    let mut live: Vec<Live> = Vec::new();
    if stubs.iter().all(|s| s.get("Meta").is_some()) {
        live.extend(stubs.iter().filter_map(objects::live_job));
    } else {
        // Agents before 1.4 list no Meta: read each top-level job to learn its owner.
        for stub in stubs
            .iter()
            .filter(|s| s["ParentID"].as_str().unwrap_or("").is_empty())
        {
            if let Some(key) = JobKey::of(stub) {
                if let Some(job) = client.read_job(&key.namespace, &key.id).await? {
                    live.extend(objects::live_job(&job));
                }
            }
        }
    }
    live.retain(|l| l.owner.as_deref() == Some(owner.as_str()));
    let known: BTreeSet<ObjectKey> = live.iter().map(|l| l.key.clone()).collect();
    for d in &prepared.desired {
        let Some(key) = d.key.job().filter(|_| !known.contains(&d.key)) else {
            continue;
        };
        if let Some(job) = client.read_job(&key.namespace, &key.id).await? {
            live.extend(objects::live_job(&job));
        }
    }
    Ok(live)
}
