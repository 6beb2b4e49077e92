//! Google Compute Engine's metadata server. Every request carries `Metadata-Flavor: Google`
//! and every answer must carry it back: an answer without it is not from the metadata
//! server (a proxy, a captive portal) and is refused.

use reqwest::Method;

use super::http::{Answer, Endpoint, FetchError};
use super::{facts, Found, USER_DATA_CAP, VALUE_CAP};
use crate::machine::found::Facts;

const FLAVOR_HEADER: &str = "metadata-flavor";
const FLAVOR: &str = "Google";
/// Our own attribute wins over the generic one, which cloud-init images also read.
const USER_DATA_ATTRIBUTES: [&str; 2] = [
    "instance/attributes/nomados-config",
    "instance/attributes/user-data",
];

async fn get(endpoint: &Endpoint, path: &str, cap: usize) -> Result<Option<Answer>, FetchError> {
    let answer = endpoint
        .request(Method::GET, path, cap)
        .header(FLAVOR_HEADER, FLAVOR)
        .send()
        .await?;
    if let Some(answer) = &answer {
        let flavor = answer.headers.get(FLAVOR_HEADER);
        if flavor.is_none_or(|v| v != FLAVOR) {
            return Err(answer.invalid(
                "answer lacks the Metadata-Flavor: Google header, so it is not from the metadata server",
            ));
        }
    }
    Ok(answer)
}

async fn value(endpoint: &Endpoint, path: &str) -> Result<Option<String>, FetchError> {
    match get(endpoint, path, VALUE_CAP).await? {
        Some(answer) => Ok(Some(answer.text()?.to_string())),
        None => Ok(None),
    }
}

/// `us-central1-a` -> `us-central1`.
fn region_of(zone: &str) -> Option<&str> {
    zone.rsplit_once('-').map(|(region, _)| region)
}

pub async fn fetch(endpoint: &Endpoint) -> Result<Found, FetchError> {
    let mut user_data = None;
    for path in USER_DATA_ATTRIBUTES {
        if let Some(answer) = get(endpoint, path, USER_DATA_CAP).await? {
            user_data = Some(answer.body).filter(|data| !data.is_empty());
            break;
        }
    }
    let instance_id = value(endpoint, "instance/id").await?;
    let hostname = value(endpoint, "instance/hostname").await?;
    // Both are resource paths: projects/123/zones/us-central1-a, .../machineTypes/e2-medium.
    let zone = value(endpoint, "instance/zone").await?;
    let zone = zone
        .as_deref()
        .map(facts::last_segment)
        .and_then(facts::fact);
    let machine_type = value(endpoint, "instance/machine-type").await?;
    Ok(Found {
        source: "gce",
        user_data,
        facts: Facts {
            instance_id: instance_id.as_deref().and_then(facts::fact),
            hostname: hostname.as_deref().and_then(facts::hostname),
            region: zone.as_deref().and_then(region_of).and_then(facts::fact),
            zone,
            instance_type: machine_type
                .as_deref()
                .map(facts::last_segment)
                .and_then(facts::fact),
        },
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use axum::Router;

    use super::*;
    use crate::machine::providers::http::Problem;
    use crate::machine::providers::mock;

    #[derive(Clone, Default)]
    struct Server {
        values: Arc<HashMap<String, Vec<u8>>>,
        /// Answer without the Metadata-Flavor header (not the metadata server).
        flavorless: bool,
        slow: bool,
    }

    /// The metadata server as Google documents it: requests without `Metadata-Flavor:
    /// Google` are refused (403), answers carry the header, missing keys are 404.
    async fn answer(
        State(server): State<Server>,
        Path(path): Path<String>,
        headers: HeaderMap,
    ) -> Response {
        if server.slow {
            tokio::time::sleep(mock::FOREVER).await;
        }
        if headers.get(FLAVOR_HEADER).is_none_or(|v| v != FLAVOR) {
            return StatusCode::FORBIDDEN.into_response();
        }
        let Some(body) = server.values.get(&path) else {
            return StatusCode::NOT_FOUND.into_response();
        };
        if server.flavorless {
            return body.clone().into_response();
        }
        ([(FLAVOR_HEADER, FLAVOR)], body.clone()).into_response()
    }

    fn instance(extra: &[(&str, &[u8])]) -> Server {
        let mut values: HashMap<String, Vec<u8>> = [
            ("instance/id", &b"4520031799277581759"[..]),
            ("instance/hostname", b"web-1.us-central1-a.c.proj.internal"),
            ("instance/zone", b"projects/123456789/zones/us-central1-a"),
            (
                "instance/machine-type",
                b"projects/123456789/machineTypes/e2-medium",
            ),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_vec()))
        .collect();
        for (k, v) in extra {
            values.insert(k.to_string(), v.to_vec());
        }
        Server {
            values: Arc::new(values),
            ..Server::default()
        }
    }

    async fn fetch_from(server: Server, deadline: Duration) -> Result<Found, FetchError> {
        let router = Router::new()
            .route("/computeMetadata/v1/{*path}", get(answer))
            .with_state(server);
        let base = mock::serve(router)
            .await
            .join("computeMetadata/v1/")
            .unwrap();
        fetch(&mock::endpoint("gce", &base, deadline)).await
    }

    #[tokio::test]
    async fn user_data_and_facts() {
        let server = instance(&[("instance/attributes/user-data", b"role = \"client\"\n")]);
        let found = fetch_from(server, Duration::from_secs(5)).await.unwrap();
        assert_eq!(found.source, "gce");
        assert_eq!(
            found.user_data.as_deref(),
            Some(&b"role = \"client\"\n"[..])
        );
        assert_eq!(
            found.facts,
            Facts {
                instance_id: Some("4520031799277581759".into()),
                hostname: Some("web-1.us-central1-a.c.proj.internal".into()),
                region: Some("us-central1".into()),
                zone: Some("us-central1-a".into()),
                instance_type: Some("e2-medium".into()),
            }
        );
    }

    #[tokio::test]
    async fn nomados_config_wins_over_user_data() {
        let server = instance(&[
            ("instance/attributes/user-data", b"#cloud-config\n"),
            ("instance/attributes/nomados-config", b"ours"),
        ]);
        let found = fetch_from(server, Duration::from_secs(5)).await.unwrap();
        assert_eq!(found.user_data.as_deref(), Some(&b"ours"[..]));
    }

    #[tokio::test]
    async fn no_user_data_is_facts_only() {
        let found = fetch_from(instance(&[]), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(found.user_data, None);
        assert_eq!(found.facts.zone.as_deref(), Some("us-central1-a"));
    }

    #[tokio::test]
    async fn oversize_user_data_is_refused() {
        let big = vec![b'x'; USER_DATA_CAP + 1];
        let server = instance(&[("instance/attributes/user-data", &big)]);
        let err = fetch_from(server, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(err.problem, Problem::TooLarge { cap: USER_DATA_CAP });
        assert!(err.url.ends_with("instance/attributes/user-data"), "{err}");
    }

    #[tokio::test]
    async fn an_answer_without_the_flavor_header_is_refused() {
        let server = Server {
            flavorless: true,
            ..instance(&[("instance/attributes/user-data", b"x")])
        };
        let err = fetch_from(server, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("lacks the Metadata-Flavor: Google header"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_slow_server_hits_the_deadline() {
        let server = Server {
            slow: true,
            ..instance(&[])
        };
        let started = Instant::now();
        let err = fetch_from(server, Duration::from_millis(500))
            .await
            .unwrap_err();
        assert_eq!(err.problem, Problem::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn region_is_the_zone_without_its_letter() {
        assert_eq!(region_of("europe-west4-b"), Some("europe-west4"));
        assert_eq!(region_of("nozone"), None);
    }
}
