//! The gateway: validates reference tokens and proxies to backends.
//!
//! * `config`: the typed configuration, validated on load.
//! * `proxy`: one request as named phases: strip, route, authenticate, authorize, build the
//!   upstream request, send, finish.
//! * `reject`: every way a request is declined, and the one place that answers it.
//! * `routes`: the route table (longest prefix, host).
//! * `headers`: identity, hop-by-hop and forwarded headers; request ids.
//! * `cache`: reference token → verified identity; coalesced store reads, generations.
//! * `jwks`: the IdP's signing keys and their conditional refresh.
//! * `upstream`: upstreams, picking, connections, sending.
//! * `sync`: the background task that applies events, reports last use, refreshes keys.
//! * `browser`: browser sessions: sign-in through the IdP, the session cookie, logout, CSRF.
//! * `login`: a sign-in under way, sealed into a cookie; which return paths are allowed.
//! * `admin`: the admin listener (health, readiness, metrics).
//! * `metrics`: Prometheus metrics (`prometheus-client`), handles pre-created for the hot path.
//! * `echo`: the demo backend that answers with what it received.

pub mod admin;
pub mod browser;
pub mod cache;
pub mod config;
pub mod echo;
pub mod headers;
pub mod jwks;
pub mod login;
pub mod metrics;
pub mod proxy;
pub mod reject;
pub mod routes;
pub mod sync;
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

use crate::admin::Admin;
use crate::browser::{Browser, DiscoveryTask};
use crate::cache::TokenCache;
use crate::config::GatewayConfig;
use crate::jwks::{Jwks, JwksError, Keys};
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::routes::{Route, Routes};
use crate::sync::SyncTask;
use crate::upstream::Pinned;
use tokengate_server::{self as server, serve};

pub use crate::reject::Body;

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
    #[error("TLS: {0}")]
    Tls(String),
}

/// A TLS acceptor for the certificate chain and key in these PEM files, offering h2 and
/// http/1.1 by ALPN.
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, GatewayError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let tls = |what: &std::path::Path, e: &dyn std::fmt::Display| {
        GatewayError::Tls(format!("{}: {e}", what.display()))
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| tls(cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls(cert, &e))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| tls(key, &e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls(cert, &e))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| tls(cert, &e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

pub struct Gateway {
    config: GatewayConfig,
    proxy: Arc<Proxy>,
    tokens: Arc<TokenCache>,
    keys: Arc<Keys>,
    metrics: Arc<Metrics>,
    browser: Option<Arc<Browser>>,
    ready: Arc<AtomicBool>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    public: TcpListener,
    admin: TcpListener,
}

impl Gateway {
    /// Builds the gateway and binds its listeners; nothing is served until [`Gateway::serve`].
    pub async fn bind(config: GatewayConfig, store: AnyStore) -> Result<Self, GatewayError> {
        let metrics = Arc::new(Metrics::default());
        let keys = Arc::new(Keys::new(Jwks::new(
            &config.idp.jwks_url,
            &config.idp.issuer(),
        )?));
        let tokens = Arc::new(TokenCache::new(
            store,
            &config.cache,
            keys.clone(),
            metrics.clone(),
        ));
        let routes = config
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| Route::new(r, &metrics).ok_or(GatewayError::Route(i)))
            .collect::<Result<Vec<_>, _>>()?;
        let routes = Routes::new(routes);
        let s = &config.server;
        let browser = config
            .browser
            .as_ref()
            .map(|b| Arc::new(Browser::new(b, s.tls_cert.is_some())));
        let proxy = Arc::new(Proxy::new(
            routes,
            tokens.clone(),
            metrics.clone(),
            s,
            browser.clone(),
        ));
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| GatewayError::Bind { addr, source })
        };
        let tls = match (&config.server.tls_cert, &config.server.tls_key) {
            (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
            _ => None,
        };
        let public = bind(config.server.listen).await?;
        let admin = bind(config.admin.listen).await?;
        Ok(Gateway {
            config,
            proxy,
            tokens,
            keys,
            metrics,
            browser,
            ready: Arc::new(AtomicBool::new(false)),
            tls,
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
            keys: self.keys.clone(),
            jwks_refresh: self.config.idp.jwks_refresh,
            interval: self.config.sync.interval,
            metrics: self.metrics.clone(),
            ready: self.ready.clone(),
        };
        let sync = tokio::spawn(
            sync.run(shutdown.clone())
                .instrument(tracing::info_span!("sync")),
        );
        if let Some(browser) = &self.browser {
            let discovery = DiscoveryTask {
                browser: browser.clone(),
            };
            tokio::spawn(
                discovery
                    .run(shutdown.clone())
                    .instrument(tracing::info_span!("discovery")),
            );
        }
        let s = &self.config.server;
        let limits = server::Limits::new(s.max_connections, s.header_timeout, s.drain_timeout);

        let proxy = self.proxy.clone();
        let public = serve(
            self.public,
            self.tls,
            limits,
            shutdown.clone(),
            move |peer| {
                let proxy = proxy.clone();
                let pinned = Arc::new(Pinned::default());
                service_fn(move |req: Request<Incoming>| {
                    let (proxy, pinned) = (proxy.clone(), pinned.clone());
                    async move { Ok::<_, Infallible>(proxy.handle(req, peer, Some(&pinned)).await) }
                })
            },
        );
        let admin = Admin {
            tokens: self.tokens.clone(),
            metrics: self.metrics.clone(),
            ready: self.ready.clone(),
            browser: self.browser.clone(),
        };
        let admin = serve(self.admin, None, limits, shutdown.clone(), move |_| {
            let admin = admin.clone();
            service_fn(move |req: Request<Incoming>| {
                let response = admin.answer(&req);
                async move { Ok::<_, Infallible>(response) }
            })
        });
        tokio::join!(public, admin);
        let _ = sync.await;
        Ok(())
    }
}
