//! The gateway: validates reference tokens and proxies to backends.
//!
//! * `config`: the typed configuration, validated on load.
//! * `proxy`: one request as named phases: strip, route, authenticate, authorize, build the
//!   upstream request, send, finish.
//! * `reject`: every way a request is declined, and the one place that answers it.
//! * `routes`: the route table (longest prefix, host).
//! * `policy`: a route's rules (methods, path globs, roles, clients, subjects), compiled.
//! * `cors`: a route's CORS: preflights answered here, CORS headers on allowed origins' answers.
//! * `ratelimit`: per-route rate limits (GCRA, bounded keys), state kept across reloads.
//! * `headers`: identity, hop-by-hop and forwarded headers; request ids.
//! * `cache`: reference token → verified identity; coalesced store reads, generations.
//! * `jwks`: the IdP's signing keys and their conditional refresh.
//! * `upstream`: one upstream and its state (in flight, failures, ejection, health);
//!   connections, sending.
//! * `lean`: the lean HTTP/1.1 path's upstream half (`server.http1_fast_path`): a downstream
//!   connection's own HTTP/1.1 connections for requests without a body; `head`: the decision
//!   its downstream half will make on a request head.
//! * `cluster`: a route's upstreams: picking (balance, health, ejection, `max_requests`),
//!   retries and their budget.
//! * `health`: active health checks, a task per route's upstream list, off the request path.
//! * `sync`: the background task that applies events, reports last use, refreshes keys.
//! * `browser`: browser sessions: sign-in through the IdP, the session cookie, logout, CSRF.
//! * `login`: a sign-in under way, sealed into a cookie; which return paths are allowed.
//! * `reload`: the configuration file applied again to a running gateway (`SIGHUP`,
//!   `POST /admin/reload`); `tls`: the listener's certificate, swapped in place.
//! * `access`: the access log (`[log] access = true`), written off the request path.
//! * `trace`: W3C Trace Context, joined or started, passed upstream.
//! * `admin`: the admin listener (health, readiness, metrics, reload).
//! * `metrics`: Prometheus metrics (`prometheus-client`), handles pre-created for the hot path.
//! * `echo`: the demo backend that answers with what it received.

#![warn(missing_docs)]

pub mod access;
pub mod admin;
pub mod browser;
pub mod cache;
pub mod cluster;
pub mod config;
pub mod cors;
pub mod echo;
pub mod head;
pub mod headers;
pub mod health;
pub mod jwks;
pub mod lean;
pub mod login;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod ratelimit;
pub mod reject;
pub mod reload;
pub mod routes;
pub mod sync;
pub mod tls;
pub mod trace;
pub mod upstream;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokengate_store::AnyStore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::access::AccessLog;
use crate::admin::Admin;
use crate::cache::TokenCache;
use crate::config::GatewayConfig;
use crate::headers::Peer;
use crate::jwks::{Jwks, JwksError, Keys};
use crate::metrics::Metrics;
use crate::proxy::{Live, Proxy};
use crate::ratelimit::RateLimiter;
use crate::reload::{ReloadError, Reloader};
use crate::sync::SyncTask;
use crate::tls::Certificate;
use crate::upstream::Pinned;
use tokengate_server::{self as server, serve};

pub use crate::reject::Body;

/// Why the gateway cannot start: a listener, the config (TLS files, routes), the JWKS URL or
/// the access log file.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A listener's address is taken or not ours.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// `server.listen` or `admin.listen`.
        addr: SocketAddr,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },
    /// TLS files or routes that cannot be used.
    #[error(transparent)]
    Config(#[from] ReloadError),
    /// `idp.jwks_url` is not a URI.
    #[error(transparent)]
    Jwks(#[from] JwksError),
    /// `log.access_path` cannot be opened.
    #[error(transparent)]
    AccessLog(#[from] crate::access::OpenError),
    /// A thread or runtime of `server.workers` could not be started.
    #[error("cannot start the public listener's workers: {0}")]
    Workers(#[source] std::io::Error),
}

/// A gateway with its listeners bound, not serving yet: [`Gateway::bind`], then
/// [`Gateway::serve`].
pub struct Gateway {
    config: GatewayConfig,
    proxy: Arc<Proxy>,
    tokens: Arc<TokenCache>,
    keys: Arc<Keys>,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    certificate: Option<Arc<Certificate>>,
    /// One listener, or one per worker (`server.workers`).
    public: Vec<TcpListener>,
    admin: TcpListener,
    shutdown: CancellationToken,
    reloader: Arc<Reloader>,
    access: Option<Arc<AccessLog>>,
}

impl Gateway {
    /// Builds the gateway and binds its listeners; nothing is served until [`Gateway::serve`].
    pub async fn bind(config: GatewayConfig, store: AnyStore) -> Result<Self, GatewayError> {
        let metrics = Arc::new(Metrics::default());
        let keys = Arc::new(
            Keys::new(Jwks::new(&config.idp.jwks_url, &config.idp.issuer())?)
                .refreshing_every(config.idp.jwks_refresh),
        );
        let tokens = Arc::new(TokenCache::new(
            store,
            &config.cache,
            keys.clone(),
            metrics.clone(),
        ));
        let live = Live::new(
            reload::routes(&config, &metrics, None)?,
            reload::browser(&config),
        );
        let access = AccessLog::start(&config.log, metrics.access_log_dropped.clone())?;
        let proxy = Arc::new(Proxy::new(
            live,
            tokens.clone(),
            metrics.clone(),
            &config.server,
            access.clone(),
            config.protection.invalid_token_limit().and_then(|limit| {
                let counted = metrics.rate_limited("(invalid tokens)", "client_address");
                RateLimiter::new(&limit, counted)
            }),
        ));
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| GatewayError::Bind { addr, source })
        };
        let certificate = match (&config.server.tls_cert, &config.server.tls_key) {
            (Some(cert), Some(key)) => Some(Certificate::new(
                tls::load(cert, key).map_err(ReloadError::from)?,
            )),
            _ => None,
        };
        let public = match config.server.workers {
            0 => vec![bind(config.server.listen).await?],
            n => server::bind_workers(config.server.listen, n).map_err(|source| {
                GatewayError::Bind {
                    addr: config.server.listen,
                    source,
                }
            })?,
        };
        let admin = bind(config.admin.listen).await?;
        let shutdown = CancellationToken::new();
        let parts = reload::Parts {
            proxy: proxy.clone(),
            tokens: tokens.clone(),
            keys: keys.clone(),
            certificate: certificate.clone(),
            metrics: metrics.clone(),
        };
        let reloader = Arc::new(Reloader::new(None, config.clone(), parts, shutdown.clone()));
        metrics.config_loaded(true);
        Ok(Gateway {
            config,
            proxy,
            tokens,
            keys,
            metrics,
            ready: Arc::new(AtomicBool::new(false)),
            certificate,
            public,
            admin,
            shutdown,
            reloader,
            access,
        })
    }

    /// The access log, when `[log] access = true` (to reopen its file on `SIGUSR1`).
    pub fn access_log(&self) -> Option<Arc<AccessLog>> {
        self.access.clone()
    }

    /// Reloads (on `SIGHUP` or `POST /admin/reload`) read this file again.
    pub fn reload_from(mut self, path: std::path::PathBuf) -> Self {
        let parts = reload::Parts {
            proxy: self.proxy.clone(),
            tokens: self.tokens.clone(),
            keys: self.keys.clone(),
            certificate: self.certificate.clone(),
            metrics: self.metrics.clone(),
        };
        self.reloader = Arc::new(Reloader::new(
            Some(path),
            self.config.clone(),
            parts,
            self.shutdown.clone(),
        ));
        self
    }

    /// Applies the configuration file again; for a signal handler.
    pub fn reloader(&self) -> Arc<Reloader> {
        self.reloader.clone()
    }

    /// The address actually bound (the port chosen when `server.listen` asked for port 0).
    pub fn public_addr(&self) -> SocketAddr {
        self.public
            .first()
            .and_then(|l| l.local_addr().ok())
            .unwrap_or(self.config.server.listen)
    }

    /// The admin listener's bound address (its port chosen when `admin.listen` asked for 0).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr().unwrap_or(self.config.admin.listen)
    }

    /// Serves until `shutdown`; then drains connections and flushes last-use reports.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), GatewayError> {
        let sync = SyncTask {
            tokens: self.tokens.clone(),
            keys: self.keys.clone(),
            interval: self.config.sync.interval,
            metrics: self.metrics.clone(),
            ready: self.ready.clone(),
        };
        let sync = tokio::spawn(
            sync.run(shutdown.clone())
                .instrument(tracing::info_span!("sync")),
        );
        // The reloader's tasks end with this gateway.
        let reloads = self.shutdown.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            stop.cancelled().await;
            reloads.cancel();
        });
        self.reloader.discover();
        self.reloader.check_health();
        let s = &self.config.server;
        let limits = server::Limits::new(s.max_connections, s.header_timeout, s.drain_timeout);

        let proxy = self.proxy.clone();
        let tls = match &self.certificate {
            Some(certificate) => Some(certificate.acceptor().map_err(ReloadError::from)?),
            None => None,
        };
        let fast = self.config.server.http1_fast_path;
        let connection = move |peer| {
            let proxy = proxy.clone();
            let pinned = Pinned::new(fast);
            let peer = Peer::new(peer);
            service_fn(move |req: Request<Incoming>| {
                let (proxy, pinned, peer) = (proxy.clone(), pinned.clone(), peer.clone());
                async move { Ok::<_, Infallible>(proxy.handle(req, &peer, Some(&pinned)).await) }
            })
        };
        let listeners = self.public;
        let public = async {
            if self.config.server.workers == 0 {
                // The one listener `bind` made, on this runtime.
                for listener in listeners {
                    let (tls, connection) = (tls.clone(), connection.clone());
                    serve(listener, tls, limits, shutdown.clone(), connection).await;
                }
                return Ok(());
            }
            let served =
                server::serve_workers(listeners, tls, limits, shutdown.clone(), connection).await;
            if served.is_err() {
                // Nothing is served without the public listener: the rest stops too.
                shutdown.cancel();
            }
            served
        };
        let admin = Admin {
            tokens: self.tokens.clone(),
            metrics: self.metrics.clone(),
            ready: self.ready.clone(),
            proxy: self.proxy.clone(),
            reloader: self.reloader.clone(),
        };
        let admin = serve(self.admin, None, limits, shutdown.clone(), move |_| {
            let admin = admin.clone();
            service_fn(move |req: Request<Incoming>| {
                let response = admin.answer(&req);
                async move { Ok::<_, Infallible>(response) }
            })
        });
        let (public, ()) = tokio::join!(public, admin);
        let _ = sync.await;
        if let Some(access) = &self.access {
            // The last requests' lines are written before the process ends.
            access.close();
        }
        public.map_err(GatewayError::Workers)
    }
}
