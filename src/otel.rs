//! OTLP span export (cargo feature `otel`): each request's span, of the gateway and of the IdP,
//! sent over HTTP/protobuf to `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`), in
//! batches from the SDK's own thread, off the request path. Without an endpoint nothing starts.
//!
//! The exporter's HTTP client is hyper-util over hyper-rustls (aws-lc-rs), the stack the
//! services already have, run on the service's tokio runtime: no second HTTP or TLS stack.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::hyper::HyperClient;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tokengate_gateway::trace::otel::{RequestIds, exporting};
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::registry::LookupSpan;

/// Why span export could not start (the service runs on without it).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT {0:?}: not milliseconds")]
    Timeout(String),
    #[error("an https:// endpoint and no system root certificates")]
    Roots(#[source] std::io::Error),
    #[error("span export started outside the tokio runtime")]
    Runtime(#[source] tokio::runtime::TryCurrentError),
    #[error("OTLP exporter: {0}")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
}

/// The running exporter.
pub struct Export {
    provider: SdkTracerProvider,
}

impl Export {
    /// Exports what is still queued, then stops the exporter's thread.
    pub async fn shutdown(self) {
        // The SDK blocks its caller until the last batch is sent, and that batch is sent on
        // this runtime: wait on a thread of its blocking pool, not on one that drives it.
        let provider = self.provider;
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "span export: last batch not sent"),
            Err(e) => tracing::warn!(error = %e, "span export: shutdown failed"),
        }
    }
}

/// The layer that exports request spans as `service` (unless `OTEL_SERVICE_NAME` names it),
/// when an OTLP endpoint is set; `None` (and nothing started) when none is, or when
/// `OTEL_SDK_DISABLED=true`; an error for a setting it cannot use. Call it inside the tokio
/// runtime.
pub fn start<S>(service: &str) -> Result<Option<(impl Layer<S>, Export)>, ExportError>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    let Some(endpoint) =
        env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"))
    else {
        return Ok(None);
    };
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    let provider = provider(service, &endpoint)?;
    let tracer = provider.tracer("tokengate");
    exporting();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        // Lean spans: no source location, thread or busy/idle times, and no per-poll context.
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_context_activation(false)
        // Its own filter: the request spans (the gateway's is at `debug`, seen here whatever
        // the log level) and the warnings and errors that happen in them.
        .with_filter(filter_fn(|meta| {
            if meta.is_span() {
                meta.name() == "request"
            } else {
                *meta.level() <= tracing::Level::WARN
            }
        }));
    Ok(Some((layer, Export { provider })))
}

fn provider(service: &str, endpoint: &str) -> Result<SdkTracerProvider, ExportError> {
    // Milliseconds, as the specification says; 10 s by default.
    let timeout = env("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
        .or_else(|| env("OTEL_EXPORTER_OTLP_TIMEOUT"))
        .map(|ms| ms.parse::<u64>().map_err(|_| ExportError::Timeout(ms)))
        .transpose()?
        .map_or(Duration::from_secs(10), Duration::from_millis);
    let client = OnRuntime {
        client: HyperClient::new(connector(endpoint)?, timeout, None),
        runtime: tokio::runtime::Handle::try_current().map_err(ExportError::Runtime)?,
    };
    // The endpoint and headers come from the standard variables, read by the exporter.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_timeout(timeout)
        .with_http_client(client)
        .build()
        .map_err(ExportError::Exporter)?;
    let service = env("OTEL_SERVICE_NAME").unwrap_or_else(|| service.to_owned());
    Ok(SdkTracerProvider::builder()
        // A thread of the SDK's own sends batches (`OTEL_BSP_*` tune them); a full queue
        // drops spans, never waits.
        .with_batch_exporter(exporter)
        // Request spans get the ids the gateway sends upstream (`trace::otel`).
        .with_id_generator(RequestIds)
        .with_resource(Resource::builder().with_service_name(service).build())
        .build())
}

/// HTTPS trusting the system's roots for an `https://` endpoint, plain HTTP otherwise.
fn connector(endpoint: &str) -> Result<HttpsConnector<HttpConnector>, ExportError> {
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = if endpoint.starts_with("https://") {
        builder.with_native_roots().map_err(ExportError::Roots)?
    } else {
        builder.with_tls_config(
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        )
    };
    Ok(builder.https_or_http().enable_http1().build())
}

/// The exporter's client, run on the service's runtime: the SDK's export thread is no tokio
/// thread, and only waits for the answer.
#[derive(Debug)]
struct OnRuntime {
    client: HyperClient<HttpsConnector<HttpConnector>>,
    runtime: tokio::runtime::Handle,
}

impl HttpClient for OnRuntime {
    // `#[async_trait]`'s signature, written out.
    fn send_bytes<'a, 'b>(
        &'a self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        let client = self.client.clone();
        let sent = self
            .runtime
            .spawn(async move { client.send_bytes(request).await });
        Box::pin(async move { sent.await.map_err(HttpError::from)? })
    }
}

/// A variable's value, when set and not empty.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}
