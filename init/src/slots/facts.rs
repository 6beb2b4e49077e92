//! What the trial gate fetches from Nomad about the pack set's jobs on this node (effects;
//! [`super::allocs`] judges it). Per poll: this node, the owner's jobs, each job's
//! evaluations, then this node's allocations (in that order: see `allocs`).

use serde_json::Value;

use super::allocs::{self, AllocsSeen, JobFacts};
use crate::nomad::Client;
use crate::packs::model::meta::OWNER;

/// This node's `Status` as Nomad reports it (None while it cannot be asked) and, when
/// `owner` is known, the pack set's jobs on this node.
pub async fn node_seen(
    api: &crate::nomad::Settings,
    owner: Option<&str>,
) -> (Option<String>, AllocsSeen) {
    let Ok(client) = Client::new(api) else {
        return (None, AllocsSeen::Unknown);
    };
    let Ok(Some((me, node))) = client.find_self().await else {
        return (None, AllocsSeen::Unknown);
    };
    let status = node["Status"].as_str().map(str::to_string);
    let allocs = match owner {
        None => AllocsSeen::Unknown,
        Some(owner) => match set_here(&client, &me.id, &node, owner).await {
            Ok(seen) => seen,
            Err(e) => {
                crate::warn!("trial gate: {e}");
                AllocsSeen::Unknown
            }
        },
    };
    (status, allocs)
}

async fn set_here(
    client: &Client,
    node_id: &str,
    node: &Value,
    owner: &str,
) -> crate::nomad::Result<AllocsSeen> {
    let mut facts = Vec::new();
    for job in owned_jobs(client, owner).await? {
        let id = job["ID"].as_str().unwrap_or_default().to_string();
        let namespace = job["Namespace"].as_str().unwrap_or("default").to_string();
        let evals = client.job_evaluations(&namespace, &id).await?;
        facts.push(JobFacts {
            id,
            namespace,
            job_type: job["Type"].as_str().unwrap_or("service").to_string(),
            job_modify_index: job["JobModifyIndex"].as_u64().unwrap_or(0),
            evals,
        });
    }
    // After the evaluations: a completed one's allocations are then visible here.
    let allocations = client.node_allocations(node_id).await?;
    Ok(allocs::seen(
        &facts,
        &allocations,
        node["ModifyIndex"].as_u64().unwrap_or(0),
    ))
}

fn truthy(v: &Value) -> bool {
    v.as_bool().unwrap_or(false) || v.is_object()
}

/// The owner's jobs that run on nodes themselves: top level (not a dispatched or periodic
/// child), not stopped, not periodic or parameterized (those only launch children).
async fn owned_jobs(client: &Client, owner: &str) -> crate::nomad::Result<Vec<Value>> {
    let filter = format!("Meta[{}] == {}", Value::from(OWNER), Value::from(owner));
    let filter_ok = client
        .agent_info()
        .await
        .is_ok_and(|a| a.version.supports_filter());
    let stubs = client
        .list_jobs(true, filter_ok.then_some(filter.as_str()))
        .await?;
    // Agents before 1.4 list no Meta: read each top-level job to learn its owner.
    let with_meta = stubs.iter().all(|s| s.get("Meta").is_some());
    let mut out = Vec::new();
    for stub in stubs
        .iter()
        .filter(|s| s["ParentID"].as_str().unwrap_or("").is_empty())
    {
        let job = if with_meta {
            stub.clone()
        } else {
            let ns = stub["Namespace"].as_str().unwrap_or("default");
            let id = stub["ID"].as_str().unwrap_or_default();
            match client.read_job(ns, id).await? {
                Some(j) => j,
                None => continue,
            }
        };
        if job["Meta"][OWNER].as_str() != Some(owner)
            || truthy(&job["Stop"])
            || truthy(&job["Periodic"])
            || truthy(&job["ParameterizedJob"])
        {
            continue;
        }
        out.push(job);
    }
    Ok(out)
}
