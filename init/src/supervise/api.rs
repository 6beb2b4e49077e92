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

    /// A Nomad double on a real socket: agent/self from the recorded v1.1.2 exchange,
    /// `nodes` as given, and a drain that completes after two polls.
    async fn serve(
        nodes: Value,
        self_body: Value,
    ) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use axum::extract::{Path, State};
        use axum::routing::{get, post};
        use axum::Json;
        use std::sync::{Arc, Mutex};
        type Seen = Arc<Mutex<Vec<String>>>;
        let seen: Seen = Arc::default();
        let app =
            axum::Router::new()
                .route(
                    "/v1/agent/self",
                    get(move || async move { Json(self_body) }),
                )
                .route("/v1/nodes", get(move || async move { Json(nodes) }))
                .route(
                    "/v1/node/{id}/drain",
                    post(
                        |State(seen): State<Seen>,
                         Path(id): Path<String>,
                         Json(body): Json<Value>| async move {
                            seen.lock()
                                .unwrap()
                                .push(format!("drain {id} {}", body["DrainSpec"]["Deadline"]));
                            Json(json!({"EvalIDs": [], "NodeModifyIndex": 10}))
                        },
                    ),
                )
                .route(
                    "/v1/node/{id}",
                    get(
                        |State(seen): State<Seen>, Path(id): Path<String>| async move {
                            let mut seen = seen.lock().unwrap();
                            seen.push(format!("read {id}"));
                            let reads = seen.iter().filter(|s| s.starts_with("read")).count();
                            let strategy = if reads < 3 {
                                json!({"Deadline": 1})
                            } else {
                                Value::Null
                            };
                            Json(json!({"ID": id, "DrainStrategy": strategy}))
                        },
                    ),
                )
                .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (addr, seen)
    }

    fn recorded_agent_self() -> Value {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../nomad-double/recordings/v1.1.2/agent-self.json"))
            .unwrap_or_else(|_| {
                r#"{"response":{"body":{"stats":{"client":{"node_id":"30f051f0-496d-5f9a-da88-9e64a249621d"}}}}}"#.into()
            });
        let v: Value = serde_json::from_str(&text).unwrap();
        v["response"]["body"].clone()
    }

    const ME: &str = "30f051f0-496d-5f9a-da88-9e64a249621d";

    #[tokio::test]
    async fn drains_this_node_when_others_exist_and_waits_for_completion() {
        let nodes = json!([{"ID": ME}, {"ID": "other"}]);
        let (addr, seen) = serve(nodes, recorded_agent_self()).await;
        let got = drain_self(&client().unwrap(), &addr, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(got, Drain::Done(ME.to_string()));
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen[0], format!("drain {ME} 5000000000"));
        assert_eq!(seen.len(), 4, "drain then three reads: {seen:?}");
    }

    #[tokio::test]
    async fn does_not_drain_a_lone_node_or_a_server_only_agent() {
        let (addr, seen) = serve(json!([{"ID": ME}]), recorded_agent_self()).await;
        let got = drain_self(&client().unwrap(), &addr, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(got, Drain::AloneInCluster);
        assert!(seen.lock().unwrap().is_empty());

        let (addr, _) = serve(json!([]), json!({"stats": {"nomad": {}}})).await;
        let got = drain_self(&client().unwrap(), &addr, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(got, Drain::NotAClient);
    }

    #[tokio::test]
    async fn health_is_ok_only_on_200() {
        let app = axum::Router::new().route(
            "/v1/agent/health",
            axum::routing::get(|| async {
                (
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "{\"server\":{\"ok\":false,\"message\":\"no leader\"}}",
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let err = healthy(&client().unwrap(), &addr)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("500") && err.contains("no leader"), "{err}");
    }
}
