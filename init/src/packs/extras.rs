//! Nomad Variables and ACL policies declared by packs, reconciled like jobs: created,
//! updated, left alone when unchanged, deleted when no longer declared, and never
//! touched when another owner (or a person) made them.
//!
//! Ownership lives in Nomad, not on this machine: a policy carries a marker at the end
//! of its description; variables this owner manages are listed in one registry
//! variable, `nomados/owners/<owner>`, whose items map `<namespace>:<path>` to
//! `<pack> <hash>`.
//!
//! What to do is planned by [`super::extras_plan`] (pure); this module reads Nomad,
//! performs the steps and reports them.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use super::events::{Event, ExtraAction, ExtraKind, Sink};
use super::extras_plan::{plan_policies, plan_variables, LiveVariable, PolicyStep, VariableStep};
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

fn registry_path(owner: &str) -> String {
    format!("nomados/owners/{owner}")
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
    let listed: Vec<(String, String)> = client
        .get("/v1/acl/policies")
        .await?
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let field = |k: &str| p[k].as_str().unwrap_or_default().to_string();
            (field("Name"), field("Description"))
        })
        .collect();
    let mut writes = Vec::new();
    for step in plan_policies(owner, policies, &listed, failed_packs) {
        match step {
            PolicyStep::Refuse(p) => refuse(
                &format!("policy `{}` ({})", p.name, p.source),
                owner,
                sum,
                out,
            )?,
            PolicyStep::Unchanged(_) => sum.unchanged += 1,
            PolicyStep::Write {
                action,
                policy: p,
                description,
            } => writes.push(Write {
                kind: ExtraKind::Policy,
                action,
                name: p.name.clone(),
                request: Request::Put(
                    Method::Post,
                    format!("/v1/acl/policy/{}", encode(&p.name)),
                    json!({"Name": p.name, "Description": description, "Rules": p.rules}),
                ),
                registry_entry: None,
            }),
            PolicyStep::Delete(name) => writes.push(Write {
                kind: ExtraKind::Policy,
                action: ExtraAction::Delete,
                request: Request::Delete(format!("/v1/acl/policy/{}", encode(&name))),
                name,
                registry_entry: None,
            }),
        }
    }
    perform(client, writes, dry_run, sum, out).await?;
    Ok(())
}

/// The items of a variable as the API returns it.
fn items_of(v: &serde_json::Value) -> BTreeMap<String, String> {
    v["Items"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
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
    let old = registry.as_ref().map(items_of).unwrap_or_default();
    if registry.is_none() && variables.is_empty() {
        return Ok(());
    }
    let mut live = Vec::with_capacity(variables.len());
    for v in variables {
        let ns = v.namespace();
        let query = format!("/v1/var/{}?namespace={}", v.path, encode(ns));
        live.push(client.get_optional(&query).await?.map(|l| LiveVariable {
            items: items_of(&l),
            modify_index: l["ModifyIndex"].as_u64().unwrap_or(0),
        }));
    }
    let plan = plan_variables(variables, &live, &old, failed_packs);
    let mut writes = Vec::new();
    for step in plan.steps {
        match step {
            VariableStep::Refuse(v) => refuse(
                &format!("variable `{}:{}` ({})", v.namespace(), v.path, v.source),
                owner,
                sum,
                out,
            )?,
            VariableStep::Unchanged(_) => sum.unchanged += 1,
            VariableStep::Write {
                action,
                variable: v,
                cas,
            } => {
                let ns = v.namespace();
                writes.push(Write {
                    kind: ExtraKind::Variable,
                    action,
                    name: format!("{ns}:{}", v.path),
                    request: Request::Put(
                        Method::Put,
                        format!("/v1/var/{}?namespace={}&cas={cas}", v.path, encode(ns)),
                        json!({"Namespace": ns, "Path": v.path, "Items": v.items}),
                    ),
                    registry_entry: None,
                });
            }
            VariableStep::Delete {
                namespace: ns,
                path,
                key,
            } => writes.push(Write {
                kind: ExtraKind::Variable,
                action: ExtraAction::Delete,
                name: format!("{ns}:{path}"),
                request: Request::Delete(format!("/v1/var/{path}?namespace={}", encode(&ns))),
                registry_entry: Some(key),
            }),
        }
    }
    let mut new = plan.registry;
    // A variable that could not be deleted is still this owner's: it stays in the registry.
    for key in perform(client, writes, dry_run, sum, out).await? {
        if let Some(val) = old.get(&key) {
            new.insert(key, val.clone());
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

/// How a planned write reaches Nomad.
enum Method {
    Post,
    Put,
}

enum Request {
    Put(Method, String, serde_json::Value),
    /// A delete; an object that is already gone counts as deleted.
    Delete(String),
}

/// One planned write of a policy or a variable, and what to report about it.
struct Write {
    kind: ExtraKind,
    action: ExtraAction,
    name: String,
    request: Request,
    /// The variable's entry in the owner's registry, returned when the write fails.
    registry_entry: Option<String>,
}

/// Performs `writes` in order, the one place that writes policies and variables: each is
/// reported before it is made (and only reported on a dry run), counted, and a failure
/// reported as a problem of its object. Returns the registry entries of failed writes.
async fn perform(
    client: &Client,
    writes: Vec<Write>,
    dry_run: bool,
    sum: &mut ExtrasSummary,
    out: &mut dyn Sink,
) -> anyhow::Result<Vec<String>> {
    let mut failed = Vec::new();
    for w in writes {
        out.emit(&Event::Extra {
            kind: w.kind,
            action: w.action,
            name: &w.name,
        })?;
        if dry_run {
            continue;
        }
        let result = match &w.request {
            Request::Put(Method::Post, path, body) => client.post(path, body).await,
            Request::Put(Method::Put, path, body) => client.put(path, body).await,
            Request::Delete(path) => match client.delete(path).await {
                Err(e) if e.status() == Some(reqwest::StatusCode::NOT_FOUND) => {
                    Ok(serde_json::Value::Null)
                }
                other => other,
            },
        };
        match (result, &w.request) {
            (Ok(_), Request::Delete(_)) => sum.deleted += 1,
            (Ok(_), Request::Put(..)) => sum.written += 1,
            (Err(e), _) => {
                sum.failed += 1;
                failed.extend(w.registry_entry);
                out.emit(&Event::Problem {
                    subject: &format!("{} `{}`", w.kind.name(), w.name),
                    message: &e.to_string(),
                })?;
            }
        }
    }
    Ok(failed)
}

/// An object that exists and is not this owner's: never overwritten.
fn refuse(
    subject: &str,
    owner: &str,
    sum: &mut ExtrasSummary,
    out: &mut dyn Sink,
) -> anyhow::Result<()> {
    sum.failed += 1;
    out.emit(&Event::Problem {
        subject,
        message: &format!("exists and is not managed by `{owner}`; refusing to overwrite it"),
    })?;
    Ok(())
}
