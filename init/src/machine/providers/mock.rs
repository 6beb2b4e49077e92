//! Test support: a real HTTP server on 127.0.0.1 playing a metadata service.

use std::time::{Duration, Instant};

use reqwest::Url;

use super::http::Endpoint;

/// Serves `router` on a free port of 127.0.0.1 for the rest of the test; returns its URL.
pub async fn serve(router: axum::Router) -> Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Url::parse(&format!("http://{addr}/")).unwrap()
}

/// An endpoint for `provider` at `base` whose deadline is `deadline` from now.
pub fn endpoint(provider: &'static str, base: &Url, deadline: Duration) -> Endpoint {
    Endpoint::new(provider, base.as_str(), Instant::now() + deadline).unwrap()
}

/// Longer than any test's deadline: a server that sleeps this long never answers in time.
pub const FOREVER: Duration = Duration::from_secs(60);

/// Azure's wireserver: the goal state and the health reports posted to it.
pub mod wire {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use axum::extract::{Query, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use axum::Router;

    const VERSION: &str = "2012-11-30";

    /// The first `<name>` element's text (the report is ours, so this need not be strict).
    fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
        let open = format!("<{name}>");
        let start = xml.find(&open)? + open.len();
        let length = xml[start..].find(&format!("</{name}>"))?;
        Some(xml[start..start + length].trim())
    }

    pub const CONTAINER_ID: &str = "a8c9e3b6-35ac-4a50-8ea5-b1b9d1b4c1a2";
    pub const INSTANCE_ID: &str = "0a1b2c3d4e5f4a5b8c9d0e1f2a3b4c5d._node-1";

    pub fn goal_state(incarnation: &str, container: &str, instance: &str) -> String {
        format!(
            r#"<?xml version="1.0" encoding="utf-8"?>
<GoalState xmlns:i="http://www.w3.org/2001/XMLSchema-instance" xsi:noNamespaceSchemaLocation="goalstate10.xsd">
  <Version>2012-11-30</Version>
  <Incarnation>{incarnation}</Incarnation>
  <Machine>
    <ExpectedState>Started</ExpectedState>
    <StopRolesDeadlineHint>300000</StopRolesDeadlineHint>
  </Machine>
  <Container>
    <ContainerId>{container}</ContainerId>
    <RoleInstanceList>
      <RoleInstance>
        <InstanceId>{instance}</InstanceId>
        <State>Started</State>
        <Configuration>
          <HostingEnvironmentConfig>http://168.63.129.16:80/machine/x?comp=config</HostingEnvironmentConfig>
        </Configuration>
      </RoleInstance>
    </RoleInstanceList>
  </Container>
</GoalState>
"#
        )
    }

    /// The wireserver: the x-ms-version header is required; POSTed health reports are kept.
    #[derive(Clone, Default)]
    pub struct Wire {
        pub reports: Arc<Mutex<Vec<String>>>,
        /// Health POSTs to fail with 500 before one succeeds.
        pub failures: Arc<AtomicUsize>,
        pub goal_state: Arc<Mutex<String>>,
    }

    pub async fn goal(
        State(wire): State<Wire>,
        Query(q): Query<Vec<(String, String)>>,
        headers: HeaderMap,
    ) -> Response {
        if headers.get("x-ms-version").is_none_or(|v| v != VERSION) {
            return StatusCode::BAD_REQUEST.into_response();
        }
        if q != [("comp".to_string(), "goalstate".to_string())] {
            return StatusCode::NOT_FOUND.into_response();
        }
        let xml = wire.goal_state.lock().unwrap().clone();
        ([("content-type", "text/xml; charset=utf-8")], xml).into_response()
    }

    async fn health(
        State(wire): State<Wire>,
        Query(q): Query<Vec<(String, String)>>,
        headers: HeaderMap,
        body: String,
    ) -> Response {
        let xml = headers
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/xml"));
        if headers.get("x-ms-version").is_none_or(|v| v != VERSION) || !xml {
            return StatusCode::BAD_REQUEST.into_response();
        }
        if q != [("comp".to_string(), "health".to_string())] {
            return StatusCode::NOT_FOUND.into_response();
        }
        let failing = wire.failures.load(Ordering::SeqCst);
        if failing > 0 {
            wire.failures.store(failing - 1, Ordering::SeqCst);
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        wire.reports.lock().unwrap().push(body);
        StatusCode::OK.into_response()
    }

    pub fn router(wire: Wire) -> Router {
        if wire.goal_state.lock().unwrap().is_empty() {
            *wire.goal_state.lock().unwrap() = goal_state("3", CONTAINER_ID, INSTANCE_ID);
        }
        Router::new()
            .route("/machine/", get(goal).post(health))
            .with_state(wire)
    }

    /// Asserts `report` is a Ready report for the test's goal state.
    pub fn assert_ready_report(report: &str) {
        let ids = (
            element(report, "GoalStateIncarnation"),
            element(report, "ContainerId"),
            element(report, "InstanceId"),
            element(report, "State"),
        );
        assert_eq!(
            ids,
            (
                Some("3"),
                Some(CONTAINER_ID),
                Some(INSTANCE_ID),
                Some("Ready")
            ),
            "{report}"
        );
        assert!(report.starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Health "));
    }
}
