//! Node operations against a small fake agent on a real socket: agent/self from the
//! recorded Nomad 1.1.2 exchange, one node whose drain completes after a few reads.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::Json;
use serde_json::{json, Value};

use super::*;
use crate::nomad::Settings;

const ME: &str = "30f051f0-496d-5f9a-da88-9e64a249621d";

/// The recorded `GET /v1/agent/self` of a Nomad 1.1.2 client+server agent.
fn recorded_agent_self() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../nomad-double/recordings/v1.1.2/agent-self.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let v: Value = serde_json::from_str(&text).unwrap();
    v["response"]["body"].clone()
}

#[derive(Default)]
struct Fake {
    node: Value,
    others: Vec<Value>,
    self_body: Value,
    /// Reads of the node left before a running drain completes.
    drain_reads_left: u32,
    seen: Vec<String>,
}

type Shared = Arc<Mutex<Fake>>;

async fn serve(fake: Fake) -> (Client, Shared) {
    let shared: Shared = Arc::new(Mutex::new(fake));
    let app = axum::Router::new()
        .route(
            "/v1/agent/self",
            get(|State(s): State<Shared>| async move { Json(s.lock().unwrap().self_body.clone()) }),
        )
        .route(
            "/v1/nodes",
            get(|State(s): State<Shared>| async move {
                let f = s.lock().unwrap();
                let mut all = vec![f.node.clone()];
                all.extend(f.others.clone());
                Json(Value::Array(all))
            }),
        )
        .route(
            "/v1/node/{id}",
            get(|State(s): State<Shared>, Path(id): Path<String>| async move {
                let mut f = s.lock().unwrap();
                f.seen.push(format!("read {id}"));
                if !f.node["DrainStrategy"].is_null() {
                    if f.drain_reads_left == 0 {
                        // Like Nomad: a finished drain leaves the node ineligible.
                        f.node["DrainStrategy"] = Value::Null;
                    } else {
                        f.drain_reads_left -= 1;
                    }
                }
                Json(f.node.clone())
            }),
        )
        .route(
            "/v1/node/{id}/drain",
            post(
                |State(s): State<Shared>, Path(id): Path<String>, Json(body): Json<Value>| async move {
                    let mut f = s.lock().unwrap();
                    let spec = &body["DrainSpec"];
                    f.seen.push(format!(
                        "drain {id} {} eligible={}",
                        spec["Deadline"], body["MarkEligible"]
                    ));
                    if spec.is_null() {
                        f.node["DrainStrategy"] = Value::Null;
                        if body["MarkEligible"] == true {
                            f.node["SchedulingEligibility"] = json!("eligible");
                        }
                    } else {
                        f.node["DrainStrategy"] = json!({"DrainSpec": spec});
                        f.node["SchedulingEligibility"] = json!("ineligible");
                        f.node["LastDrain"] = json!({"Status": "draining", "Meta": body["Meta"]});
                    }
                    Json(json!({"EvalIDs": [], "NodeModifyIndex": 10}))
                },
            ),
        )
        .route(
            "/v1/node/{id}/eligibility",
            post(
                |State(s): State<Shared>, Path(id): Path<String>, Json(body): Json<Value>| async move {
                    let mut f = s.lock().unwrap();
                    f.seen.push(format!("eligibility {id} {}", body["Eligibility"]));
                    f.node["SchedulingEligibility"] = body["Eligibility"].clone();
                    Json(json!({"EvalIDs": [], "NodeModifyIndex": 11}))
                },
            ),
        )
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (Client::new(&Settings::new(addr)).unwrap(), shared)
}

fn node(eligibility: &str) -> Value {
    json!({"ID": ME, "Name": "vm", "DrainStrategy": null, "LastDrain": null,
           "SchedulingEligibility": eligibility})
}

fn me() -> NodeRef {
    NodeRef {
        id: ME.into(),
        name: "vm".into(),
    }
}

fn seen(s: &Shared) -> Vec<String> {
    s.lock().unwrap().seen.clone()
}

#[tokio::test]
async fn drains_this_node_when_others_exist_and_waits_for_completion() {
    let (client, s) = serve(Fake {
        node: node("eligible"),
        others: vec![json!({"ID": "other"})],
        self_body: recorded_agent_self(),
        drain_reads_left: 2,
        ..Fake::default()
    })
    .await;
    let got = client.drain_self(Duration::from_secs(5)).await.unwrap();
    assert_eq!(got, Drain::Done(me()));
    let seen = seen(&s);
    assert_eq!(seen[1], format!("drain {ME} 5000000000 eligible=null"));
    assert_eq!(seen.len(), 5, "read, drain, three reads: {seen:?}");
    assert_eq!(
        s.lock().unwrap().node["SchedulingEligibility"],
        "ineligible"
    );
}

#[tokio::test]
async fn does_not_drain_a_lone_node_a_server_only_agent_or_an_ineligible_node() {
    let (client, s) = serve(Fake {
        node: node("eligible"),
        self_body: recorded_agent_self(),
        ..Fake::default()
    })
    .await;
    assert_eq!(
        client.drain_self(Duration::from_secs(5)).await.unwrap(),
        Drain::AloneInCluster
    );
    assert!(!seen(&s).iter().any(|l| l.starts_with("drain")));

    let (client, _) = serve(Fake {
        self_body: json!({"stats": {"nomad": {}}}),
        ..Fake::default()
    })
    .await;
    assert_eq!(
        client.drain_self(Duration::from_secs(5)).await.unwrap(),
        Drain::NotAClient
    );

    let (client, s) = serve(Fake {
        node: node("ineligible"),
        others: vec![json!({"ID": "other"})],
        self_body: recorded_agent_self(),
        ..Fake::default()
    })
    .await;
    assert_eq!(
        client.drain_self(Duration::from_secs(5)).await.unwrap(),
        Drain::AlreadyIneligible(me())
    );
    assert!(!seen(&s).iter().any(|l| l.starts_with("drain")));
}

#[tokio::test]
async fn a_node_drained_by_nomados_is_made_eligible_again() {
    let (client, s) = serve(Fake {
        node: node("eligible"),
        others: vec![json!({"ID": "other"})],
        self_body: recorded_agent_self(),
        ..Fake::default()
    })
    .await;
    client.drain_self(Duration::from_secs(5)).await.unwrap();
    // After the reboot:
    let got = client.mark_self_eligible().await.unwrap();
    assert_eq!(
        got,
        Eligibility::MarkedEligible {
            node: me(),
            cancelled_drain: false
        }
    );
    assert_eq!(
        seen(&s).last().unwrap(),
        &format!("eligibility {ME} \"eligible\"")
    );
    assert_eq!(s.lock().unwrap().node["SchedulingEligibility"], "eligible");
    assert_eq!(
        client.mark_self_eligible().await.unwrap(),
        Eligibility::AlreadyEligible(me())
    );
}

#[tokio::test]
async fn a_drain_still_running_is_cancelled_with_mark_eligible() {
    let (client, s) = serve(Fake {
        node: node("eligible"),
        others: vec![json!({"ID": "other"})],
        self_body: recorded_agent_self(),
        drain_reads_left: 1000,
        ..Fake::default()
    })
    .await;
    assert_eq!(
        client.drain_self(Duration::from_millis(600)).await.unwrap(),
        Drain::TimedOut(me())
    );
    let got = client.mark_self_eligible().await.unwrap();
    assert_eq!(
        got,
        Eligibility::MarkedEligible {
            node: me(),
            cancelled_drain: true
        }
    );
    assert_eq!(
        seen(&s).last().unwrap(),
        &format!("drain {ME} null eligible=true")
    );
    assert_eq!(s.lock().unwrap().node["SchedulingEligibility"], "eligible");
}

#[tokio::test]
async fn someone_elses_drain_is_left_alone() {
    let mut n = node("ineligible");
    n["LastDrain"] = json!({"Status": "complete", "Meta": {"message": "disk swap"}});
    let (client, s) = serve(Fake {
        node: n,
        self_body: recorded_agent_self(),
        ..Fake::default()
    })
    .await;
    match client.mark_self_eligible().await.unwrap() {
        Eligibility::LeftAlone { node, reason } => {
            assert_eq!(node, me());
            assert!(reason.contains("disk swap"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(seen(&s).iter().all(|l| l.starts_with("read")));
    assert_eq!(
        s.lock().unwrap().node["SchedulingEligibility"],
        "ineligible"
    );
}

#[tokio::test]
async fn health_is_ok_only_on_200() {
    let app = axum::Router::new().route(
        "/v1/agent/health",
        get(|| async {
            (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "{\"server\":{\"ok\":false,\"message\":\"no leader\"}}",
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let err = Client::new(&Settings::new(addr))
        .unwrap()
        .health()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("500") && err.contains("no leader"), "{err}");
}

#[tokio::test]
async fn oversized_answers_are_refused_with_or_without_a_length() {
    use futures::stream;
    let big = || "x".repeat(crate::nomad::LIST_BODY_LIMIT + 1);
    let app = axum::Router::new()
        .route("/v1/nodes", get(move || async move { big() }))
        .route(
            "/v1/agent/self",
            get(|| async {
                // Chunked, no Content-Length: the cap must hold while reading.
                let chunks = (0..2048).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024]));
                axum::body::Body::from_stream(stream::iter(chunks))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = Client::new(&Settings::new(addr)).unwrap();
    let e = client.node_ids().await.unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "GET /v1/nodes: the response is larger than {} bytes; refusing to read it",
            crate::nomad::LIST_BODY_LIMIT
        )
    );
    let e = client.self_node_id().await.unwrap_err().to_string();
    assert!(
        e.starts_with("GET /v1/agent/self: the response is larger than 1048576 bytes"),
        "{e}"
    );
}
