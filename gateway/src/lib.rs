//! The gateway: validates reference tokens and proxies to backends.
//!
//! * `config`: the typed configuration, validated on load.
//! * `auth`: turns a reference token into verified claims, through the local cache.
//! * `proxy`: one request in order: strip, route, authenticate, authorize, forward.
//! * `sync`: the background task that applies events, reports last use, refreshes keys.
//! * `metrics`: atomic counters rendered for Prometheus.

pub mod auth;
pub mod config;
pub mod metrics;
pub mod proxy;
pub mod sync;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokengate_store::AnyStore;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::auth::TokenCache;
use crate::config::GatewayConfig;
use crate::metrics::Metrics;
use crate::proxy::{Proxy, Route, text};
use crate::sync::{Jwks, JwksError, SyncTask};

/// Largest request head accepted; larger gets 431.
const MAX_HEADER_BYTES: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("routes[{0}]: bad upstream")]
    Route(usize),
    #[error(transparent)]
    Jwks(#[from] JwksError),
}

pub struct Gateway {
    config: GatewayConfig,
    proxy: Arc<Proxy>,
    tokens: Arc<TokenCache>,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    public: TcpListener,
    admin: TcpListener,
}

impl Gateway {
    /// Builds the gateway and binds its listeners; nothing is served until [`Gateway::serve`].
    pub async fn bind(config: GatewayConfig, store: AnyStore) -> Result<Self, GatewayError> {
        let metrics = Arc::new(Metrics::default());
        let jwks = Jwks::new(&config.idp.jwks_url, &config.idp.issuer)?;
        let tokens = Arc::new(TokenCache::new(store, &config.cache, jwks, metrics.clone()));
        let routes = config
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| Route::new(r).ok_or(GatewayError::Route(i)))
            .collect::<Result<Vec<_>, _>>()?;
        let s = &config.server;
        let proxy = Arc::new(Proxy::new(
            routes,
            tokens.clone(),
            metrics.clone(),
            s.connect_timeout,
            s.upstream_timeout,
        ));
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| GatewayError::Bind { addr, source })
        };
        let public = bind(config.server.listen).await?;
        let admin = bind(config.admin.listen).await?;
        Ok(Gateway {
            config,
            proxy,
            tokens,
            metrics,
            ready: Arc::new(AtomicBool::new(false)),
            public,
            admin,
        })
    }

    pub fn public_addr(&self) -> SocketAddr {
        self.public
            .local_addr()
            .unwrap_or(self.config.server.listen)
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr().unwrap_or(self.config.admin.listen)
    }

    /// Serves until `shutdown`; then drains connections and flushes last-use reports.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), GatewayError> {
        let sync = SyncTask {
            tokens: self.tokens.clone(),
            jwks_refresh: self.config.idp.jwks_refresh,
            interval: self.config.sync.interval,
            metrics: self.metrics.clone(),
            ready: self.ready.clone(),
        };
        let sync = tokio::spawn(
            sync.run(shutdown.clone())
                .instrument(tracing::info_span!("sync")),
        );
        let s = &self.config.server;
        let limits = (s.max_connections, s.header_timeout, s.drain_timeout);

        let proxy = self.proxy.clone();
        let public = serve(self.public, limits, shutdown.clone(), move |peer| {
            let proxy = proxy.clone();
            service_fn(move |req: Request<Incoming>| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(proxy.handle(req, peer).await) }
            })
        });
        let (tokens, metrics, ready) = (
            self.tokens.clone(),
            self.metrics.clone(),
            self.ready.clone(),
        );
        let admin = serve(self.admin, limits, shutdown.clone(), move |_| {
            let (tokens, metrics, ready) = (tokens.clone(), metrics.clone(), ready.clone());
            service_fn(move |req: Request<Incoming>| {
                let response = match req.uri().path() {
                    "/healthz" => text(
                        StatusCode::OK,
                        "application/json",
                        r#"{"status":"ok"}"#.into(),
                    ),
                    "/readyz" if ready.load(Ordering::Relaxed) => text(
                        StatusCode::OK,
                        "application/json",
                        r#"{"status":"ready"}"#.into(),
                    ),
                    "/readyz" => text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "application/json",
                        r#"{"status":"starting"}"#.into(),
                    ),
                    "/metrics" => text(
                        StatusCode::OK,
                        "text/plain; version=0.0.4",
                        metrics.render(tokens.entry_count()),
                    ),
                    _ => text(
                        StatusCode::NOT_FOUND,
                        "application/json",
                        r#"{"error":"not_found"}"#.into(),
                    ),
                };
                async move { Ok::<_, Infallible>(response) }
            })
        });
        tokio::join!(public, admin);
        let _ = sync.await;
        Ok(())
    }
}

/// Accepts connections with a connection limit and header limits, drains on shutdown.
async fn serve<S, F>(
    listener: TcpListener,
    (max_connections, header_timeout, drain_timeout): (usize, Duration, Duration),
    shutdown: CancellationToken,
    make_service: F,
) where
    F: Fn(SocketAddr) -> S,
    S: hyper::service::Service<
            Request<Incoming>,
            Response = http::Response<proxy::Body>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), make_service(peer))
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(drain_timeout) => tracing::warn!("drain timeout passed"),
    }
}
