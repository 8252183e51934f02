//! W3C Trace Context (`traceparent`, `tracestate`): the gateway joins the caller's trace, or
//! starts one, and hands the upstream a `traceparent` whose parent is the gateway's own span.

use std::cell::Cell;
use std::hash::{BuildHasher, RandomState};

use http::{HeaderMap, HeaderName, HeaderValue};

/// W3C Trace Context: `00-{trace id}-{parent id}-{flags}`, joined or started per request.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// Vendor state: forwarded untouched with a joined trace, dropped with a new one.
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The trace a request belongs to and the gateway's span in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// The caller's trace, or a random one when the request came without a valid `traceparent`.
    pub trace_id: [u8; 16],
    /// The gateway's span: the parent the upstream sees.
    pub span_id: [u8; 8],
    /// The caller's span, when the request came with a valid `traceparent`.
    pub parent_id: Option<[u8; 8]>,
    /// Trace flags; bit 0 is "sampled".
    pub flags: u8,
}

const SAMPLED: u8 = 0x01;

impl TraceContext {
    /// The caller's trace with a new span of the gateway's, or a new trace when the request has
    /// no valid `traceparent` (then its `tracestate` is meaningless and goes too, as the
    /// specification says). Sets both headers for the upstream.
    pub fn join(headers: &mut HeaderMap) -> Self {
        let mut parents = headers.get_all(TRACEPARENT).iter();
        let parent = match (parents.next(), parents.next()) {
            (Some(one), None) => parse(one.as_bytes()),
            _ => None,
        };
        let context = match parent {
            Some((trace_id, parent_id, flags)) => TraceContext {
                trace_id,
                span_id: span_id(),
                parent_id: Some(parent_id),
                flags,
            },
            None => {
                headers.remove(TRACESTATE);
                TraceContext {
                    trace_id: trace_id(),
                    span_id: span_id(),
                    parent_id: None,
                    // Every request a trace starts at is in the access log: recorded.
                    flags: SAMPLED,
                }
            }
        };
        headers.insert(TRACEPARENT, context.traceparent());
        context
    }

    /// `00-{trace id}-{span id}-{flags}`.
    pub fn traceparent(&self) -> HeaderValue {
        let mut out = [0u8; 55];
        out[..3].copy_from_slice(b"00-");
        hex(&self.trace_id, &mut out[3..35]);
        out[35] = b'-';
        hex(&self.span_id, &mut out[36..52]);
        out[52] = b'-';
        hex(&[self.flags], &mut out[53..55]);
        HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("00"))
    }

    /// Appends the 32 lower-case hex digits of the trace id, as the access log writes it (no
    /// allocation).
    pub fn push_trace_id_hex(&self, out: &mut Vec<u8>) {
        let mut hex_digits = [0u8; 32];
        hex(&self.trace_id, &mut hex_digits);
        out.extend_from_slice(&hex_digits);
    }

    /// The 32 lower-case hex digits of the trace id.
    pub fn trace_id_hex(&self) -> String {
        let mut out = [0u8; 32];
        hex(&self.trace_id, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// 16 lower-case hex digits.
    pub fn span_id_hex(&self) -> String {
        let mut out = [0u8; 16];
        hex(&self.span_id, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// 16 lower-case hex digits; `None` for a trace the gateway started.
    pub fn parent_id_hex(&self) -> Option<String> {
        let parent = self.parent_id?;
        let mut out = [0u8; 16];
        hex(&parent, &mut out);
        Some(String::from_utf8_lossy(&out).into_owned())
    }
}

/// The trace id, for the request's span.
impl std::fmt::Display for TraceContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = [0u8; 32];
        hex(&self.trace_id, &mut out);
        f.write_str(std::str::from_utf8(&out).map_err(|_| std::fmt::Error)?)
    }
}

fn hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    // Pairs of the output beside the bytes: no index to check.
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
}

fn unhex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// A `traceparent` of version 00 (or a later version read as 00, as the specification asks),
/// lower-case hex, trace and parent ids not all zero.
fn parse(value: &[u8]) -> Option<([u8; 16], [u8; 8], u8)> {
    if value.len() < 55 || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let version = unhex::<1>(&value[..2])?[0];
    // Version ff is invalid; 00 has exactly 55 characters; a later one may carry more after a dash.
    if version == 0xff
        || (version == 0 && value.len() != 55)
        || (value.len() > 55 && value[55] != b'-')
    {
        return None;
    }
    let trace_id = unhex::<16>(&value[3..35])?;
    let parent_id = unhex::<8>(&value[36..52])?;
    let flags = unhex::<1>(&value[53..55])?[0];
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some((trace_id, parent_id, flags))
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(RandomState::new().hash_one(std::thread::current().id()) | 1);
}

/// wyrand: fast, statistically sound, seeded per thread from the OS's randomness (through
/// `RandomState`). Trace ids need to be unique, not secret.
fn next_u64() -> u64 {
    RNG.with(|state| {
        let s = state.get().wrapping_add(0xa076_1d64_78bd_642f);
        state.set(s);
        let t = u128::from(s) * u128::from(s ^ 0xe703_7ed1_a0b4_28db);
        (t >> 64) as u64 ^ t as u64
    })
}

fn trace_id() -> [u8; 16] {
    loop {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&next_u64().to_be_bytes());
        id[8..].copy_from_slice(&next_u64().to_be_bytes());
        if id != [0; 16] {
            return id;
        }
    }
}

fn span_id() -> [u8; 8] {
    loop {
        let id = next_u64().to_be_bytes();
        if id != [0; 8] {
            return id;
        }
    }
}

/// OTLP export (the `otel` feature): the request's span carries the request's W3C ids.
///
/// `tracing-opentelemetry` builds a span through the tracer provider, whose id generator makes
/// its span id (and its trace id when it has no parent). [`adopt`] hands the request's ids to
/// that generator ([`RequestIds`]) through a thread-local, and builds the span at once on the
/// same thread: the exported span is the one the upstream's `traceparent` names as parent, in
/// the trace of the access log line.
#[cfg(feature = "otel")]
pub mod otel {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicBool, Ordering};

    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::TraceContext;

    static EXPORTING: AtomicBool = AtomicBool::new(false);

    thread_local! {
        /// The ids of the span being built by [`adopt`], taken by [`RequestIds`].
        static NEXT: Cell<Option<([u8; 16], [u8; 8])>> = const { Cell::new(None) };
    }

    /// The tracer provider's id generator: the request's ids while [`adopt`] builds its span,
    /// new random ones for any other span (as the gateway makes them for a new trace).
    #[derive(Clone, Copy, Debug, Default)]
    pub struct RequestIds;

    impl opentelemetry_sdk::trace::IdGenerator for RequestIds {
        fn new_trace_id(&self) -> TraceId {
            let id = NEXT
                .with(Cell::get)
                .map_or_else(super::trace_id, |(trace, _)| trace);
            TraceId::from_bytes(id)
        }

        fn new_span_id(&self) -> SpanId {
            let id = NEXT
                .with(Cell::get)
                .map_or_else(super::span_id, |(_, span)| span);
            SpanId::from_bytes(id)
        }
    }

    /// Says that spans are exported, through a tracer provider built with [`RequestIds`]: from
    /// now on [`adopt`] gives request spans their ids. Called once, by the binary.
    pub fn exporting() {
        EXPORTING.store(true, Ordering::Relaxed);
    }

    /// Makes `span` the gateway's span of `trace` in the export: trace id, span id (the parent
    /// the upstream sees) and, for a joined trace, the caller's span as remote parent. Does
    /// nothing when no span is exported or `span` is disabled.
    pub fn adopt(span: &tracing::Span, trace: &TraceContext) {
        if !EXPORTING.load(Ordering::Relaxed) || span.is_disabled() {
            return;
        }
        // A joined trace has the caller's span as remote parent; a new one is a root, whatever
        // span is current (the generator then makes the trace id: ours).
        let parent = match trace.parent_id {
            Some(parent) => {
                opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
                    TraceId::from_bytes(trace.trace_id),
                    SpanId::from_bytes(parent),
                    TraceFlags::new(trace.flags),
                    true,
                    TraceState::NONE,
                ))
            }
            None => opentelemetry::Context::new(),
        };
        NEXT.with(|next| next.set(Some((trace.trace_id, trace.span_id))));
        if span.set_parent(parent).is_ok() {
            // Builds the span now, on this thread, while the ids wait in `NEXT`.
            let _ = span.context();
        }
        NEXT.with(|next| next.set(None));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_joined_with_a_new_span() {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static(PARENT));
        h.insert(TRACESTATE, HeaderValue::from_static("congo=t61rcWkgMzE"));
        let t = TraceContext::join(&mut h);
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent_id_hex().as_deref(), Some("00f067aa0ba902b7"));
        assert_ne!(t.span_id_hex(), "00f067aa0ba902b7");
        let sent = h[TRACEPARENT].to_str().unwrap();
        assert!(
            sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{sent}"
        );
        assert!(sent.ends_with("-01"));
        assert_eq!(&sent[36..52], t.span_id_hex());
        assert_eq!(h[TRACESTATE], "congo=t61rcWkgMzE");
    }

    #[test]
    fn a_missing_or_broken_traceparent_starts_a_trace() {
        for bad in [
            None,
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0"),
            Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
            Some("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
            Some("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x"),
            Some("00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ] {
            let mut h = HeaderMap::new();
            if let Some(bad) = bad {
                h.insert(TRACEPARENT, HeaderValue::from_static(bad));
            }
            h.insert(TRACESTATE, HeaderValue::from_static("a=b"));
            let t = TraceContext::join(&mut h);
            assert_eq!(t.parent_id, None, "{bad:?}");
            assert_ne!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
            assert!(h.get(TRACESTATE).is_none(), "{bad:?}");
            let sent = h[TRACEPARENT].to_str().unwrap();
            assert_eq!(parse(sent.as_bytes()).map(|p| p.0), Some(t.trace_id));
        }
    }

    #[test]
    fn a_later_version_is_read_as_00_and_two_headers_are_not() {
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
        assert!(parse(later.as_bytes()).is_some());
        let mut h = HeaderMap::new();
        h.append(TRACEPARENT, HeaderValue::from_static(PARENT));
        h.append(TRACEPARENT, HeaderValue::from_static(PARENT));
        assert_eq!(TraceContext::join(&mut h).parent_id, None);
        assert_eq!(h.get_all(TRACEPARENT).iter().count(), 1);
    }

    #[test]
    fn new_ids_differ() {
        let ids: std::collections::HashSet<[u8; 16]> = (0..1000).map(|_| trace_id()).collect();
        assert_eq!(ids.len(), 1000);
    }
}
