//! OpenStack's metadata service (Nova): `meta_data.json` for the facts and `user_data` as
//! given at launch. The OpenStack API has no region or flavor in its metadata document.

use reqwest::Method;
use serde::Deserialize;

use super::http::{Endpoint, FetchError};
use super::{facts, Found, DOCUMENT_CAP, USER_DATA_CAP};
use crate::machine::found::Facts;

#[derive(Debug, Deserialize)]
struct MetaData {
    uuid: Option<String>,
    hostname: Option<String>,
    name: Option<String>,
    availability_zone: Option<String>,
}

pub async fn fetch(endpoint: &Endpoint) -> Result<Found, FetchError> {
    let answer = endpoint
        .request(Method::GET, "openstack/latest/meta_data.json", DOCUMENT_CAP)
        .send_required()
        .await?;
    let meta: MetaData = answer.json()?;
    let user_data = endpoint
        .request(Method::GET, "openstack/latest/user_data", USER_DATA_CAP)
        .send()
        .await?
        .map(|answer| answer.body)
        .filter(|data| !data.is_empty());
    let hostname = meta
        .hostname
        .as_deref()
        .and_then(facts::hostname)
        .or_else(|| meta.name.as_deref().and_then(facts::hostname));
    Ok(Found {
        source: "openstack",
        user_data,
        facts: Facts {
            instance_id: meta.uuid.as_deref().and_then(facts::fact),
            hostname,
            region: None,
            zone: meta.availability_zone.as_deref().and_then(facts::fact),
            instance_type: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use axum::routing::get;
    use axum::Router;

    use super::*;
    use crate::machine::providers::http::Problem;
    use crate::machine::providers::mock;

    const META_DATA: &str = r#"{
        "uuid": "d8e02d56-2648-49a3-bf97-6be8f1204f38",
        "hostname": "node-2.novalocal",
        "name": "node-2",
        "availability_zone": "nova",
        "launch_index": 0,
        "public_keys": {"mykey": "ssh-ed25519 AAAA... user@host"},
        "project_id": "f7ac731cc11f40efbc03a9f9e1d1d21f"
    }"#;

    fn nova(meta: &'static str, user_data: Option<Vec<u8>>, slow: bool) -> Router {
        Router::new()
            .route(
                "/openstack/latest/meta_data.json",
                get(move || async move {
                    if slow {
                        tokio::time::sleep(mock::FOREVER).await;
                    }
                    ([("content-type", "application/json")], meta)
                }),
            )
            .route(
                "/openstack/latest/user_data",
                get(move || async move {
                    match user_data {
                        Some(data) => data.into_response(),
                        None => StatusCode::NOT_FOUND.into_response(),
                    }
                }),
            )
    }

    async fn fetch_from(router: Router, deadline: Duration) -> Result<Found, FetchError> {
        let base = mock::serve(router).await;
        fetch(&mock::endpoint("openstack", &base, deadline)).await
    }

    #[tokio::test]
    async fn user_data_and_facts() {
        let router = nova(META_DATA, Some(b"#nomados\n".to_vec()), false);
        let found = fetch_from(router, Duration::from_secs(5)).await.unwrap();
        assert_eq!(found.source, "openstack");
        assert_eq!(found.user_data.as_deref(), Some(&b"#nomados\n"[..]));
        assert_eq!(
            found.facts,
            Facts {
                instance_id: Some("d8e02d56-2648-49a3-bf97-6be8f1204f38".into()),
                hostname: Some("node-2.novalocal".into()),
                region: None,
                zone: Some("nova".into()),
                instance_type: None,
            }
        );
    }

    #[tokio::test]
    async fn no_user_data_is_facts_only() {
        let found = fetch_from(nova(META_DATA, None, false), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(found.user_data, None);
        assert!(found.facts.instance_id.is_some());
    }

    #[tokio::test]
    async fn the_name_stands_in_for_a_missing_or_bad_hostname() {
        let meta = r#"{"uuid": "u", "hostname": "bad host!", "name": "node-3"}"#;
        let found = fetch_from(nova(meta, None, false), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(found.facts.hostname.as_deref(), Some("node-3"));
    }

    #[tokio::test]
    async fn oversize_user_data_is_refused() {
        let router = nova(META_DATA, Some(vec![0; USER_DATA_CAP + 1]), false);
        let err = fetch_from(router, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(err.problem, Problem::TooLarge { cap: USER_DATA_CAP });
    }

    #[tokio::test]
    async fn garbage_json_is_a_clear_error() {
        let router = nova("{\"uuid\": \"secret-ish\",\n  oops", None, false);
        let err = fetch_from(router, Duration::from_secs(5))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("openstack: GET http://127.0.0.1:"),
            "{text}"
        );
        assert!(text.contains("meta_data.json"), "{text}");
        assert!(text.contains("syntax error at line 2 column"), "{text}");
        assert!(!text.contains("secret-ish"), "{text}");
    }

    #[tokio::test]
    async fn a_wrongly_typed_field_is_a_clear_error() {
        let router = nova(r#"{"uuid": 42}"#, None, false);
        let err = fetch_from(router, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("unexpected shape"), "{err}");
    }

    #[tokio::test]
    async fn a_slow_service_hits_the_deadline() {
        let started = Instant::now();
        let err = fetch_from(nova(META_DATA, None, true), Duration::from_millis(500))
            .await
            .unwrap_err();
        assert_eq!(err.problem, Problem::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
