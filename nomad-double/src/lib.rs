//! nomad-double: an in-memory stand-in for the Nomad HTTP API, for tests only.
//!
//! Start it in-process with [`serve`] (or [`serve_with_shutdown`]) on a listener you bound,
//! or run the `nomad-double` binary, which takes Nomad's own `agent -config` command line.

pub mod agent;
pub mod api;
pub mod authz;
pub mod canonical;
pub mod config;
pub mod diff;
pub mod filter;
pub mod go_decode;
pub mod hcl_job;
pub mod peers;
pub mod persist;
pub mod state;
pub mod tls;
pub mod version;

use anyhow::{Context, Result};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

pub use config::AgentConfig;
pub use tls::TlsFiles;
pub use version::Version;

/// How the double behaves. [`Options::from_env`] reads the `NOMAD_DOUBLE_*` knobs.
#[derive(Debug, Clone)]
pub struct Options {
    pub config: AgentConfig,
    /// The Nomad version reported and used to gate features.
    pub version: Version,
    /// Time allocations stay `pending` before they run (or fail).
    pub alloc_delay: Duration,
    /// Time an evaluation stays `pending` before its allocations are placed (Nomad's
    /// scheduler is not instant: a job just registered has none yet).
    pub eval_delay: Duration,
    /// With ACLs enabled, the only token accepted.
    pub management_token: Option<String>,
    /// Namespaces that exist (always includes "default").
    pub namespaces: Vec<String>,
    /// Print one line per request to stdout (the binary does; in-process use stays quiet).
    pub log_requests: bool,
    /// Serve https with these files instead of plain http.
    pub tls: Option<TlsFiles>,
}

impl Options {
    /// Defaults: Nomad 1.7.7, 100 ms allocation delay, no token, namespace "default".
    pub fn new(config: AgentConfig) -> Options {
        Options {
            config,
            version: Version::DEFAULT,
            alloc_delay: Duration::from_millis(100),
            eval_delay: Duration::ZERO,
            management_token: None,
            namespaces: vec!["default".into()],
            log_requests: false,
            tls: None,
        }
    }

    /// Reads `NOMAD_DOUBLE_VERSION`, `NOMAD_DOUBLE_ALLOC_DELAY_MS`, `NOMAD_DOUBLE_EVAL_DELAY_MS`,
    /// `NOMAD_DOUBLE_MANAGEMENT_TOKEN` and `NOMAD_DOUBLE_NAMESPACES`.
    pub fn from_env(config: AgentConfig) -> Result<Options> {
        let mut o = Options::new(config);
        if let Ok(v) = std::env::var("NOMAD_DOUBLE_VERSION") {
            o.version = Version::parse(&v)
                .with_context(|| format!("NOMAD_DOUBLE_VERSION: not a version: {v:?}"))?;
        }
        if let Ok(ms) = std::env::var("NOMAD_DOUBLE_ALLOC_DELAY_MS") {
            let ms: u64 = ms.trim().parse().with_context(|| {
                format!("NOMAD_DOUBLE_ALLOC_DELAY_MS: not a number of milliseconds: {ms:?}")
            })?;
            o.alloc_delay = Duration::from_millis(ms);
        }
        if let Ok(ms) = std::env::var("NOMAD_DOUBLE_EVAL_DELAY_MS") {
            let ms: u64 = ms.trim().parse().with_context(|| {
                format!("NOMAD_DOUBLE_EVAL_DELAY_MS: not a number of milliseconds: {ms:?}")
            })?;
            o.eval_delay = Duration::from_millis(ms);
        }
        if let Ok(t) = std::env::var("NOMAD_DOUBLE_MANAGEMENT_TOKEN") {
            o.management_token = Some(t).filter(|t| !t.is_empty());
        }
        if let Ok(ns) = std::env::var("NOMAD_DOUBLE_NAMESPACES") {
            for n in ns.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                if !o.namespaces.iter().any(|x| x == n) {
                    o.namespaces.push(n.to_string());
                }
            }
        }
        Ok(o)
    }

    fn settings(&self) -> state::Settings {
        let c = &self.config;
        state::Settings {
            version: self.version,
            alloc_delay_ns: self.alloc_delay.as_nanos() as i64,
            eval_delay_ns: self.eval_delay.as_nanos() as i64,
            acl_enabled: c.acl_enabled,
            datacenter: c.datacenter.clone(),
            region: c.region.clone(),
            node_name: c.name.clone(),
            node_address: c.advertise_host(),
            exec_enabled: true,
            raw_exec_enabled: c.raw_exec_enabled,
            namespaces: self.namespaces.clone(),
            management_token: self.management_token.clone(),
            command_exists: |p| std::path::Path::new(p).exists(),
            node_meta: c.client_meta.clone(),
        }
    }
}

/// Builds the shared state and the router (exposed for tests that want `tower` directly).
pub fn app(options: &Options) -> (axum::Router, Arc<api::App>) {
    let mut settings = options.settings();
    if settings.acl_enabled && settings.management_token.is_none() {
        // Bootstrapped at an earlier start (kept in data_dir, like Nomad's Raft state).
        settings.management_token = persist::bootstrap_token(&options.config);
    }
    let initial = {
        let settings = settings.clone();
        move || state::Store::new(settings.clone(), api::now())
    };
    let store = initial();
    let peers = peers::Peers::new(
        &options.config,
        &store.node_id,
        options.version.to_string(),
        options.log_requests,
    );
    let (index_tx, _) = tokio::sync::watch::channel(store.index);
    let app = Arc::new(api::App {
        store: Mutex::new(store),
        stats: Mutex::new(api::Stats::default()),
        index_tx,
        config: options.config.clone(),
        version: options.version,
        management_token: options.management_token.clone(),
        log_requests: options.log_requests,
        peers: Arc::new(peers),
        initial: Box::new(initial),
    });
    let router = axum::Router::new()
        .fallback(api::dispatch)
        .with_state(app.clone());
    (router, app)
}

/// Serves the API on `listener` until the process ends.
pub async fn serve(listener: TcpListener, options: Options) -> Result<()> {
    serve_with_shutdown(listener, options, std::future::pending()).await
}

/// Serves the API on `listener` until `shutdown` completes; https when `options.tls`
/// names a certificate (a client that does not complete the handshake gets nothing).
pub async fn serve_with_shutdown(
    listener: TcpListener,
    options: Options,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let acceptor = options.tls.as_ref().map(tls::acceptor).transpose()?;
    let (router, app) = app(&options);
    // Allocations move on by the clock, not only when someone asks, so blocking
    // queries (`?index=`) wake up.
    let ticker = {
        let app = app.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            loop {
                tick.tick().await;
                let mut store = app.store();
                if store.advance(api::now()) {
                    app.index_tx.send_replace(store.index);
                }
            }
        })
    };
    let network = tokio::spawn(peers::run(app.peers.clone(), options.config.clone()));
    let service = hyper_util::service::TowerToHyperService::new(router);
    tokio::pin!(shutdown);
    // Connections die with the server: a stopped double must look stopped to pooled clients.
    let mut connections = tokio::task::JoinSet::new();
    let result = loop {
        tokio::select! {
            _ = &mut shutdown => break Ok(()),
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(a) => a,
                    // Out of file descriptors and the like: back off instead of spinning.
                    Err(e) => {
                        eprintln!("nomad-double: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let service = service.clone();
                let acceptor = acceptor.clone();
                // Reap finished connection tasks so the set does not grow without bound.
                while connections.try_join_next().is_some() {}
                connections.spawn(async move {
                    let Some(acceptor) = acceptor else {
                        return serve_connection(stream, service).await;
                    };
                    // Bounded, so a client that never finishes the handshake holds nothing.
                    let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                    if let Ok(Ok(tls)) = handshake.await {
                        serve_connection(tls, service).await;
                    }
                });
            }
        }
    };
    ticker.abort();
    network.abort();
    connections.abort_all();
    result
}

/// HTTP/1.1 on one connection, plain or TLS.
async fn serve_connection<S>(
    stream: S,
    service: hyper_util::service::TowerToHyperService<axum::Router>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Go's net/http writes canonical header names (X-Nomad-Index); so do we.
    let _ = hyper::server::conn::http1::Builder::new()
        .title_case_headers(true)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .await;
}
