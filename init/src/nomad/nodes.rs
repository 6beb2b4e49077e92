//! The agent and its node: health, version, this node's ID and name, draining it at
//! shutdown and making it eligible for work again after the reboot.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use super::connection::SMALL_BODY_LIMIT;
use super::error::{ApiError, Result};
use super::{encode, Client, Version};

/// Marks the drains NomadOS starts, so that after the reboot it undoes only its own.
pub const DRAIN_MESSAGE: &str = "NomadOS is shutting down";
const HEALTH_TIMEOUT: Duration = Duration::from_secs(10);

/// What the applier needs to know about the agent it talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInfo {
    pub version: Version,
    pub datacenter: String,
    pub region: String,
    pub acl_enabled: bool,
}

/// This agent's client node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRef {
    pub id: String,
    pub name: String,
}

impl std::fmt::Display for NodeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.name.is_empty() {
            write!(f, "{}", self.id)
        } else {
            write!(f, "{} ({})", self.name, self.id)
        }
    }
}

/// What happened when asked to drain this node.
#[derive(Debug, PartialEq, Eq)]
pub enum Drain {
    NotAClient,
    AloneInCluster,
    /// Someone else already drained it or made it ineligible: left as it is, so that
    /// the reboot does not undo their decision.
    AlreadyIneligible(NodeRef),
    Done(NodeRef),
    TimedOut(NodeRef),
}

/// What happened when asked to make this node eligible again.
#[derive(Debug, PartialEq, Eq)]
pub enum Eligibility {
    NotAClient,
    AlreadyEligible(NodeRef),
    /// It was ineligible (a drain was cancelled when one was still running).
    MarkedEligible {
        node: NodeRef,
        cancelled_drain: bool,
    },
    /// Someone other than NomadOS drained it; their decision stands.
    LeftAlone {
        node: NodeRef,
        reason: String,
    },
}

impl Client {
    /// One health probe: Ok when `GET /v1/agent/health` answers 200.
    pub async fn health(&self) -> Result<()> {
        self.call_limited(
            Method::GET,
            "/v1/agent/health",
            None,
            SMALL_BODY_LIMIT,
            Some(HEALTH_TIMEOUT),
        )
        .await
        .map(|_| ())
    }

    async fn agent_self(&self) -> Result<Value> {
        self.call_limited(Method::GET, "/v1/agent/self", None, SMALL_BODY_LIMIT, None)
            .await
    }

    pub async fn agent_info(&self) -> Result<AgentInfo> {
        let path = "/v1/agent/self";
        let v = self.agent_self().await?;
        let config = &v["config"];
        let raw_version = config["Version"]["Version"]
            .as_str()
            .or_else(|| v["member"]["Tags"]["build"].as_str())
            .unwrap_or_default();
        let version = Version::parse(raw_version).ok_or_else(|| ApiError::Decode {
            method: Method::GET,
            path: path.into(),
            message: format!("cannot read the agent's version from `{raw_version}`"),
        })?;
        Ok(AgentInfo {
            version,
            datacenter: config["Datacenter"].as_str().unwrap_or("dc1").to_string(),
            region: config["Region"].as_str().unwrap_or("global").to_string(),
            acl_enabled: config["ACL"]["Enabled"].as_bool().unwrap_or(false),
        })
    }

    /// This agent's node ID, or None when the agent is not a client.
    pub async fn self_node_id(&self) -> Result<Option<String>> {
        let me = self.agent_self().await?;
        Ok(me
            .pointer("/stats/client/node_id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .map(str::to_string))
    }

    /// `GET /v1/node/<id>`.
    pub async fn node(&self, id: &str) -> Result<Value> {
        self.call_limited(
            Method::GET,
            &format!("/v1/node/{}", encode(id)),
            None,
            SMALL_BODY_LIMIT,
            None,
        )
        .await
    }

    /// `GET /v1/node/<id>/allocations`: the node's allocations in full (each with its job),
    /// bounded like every list.
    pub async fn node_allocations(&self, id: &str) -> Result<Vec<Value>> {
        let path = format!("/v1/node/{}/allocations", encode(id));
        self.get_list(path, "allocations").await
    }

    /// This agent's node and its current record, or None when the agent is not a client.
    pub async fn find_self(&self) -> Result<Option<(NodeRef, Value)>> {
        let Some(id) = self.self_node_id().await? else {
            return Ok(None);
        };
        let node = self.node(&id).await?;
        let name = node["Name"].as_str().unwrap_or_default().to_string();
        Ok(Some((NodeRef { id, name }, node)))
    }

    /// IDs of every node in the cluster.
    pub async fn node_ids(&self) -> Result<Vec<String>> {
        let nodes = self.get_list("/v1/nodes".into(), "nodes").await?;
        Ok(nodes
            .iter()
            .filter_map(|n| n["ID"].as_str().map(str::to_string))
            .collect())
    }

    /// Starts draining node `id` (marked as NomadOS's drain); allocations have
    /// `deadline` to move.
    pub async fn drain(&self, id: &str, deadline: Duration) -> Result<()> {
        let body = json!({
            "NodeID": id,
            "DrainSpec": { "Deadline": u64::try_from(deadline.as_nanos()).unwrap_or(u64::MAX), "IgnoreSystemJobs": false },
            "Meta": { "message": DRAIN_MESSAGE },
        });
        self.post(&format!("/v1/node/{}/drain", encode(id)), &body)
            .await
            .map(|_| ())
    }

    /// Makes node `id` eligible for work; `draining`: cancel its drain to do so (Nomad
    /// refuses eligibility while a drain runs).
    pub async fn mark_eligible(&self, id: &str, draining: bool) -> Result<()> {
        let path = encode(id);
        if draining {
            let body = json!({"NodeID": id, "DrainSpec": null, "MarkEligible": true});
            self.post(&format!("/v1/node/{path}/drain"), &body).await?;
        } else {
            let body = json!({"NodeID": id, "Eligibility": "eligible"});
            self.post(&format!("/v1/node/{path}/eligibility"), &body)
                .await?;
        }
        Ok(())
    }

    /// Drains this node when it is a client and other nodes can take its allocations;
    /// waits until the drain completes or `deadline` passes.
    pub async fn drain_self(&self, deadline: Duration) -> Result<Drain> {
        let Some((me, node)) = self.find_self().await? else {
            return Ok(Drain::NotAClient);
        };
        if !node["DrainStrategy"].is_null() || node["SchedulingEligibility"] == "ineligible" {
            return Ok(Drain::AlreadyIneligible(me));
        }
        let others = self
            .node_ids()
            .await?
            .iter()
            .filter(|id| **id != me.id)
            .count();
        if others == 0 {
            return Ok(Drain::AloneInCluster);
        }
        self.drain(&me.id, deadline).await?;
        let until = tokio::time::Instant::now() + deadline;
        while tokio::time::Instant::now() < until {
            if self.node(&me.id).await?["DrainStrategy"].is_null() {
                return Ok(Drain::Done(me));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(Drain::TimedOut(me))
    }

    /// Makes this node eligible for work again unless someone other than NomadOS drained
    /// it (Nomad 1.2+ records the last drain's meta; older agents do not, and then the
    /// node is made eligible). A drain still running is cancelled.
    pub async fn mark_self_eligible(&self) -> Result<Eligibility> {
        let Some((me, node)) = self.find_self().await? else {
            return Ok(Eligibility::NotAClient);
        };
        let draining = !node["DrainStrategy"].is_null();
        if !draining && node["SchedulingEligibility"] != "ineligible" {
            return Ok(Eligibility::AlreadyEligible(me));
        }
        if let Some(last) = node.get("LastDrain").filter(|l| l.is_object()) {
            let message = last.pointer("/Meta/message").and_then(Value::as_str);
            if message != Some(DRAIN_MESSAGE) {
                let reason = format!(
                    "its last drain was not NomadOS's (meta message {:?})",
                    message.unwrap_or("")
                );
                return Ok(Eligibility::LeftAlone { node: me, reason });
            }
        }
        self.mark_eligible(&me.id, draining).await?;
        Ok(Eligibility::MarkedEligible {
            node: me,
            cancelled_drain: draining,
        })
    }
}

#[cfg(test)]
#[path = "nodes_tests.rs"]
mod tests;
