//! Amazon EC2's instance metadata service, IMDSv2 only: a session token first (PUT with
//! its lifetime), then every GET carries it. IMDSv1 (no token) is not used: an instance
//! that requires tokens refuses it, and the token is what protects the service from SSRF.

use reqwest::Method;

use super::http::{Endpoint, FetchError};
use super::{facts, Found, USER_DATA_CAP, VALUE_CAP};
use crate::machine::found::Facts;

const TOKEN_PATH: &str = "latest/api/token";
const TOKEN_TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
/// The token is needed for the few requests of this boot only.
const TOKEN_TTL_SECONDS: &str = "300";

struct Session<'a> {
    endpoint: &'a Endpoint,
    token: String,
}

impl Session<'_> {
    async fn get(&self, path: &str, cap: usize) -> Result<Option<Vec<u8>>, FetchError> {
        let answer = self
            .endpoint
            .request(Method::GET, path, cap)
            .secret_header(TOKEN_HEADER, &self.token)
            .send()
            .await?;
        Ok(answer.map(|a| a.body))
    }

    /// A metadata value as text; `None` when the instance has no such value.
    async fn value(&self, path: &str) -> Result<Option<String>, FetchError> {
        let answer = self
            .endpoint
            .request(Method::GET, path, VALUE_CAP)
            .secret_header(TOKEN_HEADER, &self.token)
            .send()
            .await?;
        answer.map(|a| a.text().map(str::to_string)).transpose()
    }
}

pub async fn fetch(endpoint: &Endpoint) -> Result<Found, FetchError> {
    let answer = endpoint
        .request(Method::PUT, TOKEN_PATH, VALUE_CAP)
        .header(TOKEN_TTL_HEADER, TOKEN_TTL_SECONDS)
        .send_required()
        .await?;
    let token = answer.text()?.to_string();
    if token.is_empty() {
        return Err(answer.invalid("empty IMDSv2 token"));
    }
    let session = Session { endpoint, token };

    // 404 is how IMDS says the instance was launched without user data.
    let user_data = session
        .get("latest/user-data", USER_DATA_CAP)
        .await?
        .filter(|data| !data.is_empty());
    let value = |path| session.value(path);
    let instance_id = value("latest/meta-data/instance-id").await?;
    let hostname = value("latest/meta-data/local-hostname").await?;
    let region = value("latest/meta-data/placement/region").await?;
    let zone = value("latest/meta-data/placement/availability-zone").await?;
    let instance_type = value("latest/meta-data/instance-type").await?;
    Ok(Found {
        source: "ec2",
        user_data,
        facts: Facts {
            instance_id: instance_id.as_deref().and_then(facts::fact),
            hostname: hostname.as_deref().and_then(facts::hostname),
            region: region.as_deref().and_then(facts::fact),
            zone: zone.as_deref().and_then(facts::fact),
            instance_type: instance_type.as_deref().and_then(facts::fact),
        },
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::{get, put};
    use axum::Router;

    use super::*;
    use crate::machine::providers::http::Problem;
    use crate::machine::providers::mock;

    const TOKEN: &str = "AQAEAFakeTokenValue==";

    /// What the mock instance holds.
    #[derive(Clone, Default)]
    struct Instance {
        user_data: Option<Vec<u8>>,
        /// Seen token values of the GETs (to check each carried the token).
        seen: Arc<Mutex<Vec<Option<String>>>>,
        slow: bool,
    }

    fn authorized(headers: &HeaderMap, instance: &Instance) -> bool {
        let token = headers
            .get(TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        instance.seen.lock().unwrap().push(token.clone());
        token.as_deref() == Some(TOKEN)
    }

    /// IMDSv2 as AWS documents it: PUT for a token (the TTL header is required), every GET
    /// without the token is 401, user data 404 when there is none.
    fn imds(instance: Instance) -> Router {
        let value = |text: &'static str| {
            let instance = instance.clone();
            get(move |headers: HeaderMap| async move {
                if !authorized(&headers, &instance) {
                    return StatusCode::UNAUTHORIZED.into_response();
                }
                text.into_response()
            })
        };
        let data = instance.clone();
        let slow = instance.slow;
        Router::new()
            .route(
                "/latest/api/token",
                put(move |headers: HeaderMap| async move {
                    if slow {
                        tokio::time::sleep(mock::FOREVER).await;
                    }
                    match headers.get(TOKEN_TTL_HEADER) {
                        Some(ttl) if ttl == TOKEN_TTL_SECONDS => TOKEN.into_response(),
                        _ => StatusCode::BAD_REQUEST.into_response(),
                    }
                }),
            )
            .route(
                "/latest/user-data",
                get(move |headers: HeaderMap| async move {
                    if !authorized(&headers, &data) {
                        return StatusCode::UNAUTHORIZED.into_response();
                    }
                    match data.user_data.clone() {
                        Some(bytes) => bytes.into_response(),
                        None => StatusCode::NOT_FOUND.into_response(),
                    }
                }),
            )
            .route(
                "/latest/meta-data/instance-id",
                value("i-0123456789abcdef0"),
            )
            .route(
                "/latest/meta-data/local-hostname",
                value("ip-10-0-1-23.eu-west-1.compute.internal"),
            )
            .route("/latest/meta-data/placement/region", value("eu-west-1"))
            .route(
                "/latest/meta-data/placement/availability-zone",
                value("eu-west-1b"),
            )
            .route("/latest/meta-data/instance-type", value("m7i.large"))
    }

    async fn fetch_from(instance: Instance, deadline: Duration) -> Result<Found, FetchError> {
        let base = mock::serve(imds(instance)).await;
        fetch(&mock::endpoint("ec2", &base, deadline)).await
    }

    #[tokio::test]
    async fn user_data_and_facts_with_a_token() {
        let instance = Instance {
            user_data: Some(b"[nomad]\nrole = \"server\"\n".to_vec()),
            ..Instance::default()
        };
        let seen = instance.seen.clone();
        let found = fetch_from(instance, Duration::from_secs(5)).await.unwrap();
        assert_eq!(found.source, "ec2");
        assert_eq!(
            found.user_data.as_deref(),
            Some(&b"[nomad]\nrole = \"server\"\n"[..])
        );
        assert_eq!(
            found.facts,
            Facts {
                instance_id: Some("i-0123456789abcdef0".into()),
                hostname: Some("ip-10-0-1-23.eu-west-1.compute.internal".into()),
                region: Some("eu-west-1".into()),
                zone: Some("eu-west-1b".into()),
                instance_type: Some("m7i.large".into()),
            }
        );
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 6, "user data and five facts");
        assert!(seen.iter().all(|t| t.as_deref() == Some(TOKEN)));
    }

    #[tokio::test]
    async fn no_user_data_is_facts_only() {
        let found = fetch_from(Instance::default(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(found.user_data, None);
        assert_eq!(
            found.facts.instance_id.as_deref(),
            Some("i-0123456789abcdef0")
        );
    }

    #[tokio::test]
    async fn the_mock_refuses_a_get_without_the_token() {
        // The mock's 401 is what makes the token assertion above meaningful.
        let base = mock::serve(imds(Instance::default())).await;
        let endpoint = mock::endpoint("ec2", &base, Duration::from_secs(2));
        let err = endpoint
            .request(Method::GET, "latest/meta-data/instance-id", VALUE_CAP)
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.problem, Problem::Status(401));
    }

    #[tokio::test]
    async fn oversize_user_data_is_refused() {
        let instance = Instance {
            user_data: Some(vec![b'x'; USER_DATA_CAP + 1]),
            ..Instance::default()
        };
        let err = fetch_from(instance, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(err.problem, Problem::TooLarge { cap: USER_DATA_CAP });
        assert!(err.url.ends_with("/latest/user-data"), "{err}");
        assert!(
            err.to_string().starts_with("ec2: GET http://127.0.0.1:"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn user_data_exactly_at_the_cap_is_taken() {
        let instance = Instance {
            user_data: Some(vec![b'x'; USER_DATA_CAP]),
            ..Instance::default()
        };
        let found = fetch_from(instance, Duration::from_secs(5)).await.unwrap();
        assert_eq!(found.user_data.map(|d| d.len()), Some(USER_DATA_CAP));
    }

    #[tokio::test]
    async fn a_slow_service_hits_the_deadline() {
        let instance = Instance {
            slow: true,
            ..Instance::default()
        };
        let started = Instant::now();
        let err = fetch_from(instance, Duration::from_millis(500))
            .await
            .unwrap_err();
        assert_eq!(err.problem, Problem::TimedOut);
        assert!(err.url.ends_with("/latest/api/token"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn errors_never_carry_the_token_or_the_user_data() {
        let secret_data = "gossip_key = \"c2VjcmV0\"".repeat(50_000);
        let instance = Instance {
            user_data: Some(secret_data.into_bytes()),
            ..Instance::default()
        };
        let err = fetch_from(instance, Duration::from_secs(5))
            .await
            .unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(!text.contains(TOKEN), "{text}");
        assert!(!text.contains("gossip_key"), "{text}");
    }
}
