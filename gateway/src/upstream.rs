//! Upstreams: parsed once, picked in turn, passed over for a while when they refuse; requests
//! sent on the downstream connection's own upstream connection (HTTP/1) or through the shared
//! pool (HTTP/2 clients, upgrades), bounded by `connect_timeout` and `upstream_timeout`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use http::header;
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::{LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

use crate::access::Counted;
use crate::config::ServerConfig;
use crate::reject::Reject;

/// How long an upstream that refused a connection is passed over.
const UPSTREAM_PENALTY: Duration = Duration::from_secs(5);

/// What the gateway sends upstream: the client's body, cut off at `max_body_bytes`, its bytes
/// counted for the access log when that is on.
pub type UpstreamBody = Counted<Limited<Incoming>>;

fn epoch_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// One upstream of a route, parsed once.
#[derive(Debug)]
pub struct Upstream {
    /// Unique among all routes' upstreams (the key of a downstream connection's own
    /// upstream connections).
    pub(crate) id: usize,
    /// Always `http` today (the config accepts only `http://` upstreams).
    pub scheme: http::uri::Scheme,
    /// `host:port` as configured: where requests are sent.
    pub authority: http::uri::Authority,
    /// `Host` of requests sent to it on a connection of our own.
    host: HeaderValue,
    /// Milliseconds since `epoch_ms`'s start before which this upstream is passed over.
    down_until: AtomicU64,
}

impl Upstream {
    /// `http://host:port`; `None` if the URL has no scheme or authority.
    pub fn parse(url: &str) -> Option<Self> {
        let uri: Uri = url.parse().ok()?;
        Some(Upstream {
            id: 0,
            scheme: uri.scheme()?.clone(),
            host: HeaderValue::from_str(uri.authority()?.as_str()).ok()?,
            authority: uri.authority()?.clone(),
            down_until: AtomicU64::new(0),
        })
    }

    /// The request's path and query on this upstream's scheme and authority.
    pub fn target(&self, uri: &Uri) -> Option<Uri> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = uri.path_and_query().cloned();
        Uri::from_parts(parts).ok()
    }

    /// Whether it refused a connection within the last [`UPSTREAM_PENALTY`].
    pub fn passed_over(&self, now_ms: u64) -> bool {
        self.down_until.load(Ordering::Relaxed) > now_ms
    }

    fn refused(&self) {
        let until = epoch_ms() + UPSTREAM_PENALTY.as_millis() as u64;
        self.down_until.store(until, Ordering::Relaxed);
    }
}

/// The next upstream in turn that is not passed over (or the next in turn if all are).
pub fn pick(upstreams: &[Upstream], turn: usize) -> &Upstream {
    let n = upstreams.len();
    let now = epoch_ms();
    (0..n)
        .map(|i| &upstreams[(turn + i) % n])
        .find(|u| !u.passed_over(now))
        .unwrap_or(&upstreams[turn % n])
}

/// Upstream connections of one downstream HTTP/1 connection. Requests on it come one at a time,
/// so each upstream needs at most one connection, reused without the shared pool's locking and
/// bookkeeping; they close with the downstream connection.
#[derive(Default)]
pub struct Pinned(Mutex<Vec<(usize, http1::SendRequest<UpstreamBody>)>>);

impl Pinned {
    fn take(&self, upstream: usize) -> Option<http1::SendRequest<UpstreamBody>> {
        let mut list = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let at = list.iter().position(|(id, _)| *id == upstream)?;
        Some(list.swap_remove(at).1)
    }

    fn put(&self, upstream: usize, sender: http1::SendRequest<UpstreamBody>) {
        let mut list = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if !list.iter().any(|(id, _)| *id == upstream) {
            list.push((upstream, sender));
        }
    }
}

/// Why no upstream response came.
enum SendError {
    /// No response head within `upstream_timeout`.
    TimedOut,
    Failed {
        error: Box<dyn std::error::Error + Send + Sync>,
        /// The connection itself could not be made (the upstream is passed over for a while).
        connect: bool,
    },
}

fn failed(e: hyper::Error) -> SendError {
    SendError::Failed {
        error: Box::new(e),
        connect: false,
    }
}

/// How requests reach upstreams.
pub struct Sender {
    pool: Client<HttpConnector, UpstreamBody>,
    upstream_timeout: Duration,
    connect_timeout: Duration,
}

impl Sender {
    /// Takes `connect_timeout` and `upstream_timeout` from `[server]`; one per `Proxy`.
    pub fn new(server: &ServerConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(server.connect_timeout));
        connector.set_nodelay(true);
        let pool = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Sender {
            pool,
            upstream_timeout: server.upstream_timeout,
            connect_timeout: server.connect_timeout,
        }
    }

    /// Sends `req` to `upstream`, on `pinned` connections when given. A refusing upstream is
    /// passed over for a while; failures are logged here, with the upstream's address.
    pub async fn send(
        &self,
        upstream: &Upstream,
        req: Request<UpstreamBody>,
        pinned: Option<&Pinned>,
    ) -> Result<Response<Incoming>, Reject> {
        let sent = match pinned {
            Some(pinned) => self.send_pinned(pinned, upstream, req).await,
            None if req.uri().authority().is_none() => {
                // The pool wants the upstream in the target.
                let mut req = req;
                *req.uri_mut() = upstream.target(req.uri()).ok_or(Reject::BadTarget)?;
                Box::pin(self.send_pooled(req)).await
            }
            // Boxed: the pool's future is large, and only HTTP/2 clients and upgrades use it.
            None => Box::pin(self.send_pooled(req)).await,
        };
        sent.map_err(|e| match e {
            SendError::Failed { error, .. } if cut_off(&*error) => Reject::BodyTooLarge,
            SendError::Failed { error, connect } => {
                if connect {
                    upstream.refused();
                }
                tracing::warn!(error = %error, upstream = %upstream.authority, "upstream request failed");
                Reject::UpstreamFailed
            }
            SendError::TimedOut => {
                tracing::warn!(upstream = %upstream.authority, "upstream timed out");
                Reject::UpstreamTimeout
            }
        })
    }

    /// Through the shared pool.
    async fn send_pooled(
        &self,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, SendError> {
        match tokio::time::timeout(self.upstream_timeout, self.pool.request(req)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(SendError::Failed {
                connect: e.is_connect(),
                error: Box::new(e),
            }),
            Err(_) => Err(SendError::TimedOut),
        }
    }

    /// Through the downstream connection's own connection to `upstream`, made on first use and
    /// again if the upstream closed it.
    async fn send_pinned(
        &self,
        pinned: &Pinned,
        upstream: &Upstream,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, SendError> {
        // What the pool does for its requests: origin-form target, `Host` of the upstream.
        if req.uri().authority().is_some()
            && let Some(target) = req.uri().path_and_query().cloned()
        {
            *req.uri_mut() = Uri::from(target);
        }
        req.headers_mut()
            .insert(header::HOST, upstream.host.clone());
        let exchange = async {
            // Connecting is boxed: it happens once per connection, and its future would
            // otherwise make every request's larger.
            let mut sender = match pinned.take(upstream.id) {
                Some(sender) => sender,
                None => Box::pin(self.connect(upstream)).await?,
            };
            if sender.ready().await.is_err() {
                sender = Box::pin(self.connect(upstream)).await?;
            }
            let response = match sender.try_send_request(req).await {
                Ok(response) => response,
                Err(mut e) => match e.take_message() {
                    // Closed under us before the request went out: once more, on a new one.
                    Some(req) => {
                        sender = Box::pin(self.connect(upstream)).await?;
                        sender.send_request(req).await.map_err(failed)?
                    }
                    None => return Err(failed(e.into_error())),
                },
            };
            pinned.put(upstream.id, sender);
            Ok(response)
        };
        tokio::time::timeout(self.upstream_timeout, exchange)
            .await
            .unwrap_or(Err(SendError::TimedOut))
    }

    async fn connect(
        &self,
        upstream: &Upstream,
    ) -> Result<http1::SendRequest<UpstreamBody>, SendError> {
        let refused = |error: Box<dyn std::error::Error + Send + Sync>| SendError::Failed {
            error,
            connect: true,
        };
        let addr = (
            upstream.authority.host(),
            upstream.authority.port_u16().unwrap_or(80),
        );
        let stream =
            tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(addr))
                .await
                .map_err(|_| refused("connect timed out".into()))?
                .map_err(|e| refused(Box::new(e)))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) = http1::Builder::new()
            .handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| refused(Box::new(e)))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        sender.ready().await.map_err(failed)?;
        Ok(sender)
    }
}

/// Whether an upstream request failed because the client's body passed `max_body_bytes`.
fn cut_off(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(e) = source {
        if e.is::<LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Joins an upgraded client connection to the upgraded upstream connection.
pub async fn splice(downstream: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (client, server) = match tokio::try_join!(downstream, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut client = hyper_util::rt::TokioIo::new(client);
    let mut server = hyper_util::rt::TokioIo::new(server);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut server).await {
        tracing::debug!(error = %e, "upgraded connection ended with an error");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_parse_with_scheme_and_authority_only() {
        let u = Upstream::parse("http://127.0.0.1:9001").unwrap();
        assert_eq!(u.authority.as_str(), "127.0.0.1:9001");
        assert_eq!(u.host, "127.0.0.1:9001");
        assert!(Upstream::parse("127.0.0.1:9001/x").is_none());
        assert!(Upstream::parse("/only/a/path").is_none());
        assert!(Upstream::parse("not a url").is_none());
    }

    #[test]
    fn picking_goes_round_and_passes_over_refusing_upstreams() {
        let list: Vec<Upstream> = ["http://a:1", "http://b:1", "http://c:1"]
            .iter()
            .filter_map(|u| Upstream::parse(u))
            .collect();
        let picked: Vec<&str> = (0..4).map(|t| pick(&list, t).authority.host()).collect();
        assert_eq!(picked, ["a", "b", "c", "a"]);
        list[1].refused();
        let picked: Vec<&str> = (0..3).map(|t| pick(&list, t).authority.host()).collect();
        assert_eq!(picked, ["a", "c", "c"]);
        // All refusing: still one in turn, rather than nothing.
        list[0].refused();
        list[2].refused();
        assert_eq!(pick(&list, 1).authority.host(), "b");
    }
}
