//! Fetching a document over HTTP(S): the user data named on the kernel command line, and
//! a pack set named by the user data. Bounded in size, time and attempts; a sha256, when
//! given, must match. Errors name the URL without its credentials.

use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

/// How one fetch is bounded.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest body accepted.
    pub max_bytes: u64,
    /// The whole fetch, all attempts included.
    pub deadline: Duration,
    /// Connect timeout and longest pause between bytes.
    pub timeout: Duration,
    pub attempts: u32,
    /// Pause after the first failure (doubling).
    pub first_backoff: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: crate::machine::userdata::MAX_USER_DATA_BYTES,
            deadline: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            attempts: 5,
            first_backoff: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Worth no retry: the content is wrong, not the network.
    #[error("{url}: the content's sha256 is {got}, expected {want}")]
    Sha256 {
        url: String,
        got: String,
        want: String,
    },
    #[error("{url}: larger than the limit of {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error("{url}: {reason}")]
    Failed { url: String, reason: String },
}

/// What a server said identifies the version it sent (`ETag`, `Last-Modified`), kept for
/// the next conditional request.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Validators {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
}

/// A validator longer than this is not one we keep (a header is bounded by the client too).
const MAX_VALIDATOR_LEN: usize = 256;

/// The answer to a conditional request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conditional {
    /// 304: what we have is current.
    NotModified,
    /// 200: the content (checked against the sha256, if given) and its validators.
    Changed {
        body: Vec<u8>,
        validators: Validators,
    },
}

/// Fetches `url`, retrying transient failures with backoff until `limits` say stop.
pub async fn fetch(
    url: &str,
    sha256: Option<&str>,
    limits: &Limits,
) -> Result<Vec<u8>, FetchError> {
    match fetch_if_changed(url, sha256, limits, &Validators::default()).await? {
        Conditional::Changed { body, .. } => Ok(body),
        Conditional::NotModified => Err(FetchError::Failed {
            url: crate::redact::url(url),
            reason: "HTTP 304 to an unconditional request".into(),
        }),
    }
}

/// Like [`fetch`], asking only for a version other than `since` (`If-None-Match`,
/// `If-Modified-Since`); the same bounds, retries and sha256 rule.
pub async fn fetch_if_changed(
    url: &str,
    sha256: Option<&str>,
    limits: &Limits,
    since: &Validators,
) -> Result<Conditional, FetchError> {
    let shown = crate::redact::url(url);
    let failed = |reason: String| FetchError::Failed {
        url: shown.clone(),
        reason,
    };
    let client = reqwest::Client::builder()
        .connect_timeout(limits.timeout)
        .read_timeout(limits.timeout)
        .build()
        .map_err(|e| failed(format!("cannot build an HTTP client: {e}")))?;
    let started = Instant::now();
    let mut backoff = limits.first_backoff;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let left = limits.deadline.saturating_sub(started.elapsed());
        let request = once(&client, url, &shown, limits, since);
        let outcome = match tokio::time::timeout(left, request).await {
            Ok(r) => r,
            Err(_) => Err(failed(format!(
                "no answer within the deadline of {} s",
                limits.deadline.as_secs()
            ))),
        };
        let err = match outcome {
            Ok(Conditional::NotModified) => return Ok(Conditional::NotModified),
            Ok(Conditional::Changed { body, validators }) => {
                if let Some(want) = sha256 {
                    let got = hex::encode(Sha256::digest(&body));
                    if !got.eq_ignore_ascii_case(want) {
                        return Err(FetchError::Sha256 {
                            url: shown,
                            got,
                            want: want.to_string(),
                        });
                    }
                }
                return Ok(Conditional::Changed { body, validators });
            }
            Err(e @ FetchError::TooLarge { .. }) => return Err(e),
            Err(e) => e,
        };
        let out_of_time = started.elapsed() + backoff >= limits.deadline;
        if attempt >= limits.attempts || out_of_time {
            return Err(err);
        }
        crate::info!("{err}; trying again in {} ms", backoff.as_millis());
        tokio::time::sleep(backoff).await;
        backoff = backoff.saturating_mul(2);
    }
}

async fn once(
    client: &reqwest::Client,
    url: &str,
    shown: &str,
    limits: &Limits,
    since: &Validators,
) -> Result<Conditional, FetchError> {
    use reqwest::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
    let failed = |reason: String| FetchError::Failed {
        url: shown.to_string(),
        reason,
    };
    // reqwest's messages repeat the URL; scrub it to the shown form.
    let describe = |e: reqwest::Error| e.without_url().to_string();
    let mut request = client.get(url);
    if let Some(etag) = &since.etag {
        request = request.header(IF_NONE_MATCH, etag);
    }
    if let Some(date) = &since.last_modified {
        request = request.header(IF_MODIFIED_SINCE, date);
    }
    let mut resp = request.send().await.map_err(|e| failed(describe(e)))?;
    if resp.status() == reqwest::StatusCode::NOT_MODIFIED && since != &Validators::default() {
        return Ok(Conditional::NotModified);
    }
    if !resp.status().is_success() {
        return Err(failed(format!("HTTP {}", resp.status())));
    }
    let too_large = || FetchError::TooLarge {
        url: shown.to_string(),
        limit: limits.max_bytes,
    };
    if resp.content_length().is_some_and(|n| n > limits.max_bytes) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| failed(describe(e)))? {
        if (body.len() + chunk.len()) as u64 > limits.max_bytes {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    let header = |name| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= MAX_VALIDATOR_LEN)
            .map(str::to_string)
    };
    let validators = Validators {
        etag: header(ETAG),
        last_modified: header(LAST_MODIFIED),
    };
    Ok(Conditional::Changed { body, validators })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use axum::routing::get;

    /// A real HTTP server on 127.0.0.1 with the routes the tests need.
    async fn server() -> (String, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let flaky_hits = hits.clone();
        let app = axum::Router::new()
            .route("/ok", get(|| async { "[nomad]\nrole = \"server\"\n" }))
            .route("/big", get(|| async { "x".repeat(2048) }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(300)).await;
                    "late"
                }),
            )
            .route(
                "/flaky",
                get(move || {
                    let n = flaky_hits.fetch_add(1, Ordering::SeqCst);
                    async move {
                        if n < 2 {
                            Err(axum::http::StatusCode::SERVICE_UNAVAILABLE)
                        } else {
                            Ok("third time")
                        }
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), hits)
    }

    fn quick() -> Limits {
        Limits {
            max_bytes: 1024,
            deadline: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            attempts: 3,
            first_backoff: Duration::from_millis(10),
        }
    }

    #[tokio::test]
    async fn fetches_and_checks_the_sha256() {
        let (base, _) = server().await;
        let body = b"[nomad]\nrole = \"server\"\n";
        let sha = hex::encode(Sha256::digest(body));
        let got = fetch(&format!("{base}/ok"), Some(&sha), &quick())
            .await
            .unwrap();
        assert_eq!(got, body);
        let e = fetch(&format!("{base}/ok"), Some(&"0".repeat(64)), &quick())
            .await
            .unwrap_err();
        assert!(matches!(e, FetchError::Sha256 { .. }), "{e}");
        assert!(e.to_string().contains(&sha), "{e}");
    }

    #[tokio::test]
    async fn oversize_is_refused_without_retrying() {
        let (base, _) = server().await;
        let e = fetch(&format!("{base}/big"), None, &quick())
            .await
            .unwrap_err();
        assert!(matches!(e, FetchError::TooLarge { limit: 1024, .. }), "{e}");
    }

    #[tokio::test]
    async fn transient_failures_are_retried() {
        let (base, hits) = server().await;
        let got = fetch(&format!("{base}/flaky"), None, &quick())
            .await
            .unwrap();
        assert_eq!(got, b"third time");
        assert_eq!(hits.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_slow_server_meets_the_deadline_and_credentials_stay_hidden() {
        let (base, _) = server().await;
        let limits = Limits {
            deadline: Duration::from_millis(600),
            timeout: Duration::from_secs(10),
            ..quick()
        };
        // The server answers after 300 s and the per-request timeout is 10 s: only the
        // overall deadline can end this fetch with a "deadline" error.
        let url = base.replace("http://", "http://user:hunter2@") + "/slow";
        let e = fetch(&url, None, &limits).await.unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("deadline"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }
}
