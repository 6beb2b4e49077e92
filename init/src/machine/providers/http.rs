//! HTTP to a metadata service, bounded in time and size: every request has a connect
//! timeout, an attempt timeout and the caller's overall deadline; every answer a size cap;
//! redirects never leave the metadata address; transient failures are retried with a small
//! backoff until the deadline. Errors name the provider, method and URL, never a body or a
//! header value (the IMDS token travels in a header marked sensitive).

use std::fmt;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::{redirect, Client, Method, StatusCode, Url};

/// A metadata service answers on a link-local address in milliseconds; a connection that
/// takes longer is not going to work.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// One attempt (connect, send, read the whole body) gets at most this, then it is retried.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
const MAX_REDIRECTS: usize = 3;

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Connection refused, reset, a broken stream.
    Transport(String),
    /// A redirect elsewhere than the metadata address (or too many): not asked again.
    Redirect(String),
    /// The deadline passed before an answer came.
    TimedOut,
    /// A status that is neither 2xx nor 404 (404 is handed to the caller as "absent").
    Status(u16),
    /// The answer is larger than the cap for what was asked.
    TooLarge { cap: usize },
    /// The answer arrived but is not what the provider documents (bad JSON, bad UTF-8, ...).
    Invalid(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Transport(why) | Problem::Redirect(why) => write!(f, "{why}"),
            Problem::TimedOut => write!(f, "no answer before the deadline"),
            Problem::Status(code) => write!(f, "answered HTTP {code}"),
            Problem::TooLarge { cap } => write!(f, "answer larger than the {cap}-byte cap"),
            Problem::Invalid(why) => write!(f, "{why}"),
        }
    }
}

/// A failed request to a metadata service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError {
    pub provider: &'static str,
    pub method: Method,
    pub url: String,
    pub problem: Problem,
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} {}: {}",
            self.provider, self.method, self.url, self.problem
        )
    }
}

impl std::error::Error for FetchError {}

/// One metadata service: its provider name, base URL and the deadline all its requests share.
#[derive(Debug, Clone)]
pub struct Endpoint {
    provider: &'static str,
    base: Url,
    end: Instant,
    client: Client,
}

/// Redirects are followed only to the origin the request started at: a metadata service
/// has no reason to send us elsewhere, and a hostile one must not aim us at another host.
fn same_origin_only() -> redirect::Policy {
    redirect::Policy::custom(|attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        let same = attempt.previous().first().is_none_or(|first| {
            first.scheme() == attempt.url().scheme()
                && first.host_str() == attempt.url().host_str()
                && first.port_or_known_default() == attempt.url().port_or_known_default()
        });
        if same {
            attempt.follow()
        } else {
            attempt.error("redirect off the metadata address refused")
        }
    })
}

impl Endpoint {
    /// `base` must end with `/`; request paths are relative to it.
    pub fn new(provider: &'static str, base: &str, end: Instant) -> Result<Self, FetchError> {
        let base = Url::parse(base).map_err(|e| FetchError {
            provider,
            method: Method::GET,
            url: base.to_string(),
            problem: Problem::Invalid(format!("not a valid base URL: {e}")),
        })?;
        let client = Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(same_origin_only())
            // A proxy from the environment must never see metadata requests (or the token).
            .no_proxy()
            .user_agent(concat!("nomados-init/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FetchError {
                provider,
                method: Method::GET,
                url: base.to_string(),
                problem: Problem::Transport(format!("cannot build an HTTP client: {e}")),
            })?;
        Ok(Self {
            provider,
            base,
            end,
            client,
        })
    }

    /// Time left before the deadline all requests of this endpoint share.
    pub fn remaining(&self) -> Duration {
        self.end.saturating_duration_since(Instant::now())
    }

    /// A request to `path` (relative to the base URL) whose answer may be at most `cap` bytes.
    pub fn request(&self, method: Method, path: &str, cap: usize) -> Request<'_> {
        let url = self.base.join(path).map_err(|e| FetchError {
            provider: self.provider,
            method: method.clone(),
            url: format!("{}{path}", self.base),
            problem: Problem::Invalid(format!("not a valid URL: {e}")),
        });
        Request {
            endpoint: self,
            method,
            url,
            headers: HeaderMap::new(),
            body: None,
            cap,
        }
    }
}

/// A request being built; [`Request::send`] runs it with retries.
pub struct Request<'a> {
    endpoint: &'a Endpoint,
    method: Method,
    url: Result<Url, FetchError>,
    headers: HeaderMap,
    body: Option<String>,
    cap: usize,
}

/// A 2xx answer, complete and within its cap.
#[derive(Debug)]
pub struct Answer {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    provider: &'static str,
    method: Method,
    url: String,
}

impl Answer {
    /// An error about this answer's content (the content itself is never quoted).
    pub fn invalid(&self, why: impl Into<String>) -> FetchError {
        FetchError {
            provider: self.provider,
            method: self.method.clone(),
            url: self.url.clone(),
            problem: Problem::Invalid(why.into()),
        }
    }

    /// The body as UTF-8 text, surrounding whitespace trimmed.
    pub fn text(&self) -> Result<&str, FetchError> {
        std::str::from_utf8(&self.body)
            .map(str::trim)
            .map_err(|e| self.invalid(format!("not UTF-8 text (byte {})", e.valid_up_to())))
    }

    /// The body as JSON. The error gives line, column and kind, never the text it choked on.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, FetchError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            let kind = match e.classify() {
                serde_json::error::Category::Io => "unreadable",
                serde_json::error::Category::Syntax => "syntax error",
                serde_json::error::Category::Data => "unexpected shape",
                serde_json::error::Category::Eof => "truncated",
            };
            self.invalid(format!(
                "not the documented JSON ({kind} at line {} column {})",
                e.line(),
                e.column()
            ))
        })
    }
}

/// Whether a failure may go away if asked again (Azure documents 410 and 429 for a
/// service that is still starting; 5xx and transport errors are the usual transients).
fn transient(problem: &Problem) -> bool {
    match problem {
        Problem::Transport(_) | Problem::TimedOut => true,
        Problem::Status(code) => matches!(code, 410 | 429 | 500..=599),
        Problem::Redirect(_) | Problem::TooLarge { .. } | Problem::Invalid(_) => false,
    }
}

impl Request<'_> {
    pub fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
        self
    }

    /// A header whose value is a secret (the IMDSv2 token): marked sensitive, never shown.
    pub fn secret_header(mut self, name: &'static str, value: &str) -> Self {
        match HeaderValue::from_str(value) {
            Ok(mut v) => {
                v.set_sensitive(true);
                self.headers.insert(HeaderName::from_static(name), v);
            }
            Err(_) => {
                let url = self.url_text();
                self.url = Err(FetchError {
                    provider: self.endpoint.provider,
                    method: self.method.clone(),
                    url,
                    problem: Problem::Invalid(format!(
                        "the value for header {name} is not a valid header value"
                    )),
                });
            }
        }
        self
    }

    pub fn body(mut self, content_type: &'static str, body: String) -> Self {
        self.headers
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        self.body = Some(body);
        self
    }

    fn url_text(&self) -> String {
        match &self.url {
            Ok(u) => u.to_string(),
            Err(e) => e.url.clone(),
        }
    }

    fn error(&self, url: &Url, problem: Problem) -> FetchError {
        FetchError {
            provider: self.endpoint.provider,
            method: self.method.clone(),
            url: url.to_string(),
            problem,
        }
    }

    /// [`Request::send`] where a 404 is an error: the thing asked for must exist.
    pub async fn send_required(self) -> Result<Answer, FetchError> {
        let url = self.url_text();
        let (provider, method) = (self.endpoint.provider, self.method.clone());
        self.send().await?.ok_or(FetchError {
            provider,
            method,
            url,
            problem: Problem::Status(404),
        })
    }

    /// Sends the request, retrying transient failures with backoff until the endpoint's
    /// deadline. `Ok(None)` is a 404: the thing asked for does not exist.
    pub async fn send(self) -> Result<Option<Answer>, FetchError> {
        let url = match &self.url {
            Ok(url) => url.clone(),
            Err(e) => return Err(e.clone()),
        };
        let mut backoff = FIRST_BACKOFF;
        loop {
            let remaining = self.endpoint.remaining();
            if remaining.is_zero() {
                return Err(self.error(&url, Problem::TimedOut));
            }
            let limit = remaining.min(ATTEMPT_TIMEOUT);
            let outcome = match tokio::time::timeout(limit, self.attempt(&url)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(Problem::TimedOut),
            };
            match outcome {
                Ok(Some((headers, body))) => {
                    return Ok(Some(Answer {
                        headers,
                        body,
                        provider: self.endpoint.provider,
                        method: self.method.clone(),
                        url: url.to_string(),
                    }));
                }
                Ok(None) => return Ok(None),
                Err(problem) if !transient(&problem) => return Err(self.error(&url, problem)),
                Err(problem) => {
                    let remaining = self.endpoint.remaining();
                    if remaining <= backoff {
                        // No time for another attempt: report what the last one saw.
                        let problem = if remaining.is_zero() {
                            Problem::TimedOut
                        } else {
                            problem
                        };
                        return Err(self.error(&url, problem));
                    }
                    crate::debug!(
                        "{}: {} {}: {problem}; retrying in {} ms",
                        self.endpoint.provider,
                        self.method,
                        url,
                        backoff.as_millis()
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn attempt(&self, url: &Url) -> Result<Option<(HeaderMap, Vec<u8>)>, Problem> {
        let mut builder = self
            .endpoint
            .client
            .request(self.method.clone(), url.clone())
            .headers(self.headers.clone());
        if let Some(body) = &self.body {
            builder = builder.body(body.clone());
        }
        let mut response = builder.send().await.map_err(transport)?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(Problem::Status(status.as_u16()));
        }
        if response
            .content_length()
            .is_some_and(|n| n > self.cap as u64)
        {
            return Err(Problem::TooLarge { cap: self.cap });
        }
        let headers = response.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > self.cap {
                return Err(Problem::TooLarge { cap: self.cap });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Some((headers, body)))
    }
}

/// A reqwest error without its URL (the caller names the URL once), innermost cause last.
fn transport(err: reqwest::Error) -> Problem {
    if err.is_timeout() {
        return Problem::TimedOut;
    }
    let redirect = err.is_redirect();
    let err = err.without_url();
    let top = if err.is_connect() {
        "cannot connect".to_string()
    } else {
        err.to_string()
    };
    let text = crate::redact::with_causes(top, &err);
    if redirect {
        Problem::Redirect(text)
    } else {
        Problem::Transport(text)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Redirect};
    use axum::routing::get;
    use axum::Router;

    use super::*;
    use crate::machine::providers::mock;

    /// A route that answers `status` the first `failures` times, then 200 "ok".
    fn flaky(status: StatusCode, failures: usize) -> (Router, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let router = Router::new().route(
            "/value",
            get(move || {
                let n = seen.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < failures {
                        status.into_response()
                    } else {
                        "ok".into_response()
                    }
                }
            }),
        );
        (router, calls)
    }

    async fn get_value(router: Router, deadline: Duration) -> Result<Option<Answer>, FetchError> {
        let base = mock::serve(router).await;
        mock::endpoint("test", &base, deadline)
            .request(Method::GET, "value", VALUE_CAP)
            .send()
            .await
    }

    const VALUE_CAP: usize = 16;

    #[tokio::test]
    async fn transient_failures_are_retried() {
        let (router, calls) = flaky(StatusCode::SERVICE_UNAVAILABLE, 2);
        let answer = get_value(router, Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(answer.body, b"ok");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_client_error_is_not_retried() {
        let (router, calls) = flaky(StatusCode::FORBIDDEN, 1);
        let err = get_value(router, Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(err.problem, Problem::Status(403));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn not_found_is_absent_not_an_error() {
        let (router, calls) = flaky(StatusCode::NOT_FOUND, 1);
        assert!(get_value(router, Duration::from_secs(5))
            .await
            .unwrap()
            .is_none());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_streamed_answer_past_the_cap_is_refused() {
        // No Content-Length: the cap must hold while reading.
        let router = Router::new().route(
            "/value",
            get(|| async {
                let chunks = (0..4).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 8]));
                Body::from_stream(futures::stream::iter(chunks))
            }),
        );
        let err = get_value(router, Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(err.problem, Problem::TooLarge { cap: VALUE_CAP });
    }

    #[tokio::test]
    async fn redirects_stay_on_the_metadata_address() {
        let elsewhere = mock::serve(Router::new().fallback(|| async { "elsewhere" })).await;
        let target = elsewhere.join("value").unwrap().to_string();
        let router = Router::new().route(
            "/value",
            get(move || async move { Redirect::temporary(&target) }),
        );
        let started = Instant::now();
        let err = get_value(router, Duration::from_secs(5)).await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "not asked again"
        );
        assert!(matches!(err.problem, Problem::Redirect(_)), "{err}");
        assert!(
            err.to_string()
                .contains("redirect off the metadata address refused"),
            "{err}"
        );

        let router = Router::new()
            .route("/value", get(|| async { Redirect::temporary("/moved") }))
            .route("/moved", get(|| async { "here" }));
        let answer = get_value(router, Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(answer.body, b"here");
    }

    #[tokio::test]
    async fn an_unreachable_service_is_retried_until_the_deadline() {
        // A port that was just free: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let base = Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        let started = Instant::now();
        let err = mock::endpoint("test", &base, Duration::from_millis(700))
            .request(Method::GET, "value", VALUE_CAP)
            .send()
            .await
            .unwrap_err();
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(300),
            "retried: {elapsed:?}"
        );
        assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
        assert!(
            err.to_string().starts_with("test: GET http://127.0.0.1:"),
            "{err}"
        );
        assert!(err.to_string().contains("cannot connect"), "{err}");
    }
}
