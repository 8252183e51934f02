//! What every fuzz target checks, shared by `cargo fuzz` (fuzz/fuzz_targets) and by the replay
//! of the corpus in `cargo test` (tests/fuzz_corpus.rs). Each takes arbitrary bytes and must
//! neither panic nor accept what it should refuse.

#![allow(dead_code)] // each fuzz target uses one check

use std::path::Path;
use std::sync::OnceLock;

use tokengate_store::{ReferenceToken, Verifier, bearer_credentials};

/// `Authorization` header value → bearer credentials → reference token → session id.
pub fn bearer(data: &[u8]) {
    let Some(credentials) = bearer_credentials(data) else {
        return;
    };
    assert!(!credentials.is_empty(), "empty credentials accepted");
    assert!(
        credentials.bytes().all(|b| b.is_ascii_graphic()),
        "credentials with spaces, controls or non-ASCII accepted: {credentials:?}"
    );
    if let Ok(token) = ReferenceToken::parse(credentials) {
        assert_eq!(token.expose(), credentials);
        let sid = token.session_id();
        assert_eq!(sid.as_str().len(), 22);
        assert_eq!(sid, token.session_id(), "session id not deterministic");
    }
}

/// A verifier for one fixed Ed25519 key (RFC 8037's example): no input the fuzzer makes carries
/// a valid signature, so nothing may verify.
fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let jwks = serde_json::json!({ "keys": [{
            "kty": "OKP", "crv": "Ed25519", "kid": "fuzz", "alg": "EdDSA", "use": "sig",
            "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
        }]});
        match serde_json::from_value(jwks) {
            Ok(set) => Verifier::new(&set, "tokengate"),
            Err(e) => panic!("the fuzz JWKS does not parse: {e}"),
        }
    })
}

/// A value token as read from the store: header, claims and signature checks.
pub fn value_token(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = Verifier::key_id(&text);
    assert!(
        verifier().verify(&text).is_err(),
        "a token verified without the private key: {text:?}"
    );
}

/// A session hash and an event entry as read from Redis.
pub fn store_record(data: &[u8]) {
    tokengate_store::testing::fuzz::session_record(data);
    tokengate_store::testing::fuzz::event_entry(data);
}

/// Both config files: parse, then validate; errors name the file.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.toml");
    let named = |e: tokengate_idp::config::ConfigError| {
        assert!(
            e.to_string().contains("fuzz.toml"),
            "error without the file: {e}"
        );
    };
    match tokengate_idp::config::IdpConfig::parse(text, path) {
        Ok(c) => c.validate(path).map_or_else(named, |()| ()),
        Err(e) => named(e),
    }
    match tokengate_gateway::config::GatewayConfig::parse(text, path) {
        Ok(c) => c.validate(path).map_or_else(named, |()| ()),
        Err(e) => named(e),
    }
}

/// The lean HTTP/1.1 path's decision (`tokengate_gateway::head`) against hyper's own reading of
/// the same bytes, as today's path serves them: a head the lean path takes must be one hyper takes
/// the same way (method, target, headers, what is forwarded, body framing, keep-alive); one it
/// waits on must be one hyper does not take yet. What it hands over, hyper answers alone.
pub fn http1_head(data: &[u8]) {
    use tokengate_gateway::head::{self, Decision, Framing};

    let mut storage = head::headers();
    let head = match head::decide(data, &mut storage, hyper_oracle::MAX_HEAD) {
        Decision::Handover => return,
        Decision::Partial => {
            let seen = hyper_oracle::serve(data);
            assert!(
                seen.request.is_none(),
                "lean path waits for more, hyper took {:?} from {:?}",
                seen.request,
                String::from_utf8_lossy(data)
            );
            return;
        }
        Decision::Accept(head) => head,
    };
    let seen = hyper_oracle::serve(data);
    let text = String::from_utf8_lossy(data);
    let Some(req) = seen.request else {
        panic!(
            "lean path takes what hyper refused ({:?}): {text:?}",
            seen.reply
        );
    };
    let lower = |name: &str| name.to_ascii_lowercase();
    let mut headers: Vec<(String, Vec<u8>)> = head
        .headers
        .iter()
        .map(|h| (lower(h.name), h.value.to_vec()))
        .collect();
    headers.sort();
    let mut forwarded: Vec<(String, Vec<u8>)> = head
        .forwarded()
        .map(|h| (lower(h.name), h.value.to_vec()))
        .collect();
    forwarded.sort();
    let length = match head.framing {
        Framing::None => Some(0),
        Framing::Length(n) => Some(n),
        Framing::Chunked => None,
    };
    assert_eq!(req.method, head.method, "{text:?}");
    assert_eq!(req.target, head.target, "{text:?}");
    assert_eq!(req.headers, headers, "{text:?}");
    assert_eq!(req.forwarded, forwarded, "{text:?}");
    assert_eq!(req.length, length, "{text:?}");
    assert_eq!(
        seen.keep_alive,
        Some(head.keep_alive),
        "{text:?}: {:?}",
        seen.reply
    );
}

/// hyper's HTTP/1 server as the gateway configures it, on bytes in memory.
mod hyper_oracle {
    use std::sync::{Arc, Mutex, OnceLock};
    use std::time::Duration;

    use http_body_util::Empty;
    use hyper::body::{Body as _, Bytes, Incoming};
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The gateway's largest request head (`server` crate's `MAX_HEADER_BYTES`).
    pub const MAX_HEAD: usize = 16 * 1024;

    /// The first request hyper handed to the service, as the lean path would see it.
    #[derive(Debug)]
    pub struct Taken {
        pub method: String,
        pub target: String,
        /// Every header, lower-case names, sorted.
        pub headers: Vec<(String, Vec<u8>)>,
        /// The headers left after the gateway strips identity and hop-by-hop ones, sorted.
        pub forwarded: Vec<(String, Vec<u8>)>,
        /// The body's exact length if hyper knows it (`None`: chunked).
        pub length: Option<u64>,
    }

    pub struct Seen {
        pub request: Option<Taken>,
        /// Whether hyper's answer kept the connection open (no `connection: close`).
        pub keep_alive: Option<bool>,
        pub reply: String,
    }

    fn runtime() -> &'static tokio::runtime::Runtime {
        static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
        RUNTIME.get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("runtime: {e}"))
        })
    }

    pub fn serve(data: &[u8]) -> Seen {
        runtime().block_on(async {
            let (mut client, server) = tokio::io::duplex(256 * 1024);
            let taken: Arc<Mutex<Option<Taken>>> = Arc::default();
            let service = {
                let taken = taken.clone();
                hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let taken = taken.clone();
                    async move {
                        let sorted = |map: &http::HeaderMap| {
                            let mut v: Vec<(String, Vec<u8>)> = map
                                .iter()
                                .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
                                .collect();
                            v.sort();
                            v
                        };
                        let mut stripped = req.headers().clone();
                        tokengate_gateway::headers::strip_identity(&mut stripped);
                        tokengate_gateway::headers::strip_hop_by_hop(&mut stripped);
                        let mut slot = taken.lock().unwrap_or_else(|e| e.into_inner());
                        if slot.is_none() {
                            *slot = Some(Taken {
                                method: req.method().as_str().to_owned(),
                                target: req.uri().to_string(),
                                headers: sorted(req.headers()),
                                forwarded: sorted(&stripped),
                                length: req.body().size_hint().exact(),
                            });
                        }
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            Empty::<Bytes>::new(),
                        ))
                    }
                })
            };
            let mut builder = hyper::server::conn::http1::Builder::new();
            // The test sends the bytes and closes its side: hyper must answer all the same.
            builder
                .timer(TokioTimer::new())
                .max_buf_size(MAX_HEAD)
                .half_close(true);
            let connection = builder.serve_connection(TokioIo::new(server), service);
            let data = data.to_vec();
            let talk = async move {
                let _ = client.write_all(&data).await;
                let _ = client.shutdown().await;
                let mut reply = Vec::new();
                let _ = client.read_to_end(&mut reply).await;
                reply
            };
            let (served, reply) = tokio::time::timeout(Duration::from_secs(5), async {
                tokio::join!(connection, talk)
            })
            .await
            .unwrap_or_else(|_| panic!("hyper did not finish"));
            let reply = format!("{}{served:?}", String::from_utf8_lossy(&reply));
            let head = reply
                .split("\r\n\r\n")
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            let keep_alive = head
                .starts_with("http/1.1 200")
                .then(|| !head.contains("\r\nconnection: close"));
            let request = taken.lock().unwrap_or_else(|e| e.into_inner()).take();
            Seen {
                request,
                keep_alive,
                reply: reply.chars().take(200).collect(),
            }
        })
    }
}
