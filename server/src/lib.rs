//! Connection handling shared by the IdP and the gateway: accepts connections (plain or TLS;
//! HTTP/1.1 and HTTP/2) with bounded count, head size and head time, closes connections that sit
//! idle, and drains them on shutdown. At the connection limit, connections that sit idle are
//! closed to make room (as nginx reuses keep-alive connections), so idle or silent clients can
//! hold slots only until someone else needs one. Each service decides nothing here but what it answers.
//!
//! * `access`: the access log's writer thread and `[log]`, shared by both services.
//! * `config`: `ConfigError`, how both services report a configuration file they cannot use.
//! * `cookies`: reading, writing and stripping cookies, and the names of the IdP's cookies.
//! * `reload`: what both services share when they reload their configuration file.

#![warn(missing_docs)]

mod config;

pub use config::ConfigError;

pub mod access;
pub mod challenge;
pub mod cookies;
pub mod reload;

/// Longest value from outside that a log line carries.
pub const MAX_LOGGED: usize = 256;

/// A value that came from outside (a client id, a username, a header), as a log field: cut to
/// [`MAX_LOGGED`] bytes on a character boundary and written with Debug escaping, so that a line
/// break or an escape sequence in it can never start a forged line of its own.
/// `tracing::info!(client_id = ?Outside(id), "...")`.
pub struct Outside<'a>(pub &'a str);

impl std::fmt::Debug for Outside<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(cut(self.0), f)
    }
}

/// `s` cut to at most [`MAX_LOGGED`] bytes, on a character boundary.
pub fn cut(s: &str) -> &str {
    let mut end = s.len().min(MAX_LOGGED);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, TryAcquireError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Largest request head accepted; larger gets 431.
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// At the connection limit, connections idle at least this long (or `header_timeout` if less)
/// are closed to make room.
const RECLAIM_IDLE: Duration = Duration::from_secs(1);
/// How often a full listener asks again for idle connections to close.
const RECLAIM_EVERY: Duration = Duration::from_millis(100);

/// A response body hyper can send from any thread.
pub trait SendBody:
    hyper::body::Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
    + Send
    + 'static
{
}

impl<T> SendBody for T where
    T: hyper::body::Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static
{
}

/// What answers the requests of one connection.
pub trait ConnService<B: SendBody>:
    hyper::service::Service<
        Request<Incoming>,
        Response = http::Response<B>,
        Error = Infallible,
        Future: Send + 'static,
    > + Send
    + Sync
    + 'static
{
}

impl<S, B: SendBody> ConnService<B> for S where
    S: hyper::service::Service<
            Request<Incoming>,
            Response = http::Response<B>,
            Error = Infallible,
            Future: Send + 'static,
        > + Send
        + Sync
        + 'static
{
}

/// Limits of one listener.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once; at the limit, idle ones are closed to make room.
    pub max_connections: usize,
    /// Time to send a request head, and longest idle time between requests.
    pub header_timeout: Duration,
    /// Longest time in-flight requests get to finish on shutdown.
    pub drain_timeout: Duration,
}

impl Limits {
    /// The limits a service's `[server]` section sets (both services name the keys alike).
    pub fn new(max_connections: usize, header_timeout: Duration, drain_timeout: Duration) -> Self {
        Limits {
            max_connections,
            header_timeout,
            drain_timeout,
        }
    }
}

/// When a connection last started or finished a request, and how many are under way.
#[derive(Default)]
struct Activity {
    inflight: AtomicUsize,
    last_ms: AtomicU64,
    born: Option<Instant>,
}

impl Activity {
    fn new() -> Self {
        Activity {
            born: Some(Instant::now()),
            ..Default::default()
        }
    }
    fn now_ms(&self) -> u64 {
        self.born.map_or(0, |b| b.elapsed().as_millis() as u64)
    }
    fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }
    /// When the connection counts as idle if nothing happens before.
    fn idle_at(&self, idle: Duration) -> tokio::time::Instant {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        let born = self.born.unwrap_or_else(Instant::now);
        tokio::time::Instant::from_std(born + last + idle)
    }
    fn is_idle(&self, idle: Duration) -> bool {
        self.inflight.load(Ordering::Relaxed) == 0
            && self.now_ms() >= self.last_ms.load(Ordering::Relaxed) + idle.as_millis() as u64
    }
}

/// A service that keeps an [`Activity`] up to date.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for Tracked<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = http::Response<B>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<B>;
    type Error = Infallible;
    type Future = TrackedCall<S::Future>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        self.activity.inflight.fetch_add(1, Ordering::Relaxed);
        self.activity.touch();
        TrackedCall {
            inner: Box::pin(self.inner.call(req)),
            activity: Some(self.activity.clone()),
        }
    }
}

/// One request's answer under way, counted in its connection's [`Activity`] until it is ready
/// or dropped. A struct rather than an `async` block: such a block holds the captured future and
/// the awaited one side by side, twice the size, and the whole is copied into its box on every
/// request.
pub struct TrackedCall<F> {
    inner: std::pin::Pin<Box<F>>,
    /// `None` once counted out.
    activity: Option<Arc<Activity>>,
}

impl<F: Future> Future for TrackedCall<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let ready = std::task::ready!(self.inner.as_mut().poll(cx));
        if let Some(activity) = self.activity.take() {
            activity.touch();
            activity.inflight.fetch_sub(1, Ordering::Relaxed);
        }
        std::task::Poll::Ready(ready)
    }
}

impl<F> Drop for TrackedCall<F> {
    /// A request dropped before its answer (the client went away) is no longer under way.
    fn drop(&mut self) {
        if let Some(activity) = self.activity.take() {
            activity.inflight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Serves connections from `listener` until `shutdown`, then lets them finish for up to
/// `drain_timeout`.
pub async fn serve<S, F, B>(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    shutdown: CancellationToken,
    make_service: F,
) where
    F: Fn(SocketAddr) -> S,
    S: ConnService<B>,
    B: SendBody,
{
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    let connections = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let pressure = Arc::new(Notify::new());
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(TryAcquireError::Closed) => break,
            Err(TryAcquireError::NoPermits) => {
                tracing::debug!("connection limit reached; closing idle connections");
                let waited = async {
                    loop {
                        pressure.notify_waiters();
                        tokio::select! {
                            p = slots.clone().acquire_owned() => return p.ok(),
                            _ = tokio::time::sleep(RECLAIM_EVERY) => {}
                        }
                    }
                };
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    p = waited => match p { Some(p) => p, None => break },
                }
            }
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
        let activity = Arc::new(Activity::new());
        let service = Tracked {
            inner: make_service(peer),
            activity: activity.clone(),
        };
        let (builder, tls, shutdown) = (builder.clone(), tls.clone(), shutdown.clone());
        let pressure = pressure.clone();
        connections.spawn(async move {
            match tls {
                None => {
                    drive(
                        &builder, stream, service, &activity, limits, &shutdown, &pressure,
                    )
                    .await
                }
                Some(tls) => {
                    // The handshake gets the same time as a request head.
                    match tokio::time::timeout(limits.header_timeout, tls.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            drive(
                                &builder, stream, service, &activity, limits, &shutdown, &pressure,
                            )
                            .await
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(limits.drain_timeout, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout passed; closing remaining connections");
    }
}

/// `n` listeners on `addr`, each a socket of its own with `SO_REUSEPORT`, for
/// [`serve_workers`]; when `addr` asks for port 0, the first picks it and the others join it.
/// Linux lets only sockets of the same user share the port.
pub fn bind_workers(addr: SocketAddr, n: usize) -> std::io::Result<Vec<TcpListener>> {
    let mut at = addr;
    (0..n)
        .map(|_| {
            let socket = if at.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            socket.set_reuseaddr(true)?;
            socket.set_reuseport(true)?;
            socket.bind(at)?;
            // Tokio's own `TcpListener::bind` backlog.
            let listener = socket.listen(1024)?;
            at = listener.local_addr()?;
            Ok(listener)
        })
        .collect()
}

/// [`serve`] on each listener from [`bind_workers`], each on a thread of its own with a
/// single-threaded runtime (as nginx's workers: no work stealing, no synchronisation between
/// them on the request path); `limits.max_connections` is shared out among them. Returns once
/// every worker has drained, or with the error that kept one from starting (the others are
/// stopped then).
pub async fn serve_workers<S, F, B>(
    listeners: Vec<TcpListener>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    shutdown: CancellationToken,
    make_service: F,
) -> std::io::Result<()>
where
    F: Fn(SocketAddr) -> S + Clone + Send + 'static,
    S: ConnService<B>,
    B: SendBody,
{
    let share = Limits {
        max_connections: limits.max_connections.div_ceil(listeners.len().max(1)),
        ..limits
    };
    let stop = shutdown.child_token();
    let mut done = Vec::with_capacity(listeners.len());
    let mut failed = None;
    for (i, listener) in listeners.into_iter().enumerate() {
        let started = (|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            // Registered with the worker's own runtime, whose thread drives its readiness.
            let listener = {
                let _on = runtime.enter();
                TcpListener::from_std(listener.into_std()?)?
            };
            let (tls, stop, make) = (tls.clone(), stop.clone(), make_service.clone());
            let (finished, waited) = tokio::sync::oneshot::channel::<()>();
            std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || {
                    runtime.block_on(serve(listener, tls, share, stop, make));
                    drop(finished);
                })?;
            Ok::<_, std::io::Error>(waited)
        })();
        match started {
            Ok(waited) => done.push(waited),
            Err(e) => {
                failed = Some(e);
                stop.cancel();
                break;
            }
        }
    }
    for waited in done {
        let _ = waited.await;
    }
    failed.map_or(Ok(()), Err)
}

/// Runs one connection; asks it to close gracefully once it sat idle for `header_timeout`, the
/// process is stopping, or the listener is full and it sat idle for `RECLAIM_IDLE`.
async fn drive<I, S, B>(
    builder: &Builder<TokioExecutor>,
    io: I,
    service: Tracked<S>,
    activity: &Activity,
    limits: Limits,
    shutdown: &CancellationToken,
    pressure: &Notify,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: ConnService<B>,
    B: SendBody,
{
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        let idle_at = activity.idle_at(limits.header_timeout);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = shutdown.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = tokio::time::sleep_until(idle_at), if !closing => {
                if activity.is_idle(limits.header_timeout) {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
            _ = pressure.notified(), if !closing => {
                if activity.is_idle(RECLAIM_IDLE.min(limits.header_timeout)) {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_values_are_escaped_and_cut() {
        let logged = format!("{:?}", Outside("web\nINFO forged line"));
        assert_eq!(logged, "\"web\\nINFO forged line\"");
        assert!(!format!("{:?}", Outside("a\r\n\u{1b}[31m")).contains('\n'));
        let long = "é".repeat(1000);
        assert!(format!("{:?}", Outside(&long)).len() <= MAX_LOGGED + 2);
    }
}
