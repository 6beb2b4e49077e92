//! The library entry point other crates use: serve in-process on a listener they bound.

use nomad_double::{AgentConfig, Options};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_in_process_and_stops_on_shutdown() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut options = Options::new(AgentConfig::dev());
    options.alloc_delay = std::time::Duration::from_millis(0);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(nomad_double::serve_with_shutdown(
        listener,
        options,
        async {
            let _ = stop_rx.await;
        },
    ));
    let c = reqwest::Client::new();
    let base = format!("http://{addr}");
    let parsed: Value = c
        .post(format!("{base}/v1/jobs/parse"))
        .json(&json!({"JobHCL": include_str!("data/hello.nomad"), "Canonicalize": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(parsed["TaskGroups"][0]["Tasks"][0]["Driver"], "raw_exec");
    let resp = c
        .post(format!("{base}/v1/jobs"))
        .json(&json!({"Job": parsed}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-nomad-index"));
    let job: Value = c
        .get(format!("{base}/v1/job/hello"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(job["Status"], "running");
    assert_eq!(job["Version"], 0);

    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert!(
        c.get(format!("{base}/v1/agent/health"))
            .send()
            .await
            .is_err(),
        "listener closed after shutdown"
    );
}
