//! The demo application that `tokengate dev` serves: a small server-side web app that signs
//! people in through the IdP with the authorization code flow and PKCE, as a real application
//! would, and calls an API through the gateway with the token it got. One page, no script.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use tokengate_idp::oauth::request::pkce_challenge;
use tokengate_store::ReferenceToken;

/// The demo app's client id at the IdP.
pub const CLIENT_ID: &str = "demo";
const COOKIE: &str = "tokengate_demo";
/// Sign-ins under way and signed-in browsers kept, at most (a demo, not a session store).
const MAX_ENTRIES: usize = 10_000;

#[derive(Template)]
#[template(
    ext = "html",
    source = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Demo app · tokengate</title><link rel="stylesheet" href="{{ idp }}/oauth2/assets/style.css"></head>
<body><main class="card"><h1 class="brand">demo app</h1>
{% if let Some(s) = signed %}
<h2>Hello, {{ s.subject }}</h2>
<p class="muted">Signed in through tokengate with the authorization code flow and PKCE. Roles: <strong>{{ s.scope }}</strong></p>
<p><a href="/call">Call the API through the gateway</a> · <a href="/logout">Sign out</a></p>
{% if let Some(r) = result %}<p>{{ r.0 }} from <code>{{ r.1 }}</code>:</p><pre>{{ r.2 }}</pre>{% endif %}
{% else %}
<h2>Welcome</h2>
<p class="muted">This page stands for any web application. It holds no password: it sends you to tokengate to sign in.</p>
<p><a href="/login">Sign in with tokengate</a></p>
{% endif %}
</main></body></html>"#
)]
struct Page<'a> {
    idp: &'a str,
    signed: Option<&'a Signed>,
    /// Status, URL and body of the last API call.
    result: Option<(u16, String, String)>,
}

#[derive(Clone)]
struct Signed {
    subject: String,
    scope: String,
    access_token: String,
    id_token: String,
}

struct Inner {
    /// `state` → PKCE verifier of a sign-in under way.
    pending: HashMap<String, String>,
    /// Cookie → who is signed in on that browser.
    sessions: HashMap<String, Signed>,
}

#[derive(Clone)]
pub struct DemoApp(Arc<Shared>);

struct Shared {
    idp: String,
    gateway: String,
    own: String,
    inner: Mutex<Inner>,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl DemoApp {
    /// The app at `own` (its public URL), signing in at the IdP `idp`, calling the gateway.
    pub fn new(idp: &str, gateway: &str, own: &str) -> Self {
        DemoApp(Arc::new(Shared {
            idp: idp.to_owned(),
            gateway: gateway.to_owned(),
            own: own.to_owned(),
            inner: Mutex::new(Inner {
                pending: HashMap::new(),
                sessions: HashMap::new(),
            }),
            http: Client::builder(TokioExecutor::new()).build_http(),
        }))
    }

    pub fn redirect_uri(own: &str) -> String {
        format!("{own}/callback")
    }

    pub fn router(self) -> Router {
        Router::new()
            .route("/", get(home))
            .route("/login", get(login))
            .route("/callback", get(callback))
            .route("/call", get(call))
            .route("/logout", get(logout))
            // The browser app, reached through the gateway at /app/ (a `browser = true` route).
            .route("/app/", get(browser_app_page))
            .route("/app/app.js", get(browser_app_script))
            .with_state(self)
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn signed(&self, headers: &HeaderMap) -> Option<(String, Signed)> {
        let cookie = tokengate_server::cookies::get(headers, COOKIE)?;
        let signed = self.inner().sessions.get(cookie)?.clone();
        Some((cookie.to_owned(), signed))
    }

    fn page(&self, signed: Option<&Signed>, result: Option<(u16, String, String)>) -> Response {
        let page = Page {
            idp: &self.0.idp,
            signed,
            result,
        };
        match page.render() {
            Ok(html) => {
                let mut response = Html(html).into_response();
                let csp = format!(
                    "default-src 'none'; style-src {}; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
                    self.0.idp
                );
                if let Ok(csp) = HeaderValue::from_str(&csp) {
                    response
                        .headers_mut()
                        .insert(header::CONTENT_SECURITY_POLICY, csp);
                }
                response
            }
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        }
    }

    /// A request to the IdP or the gateway: status and body.
    async fn send(&self, req: http::Request<Full<Bytes>>) -> Option<(u16, String)> {
        let response = self.0.http.request(req).await.ok()?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.ok()?.to_bytes();
        Some((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

async fn home(State(app): State<DemoApp>, headers: HeaderMap) -> Response {
    let signed = app.signed(&headers).map(|(_, s)| s);
    app.page(signed.as_ref(), None)
}

/// Starts the code flow: a fresh `state` and PKCE verifier, kept until the callback.
async fn login(State(app): State<DemoApp>) -> Response {
    let state = ReferenceToken::generate().expose().to_owned();
    let verifier = ReferenceToken::generate().expose().to_owned();
    {
        let mut inner = app.inner();
        if inner.pending.len() >= MAX_ENTRIES {
            inner.pending.clear();
        }
        inner.pending.insert(state.clone(), verifier.clone());
    }
    let query = serde_urlencoded::to_string([
        ("response_type", "code"),
        ("client_id", CLIENT_ID),
        ("redirect_uri", &DemoApp::redirect_uri(&app.0.own)),
        ("scope", "openid orders:read"),
        ("state", &state),
        ("code_challenge", &pkce_challenge(&verifier)),
        ("code_challenge_method", "S256"),
    ])
    .unwrap_or_default();
    Redirect::to(&format!("{}/oauth2/authorize?{query}", app.0.idp)).into_response()
}

#[derive(Deserialize)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// The IdP sends the browser back here with a code, which the app exchanges for tokens.
async fn callback(State(app): State<DemoApp>, Query(back): Query<Callback>) -> Response {
    let failed =
        |why: &str| (StatusCode::BAD_REQUEST, format!("sign-in failed: {why}")).into_response();
    if let Some(error) = back.error {
        return failed(&error);
    }
    let (Some(code), Some(state)) = (back.code, back.state) else {
        return failed("no code");
    };
    let Some(verifier) = app.inner().pending.remove(&state) else {
        return failed("unknown or used state");
    };
    let form = serde_urlencoded::to_string([
        ("grant_type", "authorization_code"),
        ("client_id", CLIENT_ID),
        ("code", &code),
        ("redirect_uri", &DemoApp::redirect_uri(&app.0.own)),
        ("code_verifier", &verifier),
    ])
    .unwrap_or_default();
    let req = http::Request::post(format!("{}/oauth2/token", app.0.idp))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(form)));
    let Ok(req) = req else {
        return failed("bad request");
    };
    let Some((200, body)) = app.send(req).await else {
        return failed("the IdP refused the code");
    };
    let tokens: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let text = |k: &str| tokens[k].as_str().unwrap_or_default().to_owned();
    // The ID token came straight from the IdP over the back channel; its claims are read for
    // display only.
    let subject = text("id_token")
        .split('.')
        .nth(1)
        .and_then(|p| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|p| serde_json::from_slice::<serde_json::Value>(&p).ok())
        .and_then(|c| c["sub"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let signed = Signed {
        subject,
        scope: text("scope"),
        access_token: text("access_token"),
        id_token: text("id_token"),
    };
    let cookie = ReferenceToken::generate().expose().to_owned();
    {
        let mut inner = app.inner();
        if inner.sessions.len() >= MAX_ENTRIES {
            inner.sessions.clear();
        }
        inner.sessions.insert(cookie.clone(), signed);
    }
    let mut response = Redirect::to("/").into_response();
    let set = format!("{COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Lax");
    if let Ok(set) = HeaderValue::from_str(&set) {
        response.headers_mut().insert(header::SET_COOKIE, set);
    }
    response
}

/// Calls `/api/orders` through the gateway with the access token (a reference token).
async fn call(State(app): State<DemoApp>, headers: HeaderMap) -> Response {
    let Some((_, signed)) = app.signed(&headers) else {
        return Redirect::to("/").into_response();
    };
    let url = format!("{}/api/orders", app.0.gateway);
    let req = http::Request::get(&url)
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", signed.access_token),
        )
        .body(Full::new(Bytes::new()));
    let result = match req {
        Ok(req) => app.send(req).await,
        Err(_) => None,
    };
    let (status, body) = result.unwrap_or((502, "the gateway did not answer".to_owned()));
    let body = serde_json::from_str::<serde_json::Value>(&body)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or(body);
    app.page(Some(&signed), Some((status, url, body)))
}

/// Forgets the browser here, then signs it out at the IdP, which sends it back home.
async fn logout(State(app): State<DemoApp>, headers: HeaderMap) -> Response {
    let Some((cookie, signed)) = app.signed(&headers) else {
        return Redirect::to("/").into_response();
    };
    app.inner().sessions.remove(&cookie);
    let query = serde_urlencoded::to_string([
        ("id_token_hint", signed.id_token.as_str()),
        ("post_logout_redirect_uri", &format!("{}/", app.0.own)),
    ])
    .unwrap_or_default();
    let mut response =
        Redirect::to(&format!("{}/oauth2/logout?{query}", app.0.idp)).into_response();
    let clear = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0");
    if let Ok(clear) = HeaderValue::from_str(&clear) {
        response.headers_mut().insert(header::SET_COOKIE, clear);
    }
    response
}

/// A page behind the gateway's browser sessions: it holds no token. The gateway signed the
/// browser in and keeps the session in an HttpOnly cookie; the script asks the gateway who is
/// signed in and calls an API with that cookie, and signs out with a form the gateway checks.
const BROWSER_APP_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Browser app · tokengate</title><script src="/app/app.js" defer></script></head>
<body><main><h1>browser app</h1>
<p>Served through the gateway. This page holds no token: the session is an HttpOnly cookie the
gateway set after signing you in, and the gateway can end it at any time.</p>
<p id="who">…</p>
<p><button id="call" type="button">Call /app/api/orders</button></p>
<pre id="result"></pre>
<form method="post" action="/.tokengate/logout"><button type="submit">Sign out</button></form>
</main></body></html>
"#;

const BROWSER_APP_SCRIPT: &str = r#"async function who() {
  const r = await fetch('/.tokengate/session');
  document.getElementById('who').textContent = r.ok
    ? (await r.json()).subject + ' is signed in'
    : 'signed out (' + r.status + ')';
}
document.getElementById('call').addEventListener('click', async () => {
  const r = await fetch('/app/api/orders');
  document.getElementById('result').textContent = r.status + '\n' + await r.text();
});
who();
"#;

async fn browser_app_page() -> Response {
    Html(BROWSER_APP_PAGE).into_response()
}

async fn browser_app_script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        BROWSER_APP_SCRIPT,
    )
        .into_response()
}
