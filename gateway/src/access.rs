//! The access log (`[log] access = true`): one JSON line per request, on stdout or in a file.
//!
//! Off the request path: a request hands a small record to a bounded queue (never waiting:
//! when the queue is full the record is dropped and counted in
//! `tokengate_access_log_dropped_total`); one writer thread formats the records and writes them
//! in batches. A record is handed over when the response body has been sent (or the client went
//! away), so that `duration_ms` and `bytes_out` are the whole exchange's, as nginx's
//! `$request_time`. No line carries a token: the session is its id (a hash), and every value
//! that came from outside is escaped as JSON and cut to [`MAX_FIELD`] bytes.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, header};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokengate_server::access::{
    Clock, Line, address, integer, json_bytes, json_opt, json_plain, json_str, millis, or_null,
    protocol,
};

use crate::cache::Identity;
use crate::trace::TraceContext;

pub use crate::config::LogConfig;

/// Longest value from outside (path, query, user agent, request id) that a line carries: the
/// same bound as for every log field.
pub use tokengate_server::MAX_LOGGED as MAX_FIELD;
pub use tokengate_server::access::OpenError;
use tokengate_server::cut;

/// The gateway's access log.
pub type AccessLog = tokengate_server::access::AccessLog<Record>;

/// The record of a request that arrived at `started`, begun before the request is taken apart.
pub fn begin<B>(
    log: &Arc<AccessLog>,
    req: &http::Request<B>,
    started: Instant,
    request_id: &HeaderValue,
    trace: &TraceContext,
    client: IpAddr,
) -> Entry {
    // Cheap clones (shared buffers): the writer thread cuts, escapes and formats.
    let user_agent = req.headers().get(header::USER_AGENT).cloned();
    Entry {
        log: log.clone(),
        started,
        record: Some(Box::new(Record {
            started,
            duration: Duration::ZERO,
            request_id: request_id.clone(),
            trace: *trace,
            client,
            method: req.method().clone(),
            uri: req.uri().clone(),
            query: log.query(),
            protocol: protocol(req.version()),
            user_agent,
            route: None,
            status: 0,
            upstream: None,
            upstream_duration: None,
            bytes_in: None,
            bytes_out: 0,
            identity: None,
            reason: None,
        })),
    }
}

/// One request, as its line will tell it (the writer thread formats it).
pub struct Record {
    /// When the request arrived: the line's `time`.
    started: Instant,
    duration: Duration,
    request_id: HeaderValue,
    trace: TraceContext,
    client: IpAddr,
    method: http::Method,
    uri: http::Uri,
    /// Whether the line shows the query.
    query: bool,
    protocol: &'static str,
    user_agent: Option<HeaderValue>,
    route: Option<Arc<str>>,
    status: u16,
    upstream: Option<http::uri::Authority>,
    upstream_duration: Option<Duration>,
    /// The request body's bytes, counted as they are forwarded (made for a request with a
    /// body only).
    bytes_in: Option<Arc<AtomicU64>>,
    bytes_out: u64,
    identity: Option<Arc<Identity>>,
    reason: Option<&'static str>,
}

impl Line for Record {
    fn format(&self, out: &mut Vec<u8>, clock: &mut Clock) {
        out.extend_from_slice(b"{\"time\":\"");
        clock.write_instant(out, self.started);
        out.extend_from_slice(b"\",\"request_id\":");
        json_bytes(out, self.request_id.as_bytes());
        out.extend_from_slice(b",\"trace_id\":");
        out.push(b'"');
        self.trace.push_trace_id_hex(out);
        out.push(b'"');
        out.extend_from_slice(b",\"client_address\":\"");
        address(out, self.client);
        out.extend_from_slice(b"\",\"method\":");
        // A method is a token (RFC 9110 §9.1; `http` checks it): nothing to escape.
        json_plain(out, cut(self.method.as_str()));
        out.extend_from_slice(b",\"path\":");
        json_str(out, cut(self.uri.path()));
        if let Some(query) = self.uri.query().filter(|_| self.query) {
            out.extend_from_slice(b",\"query\":");
            json_str(out, cut(query));
        }
        out.extend_from_slice(b",\"protocol\":\"");
        out.extend_from_slice(self.protocol.as_bytes());
        out.extend_from_slice(b"\",\"route\":");
        json_opt(out, self.route.as_deref());
        out.extend_from_slice(b",\"status\":");
        integer(out, self.status);
        out.extend_from_slice(b",\"duration_ms\":");
        millis(out, self.duration);
        out.extend_from_slice(b",\"upstream\":");
        // An authority holds URI characters only (`http` checks it): nothing to escape.
        or_null(out, self.upstream.as_ref(), |out, a| {
            json_plain(out, a.as_str())
        });
        out.extend_from_slice(b",\"upstream_duration_ms\":");
        or_null(out, self.upstream_duration, millis);
        out.extend_from_slice(b",\"bytes_in\":");
        integer(
            out,
            self.bytes_in
                .as_ref()
                .map_or(0, |count| count.load(Ordering::Relaxed)),
        );
        out.extend_from_slice(b",\"bytes_out\":");
        integer(out, self.bytes_out);
        out.extend_from_slice(b",\"session\":");
        let identity = self.identity.as_deref();
        // The id's text, as the X-Auth-Session header already holds it (base64url).
        or_null(out, identity, |out, i| {
            json_plain(out, i.session_header.as_bytes())
        });
        out.extend_from_slice(b",\"subject\":");
        or_null(out, identity, |out, i| {
            json_bytes(out, i.subject.as_bytes())
        });
        out.extend_from_slice(b",\"client_id\":");
        json_opt(out, identity.and_then(|i| i.client_id.as_deref()).map(cut));
        out.extend_from_slice(b",\"user_agent\":");
        or_null(out, self.user_agent.as_ref(), |out, v| {
            json_bytes(out, v.as_bytes())
        });
        out.extend_from_slice(b",\"reason\":");
        or_null(out, self.reason, json_plain);
        out.extend_from_slice(b"}\n");
    }
}

/// One request's record, filled in as the request goes and handed to the writer when dropped.
pub struct Entry {
    log: Arc<AccessLog>,
    started: Instant,
    /// Taken only when the entry is dropped.
    record: Option<Box<Record>>,
}

impl Entry {
    fn with(&mut self, fill: impl FnOnce(&mut Record)) {
        if let Some(record) = self.record.as_deref_mut() {
            fill(record);
        }
    }

    /// The route that took the request (its `path_prefix`).
    pub fn route(&mut self, prefix: &Arc<str>) {
        self.with(|r| r.route = Some(prefix.clone()));
    }

    /// Who the request proved to be.
    pub fn identity(&mut self, identity: &Arc<Identity>) {
        self.with(|r| r.identity = Some(identity.clone()));
    }

    /// The upstream the request went to (a shared buffer: no copy on the request path).
    pub fn upstream(&mut self, authority: &http::uri::Authority) {
        self.with(|r| r.upstream = Some(authority.clone()));
    }

    /// How long the upstream took to answer the head.
    pub fn upstream_duration(&mut self, took: Duration) {
        self.with(|r| r.upstream_duration = Some(took));
    }

    /// The counter the request body's bytes go to as they are forwarded.
    pub fn bytes_in(&mut self) -> Option<Arc<AtomicU64>> {
        let record = self.record.as_deref_mut()?;
        Some(record.bytes_in.get_or_insert_default().clone())
    }

    /// The answer: its status and, when the gateway made it itself, why.
    pub fn answered(&mut self, status: u16, reason: Option<&'static str>) {
        self.with(|r| {
            r.status = status;
            r.reason = reason;
        });
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Some(mut record) = self.record.take() {
            record.duration = self.started.elapsed();
            self.log.send(*record);
        }
    }
}

/// A body that counts its data bytes into a shared counter (the request body, forwarded).
pub struct Counted<B> {
    inner: B,
    count: Option<Arc<AtomicU64>>,
}

impl<B> Counted<B> {
    /// `count` is `None` when no access log wants the byte count: then it only passes through.
    pub fn new(inner: B, count: Option<Arc<AtomicU64>>) -> Self {
        Counted { inner, count }
    }
}

impl<B> HttpBody for Counted<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let (Some(count), Poll::Ready(Some(Ok(frame)))) = (&self.count, &polled)
            && let Some(data) = frame.data_ref()
        {
            count.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The response body on its way to the client, carrying the request's [`Entry`]: it counts
/// what is sent and hands the record over when done or dropped.
pub struct Logged<B> {
    inner: B,
    entry: Option<Entry>,
}

impl<B> Logged<B> {
    /// The entry is written once, when the body ends or is dropped (a client gone mid-body).
    pub fn new(inner: B, entry: Entry) -> Self {
        Logged {
            inner,
            entry: Some(entry),
        }
    }
}

impl<B> HttpBody for Logged<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(entry), Some(data)) = (self.entry.as_mut(), frame.data_ref()) {
                    let sent = data.len() as u64;
                    entry.with(|r| r.bytes_out += sent);
                }
            }
            // The end: the record goes now, not whenever the connection lets go of the body.
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.entry = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http::HeaderMap;
    use prometheus_client::metrics::counter::Counter;

    #[test]
    fn long_values_are_cut_on_a_character_boundary() {
        let long = "é".repeat(300);
        assert!(cut(&long).len() <= MAX_FIELD);
        assert!(cut(&long).len() >= MAX_FIELD - 1);
        assert_eq!(cut("short"), "short");
    }

    fn log(path: &std::path::Path, query: bool) -> Arc<AccessLog> {
        let config = LogConfig {
            access: true,
            access_path: path.display().to_string(),
            access_query: query,
        };
        AccessLog::start(&config, Counter::default())
            .unwrap()
            .unwrap()
    }

    #[test]
    fn lines_reach_the_file_and_a_closed_log_has_written_them_all() {
        let dir = std::env::temp_dir().join(format!("tokengate-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("access.log");
        let _ = std::fs::remove_file(&file);
        let log = log(&file, true);
        let id = HeaderValue::from_static("req-1");
        let mut headers = HeaderMap::new();
        headers.insert(header::USER_AGENT, HeaderValue::from_static("curl/8"));
        let trace = TraceContext::join(&mut headers);
        let mut req = http::Request::get("/a/b?x=1").body(()).unwrap();
        *req.headers_mut() = headers.clone();
        for (status, reason) in [(200, None), (404, Some("no_route"))] {
            let mut entry = begin(
                &log,
                &req,
                Instant::now(),
                &id,
                &trace,
                [10, 0, 0, 1].into(),
            );
            entry.answered(status, reason);
            entry.route(&"/a/".into());
        }
        log.close();
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[1]["status"], 404);
        assert_eq!(lines[1]["reason"], "no_route");
        assert_eq!(lines[0]["reason"], serde_json::Value::Null);
        assert_eq!(lines[0]["query"], "x=1");
        assert_eq!(lines[0]["route"], "/a/");
        assert_eq!(lines[0]["protocol"], "HTTP/1.1");
        assert_eq!(lines[0]["user_agent"], "curl/8");
        assert_eq!(lines[0]["session"], serde_json::Value::Null);
        assert_eq!(lines[0]["trace_id"], trace.trace_id_hex());
        assert_eq!(lines[0]["client_address"], "10.0.0.1");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn off_is_nothing() {
        let log = AccessLog::start(&LogConfig::default(), Counter::default()).unwrap();
        assert!(log.is_none());
    }
}
