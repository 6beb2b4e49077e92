//! Azure's Instance Metadata Service: one instance document (`Metadata: true`) holds the
//! facts and, since api-version 2021-01-01, the user data (base64). The wireserver's ready
//! report is its own step ([`super::wireserver`]).

use base64::Engine;
use reqwest::Method;
use serde::Deserialize;

use super::http::{Endpoint, FetchError, Problem};
use super::{facts, Found, DOCUMENT_CAP, USER_DATA_CAP};
use crate::machine::found::Facts;

const INSTANCE_PATH: &str = "metadata/instance?api-version=2021-02-01";
/// The document carries the user data base64-encoded (4 bytes per 3) besides the facts.
const INSTANCE_CAP: usize = DOCUMENT_CAP + USER_DATA_CAP.div_ceil(3) * 4;

#[derive(Debug, Deserialize)]
struct Instance {
    compute: Compute,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Compute {
    name: Option<String>,
    location: Option<String>,
    zone: Option<String>,
    vm_size: Option<String>,
    vm_id: Option<String>,
    user_data: Option<String>,
}

pub async fn fetch(endpoint: &Endpoint) -> Result<Found, FetchError> {
    let answer = endpoint
        .request(Method::GET, INSTANCE_PATH, INSTANCE_CAP)
        .header("metadata", "true")
        .send_required()
        .await?;
    let instance: Instance = answer.json()?;
    let compute = instance.compute;
    let user_data = match compute.user_data.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(encoded) => {
            let data = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|_| answer.invalid("compute.userData is not base64"))?;
            if data.len() > USER_DATA_CAP {
                return Err(FetchError {
                    problem: Problem::TooLarge { cap: USER_DATA_CAP },
                    ..answer.invalid("")
                });
            }
            Some(data)
        }
    };
    Ok(Found {
        source: "azure",
        user_data,
        facts: Facts {
            instance_id: compute.vm_id.as_deref().and_then(facts::fact),
            hostname: compute.name.as_deref().and_then(facts::hostname),
            region: compute.location.as_deref().and_then(facts::fact),
            // Empty when the VM is in no availability zone.
            zone: compute.zone.as_deref().and_then(facts::fact),
            instance_type: compute.vm_size.as_deref().and_then(facts::fact),
        },
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use axum::extract::Query;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use axum::Router;
    use base64::Engine;

    use super::*;
    use crate::machine::providers::mock;

    /// An instance document as the IMDS gives it (trimmed to what matters, plus some noise).
    fn document(user_data_b64: &str) -> String {
        serde_json::json!({
            "compute": {
                "azEnvironment": "AzurePublicCloud",
                "location": "westeurope",
                "name": "node-1",
                "osType": "Linux",
                "userData": user_data_b64,
                "vmId": "02aab8a4-74ef-476e-8182-f6d2ba4166a6",
                "vmSize": "Standard_D2s_v5",
                "zone": "2"
            },
            "network": {"interface": []}
        })
        .to_string()
    }

    /// The IMDS as Microsoft documents it: `Metadata: true` required (400 without), an
    /// api-version required.
    fn imds(body: String, slow: bool) -> Router {
        Router::new().route(
            "/metadata/instance",
            get(
                move |headers: HeaderMap,
                      Query(query): Query<std::collections::HashMap<String, String>>| {
                    let body = body.clone();
                    async move {
                        if slow {
                            tokio::time::sleep(mock::FOREVER).await;
                        }
                        let metadata = headers.get("metadata").is_some_and(|v| v == "true");
                        if !metadata || !query.contains_key("api-version") {
                            return StatusCode::BAD_REQUEST.into_response();
                        }
                        let response: Response =
                            ([("content-type", "application/json")], body).into_response();
                        response
                    }
                },
            ),
        )
    }

    async fn fetch_from(router: Router, deadline: Duration) -> Result<Found, FetchError> {
        let base = mock::serve(router).await;
        fetch(&mock::endpoint("azure", &base, deadline)).await
    }

    fn b64(data: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(data)
    }

    #[tokio::test]
    async fn user_data_and_facts() {
        let router = imds(document(&b64(b"role = \"server\"\n")), false);
        let found = fetch_from(router, Duration::from_secs(5)).await.unwrap();
        assert_eq!(found.source, "azure");
        assert_eq!(
            found.user_data.as_deref(),
            Some(&b"role = \"server\"\n"[..])
        );
        assert_eq!(
            found.facts,
            Facts {
                instance_id: Some("02aab8a4-74ef-476e-8182-f6d2ba4166a6".into()),
                hostname: Some("node-1".into()),
                region: Some("westeurope".into()),
                zone: Some("2".into()),
                instance_type: Some("Standard_D2s_v5".into()),
            }
        );
    }

    #[tokio::test]
    async fn no_user_data_is_facts_only() {
        let found = fetch_from(imds(document(""), false), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(found.user_data, None);
        assert_eq!(found.facts.region.as_deref(), Some("westeurope"));
    }

    #[tokio::test]
    async fn user_data_decoding_past_the_cap_is_refused() {
        let router = imds(document(&b64(&vec![b'x'; USER_DATA_CAP + 1])), false);
        let err = fetch_from(router, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(err.problem, Problem::TooLarge { cap: USER_DATA_CAP });
    }

    #[tokio::test]
    async fn an_oversize_document_is_refused() {
        let router = imds(" ".repeat(INSTANCE_CAP + 1), false);
        let err = fetch_from(router, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(err.problem, Problem::TooLarge { cap: INSTANCE_CAP });
    }

    #[tokio::test]
    async fn user_data_that_is_not_base64_is_a_clear_error() {
        let router = imds(document("role = server!"), false);
        let err = fetch_from(router, Duration::from_secs(5))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("compute.userData is not base64"), "{text}");
        assert!(!text.contains("role = server"), "{text}");
    }

    #[tokio::test]
    async fn garbage_json_is_a_clear_error() {
        let router = imds("<html>captive portal</html>".to_string(), false);
        let err = fetch_from(router, Duration::from_secs(5))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("azure: GET http://127.0.0.1:"), "{text}");
        assert!(text.contains("metadata/instance?api-version="), "{text}");
        assert!(text.contains("syntax error at line 1 column 1"), "{text}");
    }

    #[tokio::test]
    async fn a_slow_service_hits_the_deadline() {
        let started = Instant::now();
        let err = fetch_from(imds(document(""), true), Duration::from_millis(500))
            .await
            .unwrap_err();
        assert_eq!(err.problem, Problem::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
