//! The little of Nomad's HTTP API PID 1 needs: health, and draining this node at shutdown.

use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

/// The local API address from the agent config (`init.json`): `addresses.http`, else
/// `bind_addr`, with 0.0.0.0/:: (and go-sockaddr templates) meaning loopback; `ports.http`
/// else 4646.
pub fn addr_from_agent_config(config: &Value) -> String {
    let host = config
        .pointer("/addresses/http")
        .or_else(|| config.get("bind_addr"))
        .and_then(Value::as_str)
        .unwrap_or("127.0.0.1");
    let host = match host {
        "" | "0.0.0.0" | "::" | "[::]" => "127.0.0.1".to_string(),
        h if h.contains("{{") => "127.0.0.1".to_string(),
        h if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
        h => h.to_string(),
    };
    let port = config
        .pointer("/ports/http")
        .and_then(Value::as_u64)
        .unwrap_or(4646);
    format!("http://{host}:{port}")
}

/// Reads the agent config file and derives the API address (default when unreadable).
pub fn addr_from_agent_config_file(path: &std::path::Path) -> String {
    match std::fs::read_to_string(path)
        .context("read")
        .and_then(|t| serde_json::from_str::<Value>(&t).context("parse JSON"))
    {
        Ok(v) => addr_from_agent_config(&v),
        Err(e) => {
            crate::warn!(
                "cannot derive the Nomad API address from {}: {e:#}; using http://127.0.0.1:4646",
                path.display()
            );
            "http://127.0.0.1:4646".to_string()
        }
    }
}

pub fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .build()
        .context("build HTTP client")
}

/// One health probe: Ok when `GET /v1/agent/health` answers 200.
pub async fn healthy(client: &reqwest::Client, addr: &str) -> anyhow::Result<()> {
    let resp = client.get(format!("{addr}/v1/agent/health")).send().await?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let body = resp.text().await.unwrap_or_default();
    anyhow::bail!("{status}: {}", body.trim())
}

/// What happened when asked to drain this node.
#[derive(Debug, PartialEq, Eq)]
pub enum Drain {
    NotAClient,
    AloneInCluster,
    Done(String),
    TimedOut(String),
}

/// Drains this node when it is a client and other nodes can take its allocations; waits
/// until the drain completes or `deadline` passes.
pub async fn drain_self(
    client: &reqwest::Client,
    addr: &str,
    deadline: Duration,
) -> anyhow::Result<Drain> {
    let me: Value = client
        .get(format!("{addr}/v1/agent/self"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let Some(node_id) = me.pointer("/stats/client/node_id").and_then(Value::as_str) else {
        return Ok(Drain::NotAClient);
    };
    let nodes: Value = client
        .get(format!("{addr}/v1/nodes"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let others = nodes.as_array().map_or(0, |n| {
        n.iter()
            .filter(|n| n["ID"].as_str() != Some(node_id))
            .count()
    });
    if others == 0 {
        return Ok(Drain::AloneInCluster);
    }
    let body = serde_json::json!({
        "DrainSpec": { "Deadline": deadline.as_nanos() as u64, "IgnoreSystemJobs": false },
        "Meta": { "message": "NomadOS is shutting down" },
    });
    client
        .post(format!("{addr}/v1/node/{node_id}/drain"))
        .json(&body)
        .send()
        .await?
        .error_for_status()?;
    let until = tokio::time::Instant::now() + deadline;
    while tokio::time::Instant::now() < until {
        let node: Value = client
            .get(format!("{addr}/v1/node/{node_id}"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        if node["DrainStrategy"].is_null() {
            return Ok(Drain::Done(node_id.to_string()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(Drain::TimedOut(node_id.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn api_address_follows_the_agent_config() {
        let shipped: Value = serde_json::from_str(
            &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/init.json"))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(addr_from_agent_config(&shipped), "http://127.0.0.1:4646");
        assert_eq!(
            addr_from_agent_config(&json!({"bind_addr": "10.0.0.5", "ports": {"http": 5656}})),
            "http://10.0.0.5:5656"
        );
        assert_eq!(
            addr_from_agent_config(&json!({"bind_addr": "0.0.0.0", "addresses": {"http": "::1"}})),
            "http://[::1]:4646"
        );
        assert_eq!(
            addr_from_agent_config(&json!({"bind_addr": "{{ GetPrivateIP }}"})),
            "http://127.0.0.1:4646"
        );
        assert_eq!(addr_from_agent_config(&json!({})), "http://127.0.0.1:4646");
    }

    #[test]
    fn shipped_agent_config_is_a_single_node_with_raw_exec() {
        let c: Value = serde_json::from_str(
            &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/init.json"))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(c["data_dir"], "/var/lib/nomad");
        assert_eq!(c["bind_addr"], "0.0.0.0");
        assert_eq!(c["server"]["enabled"], true);
        assert_eq!(c["server"]["bootstrap_expect"], 1);
        assert_eq!(c["client"]["enabled"], true);
        assert_eq!(c["plugin"]["raw_exec"]["config"]["enabled"], true);
    }
}
