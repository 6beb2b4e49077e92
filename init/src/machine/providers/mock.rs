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
