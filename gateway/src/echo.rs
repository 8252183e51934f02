//! The demo backend of `tokengate dev` (and of the tests): answers every request with what it
//! received, so the headers the gateway added can be seen.

use std::convert::Infallible;
use std::net::SocketAddr;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

async fn echo(
    backend: SocketAddr,
    req: http::Request<Incoming>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    let headers = headers_json(req.headers());
    let body = serde_json::json!({
        "backend": backend.to_string(),
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "headers": headers,
    });
    let mut response = http::Response::new(Full::new(Bytes::from(
        serde_json::to_string_pretty(&body).unwrap_or_default() + "\n",
    )));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// Request headers as a JSON object, name → value (non-UTF-8 bytes replaced).
pub fn headers_json(headers: &http::HeaderMap) -> serde_json::Map<String, serde_json::Value> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into(),
            )
        })
        .collect()
}

/// Serves the echo backend on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, shutdown: CancellationToken) {
    let Ok(backend) = listener.local_addr() else {
        return;
    };
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        tokio::spawn(async move {
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |req| echo(backend, req)),
                )
                .await;
        });
    }
}
