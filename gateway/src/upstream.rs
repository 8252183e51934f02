//! Upstreams: parsed once, each with the state that resilience keeps about it (requests in
//! flight, consecutive failures, ejection, health) in atomics; requests sent on the downstream
//! connection's own upstream connection (HTTP/1) or through the route's pool (HTTP/2 clients,
//! upgrades), bounded by the route's `connect_timeout` and `timeout`.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header;
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::{Either, LengthLimitError, Limited};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

use crate::access::Counted;
use crate::config::MAX_EJECTION;
use crate::lean;
use crate::metrics::{Failure, UpstreamMetrics};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the gateway sends upstream: the client's body as it comes (cut off at
/// `max_body_bytes`, its bytes counted for the access log when that is on), or a body the
/// gateway holds, so that the request can be sent again.
pub enum UpstreamBody {
    /// The client's body, passed through as it arrives.
    Streaming(Counted<Limited<Incoming>>),
    /// A body read whole beforehand (`None`: empty).
    Held(Option<Bytes>),
    /// A body lent by a [`Lender`]: taken from it when first polled, so that a request dropped
    /// before anything was sent (the pool's refused connection) leaves it for the next try.
    Lent(Lent),
}

/// An upstream's response body: `Left` from hyper's client (the pool, a request with a body,
/// or the fast path off), `Right` from the lean path's own connection.
pub type Answer = Either<Incoming, lean::LeanBody<http1::SendRequest<UpstreamBody>>>;

/// Keeps a client's body until one request polls it; each try is a turn, and only the body's
/// current turn may take it, so that a dropped try's request never races the next one.
pub struct Lender {
    body: Option<Box<UpstreamBody>>,
    turn: u32,
}

impl Lender {
    /// Lends `body` to the request it was taken from, which gets the first turn.
    pub fn lend(req: &mut Request<UpstreamBody>) -> Arc<Mutex<Lender>> {
        let body = std::mem::replace(req.body_mut(), UpstreamBody::Held(None));
        let lender = Arc::new(Mutex::new(Lender {
            body: Some(Box::new(body)),
            turn: 0,
        }));
        *req.body_mut() = UpstreamBody::Lent(Lent {
            lender: lender.clone(),
            turn: 0,
            body: None,
        });
        lender
    }

    /// The body for another try, if no earlier one polled it; that try may no longer take it.
    pub fn again(lender: &Arc<Mutex<Lender>>) -> Option<UpstreamBody> {
        let mut l = lender.lock().unwrap_or_else(PoisonError::into_inner);
        l.body.as_ref()?;
        l.turn = l.turn.wrapping_add(1);
        Some(UpstreamBody::Lent(Lent {
            lender: lender.clone(),
            turn: l.turn,
            body: None,
        }))
    }
}

/// One try's claim on a [`Lender`]'s body.
pub struct Lent {
    lender: Arc<Mutex<Lender>>,
    turn: u32,
    body: Option<Box<UpstreamBody>>,
}

impl Lent {
    /// The body, taken on first use; `None` if its turn has passed.
    fn body(&mut self) -> Option<&mut UpstreamBody> {
        if self.body.is_none() {
            let mut l = self.lender.lock().unwrap_or_else(PoisonError::into_inner);
            if l.turn == self.turn {
                self.body = l.body.take();
            }
        }
        self.body.as_deref_mut()
    }

    /// What the body says of itself without taking it (hyper asks before it polls).
    fn peek<T>(&self, f: impl FnOnce(&UpstreamBody) -> T, gone: T) -> T {
        match &self.body {
            Some(body) => f(body),
            None => {
                let l = self.lender.lock().unwrap_or_else(PoisonError::into_inner);
                match l.body.as_deref() {
                    Some(body) if l.turn == self.turn => f(body),
                    _ => gone,
                }
            }
        }
    }
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Streaming(body) => Pin::new(body).poll_frame(cx),
            UpstreamBody::Held(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            UpstreamBody::Lent(lent) => match lent.body() {
                Some(body) => Pin::new(body).poll_frame(cx),
                None => Poll::Ready(Some(Err("the body went to another try".into()))),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Streaming(body) => body.is_end_stream(),
            UpstreamBody::Held(bytes) => bytes.is_none(),
            UpstreamBody::Lent(lent) => lent.peek(UpstreamBody::is_end_stream, false),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Streaming(body) => body.size_hint(),
            UpstreamBody::Held(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            UpstreamBody::Lent(lent) => lent.peek(UpstreamBody::size_hint, SizeHint::default()),
        }
    }
}

/// Milliseconds since the first call: a clock that fits an atomic.
pub fn epoch_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// One upstream of a route, parsed once, with its live state.
#[derive(Debug)]
pub struct Upstream {
    /// Unique in this process, across reloads (the key of a downstream connection's own
    /// upstream connections).
    pub(crate) id: usize,
    /// Always `http` today (the config accepts only `http://` upstreams).
    pub scheme: http::uri::Scheme,
    /// `host:port` as configured: where requests are sent.
    pub authority: http::uri::Authority,
    /// `Host` of requests sent to it on a connection of our own.
    host: HeaderValue,
    /// Requests sent and not yet answered whole.
    in_flight: AtomicU32,
    /// Failures in a row (any success resets it).
    failures: AtomicU32,
    /// `epoch_ms` before which it is ejected (0: never was).
    ejected_until: AtomicU64,
    /// Length of its last ejection, in milliseconds.
    ejection_ms: AtomicU64,
    /// What active health checks say (true without them).
    healthy: AtomicBool,
    /// Health checks passed, and failed, in a row (written by the health check task only).
    passes: AtomicU32,
    fails: AtomicU32,
    /// Its counters and gauge.
    pub(crate) metrics: UpstreamMetrics,
}

impl Upstream {
    /// `http://host:port`; `None` if the URL has no scheme or authority.
    pub fn parse(url: &str) -> Option<Self> {
        static IDS: AtomicUsize = AtomicUsize::new(0);
        let uri: Uri = url.parse().ok()?;
        Some(Upstream {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            scheme: uri.scheme()?.clone(),
            host: HeaderValue::from_str(uri.authority()?.as_str()).ok()?,
            authority: uri.authority()?.clone(),
            in_flight: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejection_ms: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            passes: AtomicU32::new(0),
            fails: AtomicU32::new(0),
            metrics: UpstreamMetrics::default(),
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

    /// Whether it is ejected at `now_ms` (see [`epoch_ms`]).
    pub fn ejected(&self, now_ms: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now_ms
    }

    /// Milliseconds of ejection left at `now_ms`.
    pub fn ejected_for_ms(&self, now_ms: u64) -> u64 {
        self.ejected_until
            .load(Ordering::Relaxed)
            .saturating_sub(now_ms)
    }

    /// What the last health checks said (true without health checks).
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Healthy and not ejected: it takes traffic.
    pub fn usable(&self, now_ms: u64) -> bool {
        self.healthy() && !self.ejected(now_ms)
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Failures in a row now.
    pub fn consecutive_failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    /// One more request in flight, unless that passes `max`.
    pub(crate) fn acquire(self: &Arc<Self>, index: usize, max: u32) -> Option<InFlight> {
        if self.in_flight.fetch_add(1, Ordering::Relaxed) >= max {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(InFlight {
            upstream: self.clone(),
            index,
        })
    }

    /// An answer that is not a failure: the run of failures ends.
    pub(crate) fn succeeded(&self) {
        // Read first: the common case (no failures) writes nothing.
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a failure; the number of failures in a row.
    pub(crate) fn failed(&self, failure: Failure) -> u32 {
        self.metrics.failure(failure).inc();
        self.failures.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Ejects it from `now_ms` for `base`, or for twice its last ejection when that ended less
    /// than its own length ago (at most [`MAX_EJECTION`]). Returns the length.
    pub(crate) fn eject(&self, now_ms: u64, base: Duration) -> Duration {
        let last_until = self.ejected_until.load(Ordering::Relaxed);
        let last_ms = self.ejection_ms.load(Ordering::Relaxed);
        let ms = if last_until != 0 && now_ms < last_until + last_ms {
            (last_ms * 2).min(MAX_EJECTION.as_millis() as u64)
        } else {
            base.as_millis() as u64
        };
        self.ejection_ms.store(ms, Ordering::Relaxed);
        self.ejected_until.store(now_ms + ms, Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
        self.metrics.ejections.inc();
        Duration::from_millis(ms)
    }

    /// One health check's result; `Some(healthy)` when it changes the upstream's health. A
    /// return to health ends an ejection too (the check has just seen it answer).
    pub(crate) fn checked(
        &self,
        ok: bool,
        unhealthy_after: u32,
        healthy_after: u32,
    ) -> Option<bool> {
        let (run, other) = if ok {
            (&self.passes, &self.fails)
        } else {
            (&self.fails, &self.passes)
        };
        other.store(0, Ordering::Relaxed);
        let n = run.fetch_add(1, Ordering::Relaxed) + 1;
        let healthy = self.healthy();
        if ok && !healthy && n >= healthy_after {
            let now = epoch_ms();
            if self.ejected(now) {
                self.ejected_until.store(now, Ordering::Relaxed);
            }
            self.failures.store(0, Ordering::Relaxed);
            self.set_healthy(true);
            return Some(true);
        }
        if !ok && healthy && n >= unhealthy_after {
            self.set_healthy(false);
            return Some(false);
        }
        None
    }

    fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
        self.metrics.healthy.set(i64::from(healthy));
    }
}

/// A request in flight to one upstream: counted until this is dropped (with the response
/// body, once it has been sent on).
#[derive(Debug)]
pub struct InFlight {
    upstream: Arc<Upstream>,
    /// Its place in the route's list.
    pub(crate) index: usize,
}

impl InFlight {
    /// The upstream the request went to.
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.upstream.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted in flight until it is done or dropped.
pub struct Tracked<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> Tracked<B> {
    /// `inner`, holding `in_flight` as long as it lives.
    pub fn new(inner: B, in_flight: InFlight) -> Self {
        Tracked {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl<B: HttpBody + Unpin> HttpBody for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Upstream connections of one downstream HTTP/1 connection ([`lean::Pinned`]), with hyper's
/// senders for what the lean path does not take.
pub type Pinned = lean::Pinned<http1::SendRequest<UpstreamBody>>;

/// RFC 9110 §9.2.2: methods whose repetition has the effect of one request.
pub fn idempotent(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::OPTIONS
            | http::Method::PUT
            | http::Method::DELETE
    )
}

/// Why no upstream response came.
pub enum SendError {
    /// Not connected, so nothing was sent; the request comes back when sending had not
    /// consumed it yet (a connection of our own), for another upstream to take.
    Refused {
        /// The request, untouched (boxed: this is the rare path, and the error stays small).
        req: Option<Box<Request<UpstreamBody>>>,
        /// Why the connection failed.
        error: BoxError,
    },
    /// No response head within the route's `timeout`.
    TimedOut,
    /// Failed after the request (or part of it) may have gone out.
    Failed(BoxError),
    /// The client's body passed `max_body_bytes`.
    BodyTooLarge,
    /// The request's target cannot be put on the upstream.
    BadTarget,
}

fn failed(e: hyper::Error) -> SendError {
    SendError::Failed(Box::new(e))
}

/// Not connected: the request comes back untouched, for another upstream.
fn refused(req: Request<UpstreamBody>, error: BoxError) -> SendError {
    SendError::Refused {
        req: Some(Box::new(req)),
        error,
    }
}

/// How requests reach the upstreams of one route: its pool (for HTTP/2 clients and upgrades)
/// and its timeouts.
pub struct Sender {
    pool: Client<HttpConnector, UpstreamBody>,
    timeout: Duration,
    connect_timeout: Duration,
}

impl Sender {
    /// A route's: the time upstreams have to answer the head, and to accept a connection.
    pub fn new(timeout: Duration, connect_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let pool = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Sender {
            pool,
            timeout,
            connect_timeout,
        }
    }

    /// Sends `req` to `upstream`, on `pinned` connections when given; the caller counts and
    /// logs the failures.
    pub async fn send(
        &self,
        upstream: &Upstream,
        req: Request<UpstreamBody>,
        pinned: Option<&Pinned>,
    ) -> Result<Response<Answer>, SendError> {
        let sent = match pinned {
            Some(pinned) => self.send_pinned(pinned, upstream, req).await,
            // Boxed: the pool's future is large, and only HTTP/2 clients and upgrades use it.
            None => Box::pin(self.send_pooled(upstream, req)).await,
        };
        sent.map_err(|e| match e {
            SendError::Failed(error) if cut_off(&*error) => SendError::BodyTooLarge,
            e => e,
        })
    }

    /// Through the route's pool, which wants the upstream in the target.
    async fn send_pooled(
        &self,
        upstream: &Upstream,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<Answer>, SendError> {
        *req.uri_mut() = upstream.target(req.uri()).ok_or(SendError::BadTarget)?;
        match tokio::time::timeout(self.timeout, self.pool.request(req)).await {
            Ok(Ok(response)) => Ok(response.map(Either::Left)),
            Ok(Err(e)) if e.is_connect() => Err(SendError::Refused {
                req: None,
                error: Box::new(e),
            }),
            Ok(Err(e)) => Err(SendError::Failed(Box::new(e))),
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
    ) -> Result<Response<Answer>, SendError> {
        // What the pool does for its requests: origin-form target, `Host` of the upstream.
        if req.uri().authority().is_some()
            && let Some(target) = req.uri().path_and_query().cloned()
        {
            *req.uri_mut() = Uri::from(target);
        }
        req.headers_mut()
            .insert(header::HOST, upstream.host.clone());
        if pinned.fast() && req.body().is_end_stream() {
            return self.send_lean(pinned, upstream, req).await;
        }
        let exchange = async {
            // Connecting is boxed: it happens once per connection, and its future would
            // otherwise make every request's larger.
            let mut sender = match pinned.take(upstream.id) {
                Some(sender) => sender,
                None => match Box::pin(self.connect(upstream)).await {
                    Ok(sender) => sender,
                    Err(e) => return Err(refused(req, e)),
                },
            };
            if sender.ready().await.is_err() {
                sender = match Box::pin(self.connect(upstream)).await {
                    Ok(sender) => sender,
                    Err(e) => return Err(refused(req, e)),
                };
            }
            let response = match sender.try_send_request(req).await {
                Ok(response) => response,
                Err(mut e) => match e.take_message() {
                    // Closed under us before the request went out: once more, on a new one.
                    Some(req) => {
                        sender = match Box::pin(self.connect(upstream)).await {
                            Ok(sender) => sender,
                            Err(e) => return Err(refused(req, e)),
                        };
                        sender.send_request(req).await.map_err(failed)?
                    }
                    None => return Err(failed(e.into_error())),
                },
            };
            pinned.put(upstream.id, sender);
            Ok(response.map(Either::Left))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(SendError::TimedOut))
    }

    /// A request without a body, over the downstream connection's own lean connection to
    /// `upstream` (`server.http1_fast_path`): made on first use, and again when the upstream
    /// closed it while idle.
    async fn send_lean(
        &self,
        pinned: &Pinned,
        upstream: &Upstream,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Answer>, SendError> {
        let home = || Some((pinned.clone(), upstream.id));
        let exchange = async {
            let kept = pinned
                .take_lean(upstream.id)
                .and_then(|mut conn| conn.reusable().then_some(conn));
            let reused = kept.is_some();
            let conn = match kept {
                Some(conn) => conn,
                // Boxed, as for hyper's connections: once per connection.
                None => match Box::pin(self.dial(upstream)).await {
                    Ok(stream) => lean::Conn::new(stream),
                    Err(e) => return Err(refused(req, e)),
                },
            };
            match conn.send(&req, home()).await {
                Ok(response) => Ok(response),
                // Closed under us with no byte of an answer: a request that may be repeated
                // goes once more, on a new connection.
                Err(lean::LeanError::Closed(_)) if reused && idempotent(req.method()) => {
                    let conn = match Box::pin(self.dial(upstream)).await {
                        Ok(stream) => lean::Conn::new(stream),
                        Err(e) => return Err(refused(req, e)),
                    };
                    conn.send(&req, home())
                        .await
                        .map_err(|e| SendError::Failed(Box::new(e)))
                }
                Err(e) => Err(SendError::Failed(Box::new(e))),
            }
        };
        let response = tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(SendError::TimedOut))?;
        Ok(response.map(Either::Right))
    }

    /// A TCP connection to `upstream`, within the route's `connect_timeout`.
    async fn dial(&self, upstream: &Upstream) -> Result<tokio::net::TcpStream, BoxError> {
        let addr = (
            upstream.authority.host(),
            upstream.authority.port_u16().unwrap_or(80),
        );
        let stream =
            tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(addr))
                .await
                .map_err(|_| BoxError::from("connect timed out"))??;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    async fn connect(
        &self,
        upstream: &Upstream,
    ) -> Result<http1::SendRequest<UpstreamBody>, BoxError> {
        let stream = self.dial(upstream).await?;
        let (mut sender, connection) = http1::Builder::new()
            .handshake(hyper_util::rt::TokioIo::new(stream))
            .await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        sender.ready().await?;
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
    fn ejections_double_when_they_come_back_soon_and_health_ends_them() {
        let u = Upstream::parse("http://a:1").unwrap();
        let base = Duration::from_secs(10);
        assert!(!u.ejected(1000));
        assert_eq!(u.eject(1000, base), base);
        assert!(u.ejected(1000) && u.ejected(10_999) && !u.ejected(11_000));
        // Ejected again within 10 s of its return: twice as long, and so on up to 5 minutes.
        assert_eq!(u.eject(15_000, base), Duration::from_secs(20));
        let mut now = 15_000;
        for _ in 0..10 {
            now += u.ejection_ms.load(Ordering::Relaxed) + 1;
            u.eject(now, base);
        }
        assert_eq!(u.eject(now + 1, base), MAX_EJECTION);
        // Long enough back: the base again.
        assert_eq!(u.eject(now + 3_600_000, base), base);
        // Health checks: unhealthy after 2 failures, healthy after 3 passes, which end an
        // ejection.
        assert_eq!(u.checked(false, 2, 3), None);
        assert_eq!(u.checked(false, 2, 3), Some(false));
        assert!(!u.healthy());
        assert_eq!(u.checked(true, 2, 3), None);
        assert_eq!(u.checked(false, 2, 3), None);
        assert_eq!(u.checked(true, 2, 3), None);
        assert_eq!(u.checked(true, 2, 3), None);
        u.ejected_until
            .store(epoch_ms() + 60_000, Ordering::Relaxed);
        assert_eq!(u.checked(true, 2, 3), Some(true));
        assert!(u.usable(epoch_ms()));
    }

    #[test]
    fn in_flight_is_bounded_and_released_on_drop() {
        let u = Arc::new(Upstream::parse("http://a:1").unwrap());
        let one = u.acquire(0, 2).unwrap();
        let two = u.acquire(0, 2).unwrap();
        assert!(u.acquire(0, 2).is_none());
        assert_eq!(u.in_flight(), 2);
        drop(one);
        assert!(u.acquire(0, 2).is_some());
        drop(two);
        assert_eq!(u.in_flight(), 0);
    }
}
